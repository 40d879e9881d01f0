"""Hand-computed scenarios for the oracle (tests/oracle/): every expected value below is worked
out in the test from the contract (semantics.md 1-7, docs/decisions.md), not read off the oracle."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tests.oracle import Unsupported, run_oracle
from tests.oracle.interpreter import participant_id, slug

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 11, 1, 12, 0, tzinfo=timezone.utc)
D = Decimal


def program(tmp_path: Path, body: str, key: str = "shop", extra_program: str = "") -> Path:
    path = tmp_path / f"{key}.yaml"
    path.write_text(
        f"program:\n  key: {key}\n  name: {key}\n{extra_program}"
        + textwrap.dedent(
            """\
            assets:
              - {symbol: PTS, name: Points, scale: 0}
              - {symbol: CASH, name: Cash, scale: 2, max_transaction_amount: "50.00"}
            """
        )
        + textwrap.dedent(body)
    )
    return path


def ev(key: str, ext: str, ts: datetime, data: dict, prog: str = "shop", recipient: str | None = None) -> dict:
    row = {"program_id": prog, "external_id": ext, "idempotency_key": key, "event_timestamp": ts, "event_data": data}
    if recipient is not None:
        row["recipient_external_id"] = recipient
    return row


def purchase(key: str, ext: str, ts: datetime, amount: float = 10.0, **extra) -> dict:
    return ev(key, ext, ts, {"type": "purchase", "amount": amount, **extra})


# ------------------------------------------------------------------------------------------------
# the scenarios of the brief


def test_quickstart_10_points() -> None:
    files = [ROOT / "data" / "programs" / "customer_loyalty.yaml"]
    events = [
        ev("evt-1", "user-1", T0, {"type": "purchase", "amount": 50.0}, prog="customer_loyalty"),
        ev("evt-2", "user-1", T0 + timedelta(hours=1), {"type": "page_view"}, prog="customer_loyalty"),
    ]
    r = run_oracle(files, [events])
    rule_key = "10_points_per_purchase"  # slug of "10 Points per Purchase"
    assert r.events == {("customer_loyalty", "evt-1"): ("COMPLETED", None), ("customer_loyalty", "evt-2"): ("COMPLETED", None)}
    assert r.entries == [("customer_loyalty", "evt-1", rule_key, 0, "CREDIT", "user-1", "PTS", D(10))]
    assert r.balances == {("user-1", "PTS"): D(10)}
    assert r.evaluations == [("customer_loyalty", "evt-1", rule_key, "MATCHED")]
    assert list(r.participants) == ["user-1"]


def test_category_multipliers_stop_after_match(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Dining 5x
            order: 100
            condition: event.type == "purchase" && event.category == "dining"
            stop_after_match: true
            actions: [{type: CREDIT, asset: PTS, amount: "round(event.amount * 5, 0)"}]
          - name: Grocery 3x
            order: 200
            condition: event.type == "purchase" && event.category == "grocery"
            stop_after_match: true
            actions: [{type: CREDIT, asset: PTS, amount: "round(event.amount * 3, 0)"}]
          - name: Base 1x
            order: 1000
            condition: event.type == "purchase"
            actions: [{type: CREDIT, asset: PTS, amount: "round(event.amount, 0)"}]
        """)]
    events = [
        purchase("d", "ann", T0, 20.5, category="dining"),                          # 102.5 -> 103
        purchase("g", "ann", T0 + timedelta(minutes=1), 10.0, category="grocery"),  # 30
        purchase("o", "ann", T0 + timedelta(minutes=2), 7.4, category="fuel"),      # 7
        purchase("n", "ann", T0 + timedelta(minutes=3), 2.5),                       # no category: 3
    ]
    r = run_oracle(files, [events])
    assert [(e[1], e[2], e[7]) for e in r.entries] == [
        ("d", "dining_5x", D(103)), ("g", "grocery_3x", D(30)), ("o", "base_1x", D(7)), ("n", "base_1x", D(3)),
    ]
    assert r.balances == {("ann", "PTS"): D(103 + 30 + 7 + 3)}
    # The event without a category: the first two conditions read a missing key -> SKIPPED_ERROR.
    assert [e for e in r.evaluations if e[1] == "n"] == [
        ("shop", "n", "dining_5x", "SKIPPED_ERROR"), ("shop", "n", "grocery_3x", "SKIPPED_ERROR"),
        ("shop", "n", "base_1x", "MATCHED"),
    ]
    # Rules that simply did not match are not recorded; stop_after_match ends the event's rules.
    assert [e[2:] for e in r.evaluations if e[1] == "d"] == [("dining_5x", "MATCHED")]


