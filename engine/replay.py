"""`perkflow replay`: a full rebuild, into a fresh ledger, from all the inputs another ledger
stored, in pure timestamp order (semantics.md 3).

Live, a row that arrives after later-timestamped rows of its participant is processed after them
(history is never rewritten); a replay processes every stored event and operation as one batch
ordered by timestamp alone (equal timestamps keep their arrival order; events before operations),
under one set of program files: `--programs`, or the latest version of each program the source
stored. The source is only read. What it does not replay: SYSTEM events (the rules emit them
again), rejected rows, and maintenance runs (run `perkflow maintain --as-of T` on the new ledger).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from engine.errors import InputError
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.run import RunReport, run_batch


def replay(source: str | Path, target: str | Path, programs: str | Path | None = None, *,
           progress: Callable[[str], None] | None = None) -> RunReport:
    source, target = Path(source), db.db_path(target)
    if not source.is_file():
        raise InputError(f"{source}: no such ledger to replay (--from)")
    if target.exists():
        raise InputError(f"{target}: exists; replay writes a fresh ledger: name a new file with --db")
    if source.resolve() == target.resolve():
        raise InputError("--from and --db name the same file; replay writes a fresh ledger")
    with tempfile.TemporaryDirectory(prefix="perkflow-replay-") as tmp:
        programs, events, operations = _stored_inputs(source, Path(tmp), programs)
        return run_batch(programs, events, target, operations=operations, progress=progress)


def _stored_inputs(source: Path, tmp: Path, programs: str | Path | None) -> tuple:
    """(programs, events, operations): the source's program files (unless given), events and
    operations as files under `tmp` (None for a kind it stores none of)."""
    try:
        con = duckdb.connect(str(source), read_only=True)
    except duckdb.Error as e:
        raise InputError(f"{source}: cannot be opened as a perkflow ledger: {str(e).splitlines()[0]}") from None
    try:
        if programs is None:
            documents = con.execute(statement("lookups.sql", "program_documents")).fetchall()
            if not documents:
                raise InputError(f"{source}: stores no program files; pass --programs")
            programs = tmp / "programs"
            programs.mkdir()
            for key, document in documents:
                (programs / f"{key}.json").write_text(json.dumps(json.loads(document)), encoding="utf-8")
        files = {}
        for name in ("events", "operations"):
            table = con.sql(statement("replay.sql", name)).to_arrow_table()
            if table.num_rows:
                files[name] = tmp / f"{name}.parquet"
                pq.write_table(table, files[name])
    except duckdb.CatalogException as e:
        raise InputError(f"{source}: not a perkflow ledger ({str(e).splitlines()[0]})") from None
    finally:
        con.close()
    if not files:
        raise InputError(f"{source}: stores no events or operations to replay")
    return programs, files.get("events"), files.get("operations")
