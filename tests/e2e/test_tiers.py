"""Tiers (semantics.md 10) through the real CLI and a real DuckDB ledger.

One program, `club`, with a `loyalty` tier:
  silver (rank 1): ANY of visits >= 3, spend >= 100        benefits points_multiplier 2
  gold   (rank 2): ALL of visits >= 5, spend >= 500        benefits points_multiplier 3
  vip    (rank 3): no qualification (SET_TIER / set_tier)  benefits points_multiplier 5
Rules, in order: count visits and spend; points at the multiplier of the level held *before* this
event's qualification (which runs after the rules); a lounge tag from rank 2; refunds lower spend;
a promo SET_TIER to silver and a later rule that sees it; a redeem that can fail.
Expected levels, points and history rows are reasoned by hand in each test.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.helpers.io import balances, cli, event, query, run_json, write_events, write_program

PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
TIER = {
    "key": "loyalty", "display_name": "Loyalty",
    "levels": [
        {"key": "silver", "rank": 1, "benefits": {"points_multiplier": 2},
         "qualification": {"mode": "ANY", "criteria": [{"counter": "visits", "operator": ">=", "threshold": 3},
                                                       {"counter": "spend", "operator": ">=", "threshold": 100}]}},
        {"key": "gold", "rank": 2, "benefits": {"points_multiplier": 3, "lounge": True},
         "qualification": {"mode": "ALL", "criteria": [{"counter": "visits", "operator": ">=", "threshold": 5},
                                                       {"counter": "spend", "operator": ">=", "threshold": 500}]}},
        {"key": "vip", "rank": 3, "benefits": {"points_multiplier": 5}},
    ],
}
COUNTED = 'event.type in ["purchase", "promo", "redeem"]'
RULES = [
    {"name": "Count", "key": "count", "order": 10, "condition": COUNTED,
     "actions": [{"type": "COUNTER", "key": "visits", "value": "event.visits"},
                 {"type": "COUNTER", "key": "spend", "value": "event.amount"}]},
    {"name": "Tier points", "key": "tier_points", "order": 20,
     "condition": 'event.type == "purchase" && has(participant.tiers.loyalty)',
     "actions": [{"type": "CREDIT", "asset": "PTS",
                  "amount": "event.amount * participant.tiers.loyalty.benefits.points_multiplier"}]},
    {"name": "Base points", "key": "base_points", "order": 30,
     "condition": 'event.type == "purchase" && !has(participant.tiers.loyalty)',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}]},
    {"name": "Lounge", "key": "lounge", "order": 40,
     "condition": 'event.type == "purchase" && participant.tiers.loyalty.rank >= 2',
     "actions": [{"type": "TAG", "tag": "lounge"}]},
    {"name": "Refund", "key": "refund", "order": 50, "condition": 'event.type == "refund"',
     "actions": [{"type": "COUNTER", "key": "spend", "value": "0 - event.amount"}]},
    {"name": "Promo", "key": "promo", "order": 60, "condition": 'event.type == "promo"',
     "actions": [{"type": "SET_TIER", "tier": "loyalty", "level": "silver"}]},
    {"name": "Promo seen", "key": "promo_seen", "order": 70,
     "condition": 'event.type == "promo" && participant.tiers.loyalty.level == "silver"',
     "actions": [{"type": "TAG", "tag": "promo_silver"}]},
    {"name": "Redeem", "key": "redeem", "order": 80, "condition": 'event.type == "redeem"',
     "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "event.cost"}]},
]


def _program(tmp: Path, tier: dict = TIER) -> Path:
    return write_program(tmp / "programs" / "club.yaml", {
        "program": {"key": "club", "name": "Club"}, "assets": [PTS], "tiers": [tier], "rules": RULES})


def _ev(key: str, who: str, day: int, typ: str, amount: int = 0, visits: int = 1, **more) -> dict:
    return event("club", key, who, f"2025-03-{day:02d}T10:00:00Z", {"type": typ, "amount": amount, "visits": visits, **more})


# (events, in time order) — the stream most tests use
STREAM = [
    _ev("a1", "a", 1, "purchase", 150),            # a: spend 150 -> silver (ANY: spend)
    _ev("b1", "b", 1, "purchase", 10),             # b: visits 1
    _ev("c1", "c", 1, "purchase", 50, visits=5),   # c: visits 5, spend 50 -> silver only (gold needs ALL)
    _ev("d1", "d", 1, "purchase", 600, visits=5),  # d: straight to gold
    _ev("e1", "e", 1, "promo", 700, visits=5),     # e: SET_TIER silver although gold qualifies
    _ev("f1", "f", 1, "purchase", 100),            # f: spend 100 -> silver
    _ev("a2", "a", 2, "purchase", 400, visits=4),  # a: visits 5, spend 550 -> gold
    _ev("b2", "b", 2, "purchase", 10, visits=2),   # b: visits 3 -> silver (ANY: visits)
    _ev("e2", "e", 2, "purchase", 10),             # e: auto-qualification again -> gold
    _ev("f2", "f", 2, "redeem", 600, visits=5, cost=1000),  # f: counters then a DEBIT it cannot pay: FAILED
    _ev("a3", "a", 3, "refund", 500),              # a: spend 50, keeps gold (never auto-downgrade)
    _ev("a4", "a", 4, "purchase", 10),             # a: gold -> x3 and lounge
]


def _history(db: Path) -> list[tuple]:
    return query(db, """
        SELECT h.tier_key, p.external_id, h.from_level, h.to_level, h.reason,
               coalesce(e.idempotency_key, o.idempotency_key), strftime(h.effective_at, '%Y-%m-%d')
        FROM tier_history h JOIN participants p ON p.id = h.participant_id
        LEFT JOIN events e ON e.id = h.event_id LEFT JOIN operations o ON o.id = h.operation_id
        ORDER BY h.seq""")


def _levels(db: Path) -> dict[str, str]:
    rows = query(db, """SELECT p.external_id, t.level FROM participant_tiers t
                        JOIN participants p ON p.id = t.participant_id""")
    return dict(rows)


def _points(db: Path) -> dict[str, Decimal]:
    return {who: amt for (who, sym), amt in balances(db).items() if sym == "PTS"}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tiers")
    report = run_json(_program(tmp), write_events(tmp / "events.parquet", STREAM), tmp / "w.duckdb")
    assert (report["completed"], report["failed"]) == (len(STREAM) - 1, 1)  # f2 fails
    return tmp / "w.duckdb"


def test_levels_all_any_and_jumps(ledger):
    assert _levels(ledger) == {"a": "gold", "b": "silver", "c": "silver", "d": "gold", "e": "gold", "f": "silver"}
    hist = _history(ledger)
    # d went from nothing straight to gold: one row, no intermediate silver
    assert [h for h in hist if h[1] == "d"] == [("loyalty", "d", None, "gold", "AUTO", "d1", "2025-03-01")]
    assert [h for h in hist if h[1] == "b"] == [("loyalty", "b", None, "silver", "AUTO", "b2", "2025-03-02")]
    assert [h for h in hist if h[1] == "c"] == [("loyalty", "c", None, "silver", "AUTO", "c1", "2025-03-01")]


def test_never_auto_downgrade(ledger):
    # a: silver at a1 (spend 150), gold at a2 (visits 1+4 = 5, spend 150+400 = 550); the refund
    # (spend 550-500 = 50) and a4 change nothing
    assert [h for h in _history(ledger) if h[1] == "a"] == [
        ("loyalty", "a", None, "silver", "AUTO", "a1", "2025-03-01"),
        ("loyalty", "a", "silver", "gold", "AUTO", "a2", "2025-03-02")]
    spend = query(ledger, """SELECT s.number_value FROM entity_state s JOIN participants p ON p.id = s.entity_id
                             WHERE p.external_id = 'a' AND s.key = 'spend'""")
    assert Decimal(spend[0][0]) == 150 + 400 - 500 + 10


def test_set_tier_suppresses_auto_qualification_in_its_event(ledger):
    # e1: counters visits 5, spend 700 qualify for gold, but SET_TIER silver wins in that event;
    # e2 qualifies again and goes to gold
    assert [h for h in _history(ledger) if h[1] == "e"] == [
        ("loyalty", "e", None, "silver", "ACTION", "e1", "2025-03-01"),
        ("loyalty", "e", "silver", "gold", "AUTO", "e2", "2025-03-02")]
    tags = query(ledger, """SELECT s.key FROM entity_state s JOIN participants p ON p.id = s.entity_id
                            WHERE p.external_id = 'e' AND s.kind = 'TAG'""")
    assert tags == [("promo_silver",)]  # the rule after SET_TIER saw silver in the same event


def test_failed_event_leaves_tiers_unchanged(ledger):
    # f2 would make visits 1+5 = 6 and spend 100+600 = 700 (gold), but its DEBIT of 1000 exceeds
    # the 100 points f has: the event FAILS and neither counters nor tier change
    assert [h for h in _history(ledger) if h[1] == "f"] == [("loyalty", "f", None, "silver", "AUTO", "f1", "2025-03-01")]
    status = query(ledger, "SELECT status, error_code FROM events WHERE idempotency_key = 'f2'")
    assert status == [("FAILED", "insufficient_balance")]
    counters = dict(query(ledger, """SELECT s.key, s.number_value FROM entity_state s
                                     JOIN participants p ON p.id = s.entity_id
                                     WHERE p.external_id = 'f' AND s.kind = 'COUNTER'"""))
    assert {k: Decimal(v) for k, v in counters.items()} == {"visits": 1, "spend": 100}


def test_cel_reads_rank_and_benefits(ledger):
    # points use the level held before the event's own qualification:
    # a: a1 base 150, a2 silver 400*2, a4 gold 10*3; e: e2 silver 10*2; others: base points
    assert _points(ledger) == {"a": 150 + 400 * 2 + 10 * 3, "b": 10 + 10, "c": 50, "d": 600, "e": 10 * 2, "f": 100}
    lounge = query(ledger, """SELECT p.external_id FROM entity_state s JOIN participants p ON p.id = s.entity_id
                              WHERE s.kind = 'TAG' AND s.key = 'lounge'""")
    assert lounge == [("a",)]  # only a had rank >= 2 at a purchase (a4)


def test_tier_tables(ledger):
    levels = query(ledger, """SELECT l.key, l.rank, l.benefits::VARCHAR FROM tier_levels l JOIN tiers t ON t.id = l.tier_id
                              WHERE t.key = 'loyalty' ORDER BY l.rank""")
    assert [(k, r, json.loads(b)) for k, r, b in levels] == [
        ("silver", 1, {"points_multiplier": 2}), ("gold", 2, {"points_multiplier": 3, "lounge": True}),
        ("vip", 3, {"points_multiplier": 5})]


def test_batch_invariance(tmp_path, ledger):
    """The same stream in three batches gives the same history, levels and balances."""
    programs = _program(tmp_path)
    db = tmp_path / "w.duckdb"
    for i, part in enumerate((STREAM[:3], STREAM[3:8], STREAM[8:])):
        run_json(programs, write_events(tmp_path / f"part{i}.parquet", part), db)
    assert _history(db) == _history(ledger)
    assert _levels(db) == _levels(ledger)
    assert _points(db) == _points(ledger)


def _op(programs: Path, db: Path, key: str, who: str, when: str, **params) -> dict:
    args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    res = cli("op", "set_tier", "--programs", str(programs), "--program", "club", "--key", key, "--external-id", who,
              "--timestamp", when, "--db", str(db), "--json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_set_tier_operation(tmp_path):
    programs = _program(tmp_path)
    db = tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "e1.parquet", [_ev("g1", "g", 1, "purchase", 1)]), db)
    _op(programs, db, "op-1", "g", "2025-03-02T00:00:00Z", tier="loyalty", level="vip")
    _op(programs, db, "op-bad", "g", "2025-03-02T01:00:00Z", tier="loyalty", level="platinum")
    run_json(programs, write_events(tmp_path / "e2.parquet", [_ev("g2", "g", 3, "purchase", 10)]), db)
    assert _history(db) == [("loyalty", "g", None, "vip", "OPERATION", "op-1", "2025-03-02")]
    bad = query(db, "SELECT status, error_code, error_message FROM operations WHERE idempotency_key = 'op-bad'")
    assert bad[0][:2] == ("FAILED", "invalid_operation") and "platinum" in bad[0][2]
    # g2 earns at vip's multiplier: 10 * 5, after 1 base point for g1; vip has rank 3 >= 2: lounge
    assert _points(db) == {"g": 1 + 10 * 5}
    assert _levels(db) == {"g": "vip"}


# -- lifecycle ------------------------------------------------------------------------------------
# Four tier types with the same levels (silver spend >= 100, gold >= 500, platinum >= 1000) and
# different lifecycles; spend only goes down through refunds.
LEVELS = [{"key": k, "rank": r, "qualification": {"criteria": [{"counter": "spend", "operator": ">=", "threshold": t}]}}
          for k, r, t in (("silver", 1, 100), ("gold", 2, 500), ("platinum", 3, 1000))]
CALENDAR = {"type": "CALENDAR_YEAR"}
LIFECYCLES = {
    "status": {"qualification_period": CALENDAR, "downgrade_policy": {"mode": "DROP_TO_QUALIFYING", "grace_days": 30}},
    "club": {"qualification_period": {"type": "FIXED_YEAR", "start_month": 7, "start_day": 1},
             "downgrade_policy": {"mode": "DROP_ONE"}},
    "keep": {"qualification_period": CALENDAR, "downgrade_policy": {"mode": "HOLD"}},
    "floor": {"qualification_period": CALENDAR, "downgrade_policy": {"mode": "DROP_TO_QUALIFYING", "min_level": "gold"}},
}
LIFE_RULES = [
    {"name": "Spend", "key": "spend", "condition": 'event.type == "purchase"',
     "actions": [{"type": "COUNTER", "key": "spend", "value": "event.amount"}]},
    {"name": "Refund", "key": "refund", "condition": 'event.type == "refund"',
     "actions": [{"type": "COUNTER", "key": "spend", "value": "0 - event.amount"}]},
]


def _life_program(tmp: Path) -> Path:
    tiers = [{"key": k, "levels": LEVELS, "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, **life}}
             for k, life in LIFECYCLES.items()]
    return write_program(tmp / "programs" / "club.yaml", {
        "program": {"key": "club", "name": "Club"}, "assets": [PTS], "tiers": tiers, "rules": LIFE_RULES})


def _at(key: str, who: str, when: str, typ: str, amount: int) -> dict:
    return event("club", key, who, when, {"type": typ, "amount": amount})


LIFE_2025 = [
    _at("p1", "p", "2025-03-01T00:00:00Z", "purchase", 1200),  # p: platinum in every tier
    _at("q1", "q", "2025-03-01T00:00:00Z", "purchase", 600),   # q: gold in every tier
    _at("q2", "q", "2025-04-01T00:00:00Z", "refund", 550),     # q: spend 50
    _at("p2", "p", "2025-06-01T00:00:00Z", "refund", 900),     # p: spend 300
]
LIFE_2026 = [
    _at("p3", "p", "2026-01-20T00:00:00Z", "purchase", 10),    # status review due 2026-01-31: not yet
    _at("p4", "p", "2026-02-10T00:00:00Z", "purchase", 10),
]
# By hand (LIFECYCLE rows; a participant still qualifying for its level, or HOLD, keeps it):
# club (FIXED_YEAR from 1 July, DROP_ONE): period end 2025-07-01: p (300) platinum -> gold, q (50) gold -> silver
# floor (CALENDAR_YEAR, DROP_TO_QUALIFYING, min gold): 2026-01-01: p qualifies silver, floored at gold;
#   q qualifies nothing: the lowest level is silver, floored at gold = its level: no change
# status (CALENDAR_YEAR + 30 grace days, DROP_TO_QUALIFYING): due 2026-01-31: p (310 after p3) -> silver;
#   q (50): nothing qualifies -> the lowest level, silver
# keep (HOLD): never changes
LIFECYCLE_ROWS = {
    ("club", "p", "platinum", "gold", "2025-07-01"), ("floor", "p", "platinum", "gold", "2026-01-01"),
    ("status", "p", "platinum", "silver", "2026-01-31"), ("club", "q", "gold", "silver", "2025-07-01"),
    ("status", "q", "gold", "silver", "2026-01-31"),
}


def _lifecycle_rows(db: Path) -> set[tuple]:
    return {(t, who, f, to, day) for t, who, f, to, reason, src, day in _history(db) if reason == "LIFECYCLE"}


def _all_levels(db: Path) -> dict[tuple[str, str], str]:
    rows = query(db, """SELECT p.external_id, t.key, pt.level FROM participant_tiers pt
                        JOIN participants p ON p.id = pt.participant_id JOIN tiers t ON t.id = pt.tier_id""")
    return {(who, tier): level for who, tier, level in rows}


def _maintain(db: Path, as_of: str) -> dict:
    res = cli("maintain", "--as-of", as_of, "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_lifecycle_downgrades(tmp_path):
    programs = _life_program(tmp_path)
    db = tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "all.parquet", LIFE_2025 + LIFE_2026), db)
    # p's reviews happened before p3 / p4; q has no later event: its reviews wait for maintenance
    assert _lifecycle_rows(db) == {r for r in LIFECYCLE_ROWS if r[1] == "p"}
    first = _maintain(db, "2026-02-01T00:00:00Z")
    assert first["tier_changes"] == 2  # q: club and status
    assert _lifecycle_rows(db) == LIFECYCLE_ROWS
    assert _maintain(db, "2026-02-01T00:00:00Z")["batch_id"] is None  # nothing due twice
    assert _all_levels(db) == {
        ("p", "status"): "silver", ("p", "club"): "gold", ("p", "keep"): "platinum", ("p", "floor"): "gold",
        ("q", "status"): "silver", ("q", "club"): "silver", ("q", "keep"): "gold", ("q", "floor"): "gold"}
    assert cli("verify", "--db", str(db)).returncode == 0


def test_lifecycle_maintenance_early_or_late_is_the_same(tmp_path):
    """Maintenance between batches applies the same reviews at the same instants as a later event."""
    programs = _life_program(tmp_path)
    db = tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "y2025.parquet", LIFE_2025), db)
    _maintain(db, "2026-01-10T00:00:00Z")  # club (2025-07-01) and floor (2026-01-01) reviews
    assert _lifecycle_rows(db) == {r for r in LIFECYCLE_ROWS if r[4] < "2026-01-10"}
    run_json(programs, write_events(tmp_path / "y2026.parquet", LIFE_2026), db)
    _maintain(db, "2026-02-01T00:00:00Z")
    assert _lifecycle_rows(db) == LIFECYCLE_ROWS


def test_verify_checks_levels_against_history(tmp_path, ledger):
    assert cli("verify", "--db", str(ledger)).returncode == 0
    tampered = tmp_path / "tampered.duckdb"
    tampered.write_bytes(ledger.read_bytes())
    import duckdb
    con = duckdb.connect(str(tampered))
    con.execute("UPDATE participant_tiers SET level = 'vip' WHERE participant_id = "
                "(SELECT id FROM participants WHERE external_id = 'b')")
    con.close()
    res = cli("verify", "--db", str(tampered))
    assert res.returncode == 4 and "tier_levels_match_history" in res.stdout + res.stderr


def test_set_tier_level_from_an_expression(tmp_path):
    """SET_TIER's level is a value field: an expression must give a level key of the tier. Text
    that names no level fails the event with `unknown_tier_level` (naming the rule, the tier and
    its levels), as a GROUP target naming no group fails `group_not_found`; a result that is not
    text at all is an `expression_error`, as for a tag. Either way nothing of the event stays."""
    rules = [{"name": "Count", "key": "count", "order": 10, "condition": "true",
              "actions": [{"type": "COUNTER", "key": "picks", "value": "1"}]},
             {"name": "Pick", "key": "pick", "order": 20, "condition": 'event.type == "pick"',
              "actions": [{"type": "SET_TIER", "tier": "loyalty", "level": "event.level"}]}]
    programs = write_program(tmp_path / "programs" / "club.yaml", {
        "program": {"key": "club", "name": "Club"}, "assets": [PTS], "tiers": [TIER], "rules": rules})
    db = tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", [
        event("club", "k1", "h", "2025-03-01T00:00:00Z", {"type": "pick", "level": "gold"}),
        event("club", "k2", "h", "2025-03-02T00:00:00Z", {"type": "pick", "level": "diamond"}),
        event("club", "k3", "h", "2025-03-03T00:00:00Z", {"type": "pick", "level": "Gold"}),
        event("club", "k4", "h", "2025-03-04T00:00:00Z", {"type": "pick", "level": 2})]), db)
    assert _history(db) == [("loyalty", "h", None, "gold", "ACTION", "k1", "2025-03-01")]
    failed = dict((k, (st, code, msg)) for k, st, code, msg in query(
        db, "SELECT idempotency_key, status, error_code, error_message FROM events WHERE status = 'FAILED'"))
    assert {k: v[:2] for k, v in failed.items()} == {
        "k2": ("FAILED", "unknown_tier_level"), "k3": ("FAILED", "unknown_tier_level"),
        "k4": ("FAILED", "expression_error")}
    assert failed["k2"][2] == ("rule 'Pick' action 0: level 'diamond' is not a level of tier loyalty "
                               "(levels: silver, gold, vip)")
    assert "'Gold'" in failed["k3"][2]  # level keys are matched exactly
    assert "level must be text" in failed["k4"][2]
    # the failed events' COUNTER (an earlier rule) was rolled back with them
    assert query(db, "SELECT number_value FROM participant_state WHERE key = 'picks'") == [(Decimal(1),)]


def test_explain_shows_the_events_tier_changes(tmp_path, ledger):
    res = cli("explain", "a2", "--programs", str(_program(tmp_path)), "--db", str(ledger), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tier_changes"] == [{"tier": "loyalty", "external_id": "a", "from": "silver", "to": "gold",
                                    "reason": "AUTO"}]


# -- the other lifecycles: ACTIVITY_REFRESH, retention.duration, qualification_period NONE,
# status_validity, counter rollover (docs/decisions.md "Tiers") ----------------------------------
# Seven tier types; silver >= 100, gold >= 500, platinum >= 1000 on the counter each names.
# `spend` goes down through refunds; `yspend` and `rspend` count purchases only and roll over.
def _levels_on(counter: str) -> list[dict]:
    return [{"key": k, "rank": r, "qualification": {"criteria": [{"counter": counter, "operator": ">=", "threshold": t}]}}
            for k, r, t in (("silver", 1, 100), ("gold", 2, 500), ("platinum", 3, 1000))]


NONE_PERIOD = {"type": "NONE"}
MORE_LIFECYCLES = {
    "active": ("spend", {"retention": {"mode": "ACTIVITY_REFRESH", "duration": "720h"},  # 30 days without an event
                         "downgrade_policy": {"mode": "DROP_ONE"}}),
    "rolling": ("spend", {"retention": {"mode": "PERIOD_BASED", "duration": "2160h"},    # 90 days after reaching it
                          "qualification_period": NONE_PERIOD, "downgrade_policy": {"mode": "DROP_TO_QUALIFYING"}}),
    "valid": ("spend", {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": NONE_PERIOD,
                        "status_validity": {"extend_months": 2}, "downgrade_policy": {"mode": "DROP_ONE"}}),
    "forever": ("spend", {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": NONE_PERIOD,
                          "downgrade_policy": {"mode": "DROP_ONE"}}),
    "extended": ("spend", {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": CALENDAR,
                           "status_validity": {"extend_months": 1}, "downgrade_policy": {"mode": "DROP_ONE"}}),
    "carry": ("yspend", {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": CALENDAR,
                         "downgrade_policy": {"mode": "DROP_TO_QUALIFYING"}, "counters": {"rollover": "EXCESS"}}),
    "reset": ("rspend", {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": CALENDAR,
                         "downgrade_policy": {"mode": "DROP_ONE", "grace_days": 5},
                         "counters": {"rollover": "NONE", "qualifying": ["rspend"]}}),
}
MORE_RULES = [
    {"name": "Spend", "key": "spend", "condition": 'event.type == "purchase"',
     "actions": [{"type": "COUNTER", "key": k, "value": "event.amount"} for k in ("spend", "yspend", "rspend")]},
    {"name": "Refund", "key": "refund", "condition": 'event.type == "refund"',
     "actions": [{"type": "COUNTER", "key": "spend", "value": "0 - event.amount"}]},
    {"name": "Pay", "key": "pay", "condition": 'event.type == "pay"',  # p holds no points: this event FAILS
     "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "1"}]},
]


def _more_program(tmp: Path) -> Path:
    tiers = [{"key": k, "levels": _levels_on(counter), "lifecycle": life} for k, (counter, life) in MORE_LIFECYCLES.items()]
    return write_program(tmp / "programs" / "club.yaml", {
        "program": {"key": "club", "name": "Club"}, "assets": [PTS], "tiers": tiers, "rules": MORE_RULES})


MORE_2025 = [
    _at("p1", "p", "2025-01-10T00:00:00Z", "purchase", 600),  # p: gold everywhere
    _at("p2", "p", "2025-02-01T00:00:00Z", "refund", 550),    # p: spend 50 (an event: refreshes `active`)
    _at("p3", "p", "2025-02-20T00:00:00Z", "ping", 0),        # p: no rule matches; still an event of p
    _at("p4", "p", "2025-03-20T00:00:00Z", "pay", 0),         # FAILED: no refresh
    _at("q1", "q", "2025-06-01T00:00:00Z", "purchase", 90),   # q: 90 on each counter, no level
]
MORE_2026 = [
    _at("q2", "q", "2026-01-05T00:00:00Z", "purchase", 5),    # q: in reset's grace: counts towards 2025
    _at("p5", "p", "2026-02-15T00:00:00Z", "purchase", 10),
    _at("q3", "q", "2026-03-01T00:00:00Z", "purchase", 20),   # q: spend 115 -> silver in the spend tiers
]
# By hand, p (gold everywhere from 2025-01-10, spend 50 from 2025-02-01, yspend = rspend = 600):
#  active: last completed events 02-01, 02-20 (p4 failed) -> due 02-20 + 30d = 03-22: gold -> silver (DROP_ONE);
#          silver then reviewed every 30 days, the lowest level: kept
#  rolling: 01-10 + 90d = 04-10: nothing qualifies -> the lowest level, silver
#  valid: 01-10 + 2 months = 03-10: gold -> silver
#  forever: never reviewed (gold)
#  extended: 2026-01-01 + 1 month = 2026-02-01: gold -> silver
#  carry: 2026-01-01: yspend 600 still gold; rollover EXCESS keeps 600 - 500 = 100; p5: 110
#  reset: 2026-01-01 + 5 days = 2026-01-06 (p1 came after the 2025 close, 2025-01-06): rspend 600 still
#         gold; rollover NONE: 0; p5: 10
# q: yspend 90 rolls at 2026-01-01 without a level: 0, then 5 + 20 = 25; rspend 90 + 5 (q2, in the grace days
#  before the 2026-01-06 close: it counts towards 2025) rolls to 0, then 20; spend 115 at q3 -> silver in active, rolling, valid, forever, extended
MORE_ROWS = {("active", "p", "gold", "silver", "LIFECYCLE", "2025-03-22"),
             ("rolling", "p", "gold", "silver", "LIFECYCLE", "2025-04-10"),
             ("valid", "p", "gold", "silver", "LIFECYCLE", "2025-03-10"),
             ("extended", "p", "gold", "silver", "LIFECYCLE", "2026-02-01")} | {
    (t, "p", None, "gold", "AUTO", "2025-01-10") for t in MORE_LIFECYCLES} | {
    (t, "q", None, "silver", "AUTO", "2026-03-01") for t in ("active", "rolling", "valid", "forever", "extended")}
MORE_LEVELS = {**{("p", t): "silver" for t in ("active", "rolling", "valid", "extended")},
               ("p", "forever"): "gold", ("p", "carry"): "gold", ("p", "reset"): "gold",
               **{("q", t): "silver" for t in ("active", "rolling", "valid", "forever", "extended")}}
MORE_COUNTERS = {("p", "spend"): 60, ("p", "yspend"): 110, ("p", "rspend"): 10,
                 ("q", "spend"): 115, ("q", "yspend"): 25, ("q", "rspend"): 20}
# maintain --as-of 2027-02-01: carry 2027-01-01: p yspend 110 -> silver (DROP_TO_QUALIFYING), keeps 110 - 100
# = 10; reset 2027-01-06: p rspend 10 -> DROP_ONE to silver, 0; q's rolled counters (no level): 0; the spend
# tiers: p holds their lowest level, q still qualifies for silver: no change
ROWS_2027 = {("carry", "p", "gold", "silver", "LIFECYCLE", "2027-01-01"),
             ("reset", "p", "gold", "silver", "LIFECYCLE", "2027-01-06")}
COUNTERS_2027 = MORE_COUNTERS | {("p", "yspend"): 10, ("p", "rspend"): 0, ("q", "yspend"): 0, ("q", "rspend"): 0}


def _rows(db: Path) -> set[tuple]:
    return {(t, who, f, to, reason, day) for t, who, f, to, reason, src, day in _history(db)}


def _counters(db: Path) -> dict[tuple[str, str], Decimal]:
    return dict(((who, key), value) for who, key, value in query(db, """
        SELECT p.external_id, s.key, s.number_value FROM entity_state s JOIN participants p ON p.id = s.entity_id
        WHERE s.kind = 'COUNTER'"""))


def _more_outcome(db: Path) -> tuple:
    return _rows(db), _all_levels(db), _counters(db)


def test_more_lifecycles_in_stream(tmp_path):
    """One batch: every change due happens before the participant's next event; what is due
    after the last event of a participant waits for maintenance."""
    programs = _more_program(tmp_path)
    db = tmp_path / "w.duckdb"
    report = run_json(programs, write_events(tmp_path / "all.parquet", MORE_2025 + MORE_2026), db)
    assert (report["completed"], report["failed"]) == (7, 1)  # p4
    rows, levels, counters = _more_outcome(db)
    # p's last event is 2026-02-15: the reviews due before it are in; its later ones (active on 2026-03-17) keep silver
    assert rows == MORE_ROWS and levels == MORE_LEVELS and counters == MORE_COUNTERS
    assert _maintain(db, "2026-03-01T00:00:00Z")["tier_changes"] == 0
    assert _more_outcome(db) == (MORE_ROWS, MORE_LEVELS, MORE_COUNTERS)
    _maintain(db, "2027-02-01T00:00:00Z")
    assert _more_outcome(db) == (MORE_ROWS | ROWS_2027, MORE_LEVELS | {("p", "carry"): "silver",
                                                                       ("p", "reset"): "silver"}, COUNTERS_2027)
    assert _maintain(db, "2027-02-01T00:00:00Z")["batch_id"] is None  # nothing due twice
    assert cli("verify", "--db", str(db)).returncode == 0


def test_more_lifecycles_by_maintenance_and_in_batches(tmp_path):
    """The same stream cut into batches, with maintenance runs between them (one before a
    participant's due changes, one after), gives the same history, levels and counters."""
    programs = _more_program(tmp_path)
    db = tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "a.parquet", MORE_2025[:3]), db)
    _maintain(db, "2025-03-15T00:00:00Z")  # valid (03-10) is due; active (03-22, refreshed by p3) is not
    assert _rows(db) - {r for r in MORE_ROWS if r[4] == "AUTO"} == {("valid", "p", "gold", "silver", "LIFECYCLE",
                                                                     "2025-03-10")}
    run_json(programs, write_events(tmp_path / "b.parquet", MORE_2025[3:]), db)
    _maintain(db, "2026-01-03T00:00:00Z")  # carry's 2026 close (rollovers included); reset's (01-06) is later
    assert _counters(db)[("p", "yspend")] == 100 and _counters(db)[("q", "rspend")] == 90
    for i, row in enumerate(MORE_2026):
        run_json(programs, write_events(tmp_path / f"c{i}.parquet", [row]), db)
    assert _more_outcome(db) == (MORE_ROWS, MORE_LEVELS, MORE_COUNTERS)
    _maintain(db, "2027-02-01T00:00:00Z")
    assert _rows(db) == MORE_ROWS | ROWS_2027 and _counters(db) == COUNTERS_2027


