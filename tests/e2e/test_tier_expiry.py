"""Tier expiry (semantics.md 3, 2.3; docs/decisions.md "Tiers"): `set_tier` with `expires_at`
(Scrip's PUT .../state/tiers/{key}: "schedules automatic removal and replaces any existing expiry
task"), through the real CLI into a real DuckDB ledger.

One program, `shop`, with a tier `club`: silver (rank 1, visits >= 3), gold (rank 2, visits >= 5),
vip (rank 3, no qualification). Every `buy` counts a visit and earns 1 point; a `buy` of a member
holding a club level earns 10 more (a rule gated on `has(participant.tiers.club)`), so the points
of each buy say whether its participant held a level when it was evaluated. No lifecycle and only
literal state writes: batches without operations may take the running path. Expected rows and
points are worked out by hand in each test.
"""

from __future__ import annotations

from decimal import Decimal as D

import duckdb
import pytest

from tests.e2e.test_contract_audit import OK, Ledger, ev, op, program
from tests.helpers.io import cli

TIER = {"key": "club", "levels": [
    {"key": "silver", "rank": 1, "qualification": {"criteria": [{"counter": "visits", "operator": ">=", "threshold": 3}]}},
    {"key": "gold", "rank": 2, "qualification": {"criteria": [{"counter": "visits", "operator": ">=", "threshold": 5}]}},
    {"key": "vip", "rank": 3}]}
