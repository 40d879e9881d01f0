"""Large event and operation Parquet inputs whose arrival order is not the stream order (semantics.md 3: by
event_timestamp, then arrival), read chunk by chunk in stream order, so that memory follows the
chunk rather than the batch, as it does for inputs that arrive in order (`events.read_chunks`).
Shuffled exports or files per region would otherwise be read whole: W1 at 1M shuffled events
peaked at 2.37 GB against 1.42 GB in order, and the whole-batch peak grows with the batch.

Three passes over the files, each holding one Parquet batch at a time:
1. every row's rank in stream order, its idempotency key and whether it can be processed at all
   (the row contract, a known program, not a reserved key) give its chunk: rank // rows;
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

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.errors import InputError

from .events import _check_utf8, _normalise, joined
from .files import expand

ROW, ARRIVAL = "__perkflow_row", "__perkflow_arrival"


def read_chunks(inputs: list[tuple[str | Path, str]], rows: int,
                screen: Callable[[pl.DataFrame], pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The event files of a `streamable` batch as frames of about `rows` rows, chunk after
    chunk in stream order, rows numbered by their arrival in the batch. `screen`: intake's
    quarantine of normalised rows without the ledger (`engine.intake.screen` for the batch's
    catalog), which decides which rows can win their key."""
    files = [(f, root, kind) for spec, kind in inputs for f, root in expand(spec)]
    chunk_of = _chunks(files, rows, screen)
    with tempfile.TemporaryDirectory(prefix="perkflow-reorder-") as spill:
        parts = _spill(files, rows, chunk_of, Path(spill))
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


def _batches(file: Path, rows: int) -> Iterator[pa.Table]:
    try:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=rows):
            table = pa.Table.from_batches([batch])
            _check_utf8(table)
            yield table
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(f"{file}: cannot be read as Parquet: {e}") from None


def _chunks(files: list[tuple[Path, Path, str]], rows: int, screen: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.Series:
    """Pass 1: each row's chunk, indexed by its arrival number."""
    keys = []
    for f, root, kind in files:
        first = 0
        for table in _batches(f, rows):
            screened = screen(_normalise(pl.from_arrow(table), f, root, kind, first))
            first += len(table)
            # a row intake would quarantine is quarantined in whichever chunk it is; the others
            # compete for their key
            keys.append(screened.select("kind", ts="event_timestamp", program="program_key", key="idempotency_key",
                                        valid=pl.col("reject_reason").is_null()))
    if not keys:
        return pl.Series("chunk", [], dtype=pl.Int64)
    df = pl.concat(keys).with_row_index("arrival")
    ranked = df.sort("ts", "arrival", nulls_last=False).with_columns(
        chunk=pl.int_range(pl.len(), dtype=pl.Int64) // rows)
    # events and operations have keys of their own (semantics.md 4)
    winners = (ranked.filter("valid").group_by("kind", "program", "key")
               .agg(pl.col("chunk").sort_by("arrival").first().alias("winner_chunk")))
    ranked = ranked.join(winners, on=["kind", "program", "key"], how="left").with_columns(
        chunk=pl.max_horizontal("chunk", pl.col("winner_chunk").fill_null(0)))
    return ranked.sort("arrival")["chunk"]


def _spill(files: list[tuple[Path, Path, str]], rows: int, chunk_of: pl.Series, spill: Path) -> dict[int, dict[int, Path]]:
    """Pass 2: every file's rows, as read, into a part file per chunk: {chunk: {file index: part}}."""
    parts: dict[int, dict[int, Path]] = {}
    arrival = 0
    for i, (f, _root, _kind) in enumerate(files):
        writers: dict[int, pq.ParquetWriter] = {}
        first = 0
        try:
            for table in _batches(f, rows):
                n = len(table)
                table = table.append_column(ROW, pa.array(range(first + 1, first + n + 1), pa.int64())) \
                    .append_column(ARRIVAL, pa.array(range(arrival, arrival + n), pa.int64()))
                # the batch's rows grouped by chunk (a stable sort), then cut where the chunk changes
                order = pc.sort_indices(chunk_of.slice(arrival, n).to_arrow())
                table = table.take(order)
                chunks = chunk_of.slice(arrival, n).gather(order.to_numpy()).to_numpy()
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