@pytest.mark.parametrize("life, field", [
    ({"retention": {"mode": "ACTIVITY_REFRESH"}}, "retention.duration: required"),
    ({"retention": {"mode": "ACTIVITY_REFRESH", "duration": "720h"}, "qualification_period": CALENDAR},
     "qualification_period: ACTIVITY_REFRESH"),
    ({"retention": {"mode": "PERIOD_BASED", "duration": "720h"}, "qualification_period": CALENDAR},
     "retention.duration: a PERIOD_BASED level"),
    ({"retention": {"mode": "PERIOD_BASED", "duration": "30 days"}}, "retention.duration: '30 days' is not a duration"),
    ({"retention": {"mode": "PERIOD_BASED"}, "counters": {"rollover": "EXCESS"}}, "counters: rollover happens"),
    ({"retention": {"mode": "PERIOD_BASED"}, "status_validity": {"extend_months": 0}}, "extend_months"),
    ({"retention": {"mode": "PERIOD_BASED"}, "status_validity": {"months": 2}}, "status_validity.months"),
    ({"retention": {"mode": "PERIOD_BASED"}, "qualification_period": CALENDAR,
      "counters": {"rollover": "ALL"}}, "counters.rollover"),
])
def test_lifecycle_combinations_without_a_meaning_are_rejected(tmp_path, life, field):
    tier = {"key": "status", "levels": _levels_on("spend"), "lifecycle": {"downgrade_policy": {"mode": "HOLD"}, **life}}
    programs = write_program(tmp_path / "programs" / "club.yaml", {
        "program": {"key": "club", "name": "Club"}, "assets": [PTS], "tiers": [tier], "rules": LIFE_RULES})
    res = cli("validate", "--programs", str(programs))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "club.yaml" in out and "status" in out and field in out, out


