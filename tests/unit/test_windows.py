"""engine/windows.py: by_group (one-row groups without `over`, the others as runs of sorted rows)
gives what `over` gives on every row, for each window and for frames of any mix of group sizes,
nulls and 64-bit extremes included."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.windows import Over, by_group

D = pl.Decimal(38, 18)
rows = st.lists(st.tuples(
    st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6"]),         # few keys: groups of one and of several
    st.one_of(st.none(), st.decimals(-10**6, 10**6, places=3)),     # an amount
    st.booleans(),                                                   # a mask
    st.one_of(st.none(), st.booleans()),                             # a written flag (null: not written)
    st.one_of(st.none(), st.integers(0, 3), st.integers(-2**62, 2**62)),  # a rank (any 64-bit one too)
    st.integers(0, 2),                                               # a sub-partition
), max_size=30)


def _frame(data: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(data, schema={"pid": pl.String, "amount": D, "mask": pl.Boolean, "flag": pl.Boolean,
                                      "rank": pl.Int64, "part": pl.Int64}, orient="row").with_columns(
        ts=pl.datetime(2025, 1, 1, time_zone="UTC") + pl.duration(hours=pl.int_range(pl.len())))


def _windows(x: pl.LazyFrame, win) -> pl.LazyFrame:
    return x.select(
        "_i",
        total=win.total(pl.col("amount")), total_by=win.total(pl.col("amount"), "part"),
        last=win.last(pl.col("flag")), best=win.best(pl.col("rank")),
        first=win.first_where(pl.col("ts"), pl.col("mask")))


@settings(max_examples=300, deadline=None)
@given(rows)
def test_by_group_equals_over_on_every_row(data):
    frame = _frame(data)
    want = _windows(frame.lazy().with_columns(_i=pl.int_range(pl.len())), Over("pid")).drop("_i").collect()
    got = by_group(frame.lazy(), "pid", _windows).collect()
    assert got.schema == want.schema
    assert got.to_dicts() == want.to_dicts()


def test_a_group_of_one_row_sees_nothing_before_it():
    frame = _frame([("p1", Decimal("2.5"), True, True, 2, 0), ("p2", Decimal(1), False, None, None, 0),
                    ("p1", Decimal(1), False, False, 1, 0)])
    got = by_group(frame.lazy(), "pid", _windows).collect()
    assert got["total"].to_list() == [Decimal("2.5"), Decimal(1), Decimal("3.5")]
    assert got["last"].to_list() == [None, None, True]
    assert got["best"].to_list() == [None, None, 2]
    assert got["first"].to_list()[1] is None and got["first"][0] == got["first"][2] == frame["ts"][0]
