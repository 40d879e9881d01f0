"""Large event and operation Parquet inputs whose arrival order is not the stream order
(semantics.md 3: by event_timestamp, then arrival), read chunk by chunk in stream order, so that
memory follows the chunk rather than the batch, as it does for inputs that arrive in order
(`events.read_chunks`).
Shuffled exports or files per region would otherwise be read whole: W1 at 1M shuffled events
peaked at 2.26 GiB against 1.35 GiB in order, and the whole-batch peak grows with the batch.

Three passes over the files, each holding one Parquet batch (BATCH_ROWS) at a time:
1. every row's timestamp (held: 8 bytes a row) gives its rank in stream order and its chunk,
   rank // rows; its idempotency key and whether it can be processed at all (the row contract,
   a known program, not a reserved key) go to the spill folder, where DuckDB finds the repeated
   keys;
2. the rows are written, as read, to a part file per (chunk, file) in a spill folder (the
   temporary directory, `TMPDIR`), with their row numbers and arrival numbers;
3. each chunk is read back from its parts and normalised as `events.read_chunks` would.

Chunks follow the stream order, except for one move that keeps idempotency exact: within a
batch the first row of a key to *arrive* wins (semantics.md 4; engine/intake.py), so a row that
ranks earlier than its key's winner goes to the winner's chunk, where it is compared with the
winner as the whole batch would compare it. Such a row is never processed (it is a duplicate or
a conflict), so no event is evaluated out of stream order, and by batch invariance (semantics.md
1.5) the ledger is the one the whole batch gives (tests/differential/test_chunked_batches.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import InputError
from engine.ledger.sqlfiles import statement

from .events import _check_utf8, _normalise, arrow_frame, joined
from .files import expand

ROW, ARRIVAL = "__perkflow_row", "__perkflow_arrival"
#: Rows read from a file at a time in each pass: what the passes hold, whatever the chunk size.
BATCH_ROWS = 65_536


def read_chunks(inputs: list[tuple[str | Path, str]], rows: int,
                screen: Callable[[pl.DataFrame], pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The Parquet files of a `streamable` batch as frames of about `rows` rows, chunk after
    chunk in stream order, rows numbered by their arrival in the batch. `screen`: intake's
    quarantine of normalised rows without the ledger (`engine.intake.screen` for the batch's
    catalog), which decides which rows can win their key."""
    files = [(f, root, kind) for spec, kind in inputs for f, root in expand(spec)]
    _remove_stale_spills()
    with tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{socket.gethostname()}-{os.getpid()}-") as folder:
        spill = Path(folder)
        chunk_of = _chunks(files, rows, screen, spill)
        parts = _spill(files, chunk_of, spill)
        for chunk in range(int(chunk_of.max()) + 1 if len(chunk_of) else 0):
            frames = []
            for i, part in sorted(parts.pop(chunk, {}).items()):  # file by file: arrival order
                f, root, kind = files[i]
                df = pl.from_arrow(pq.read_table(part))
                part.unlink()
                frames.append(_normalise(df.drop(ROW, ARRIVAL), f, root, kind, 0, row_numbers=df[ROW])
                              .with_columns(arrival=df[ARRIVAL]))
            if frames:
                yield joined(frames).sort("arrival")


SPILL_PREFIX = "perkflow-reorder-"


