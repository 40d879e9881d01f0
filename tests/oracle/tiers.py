"""Tiers for the oracle (semantics.md 10 and docs/decisions.md "Tiers"), written from the docs.

A participant holds at most one level per tier type. After a completed event every participant
the event touched is raised to the highest level its counters meet (never lowered). Time-driven
changes happen at their own instants, before the participant is next touched, or by maintenance:
- a review when a held level's window ends (plus `status_validity.extend_months` when that
  extends a period or duration window, plus `grace_days`), which keeps a still-qualifying level
  and otherwise applies the downgrade policy;
- counter rollover at every period close (period end + extend_months + grace_days), after that
  instant's reviews, for every participant with a rolled counter, level or not.
Windows: a calendar period (the next period end after the window start), `retention.duration`
after the start (ACTIVITY_REFRESH: the start moves to each completed event of the program's
participant), or, without either, `status_validity.extend_months` after the start; none of them:
never reviewed. The start is when the level was reached, else the last window end reviewed.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

ZERO = Decimal(0)
_TESTS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "==": lambda a, b: a == b,
          "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


@dataclass
class LevelDef:
    key: str
    rank: int
    mode: str | None  # ALL | ANY; None: no qualification (never reached automatically)
    criteria: list[tuple[str, str, Decimal]]
    benefits: dict


@dataclass
class TierDef:
    program_key: str
    key: str
    levels: list[LevelDef]  # ascending rank
    lifecycle: Any  # engine.catalog.models.Lifecycle (the parsed file), or None
    duration: timedelta | None
    rolled: list[str]  # counter keys rolled over at period closes

    @property
    def name(self) -> tuple[str, str]:
        return (self.program_key, self.key)

    def level(self, key: str) -> LevelDef:
        return next(lv for lv in self.levels if lv.key == key)


@dataclass
class Held:
    level: str
    reached_at: datetime
    window_start: datetime  # reached_at, the last window end reviewed, or (ACTIVITY_REFRESH) the last activity


def tier_def(program_key: str, tier, parse_duration: Callable[[str], timedelta]) -> TierDef:
    levels = sorted((LevelDef(lv.key, lv.rank, lv.qualification.mode if lv.qualification else None,
                              [(c.counter, c.operator, Decimal(c.threshold)) for c in lv.qualification.criteria]
                              if lv.qualification else [], lv.benefits) for lv in tier.levels),
                    key=lambda lv: lv.rank)
    life = tier.lifecycle
    duration = parse_duration(life.retention.duration) if life and life.retention.duration else None
    rolled: list[str] = []
    if life and life.counters:
        rolled = life.counters.qualifying if life.counters.qualifying is not None else [
            crit[0] for lv in levels for crit in lv.criteria]
        rolled = list(dict.fromkeys(rolled))
    return TierDef(program_key, tier.key, levels, life, duration, rolled)


def meets(level: LevelDef, counters: dict[str, Decimal]) -> bool:
    if level.mode is None:
        return False
    results = [_TESTS[op](counters.get(name, ZERO), threshold) for name, op, threshold in level.criteria]
    return all(results) if level.mode == "ALL" else any(results)


def best(tier: TierDef, counters: dict[str, Decimal]) -> LevelDef | None:
    found = [lv for lv in tier.levels if meets(lv, counters)]
    return found[-1] if found else None


def months_later(t: datetime, n: int) -> datetime:
    month = t.month - 1 + n
    year, month = t.year + month // 12, month % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def _has_calendar(tier: TierDef) -> bool:
    p = tier.lifecycle.qualification_period
    return p is not None and p.type in ("CALENDAR_YEAR", "FIXED_YEAR")


def _period_ends(tier: TierDef, year: int):
    """Period ends from 1 January of `year - 1` on, ascending, forever."""
    p = tier.lifecycle.qualification_period
    month, day = (1, 1) if p.type == "CALENDAR_YEAR" else (p.start_month, p.start_day)
    while True:
        yield datetime(year - 1, month, day, tzinfo=timezone.utc)
        year += 1


def _extra_months(tier: TierDef) -> int:
    v = tier.lifecycle.status_validity
    return v.extend_months if v is not None else 0


def _grace(tier: TierDef) -> timedelta:
    return timedelta(days=tier.lifecycle.downgrade_policy.grace_days)


def review_due(tier: TierDef, held: Held) -> tuple[datetime, datetime] | None:
    """(due instant, window end) of the held level's next review, None if never."""
    start = held.window_start
    if _has_calendar(tier):
        end = next(e for e in _period_ends(tier, start.year) if e > start)
        return months_later(end, _extra_months(tier)) + _grace(tier), end
    if tier.duration is not None:
        end = start + tier.duration
        return months_later(end, _extra_months(tier)) + _grace(tier), end
    if tier.lifecycle.status_validity is not None:
        end = months_later(start, _extra_months(tier))
        return end + _grace(tier), end
    return None


def next_close(tier: TierDef, after: datetime) -> datetime:
    """The first period close strictly after `after`."""
    for end in _period_ends(tier, after.year - 11):  # extend_months <= 120: a close lags its end < 11 years
        close = months_later(end, _extra_months(tier)) + _grace(tier)
        if close > after:
            return close
    raise AssertionError("unreachable")


def downgrade(tier: TierDef, held: Held, counters: dict[str, Decimal]) -> str | None:
    """The level a review moves to, or None to keep the held one."""
    policy = tier.lifecycle.downgrade_policy
    current = tier.level(held.level)
    if policy.mode == "HOLD" or meets(current, counters):
        return None
    below = [lv for lv in tier.levels if lv.rank < current.rank]
    if not below:
        return None
    if policy.mode == "DROP_ONE":
        to = below[-1]
    else:
        qualifying = [lv for lv in below if meets(lv, counters)]
        to = qualifying[-1] if qualifying else below[0]
    if policy.min_level is not None:
        floor = tier.level(policy.min_level)
        if to.rank < floor.rank:
            to = floor if floor.rank < current.rank else current
    return None if to.key == current.key else to.key


def rolled_value(tier: TierDef, held: Held | None, key: str, value: Decimal) -> Decimal:
    """NONE: 0. EXCESS: what exceeds the highest >= / > threshold on `key` of the level held, else 0."""
    if tier.lifecycle.counters.rollover == "NONE" or held is None:
        return ZERO
    limits = [t for name, op, t in tier.level(held.level).criteria if name == key and op in (">=", ">")]
    return max(ZERO, value - max(limits)) if limits else ZERO


def cel_tiers(tiers: list[TierDef], held: dict[tuple[str, str], Held]) -> dict:
    """`participant.tiers` for one program's tiers: JSON numbers of benefits are doubles."""
    out = {}
    for tier in tiers:
        h = held.get(tier.name)
        if h is not None:
            lv = tier.level(h.level)
            out[tier.key] = {"level": lv.key, "rank": lv.rank, "benefits": _doubles(lv.benefits)}
    return out


def _doubles(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, dict):
        return {k: _doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_doubles(v) for v in value]
    return value
