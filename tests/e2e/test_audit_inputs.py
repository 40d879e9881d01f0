"""Black-box audit of semantics.md 1-6 and 13 (inputs, order and time, idempotency, rule
evaluation, the CEL environment, bad input), and the quickstart read literally.

Each test is a small ledger run through the engine or the CLI; every expected value is worked
out by hand from the contract in the comments beside it.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.io import balances, cli, event, query, run_json, write_events, write_program, program_spec
from tests.helpers.scenario import Scenario, asset, ev

D = Decimal


def _evaluations(s: Scenario) -> dict[tuple[str, str], tuple[str, str | None]]:
    """{(event key, rule key): (outcome, message)} of the stored rule evaluations."""
    rows = query(s.db, "SELECT e.idempotency_key, r.key, x.outcome, x.message FROM rule_evaluations x "
                       "JOIN events e ON e.id = x.event_id JOIN rules r ON r.id = x.rule_id")
    return {(k, r): (o, m) for k, r, o, m in rows}


def _tags(s: Scenario, who: str) -> set[str]:
    return {key for (kind, key) in s.state(who) if kind == "TAG"}


def test_s5_windows_errors_stop_and_later_rules_see_earlier_actions(tmp_path):
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
