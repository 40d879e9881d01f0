"""Opening the DuckDB file: one writer at a time, schema ensured, UTC session."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from pathlib import Path

import duckdb

from engine.errors import DatabaseBusyError, InputError, NoLedgerError

from .sqlfiles import script, statement

DEFAULT_DB = "data/warehouse.duckdb"
# DuckDB's memory cap on writing and verifying connections (PERKFLOW_DUCKDB_MEMORY overrides).
# 700 MB: W1 at 10M events (1M participants) peaked at 1.86 GiB RSS with it, 2.12 GiB with 1 GB.
# It needs nothing in DuckDB's share to be pinned: the tables that grow with participants have no
# unique index (schema.sql), and W2 at 10M events in one batch (29M entries) completes under it.
MEMORY_LIMIT = "700MB"


def db_path(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("PERKFLOW_DB") or DEFAULT_DB)


def connect(path: str | Path | None = None, *, read_only: bool = False, wait: float = 30.0,
            schema: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the database. DuckDB allows one writing process per file: if another run holds it,
    wait up to `wait` seconds (saying so once), then stop with DatabaseBusyError. A writing
    connection ensures the schema unless `schema` is False (the caller does, in its transaction)."""
    p = db_path(path)
    if read_only and not p.exists():
        raise FileNotFoundError(f"{p}: no database here yet; run `perkflow run` first or pass --db")
    if p.is_dir():  # a configuration error (exit 2), not an internal one
        raise InputError(f"{p}: is a directory; pass --db a DuckDB file (e.g. {p / 'warehouse.duckdb'})")
    p.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    told = False
    not_a_database = InputError(f"{p}: not a DuckDB database; pass --db a ledger file, or a path that does "
                                "not exist yet for a new one")
    while True:
        try:
            con = duckdb.connect(str(p), read_only=read_only)
            break
        except duckdb.CatalogException as e:
            if "in-memory" in str(e).lower():  # read-only open of a data file (below)
                raise not_a_database from None
            raise
        except duckdb.IOException as e:
            if "not a valid duckdb database" in str(e).lower():
                raise not_a_database from None
            if "lock" not in str(e).lower():
                raise
            if time.monotonic() >= deadline:
                raise DatabaseBusyError(f"{p}: database is in use by another run; try again when it has finished") from None
            if not told:
                print(f"{p}: database is in use by another run; waiting up to {wait:.0f}s ...", file=sys.stderr)
                told = True
            time.sleep(0.2)
    if con.execute(statement("schema_version.sql", "opened_path")).fetchone()[0] is None:
        # DuckDB opens an existing Parquet, CSV or JSON file as an in-memory database over it:
        # a run would "commit" into memory and lose it (exit 0), and the file is no ledger
        con.close()
        raise not_a_database
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # the CLI draws its own progress
    if threads := os.environ.get("PERKFLOW_DUCKDB_THREADS"):
        # DuckDB uses every core by default; a shared host or a container may want fewer. The
        # ledger does not depend on it (tests/reliability/test_threads.py runs with 1 and the default).
        con.execute("SET threads = $t", {"t": positive_int("PERKFLOW_DUCKDB_THREADS", threads)})
    if read_only:
        if not con.execute(statement("schema_version.sql", "is_ledger")).fetchall()[0][0]:
            con.close()
            raise NoLedgerError(f"{p}: holds no perkflow ledger yet (a first run that did not commit leaves "
                             "an empty file); run `perkflow run` first or pass --db")
        # reports and queries: DuckDB's own default (80% of the machine's memory) unless the
        # user set a cap; `perkflow verify` sets its own (limit_memory)
        limit_memory(con, default=None)
    else:
        # A batch's uncommitted rows stay in DuckDB's buffers until the commit unless it must
        # evict them (they are written to the file or its temp folder): a cap keeps a large
        # batch's memory flat (design/performance.md). Raise it for ledgers whose indexes
        # (participants) alone approach it.
        limit_memory(con)
        if schema:
            ensure_schema(con)
    return con


def positive_int(name: str, text: str, unit: str = "threads") -> int:
    """A setting from the environment that must be a whole number of `unit`, 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise InputError(f"{name}={text!r}: must be a whole number of {unit}, 1 or more")
    return int(text)


def env_count(name: str, default: int, unit: str = "events") -> int:
    """A tuning setting from the environment read when its module loads (PERKFLOW_RUNNING_MIN_EVENTS,
    PERKFLOW_CUT_MIN_EVENTS): a whole number of `unit`, 0 or more; unset or empty, `default`. A
    bad one is the user's configuration (exit 2, semantics.md 13), not an internal error."""
    text = os.environ.get(name) or ""
    if not text:
        return default
    if not text.strip().isdigit():
        raise InputError(f"{name}={text!r}: must be a whole number of {unit}, 0 or more")
    return int(text)


