"""Resources: where the ledger database, the program files and the landed event files live.

Paths resolve at run time, not at load time, so the environment of the run decides:
  PERKFLOW_DB        the DuckDB ledger file      (default data/warehouse.duckdb, as the CLI)
  PERKFLOW_PROGRAMS  the program files folder    (default data/programs)
  PERKFLOW_LANDING   the landing folder          (default data/landing), laid out as
                     <landing>/date=YYYY-MM-DD/<any event files>
An explicit value in the resource config wins over the environment. Relative paths are relative
to the working directory of the run, as for the `perkflow` CLI.
"""


import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from engine.io.files import event_files
from engine.ledger import db

DEFAULT_PROGRAMS = "data/programs"
DEFAULT_LANDING = "data/landing"


class LedgerDatabase(dg.ConfigurableResource):
    """The DuckDB ledger file. One writing process at a time: the assets and checks that open it
    share the `duckdb_writer` concurrency pool (limit 1 in dagster.yaml)."""

    path: str | None = None  # None: $PERKFLOW_DB, else data/warehouse.duckdb
    wait_seconds: float = 30.0  # how long to wait for another process's lock before failing

    def resolved_path(self) -> Path:
        return db.db_path(self.path)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = db.connect(self.resolved_path(), read_only=read_only, wait=self.wait_seconds)
        try:
            yield con
        finally:
            con.close()


class PerkflowFiles(dg.ConfigurableResource):
    """Program files and the landing folder of event files."""

    programs: str | None = None  # None: $PERKFLOW_PROGRAMS, else data/programs
    landing: str | None = None  # None: $PERKFLOW_LANDING, else data/landing

    def programs_dir(self) -> Path:
        return Path(self.programs or os.environ.get("PERKFLOW_PROGRAMS") or DEFAULT_PROGRAMS)

    def landing_dir(self) -> Path:
        return Path(self.landing or os.environ.get("PERKFLOW_LANDING") or DEFAULT_LANDING)

    def day_dir(self, day: str) -> Path:
        """The folder of one daily partition: <landing>/date=YYYY-MM-DD."""
        return self.landing_dir() / f"date={day}"

    def day_files(self, day: str) -> list[Path]:
        """Event files landed for one day, in the order the engine reads them (sorted paths)."""
        return landed_files(self.day_dir(day))


def landed_files(folder: Path) -> list[Path]:
    """Event files under a folder, recursively, as engine.io.files.expand would pick them."""
    if not folder.is_dir():
        return []
    return event_files(folder)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources as the code location uses them: every path from the environment or its default."""
    return {"ledger_db": LedgerDatabase(), "perkflow_files": PerkflowFiles()}
