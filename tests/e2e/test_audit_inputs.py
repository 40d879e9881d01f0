"""Black-box audit of semantics.md 1-6 and 13 (inputs, order and time, idempotency, rule
evaluation, the CEL environment, bad input), and the quickstart read literally.

Each test is a small ledger run through the engine or the CLI; every expected value is worked
out by hand from the contract in the comments beside it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine.cli import main
from tests.helpers.io import balances, cli, event, program_spec, query, run_json, write_events, write_program
from tests.helpers.scenario import Scenario, asset, ev

D = Decimal


def _evaluations(s: Scenario) -> dict[tuple[str, str], tuple[str, str | None]]:
    """{(event key, rule key): (outcome, message)} of the stored rule evaluations."""
    rows = query(s.db, "SELECT e.idempotency_key, r.key, x.outcome, x.message FROM rule_evaluations x "
                       "JOIN events e ON e.id = x.event_id JOIN rules r ON r.id = x.rule_id")
    return {(k, r): (o, m) for k, r, o, m in rows}


def _tags(s: Scenario, who: str) -> set[str]:
    return {key for (kind, key) in s.state(who) if kind == "TAG"}


def test_s5_windows_errors_stop_and_later_rules_see_earlier_actions(tmp_path, capsys):
    rules = [
        {"name": "window", "key": "window", "order": 10, "condition": 'event.type == "buy"',
         "active_from": "2025-01-01T00:00:00Z", "active_to": "2025-01-02T00:00:00Z",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
        {"name": "big", "key": "big", "order": 20, "condition": "event.amount > 5",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "100"}]},
        {"name": "typeerr", "key": "typeerr", "order": 30, "condition": 'event.type + 1 == 2',
         "actions": [{"type": "TAG", "tag": "never"}]},
        {"name": "see", "key": "see", "order": 40, "condition": "participant.balances.PTS.available >= 1",
         "actions": [{"type": "TAG", "tag": "saw"}]},
        {"name": "stop", "key": "stop", "order": 50, "condition": 'event.type == "stop"', "stop_after_match": True,
         "actions": [{"type": "TAG", "tag": "stopped"}]},
        {"name": "after", "key": "after", "order": 60, "condition": "true",
         "actions": [{"type": "TAG", "tag": "after"}]},
        {"name": "suspended", "key": "suspended", "order": 70, "status": "SUSPENDED", "condition": "true",
         "actions": [{"type": "TAG", "tag": "suspended"}]},
    ]
    s = Scenario(tmp_path, "p", rules, [asset("PTS")])
    out = s.run(
        ev("e1", "alice", "2025-01-01T00:00:00Z", "buy"),              # at active_from: inside the window
        ev("e2", "bob", "2025-01-02T00:00:00Z", "buy", amount=10),     # at active_to: outside
        ev("e3", "carol", "2025-01-01T12:00:00Z", "stop", amount=1),
    )
    assert set(out.values()) == {("COMPLETED", None)}
    # alice: window +1; big errors (no amount); see reads the +1 of this very event; after.
    # bob: big +100 (10 > 5); see; after.  carol: stop matches and skips `after`.
    assert s.balance("alice", "PTS")[0] == 1 and s.balance("bob", "PTS")[0] == 100
    assert s.balance("carol", "PTS")[0] == 0
    assert _tags(s, "alice") == {"saw", "after"}
    assert _tags(s, "bob") == {"saw", "after"}
    assert _tags(s, "carol") == {"stopped"}
    ev_rows = _evaluations(s)
    outcomes = {k: o for k, (o, _) in ev_rows.items()}
    assert outcomes == {
        ("e1", "window"): "MATCHED", ("e1", "big"): "SKIPPED_ERROR", ("e1", "typeerr"): "SKIPPED_ERROR",
        ("e1", "see"): "MATCHED", ("e1", "after"): "MATCHED",
        ("e2", "big"): "MATCHED", ("e2", "typeerr"): "SKIPPED_ERROR", ("e2", "see"): "MATCHED",
        ("e2", "after"): "MATCHED",
        ("e3", "typeerr"): "SKIPPED_ERROR", ("e3", "stop"): "MATCHED",
    }
    # SKIPPED_ERROR keeps the message
    assert all(m for (k, r), (o, m) in ev_rows.items() if o == "SKIPPED_ERROR")

    # `perkflow explain` shows every rule's outcome: a rule that never ran is not "not matched"
    def explained(key):
        capsys.readouterr()
        assert main(["explain", key, "--programs", str(s.programs), "--db", str(s.db), "--json"]) == 0
        return {r["rule"]: r["recorded"] or r["not_run"] for r in json.loads(capsys.readouterr().out)["rules"]}

    assert explained("e2") == {"window": "not run: outside [active_from, active_to)", "big": "MATCHED",
                               "typeerr": "SKIPPED_ERROR: no such overload: _+_(string, int)", "see": "MATCHED",
                               "stop": None, "after": "MATCHED", "suspended": "not run: SUSPENDED"}
    assert explained("e3")["after"] == "not run: stop_after_match of stop"
    assert explained("e3")["window"] is None        # in the window, condition false: not matched


def test_s3_ties_by_arrival_and_budgets_in_global_order(tmp_path):
    """A lifetime budget of 20 PTS pays 10 to the first two purchases of the stream, whoever
    makes them: the stream is (timestamp, arrival), so carol (earliest) then bob (row 1 of the
    tie) get paid and alice (row 2 of the tie) hits the budget."""
    rules = [{"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
              "budgets": [{"asset": "PTS", "limit": "20"}],
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]}]
    s = Scenario(tmp_path, "p", rules, [asset("PTS")])
    out = s.run(ev("b", "bob", "2025-03-01T12:00:00Z", "buy"),
                ev("a", "alice", "2025-03-01T12:00:00Z", "buy"),
                ev("c", "carol", "2025-03-01T11:59:59Z", "buy"))
    assert set(out.values()) == {("COMPLETED", None)}
    assert [s.balance(w, "PTS")[0] for w in ("carol", "bob", "alice")] == [10, 10, 0]
    assert {k: o for (k, _), (o, _) in _evaluations(s).items()} == {"c": "MATCHED", "b": "MATCHED",
                                                                     "a": "BUDGET_EXCEEDED"}


def test_s3_a_late_event_is_processed_after_and_keeps_its_own_now(tmp_path):
    """Batch 1 has dave's 12:00 purchase; batch 2 brings his 11:00 one. History is not rewritten:
    the 11:00 event sees the state the 12:00 one left (no first-purchase bonus), yet its `now`
    and its entry's effective_at are 11:00."""
    rules = [
        {"name": "first", "key": "first", "order": 10, "condition": '!("seen" in participant.tags)',
         "actions": [{"type": "TAG", "tag": "seen"}, {"type": "CREDIT", "asset": "PTS", "amount": "50"}]},
        {"name": "buy", "key": "buy", "order": 20, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"},
                     {"type": "SET_ATTRIBUTE", "key": "last_now", "value": "string(now)"}]},
    ]
    s = Scenario(tmp_path, "p", rules, [asset("PTS")])
    s.run(ev("noon", "dave", "2025-03-01T12:00:00Z", "buy"))
    s.run(ev("eleven", "dave", "2025-03-01T11:00:00Z", "buy"))
    assert s.balance("dave", "PTS")[0] == 50 + 1 + 1
    assert s.state("dave")[("ATTRIBUTE", "last_now")] == "2025-03-01T11:00:00Z"
    eff = query(s.db, "SELECT e.idempotency_key, j.action_type, j.effective_at FROM journal_entries j "
                      "JOIN events e ON e.id = j.event_id ORDER BY j.seq")
    assert [(k, t, str(at)) for k, t, at in eff] == [
        ("noon", "CREDIT", "2025-03-01 12:00:00+00:00"), ("noon", "CREDIT", "2025-03-01 12:00:00+00:00"),
        ("eleven", "CREDIT", "2025-03-01 11:00:00+00:00")]


def test_s3_changes_due_exactly_at_an_events_instant_happen_before_it(tmp_path):
    """A lot expiring at 11:00 is gone for an event at 11:00 (due at or before t), and a counter
    with reset_after 1h set at 10:00 reads 0 at 11:00; both at their instant, not the wall clock."""
    rules = [
        {"name": "earn", "key": "earn", "order": 10, "condition": 'event.type == "earn"',
         "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "1h"},
                     {"type": "COUNTER", "key": "visits", "value": "1", "reset_after": "1h"}]},
        {"name": "spend", "key": "spend", "order": 20, "condition": 'event.type == "spend"',
         "actions": [{"type": "SET_ATTRIBUTE", "key": "visits_seen", "value": "string(int(participant.counters.visits))"},
                     {"type": "DEBIT", "asset": "LP", "amount": "1"}]},
        {"name": "look", "key": "look", "order": 30, "condition": 'event.type == "look"',
         "actions": [{"type": "SET_ATTRIBUTE", "key": "visits_seen", "value": "string(int(participant.counters.visits))"}]},
    ]
    s = Scenario(tmp_path, "p", rules, [asset("LP", mode="LOT")])
    out = s.run(ev("earn", "erin", "2025-03-01T10:00:00Z", "earn"),
                ev("spend", "erin", "2025-03-01T11:00:00Z", "spend"),
                ev("look", "erin", "2025-03-01T11:00:00Z", "look"))
    assert out["earn"] == ("COMPLETED", None)
    assert out["spend"][0] == "FAILED"                      # nothing spendable at 11:00
    assert out["look"] == ("COMPLETED", None)
    assert s.state("erin")[("ATTRIBUTE", "visits_seen")] == "0"
    assert s.balance("erin", "LP") == (0, 0, 0)
    exp = query(s.db, "SELECT action_type, effective_at FROM journal_entries WHERE action_type = 'EXPIRATION'")
    assert [(t, str(at)) for t, at in exp] == [("EXPIRATION", "2025-03-01 11:00:00+00:00")]