def test_welcome_bonus_once_via_tag(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Welcome bonus
            condition: '!("welcomed" in participant.tags)'
            actions:
              - {type: CREDIT, asset: PTS, amount: "100"}
              - {type: TAG, tag: Welcomed}
        """)]
    events = [purchase(f"e{i}", "ann", T0 + timedelta(hours=i)) for i in range(3)]
    r = run_oracle(files, [events])
    assert [(e[1], e[4], e[7]) for e in r.entries] == [("e0", "CREDIT", D(100))]
    assert r.balances == {("ann", "PTS"): D(100)}
    assert r.participants["ann"] == {"tags": ["welcomed"], "counters": {}, "attributes": {}}  # lowercased


def test_nth_purchase_milestone_via_counter(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Count purchases
            condition: event.type == "purchase"
            actions: [{type: COUNTER, key: purchases, value: "1"}]
          - name: Third purchase bonus
            condition: get(participant.counters, "purchases", 0.0) == 3.0
            actions: [{type: CREDIT, asset: PTS, amount: "50"}]
        """)]
    events = [purchase(f"p{i}", "ann", T0 + timedelta(hours=i)) for i in range(1, 6)]
    r = run_oracle(files, [events])
    # Orders default to 10 and 20, so the bonus rule sees this event's increment.
    assert [(e[1], e[2], e[7]) for e in r.entries] == [("p3", "third_purchase_bonus", D(50))]
    assert r.participants["ann"]["counters"] == {"purchases": D(5)}


def test_streak_with_reset_after(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Streak
            condition: event.type == "visit"
            actions: [{type: COUNTER, key: streak, value: "1", reset_after: "24h"}]
          - name: Streak of three
            condition: get(participant.counters, "streak", 0.0) == 3.0
            actions: [{type: CREDIT, asset: PTS, amount: "30"}]
        """)]
    h = lambda n: T0 + timedelta(hours=n)  # noqa: E731
    visits = [0, 5, 10, 25, 47, 49, 50, 60]
    events = [ev(f"v{n}", "ann", h(n), {"type": "visit"}) for n in visits]
    r = run_oracle(files, [events])
    # The counter is created at h(0); resets fall at h(24), h(48), ... (last + k * 24h):
    #   h0:1 h5:2 h10:3 (bonus) | h25: reset at h24 -> 1 | h47: 2 | h49: reset at h48 -> 1 | h50: 2 | h60: 3 (bonus)
    assert [e[1] for e in r.entries] == ["v10", "v60"]
    assert r.participants["ann"]["counters"] == {"streak": D(3)}


def test_referral_bonus_via_target(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Referral
            condition: event.type == "signup" && has(event.referrer)
            actions:
              - {type: CREDIT, asset: PTS, amount: "500", target: {type: PARTICIPANT, external_id: event.referrer}}
              - {type: COUNTER, key: referrals, value: "1", target: {type: PARTICIPANT, external_id: event.referrer}}
              - {type: CREDIT, asset: PTS, amount: "100"}
              - {type: COUNTER, key: signups, value: "1", target: {type: PROGRAM}}
        """)]
    events = [
        ev("s1", "bob", T0, {"type": "signup", "referrer": "alice"}),  # alice unknown: created by the target
        ev("s2", "carl", T0 + timedelta(hours=1), {"type": "signup", "referrer": "alice"}),
        ev("s3", "dora", T0 + timedelta(hours=2), {"type": "signup", "referrer": 7.0}),  # not a string
    ]
    r = run_oracle(files, [events])
    assert r.events[("shop", "s3")] == ("FAILED", "expression_error")
    assert [(e[1], e[3], e[5], e[7]) for e in r.entries] == [
        ("s1", 0, "alice", D(500)), ("s1", 2, "bob", D(100)),
        ("s2", 0, "alice", D(500)), ("s2", 2, "carl", D(100)),
    ]
    assert r.balances == {("alice", "PTS"): D(1000), ("bob", "PTS"): D(100), ("carl", "PTS"): D(100)}
    assert r.participants["alice"]["counters"] == {"referrals": D(2)}
    assert r.program_state["shop"]["counters"] == {"signups": D(2)}
    assert set(r.participants) == {"alice", "bob", "carl", "dora"}  # dora stays created (step 1)


