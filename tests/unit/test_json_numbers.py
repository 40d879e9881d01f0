"""JSON payload numbers: stored and compared exactly, seen by CEL as doubles (CEL's JSON mapping).

Regression: integers were converted to doubles before storage and the idempotency check, so two
payloads differing beyond 2**53 counted as duplicates instead of an idempotency_conflict.
"""

from __future__ import annotations

import json

from engine.run import run_batch
from tests.helpers.io import event, query, write_events, write_program, program_spec

BIG = 2**53 + 1


def test_large_integers_are_compared_exactly(tmp_path):
    programs = write_program(tmp_path / "p.yaml", program_spec("shop", [
        {"name": "Purchase points", "condition": 'event.type == "purchase"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]}]))
    db = tmp_path / "l.duckdb"
    first = write_events(tmp_path / "a.parquet", [
        event("shop", "k1", "u1", "2025-01-01T00:00:00Z", {"type": "purchase", "order_id": BIG})])
    run_batch(programs, first, db)
    again = write_events(tmp_path / "b.parquet", [
        event("shop", "k1", "u1", "2025-01-01T00:00:00Z", {"type": "purchase", "order_id": BIG - 1}),
        event("shop", "k2", "u1", "2025-01-01T00:00:00Z", {"type": "purchase", "order_id": BIG})])
    report = run_batch(programs, again, db)
    assert (report.rejected, report.completed, report.duplicates) == (1, 1, 0)
    assert query(db, "SELECT reason FROM rejected_rows") == [("idempotency_conflict",)]
    stored = json.loads(query(db, "SELECT event_data FROM events WHERE idempotency_key = 'k1'")[0][0])
    assert stored["order_id"] == BIG  # as sent, not rounded through a double


def test_cel_sees_json_numbers_as_doubles(tmp_path):
    # `event.n / 2` is 2.5 for a double and 2 for an int: 50 points only if n arrives as a double
    programs = write_program(tmp_path / "p.yaml", program_spec("shop", [
        {"name": "Half", "condition": "event.n / 2 == 2.5",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "50"}]}]))
    db = tmp_path / "l.duckdb"
    run_batch(programs, write_events(tmp_path / "a.parquet", [
        event("shop", "k1", "u1", "2025-01-01T00:00:00Z", {"n": 5})]), db)
    assert query(db, "SELECT SUM(amount) FROM postings WHERE entity_type = 'PARTICIPANT'")[0][0] == 50
