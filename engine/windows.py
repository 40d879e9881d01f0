"""Window expressions over groups of rows (a participant's events), without Polars' `over`
where it can be done with scans.

`over` costs about 1.5 us per group whatever the group's size, and more per row on large frames
(it hashes the key for every expression): in a daily batch nearly every group has one row
(2,800 events of 2,750 participants took ~4 ms per window expression, W3 at 1M events), and on
a 62,500-event chunk of W2 a decimal running total over 25,000 participants took ~31 ms.
`by_group` computes the rows of the groups of one row with `ALONE` (nothing comes before them),
and the others sorted by group with `Runs`: running totals and last values as scans over the
whole sorted column, cut at each group's first row (~3 ms for that total). It puts the rows
back in order after. Both give what `Over` gives, row for row (tests/unit/test_windows.py).
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


class Runs(Over):
    """Over's windows for rows sorted by group (each group's rows together, in their order) and
    marked by `mark`: a running total is the running total of the whole column less its value
    before the group's first row, and the last value before a row is the last one of the whole
    column if it lies in the row's group (the highest: `best`). Windows partitioned further
    (`by`) and `first_where` keep `over`, which gives the same on these rows. A whole-column
    total can pass what a DECIMAL(38, 18) holds where no group's does: Polars then raises an
    overflow, as `over` would for a group, and engine/running.py leaves the batch to the kernel."""

    @staticmethod
    def mark(rows: pl.LazyFrame, key: str) -> pl.LazyFrame:
        """`rows` sorted by `key` (then `_i`) with the columns the windows read: `_first` (the
        row starts its group) and `_g` (its group's number)."""
        rows = rows.sort(key, "_i").with_columns(_first=(pl.col(key) != pl.col(key).shift(1)).fill_null(True))
        return rows.with_columns(_g=pl.col("_first").cum_sum())

    def total(self, e: pl.Expr, *by: str) -> pl.Expr:
        if by:
            return super().total(e, *by)
        v = e.fill_null(0)  # (a null adds nothing and stays null, as in cum_sum)
        run = v.cum_sum()
        return pl.when(e.is_not_null()).then(run - pl.when("_first").then(run - v).forward_fill())

    def last(self, e: pl.Expr) -> pl.Expr:
        prev = pl.when("_first").then(None).otherwise(e.shift(1))
        found_in = pl.when(prev.is_not_null()).then(pl.col("_g")).forward_fill()  # the group of that value
        return pl.when(found_in == pl.col("_g")).then(prev.forward_fill())

    def best(self, e: pl.Expr) -> pl.Expr:
        """(Of an integer column.) The running maximum of the whole column, each group's values
        raised above every earlier group's (by the group's number times the values' range, in
        128 bits), so that a maximum found in the row's own group is its group's."""
        prev = pl.when("_first").then(None).otherwise(e.shift(1)).cast(pl.Int128)
        lo = prev.min()
        base = pl.col("_g").cast(pl.Int128) * (prev.max() - lo + 1)
        run = (prev - lo + base).cum_max().forward_fill()
        return pl.when(run >= base).then(run - base + lo).cast(pl.Int64)


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
    """`build(rows, windows)` over the rows of `frame` whose group (`key`) has several rows,
    sorted by group, with `Runs` windows, and over the others with `ALONE`'s, in `frame`'s row
    order. `build` must keep the `_i` column of its rows (their place in `frame`), which the result
    does not have."""
    x = frame.with_columns(_alone=pl.col(key).is_unique(), _i=pl.int_range(pl.len(), dtype=pl.UInt32))
    parts = [build(Runs.mark(x.filter(~pl.col("_alone")), key), Runs(key)), build(x.filter(pl.col("_alone")), ALONE)]
    return pl.concat(parts).sort("_i").drop("_i", "_alone", strict=False)