def test_time_window_promo(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Weekend promo
            condition: event.type == "purchase"
            active_from: "2025-11-01T00:00:00Z"
            active_to: "2025-11-03T00:00:00Z"
            actions: [{type: CREDIT, asset: PTS, amount: "20"}]
        """)]
    start = datetime(2025, 11, 1, tzinfo=timezone.utc)
    end = datetime(2025, 11, 3, tzinfo=timezone.utc)
    events = [
        purchase("before", "ann", start - timedelta(microseconds=1)),
        purchase("at_from", "ann", start),
        purchase("inside", "ann", start + timedelta(days=1)),
        purchase("before_to", "ann", end - timedelta(microseconds=1)),
        purchase("at_to", "ann", end),
    ]
    r = run_oracle(files, [events])
    assert [e[1] for e in r.entries] == ["at_from", "inside", "before_to"]  # [from, to)
    assert r.balances == {("ann", "PTS"): D(60)}


def test_refund_clawback_allow_negative(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Earn
            condition: event.type == "purchase"
            actions: [{type: CREDIT, asset: PTS, amount: "round(event.amount, 0)"}]
          - name: Refund clawback
            condition: event.type == "refund"
            actions: [{type: DEBIT, asset: PTS, amount: "round(event.amount, 0)", allow_negative: true}]
        """)]
    events = [purchase("buy", "ann", T0, 10.0), ev("refund", "ann", T0 + timedelta(hours=1), {"type": "refund", "amount": 25.0})]
    r = run_oracle(files, [events])
    assert r.events[("shop", "refund")] == ("COMPLETED", None)
    assert r.entries[-1] == ("shop", "refund", "refund_clawback", 0, "DEBIT", "ann", "PTS", D(25))
    assert r.balances == {("ann", "PTS"): D(10) - D(25)}


def test_insufficient_balance_fails_whole_event(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Earn
            condition: event.type == "purchase"
            actions: [{type: CREDIT, asset: PTS, amount: "10"}]
          - name: Note attempt
            order: 100
            condition: event.type == "redeem"
            actions:
              - {type: TAG, tag: tried}
              - {type: COUNTER, key: attempts, value: "1"}
              - {type: CREDIT, asset: PTS, amount: "5"}
          - name: Redeem
            order: 200
            condition: event.type == "redeem"
            actions: [{type: DEBIT, asset: PTS, amount: "event.points"}]
        """)]
    events = [
        purchase("buy", "ann", T0),
        ev("big", "ann", T0 + timedelta(hours=1), {"type": "redeem", "points": 100.0}),   # 10 + 5 < 100
        ev("ok", "ann", T0 + timedelta(hours=2), {"type": "redeem", "points": 15.0}),    # 10 + 5 == 15
    ]
    r = run_oracle(files, [events])
    assert r.events[("shop", "big")] == ("FAILED", "insufficient_balance")
    assert r.events[("shop", "ok")] == ("COMPLETED", None)
    assert [e[1] for e in r.entries] == ["buy", "ok", "ok"]  # nothing from "big"
    assert r.balances == {("ann", "PTS"): D(10) + D(5) - D(15)}
    # Only the successful redeem left state behind.
    assert r.participants["ann"] == {"tags": ["tried"], "counters": {"attempts": D(1)}, "attributes": {}}


def test_capped_campaign_lifetime_budget(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Launch bonus
            order: 10
            condition: event.type == "purchase"
            stop_after_match: true
            budgets: [{asset: PTS, limit: "250"}]
            actions: [{type: CREDIT, asset: PTS, amount: "event.amount"}]
          - name: Base
            order: 20
            condition: event.type == "purchase"
            actions: [{type: CREDIT, asset: PTS, amount: "1"}]
        """)]
    amounts = [100.0, 100.0, 100.0, 50.0, 1.0]
    events = [purchase(f"p{i}", f"u{i}", T0 + timedelta(minutes=i), a) for i, a in enumerate(amounts)]
    r = run_oracle(files, [events])
    # 100, 200, (300 > 250: skipped, fallback 1), 250 (reaching the limit is allowed), (251: skipped)
    assert [(e[1], e[2], e[7]) for e in r.entries] == [
        ("p0", "launch_bonus", D(100)), ("p1", "launch_bonus", D(100)), ("p2", "base", D(1)),
        ("p3", "launch_bonus", D(50)), ("p4", "base", D(1)),
    ]
    assert [e[2:] for e in r.evaluations if e[1] == "p2"] == [("launch_bonus", "BUDGET_EXCEEDED"), ("base", "MATCHED")]


