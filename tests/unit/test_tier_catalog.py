"""Tier definitions in program files (semantics.md 10): validation names the file, tier and field;
ids are UUIDv5 from keys; parts not built are rejected, never ignored."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from engine import ids
from engine.catalog import load_catalog
from engine.errors import CatalogError
from engine.state import EntityState, TierState, Counter
from engine.tiers import close_after, add_months, downgrade_target, period_end_after, qualifies, roll_over
from tests.helpers.io import program_spec, write_program

TIER = {"key": "loyalty", "display_name": "Loyalty", "levels": [
    {"key": "silver", "rank": 1, "qualification": {"mode": "ANY", "criteria": [
        {"counter": "visits", "operator": ">=", "threshold": 3}, {"counter": "spend", "operator": ">", "threshold": 99.5}]}},
    {"key": "gold", "rank": 2, "benefits": {"points_multiplier": 3},
     "qualification": {"criteria": [{"counter": "spend", "operator": ">=", "threshold": "500"}]}},
]}
SET_GOLD = {"name": "Promo", "key": "promo", "condition": 'event.type == "promo"', "order": 10,
            "actions": [{"type": "SET_TIER", "tier": "loyalty", "level": "gold"}]}


def _load(tmp_path, tiers=None, rules=None):
    spec = program_spec("shop", copy.deepcopy(rules if rules is not None else [SET_GOLD]))
    spec["tiers"] = copy.deepcopy(tiers if tiers is not None else [TIER])
    return load_catalog(write_program(tmp_path / "shop.yaml", spec))


def _error(tmp_path, tiers=None, rules=None) -> str:
    with pytest.raises(CatalogError) as e:
        _load(tmp_path, tiers, rules)
    return str(e.value)


def test_tier_ids_levels_and_exact_thresholds(tmp_path):
    tier = _load(tmp_path).programs["shop"].tiers["loyalty"]
    assert tier.id == uuid.uuid5(ids.NAMESPACE, "tier:shop:loyalty") and tier.id.version == 5
    assert tier.name == "Loyalty"
    assert [(lv.key, lv.rank) for lv in tier.levels] == [("silver", 1), ("gold", 2)]
    # YAML's 99.5 is the decimal 99.5, "500" the decimal 500
    assert tier.by_key["silver"].qualification.criteria[1].threshold == Decimal("99.5")
    assert tier.by_key["gold"].qualification.criteria[0].threshold == Decimal(500)
    assert tier.by_key["gold"].cel_benefits == {"points_multiplier": 3.0}  # CEL's JSON numbers are doubles


def _with(level_changes: dict | None = None, **tier_changes) -> list[dict]:
    t = copy.deepcopy(TIER)
    t.update(tier_changes)
    if level_changes:
        t["levels"][1].update(level_changes)
    return [t]


@pytest.mark.parametrize("tiers, words", [
    (_with({"rank": 1}), ["tiers[0] (loyalty).levels[1] (gold)", "rank 1", "silver"]),
    (_with({"key": "silver"}), ["tiers[0] (loyalty).levels[1] (silver)", "key 'silver'"]),
    (_with({"qualification": {"criteria": [{"counter": "spend", "operator": "=>", "threshold": 1}]}}),
     ["tiers[0] (loyalty).levels[1].qualification.criteria[0].operator"]),
    (_with({"qualification": {"mode": "SOME", "criteria": [{"counter": "spend", "operator": ">", "threshold": 1}]}}),
     ["qualification.mode"]),
    (_with(levels=[]), ["tiers[0] (loyalty).levels"]),
    (_with(key="Loyalty"), ["tiers[0] (Loyalty).key"]),
    (_with(colour="red"), ["tiers[0] (loyalty).colour", "unknown field"]),
    (_with(lifecycle={"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                      "downgrade_policy": {"mode": "DROP_ONE", "min_level": "bronze"}}),
     ["tiers[0] (loyalty).lifecycle.downgrade_policy.min_level", "bronze"]),
    (_with(lifecycle={"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"}}),
     ["tiers[0] (loyalty).lifecycle.downgrade_policy", "required"]),
    (_with(lifecycle={"retention": {"mode": "PERIOD_BASED"}, "downgrade_policy": {"mode": "HOLD"},
                      "qualification_period": {"type": "FIXED_YEAR", "start_month": 2, "start_day": 29}}),
     ["tiers[0] (loyalty).lifecycle.qualification_period", "2-29"]),
    (_with(lifecycle={"retention": {"mode": "PERIOD_BASED"}, "downgrade_policy": {"mode": "HOLD"},
                      "qualification_period": {"type": "CALENDAR_YEAR"},
                      "counters": {"rollover": "EXCESS", "qualifying": []}}),
     ["tiers[0] (loyalty).lifecycle.counters.qualifying", "name the counters"]),
    (_with(lifecycle={"retention": {"mode": "PERIOD_BASED"}, "downgrade_policy": {"mode": "HOLD"},
                      "qualification_period": {"type": "NONE"}, "counters": {"rollover": "NONE"}}),
     ["tiers[0] (loyalty).lifecycle.counters", "CALENDAR_YEAR or FIXED_YEAR"]),
])
def test_invalid_tiers_name_file_tier_and_field(tmp_path, tiers, words):
    message = _error(tmp_path, tiers=tiers)
    assert "shop.yaml" in message
    for w in words:
        assert w in message, (w, message)


@pytest.mark.parametrize("action, words", [
    ({"type": "SET_TIER", "tier": "status", "level": "gold"}, ["actions[0].tier", "'status'", "loyalty"]),
    ({"type": "SET_TIER", "tier": "loyalty", "level": "platinum"}, ["actions[0].level", "platinum", "silver, gold"]),
    ({"type": "SET_TIER", "tier": "loyalty"}, ["actions[0]", "`level` is required"]),
    ({"type": "SET_TIER", "tier": "loyalty", "level": "gold", "target": {"type": "PROGRAM"}},
     ["not supported yet", "target.type: PROGRAM for SET_TIER"]),
])
def test_invalid_set_tier_names_rule_and_field(tmp_path, action, words):
    rule = dict(SET_GOLD, actions=[action])
    message = _error(tmp_path, rules=[rule])
    assert "rules[0] (Promo)" in message
    for w in words:
        assert w in message, (w, message)


def test_set_tier_level_may_be_an_expression(tmp_path):
    rule = dict(SET_GOLD, actions=[{"type": "SET_TIER", "tier": "loyalty", "level": 'event.level'}])
    (action,) = _load(tmp_path, rules=[rule]).programs["shop"].rules[0].actions
    assert action.level.text == "event.level"


def _state(level: str | None = None, **counters) -> EntityState:
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    st = EntityState(counters={k: Counter(Decimal(v), None, t0) for k, v in counters.items()})
    if level:
        st.tiers[ids.name_id("tier", "shop", "loyalty").__str__()] = TierState(level, t0)
    return st


def test_qualification_all_any_and_missing_counters(tmp_path):
    tier = _load(tmp_path).programs["shop"].tiers["loyalty"]
    silver, gold = tier.levels
    assert qualifies(silver, _state(visits=3))             # ANY: visits 3 >= 3
    assert qualifies(silver, _state(spend="99.6"))         # ANY: 99.6 > 99.5
    assert not qualifies(silver, _state(spend="99.5"))     # 99.5 > 99.5 is false; visits never written = 0
    assert not qualifies(gold, _state())                   # spend never written counts as 0
    assert qualifies(gold, _state(spend=500))


def test_period_ends_and_downgrade_policies(tmp_path):
    levels = [{"key": k, "rank": r, "qualification": {"criteria": [{"counter": "spend", "operator": ">=", "threshold": t}]}}
              for k, r, t in (("silver", 1, 100), ("gold", 2, 500), ("platinum", 3, 1000))]

    def tier(policy: dict, period: dict | None = None):
        life = {"retention": {"mode": "PERIOD_BASED"}, "downgrade_policy": policy,
                "qualification_period": period or {"type": "CALENDAR_YEAR"}}
        return _load(tmp_path, tiers=[{"key": "loyalty", "levels": levels, "lifecycle": life}],
                     rules=[]).programs["shop"].tiers["loyalty"]

    utc = timezone.utc
    cal = tier({"mode": "HOLD"})
    assert period_end_after(cal, datetime(2025, 3, 1, tzinfo=utc)) == datetime(2026, 1, 1, tzinfo=utc)
    assert period_end_after(cal, datetime(2026, 1, 1, tzinfo=utc)) == datetime(2027, 1, 1, tzinfo=utc)  # strictly after
    fixed = tier({"mode": "HOLD"}, {"type": "FIXED_YEAR", "start_month": 7, "start_day": 1})
    assert period_end_after(fixed, datetime(2025, 3, 1, tzinfo=utc)) == datetime(2025, 7, 1, tzinfo=utc)
    assert period_end_after(fixed, datetime(2025, 8, 1, tzinfo=utc)) == datetime(2026, 7, 1, tzinfo=utc)

    assert downgrade_target(cal, _state("platinum", spend=0)) is None  # HOLD
    qualifying = tier({"mode": "DROP_TO_QUALIFYING"})
    assert downgrade_target(qualifying, _state("platinum", spend=1000)) is None  # still qualifies
    assert downgrade_target(qualifying, _state("platinum", spend=600)) == "gold"
    assert downgrade_target(qualifying, _state("platinum", spend=0)) == "silver"  # none: the lowest level
    assert downgrade_target(tier({"mode": "DROP_ONE"}), _state("platinum", spend=0)) == "gold"
    assert downgrade_target(tier({"mode": "DROP_ONE"}), _state("silver", spend=0)) is None  # lowest already
    floored = tier({"mode": "DROP_TO_QUALIFYING", "min_level": "gold"})
    assert downgrade_target(floored, _state("platinum", spend=150)) == "gold"  # silver, floored at gold
    assert downgrade_target(floored, _state("silver", spend=0)) is None  # below the floor: never up


def test_months_windows_and_rollover_values(tmp_path):
    """add_months clamps to the month's end; a period close is the period end plus extend_months
    plus grace_days; EXCESS keeps what exceeds the held level's threshold on that counter."""
    utc = timezone.utc
    assert add_months(datetime(2025, 1, 31, tzinfo=utc), 1) == datetime(2025, 2, 28, tzinfo=utc)
    assert add_months(datetime(2024, 12, 31, tzinfo=utc), 2) == datetime(2025, 2, 28, tzinfo=utc)
    assert add_months(datetime(2025, 11, 15, tzinfo=utc), 14) == datetime(2027, 1, 15, tzinfo=utc)
    levels = [{"key": "silver", "rank": 1, "qualification": {"criteria": [{"counter": "spend", "operator": ">=", "threshold": 100}]}},
              {"key": "gold", "rank": 2, "qualification": {"mode": "ANY", "criteria": [
                  {"counter": "spend", "operator": ">", "threshold": 500}, {"counter": "spend", "operator": "<", "threshold": 0}]}},
              {"key": "vip", "rank": 3}]
    life = {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
            "status_validity": {"extend_months": 1}, "downgrade_policy": {"mode": "HOLD", "grace_days": 3},
            "counters": {"rollover": "EXCESS"}}
    tier = _load(tmp_path, tiers=[{"key": "loyalty", "levels": levels, "lifecycle": life}],
                 rules=[]).programs["shop"].tiers["loyalty"]
    assert tier.rollover_keys == ("spend",)
    # closes: 2025-02-04 (2025-01-01 + 1 month + 3 days), 2026-02-04
    assert close_after(tier, datetime(2025, 1, 20, tzinfo=utc)) == datetime(2025, 2, 4, tzinfo=utc)
    assert close_after(tier, datetime(2025, 2, 4, tzinfo=utc)) == datetime(2026, 2, 4, tzinfo=utc)
    at = datetime(2026, 2, 4, tzinfo=utc)
    for level, before, after in (("silver", "150.5", "50.5"), ("gold", 700, 200), ("gold", 300, 0),
                                 ("vip", 900, 0), (None, 90, 0)):
        st = _state(level, spend=before)
        st.counters["spend"].last_reset_at = datetime(2025, 3, 1, tzinfo=utc)
        roll_over(tier, st, at)
        assert (st.counters["spend"].value, st.counters["spend"].last_reset_at) == (Decimal(after), at), level
        roll_over(tier, st, at)  # once per close
        assert st.counters["spend"].value == Decimal(after)