def test_a_rolled_counter_has_one_clock(tmp_path):
    rolling = {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": CALENDAR,
               "downgrade_policy": {"mode": "HOLD"}, "counters": {"rollover": "NONE"}}
    for tiers, rules, says in (
            ([{"key": "a", "levels": _levels_on("spend"), "lifecycle": rolling},
              {"key": "b", "levels": _levels_on("spend"), "lifecycle": rolling}], LIFE_RULES,
             "counter 'spend' already rolls over with tier 'a'"),
            ([{"key": "a", "levels": _levels_on("spend"), "lifecycle": rolling}],
             [{"name": "Spend", "key": "spend", "condition": "true",
               "actions": [{"type": "COUNTER", "key": "spend", "value": "1", "reset_after": "24h"}]}],
             "actions[0].reset_after: counter 'spend' rolls over with tier 'a'")):
        programs = write_program(tmp_path / "programs" / "club.yaml", {
            "program": {"key": "club", "name": "Club"}, "assets": [PTS], "tiers": tiers, "rules": rules})
        res = cli("validate", "--programs", str(programs))
        assert res.returncode != 0 and says in res.stdout + res.stderr, res.stdout + res.stderr


def test_a_target_gets_its_due_rollover_before_the_action(tmp_path):
    """A participant reached only as an action target has its lifecycle steps applied when the
    event first touches it (semantics.md 3), so maintenance before or after gives the same."""
    rolled = {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": CALENDAR,
              "downgrade_policy": {"mode": "HOLD"}, "counters": {"rollover": "NONE"}}
    rules = [*LIFE_RULES, {"name": "Gift", "key": "gift", "condition": 'event.type == "gift"',
                           "actions": [{"type": "COUNTER", "key": "spend", "value": "event.amount",
                                        "target": {"type": "PARTICIPANT", "external_id": "event.to"}}]}]
    programs = write_program(tmp_path / "programs" / "club.yaml", {
        "program": {"key": "club", "name": "Club"}, "assets": [PTS], "rules": rules,
        "tiers": [{"key": "year", "levels": _levels_on("spend"), "lifecycle": rolled}]})
    stream = [_at("q1", "q", "2025-06-01T00:00:00Z", "purchase", 90),
              {**_at("g1", "p", "2026-02-01T00:00:00Z", "gift", 20), "event_data": json.dumps(
                  {"type": "gift", "amount": 20, "to": "q"})}]
    # q's 90 rolls to 0 at 2026-01-01, before the gift: 20, no level (90 + 20 would have made it silver)
    for i, cut in enumerate(([stream], [stream[:1], stream[1:]])):
        db = tmp_path / f"w{i}.duckdb"
        for j, part in enumerate(cut):
            run_json(programs, write_events(tmp_path / f"{i}-{j}.parquet", part), db)
            if i == 1 and j == 0:
                _maintain(db, "2026-01-15T00:00:00Z")
        assert _counters(db)[("q", "spend")] == 20 and _rows(db) == set()


