"""Hypothesis strategies for tier programs with every lifecycle option (semantics.md 10,
docs/decisions.md "Tiers") and event streams long enough (2.5 years) to cross period ends,
retention windows, validity months, grace days and rollover closes, cut into batches with
maintenance runs between them.

Programs: one program `club` with one or two tier types over the counters `spend` (buys less
refunds), `visits` and `bonus` (given by another participant as an action target); a rule reads
`participant.tiers` (rank and benefits). Only the first tier type may roll counters over (a
counter rolls with one tier only), and no COUNTER has `reset_after` (a rolled counter cannot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from tests.differential.strategies import Row

COUNTERS = ["spend", "visits", "bonus"]
PARTICIPANTS = ["u1", "u2", "u3", "u4"]
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SPAN_MINUTES = 2 * 365 * 24 * 60 + 180 * 24 * 60
END = datetime(2028, 6, 1, tzinfo=timezone.utc)  # the final maintenance run


@st.composite
def level_list(draw) -> list[dict]:
    n = draw(st.integers(2, 3))
    levels = []
    for rank in range(1, n + 1):
        level = {"key": f"l{rank}", "rank": rank, "benefits": {"mult": rank * 2}}
        if draw(st.integers(0, 7)) < 7:  # now and then a level reached only by hand (never here)
            criteria = [{"counter": draw(st.sampled_from(COUNTERS)),
                         "operator": draw(st.sampled_from([">=", ">=", ">=", ">", "<", "=="])),
                         "threshold": draw(st.integers(5, 60)) * rank * 2}
                        for _ in range(draw(st.integers(1, 2)))]
            level["qualification"] = {"mode": draw(st.sampled_from(["ALL", "ANY"])), "criteria": criteria}
        levels.append(level)
    return levels


@st.composite
def lifecycle(draw, levels: list[dict], may_roll: bool) -> dict | None:
    if draw(st.integers(0, 5)) == 5:  # (hypothesis starts from the simplest draws: make them rich)
        return None
    refresh = draw(st.integers(0, 1)) == 1
    life: dict = {"retention": {"mode": "ACTIVITY_REFRESH" if refresh else "PERIOD_BASED"}}
    period = None
    if refresh:
        life["retention"]["duration"] = draw(st.sampled_from(["720h", "2160h", "4380h", "100h"]))
        if draw(st.booleans()):
            life["qualification_period"] = {"type": "NONE"}
    else:
        period = draw(st.sampled_from(["CALENDAR_YEAR", "FIXED_YEAR", "CALENDAR_YEAR", "FIXED_YEAR", "NONE", None]))
        if period == "FIXED_YEAR":
            life["qualification_period"] = {"type": period, "start_month": draw(st.integers(1, 12)),
                                             "start_day": draw(st.integers(1, 28))}
        elif period is not None:
            life["qualification_period"] = {"type": period}
        if period in ("NONE", None) and draw(st.booleans()):
            life["retention"]["duration"] = draw(st.sampled_from(["2160h", "8760h", "1000h"]))
    if draw(st.integers(0, 2)) == 0:
        life["status_validity"] = {"extend_months": draw(st.sampled_from([1, 2, 5, 13]))}
    policy = {"mode": draw(st.sampled_from(["DROP_TO_QUALIFYING", "DROP_ONE", "HOLD"])),
              "grace_days": draw(st.sampled_from([0, 0, 3, 30, 45]))}
    if draw(st.integers(0, 3)) == 0:
        policy["min_level"] = draw(st.sampled_from([lv["key"] for lv in levels]))
    life["downgrade_policy"] = policy
    if may_roll and period in ("CALENDAR_YEAR", "FIXED_YEAR") and draw(st.integers(0, 2)) < 2:
        counters = {"rollover": draw(st.sampled_from(["EXCESS", "NONE"]))}
        if draw(st.booleans()) or not any("qualification" in lv for lv in levels):  # (else: nothing to roll)
            counters["qualifying"] = draw(st.lists(st.sampled_from(COUNTERS), min_size=1, max_size=3, unique=True))
        life["counters"] = counters
    return life


RULES = [
    {"name": "Buy", "key": "buy", "condition": 'event.type == "buy"',
     "actions": [{"type": "COUNTER", "key": "spend", "value": "event.amount"},
                 {"type": "COUNTER", "key": "visits", "value": "1"},
                 {"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}]},
    {"name": "Refund", "key": "refund", "condition": 'event.type == "refund"',
     "actions": [{"type": "COUNTER", "key": "spend", "value": "0 - event.amount"}]},
    {"name": "Gift", "key": "gift", "condition": 'event.type == "gift"',
     "actions": [{"type": "COUNTER", "key": "bonus", "value": "event.amount",
                  "target": {"type": "PARTICIPANT", "external_id": "event.to"}}]},
    {"name": "Pay", "key": "pay", "condition": 'event.type == "pay"',  # fails when the points are short
     "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "event.amount"}]},
    {"name": "Perk", "key": "perk", "condition": 'event.type == "perk" && has(participant.tiers.t0)',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "participant.tiers.t0.benefits.mult"}]},
    {"name": "High", "key": "high", "condition": 'has(participant.tiers.t0) && participant.tiers.t0.rank >= 2',
     "actions": [{"type": "TAG", "tag": "high"}]},
]


@st.composite
def tier_program(draw) -> dict:
    tiers = []
    for i in range(draw(st.integers(1, 2))):
        levels = draw(level_list())
        tier = {"key": f"t{i}", "levels": levels}
        life = draw(lifecycle(levels, may_roll=i == 0))
        if life is not None:
            tier["lifecycle"] = life
        tiers.append(tier)
    return {"program": {"key": "club", "name": "Club"},
            "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                        "scale": 0}],
            "tiers": tiers, "rules": RULES}


@dataclass
class TierScenario:
    program: dict
    batches: list[list[Row]]
    maintain: list[datetime | None]  # after batch i (before batch i + 1): an as-of between them, or none


@st.composite
def tier_scenarios(draw) -> TierScenario:
    n = draw(st.integers(4, 40))
    minutes = sorted(draw(st.lists(st.integers(0, SPAN_MINUTES), min_size=n, max_size=n)))
    rows = []
    for i, m in enumerate(minutes):
        typ = draw(st.sampled_from(["buy", "buy", "buy", "refund", "refund", "gift", "pay", "perk", "ping"]))
        data = {"type": typ, "amount": draw(st.integers(1, 80))}
        if typ == "gift":
            data["to"] = draw(st.sampled_from(PARTICIPANTS))
        when = (START + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(Row("club", f"k{i}", draw(st.sampled_from(PARTICIPANTS)), when, json.dumps(data)))
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=3))))
    batches = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
    maintain: list[datetime | None] = []
    for before, after in zip(batches, batches[1:]):
        lo = START + timedelta(minutes=minutes[rows.index(before[-1])])
        hi = START + timedelta(minutes=minutes[rows.index(after[0])])
        # any instant up to the next batch's first event: what is due by then is due before it anyway
        maintain.append(draw(st.one_of(st.none(), st.just(lo), st.just(hi),
                                       st.integers(0, int((hi - lo).total_seconds())).map(
                                           lambda s, lo=lo: lo + timedelta(seconds=s)))))
    return TierScenario(draw(tier_program()), batches, maintain)