RULES = [
    {"name": "Buy", "key": "buy", "condition": 'event.type == "buy"',
     "actions": [{"type": "COUNTER", "key": "visits", "value": "1"}, {"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
    {"name": "Member perk", "key": "perk", "condition": 'event.type == "buy" && has(participant.tiers.club)',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
]


def day(d: int, hour: int = 12) -> str:
    return f"2025-03-{d:02d}T{hour:02d}:00:00Z"


def joins(*who: str) -> list[dict]:
    """An event no rule matches, for each participant, on day 1 at 00:00: operations name
    participants that exist."""
    return [ev(f"join-{w}", w, day(1, 0), "join") for w in who]


def shop(tmp_path) -> Ledger:
    return Ledger(tmp_path, program(RULES, tiers=[TIER]))


def history(lg: Ledger) -> list[tuple]:
    """(participant, from, to, reason, effective_at) of every tier change, in order."""
    return lg.sql("SELECT p.external_id, h.from_level, h.to_level, h.reason, strftime(h.effective_at, '%d %H:%M') "
                  "FROM tier_history h JOIN participants p ON p.id = h.participant_id ORDER BY h.seq")


def held(lg: Ledger) -> dict[str, tuple[str, str | None]]:
    """participant -> (level, expires_at) as participant_tiers stores them."""
    rows = lg.sql("SELECT p.external_id, t.level, strftime(t.expires_at, '%d %H:%M') FROM participant_tiers t "
                  "JOIN participants p ON p.id = t.participant_id")
    return {who: (level, exp) for who, level, exp in rows}


def points(lg: Ledger, who: str) -> D:
    return lg.balance(who)[0]


def maintain(lg: Ledger, as_of: str) -> None:
    res = cli("maintain", "--as-of", as_of, "--db", str(lg.db))
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_level_is_gone_for_the_events_at_or_after_its_expiry(tmp_path):
    lg = shop(tmp_path)
    lg.run(joins("u") + [ev("b1", "u", day(4), "buy"), ev("b2", "u", day(5, 0), "buy"), ev("b3", "u", day(6), "buy")],
           [op("set_tier", "s1", "u", day(1), tier="club", level="vip", expires_at="2025-03-05T00:00:00Z")])
    assert all(status == OK for status in lg.status().values())
    # b1 (day 4) holds vip: 1 + 10; b2 at the expiry instant itself and b3 after it hold nothing: 1 each
    assert [lg.entries(k) for k in ("b1", "b2", "b3")] == [[("CREDIT", D(1)), ("CREDIT", D(10))],
                                                          [("CREDIT", D(1))], [("CREDIT", D(1))]]
    # b3 is u's 3rd visit: silver, after its rules
    assert history(lg) == [("u", None, "vip", "OPERATION", "01 12:00"), ("u", "vip", None, "EXPIRY", "05 00:00"),
                           ("u", None, "silver", "AUTO", "06 12:00")]
    assert held(lg) == {"u": ("silver", None)}
    assert lg.sql("SELECT operation_id IS NULL AND event_id IS NULL FROM tier_history WHERE reason = 'EXPIRY'") == [(True,)]
    lg.verify()


def test_auto_qualification_gives_a_level_again_after_the_expiry(tmp_path):
    lg = shop(tmp_path)
    # visits 1..4 on days 2..5; the level set on day 1 at 12:00 for 48h expires on day 3 at 12:00
    lg.run(joins("u") + [ev(f"b{d}", "u", day(d), "buy") for d in (2, 3, 4, 5)],
           [op("set_tier", "s1", "u", day(1), tier="club", level="vip", expires_at="48h")])  # a Go duration: day 3 12:00
    # b2 holds vip (11); b3 at day 3 12:00, the expiry instant: nothing held (1); b4 is the 3rd visit, and
    # qualification runs after its rules: b4 earns 1, then silver; b5 holds silver (11)
    assert points(lg, "u") == 11 + 1 + 1 + 11
    assert history(lg) == [("u", None, "vip", "OPERATION", "01 12:00"), ("u", "vip", None, "EXPIRY", "03 12:00"),
                           ("u", None, "silver", "AUTO", "04 12:00")]
    assert held(lg) == {"u": ("silver", None)}
    lg.verify()


def test_maintenance_removes_a_due_level_at_its_instant_and_not_before(tmp_path):
    lg = shop(tmp_path)
    lg.run(joins("u", "w"), [
        op("set_tier", "s1", "u", day(1), tier="club", level="gold", expires_at="2025-03-05T06:30:00+02:00"),
                op("set_tier", "s2", "w", day(1), tier="club", level="vip", expires_at="2025-03-09T00:00:00Z")])
    maintain(lg, "2025-03-05T04:29:59Z")  # one second before u's expiry (04:30 UTC)
    assert held(lg) == {"u": ("gold", "05 04:30"), "w": ("vip", "09 00:00")}
    maintain(lg, "2025-03-06T00:00:00Z")
    assert history(lg)[2:] == [("u", "gold", None, "EXPIRY", "05 04:30")]
    assert held(lg) == {"w": ("vip", "09 00:00")}
    maintain(lg, "2025-03-06T00:00:00Z")  # nothing due twice
    assert len(history(lg)) == 3
    lg.verify()
    # the next event of u (after the expiry) sees no level; w's, before its expiry, sees vip
    lg.run([ev("b1", "u", day(7), "buy"), ev("b2", "w", day(7), "buy")])
    assert (points(lg, "u"), points(lg, "w")) == (1, 11)
    lg.verify()


def test_a_later_batch_without_operations_applies_the_expiry_first(tmp_path, monkeypatch):
    monkeypatch.setenv("PERKFLOW_RUNNING_MIN_EVENTS", "0")  # small batches may take the running path
    lg = shop(tmp_path)
    lg.run(joins("u", "w"), [op("set_tier", "s1", "u", day(1), tier="club", level="vip", expires_at="2025-03-05T00:00:00Z"),
                             op("set_tier", "s2", "w", day(1), tier="club", level="vip")])
    lg.run([ev("b1", "u", day(6), "buy"), ev("b2", "w", day(6), "buy"), ev("b3", "x", day(6), "buy")])
    assert all(status == OK for status in lg.status().values())
    # u's level expired on day 5, before b1: 1 point; w keeps vip (no expiry): 11; x never had one: 1
    assert (points(lg, "u"), points(lg, "w"), points(lg, "x")) == (1, 11, 1)
    assert history(lg)[2:] == [("u", "vip", None, "EXPIRY", "05 00:00")]
    lg.verify()
    # with no expiry due, the same program's next batch takes the running path (the case above is one it would take)
    again = lg.run([ev("b4", "u", day(7), "buy"), ev("b5", "w", day(7), "buy")])
    assert again["running_rounds"] > 0
    assert (points(lg, "u"), points(lg, "w")) == (2, 22)


def test_a_later_change_of_level_replaces_the_expiry(tmp_path):
    lg = shop(tmp_path)
    lg.run(joins(*"uvwy") + [ev(f"b{d}", "u", day(d), "buy") for d in range(2, 7)]  # u: 5th visit on day 6: AUTO gold
           + [ev("c1", "v", day(9), "buy"), ev("c2", "w", day(9), "buy"), ev("c3", "y", day(9), "buy")],
           [op("set_tier", "s1", "u", day(1), tier="club", level="silver", expires_at="2025-03-08T00:00:00Z"),
            # v: the same level again with another expiry replaces the first (day 4 -> day 10)
            op("set_tier", "s2", "v", day(1), tier="club", level="gold", expires_at="2025-03-04T00:00:00Z"),
            op("set_tier", "s3", "v", day(2), tier="club", level="gold", expires_at="2025-03-10T00:00:00Z"),
            # w: the same level with expires_at null clears the expiry
            op("set_tier", "s4", "w", day(1), tier="club", level="gold", expires_at="2025-03-04T00:00:00Z"),
            op("set_tier", "s5", "w", day(2), tier="club", level="gold", expires_at=None),
            # y: another level without expires_at is a new assignment, without the old expiry
            op("set_tier", "s6", "y", day(1), tier="club", level="silver", expires_at="2025-03-04T00:00:00Z"),
            op("set_tier", "s7", "y", day(2), tier="club", level="vip")])
    assert all(status == OK for status in lg.status().values())
    # u: silver (set) -> gold (AUTO on day 6, 5 visits): the expiry went with silver; v, w, y still hold on day 9
    assert points(lg, "u") == 11 * 5 and [points(lg, w) for w in "vwy"] == [11, 11, 11]
    assert held(lg) == {"u": ("gold", None), "v": ("gold", "10 00:00"), "w": ("gold", None), "y": ("vip", None)}
    maintain(lg, "2025-03-31T00:00:00Z")
    assert held(lg) == {"u": ("gold", None), "w": ("gold", None), "y": ("vip", None)}
    assert [h for h in history(lg) if h[0] in "vwy"] == [
        ("v", None, "gold", "OPERATION", "01 12:00"), ("w", None, "gold", "OPERATION", "01 12:00"),
        ("y", None, "silver", "OPERATION", "01 12:00"), ("y", "silver", "vip", "OPERATION", "02 12:00"),
        ("v", "gold", None, "EXPIRY", "10 00:00")]
    lg.verify()


def test_replay_gives_the_same_tiers(tmp_path):
    lg = shop(tmp_path)
    lg.run(joins("u", "w") + [ev("b1", "u", day(4), "buy"), ev("b2", "u", day(6), "buy")],
           [op("set_tier", "s1", "u", day(1), tier="club", level="vip", expires_at="2025-03-05T00:00:00Z"),
            op("set_tier", "s2", "w", day(1), tier="club", level="gold", expires_at="72h")])
    maintain(lg, "2025-03-31T00:00:00Z")
    copy = tmp_path / "replayed.duckdb"
    res = cli("replay", "--from", str(lg.db), "--db", str(copy))
    assert res.returncode == 0, res.stdout + res.stderr
    replayed = Ledger(tmp_path / "r", program(RULES, tiers=[TIER]))
    replayed.db = copy
    maintain(replayed, "2025-03-31T00:00:00Z")
    # the rows in the same order by instant (seq differs: the source wrote them in two batches)
    by_time = sorted(history(lg), key=lambda h: (h[4], h[0]))
    assert sorted(history(replayed), key=lambda h: (h[4], h[0])) == by_time
    assert by_time == [("u", None, "vip", "OPERATION", "01 12:00"), ("w", None, "gold", "OPERATION", "01 12:00"),
                       ("w", "gold", None, "EXPIRY", "04 12:00"), ("u", "vip", None, "EXPIRY", "05 00:00")]
    assert held(replayed) == held(lg) == {}
    assert points(replayed, "u") == points(lg, "u") == 11 + 1
    replayed.verify()


@pytest.mark.parametrize("expires_at, words", [
    ("soon", ["params.expires_at", "'soon'", "RFC 3339"]),
    ("2025-03-05", ["params.expires_at", "time zone"]),
    ("2025-02-28T00:00:00Z", ["params.expires_at", "not after", "2025-03-01T12:00:00+00:00"]),
    ("2025-03-01T12:00:00Z", ["not after"]),  # at the operation's own instant
    ("-1h", ["not after"]),
    (17, ["params.expires_at must be text"]),
])
def test_a_bad_expires_at_fails_the_operation(tmp_path, expires_at, words):
    lg = shop(tmp_path)
    lg.run(joins("u") + [ev("b1", "u", day(2), "buy")],
           [op("set_tier", "s1", "u", day(1), tier="club", level="vip", expires_at=expires_at)])
    status, code, message = lg.sql("SELECT status, error_code, error_message FROM operations")[0]
    assert (status, code) == ("FAILED", "invalid_operation")
    assert all(w in message for w in words), message
    assert history(lg) == [] and points(lg, "u") == 1  # nothing set


def test_verify_still_finds_a_level_left_after_its_removal(tmp_path):
    lg = shop(tmp_path)
    lg.run(joins("u"), [op("set_tier", "s1", "u", day(1), tier="club", level="vip", expires_at="24h")])
    maintain(lg, "2025-03-03T00:00:00Z")
    lg.verify()  # the EXPIRY row (to_level null) and no participant_tiers row agree
    con = duckdb.connect(str(lg.db))
    con.execute("INSERT INTO participant_tiers SELECT participant_id, tier_id, 'vip', effective_at, NULL, 1, NULL "
                "FROM tier_history WHERE reason = 'EXPIRY'")
    con.close()
    res = cli("verify", "--db", str(lg.db))
    assert res.returncode == 4 and "tier_levels_match_history" in res.stdout + res.stderr


def test_a_ledger_from_before_tier_expiry_gets_the_columns(tmp_path):
    # a ledger whose participant_tiers has no expires_at and whose tier_history.to_level is NOT NULL
    lg = shop(tmp_path)
    lg.run(joins("u"), [op("set_tier", "s0", "u", day(1, 1), tier="club", level="silver")])
    con = duckdb.connect(str(lg.db))
    con.execute("ALTER TABLE participant_tiers DROP COLUMN expires_at")
    con.execute("ALTER TABLE tier_history ALTER COLUMN to_level SET NOT NULL")
    con.execute("UPDATE schema_version SET hash = 'a previous version'")
    con.close()
    lg.run([ev("b1", "u", day(4), "buy")],
           [op("set_tier", "s1", "u", day(2), tier="club", level="vip", expires_at="2025-03-03T00:00:00Z")])
    assert points(lg, "u") == 1
    assert history(lg)[1:] == [("u", "silver", "vip", "OPERATION", "02 12:00"), ("u", "vip", None, "EXPIRY", "03 00:00")]
    lg.verify()


@pytest.mark.parametrize("mode, rows, left", [
    # the review at the period end comes first: DROP_ONE moves gold to silver, a new assignment
    # without the expiry, so nothing expires at that same instant
    ("DROP_ONE", [("gold", "silver", "LIFECYCLE", "01 00:00")], {"u": ("silver", None)}),
    # HOLD keeps gold (and its expiry) at the review; the expiry then removes it
    ("HOLD", [("gold", None, "EXPIRY", "01 00:00")], {}),
])
def test_at_one_instant_the_lifecycle_review_comes_before_the_expiry(tmp_path, mode, rows, left):
    life = {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
            "downgrade_policy": {"mode": mode}}
    lg = Ledger(tmp_path, program(RULES, tiers=[TIER | {"lifecycle": life}]))
    lg.run(joins("u"), [op("set_tier", "s1", "u", day(1), tier="club", level="gold", expires_at="2026-01-01T00:00:00Z")])
    maintain(lg, "2026-01-02T00:00:00Z")
    assert [h[1:] for h in history(lg)] == [(None, "gold", "OPERATION", "01 12:00"), *rows]
    assert held(lg) == left
    lg.verify()
