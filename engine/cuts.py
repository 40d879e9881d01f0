"""Where a chunk is cut so that a few operations do not send all its events to the kernel.

The set-wise and running-state paths model events only: a chunk with any operation in it takes
the one-event-at-a-time kernel (engine/execute.py). A wallet funded at the start of a batch, or an
adjustment in the middle of a day, would send every event of the chunk there: W2 at 50,000 events
with its funding operation in the same batch took 25.0 s, against 5.5 s for the events alone.

So a chunk that holds valid operations is cut, in stream order (semantics.md 3), into parts:
every run of at least MIN_EVENTS consecutive events is a part of its own, and the rows between
(operations, shorter runs of events) make the parts the kernel takes. Each part is processed as a
chunk is, against the state the earlier ones left, in the batch's one transaction: by batch
invariance (semantics.md 1.5) the ledger is the one the uncut chunk gives, byte for byte
(tests/differential/test_cut_chunks.py).

Idempotency stays exact as in engine/io/reorder.py: within a batch a key's winner is its first
valid row to arrive (semantics.md 4), so a row that ranks before its key's winner goes to the
winner's part, where intake compares it with the winner. Such a row is never processed (it is a
duplicate or a conflict), so no event is evaluated out of stream order.
"""

from __future__ import annotations

import polars as pl

from engine.catalog import Catalog
from engine.intake import KEY, screen
from engine.ledger.db import env_count
from engine.plan import needs_kernel, programs_unsupported

#: The shortest run of events cut out of a chunk. Below it a run is left to the kernel: each part
#: pays the fixed cost of a chunk (intake, lookups, ~25 writer statements: ~0.2-0.3 s), which the
#: kernel's ~0.5 ms per event reaches at a few hundred events; the margin keeps a chunk whose
#: operations fall every few hundred events from paying it over and over.
MIN_EVENTS = env_count("PERKFLOW_CUT_MIN_EVENTS", 2_000)


def parts(rows: pl.DataFrame, catalog: Catalog) -> list[pl.DataFrame]:
    """`rows` (a chunk, as read) as the parts to process one after another: `[rows]` when
    nothing is worth cutting. Each part keeps the chunk's row order."""
    if len(rows) < MIN_EVENTS or not (rows["kind"] == "operation").any():
        return [rows]
    screened = screen(rows, catalog).with_row_index("_row")
    if not _worth_cutting(screened, catalog):
        return [rows]
    valid = pl.col("reject_reason").is_null()
    ranked = screened.sort("event_timestamp", "arrival", nulls_last=False).with_columns(
        # only a valid operation needs the kernel; a rejected row is quarantined in any part
        _op=(pl.col("kind") == "operation") & valid)
    ranked = ranked.with_columns(_run=(pl.col("_op") != pl.col("_op").shift()).fill_null(True).cum_sum())
    ranked = ranked.with_columns(_long=~pl.col("_op") & (pl.len().over("_run") >= MIN_EVENTS))
    # a part starts where a long run starts, and where the rows after a long run start
    starts = (pl.col("_run") != pl.col("_run").shift()) & (pl.col("_long") | pl.col("_long").shift())
    ranked = ranked.with_columns(_part=starts.fill_null(False).cum_sum())
    if ranked["_part"].max() == 0:
        return [rows]
    winners = ranked.filter(valid).group_by(KEY).agg(_winner=pl.col("_part").sort_by("arrival").first())
    ranked = ranked.join(winners, on=KEY, how="left")
    part = ranked.select("_row", _part=pl.max_horizontal("_part", "_winner")).sort("_row")["_part"]
    return [rows.filter(part == k) for k in part.unique().sort()]


def _worth_cutting(screened: pl.DataFrame, catalog: Catalog) -> bool:
    """Whether the events' programs can leave the kernel once the operations are out of their
    way: each is stateless (the set-wise path) or one the running-state path takes."""
    keys = screened.filter((pl.col("kind") == "event") & pl.col("reject_reason").is_null())["program_key"]
    stateful = (p for p in (catalog.programs[k] for k in keys.unique().to_list()) if needs_kernel(p))
    return programs_unsupported(stateful) is None