def test_interval_budget_resets(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Daily cap
            condition: event.type == "purchase"
            budgets: [{asset: PTS, limit: "100", schedule_type: INTERVAL, interval: "24h"}]
            actions: [{type: CREDIT, asset: PTS, amount: "60"}]
        """)]
    day = datetime(2025, 11, 1, tzinfo=timezone.utc)  # a multiple of 24h since the epoch
    events = [
        purchase("a", "ann", day + timedelta(hours=1)),
        purchase("b", "bob", day + timedelta(hours=23, minutes=59)),  # 120 > 100: exceeded
        purchase("c", "bob", day + timedelta(days=1)),                  # new period
    ]
    later = [purchase("d", "cat", day + timedelta(days=1, hours=5))]   # next batch, same period: 120 > 100
    r = run_oracle(files, [events, later])
    assert [e[1] for e in r.entries] == ["a", "c"]
    assert [e[1] for e in r.evaluations if e[3] == "BUDGET_EXCEEDED"] == ["b", "d"]
    assert r.events[("shop", "d")] == ("COMPLETED", None)


# ------------------------------------------------------------------------------------------------
# further contract points


def test_failed_event_rolls_back_budget(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Bonus
            condition: event.type == "purchase"
            budgets: [{asset: PTS, limit: "10"}]
            actions: [{type: CREDIT, asset: PTS, amount: "10"}]
          - name: Fee
            condition: has(event.fee)
            actions: [{type: DEBIT, asset: PTS, amount: "event.fee"}]
        """)]
    events = [purchase("x", "ann", T0, fee=50.0), purchase("y", "ann", T0 + timedelta(hours=1))]
    r = run_oracle(files, [events])
    assert r.events[("shop", "x")] == ("FAILED", "insufficient_balance")
    assert [e[1] for e in r.entries] == ["y"]  # x consumed nothing of the budget


def test_amount_errors(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Cash
            condition: event.type == "cash"
            actions: [{type: CREDIT, asset: CASH, amount: "event.amount"}]
        """)]
    cases = {
        "scale": (1.005, ("FAILED", "invalid_scale")),
        "max": (50.01, ("FAILED", "max_transaction_amount_exceeded")),
        "neg": (-1.0, ("FAILED", "amount_not_positive")),
        "zero": (0.0, ("COMPLETED", None)),
        "text": ("12", ("FAILED", "expression_error")),
        "ok": (49.99, ("COMPLETED", None)),
    }
    events = [ev(k, "ann", T0 + timedelta(minutes=i), {"type": "cash", "amount": a}) for i, (k, (a, _)) in enumerate(cases.items())]
    r = run_oracle(files, [events])
    assert {k: r.events[("shop", k)] for k in cases} == {k: v for k, (_, v) in cases.items()}
    assert r.entries == [("shop", "ok", "cash", 0, "CREDIT", "ann", "CASH", D("49.99"))]  # 0 is a no-op


def test_set_attribute_text_and_value_fields(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Profile
            condition: event.type == "profile"
            actions:
              - {type: SET_ATTRIBUTE, key: tier, value: gold}
              - {type: SET_ATTRIBUTE, key: spend, value: "event.amount"}
              - {type: SET_ATTRIBUTE, key: ten, value: "event.amount * 0 + 10.0"}
              - {type: SET_ATTRIBUTE, key: vip, value: "event.amount > 1"}
              - {type: SET_ATTRIBUTE, key: seen, value: "now"}
              - {type: SET_ATTRIBUTE, key: code, value: vip-2025}
              - {type: SET_ATTRIBUTE, key: static, value: "10.50"}
              - {type: COUNTER, key: spend, value: "event.amount"}
        """)]
    r = run_oracle(files, [[ev("p", "ann", T0, {"type": "profile", "amount": 49.99}), ev("q", "ann", T0 + timedelta(hours=1), {"type": "profile", "amount": 0.1})]])
    assert r.participants["ann"]["attributes"] == {
        "tier": "gold", "spend": "0.1", "ten": "10", "vip": "false", "seen": "2025-11-01T13:00:00Z",
        "code": "vip-2025", "static": "10.5",
    }
    assert r.participants["ann"]["counters"] == {"spend": D("49.99") + D("0.1")}  # exact: 50.09