def test_s4_idempotency_per_program_and_kind_duplicates_by_value_conflicts_quarantined(tmp_path):
    """Program p pays 10 PTS per buy, program q (same PTS) pays 1. The key k1 is used by an event
    of p, an event of q and an operation of p: three different things (keys are per program,
    and events and operations each have their own). Batch 2 repeats k1 with the same instant
    written in another offset, keys reordered, 10 as 10.0 and a null field (a DUPLICATE); k1 in
    q with a recipient (a conflict); k2 twice with different amounts (the first wins)."""
    s = Scenario(tmp_path, "p", [{"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
                                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]}], [asset("PTS")])
    write_program(s.programs / "q.yaml", program_spec("q", [
        {"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}],
        assets=[asset("PTS")]))
    from tests.helpers.scenario import op
    in_q = ev("k1", "alice", "2025-03-01T12:00:00Z", "buy", amount=10) | {"program": "q"}
    out = s.run(ev("k1", "alice", "2025-03-01T12:00:00Z", "buy", amount=10), in_q,
                op("adjust", "k1", "alice", "2025-03-01T12:30:00Z", type="CREDIT", asset="PTS", amount="5"))
    assert s.report.completed == 3 and s.report.duplicates == 0 and s.report.rejected == 0
    assert s.balance("alice", "PTS")[0] == 10 + 1 + 5

    rows = [
        event("p", "k1", "alice", "2025-03-01T13:00:00+01:00", '{"note": null, "amount": 10.0,  "type": "buy"}'),
        event("q", "k1", "alice", "2025-03-01T12:00:00Z", {"type": "buy", "amount": 10}, recipient_external_id="bob"),
        event("p", "k2", "alice", "2025-03-02T12:00:00Z", {"type": "buy", "amount": 10}),
        event("p", "k2", "alice", "2025-03-02T12:00:00Z", {"type": "buy", "amount": 10.5}),
    ]
    f = write_events(tmp_path / "b2" / "again.parquet", rows)
    report = run_json(s.programs, f, s.db)
    assert (report["read"], report["completed"], report["failed"], report["duplicates"], report["rejected"]) == (4, 1, 0, 1, 2)
    assert sorted(query(s.db, "SELECT row_number, reason FROM rejected_rows WHERE source = ?", [str(f)])) == [
        (2, "idempotency_conflict"), (4, "idempotency_conflict")]
    assert s.balance("alice", "PTS")[0] == 16 + 10
    assert s.balance("bob", "PTS")[0] == 0
    # the stored first row of k2 is the one that won
    assert json.loads(query(s.db, "SELECT event_data FROM events WHERE idempotency_key = 'k2'")[0][0])["amount"] == 10


def test_s5_failed_event_rolls_back_everything_and_participant_and_program_checks(tmp_path):
    """p: a buy tags, counts and credits 10 under a 10 PTS budget; a `fail` field adds a DEBIT of
    1000 that cannot be paid, which fails the whole event: no tag, no counter, no entry and no
    budget used, so alice's next buy still gets the 10 and bob's then hits the budget.
    r (REJECT): alice, already known to the project through p, is enrolled; zed fails with
    participant_not_found. s (SUSPENDED) and t (ARCHIVED): program_inactive."""
    pay = {"name": "buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"',
           "budgets": [{"asset": "PTS", "limit": "10"}],
           "actions": [{"type": "TAG", "tag": "buyer"}, {"type": "COUNTER", "key": "visits", "value": "1"},
                       {"type": "CREDIT", "asset": "PTS", "amount": "10"}]}
    boom = {"name": "boom", "key": "boom", "order": 20, "condition": "has(event.fail)",
            "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "1000"}]}
    s = Scenario(tmp_path, "p", [pay, boom], [asset("PTS")])
    one = [{"name": "one", "key": "one", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]
    write_program(s.programs / "r.yaml", program_spec("r", one, assets=[asset("PTS")], on_unknown_participant="REJECT"))
    write_program(s.programs / "s.yaml", program_spec("s", one, assets=[asset("PTS")], status="SUSPENDED"))
    write_program(s.programs / "t.yaml", program_spec("t", one, assets=[asset("PTS")], status="ARCHIVED"))
    out = s.run(ev("e1", "alice", "2025-03-01T10:00:00Z", "buy", fail=True),
                ev("e2", "alice", "2025-03-01T11:00:00Z", "buy"),
                ev("e3", "bob", "2025-03-01T12:00:00Z", "buy"),
                ev("r1", "alice", "2025-03-01T13:00:00Z", "x") | {"program": "r"},
                ev("r2", "zed", "2025-03-01T13:00:00Z", "x") | {"program": "r"},
                ev("s1", "alice", "2025-03-01T13:00:00Z", "x") | {"program": "s"},
                ev("t1", "alice", "2025-03-01T13:00:00Z", "x") | {"program": "t"})
    assert out["e1"][0] == "FAILED" and out["e1"][1]
    assert out["e2"] == out["e3"] == out["r1"] == ("COMPLETED", None)
    assert out["r2"] == ("FAILED", "participant_not_found")
    assert out["s1"] == out["t1"] == ("FAILED", "program_inactive")
    assert s.balance("alice", "PTS")[0] == 10 + 1          # e2 and r1
    assert s.balance("bob", "PTS")[0] == 0
    assert s.state("alice") == {("TAG", "buyer"): None, ("COUNTER", "visits"): D(1)}
    assert s.state("bob") == {}             # BUDGET_EXCEEDED skips the rule as a whole: no tag, no count
    assert s.entries("e1") == []
    assert query(s.db, "SELECT COUNT(*) FROM participants WHERE external_id = 'zed'") == [(0,)]
    enrolled = query(s.db, "SELECT p.key FROM enrollments n JOIN programs p ON p.id = n.program_id "
                           "JOIN participants x ON x.id = n.participant_id WHERE x.external_id = 'alice' ORDER BY 1")
    assert [k for (k,) in enrolled][:2] == ["p", "r"]


CEL_CHECKS = {
    "now_call": "now() == now",
    "nested": 'event.items[0].sku == "A1" && size(event.items) == 2',
    "promote": "event.amount * 10 == 25 && 1 + 0.5 == 1.5 && 2 < 2.5",
    "round": "round(2.5, 0) == 3.0 && round(-2.5, 0) == -3.0 && round(1.005, 2) == 1.01 && round(2.345, 2) == 2.35",
    "floor_ceil_abs": "floor(-1.5) == -2.0 && ceil(-1.5) == -1.0 && abs(-3) == 3 && abs(-2.5) == 2.5",
    "min_max": "min(1, 2.5) == 1 && max(1, 2.5) == 2.5",
    "get": 'get(event, "missing", 7) == 7 && get(event, "n", 0) == 2',
    "sets": 'sets.contains(["a", "b", "c"], ["a", "c"]) && sets.intersects(["a"], ["b", "a"]) '
            '&& !sets.contains(["a"], ["a", "b"]) && !sets.intersects(["a"], ["b"])',
    "ascii": '"AbC".lowerAscii() == "abc" && "abc".upperAscii() == "ABC"',
    "tz": 'now.getHours() == 12 && now.getHours("America/New_York") == 7 && now.getDayOfWeek() == 1',
    "balances_zero": "participant.balances.PTS.available == 0.0 && participant.balances.GEMS.held == 0.0 "
                     "&& participant.balances.GEMS.deferred == 0.0 && size(participant.balances) == 2",
    "who": 'participant.external_id == "alice" && participant.status == "ACTIVE" && participant.created_at <= now '
           '&& size(participant.id) == 36',
    "program": 'program.key == "cel"',
    "macros": "[1, 2, 3].map(x, x * 2) == [2, 4, 6] && [1, 2, 3].filter(x, x > 1).size() == 2 "
              "&& [1, 2].exists_one(x, x == 2) && [1, 2].all(x, x > 0) && [1, 2].exists(x, x == 1)",
    "strings": '"abc".matches("^a.c$") && "hello".contains("ell") && "hello".startsWith("he") && "hello".endsWith("lo")',
    "time": 'now + duration("1h") == timestamp("2025-11-03T13:00:00Z") && now - timestamp("2025-11-03T11:00:00Z") == duration("1h")',
    "conversions": 'int("5") + 1 == 6 && uint(3) == 3u && double("1.5") == 1.5 && string(12) == "12" && bool("true")',
    "has": "has(event.items) && !has(event.nope)",
    "ternary_in": '(event.amount > 2.0 ? "big" : "small") == "big" && "b" in ["a", "b"] && "k" in {"k": 1}',
    "state_lowercase_tag": '"vip" in participant.tags && !("VIP" in participant.tags)',
    "state_counter_double": "participant.counters.visits == 1.0 && type(participant.counters.visits) == double",
    "state_attribute": 'participant.attributes.tier == "gold"',
    "offset_tz": 'now.getHours("+05:30") == 17 && now.getMinutes("+05:30") == 30 && now.getFullYear("UTC") == 2025',
    "balances_double": "type(participant.balances.PTS.available) == double",
    "program_state": "size(program.tags) == 0 && size(program.counters) == 0 && size(program.attributes) == 0",
    "no_tiers": "size(participant.tiers) == 0",
}


def test_s6_the_cel_environment(tmp_path):
    """One event; each check of semantics.md 6 is a rule whose condition must be true, tagging
    ok_<name>. The first rule sets up state that later rules must see within the event."""
    setup = {"name": "setup", "key": "setup", "order": 1, "condition": "true",
             "actions": [{"type": "TAG", "tag": "VIP"}, {"type": "COUNTER", "key": "visits", "value": "1"},
                         {"type": "SET_ATTRIBUTE", "key": "tier", "value": "gold"}]}
    rules = [setup] + [{"name": name, "key": name, "order": 10 * (i + 1), "condition": cond,
                        "actions": [{"type": "TAG", "tag": f"ok_{name}"}]} for i, (name, cond) in enumerate(CEL_CHECKS.items())]
    s = Scenario(tmp_path, "cel", rules, [asset("PTS"), asset("GEMS", scale=2)])
    # 2025-11-03 is a Monday (getDayOfWeek: 0 = Sunday); 12:00Z is 07:00 in New York (EST)
    out = s.run(ev("c1", "alice", "2025-11-03T12:00:00Z", "check", amount=2.5, n=2, items=[{"sku": "A1"}, {"sku": "B2"}]))
    assert out["c1"] == ("COMPLETED", None)
    errors = {r: m for (_, r), (o, m) in _evaluations(s).items() if o != "MATCHED"}
    assert _tags(s, "alice") == {"vip"} | {f"ok_{n}" for n in CEL_CHECKS}, errors


STATELESS = {k: v for k, v in CEL_CHECKS.items() if "participant" not in v and "program" not in v}


@pytest.mark.parametrize("row_path", [False, True])
def test_s6_the_cel_environment_on_the_set_based_path(tmp_path, row_path):
    """The checks that read only `event` and `now`, as CREDIT rules (1 PTS each): the set-based
    path (and the per-row one) must agree with the sequential meaning, so alice ends with one
    point per check."""
    rules = [{"name": name, "key": name, "order": 10 * (i + 1), "condition": cond,
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]} for i, (name, cond) in enumerate(STATELESS.items())]
    s = Scenario(tmp_path, "cel", rules, [asset("PTS")])
    f = write_events(tmp_path / "in" / "e.parquet", [event("cel", "c1", "alice", "2025-11-03T12:00:00Z", {
        "type": "check", "amount": 2.5, "n": 2, "items": [{"sku": "A1"}, {"sku": "B2"}]})])
    report = run_json(s.programs, f, s.db, *(["--row-path"] if row_path else []))
    assert report["completed"] == 1
    errors = {r: (o, m) for (_, r), (o, m) in _evaluations(s).items() if o != "MATCHED"}
    matched = {r for (_, r), (o, _) in _evaluations(s).items() if o == "MATCHED"}
    assert matched == set(STATELESS), (set(STATELESS) - matched, errors)
    assert balances(s.db) == {("alice", "PTS"): D(len(STATELESS))}


def test_s2_an_explicit_participant_id_never_creates_a_participant(tmp_path):
    """semantics.md 2.1/2.2: participants are identified by external_id; participant_id is
    perkflow's own id. A row naming a known external id and an unknown participant_id must not
    make a second participant with that external id (it did: two 'u1' rows, each with its own
    balance); the id names nobody, so the event fails with participant_not_found. Likewise for
    recipient_id beside recipient_external_id. An empty external_id is a missing one (as an empty
    idempotency_key is): the row is quarantined, no participant with an empty id appears."""
    s = Scenario(tmp_path, "p", [{"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
                                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], [asset("PTS")])
    s.run(ev("e1", "u1", "2025-03-01T10:00:00Z", "buy"))
    ghost = "00000000-0000-0000-0000-000000000000"
    f = write_events(tmp_path / "b2" / "rows.parquet", [
        event("p", "e2", "u1", "2025-03-01T11:00:00Z", {"type": "buy"}, participant_id=ghost),
        event("p", "e3", "u1", "2025-03-01T11:00:00Z", {"type": "buy"}, recipient_external_id="u2",
              recipient_id="11111111-1111-1111-1111-111111111111"),
        event("p", "e4", "", "2025-03-01T11:00:00Z", {"type": "buy"}),
        event("p", "e5", "u1", "2025-03-01T12:00:00Z", {"type": "buy"}),
    ])
    report = run_json(s.programs, f, s.db)
    assert (report["read"], report["completed"], report["failed"], report["rejected"]) == (4, 1, 2, 1)
    assert query(s.db, "SELECT external_id, COUNT(*) FROM participants GROUP BY 1 ORDER BY 1") == [("u1", 1)]
    assert dict(query(s.db, "SELECT idempotency_key, error_code FROM events")) == {
        "e1": None, "e2": "participant_not_found", "e3": "participant_not_found", "e5": None}
    assert query(s.db, "SELECT row_number, reason FROM rejected_rows") == [(3, "missing_required_field")]
    assert balances(s.db) == {("u1", "PTS"): D(2)}


def test_s13_quarantine_messages_counts_in_the_manifest_and_unreadable_paths(tmp_path, capsys):
    """event_data that is JSON but not an object is quarantined with a message in JSON's words
    (it said 'NoneType'); the counts of every batch are stored and reconcile; a path with no
    event files at all stops the run with exit 2 and creates no database."""
    s = Scenario(tmp_path, "p", [{"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
                                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], [asset("PTS")])
    kinds = {"null": "null", "[1]": "an array", '"x"': "a string", "3": "a number", "true": "a boolean"}
    rows = [event("p", f"k{i}", "u1", "2025-03-01T10:00:00Z", text) for i, text in enumerate(kinds)]
    rows += [event("p", "ok", "u1", "2025-03-01T10:00:00Z", {"type": "buy"}),
             event("p", "ok", "u1", "2025-03-01T10:00:00Z", {"type": "buy"}),          # duplicate in the batch
             event("p", "nobody", "u9", "2025-03-01T10:00:00Z", {"type": "buy"}) | {"program_id": "zz"}]
    f = write_events(tmp_path / "in" / "rows.parquet", rows)
    report = run_json(s.programs, f, s.db)
    assert (report["read"], report["completed"], report["failed"], report["duplicates"], report["rejected"]) == (8, 1, 0, 1, 6)
    got = query(s.db, "SELECT row_number, reason, message FROM rejected_rows ORDER BY row_number")
    assert [(n, r) for n, r, _ in got] == [(1, "invalid_event_data"), (2, "invalid_event_data"), (3, "invalid_event_data"),
                                           (4, "invalid_event_data"), (5, "invalid_event_data"), (8, "unknown_program")]
    for (_, _, message), kind in zip(got, kinds.values()):
        assert message == f"event_data must be a JSON object, got {kind}"
    assert query(s.db, "SELECT rows_read, completed, failed, duplicates, rejected FROM batches") == [(8, 1, 0, 1, 6)]

    empty = tmp_path / "nothing"
    empty.mkdir()
    fresh = tmp_path / "fresh.duckdb"
    for path in (empty, tmp_path / "no_such_dir"):
        capsys.readouterr()
        assert main(["run", "--programs", str(s.programs), "--events", str(path), "--db", str(fresh)]) == 2
        assert str(path) in "".join(capsys.readouterr().err.split())
    assert not fresh.exists()


def test_s4_retrying_perkflow_op_without_a_timestamp_is_a_duplicate(tmp_path, capsys):
    """`perkflow op` without --timestamp happens now; the same command again (a retry) must be a
    duplicate (semantics.md 4, as the quickstart's retry returns the original) -- it was an
    idempotency_conflict, because 'now' had moved on. Other params under the key still conflict."""
    s = Scenario(tmp_path, "p", [], [asset("PTS")])
    s.run(ev("e1", "u1", "2025-03-01T10:00:00Z", "x"))
    base = ("op", "adjust", "--program", "p", "--key", "fix-1", "--external-id", "u1", "--param", "type=CREDIT",
            "--param", "asset=PTS", "--programs", str(s.programs), "--db", str(s.db), "--json")
    out = []
    for amount in ("5", "5", "6"):   # `perkflow op ...` in process
        capsys.readouterr()
        assert main([*base, "--param", f"amount={amount}"]) == 0
        out.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert [(o["status"], o["duplicate"]) for o in out] == [("COMPLETED", False), ("COMPLETED", True), ("REJECTED", False)]
    assert out[2]["error_code"] == "idempotency_conflict"
    assert balances(s.db) == {("u1", "PTS"): D(5)}


LIMIT_CASES = {
    # field -> (text, the reason the message must give)
    "condition-long": ("condition", " || ".join(f'event.type == "purchase_{i:04d}"' for i in range(200)),
                       "longer than 4096 bytes"),
    "condition-deep": ("condition", "1 + " * 40 + "1 > 0", "nested deeper than 32"),
    # parentheses leave no node in the tree: 33..63 of them loaded (64 failed by running out of stack)
    "condition-parens": ("condition", "(" * 40 + 'event.type == "x"' + ")" * 40, "nested deeper than 32"),
    "amount-parens": ("amount", "(" * 33 + "event.n" + ")" * 33, "nested deeper than 32"),
    "condition-cost": ("condition", "event.items.all(x, event.items.exists(y, x == y))", "cost cannot be bounded"),
    "amount-long": ("amount", "event.n" + " + event.n" * 500, "longer than 4096 bytes"),
    "amount-deep": ("amount", "event.n" + " + 1" * 40, "nested deeper than 32"),
    "value-long": ("value", "string(event.n)" + " + string(event.n)" * 300, "longer than 4096 bytes"),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_s6_expressions_over_the_limits_are_rejected_at_load_saying_why(case, tmp_path, capsys):
    """semantics.md 6 limits, in any CEL field: exit 2, the message names the file, the rule,
    the field and the limit. An amount over a limit said 'neither a number nor a CEL expression
    (an expression must read event ...)' although it reads event; a SET_ATTRIBUTE value over it
    was taken as a 4 KiB literal string."""
    field, text, why = LIMIT_CASES[case]
    rule = {"name": "Limit rule", "key": "limit_rule", "condition": "true",
            "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}
    if field == "condition":
        rule["condition"] = text
    elif field == "amount":
        rule["actions"][0]["amount"] = text
    else:
        rule["actions"] = [{"type": "SET_ATTRIBUTE", "key": "k", "value": text}]
    f = write_program(tmp_path / "programs" / "lim.yaml", program_spec("lim", [rule]))
    capsys.readouterr()
    assert main(["validate", "--programs", str(f)]) == 2
    err = "".join(capsys.readouterr().err.split())
    for word in (str(f), "Limitrule", field, why.replace(" ", "")):
        assert word in err, (word, err[:400])


def test_s2_ids_in_upper_case_name_the_same_program_and_participant(tmp_path):
    """program_id is 'program key or id' and participant_id perkflow's id (semantics.md 2.2);
    UUID text is case-insensitive (RFC 9562), so the upper-case forms of the ids perkflow shows
    name the same program and participant (they were unknown_program / participant_not_found)."""
    import uuid
    s = Scenario(tmp_path, "p", [{"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
                                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], [asset("PTS")])
    s.run(ev("e1", "u1", "2025-03-01T10:00:00Z", "buy"))
    (program_id,), = query(s.db, "SELECT id::VARCHAR FROM programs WHERE key = 'p'")
    (participant_id,), = query(s.db, "SELECT id::VARCHAR FROM participants WHERE external_id = 'u1'")
    assert str(uuid.UUID(program_id)) == program_id       # shown in the canonical lowercase form
    f = write_events(tmp_path / "b2" / "upper.parquet", [
        event(program_id.upper(), "e2", "u1", "2025-03-01T11:00:00Z", {"type": "buy"}),
        event("p", "e3", None, "2025-03-01T12:00:00Z", {"type": "buy"}, participant_id=participant_id.upper()),
    ])
    report = run_json(s.programs, f, s.db)
    assert (report["completed"], report["failed"], report["rejected"]) == (2, 0, 0)
    assert balances(s.db) == {("u1", "PTS"): D(3)}


def test_s3_maintain_as_of_t_includes_what_is_due_exactly_at_t(tmp_path):
    """A lot credited at 10:00 matures at 11:00 and expires at 12:00; `maintain --as-of 11:00`
    matures it (due at T counts), `--as-of 11:59:59` leaves it, `--as-of 12:00` expires it; the
    entries carry 11:00 and 12:00, not the wall clock. A re-run of the same as-of writes nothing."""
    rules = [{"name": "earn", "key": "earn", "condition": 'event.type == "earn"',
              "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "matures_at": "1h", "expires_at": "2h"}]}]
    s = Scenario(tmp_path, "p", rules, [asset("LP", mode="LOT")])
    s.run(ev("e1", "u1", "2025-03-01T10:00:00Z", "earn"))
    assert s.balance("u1", "LP") == (0, 0, 5)

    def maintain(t):  # `perkflow maintain --as-of t`, in process (the CLI is a thin shell over it)
        from engine.durations import parse_instant
        from engine.maintain import maintain as run_maintenance
        run_maintenance(parse_instant(t), s.db)
        s.check()

    maintain("2025-03-01T11:00:00Z")
    assert s.balance("u1", "LP") == (5, 0, 0)
    maintain("2025-03-01T11:59:59Z")
    assert s.balance("u1", "LP") == (5, 0, 0)
    maintain("2025-03-01T12:00:00Z")
    assert s.balance("u1", "LP") == (0, 0, 0)
    before = query(s.db, "SELECT COUNT(*) FROM journal_entries")
    maintain("2025-03-01T12:00:00Z")
    assert query(s.db, "SELECT COUNT(*) FROM journal_entries") == before
    got = query(s.db, "SELECT action_type, effective_at FROM journal_entries WHERE event_id IS NULL ORDER BY seq")
    assert [(t, str(at)) for t, at in got] == [("MATURITY", "2025-03-01 11:00:00+00:00"),
                                               ("EXPIRATION", "2025-03-01 12:00:00+00:00")]


def test_quickstart_read_literally_with_json_payloads(tmp_path, capsys):
    """seeds/quickstart.txt with its own JSON bodies: the program, asset and rule payloads as one
    JSON program file (plus the program `key` our form requires: the quickstart's program has
    only a name), the event body as an NDJSON line (plus `event_timestamp`, which the hosted API
    stamps on receipt and the contract makes required: a file without the column stops the run,
    a row without the value is quarantined).
    Step 4's retry with the same key credits nothing; step 5 finds the participant by
    external_id, then its balances by the participant id: 10 PTS."""
    program = {"program": {"key": "customer_loyalty", "name": "Customer Loyalty"},
               "assets": [{"name": "Points", "symbol": "PTS", "inventory_mode": "SIMPLE",
                           "issuance_policy": "UNLIMITED", "scale": 0}],
               "rules": [{"name": "10 Points per Purchase", "condition": 'event.type == "purchase"',
                          "actions": [{"type": "CREDIT", "asset_id": "PTS", "amount": "10"}]}]}
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "customer_loyalty.json").write_text(json.dumps(program), encoding="utf-8")
    body = {"program_id": "customer_loyalty", "external_id": "user_123", "idempotency_key": "first-purchase-001",
            "event_data": {"type": "purchase", "amount": 49.99}}
    events = tmp_path / "events.ndjson"
    events.write_text(json.dumps(body | {"event_timestamp": "2025-11-01T12:00:00Z"}) + "\n", encoding="utf-8")
    untimed = tmp_path / "untimed.ndjson"
    untimed.write_text(json.dumps(body | {"idempotency_key": "first-purchase-002"}) + "\n", encoding="utf-8")
    db = tmp_path / "w.duckdb"

    def run(path) -> dict:
        capsys.readouterr()
        assert main(["run", "--programs", str(programs), "--events", str(path), "--db", str(db), "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first, retry = run(events), run(events)
    assert [first[k] for k in ("read", "completed", "duplicates")] == [1, 1, 0]
    assert [retry[k] for k in ("read", "completed", "duplicates")] == [1, 0, 1]
    # a file whose rows never carry event_timestamp lacks a required column: exit 2, nothing written
    capsys.readouterr()
    assert main(["run", "--programs", str(programs), "--events", str(untimed), "--db", str(db)]) == 2
    err = "".join(capsys.readouterr().err.split())
    assert str(untimed) in err and "event_timestamp" in err
    # beside rows that carry it, the row is quarantined and the rest processed
    untimed.write_text(events.read_text() + untimed.read_text(), encoding="utf-8")
    mixed = run(untimed)
    assert [mixed[k] for k in ("read", "completed", "duplicates", "rejected")] == [2, 0, 1, 1]
    ((reason, message),) = query(db, "SELECT reason, message FROM rejected_rows")
    assert reason == "missing_required_field" and message.startswith("required field event_timestamp is empty: ")
    assert "2025-01-01T00:00:00Z" in message, message  # how to write it (tests/e2e/test_outsider_small4.py)
    capsys.readouterr()
    assert main(["balances", "--external-id", "user_123", "--json", "--db", str(db)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["asset_symbol"], D(row["available"]), D(row["held"]), D(row["deferred"])) == ("PTS", 10, 0, 0)
    (pid,), = query(db, "SELECT id::VARCHAR FROM participants WHERE external_id = 'user_123'")
    assert row["participant_id"] == pid
    assert query(db, "SELECT asset_symbol, available FROM balances WHERE participant_id = ?", [pid]) == [("PTS", D(10))]


@pytest.mark.parametrize("kind", ["not_a_database", "a_directory"])
def test_s13_a_db_path_that_is_not_a_ledger_is_a_configuration_error(kind, tmp_path, capsys):
    """semantics.md 13: exit 2 for invalid configuration, with a message; it was exit 1 with a
    traceback and 'internal error, please report'. The file is left as it was."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", []))
    events = write_events(tmp_path / "in" / "e.parquet", [event("p", "k", "u", "2025-03-01T10:00:00Z", {"type": "x"})])
    target = tmp_path / "ledger.duckdb"
    if kind == "a_directory":
        target.mkdir()
    else:
        target.write_text("not a database\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["run", "--programs", str(programs), "--events", str(events)], ["balances"], ["verify"]):
        capsys.readouterr()
        assert main([*argv, "--db", str(target)]) == 2, argv
        err = capsys.readouterr().err
        assert str(target) in "".join(err.split()) and "internal error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if kind == "not_a_database":
        assert target.read_text() == "not a database\n"


def test_s13_a_wrong_query_or_a_missing_operations_file_is_exit_2(tmp_path, capsys):
    """`perkflow sql` with a query that does not parse, names no table, or tries to write is the
    user's input (exit 2, DuckDB's message), not 'internal error, please report this trace'
    (exit 1); the ledger is unchanged. A missing --operations path does not tell the user to
    pass --events."""
    s = Scenario(tmp_path, "p", [], [asset("PTS")])
    s.run(ev("e1", "u1", "2025-03-01T10:00:00Z", "x"))
    for sql, words in (("SELEC 1", "syntax error"), ("SELECT * FROM nosuch", "nosuch"),
                       ("DELETE FROM events", "read-only")):
        capsys.readouterr()
        assert main(["sql", sql, "--db", str(s.db)]) == 2, sql
        err = capsys.readouterr().err
        assert words in err and "internal error" not in err, err
    assert query(s.db, "SELECT COUNT(*) FROM events") == [(1,)]
    missing = tmp_path / "no_ops.parquet"
    capsys.readouterr()
    assert main(["run", "--programs", str(s.programs), "--events", str(s.dir / "events-1.parquet"),
                 "--operations", str(missing), "--db", str(s.db)]) == 2
    err = "".join(capsys.readouterr().err.split())
    assert str(missing) in err and "--events" not in err


@pytest.mark.parametrize("row_path", [False, True])
def test_s2_struct_payload_numbers_reach_cel_as_numbers(tmp_path, row_path):
    """A struct event_data (semantics.md 2.2) with int64, uint32 and DECIMAL fields (DECIMAL is how
    money is usually typed in Parquet), nested too. Int/double mixing promotes (6); a DECIMAL is
    a number: `amount: event.d` credits 0.30 (it failed the event: 'amount must be a number, got
    Decimal'). Credits: 1 + 10 + 2 * 0.1 + 0.30 + 100 = 111.50."""
    import decimal
    rules = [
        {"name": "a", "key": "a", "condition": "event.n * 1.5 == 3.0 && event.n > 1.5 && event.n + 0.5 == 2.5",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
        {"name": "b", "key": "b", "condition": "event.n == 2 && event.n == 2.0 && event.u == 2u",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
        {"name": "c", "key": "c", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n * 0.1"}]},
        {"name": "d", "key": "d", "condition": "event.d > 0.25", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.d"}]},
        {"name": "e", "key": "e", "condition": "event.x.d == 1.1 && event.l[0] == 2.5",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "100"}]},
    ]
    s = Scenario(tmp_path, "p", rules, [asset("PTS", scale=2)])
    data = pa.struct([("n", pa.int64()), ("u", pa.uint32()), ("d", pa.decimal128(10, 2)),
                      ("x", pa.struct([("d", pa.decimal128(12, 1))])), ("l", pa.list_(pa.decimal128(5, 1)))])
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", data)])
    f = tmp_path / "in" / "struct.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([{
        "program_id": "p", "idempotency_key": "s1", "external_id": "u1", "event_timestamp": "2025-03-01T10:00:00Z",
        "event_data": {"n": 2, "u": 2, "d": decimal.Decimal("0.30"), "x": {"d": decimal.Decimal("1.1")},
                       "l": [decimal.Decimal("2.5")]}}], schema=schema), f)
    report = run_json(s.programs, f, s.db, *(["--row-path"] if row_path else []))
    assert report["completed"] == 1, query(s.db, "SELECT error_message FROM events")
    assert balances(s.db) == {("u1", "PTS"): D("111.50")}


def test_s13_an_ndjson_line_that_is_not_an_object_is_a_rejected_row_naming_its_line(tmp_path, capsys):
    """semantics.md 13: malformed rows go to rejected_rows with the file, row number, reason and
    raw row, and the valid rows of the file are processed; an NDJSON line is a row. A line that
    is not a JSON object stopped the whole run (exit 2) until session 19. Only a file none of
    whose lines is a JSON object cannot be read at all: exit 2 naming the line, nothing written."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", []))
    good = json.dumps({"program_id": "p", "idempotency_key": "a", "external_id": "u1",
                       "event_timestamp": "2025-03-01T10:00:00Z", "event_data": {"type": "x"}})
    for name, lines, row, problem in (("b1", [good, "", '{"program_id": "p", BROKEN'], 2, "line 3 is not valid JSON"),
                                      ("b2", [good, "[1, 2]"], 2, "line 2 is not a JSON object")):
        f = tmp_path / f"{name}.ndjson"
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
        db = tmp_path / f"{name}.duckdb"
        assert main(["run", "--programs", str(programs), "--events", str(f), "--db", str(db)]) == 0
        assert query(db, "SELECT source, row_number, reason, raw FROM rejected_rows") == [
            (str(f), row, "invalid_row", lines[-1])]
        assert problem in query(db, "SELECT message FROM rejected_rows")[0][0]
        assert query(db, "SELECT idempotency_key, status FROM events") == [("a", "COMPLETED")]
    f = tmp_path / "none.ndjson"
    f.write_text("not json\n[1]\n", encoding="utf-8")
    db = tmp_path / "none.duckdb"
    capsys.readouterr()
    assert main(["run", "--programs", str(programs), "--events", str(f), "--db", str(db)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "line 1 is not valid JSON" in err and "internal error" not in err, err
    assert not db.exists()


@pytest.mark.parametrize("name", ["[promo] Double points", "Promo [/x] week", "[bold]"])
def test_s2_a_load_error_names_a_rule_whose_name_has_brackets(tmp_path, name):
    """semantics.md 2.1: a load error names the file, the rule and the field, and the run writes
    nothing (exit 2). Rule names are the user's text: the CLI printed them through rich markup,
    so `[promo]` vanished from the message (it reads as a style) and `[/x]` crashed the error
    printer (MarkupError: exit 1 with a trace). The message must carry the name as written."""
    f = write_program(tmp_path / "programs" / "br.yaml", program_spec("br", [
        {"name": name, "key": "r", "condition": "event.type = 'buy'",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    events = write_events(tmp_path / "e.parquet", [event("br", "k1", "u1", "2025-03-01T10:00:00Z", {"type": "buy"})])
    db = tmp_path / "l.duckdb"
    for args in (("validate", "--programs", str(f)),
                 ("run", "--programs", str(f), "--events", str(events), "--db", str(db))):
        res = cli(*args)
        assert res.returncode == 2, (res.returncode, res.stderr[-600:])
        err = " ".join(res.stderr.split())
        assert f"rules[0] ({name}): condition: syntax error" in err, err[:600]
        assert "Traceback" not in res.stderr
    assert not db.exists()


def test_s2_unquoted_yaml_numbers_are_exact_amounts_limits_and_values(tmp_path):
    """semantics.md 2.1 writes amounts and limits as decimal strings; a YAML file that leaves them
    unquoted hands over floats. Small ones (0.00001) have an exponent in their shortest repr
    (1e-05): the amount was a load error ("neither a number nor a CEL expression"), a budget
    `limit` of any number was one ("Input should be a valid string"), and a SET_ATTRIBUTE value
    was stored as the text "1e-05". Each is the exact decimal the file shows."""
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "tiny.yaml").write_text(
        "program: {key: tiny, name: Tiny}\n"
        "assets:\n"
        "  - {symbol: DUST, name: Dust, inventory_mode: SIMPLE, issuance_policy: UNLIMITED, scale: 5}\n"
        "rules:\n"
        "  - name: earn\n"
        "    condition: event.type == \"buy\"\n"
        "    budgets: [{asset: DUST, limit: 0.00002}]\n"
        "    actions:\n"
        "      - {type: CREDIT, asset: DUST, amount: 0.00001}\n"
        "      - {type: SET_ATTRIBUTE, key: last, value: 0.00001}\n"
        "  - name: big\n"
        "    condition: event.type == \"big\"\n"
        "    budgets: [{asset: DUST, limit: 100000}]\n"
        "    actions: [{type: CREDIT, asset: DUST, amount: 12.5}]\n", encoding="utf-8")
    events = write_events(tmp_path / "e.parquet", [
        event("tiny", f"k{i}", "u1", f"2025-03-01T10:00:0{i}Z", {"type": t}) for i, t in enumerate(["buy"] * 3 + ["big"])])
    report = run_json(programs, events, tmp_path / "l.duckdb")
    assert (report["completed"], report["failed"], report["rejected"]) == (4, 0, 0)
    # 0.00001 twice within the 0.00002 limit, the third evaluation would pass it; 12.5 from `big`
    assert balances(tmp_path / "l.duckdb") == {("u1", "DUST"): D("12.50002")}
    outcomes = query(tmp_path / "l.duckdb", "SELECT x.outcome FROM rule_evaluations x JOIN events e ON e.id = x.event_id "
                                            "ORDER BY e.arrival_seq")
    assert [o for o, in outcomes] == ["MATCHED", "MATCHED", "BUDGET_EXCEEDED", "MATCHED"]
    assert query(tmp_path / "l.duckdb", "SELECT text_value FROM entity_state WHERE kind = 'ATTRIBUTE'") == [("0.00001",)]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_s1_unquoted_numbers_keep_every_written_digit(tmp_path, fmt):
    """semantics.md 1: amounts are exact. An unquoted number in a program file was read through a
    float, which keeps about 17 significant digits: `amount: 12345678901234567.5` credited
    12345678901234568, a limit and a SET_ATTRIBUTE value lost digits likewise, without a word.
    A number the float does keep reads as before: the rule's version is the same as with the
    number quoted (so no ledger sees a new rule version)."""
    def program(amount: str, value: str) -> dict:
        return {"program": {"key": "big", "name": "Big"},
                "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE",
                            "issuance_policy": "UNLIMITED", "scale": 2}],
                "rules": [{"name": "earn", "key": "earn", "condition": 'event.type == "buy"',
                           "budgets": [{"asset": "PTS", "limit": "@LIMIT@"}],
                           "actions": [{"type": "CREDIT", "asset": "PTS", "amount": amount},
                                       {"type": "SET_ATTRIBUTE", "key": "v", "value": value}]}]}

    def write(folder: Path, amount: str, value: str, limit: str, quoted: bool) -> Path:
        folder.mkdir()
        numbers = {"@A@": amount, "@V@": value, "@LIMIT@": limit}
        text = (json.dumps(program("@A@", "@V@")) if fmt == "json"
                else yaml.safe_dump(program("@A@", "@V@"), sort_keys=False))
        for mark, number in numbers.items():  # unquoted (or quoted) in the file's own syntax
            for q in ('"', "'"):
                text = text.replace(f"{q}{mark}{q}", f'"{number}"' if quoted else number)
        assert "@" not in text, text
        (folder / f"big.{fmt}").write_text(text, encoding="utf-8")
        return folder
    events = write_events(tmp_path / "e.parquet", [event("big", "k1", "u1", "2025-03-01T10:00:00Z", {"type": "buy"})])
    long = write(tmp_path / "long", "12345678901234567.5", "0.12345678901234567891", "123456789012345678.25", quoted=False)
    report = run_json(long, events, tmp_path / "l.duckdb")
    assert (report["completed"], report["failed"]) == (1, 0), report
    assert balances(tmp_path / "l.duckdb") == {("u1", "PTS"): D("12345678901234567.5")}
    assert query(tmp_path / "l.duckdb", "SELECT text_value FROM entity_state WHERE kind = 'ATTRIBUTE'") == [
        ("0.12345678901234567891",)]
    limit = query(tmp_path / "l.duckdb", "SELECT definition->>'$.budgets[0].limit' FROM rule_versions")
    assert [D(x) for x, in limit] == [D("123456789012345678.25")], limit
    versions = []
    for quoted in (False, True):
        folder = write(tmp_path / f"short-{quoted}", "2.5", "0.1", "100.5", quoted=quoted)
        run_json(folder, events, tmp_path / f"s-{quoted}.duckdb")
        versions.append(query(tmp_path / f"s-{quoted}.duckdb", "SELECT current_version FROM rules"))
    assert versions[0] == versions[1], versions


def test_s2_a_participant_id_that_is_not_a_uuid_names_nobody_and_the_rest_is_processed(tmp_path):
    """participant_id / recipient_id are perkflow's participant ids (semantics.md 2.2). A value
    that is not a UUID at all (an external id put in the wrong column, `123`) names nobody, like
    an unknown id: the row is FAILED participant_not_found and the batch goes on. It stopped the
    whole run with an internal error (exit 1, DuckDB's UUID cast), events and operations alike."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    events = write_events(tmp_path / "e.parquet", [
        event("p", "ok", "u1", "2025-03-01T10:00:00Z", {"type": "buy"}),
        event("p", "subject", None, "2025-03-01T10:00:01Z", {"type": "buy"}, participant_id="u1"),
        event("p", "recipient", "u1", "2025-03-01T10:00:02Z", {"type": "buy"}, recipient_id="123"),
    ])
    ops = tmp_path / "o.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"operation": "adjust", "program_id": "p", "idempotency_key": "op", "participant_id": "u1",
         "timestamp": "2025-03-01T11:00:00Z", "params": json.dumps({"type": "CREDIT", "asset": "PTS", "amount": "5"})}]), ops)
    db = tmp_path / "l.duckdb"
    res = cli("run", "--programs", str(programs), "--events", str(events), "--operations", str(ops), "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr[-800:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["read"], report["completed"], report["failed"], report["rejected"]) == (4, 1, 3, 0)
    rows = query(db, "SELECT idempotency_key, status, error_code, participant_ref, recipient_ref FROM events "
                     "UNION ALL SELECT idempotency_key, status, error_code, participant_ref, NULL FROM operations "
                     "ORDER BY idempotency_key")
    assert rows == [("ok", "COMPLETED", None, None, None),
                    ("op", "FAILED", "participant_not_found", "u1", None),
                    ("recipient", "FAILED", "participant_not_found", None, "123"),
                    ("subject", "FAILED", "participant_not_found", "u1", None)]
    assert balances(db) == {("u1", "PTS"): D(1)}


def test_s2_a_rule_removed_from_its_file_is_archived_and_its_versions_stay(tmp_path):
    """semantics.md 2.1: a changed rule gets a new version, the ledger records which version
    wrote each entry, old versions stay queryable. A rule taken out of its program's file kept
    its `rules` row as ACTIVE (so a new rule at its `order` showed two ACTIVE rules on one order);
    it is ARCHIVED now, and its entries and versions still name it."""
    def rules(*rs):
        return write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
            {"name": k, "key": k, "order": order, "condition": "true",
             "actions": [{"type": "CREDIT", "asset": "PTS", "amount": amount}]} for k, order, amount in rs]))
    db = tmp_path / "l.duckdb"
    programs = rules(("a", 10, "1"), ("b", 20, "2"))
    run_json(programs, write_events(tmp_path / "1.parquet", [event("p", "e1", "u1", "2025-03-01T10:00:00Z", {})]), db)
    programs = rules(("a", 10, "10"), ("c", 20, "3"))         # a changed, b removed, c takes b's order
    run_json(programs, write_events(tmp_path / "2.parquet", [event("p", "e2", "u1", "2025-03-01T11:00:00Z", {})]), db)
    assert query(db, 'SELECT key, status, "order" FROM rules ORDER BY key') == [
        ("a", "ACTIVE", 10), ("b", "ARCHIVED", 20), ("c", "ACTIVE", 20)]
    assert query(db, "SELECT r.key, COUNT(*) FROM rule_versions v JOIN rules r ON r.id = v.rule_id GROUP BY 1 ORDER BY 1") == [
        ("a", 2), ("b", 1), ("c", 1)]
    written = query(db, "SELECT e.idempotency_key, r.key, j.rule_version = r.current_version FROM journal_entries j "
                        "JOIN events e ON e.id = j.event_id JOIN rules r ON r.id = j.rule_id ORDER BY j.seq")
    assert written == [("e1", "a", False), ("e1", "b", True), ("e2", "a", True), ("e2", "c", True)]
    assert balances(db) == {("u1", "PTS"): D(1 + 2 + 10 + 3)}
    # back in the file, the rule is what the file says again
    programs = rules(("a", 10, "10"), ("b", 30, "2"), ("c", 20, "3"))
    run_json(programs, write_events(tmp_path / "3.parquet", [event("p", "e3", "u1", "2025-03-01T12:00:00Z", {})]), db)
    assert query(db, "SELECT status FROM rules WHERE key = 'b'") == [("ACTIVE",)]


def test_s4_a_resend_naming_the_same_participant_another_way_is_a_duplicate(tmp_path):
    """semantics.md 4: a later row with the same key and the same canonical payload (participant,
    timestamp, event_data, recipient) is a DUPLICATE. The participant, not how the row spelled
    it: an event sent by external_id and re-sent by that participant's participant_id (or the
    other way round, or the id in capitals) was an idempotency_conflict. A different participant
    under the same key still is one, in the batch and against the ledger."""
    from engine import ids
    u1, u2 = ids.participant_id_text("u1"), ids.participant_id_text("u2")
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "buy", "key": "buy", "condition": "true",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    db = tmp_path / "l.duckdb"

    def send(name: str, rows: list[tuple]) -> dict:
        return run_json(programs, write_events(tmp_path / f"{name}.parquet", [
            event("p", key, ext, at, {"n": 1}, **({"participant_id": pid} if pid else {}),
                  **({"recipient_external_id": rext} if rext else {}), **({"recipient_id": rid} if rid else {}))
            for key, ext, pid, rext, rid, at in rows]), db)
    first = send("1", [("a", "u1", None, None, None, "2025-03-01T10:00:00Z"),
                       ("b", None, u1, "u2", None, "2025-03-01T10:00:01Z"),
                       ("c", "u1", None, None, None, "2025-03-01T10:00:02Z"),
                       ("c", None, u1.upper(), None, None, "2025-03-01T10:00:02Z"),   # in the batch
                       ("d", "u1", None, None, None, "2025-03-01T10:00:03Z"),
                       ("d", "u2", None, None, None, "2025-03-01T10:00:03Z")])        # someone else
    assert (first["completed"], first["duplicates"], first["rejected"]) == (4, 1, 1), first
    again = send("2", [("a", None, u1, None, None, "2025-03-01T10:00:00Z"),          # against the ledger
                       ("b", "u1", None, None, u2, "2025-03-01T10:00:01Z"),
                       ("a", None, u2, None, None, "2025-03-01T10:00:00Z"),          # someone else
                       ("b", "u1", None, "u1", None, "2025-03-01T10:00:01Z")])       # another recipient
    assert (again["completed"], again["duplicates"], again["rejected"]) == (0, 2, 2), again
    assert [r for r, in query(db, "SELECT reason FROM rejected_rows ORDER BY batch_id, row_number")] == [
        "idempotency_conflict"] * 3
    assert balances(db) == {("u1", "PTS"): D(3), ("u2", "PTS"): D(1)}  # b credits its recipient


def test_s9_a_reward_removed_from_its_file_is_archived_and_cannot_be_redeemed(tmp_path):
    """semantics.md 9.4: a rewards catalog per program, with status DRAFT, ACTIVE, OUT_OF_STOCK,
    ARCHIVED. A reward taken out of its program's file could no longer be redeemed, yet the
    `rewards` table and `reward_status` kept showing it ACTIVE; now it is ARCHIVED, its
    redemptions still name it, and back in the file it is what the file says."""
    def files(*keys):
        mugs = [{"key": k, "name": k.title(), "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "2"}
                for k in keys]
        return write_program(tmp_path / "programs" / "p.yaml", {**program_spec("p", [
            {"name": "earn", "key": "earn", "condition": "true",
             "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]}]), "rewards": mugs})

    def redeem(key: str, reward: str, at: str) -> Path:
        f = tmp_path / f"{key}.parquet"
        pq.write_table(pa.Table.from_pylist([
            {"operation": "redeem_item", "program_id": "p", "idempotency_key": key, "external_id": "u1",
             "timestamp": at, "params": json.dumps({"reward_id": reward, "quantity": 1})}]), f)
        return f
    db = tmp_path / "l.duckdb"
    events = write_events(tmp_path / "e.parquet", [event("p", "e1", "u1", "2025-03-01T10:00:00Z", {})])
    for step, (keys, key, reward, at) in enumerate([(("mug", "cap"), "r1", "mug", "2025-03-01T11:00:00Z"),
                                                    (("cap",), "r2", "mug", "2025-03-01T12:00:00Z"),
                                                    (("cap", "mug"), "r3", "mug", "2025-03-01T13:00:00Z")]):
        res = cli("run", "--programs", str(files(*keys)), "--events", str(events), "--operations",
                  str(redeem(key, reward, at)), "--db", str(db), "--json")
        assert res.returncode == 0, res.stderr[-800:]
        statuses = dict(query(db, "SELECT key, status FROM rewards"))
        assert statuses == ({"mug": "ACTIVE", "cap": "ACTIVE"} if step != 1 else {"mug": "ARCHIVED", "cap": "ACTIVE"})
    assert query(db, "SELECT idempotency_key, status FROM operations ORDER BY idempotency_key") == [
        ("r1", "COMPLETED"), ("r2", "FAILED"), ("r3", "COMPLETED")]
    assert query(db, "SELECT COUNT(*) FROM redemptions r JOIN rewards w ON w.id = r.reward_id WHERE w.key = 'mug'") == [(2,)]


@pytest.mark.parametrize("row_path", [False, True])
def test_s6_a_comprehension_over_a_part_of_each_element_loads_and_evaluates(tmp_path, row_path):
    """semantics.md 6 rejects at load an expression "whose cost cannot be bounded (for example a
    comprehension over a comprehension of event lists ...)". A comprehension over each item's own
    tags is not that: together the inner ranges are the payload once, so the cost is linear in
    it. It was refused ("cost cannot be bounded"), so "any item tagged organic" could not be
    written; the quadratic form (the whole list again per element) is still refused."""
    rules = [{"name": "organic", "key": "organic", "order": 10,
              "condition": 'event.items.exists(i, i.tags.exists(t, t == "organic"))',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}]},
             {"name": "count", "key": "count", "order": 20, "condition": "true",
              "actions": [{"type": "CREDIT", "asset": "PTS",
                           "amount": 'size(event.items.filter(i, i.tags.exists(t, t == "organic")))'}]}]
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", rules))
    events = write_events(tmp_path / "e.parquet", [
        event("p", "e1", "u1", "2025-03-01T10:00:00Z", {"items": [{"tags": ["a", "organic"]}, {"tags": ["organic"]}]}),
        event("p", "e2", "u2", "2025-03-01T10:00:01Z", {"items": [{"tags": ["a"]}, {"tags": []}]}),
    ])
    report = run_json(programs, events, tmp_path / "l.duckdb", *(["--row-path"] if row_path else []))
    assert (report["completed"], report["failed"]) == (2, 0)
    # u1: organic 5 + two organic items 2; u2: nothing matches, count credits 0 (no entry)
    assert balances(tmp_path / "l.duckdb") == {("u1", "PTS"): D(7)}
    quadratic = write_program(tmp_path / "q" / "q.yaml", program_spec("q", [
        {"name": "pairs", "key": "pairs", "condition": "event.items.exists(i, event.items.exists(j, i != j))",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    res = cli("validate", "--programs", str(quadratic))
    assert res.returncode == 2 and "cost cannot be bounded" in res.stderr


def test_s5_explain_says_which_rules_a_failed_event_never_ran(tmp_path):
    """semantics.md 5: `perkflow explain <event>` shows every rule's outcome. An event FAILED by
    an action stops at that action, and one FAILED in step 1 runs no rule; their later rules
    were shown as 'not matched' (no recorded outcome, no reason), though they never ran."""
    rules = [{"name": n, "key": n, "order": o, "condition": c, "actions": [a]} for n, o, c, a in [
        ("earn", 10, "true", {"type": "CREDIT", "asset": "PTS", "amount": "1"}),
        ("spend", 20, 'event.type == "spend"', {"type": "DEBIT", "asset": "PTS", "amount": "100"}),
        ("after", 30, "true", {"type": "TAG", "tag": "after"})]]
    programs = tmp_path / "programs"
    write_program(programs / "p.yaml", program_spec("p", rules))
    write_program(programs / "r.yaml", program_spec("r", rules, on_unknown_participant="REJECT"))
    db = tmp_path / "l.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", [
        event("p", "short", "u1", "2025-03-01T10:00:00Z", {"type": "spend"}),
        event("r", "nobody", "u9", "2025-03-01T10:00:01Z", {"type": "buy"})]), db)

    def outcomes(key):
        res = cli("explain", key, "--programs", str(programs), "--db", str(db), "--json")
        assert res.returncode == 0, res.stderr
        return {r["rule"]: r["recorded"] or r["not_run"] for r in json.loads(res.stdout)["rules"]}

    assert outcomes("short") == {"earn": "MATCHED", "spend": "MATCHED",
                                 "after": "not run: the event FAILED (insufficient_balance) in an action of spend"}
    assert set(outcomes("nobody").values()) == {"not run: the event FAILED (participant_not_found) before its rules"}


def test_s2_operations_name_the_asset_by_symbol_or_by_its_id(tmp_path):
    """semantics.md 2.3: an operation row carries the fields of the matching Scrip endpoint,
    whose `asset_id` is the asset's id. perkflow's asset ids (the `assets` table, UUIDv5 of the
    symbol) were 'unknown asset' there; the symbol under `asset` or `asset_id` still works."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    db = tmp_path / "l.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", [event("p", "e1", "u1", "2025-03-01T09:00:00Z", {"type": "buy"})]), db)
    (pts,), = query(db, "SELECT id::VARCHAR FROM assets WHERE symbol = 'PTS'")

    def adjust(key, minute, **asset):
        return {"operation": "adjust", "program_id": "p", "idempotency_key": key, "external_id": "u1",
                "timestamp": f"2025-03-01T10:{minute:02d}:00Z",
                "params": json.dumps({**asset, "type": "CREDIT", "amount": "10", "description": "goodwill"})}
    ops = tmp_path / "o.parquet"
    pq.write_table(pa.Table.from_pylist([adjust("by-id", 1, asset_id=pts), adjust("by-upper-id", 2, asset_id=pts.upper()),
                                         adjust("by-symbol", 3, asset_id="PTS"), adjust("by-asset", 4, asset="PTS"),
                                         adjust("unknown", 5, asset_id="00000000-0000-0000-0000-000000000000")]), ops)
    res = cli("run", "--programs", str(programs), "--operations", str(ops), "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr[-500:]
    assert query(db, "SELECT idempotency_key, status, error_code FROM operations ORDER BY timestamp") == [
        ("by-id", "COMPLETED", None), ("by-upper-id", "COMPLETED", None), ("by-symbol", "COMPLETED", None),
        ("by-asset", "COMPLETED", None), ("unknown", "FAILED", "invalid_operation")]
    assert balances(db) == {("u1", "PTS"): D(1 + 4 * 10)}


@pytest.mark.parametrize("user", ["a_partner", "z_partner"])
def test_s2_a_program_uses_the_assets_its_own_file_defines_whatever_the_file_order(tmp_path, user):
    """semantics.md 2.1: assets are shared by defining them identically in each program file (as
    Scrip links assets to programs), and `participant.balances` has an entry for every asset of
    the program. A program whose rules used an asset only another file defines loaded when that
    file sorted first and failed to load when it sorted after; `participant.balances.PTS` there
    loaded and then never had the entry (SKIPPED_ERROR on every event). Now it is a load error
    either way, naming the file, the rule and the field; defined in both files, it is shared."""
    pts = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
    earn = {"name": "earn", "key": "earn", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}
    read = {"name": "rich", "key": "rich", "condition": "participant.balances.PTS.available >= 1.0",
            "actions": [{"type": "TAG", "tag": "rich"}]}
    for rule, field in ((earn, "actions[0]"), (read, "condition")):
        programs = tmp_path / f"{rule['key']}-{user}"
        write_program(programs / "m_main.yaml", program_spec("main", [earn], assets=[pts]))
        write_program(programs / f"{user}.yaml", program_spec("partner", [rule], assets=[]))
        res = cli("validate", "--programs", str(programs))
        assert res.returncode == 2, res.stdout
        err = " ".join(res.stderr.split())
        assert f"{user}.yaml: rules[0] ({rule['name']}): {field}" in err and "unknown asset symbol 'PTS'" in err, err
    programs = tmp_path / f"shared-{user}"
    write_program(programs / "m_main.yaml", program_spec("main", [earn], assets=[pts]))
    write_program(programs / f"{user}.yaml", program_spec("partner", [read], assets=[pts]))
    db = tmp_path / f"{user}.duckdb"
    run_json(programs, write_events(tmp_path / f"{user}.parquet", [
        event("main", "e1", "u1", "2025-03-01T10:00:00Z", {}),
        event("partner", "e2", "u1", "2025-03-01T11:00:00Z", {})]), db)
    assert query(db, "SELECT outcome FROM rule_evaluations x JOIN rules r ON r.id = x.rule_id WHERE r.key = 'rich'") == [("MATCHED",)]


def test_s5_explain_of_a_key_two_programs_use_asks_for_the_event_id(tmp_path):
    """Idempotency keys are unique per program (semantics.md 2.2), so one key can name an event
    in each of two programs; `perkflow explain KEY` showed one of them without a word. It stops
    (exit 2) naming both programs and their event ids; an event id picks one."""
    pts = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
    programs = tmp_path / "programs"
    for key, amount in (("a", "1"), ("b", "2")):
        write_program(programs / f"{key}.yaml", program_spec(key, [
            {"name": "r", "key": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": amount}]}],
            assets=[pts]))
    db = tmp_path / "l.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", [
        event("a", "k1", "u1", "2025-03-01T10:00:00Z", {}), event("b", "k1", "u1", "2025-03-01T10:00:01Z", {})]), db)
    ids = dict(query(db, "SELECT p.key, e.id::VARCHAR FROM events e JOIN programs p ON p.id = e.program_id"))
    res = cli("explain", "k1", "--programs", str(programs), "--db", str(db), "--json")
    assert res.returncode == 2 and res.stdout == ""
    err = " ".join(res.stderr.split())
    assert f"a: {ids['a']}" in err and f"b: {ids['b']}" in err, err
    res = cli("explain", ids["b"], "--programs", str(programs), "--db", str(db), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["entries"] == [{"rule": "r", "type": "CREDIT", "amount": "2"}]


def test_s5_explain_without_program_files_reads_the_programs_the_ledger_stored(tmp_path):
    """`perkflow explain KEY` run away from the program files (another folder, no --programs):
    it showed an empty rule table beside the recorded outcome. The ledger stores every program
    file its runs read, so that is what it shows the rules of; the same with files that hold
    other programs only."""
    pts = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
    programs = tmp_path / "programs"
    write_program(programs / "shop.yaml", program_spec("shop", [
        {"name": "big", "key": "big", "order": 10, "condition": "event.amount > 100",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}]},
        {"name": "any", "key": "any", "order": 20, "condition": "true",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], assets=[pts]))
    other = write_program(tmp_path / "other" / "cafe.yaml", program_spec("cafe", [
        {"name": "r", "key": "r", "condition": "true", "actions": [{"type": "TAG", "tag": "x"}]}]))
    db = tmp_path / "l.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", [event("shop", "k1", "u1", "2025-03-01T10:00:00Z", {"amount": 50})]), db)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for extra in ([], ["--programs", str(other)]):
        res = cli("explain", "k1", "--db", str(db), "--json", *extra, cwd=elsewhere)
        assert res.returncode == 0, res.stderr
        got = json.loads(res.stdout)
        assert [(r["rule"], r["recorded"]) for r in got["rules"]] == [("big", None), ("any", "MATCHED")], got
        assert got["entries"] == [{"rule": "any", "type": "CREDIT", "amount": "1"}]


def _struct_events(path, data_type: pa.DataType, payloads: list[dict]) -> None:
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", data_type)])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([
        {"program_id": "p", "idempotency_key": f"s{i}", "external_id": "u1",
         "event_timestamp": f"2025-03-01T10:00:0{i}Z", "event_data": d} for i, d in enumerate(payloads)], schema=schema), path)


@pytest.mark.parametrize("row_path", [False, True])
def test_s2_a_date_field_of_a_struct_payload_reaches_cel_as_its_iso_text(tmp_path, row_path):
    """A struct event_data (semantics.md 2.2) with a DATE field (a birthday, a booking date): CEL
    has no date type, and any expression reading it failed the event ('unsupported value of
    Python type date'). It is its ISO text, as the stored payload shows it."""
    import datetime as dt
    rules = [{"name": "day", "key": "day", "order": 10,
              "condition": 'event.day == "2025-03-01" && timestamp(event.day + "T00:00:00Z") <= now',
              "actions": [{"type": "SET_ATTRIBUTE", "key": "day", "value": "event.day"}]}]
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", rules))
    f = tmp_path / "in" / "dates.parquet"
    _struct_events(f, pa.struct([("day", pa.date32())]), [{"day": dt.date(2025, 3, 1)}])
    report = run_json(programs, f, tmp_path / "l.duckdb", *(["--row-path"] if row_path else []))
    assert (report["completed"], report["failed"]) == (1, 0), query(tmp_path / "l.duckdb", "SELECT error_message FROM events")
    assert query(tmp_path / "l.duckdb", "SELECT text_value FROM entity_state WHERE kind = 'ATTRIBUTE'") == [("2025-03-01",)]


def test_s3_replay_and_explain_read_typed_struct_payloads_as_the_live_run_did(tmp_path):
    """semantics.md 1.4/3: replay rebuilds the ledger from the stored inputs. A Parquet struct
    payload keeps its types live (int64 stays int, a timestamp field is a CEL timestamp:
    docs/decisions.md), but the events table stores it as JSON text, which replay and explain
    read with JSON's mapping (every number a double, instants as text): `event.n % 2` and
    `event.at < now` matched live and errored on replay, `event.n / 2` of 5 was 2 live and 2.5
    on replay. A JSON payload in another batch keeps JSON's mapping (n / 2 of 3 is 1.5), and the
    replayed ledger stores every payload as the live one did."""
    import datetime as dt
    rules = [{"name": "even", "key": "even", "order": 10, "condition": "event.n % 2 == 0",
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n / 2"}]},
             {"name": "before", "key": "before", "order": 20, "condition": "has(event.at) && event.at < now",
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
             {"name": "half", "key": "half", "order": 30, "condition": "true",
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n / 2"}]}]
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", rules, assets=[
        {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 2}]))
    f = tmp_path / "in" / "typed.parquet"
    at = dt.datetime(2025, 3, 1, 9, tzinfo=dt.timezone.utc)
    _struct_events(f, pa.struct([("n", pa.int64()), ("at", pa.timestamp("us", tz="UTC"))]),
                   [{"n": 4, "at": at}, {"n": 5, "at": at}])
    live = tmp_path / "live.duckdb"
    run_json(programs, f, live)
    # JSON, a later batch but earlier in time: replay interleaves it with the struct rows
    run_json(programs, write_events(tmp_path / "in2" / "json.parquet", [
        event("p", "j", "u1", "2025-03-01T09:30:00Z", {"n": 3})]), live)
    # s0 (n 4): 2 + 1 + 2; s1 (n 5, odd): 1 + 2 (int division); j (n 3.0): `%` of a double is an
    # error (SKIPPED_ERROR, no entry), 1.5
    assert balances(live) == {("u1", "PTS"): D("9.5")}
    res = cli("replay", "--from", str(live), "--db", str(tmp_path / "replay.duckdb"), "--programs", str(programs))
    assert res.returncode == 0, res.stderr
    assert balances(tmp_path / "replay.duckdb") == balances(live)
    stored = "SELECT idempotency_key, event_data::VARCHAR FROM events ORDER BY idempotency_key"
    assert query(tmp_path / "replay.duckdb", stored) == query(live, stored)
    outcomes = "SELECT e.idempotency_key, r.key, x.outcome FROM rule_evaluations x JOIN events e ON e.id = x.event_id " \
               "JOIN rules r ON r.id = x.rule_id ORDER BY 1, 2"
    assert query(tmp_path / "replay.duckdb", outcomes) == query(live, outcomes)
    for key, even in (("s0", "True"), ("s1", "False")):
        res = cli("explain", key, "--db", str(live), "--programs", str(programs), "--json")
        assert res.returncode == 0, res.stderr
        shown = {r["rule"]: r["re_evaluated"] for r in json.loads(res.stdout)["rules"]}
        assert shown == {"even": even, "before": "True", "half": "True"}, shown
    res = cli("explain", "j", "--db", str(live), "--programs", str(programs), "--json")
    assert json.loads(res.stdout)["rules"][0]["re_evaluated"].startswith("error"), res.stdout


def test_s2_explain_re_evaluates_the_rule_version_that_evaluated_the_event(tmp_path):
    """semantics.md 2.1: a changed rule gets a new version; the ledger records which version
    produced each entry. `explain` re-evaluated an old event with the rule as the program file
    says now, so after `event.n > 5` became `event.n > 2` an event of n 3 that did not match
    showed its condition as True; it shows the condition of the version that ran."""
    def rules(threshold: int) -> Path:
        return write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
            {"name": "big", "key": "big", "condition": f"event.n > {threshold}",
             "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    db = tmp_path / "l.duckdb"
    run_json(rules(5), write_events(tmp_path / "1.parquet", [event("p", "e1", "u1", "2025-03-01T10:00:00Z", {"n": 7}),
                                                             event("p", "e0", "u1", "2025-03-01T10:00:00Z", {"n": 3})]), db)
    programs = rules(2)
    run_json(programs, write_events(tmp_path / "2.parquet", [event("p", "e2", "u1", "2025-03-01T11:00:00Z", {"n": 1})]), db)
    assert balances(db) == {("u1", "PTS"): D(1)}
    shown = {}
    for key in ("e0", "e1", "e2"):
        res = cli("explain", key, "--db", str(db), "--programs", str(programs), "--json")
        assert res.returncode == 0, res.stderr
        shown[key] = json.loads(res.stdout)["rules"][0]
    assert (shown["e1"]["recorded"], shown["e1"]["re_evaluated"]) == ("MATCHED", "True"), shown["e1"]
    # e0 did not match (no outcome recorded): the version of its batch, n 3 > 5, not the file's n 3 > 2
    assert (shown["e0"]["recorded"], shown["e0"]["re_evaluated"]) == (None, "False"), shown["e0"]
    versions = {k: (shown[k].get("rule_version"), shown[k].get("file_rule_version")) for k in shown}
    assert versions["e0"] == versions["e1"] and versions["e2"] == (None, None), versions
    assert None not in versions["e0"] and versions["e0"][0] != versions["e0"][1], versions
    assert shown["e2"]["re_evaluated"] == "False" and "rule_version" not in shown["e2"], shown["e2"]


def test_s2_a_payload_with_an_unpaired_surrogate_escape_is_quarantined_and_the_rest_processed(tmp_path):
    """semantics.md 2.2: rows that break the contract are quarantined, the rest are processed.
    JSON text may escape a lone UTF-16 surrogate ("\\ud800"), which Python's reader takes and the
    ledger's JSON column refuses: the whole run stopped at the write (exit 1, a DuckDB trace). A
    proper pair (an emoji) is fine."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "r", "key": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    events = write_events(tmp_path / "e.parquet", [
        event("p", "lone", "u1", "2025-03-01T10:00:00Z", '{"note": "\\ud800"}'),
        event("p", "lone-key", "u1", "2025-03-01T10:00:01Z", '{"\\uDC00": 1}'),
        event("p", "pair", "u1", "2025-03-01T10:00:02Z", '{"note": "\\ud83d\\ude00"}')])
    db = tmp_path / "l.duckdb"
    res = cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr[-600:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["read"], report["completed"], report["rejected"]) == (3, 1, 2)
    assert [(n, r) for n, r, in query(db, "SELECT row_number, reason FROM rejected_rows ORDER BY row_number")] == [
        (1, "invalid_event_data"), (2, "invalid_event_data")]
    assert balances(db) == {("u1", "PTS"): D(1)}


def test_s2_a_single_operation_from_the_cli_names_its_participant_by_id(tmp_path):
    """semantics.md 2.3: operations come as files and as single operations from the CLI, each
    with its target; an operations file may name the participant by participant_id (Scrip's
    endpoints name it by id), `perkflow op` only by --external-id. --participant-id works as the
    file's column does: known id applied, retried as a duplicate, unknown id participant_not_found."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "buy", "key": "buy", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    db = tmp_path / "l.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", [event("p", "e1", "u1", "2025-03-01T09:00:00Z", {})]), db)
    (pid,), = query(db, "SELECT id::VARCHAR FROM participants WHERE external_id = 'u1'")

    def op(key, who):
        res = cli("op", "adjust", "--programs", str(programs), "--db", str(db), "--program", "p", "--key", key,
                  "--participant-id", who, "--timestamp", "2025-03-01T10:00:00Z",
                  "--param", "type=CREDIT", "--param", "asset=PTS", "--param", "amount=5", "--json")
        assert res.returncode == 0, res.stderr[-500:]
        out = json.loads(res.stdout.strip().splitlines()[-1])
        return out["status"], out["error_code"], out["duplicate"]

    assert op("by-id", pid.upper()) == ("COMPLETED", None, False)
    assert op("by-id", pid.upper()) == ("COMPLETED", None, True)
    assert op("nobody", "0a000000-0000-0000-0000-000000000001") == ("FAILED", "participant_not_found", False)
    assert balances(db) == {("u1", "PTS"): D(1 + 5)}


def test_s2_a_column_null_in_every_row_quarantines_its_rows_instead_of_stopping_the_run(tmp_path):
    """semantics.md 2.2: rows that break the contract are quarantined, the rest processed. A
    column with no value in any row is typed Null by pyarrow and Polars; an event_data or
    event_timestamp column like that stopped the run (exit 2, 'must be a struct or a JSON object
    string, found Null') where the same rows with a typed column were quarantined one by one.
    An operations file's params column like that: no fields, as when the column is absent."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "r", "key": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    inbox = tmp_path / "in"
    inbox.mkdir()
    pq.write_table(pa.Table.from_pylist([{"program_id": "p", "idempotency_key": "ok", "external_id": "u1",
                                          "event_timestamp": "2025-03-01T10:00:00Z", "event_data": "{}"}]), inbox / "a.parquet")
    pq.write_table(pa.Table.from_pylist([{"program_id": "p", "idempotency_key": "no-data", "external_id": "u1",
                                          "event_timestamp": "2025-03-01T10:00:01Z", "event_data": None}]), inbox / "b.parquet")
    pq.write_table(pa.Table.from_pylist([{"program_id": "p", "idempotency_key": "no-time", "external_id": "u1",
                                          "event_timestamp": None, "event_data": "{}"}]), inbox / "c.parquet")
    ops = tmp_path / "ops.parquet"
    pq.write_table(pa.Table.from_pylist([{"operation": "tag", "program_id": "p", "idempotency_key": "op", "external_id": "u1",
                                          "timestamp": "2025-03-01T11:00:00Z", "params": None}]), ops)
    assert pq.read_schema(inbox / "b.parquet").field("event_data").type == pa.null()
    db = tmp_path / "l.duckdb"
    res = cli("run", "--programs", str(programs), "--events", str(inbox), "--operations", str(ops), "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr[-600:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["read"], report["completed"], report["failed"], report["rejected"]) == (4, 1, 1, 2)
    rejected = query(db, "SELECT reason, message FROM rejected_rows ORDER BY source")
    assert rejected[0] == ("missing_required_field", "required field event_data is empty")
    assert rejected[1][0] == "missing_required_field" and len(rejected) == 2
    assert rejected[1][1].startswith("required field event_timestamp is empty: "), rejected
    assert query(db, "SELECT status, error_message FROM operations") == [("FAILED", "tag: params.tag is required")]


@pytest.mark.parametrize("name,text,key", [
    ("twice.yaml", "program: {key: p, name: P}\n"
                   "assets:\n  - {symbol: PTS, name: Points, inventory_mode: SIMPLE, issuance_policy: UNLIMITED, scale: 0}\n"
                   "rules:\n  - name: r\n    condition: event.type == \"buy\"\n    condition: \"true\"\n"
                   "    actions: [{type: CREDIT, asset: PTS, amount: \"1\"}]\n", "condition"),
    ("twice.yaml", "program: {key: p, name: P}\n"
                   "assets:\n  - {symbol: PTS, name: Points, inventory_mode: SIMPLE, issuance_policy: UNLIMITED, scale: 0}\n"
                   "rules:\n  - name: r\n    condition: \"true\"\n"
                   "    actions: [{type: CREDIT, asset: PTS, amount: \"1\", amount: \"1000\"}]\n", "amount"),
    ("twice.json", '{"program": {"key": "p", "name": "P"}, "assets": [], "rules": [], "program": {"key": "q", "name": "Q"}}',
     "program"),
])
def test_s2_a_key_written_twice_in_a_program_file_is_a_load_error(tmp_path, name, text, key):
    """semantics.md 2.1: a program file is validated before anything is written, with errors that
    name the file and the field. YAML and JSON readers keep the last of two equal keys silently:
    a rule with two `condition:` lines ran the second, an action with two amounts credited the
    last (1000, not 1), and nothing said so. Now the file does not load, naming the key."""
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / name).write_text(text, encoding="utf-8")
    events = write_events(tmp_path / "e.parquet", [event("p", "k1", "u1", "2025-03-01T10:00:00Z", {"type": "x"})])
    db = tmp_path / "l.duckdb"
    for args in (("validate", "--programs", str(programs)),
                 ("run", "--programs", str(programs), "--events", str(events), "--db", str(db))):
        res = cli(*args)
        assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-400:])
        err = " ".join(res.stderr.split())
        assert name in err and f"key '{key}' is written twice" in err, err
    assert not db.exists()


def test_s2_a_byte_order_mark_does_not_make_a_json_program_or_an_ndjson_file_unreadable(tmp_path):
    """Windows editors save UTF-8 with a byte order mark. A YAML program file loaded with one, a
    JSON program file and an NDJSON event file did not (exit 2, 'Unexpected UTF-8 BOM'): the
    mark is not content (semantics.md 2.1 and 2.2 take JSON program files and NDJSON events)."""
    programs = tmp_path / "programs"
    programs.mkdir()
    spec = program_spec("p", [{"name": "r", "key": "r", "condition": "true",
                               "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}])
    (programs / "p.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(spec).encode())
    events = tmp_path / "e.ndjson"
    events.write_bytes(b"\xef\xbb\xbf" + json.dumps({"program_id": "p", "external_id": "u1", "idempotency_key": "k1",
                                                     "event_timestamp": "2025-03-01T10:00:00Z", "event_data": {}}).encode() + b"\n")
    report = run_json(programs, events, tmp_path / "l.duckdb")
    assert (report["read"], report["completed"]) == (1, 1)
    assert balances(tmp_path / "l.duckdb") == {("u1", "PTS"): D(1)}


def test_s2_dictionary_encoded_text_columns_are_text(tmp_path):
    """semantics.md 2.2 asks for string columns (event_timestamp an RFC 3339 string or a
    timestamp, event_data a JSON object string or a struct). Parquet written from categorical
    columns stores them dictionary-encoded: still text. The id columns were read so; an
    event_timestamp or event_data like that stopped the run (exit 2, 'found Categorical')."""
    programs = write_program(tmp_path / "programs" / "p.yaml", program_spec("p", [
        {"name": "r", "key": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    text = pa.dictionary(pa.int32(), pa.string())
    f = tmp_path / "dict.parquet"
    pq.write_table(pa.table({c: pa.array(v, text) for c, v in {
        "program_id": ["p", "p"], "external_id": ["u1", "u2"], "idempotency_key": ["k1", "k2"],
        "event_timestamp": ["2025-03-01T10:00:00Z", "2025-03-01T10:00:00Z"], "event_data": ["{}", "{}"]}.items()}), f)
    report = run_json(programs, f, tmp_path / "l.duckdb")
    assert (report["read"], report["completed"]) == (2, 2)
    assert balances(tmp_path / "l.duckdb") == {("u1", "PTS"): D(1), ("u2", "PTS"): D(1)}


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_s13_every_quarantined_row_keeps_its_raw_row_as_read(tmp_path, chunk_rows):
    """semantics.md 13 (and 4: a conflict is quarantined): `rejected_rows.raw` is the row as the
    file holds it. Rows quarantined after reading (unknown program or operation, idempotency
    conflicts in the batch or with the ledger) kept a normalised copy instead: the timestamp
    re-written in UTC, payload keys sorted, an operation's `timestamp`/`params` renamed
    `event_timestamp`/`event_data`, columns the file does not have added as nulls. The same
    holds when the batch is read in chunks from row groups of 2 rows (`--chunk-rows 2`)."""
    s = Scenario(tmp_path, "p", [{"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
                                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], [asset("PTS")])
    extra = ["--chunk-rows", str(chunk_rows)] if chunk_rows else []

    def rows_file(name, rows, cols):
        f = tmp_path / "in" / name
        f.parent.mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in cols])), f,
                       row_group_size=2)
        return f

    ev_cols = ("program_id", "idempotency_key", "external_id", "event_timestamp", "event_data")
    first = [dict(zip(ev_cols, r)) for r in [
        ("p", "k1", "u1", "2025-03-01T10:00:00+01:00", '{"type": "buy", "z": 1}'),
        ("p", "k2", "u1", "2025-03-01T10:01:00Z", '{"type":"buy"}'),
        ("p", "k3", "u1", "2025-03-01T10:02:00Z", '{"type":"buy"}'),
        ("nope", "k4", "u1", "2025-03-01T10:03:00+02:00", '{"type": "buy"}'),         # unknown program
        ("p", "k2", "u1", "2025-03-01T10:01:00Z", '{ "z":2,  "type":"buy"}'),           # conflict in the batch
    ]]
    report = run_json(s.programs, rows_file("e1.parquet", first, ev_cols), s.db, *extra)
    assert (report["completed"], report["rejected"]) == (3, 2)
    second = [dict(zip(ev_cols, ("p", "k1", "u1", "2025-03-01T09:00:00Z", '{"type": "buy", "z": 2}')))]  # vs the ledger
    run_json(s.programs, rows_file("e2.parquet", second, ev_cols), s.db, *extra)
    op_cols = ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")
    ops = [dict(zip(op_cols, r)) for r in [
        ("adjust", "p", "o1", "u1", "2025-03-02T00:00:00Z", '{"type": "CREDIT", "asset": "PTS", "amount": "5"}'),
        ("adjust", "p", "o1", "u1", "2025-03-02T00:00:00Z", '{"type": "CREDIT", "asset": "PTS", "amount": "6"}'),
        ("frobnicate", "p", "o2", "u1", "2025-03-02T00:00:00+00:00", "{}"),
    ]]
    res = cli("run", "--programs", str(s.programs), "--operations", str(rows_file("o.parquet", ops, op_cols)),
              "--db", str(s.db), *extra)
    assert res.returncode == 0, res.stderr
    got = query(s.db, "SELECT source, row_number, reason, raw FROM rejected_rows ORDER BY batch_id, row_number")
    assert [(Path(src).name, n, r) for src, n, r, _ in got] == [
        ("e1.parquet", 4, "unknown_program"), ("e1.parquet", 5, "idempotency_conflict"),
        ("e2.parquet", 1, "idempotency_conflict"),
        ("o.parquet", 2, "idempotency_conflict"), ("o.parquet", 3, "unknown_operation")]
    assert [json.loads(raw) for *_, raw in got] == [first[3], first[4], second[0], ops[1], ops[2]]


def test_s2_an_operations_null_params_is_no_fields_in_struct_and_ndjson_files(tmp_path):
    """semantics.md 2.3: params come "as a struct or JSON params"; docs/decisions.md: a null
    `params` is no fields (`{}`), as a missing column is. In a Parquet struct column a null row
    was quarantined as missing params, and in NDJSON a null or absent `params` (and every params
    object, typed as one struct over the file) went the struct way: the operations that need no
    fields were quarantined, and stored params gained every other row's fields as nulls."""
    s = Scenario(tmp_path, "p", [{"name": "buy", "key": "buy", "condition": "true",
                                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}], [asset("PTS")])
    params = pa.struct([("tag", pa.string())])
    schema = pa.schema([("operation", pa.string()), ("program_id", pa.string()), ("idempotency_key", pa.string()),
                        ("external_id", pa.string()), ("timestamp", pa.string()), ("params", params)])
    f = tmp_path / "in" / "ops.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"operation": "upsert_participant", "program_id": "p", "idempotency_key": "s1", "external_id": "u1",
         "timestamp": "2025-03-01T10:00:00Z", "params": None},
        {"operation": "tag", "program_id": "p", "idempotency_key": "s2", "external_id": "u1",
         "timestamp": "2025-03-01T10:01:00Z", "params": {"tag": "vip"}}], schema=schema), f)
    lines = [{"operation": "upsert_participant", "program_id": "p", "idempotency_key": "n1", "external_id": "u2",
              "timestamp": "2025-03-01T11:00:00Z", "params": None},
             {"operation": "upsert_participant", "program_id": "p", "idempotency_key": "n2", "external_id": "u3",
              "timestamp": "2025-03-01T11:01:00Z"},
             {"operation": "tag", "program_id": "p", "idempotency_key": "n3", "external_id": "u2",
              "timestamp": "2025-03-01T11:02:00Z", "params": {"tag": "gold"}},
             {"operation": "adjust", "program_id": "p", "idempotency_key": "n4", "external_id": "u2",
              "timestamp": "2025-03-01T11:03:00Z", "params": {"type": "CREDIT", "asset": "PTS", "amount": 5}}]
    nd = tmp_path / "in" / "ops.ndjson"
    nd.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    for path in (f, nd):
        res = cli("run", "--programs", str(s.programs), "--operations", str(path), "--db", str(s.db))
        assert res.returncode == 0, res.stderr
    assert query(s.db, "SELECT COUNT(*) FROM rejected_rows") == [(0,)]
    # (a struct's stored params keep its fields, a null one as null: null is absent)
    got = {k: (st, {f: v for f, v in json.loads(p).items() if v is not None})
           for k, st, p in query(s.db, "SELECT idempotency_key, status, params FROM operations")}
    assert json.loads(query(s.db, "SELECT params FROM operations WHERE idempotency_key = 'n3'")[0][0]) == {"tag": "gold"}
    assert got == {"s1": ("COMPLETED", {}), "s2": ("COMPLETED", {"tag": "vip"}), "n1": ("COMPLETED", {}),
                   "n2": ("COMPLETED", {}), "n3": ("COMPLETED", {"tag": "gold"}),
                   "n4": ("COMPLETED", {"type": "CREDIT", "asset": "PTS", "amount": 5})}
    assert _tags(s, "u1") == {"vip"} and _tags(s, "u2") == {"gold"}
    assert s.balance("u2", "PTS")[0] == 5
    # an NDJSON event's null event_data is a missing value, as a Parquet or CSV null is (it was
    # read as the JSON text `null`: invalid_event_data "got null")
    ev = tmp_path / "in" / "events.ndjson"
    ev.write_text(json.dumps({"program_id": "p", "idempotency_key": "e1", "external_id": "u1",
                              "event_timestamp": "2025-03-02T00:00:00Z", "event_data": None}) + "\n", encoding="utf-8")
    assert run_json(s.programs, ev, s.db)["rejected"] == 1
    assert query(s.db, "SELECT reason FROM rejected_rows") == [("missing_required_field",)]
