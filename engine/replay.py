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
import polars as pl
import pyarrow.parquet as pq

from engine.errors import InputError
from engine.io import payload_types
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
            if not table.num_rows:
                continue
            if name == "events":
                files[name] = _event_files(_with_types(con, pl.from_arrow(table)), tmp / name)
            else:
                files[name] = tmp / f"{name}.parquet"
                pq.write_table(table, files[name])
    except duckdb.CatalogException as e:
        raise InputError(f"{source}: not a perkflow ledger ({str(e).splitlines()[0]})") from None
    finally:
        con.close()
    if not files:
        raise InputError(f"{source}: stores no events or operations to replay")
    return programs, files.get("events"), files.get("operations")


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