def test_the_oracle_agrees_with_the_hand_computed_lifecycles(tmp_path):
    """The oracle (tests/oracle/tiers.py, which the differential tests hold the engine to) gives
    the hand-computed rows, levels and counters of the scenario above."""
    from datetime import datetime
    from tests.oracle import run_oracle
    rows = [dict(r, event_timestamp=datetime.fromisoformat(r["event_timestamp"].replace("Z", "+00:00")),
                 event_data=json.loads(r["event_data"])) for r in MORE_2025 + MORE_2026]
    got = run_oracle([_more_program(tmp_path)], [rows], maintain_at=datetime.fromisoformat("2027-02-01T00:00:00+00:00"))
    assert {(t, who, f, to, reason, at.strftime("%Y-%m-%d")) for _, t, who, f, to, reason, _, at in got.tier_history} \
        == MORE_ROWS | ROWS_2027
    assert {(who, key): v for who, s in got.participants.items() for key, v in s["counters"].items()} == COUNTERS_2027
    assert {(who, t): held[0] for (who, _, t), held in got.tiers.items()} == MORE_LEVELS | {
        ("p", "carry"): "silver", ("p", "reset"): "silver"}


def test_a_review_that_would_fall_past_year_9999_never_comes(tmp_path):
    """semantics.md 13: exit 1 is for unexpected internal errors. A participant holding a level
    of a CALENDAR_YEAR or FIXED_YEAR tier in 9999 has its next review on 1 January 10000 (or its
    period start in it), past the last instant the ledger holds (9999-12-31T23:59:59.999999Z):
    computing it crashed the run (exit 1, nothing committed). Such a review never comes (like a
    lot instant past it, docs/decisions.md); the events are processed and the levels kept."""
    programs = _life_program(tmp_path)
    db = tmp_path / "l.duckdb"
    out = run_json(programs, write_events(tmp_path / "e.parquet", [
        _at("z1", "z", "9999-12-30T00:00:00Z", "purchase", 600),
        _at("z2", "z", "9999-12-31T12:00:00Z", "purchase", 600)]), db)
    assert out["completed"] == 2 and out["failed"] == 0
    levels = "SELECT DISTINCT level FROM participant_tiers"  # every tier type: 1200 spent
    assert query(db, levels) == [("platinum",)]
    res = cli("maintain", "--as-of", "9999-12-31T23:59:59Z", "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr[-600:]
    assert query(db, levels) == [("platinum",)]
