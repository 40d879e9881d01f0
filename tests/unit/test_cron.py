"""CRON budget periods: engine/cron.py against an independent cron implementation (the croniter
that Dagster vendors for its own schedules), and CRON budgets end to end through the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from dagster._vendored.croniter import croniter
from engine.cron import CronError, parse

UTC = timezone.utc


def reference_previous(expr: str, now: datetime) -> datetime:
    """Latest firing at or before `now` per croniter (its get_prev is strictly before a firing minute)."""
    minute = now.replace(second=0, microsecond=0)
    if croniter.match(expr, minute):
        return minute
    return croniter(expr, now).get_prev(datetime)


def _part(values: st.SearchStrategy[int], low: int, high: int, starred_steps: bool = True) -> st.SearchStrategy[str]:
    """A field. Day fields draw no `*/n` (cron implementations disagree on whether `*/2` counts as
    restricted for the either-day rule; ours says only a bare `*` is unrestricted)."""
    single = values.map(str)
    # croniter's match() treats a one-value range such as `0-0` as "any": ranges are drawn wider
    rng = st.tuples(values, values).filter(lambda ab: ab[0] != ab[1]).map(lambda ab: f"{min(ab)}-{max(ab)}")
    starts = ["*", f"{low}-{high}"] if starred_steps else [f"{low}-{high}"]
    step = st.tuples(st.sampled_from(starts), st.integers(2, 7)).map(lambda t: f"{t[0]}/{t[1]}")
    item = st.one_of(single, rng, step)
    return st.one_of(st.just("*"), st.lists(item, min_size=1, max_size=3).map(",".join))


EXPRESSIONS = st.tuples(
    _part(st.integers(0, 59), 0, 59), _part(st.integers(0, 23), 0, 23), _part(st.integers(1, 28), 1, 28, False),
    _part(st.integers(1, 12), 1, 12), _part(st.integers(0, 6), 0, 6, False),
).map(" ".join)
INSTANTS = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2040, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS, INSTANTS)
def test_previous_firing_matches_croniter(expr, now):
    assert parse(expr).previous(now) == reference_previous(expr, now)


@settings(max_examples=100, deadline=None)
@given(EXPRESSIONS, INSTANTS, st.lists(st.integers(0, 90 * 24 * 60), min_size=2, max_size=20))
def test_memoised_span_never_changes_an_answer(expr, start, offsets):
    """Asking in time order (the memo's fast path) and out of order gives croniter's answers."""
    cron = parse(expr)
    for minutes in sorted(offsets) + offsets:
        now = start + timedelta(minutes=minutes, seconds=17)
        assert cron.previous(now) == reference_previous(expr, now)


@pytest.mark.parametrize("expr, now, expected", [
    ("0 0 1 * *", datetime(2025, 3, 15, 12, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),
    ("0 0 1 * *", datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),  # at the firing: new period
    ("30 9 * * MON-FRI", datetime(2025, 3, 16, 10, tzinfo=UTC), datetime(2025, 3, 14, 9, 30, tzinfo=UTC)),  # Sun -> Fri
    ("0 0 29 2 *", datetime(2101, 3, 1, tzinfo=UTC), datetime(2096, 2, 29, tzinfo=UTC)),  # 2100 is no leap year
    ("@weekly", datetime(2025, 3, 19, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC)),  # 16 March 2025 is a Sunday
    ("0 0 13 * FRI", datetime(2025, 3, 12, tzinfo=UTC), datetime(2025, 3, 7, tzinfo=UTC)),  # either day field
])
def test_known_firings(expr, now, expected):
    assert parse(expr).previous(now) == expected


@pytest.mark.parametrize("expr, words", [
    ("0 0 31 2 *", "never fires"), ("61 * * * *", "outside 0-59"), ("* * *", "5 fields"),
    ("a * * * *", "not a number"), ("*/0 * * * *", "not a number"), ("5-1 * * * *", "outside"),
])
def test_bad_expressions_say_why(expr, words):
    with pytest.raises(CronError, match=words):
        parse(expr)


def _wall_minutes_reference(cron, tz, start: datetime, end: datetime) -> list[datetime]:
    """Every wall-clock minute around (start, end] that the expression names, mapped to its
    instant with zoneinfo's fold 0 (a skipped time past the gap, a repeated one at its first
    occurrence), each instant once, in time order: docs/decisions.md "Time zones"."""
    out, wall = set(), (start - timedelta(days=1)).astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    stop = (end + timedelta(days=1)).astimezone(tz).replace(tzinfo=None)
    while wall <= stop:
        if cron.day_matches(wall.date()) and wall.hour in cron.hours and wall.minute in cron.minutes:
            instant = wall.replace(tzinfo=tz).astimezone(UTC)
            if start < instant <= end:
                out.add(instant)
        wall += timedelta(minutes=1)
    return sorted(out)


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago",
                                  "Europe/Moscow", "Pacific/Apia"])
def test_next_after_gives_every_named_wall_time_once_across_dst_changes(zone):
    """Iterating next_after over 30 hours each side of every offset change of 2011 and 2025 gives
    the reference's instants. It used to lose the skipped wall times after the first one that
    fired in a gap (New York 9 March 2025, "*/20 2 * * *": 02:00 fired, 02:20 and 02:40 not)."""
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(zone)
    for year in (2011, 2025):
        t, changes = datetime(year, 1, 1, tzinfo=UTC), []
        while t.year == year:
            if t.astimezone(tz).utcoffset() != (t - timedelta(hours=1)).astimezone(tz).utcoffset():
                changes.append(t)
            t += timedelta(hours=1)
        for change in changes:
            for expr in ("*/20 * * * *", "10,40 1-3 * * *", "30 2 * * *", "0 * * * *", "*/7 0-4 * * *",
                         "0,30 0-2 * * 0", "15 2,3 * * *"):
                cron, start, end = parse(expr), change - timedelta(hours=30), change + timedelta(hours=30)
                got, at = [], start
                while (at := cron.next_after(at, tz)) <= end:
                    got.append(at)
                assert got == _wall_minutes_reference(cron, tz, start, end), (zone, change, expr)