def test_recipient_gets_rewards_and_participant_drives_cel(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Gift
            condition: participant.external_id == "ann" && participant.id == "%s"
            actions: [{type: CREDIT, asset: PTS, amount: "5"}, {type: TAG, tag: gifted}]
        """ % participant_id("ann"))]
    r = run_oracle(files, [[ev("g", "ann", T0, {"type": "gift"}, recipient="bob")]])
    assert r.entries == [("shop", "g", "gift", 0, "CREDIT", "bob", "PTS", D(5))]
    assert r.participants["bob"]["tags"] == ["gifted"] and r.participants["ann"]["tags"] == []


def test_balances_visible_in_cel_and_earlier_rules_seen(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Earn
            condition: event.type == "purchase"
            actions: [{type: CREDIT, asset: PTS, amount: "10"}]
          - name: Rich
            condition: participant.balances.PTS.available >= 20 && participant.balances.CASH.available == 0
            actions: [{type: TAG, tag: rich}]
        """)]
    r = run_oracle(files, [[purchase("a", "ann", T0), purchase("b", "ann", T0 + timedelta(hours=1))]])
    assert [e[1:3] for e in r.evaluations] == [("a", "earn"), ("b", "earn"), ("b", "rich")]


def test_idempotency_and_unknown_program(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Earn
            condition: "true"
            actions: [{type: CREDIT, asset: PTS, amount: "1"}]
        """)]
    first = [ev("k", "ann", T0, {"a": 1.0, "b": "x"}), ev("k", "ann", T0, {"b": "x", "a": 1})]  # same payload
    second = [ev("k", "ann", T0, {"a": 2.0}), ev("z", "ann", T0, {}, prog="nope"), ev("k", "ann", T0, {"a": 1.0, "b": "x"})]
    r = run_oracle(files, [first, second])
    assert r.duplicates == 2
    assert r.rejected == [("k", "idempotency_conflict"), ("z", "unknown_program")]
    assert len(r.entries) == 1


def test_late_event_processed_after_earlier_batches(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: First visit
            condition: '!("visited" in participant.tags)'
            actions: [{type: TAG, tag: visited}, {type: CREDIT, asset: PTS, amount: "7"}]
        """)]
    r = run_oracle(files, [[purchase("late-ts", "ann", T0 + timedelta(days=1))], [purchase("early-ts", "ann", T0)]])
    assert [e[1] for e in r.entries] == ["late-ts"]  # history is never rewritten


def test_inactive_program_and_reject(tmp_path: Path) -> None:
    rules = """\
        rules:
          - name: Earn
            condition: "true"
            actions: [{type: CREDIT, asset: PTS, amount: "1"}]
        """
    files = [
        program(tmp_path, rules, key="paused", extra_program="  status: SUSPENDED\n"),
        program(tmp_path, rules.replace("PTS", "PTS"), key="strict", extra_program="  on_unknown_participant: REJECT\n"),
        program(tmp_path, rules, key="open"),
    ]
    events = [
        ev("p1", "ann", T0, {}, prog="paused"),
        ev("s1", "ann", T0 + timedelta(minutes=1), {}, prog="strict"),
        ev("o1", "ann", T0 + timedelta(minutes=2), {}, prog="open"),
        ev("s2", "ann", T0 + timedelta(minutes=3), {}, prog="strict"),
    ]
    r = run_oracle(files, [events])
    assert r.events[("paused", "p1")] == ("FAILED", "program_inactive")
    assert r.events[("strict", "s1")] == ("FAILED", "participant_not_found")
    assert r.events[("strict", "s2")] == ("COMPLETED", None)  # participants are project-wide
    assert r.balances == {("ann", "PTS"): D(2)}


def test_defaults_and_unsupported(tmp_path: Path) -> None:
    assert slug("10 Points per Purchase!") == "10_points_per_purchase"
    files = [program(tmp_path, """\
        rules:
          - {name: B, order: 50, condition: "true", actions: [{type: TAG, tag: b}]}
          - {name: A, condition: "true", actions: [{type: UNTAG, tag: b}]}
        """)]
    r = run_oracle(files, [[ev("x", "ann", T0, {})]])
    assert [e[2] for e in r.evaluations] == ["b", "a"]  # A defaults to order 60
    assert r.participants["ann"]["tags"] == []
    set_tier = tmp_path / "tiers.yaml"  # tiers are interpreted (tests/oracle/tiers.py); SET_TIER is not
    set_tier.write_text("program: {key: tiers, name: Tiers}\ntiers: [{key: status, name: Status, levels: [{key: gold, rank: 1}]}]\n"
                        "rules: [{name: S, condition: 'true', actions: [{type: SET_TIER, tier: status, level: gold}]}]\n")
    with pytest.raises(Unsupported):
        run_oracle([set_tier], [])


