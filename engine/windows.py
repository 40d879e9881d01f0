"""Window expressions over groups of rows (a participant's events), with the groups of one row
computed without Polars' `over`.

`over` costs about 1.5 us per group whatever the group's size, and in a daily batch nearly every
group has one row: 2,800 events of 2,750 participants took ~4 ms per window expression (W3 at 1M
events, ~40 ms per state round of engine/running.py), where the same expression over the 50
participants with several events took 0.3 ms. `by_group` computes the rows of the groups of one
row (`ALONE`) and the others (`Over`) with the same formulas, and puts them back in order. That
costs ~2 ms itself: worth it for several window expressions at once, not for one.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl


class Over:
    """Windows of the rows of each group (rows with the same `key`), in row order."""

    def __init__(self, key: str):
        self.key = key

    def total(self, e: pl.Expr, *by: str) -> pl.Expr:
        """The running total up to and including the row (within `by` too)."""
        return e.cum_sum().over(self.key, *by)

    def last(self, e: pl.Expr) -> pl.Expr:
        """The last non-null value before the row."""
        return e.shift(1).forward_fill().over(self.key)

    def best(self, e: pl.Expr) -> pl.Expr:
        """The highest value before the row."""
        return e.shift(1).cum_max().forward_fill().over(self.key)

    def first_where(self, e: pl.Expr, mask: pl.Expr) -> pl.Expr:
        """The lowest value of the group's rows where `mask`."""
        return e.filter(mask).min().over(self.key)


class _Alone:
    """Over's windows for rows that are their group's only one: a one-row running total is the
    row itself, nothing comes before it (null, of the column's type), the lowest value where
    `mask` is the row's own value if `mask`."""

    def total(self, e: pl.Expr, *by: str) -> pl.Expr:
        return e

    def last(self, e: pl.Expr) -> pl.Expr:
        return pl.when(pl.lit(False)).then(e)

    best = last

    def first_where(self, e: pl.Expr, mask: pl.Expr) -> pl.Expr:
        return pl.when(mask).then(e)


ALONE = _Alone()


def by_group(frame: pl.LazyFrame, key: str,
             build: Callable[[pl.LazyFrame, Over | _Alone], pl.LazyFrame]) -> pl.LazyFrame:
    """`build(rows, windows)` over the rows of `frame` whose group (`key`) has several rows, with
    `Over` windows, and over the others with `ALONE`'s, in `frame`'s row order. `build` must keep
    the `_i` column of its rows (their place in `frame`), which the result does not have."""
    x = frame.with_columns(_alone=pl.col(key).is_unique(), _i=pl.int_range(pl.len(), dtype=pl.UInt32))
    parts = [build(x.filter(~pl.col("_alone")), Over(key)), build(x.filter(pl.col("_alone")), ALONE)]
    return pl.concat(parts).sort("_i").drop("_i", "_alone", strict=False)