def limit_memory(con: duckdb.DuckDBPyConnection, default: str | None = MEMORY_LIMIT) -> None:
    """Cap DuckDB's memory (PERKFLOW_DUCKDB_MEMORY, else `default`; None: DuckDB's own): past
    it, joins, aggregates and sorts spill to the database's temp folder (`<file>.tmp`, also for
    a read-only connection). Every writing connection has MEMORY_LIMIT; `perkflow verify` and the
    Dagster checks set it on their read-only one (its checks are written to stay within it);
    other read-only connections take the variable only."""
    cap = os.environ.get("PERKFLOW_DUCKDB_MEMORY") or default
    if cap:
        con.execute("SET memory_limit = $m", {"m": cap})


def defer_checkpoints(con: duckdb.DuckDBPyConnection) -> None:
    """Let the WAL grow to 1 GB before DuckDB merges it into the file (default: 16 MB). A
    checkpoint rewrites every row group a batch touched (balances, lots, state), so in a backfill
    of small daily batches it ran every few batches and grew with the ledger: W3 at 1M events,
    60 days, 40.3 -> 34.6 s, same ledger. Commits are as durable (the WAL is synced at each);
    a crash leaves more WAL to replay when the file is next opened."""
    con.execute("SET checkpoint_threshold = '1GB'")


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None, **stages):
    """Run `sql` with each of `stages` (Polars frames or Arrow tables) readable under its name.

    DuckDB finds them by its replacement scan of the calling frame's locals, which holds them
    for this statement only. `con.register` would read them just as well, but inside a
    transaction DuckDB keeps every object registered until the commit (the dropped view stays
    in the catalog for MVCC): a batch written chunk by chunk then held every chunk's frames."""
    return _with_stages("con.execute(sql, params)", con, sql, params, stages)


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None, **stages) -> "pl.DataFrame":
    """A query's result as a Polars frame, through Arrow (no row-by-row copy); `stages` as for
    `execute`."""
    import polars as pl

    return pl.from_arrow(_with_stages("con.sql(sql, params=params)", con, sql, params, stages).to_arrow_table())


def _with_stages(call: str, con, sql: str, params: dict | None, stages: dict):
    import polars as pl

    scope = {k: arrow(v) if isinstance(v, pl.DataFrame) else v for k, v in stages.items()}
    scope |= {"con": con, "sql": sql, "params": params or {}}
    return eval(call, {}, scope)  # noqa: S307 - a fixed call of ours: the scope is the point


#: Rows per Arrow record batch of a stage. DuckDB scans an Arrow table one batch per thread, and
#: a Polars frame usually comes out as one batch: every statement over a chunk's stages then ran
#: on one thread (under ~1M rows). Sliced (no copy) into batches of this size, a 250,000-row
#: chunk's statements run on every core.
SCAN_BATCH_ROWS = 16_384


def arrow(df: "pl.DataFrame"):
    """A frame as an Arrow table for DuckDB to scan, without copying it: Polars holds strings as
    views, and the default (oldest-compatible) export copies every string into a large_string
    array, which at a million events doubled the batch's memory. DuckDB reads string_view."""
    import polars as pl
    import pyarrow as pa

    table = df.to_arrow(compat_level=pl.CompatLevel.newest())
    if table.num_rows <= SCAN_BATCH_ROWS:
        return table
    return pa.Table.from_batches(table.to_batches(max_chunksize=SCAN_BATCH_ROWS), table.schema)


def define_report_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define, on this connection, views.sql's macros (the flows and their exact sums) as TEMP
    macros, which DuckDB resolves before any stored in the file: what `perkflow verify` sums a
    ledger with when the ledger's own views predate these macros (written by an older perkflow),
    so that it needs no writing run first. The views stay the file's (a read-only connection
    cannot replace them)."""
    _define_temp_macros(con, "views.sql")


def define_id_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define, on this connection, schema.sql's id macros (`name_uuid` and what it is built from)
    as TEMP macros: `perkflow verify` recomputes ids with this perkflow's definition, never with
    one stored in (and so replaceable within) the file it checks, nor fails on a ledger from
    before the macros existed."""
    _define_temp_macros(con, "schema.sql")


def _define_temp_macros(con: duckdb.DuckDBPyConnection, file: str) -> None:
    temp = re.sub(r"\bCREATE OR REPLACE MACRO\b", "CREATE OR REPLACE TEMP MACRO", script(file))
    for s in con.extract_statements(temp):
        if "CREATE OR REPLACE TEMP MACRO" in s.query:
            con.execute(s.query)


def define_hash_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define, on this connection, the macros of the texts entry hashes cover (sql/hash.sql): the
    writer and `perkflow verify` call this before they hash, so that both use this perkflow's
    definition and never one stored in (and so replaceable within) the ledger file."""
    con.execute(script("hash.sql"))


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schema and views, unless this database already has exactly these (a stored
    hash of the two files): re-running the DDL costs a noticeable share of a small batch."""
    version = hashlib.sha256((script("schema.sql") + script("views.sql")).encode()).hexdigest()
    con.execute(statement("schema_version.sql", "create"))
    if con.execute(statement("schema_version.sql", "current")).fetchall() == [(version,)]:
        return
    con.execute(script("schema.sql"))
    con.execute(script("views.sql"))
    con.execute(statement("schema_version.sql", "record"), {"hash": version})