def test_reject_program_target_and_tag_must_be_text(tmp_path: Path) -> None:
    files = [program(tmp_path, """\
        rules:
          - name: Refer
            condition: has(event.referrer)
            actions:
              - {type: TAG, tag: referred}
              - {type: CREDIT, asset: PTS, amount: "5", target: {type: PARTICIPANT, external_id: event.referrer}}
          - name: Numeric tag
            condition: has(event.code)
            actions: [{type: TAG, tag: "event.code"}]
        """, extra_program="  on_unknown_participant: REJECT\n")]
    open_program = program(tmp_path, "rules: []\n", key="open")
    events = [
        ev("o", "ann", T0, {}, prog="open"),  # creates ann project-wide
        ev("r1", "ann", T0 + timedelta(minutes=1), {"referrer": "zed"}),   # zed unknown in a REJECT program
        ev("r2", "ann", T0 + timedelta(minutes=2), {"referrer": "ann"}),
        ev("c", "ann", T0 + timedelta(minutes=3), {"code": 7.0}),
    ]
    r = run_oracle(files + [open_program], [events])
    assert r.events[("shop", "r1")] == ("FAILED", "participant_not_found")
    assert r.events[("shop", "r2")] == ("COMPLETED", None)
    assert r.events[("shop", "c")] == ("FAILED", "expression_error")
    assert set(r.participants) == {"ann"}
    assert r.participants["ann"]["tags"] == ["referred"]
    assert r.balances == {("ann", "PTS"): D(5)}


# ------------------------------------------------------------------------------------------------
# lots, holds, wallets and operations (semantics.md 2.3, 7, 8, 9)


def ledger_program(tmp_path: Path, rules: str) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text("program: {key: shop, name: shop}\n" + textwrap.dedent("""\
        assets:
          - {symbol: PTS, name: Points, scale: 0}
          - {symbol: LP, name: Lot points, scale: 0, inventory_mode: LOT}
          - {symbol: GC, name: Gift credit, scale: 0, issuance_policy: PREFUNDED}
        rewards:
          - {key: cup, name: Cup, redemption_type: UNIT_BASED, asset: PTS, unit_cost: "5", max_total: 1}
        """) + textwrap.dedent(rules))
    return path


def op(key: str, operation: str, ext: str | None, ts: datetime, **params) -> dict:
    return {"program_id": "shop", "idempotency_key": key, "operation": operation, "external_id": ext,
            "timestamp": ts, "params": params}


def test_lots_fifo_expiry_and_maturity(tmp_path: Path) -> None:
    files = [ledger_program(tmp_path, """\
        rules:
          - {name: A, condition: 'event.type == "a"', actions: [{type: CREDIT, asset: LP, amount: "5", expires_at: 2h}]}
          - {name: B, condition: 'event.type == "b"', actions: [{type: CREDIT, asset: LP, amount: "4", matures_at: 1h}]}
          - {name: S, condition: 'event.type == "s"', actions: [{type: DEBIT, asset: LP, amount: "3"}]}
        """)]
    r = run_oracle(files, [[
        ev("k0", "ann", T0, {"type": "a"}),                            # lot a: 5, expires T0+2h
        ev("k1", "ann", T0 + timedelta(minutes=10), {"type": "b"}),    # lot b: 4, DEFERRED until T0+1h10
        ev("k2", "ann", T0 + timedelta(minutes=30), {"type": "s"}),    # 3 from lot a (FIFO): a has 2
        ev("k3", "ann", T0 + timedelta(hours=3), {"type": "s"}),       # b matured, a expired (2): 3 from b
    ]])
    assert [(e.action_type, e.amount, e.effective_at) for e in r.ledger if e.origin is None] == [
        ("MATURITY", D(4), T0 + timedelta(hours=1, minutes=10)), ("EXPIRATION", D(5 - 3), T0 + timedelta(hours=2))]
    assert r.lots[("shop", "event", "k0", "a", 0)][3:5] == (D(0), "EXPIRED")
    assert r.lots[("shop", "event", "k1", "b", 0)][3:5] == (D(4 - 3), "AVAILABLE")
    assert r.accounts[("PARTICIPANT", "ann", "LP", "AVAILABLE")] == D(5 + 4 - 3 - 2 - 3)
    assert r.accounts[("SYSTEM_BREAKAGE", None, "LP", "AVAILABLE")] == D(2)


