"""engine.running._monotone: a budget's period per event, computed from a few calls of the
period function instead of one per event. It must equal the plain map for every step function."""

import random
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from engine.catalog.compiled import CompiledBudget
from engine.running import _monotone


@pytest.mark.parametrize("seed", range(20))
def test_equals_the_plain_map(seed):
    rng = random.Random(seed)
    xs = sorted(rng.randrange(0, 1000) for _ in range(rng.randrange(0, 300)))
    step = rng.choice([1, 2, 7, 50, 999, 5000])
    fn = lambda x: x // step  # noqa: E731
    assert _monotone(pl.Series(xs, dtype=pl.Int64), fn).to_list() == [fn(x) for x in xs]


def test_budget_periods_over_a_year_of_instants():
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(1)
    stamps = pl.Series(sorted(start + timedelta(seconds=rng.randrange(0, 365 * 86400)) for _ in range(5000)))
    budget = CompiledBudget(asset_id=None, asset="PTS", limit=1, interval=timedelta(hours=24))
    assert _monotone(stamps, budget.period).to_list() == [budget.period(t) for t in stamps.to_list()]
