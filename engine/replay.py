"""`perkflow replay`: a full rebuild, into a fresh ledger, from all the inputs another ledger
stored, in pure timestamp order (semantics.md 3).

Live, a row that arrives after later-timestamped rows of its participant is processed after them
(history is never rewritten); a replay processes every stored event and operation as one batch
ordered by timestamp alone (equal timestamps keep their arrival order, events and operations alike),
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
import polars as pl
import pyarrow.parquet as pq

from engine.errors import InputError, LedgerBrokenError, NoLedgerError
from engine.io import payload_types
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.run import RunReport, run_batch


def replay(source: str | Path, target: str | Path, programs: str | Path | None = None, *,
           progress: Callable[[str], None] | None = None, unverified: bool = False) -> RunReport:
    """The rebuild; first the source is verified (`perkflow verify`'s checks) unless `unverified`:
    a replay of a ledger whose rows were altered would rebuild a sound-looking ledger, with a chain
    of its own, from whatever the file holds now (an event deleted, its outcome edited), and the
    break would be gone from the record. A source that fails stops it (LedgerBrokenError, exit 4)
    before anything is written; `--unverified` rebuilds anyway (recovering from a damaged table)."""
    source, target = Path(source), db.db_path(target)
    if not source.is_file():
        raise InputError(f"{source}: no such ledger to replay (--from)")
    if target.exists() and source.resolve() == target.resolve():
        raise InputError(f"{target}: exists (--from names it too); replay writes a fresh ledger: name a new file with --db")
    if target.exists():
        try:
            db.connect(target, read_only=True).close()
        except NoLedgerError:
            pass  # a DuckDB file without a ledger: what a replay killed before its commit leaves (semantics.md 4)
        else:
            raise InputError(f"{target}: exists; replay writes a fresh ledger: name a new file with --db")
    with tempfile.TemporaryDirectory(prefix="perkflow-replay-") as tmp:
        programs, inputs = _stored_inputs(source, Path(tmp), programs, verified=not unverified, progress=progress)
        # the rows' source is the ledger they came from, not the temporary files they pass
        # through (deleted when the replay ends), as `perkflow op` names itself (docs/decisions.md)
        name = f"replay of {source.resolve()}"
        names = {str(f): name for f in Path(tmp).rglob("*.parquet")}
        return run_batch(programs, inputs, target, progress=progress, source_names=names)


def _stored_inputs(source: Path, tmp: Path, programs: str | Path | None, *, verified: bool = True,
                   progress: Callable[[str], None] | None = None) -> tuple:
    """(programs, inputs): the source's program files (unless given), and its events and
    operations as files under `tmp`, a list of (path, kind) in stream order (`_in_arrival_order`);
    with `verified`, after the source passed `perkflow verify`'s checks."""
    try:
        con = duckdb.connect(str(source), read_only=True)
    except duckdb.Error as e:
        raise InputError(f"{source}: cannot be opened as a perkflow ledger: {str(e).splitlines()[0]}") from None
    try:
        if verified:
            _verify_source(con, source, progress)
        if programs is None:
            documents = con.execute(statement("lookups.sql", "program_documents")).fetchall()
            if not documents:
                raise InputError(f"{source}: stores no program files; pass --programs")
            programs = tmp / "programs"
            programs.mkdir()
            for key, document in documents:
                (programs / f"{key}.json").write_text(json.dumps(json.loads(document)), encoding="utf-8")
        events = _with_types(con, pl.from_arrow(con.sql(statement("replay.sql", "events")).to_arrow_table()))
        operations = con.sql(statement("replay.sql", "operations")).to_arrow_table()
    except duckdb.CatalogException as e:
        raise InputError(f"{source}: not a perkflow ledger ({str(e).splitlines()[0]})") from None
    finally:
        con.close()
    if not len(events) and not operations.num_rows:
        raise InputError(f"{source}: stores no events or operations to replay")
    return programs, _in_arrival_order(events, operations, tmp)


def _verify_source(con: duckdb.DuckDBPyConnection, source: Path, progress: Callable[[str], None] | None) -> None:
    from engine.verify import verify

    if progress:
        progress("verifying the source")
    db.limit_memory(con)  # verify's checks stay within the cap; reading the inputs after it keeps DuckDB's own
    try:
        report = verify(con, limit=1)
    finally:
        con.execute("RESET memory_limit")
    if not report.ok:
        v = report.violations[0]
        row = dict(zip(v.columns, v.rows[0])) if v.rows else {}
        where = f" (batch {row['batch_id']})" if row.get("batch_id") is not None else ""
        raise LedgerBrokenError(
            f"{source} fails `perkflow verify`: {v.check}{where}: {v.meaning}. A replay would rebuild a sound-"
            f"looking ledger from what the file holds now; nothing was written. `perkflow verify --db {source}` "
            "shows the breaks; pass --unverified to rebuild from the stored inputs anyway")


def _in_arrival_order(events: pl.DataFrame, operations, tmp: Path) -> list[tuple[Path, str]]:
    """The events and operations (each in stream order) as input files whose arrival order is
    the stream order of both together: (timestamp, the arrival sequence they were stored with,
    which is one sequence for events and operations). A run reads event files before operation
    files, so an operation that arrived before an event of the same instant (an earlier batch)
    needs its own input ahead of it: each run of one kind in the merged order is an input."""
    keys = pl.concat([
        events.select(ts=pl.col("event_timestamp"), seq=pl.col("_arrival"), kind=pl.lit("event")),
        pl.from_arrow(operations.select(["timestamp", "_arrival"])).select(
            ts=pl.col("timestamp"), seq=pl.col("_arrival"), kind=pl.lit("operation")),
    ]).sort("ts", "seq")
    runs = keys.group_by((pl.col("kind") != pl.col("kind").shift()).fill_null(True).cum_sum().alias("run"),
                         maintain_order=True).agg(pl.col("kind").first(), pl.len())
    events, operations = events.drop("_arrival"), operations.drop(["_arrival"])
    inputs, taken = [], {"event": 0, "operation": 0}
    for n, (kind, rows) in enumerate(runs.select("kind", "len").iter_rows()):
        first, taken[kind] = taken[kind], taken[kind] + rows
        if kind == "event":
            inputs.append((_event_files(events.slice(first, rows), tmp / f"events-{n:06d}"), kind))
        else:
            inputs.append((tmp / f"operations-{n:06d}.parquet", kind))
            pq.write_table(operations.slice(first, rows), inputs[-1][0])
    return inputs


def _with_types(con: duckdb.DuckDBPyConnection, events: pl.DataFrame) -> pl.DataFrame:
    """The events with the type their payload was read with (`event_data_type`, null for none)."""
    types = pl.DataFrame(schema={"program_id": pl.String, "idempotency_key": pl.String, "event_data_type": pl.String})
    if con.execute(statement("lookups.sql", "stores_payload_types")).fetchall()[0][0]:
        types = pl.from_arrow(con.sql(statement("replay.sql", "payload_types")).to_arrow_table())
    return events.join(types, on=["program_id", "idempotency_key"], how="left", maintain_order="left")


def _event_files(events: pl.DataFrame, folder: Path) -> Path:
    """The stored events as event files, in replay order, their payloads read as the run read
    them: each run of rows with one payload type is a file whose `event_data` is that Struct
    (file order is arrival order, so the order holds across files); rows without one (JSON
    payloads) are written as their text. The stored text of a struct payload is what its Struct
    encodes to; a row where decoding and encoding again would not give that text back is
    written as its text too, so that the replayed ledger stores every payload as the source did."""
    text = events["event_data"]
    struct_of = pl.Series([None] * len(events), dtype=pl.String)
    for arrow_schema in events["event_data_type"].drop_nulls().unique().to_list():
        rows = (events["event_data_type"] == arrow_schema).fill_null(False)
        decoded = payload_types.typed(text.filter(rows), arrow_schema)
        same = (decoded.struct.json_encode() == text.filter(rows)).fill_null(False)
        struct_of = struct_of.scatter(rows.arg_true().filter(same), arrow_schema)
    runs = events.drop("event_data_type").with_columns(_type=struct_of).with_columns(
        _run=pl.col("_type").ne_missing(pl.col("_type").shift()).fill_null(True).cum_sum())
    folder.mkdir()
    for n, part in enumerate(runs.partition_by("_run", maintain_order=True)):
        arrow_schema = part["_type"][0]
        if arrow_schema is not None:
            part = part.with_columns(payload_types.typed(part["event_data"], arrow_schema))
        part.drop("_type", "_run").write_parquet(folder / f"part-{n:06d}.parquet")
    return folder