def test_wallet_holds_and_operations(tmp_path: Path) -> None:
    files = [ledger_program(tmp_path, """\
        rules:
          - {name: G, condition: "true", actions: [{type: CREDIT, asset: GC, amount: "6"}, {type: HOLD, asset: GC, amount: "2"}]}
        """)]
    r = run_oracle(files, [[ev("k0", "ann", T0, {}), ev("k1", "ann", T0 + timedelta(hours=2), {})]], [[
        op("f", "fund", None, T0 - timedelta(hours=1), asset="GC", amount="10"),
        op("a", "adjust", "ann", T0 + timedelta(hours=1), asset="PTS", amount="7", type="CREDIT"),
        op("r1", "redeem_item", "ann", T0 + timedelta(hours=1), reward="cup"),
        op("r2", "redeem_item", "ann", T0 + timedelta(hours=1), reward="cup"),
        op("x", "reverse_redemption", "ann", T0 + timedelta(hours=1), redemption="r1"),
        op("t", "transfer", "ann", T0 + timedelta(hours=1), asset="PTS", recipients=[{"external_id": "ann", "amount": "1"}]),
        op("h", "release", "ann", T0 + timedelta(hours=1), asset="GC", amount="3"),
    ]])
    assert r.events == {("shop", "k0"): ("COMPLETED", None),
                        ("shop", "k1"): ("FAILED", "insufficient_wallet")}  # wallet 10 - 6 = 4 < 6
    assert r.operations == {
        ("shop", "f"): ("COMPLETED", None), ("shop", "a"): ("COMPLETED", None),
        ("shop", "r1"): ("COMPLETED", None), ("shop", "r2"): ("FAILED", "out_of_stock"),  # max_total 1
        ("shop", "x"): ("COMPLETED", None), ("shop", "t"): ("FAILED", "self_transfer"),
        ("shop", "h"): ("FAILED", "insufficient_balance"),  # 2 held < 3
    }
    assert r.accounts[("PROGRAM_WALLET", "shop", "GC", "AVAILABLE")] == D(10 - 6)
    assert r.accounts[("PARTICIPANT", "ann", "GC", "AVAILABLE")] == D(6 - 2)
    assert r.accounts[("PARTICIPANT", "ann", "GC", "HELD")] == D(2)
    assert r.accounts[("PARTICIPANT", "ann", "PTS", "AVAILABLE")] == D(7 - 5 + 5)
    assert r.redemptions[("shop", "r1")] == ("ann", "PTS", D(5), D(5), 1, 1, "SYSTEM_REDEMPTION", None)


# ------------------------------------------------------------------------------------------------
# groups, PROGRAM targets of value actions, the redemption target (semantics.md 7, 9.4, 11)


def _op(key: str, operation: str, ext: str | None, ts: datetime, **params) -> dict:
    return {"program_id": "shop", "operation": operation, "external_id": ext, "idempotency_key": key,
            "timestamp": ts, "params": params}


