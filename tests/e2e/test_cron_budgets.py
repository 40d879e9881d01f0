"""CRON budgets through the CLI: the budget resets at each firing of its cron expression (UTC),
consumed in program-global stream order, across batches."""

from __future__ import annotations

from decimal import Decimal as D

from tests.helpers.io import balances, event, program_spec, query, run_json, write_events, write_program

MONTHLY = {"asset": "PTS", "limit": "20", "schedule_type": "CRON", "cron_expression": "0 0 1 * *"}
WEEKDAY_MORNINGS = {"asset": "PTS", "limit": "10", "schedule_type": "CRON", "cron_expression": "0 9 * * MON-FRI"}


def _program(tmp_path, budget):
    rule = {"name": "Purchase bonus", "key": "bonus", "condition": 'event.type == "purchase"',
            "budgets": [budget], "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]}
    return write_program(tmp_path / "programs" / "shop.yaml", program_spec("shop", [rule]))


def _outcomes(db):
    return dict(query(db, "SELECT e.idempotency_key, r.outcome FROM rule_evaluations r JOIN events e ON e.id = r.event_id"))


def test_monthly_cron_budget_resets_on_the_first(tmp_path):
    programs = _program(tmp_path, MONTHLY)
    when = {"j1": "2025-01-05T10:00:00Z", "j2": "2025-01-10T10:00:00Z", "j3": "2025-01-31T23:59:59Z",
            "f1": "2025-02-01T00:00:00Z",  # exactly at the firing: a new period
            "f2": "2025-02-02T00:00:00Z", "f3": "2025-02-28T00:00:00Z", "m1": "2025-03-01T00:00:01Z"}
    rows = [event("shop", k, "alice" if i % 2 else "bob", t, {"type": "purchase"}) for i, (k, t) in enumerate(when.items())]
    db = tmp_path / "w.duckdb"
    # two batches cut mid-month: the January budget carries over into the second batch
    run_json(programs, write_events(tmp_path / "a" / "e.parquet", rows[:2]), db)
    run_json(programs, write_events(tmp_path / "b" / "e.parquet", rows[2:]), db)
    # 20 per month at 10 an event: the first two events of each month are paid
    paid = ["j1", "j2", "f1", "f2", "m1"]
    got = _outcomes(db)
    assert {k for k, o in got.items() if o == "MATCHED"} == set(paid)
    assert {k for k, o in got.items() if o == "BUDGET_EXCEEDED"} == {"j3", "f3"}
    per_person = {"alice": 0, "bob": 0}
    for i, k in enumerate(when):
        if k in paid:
            per_person["alice" if i % 2 else "bob"] += 10
    assert balances(db) == {(p, "PTS"): D(v) for p, v in per_person.items()}


def test_weekday_cron_budget_spans_the_weekend(tmp_path):
    """Fri 09:00 fires; nothing fires on the weekend, so Saturday and Sunday spend Friday's budget."""
    programs = _program(tmp_path, WEEKDAY_MORNINGS)
    when = ["2025-03-14T08:59:00Z",  # Fri before 09:00: Thursday's period
            "2025-03-14T09:00:00Z",  # Fri 09:00: new period
            "2025-03-15T12:00:00Z",  # Sat: still Friday's period -> exceeded
            "2025-03-17T09:00:00Z"]  # Mon 09:00: new period
    rows = [event("shop", f"e{i}", "alice", t, {"type": "purchase"}) for i, t in enumerate(when)]
    db = tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "e.parquet", rows), db)
    assert _outcomes(db) == {"e0": "MATCHED", "e1": "MATCHED", "e2": "BUDGET_EXCEEDED", "e3": "MATCHED"}
    assert balances(db) == {("alice", "PTS"): D(10 * 3)}
