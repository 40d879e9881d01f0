"""Whether a set-wise outcome keeps every balance inside DECIMAL(38, 18) (|balance| < 10^20).

An event whose postings would take a balance there fails with amount_out_of_range (docs/decisions.md,
"A balance past DECIMAL(38, 18)"). The sequential kernel checks every move (engine.moves.out_of_range);
the set-wise paths (engine/running.py, execute's set-based path) do not model that failure. They
only find out that it happens: a running balance they compute in Polars Decimal arithmetic raises
past 38 digits (`overflow_is_out_of_range`), and `check` follows every account their outcome moves,
the system accounts (which sum over every participant) included. Either raises `OutOfRange`, and the
chunk goes through the kernel instead (engine/run.py). Both cost nothing per row on the normal path:
`check` is one sum unless the ledger's largest stored balance plus everything the chunk moves
could reach 10^20.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl

from engine import amounts
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.ledger.writer import account_legs

ACCOUNT = ["entity_type", "entity_id", "asset_id", "bucket"]


class OutOfRange(Exception):
    """A set-wise path met a balance past DECIMAL(38, 18): the kernel must decide which events fail."""


@contextmanager
def overflow_is_out_of_range() -> Iterator[None]:
    """Polars raises on Decimal arithmetic past 38 digits (a running balance or sum of a set-wise
    path): that is `OutOfRange`."""
    try:
        yield
    except pl.exceptions.ComputeError as e:
        if "overflow in decimal" not in str(e):
            raise
        raise OutOfRange from None


def check(effects: pl.DataFrame, con, rolled_back: pl.Series) -> None:
    """Raise `OutOfRange` unless applying `effects` (a chunk's applied moves, in ledger order,
    with their accounts) one by one keeps every account's balance below 10^20, and the moves the
    failed events made before they failed (`rolled_back`, amounts: a failed event's first
    failure may be such a move, which these paths do not check) cannot have reached it either.

    An account's balance never moves further from zero than its stored balance plus the amounts
    of the moves that touch it, so when the largest stored balance plus everything the chunk
    moved is below 10^20 nothing can (the normal case: one sum and one lookup). Otherwise, with no
    event rolled back after moving something, each account's running balance is followed
    exactly, from its stored balance, in ledger order; with one, the kernel decides."""
    if effects.is_empty() and rolled_back.is_empty():
        return
    try:
        everything = pl.concat([effects["amount"], rolled_back.cast(amounts.DECIMAL)])
        moved = pl.DataFrame({"amount": everything}).lazy().select(pl.col("amount").abs().sum()).collect().item()
    except pl.exceptions.ComputeError:  # the total alone passes 38 digits
        moved = None
    if moved is not None:
        largest = con.execute(statement("lookups.sql", "largest_balance")).fetchall()[0][0]
        if largest + moved < amounts.LIMIT:
            return
    if not rolled_back.is_empty():
        raise OutOfRange
    effects = effects.with_row_index("_i").with_columns(pl.col("_i").cast(pl.Int64))
    legs = account_legs(effects, "_i")
    stored = db.frame(con, statement("lookups.sql", "account_openings"),
                      stage_accounts=legs.select(ACCOUNT).unique()).cast({"amount": amounts.DECIMAL})
    opening = stored.select(pl.lit(-1, pl.Int64).alias("_i"), *ACCOUNT, "amount")
    with overflow_is_out_of_range():
        (pl.concat([opening, legs.select(opening.columns)]).lazy()
         .sort("_i", maintain_order=True)
         .select(pl.col("amount").cum_sum().over(ACCOUNT))
         .collect())