def test_oracle_groups_wallets_and_redemption_target(tmp_path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(textwrap.dedent("""\
        program: {key: shop, name: Shop, redemption_target_type: SYSTEM_BREAKAGE}
        assets:
          - {symbol: PTS, name: Points, scale: 0}
          - {symbol: GC, name: Gift, scale: 0, issuance_policy: PREFUNDED}
        groups:
          - {key: family, name: Family, members: [{external_id: u1, role: ADMIN}, {external_id: u2}]}
        rules:
          - name: pool
            condition: event.type == "pool"
            actions:
              - {type: CREDIT, asset: PTS, amount: event.n, target: {type: GROUP, id: family}}
              - {type: COUNTER, key: pooled, value: event.n, target: {type: GROUP, id: event.g}}
          - name: earn
            condition: event.type == "earn"
            actions: [{type: CREDIT, asset: PTS, amount: "50"}]
          - name: topup
            condition: event.type == "topup"
            actions: [{type: CREDIT, asset: GC, amount: "8", target: {type: PROGRAM}}]
        """))
    t = lambda h: T0 + timedelta(hours=h)  # noqa: E731
    events = [ev("e1", "u1", t(0), {"type": "pool", "n": 7, "g": "family"}),
              ev("e2", "u2", t(1), {"type": "pool", "n": 3, "g": "nope"}),   # no group nope: all rolled back
              ev("e3", "u2", t(2), {"type": "earn"}),
              ev("e4", "u3", t(3), {"type": "topup"})]
    ops = [_op("o1", "add_group_member", "u3", t(4), group="family"),
           _op("o2", "remove_group_member", "u1", t(5), group="family"),          # the only ADMIN
           _op("o3", "set_group_member_role", "u2", t(6), group="family", role="ADMIN"),
           _op("o4", "remove_group_member", "u1", t(7), group="family"),
           _op("r1", "redeem", "u2", t(8), asset="PTS", amount="20"),
           _op("v1", "reverse_redemption", "u2", t(9), redemption="r1", amount="5"),
           _op("x1", "transfer", "u2", t(10), asset="PTS", recipients=[{"group_id": "family", "amount": "4"}])]
    r = run_oracle([path], [events], [ops])
    assert r.events[("shop", "e2")] == ("FAILED", "group_not_found")
    assert {k[1]: v for k, v in r.operations.items()} == {
        "o1": ("COMPLETED", None), "o2": ("FAILED", "last_admin"), "o3": ("COMPLETED", None), "o4": ("COMPLETED", None),
        "r1": ("COMPLETED", None), "v1": ("COMPLETED", None), "x1": ("COMPLETED", None)}
    assert r.members == {"family": {"u1": ("ADMIN", "LEFT"), "u2": ("ADMIN", "ACTIVE"), "u3": ("MEMBER", "ACTIVE")}}
    assert r.group_state["family"]["counters"] == {"pooled": D(7)}
    acct = r.accounts
    # family: 7 (e1) + 4 (x1); u2: 50 - 20 + 5 - 4 = 31; breakage: 20 - 5 = 15; the GC wallet 8 from issuance
    assert acct[("GROUP", "family", "PTS", "AVAILABLE")] == D(11)
    assert acct[("PARTICIPANT", "u2", "PTS", "AVAILABLE")] == D(31)
    assert acct[("SYSTEM_BREAKAGE", None, "PTS", "AVAILABLE")] == D(15)
    assert ("SYSTEM_REDEMPTION", None, "PTS", "AVAILABLE") not in acct
    assert acct[("PROGRAM_WALLET", "shop", "GC", "AVAILABLE")] == D(8) == -acct[("SYSTEM_ISSUANCE", None, "GC", "AVAILABLE")]


def test_oracle_refuses_program_targets_without_a_wallet(tmp_path) -> None:
    path = program(tmp_path, """\
        rules:
          - name: r
            condition: "true"
            actions: [{type: CREDIT, asset: PTS, amount: "1", target: {type: PROGRAM}}]
        """)
    with pytest.raises(ValueError, match="PREFUNDED"):
        run_oracle([path], [[]])


def test_oracle_redemptions_into_a_group_and_their_reversals(tmp_path) -> None:
    # decisions.md "Redemption target": LEDGER_ENTITY credits the group; reversals spend the group's
    # value and fail insufficient_balance when it holds too little
    path = tmp_path / "shop.yaml"
    text = textwrap.dedent("""\
        program: {key: shop, name: Shop, redemption_target_type: LEDGER_ENTITY, redemption_target_entity_id: WHO}
        assets: [{symbol: LP, name: Lot points, scale: 0, inventory_mode: LOT}]
        groups: [{key: family, name: Family, members: [{external_id: u1, role: ADMIN}]}]
        rules:
          - {name: earn, condition: event.type == "earn", actions: [{type: CREDIT, asset: LP, amount: "10"}]}
        """)
    t = lambda h: T0 + timedelta(hours=h)  # noqa: E731
    ops = [_op("g1", "group_adjust", None, t(0), group="family", type="CREDIT", asset="LP", amount="3"),
           _op("r1", "redeem", "u1", t(2), asset="LP", amount="8"),                    # u1 2, family 3 + 8
           _op("g2", "group_adjust", None, t(3), group="family", type="DEBIT", asset="LP", amount="7"),  # family 4
           _op("v1", "reverse_redemption", "u1", t(4), redemption="r1"),                # 8 > 4: fails
           _op("v2", "reverse_redemption", "u1", t(5), redemption="r1", amount="4")]    # family 0, u1 6
    path.write_text(text.replace("WHO", "family"))
    r = run_oracle([path], [[ev("e1", "u1", t(1), {"type": "earn"})]], [ops])
    assert {k[1]: v for k, v in r.operations.items()} == {
        "g1": ("COMPLETED", None), "r1": ("COMPLETED", None), "g2": ("COMPLETED", None),
        "v1": ("FAILED", "insufficient_balance"), "v2": ("COMPLETED", None)}
    assert r.accounts.get(("GROUP", "family", "LP", "AVAILABLE"), D(0)) == D(0)
    assert r.accounts[("PARTICIPANT", "u1", "LP", "AVAILABLE")] == D(6)
    assert ("SYSTEM_REDEMPTION", None, "LP", "AVAILABLE") not in r.accounts
    assert r.redemptions[("shop", "r1")] == ("u1", "LP", D(8), D(4), None, 0, "LEDGER_ENTITY", "family")
    path.write_text(text.replace("WHO", "u1"))  # a participant is no group: a load error
    with pytest.raises(ValueError, match="redemption_target_entity_id 'u1' is not a group"):
        run_oracle([path], [[]], [[]])