def _remove_stale_spills() -> None:
    """Spill folders of killed runs (SIGKILL, out of memory, power loss: the folder is removed
    on any other exit). A run's folder is named by its host and process id; one of this host
    whose process is gone and that this user owns is removed (up to the batch's size of parts).
    The ledger never needs them: nothing is committed before the whole batch is read."""
    host = socket.gethostname()
    for folder in Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}{host}-*-*"):
        pid = folder.name[len(SPILL_PREFIX) + len(host) + 1:].split("-")[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # gone meanwhile, or the process is alive and someone else's
            continue


def _batches(file: Path) -> Iterator[pa.Table]:
    try:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            _check_utf8(table)
            yield table
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(f"{file}: cannot be read as Parquet: {e}") from None


def _chunks(files: list[tuple[Path, Path, str]], rows: int, screen: Callable[[pl.DataFrame], pl.DataFrame],
            spill: Path) -> np.ndarray:
    """Pass 1: each row's chunk, indexed by its arrival number. Python holds only the
    timestamps; the keys go to a Parquet file in the spill folder for DuckDB to group."""
    stamps, keys, arrival = [], None, 0
    try:
        for f, root, kind in files:
            first = 0
            for table in _batches(f):
                screened = screen(_normalise(arrow_frame(table), f, root, kind, first))
                n = len(table)
                stamps.append(screened["event_timestamp"])
                # a row intake would quarantine is quarantined in whichever chunk it is; the
                # others compete for their key
                batch = screened.select(
                    "kind", program="program_key", key="idempotency_key", valid=pl.col("reject_reason").is_null(),
                    arrival=pl.int_range(arrival, arrival + n, dtype=pl.Int64),
                ).filter(pl.col("program").is_not_null() & pl.col("key").is_not_null()).to_arrow()
                if keys is None:
                    keys = pq.ParquetWriter(spill / "keys.parquet", batch.schema)
                keys.write_table(batch)
                first += n
                arrival += n
    finally:
        if keys is not None:
            keys.close()
    if not stamps:
        return np.zeros(0, dtype=np.int64)
    order = pl.DataFrame({"ts": pl.concat(stamps)}).with_row_index("arrival").sort(
        "ts", "arrival", nulls_last=False)["arrival"].to_numpy()
    chunk_of = np.empty(len(order), dtype=np.int64)
    chunk_of[order] = np.arange(len(order), dtype=np.int64) // rows
    if keys is not None:
        moved, winner = _repeated_keys(spill)
        chunk_of[moved] = np.maximum(chunk_of[moved], chunk_of[winner])
    return chunk_of


def _repeated_keys(spill: Path) -> tuple[np.ndarray, np.ndarray]:
    """(arrival, winner's arrival) of every row that repeats a key, grouped by DuckDB."""
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = '256MB'")
        con.execute("SET temp_directory = $t", {"t": str(spill / "duckdb")})
        found = con.execute(statement("reorder.sql", "repeated_keys"), {"keys": str(spill / "keys.parquet")}).fetchnumpy()
    finally:
        con.close()
    return found["arrival"].astype(np.int64), found["winner"].astype(np.int64)


def _spill(files: list[tuple[Path, Path, str]], chunk_of: np.ndarray, spill: Path) -> dict[int, dict[int, Path]]:
    """Pass 2: every file's rows, as read, into a part file per chunk: {chunk: {file index: part}}."""
    parts: dict[int, dict[int, Path]] = {}
    arrival = 0
    for i, (f, _root, _kind) in enumerate(files):
        writers: dict[int, pq.ParquetWriter] = {}
        first = 0
        try:
            for table in _batches(f):
                n = len(table)
                table = table.append_column(ROW, pa.array(range(first + 1, first + n + 1), pa.int64())) \
                    .append_column(ARRIVAL, pa.array(range(arrival, arrival + n), pa.int64()))
                # the batch's rows grouped by chunk (a stable sort), then cut where the chunk changes
                order = np.argsort(chunk_of[arrival:arrival + n], kind="stable")
                table = table.take(order)
                chunks = chunk_of[arrival:arrival + n][order]
                starts = [0, *(np.flatnonzero(np.diff(chunks)) + 1).tolist(), n]
                for a, b in zip(starts, starts[1:]):
                    chunk = int(chunks[a])
                    if chunk not in writers:
                        path = spill / f"{chunk:08d}-{i:08d}.parquet"
                        writers[chunk] = pq.ParquetWriter(path, table.schema)
                        parts.setdefault(chunk, {})[i] = path
                    writers[chunk].write_table(table.slice(a, b - a))
                first += n
                arrival += n
        finally:
            for w in writers.values():
                w.close()
    return parts
