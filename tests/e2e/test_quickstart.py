"""The quickstart (seeds/quickstart.txt) in batch form, through the CLI in a subprocess.

Contract: semantics.md 2.1 (program files), 4 (idempotency), 12 (balances view), 13 (counts,
exit codes). Expected values come from the quickstart program: one purchase -> 10 PTS.
"""

from __future__ import annotations

import json
from decimal import Decimal

from tests.helpers.io import balances, cli, counts, event, query, run_json, write_events

QUICKSTART = {"type": "purchase", "amount": 49.99}
POINTS_PER_PURCHASE = Decimal(10)  # customer_loyalty.yaml: CREDIT 10 PTS per purchase


def _first(tmp_path):
    return write_events(tmp_path / "in" / "first.parquet", [
        event("customer_loyalty", "first-purchase-001", "user_123", "2025-11-01T12:00:00Z", QUICKSTART)])


def test_quickstart_gives_10_points(tmp_path, db_path, quickstart_programs):
    report = run_json(quickstart_programs, _first(tmp_path), db_path)
    assert (report["read"], report["completed"], report["failed"], report["duplicates"], report["rejected"]) == (1, 1, 0, 0, 0)
    assert balances(db_path) == {("user_123", "PTS"): POINTS_PER_PURCHASE}
    # One CREDIT entry with two postings: SYSTEM_ISSUANCE -10, participant +10.
    postings = query(db_path, "SELECT entity_type, amount FROM postings ORDER BY amount")
    assert [(t, Decimal(a)) for t, a in postings] == [("SYSTEM_ISSUANCE", -POINTS_PER_PURCHASE),
                                                     ("PARTICIPANT", POINTS_PER_PURCHASE)]
    assert query(db_path, "SELECT action_type FROM journal_entries") == [("CREDIT",)]
    assert query(db_path, "SELECT status, error_code FROM events") == [("COMPLETED", None)]


def test_balances_cli_json(tmp_path, db_path, quickstart_programs):
    run_json(quickstart_programs, _first(tmp_path), db_path)
    res = cli("balances", "--external-id", "user_123", "--json", "--db", str(db_path))
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["external_id"] == "user_123" and row["asset_symbol"] == "PTS"
    assert Decimal(row["available"]) == POINTS_PER_PURCHASE
    assert Decimal(row["held"]) == 0 and Decimal(row["deferred"]) == 0


def test_rerun_same_file_changes_nothing(tmp_path, db_path, quickstart_programs):
    first = _first(tmp_path)
    run_json(quickstart_programs, first, db_path)
    before_counts, before_bal = counts(db_path), balances(db_path)
    again = run_json(quickstart_programs, first, db_path)
    assert counts(db_path) == before_counts
    assert balances(db_path) == before_bal
    assert again["completed"] == 0 and again["failed"] == 0
    assert again["duplicates"] == 1
    assert again["read"] == again["completed"] + again["failed"] + again["duplicates"] + again["rejected"]


def test_same_rows_in_a_new_file_are_duplicates(tmp_path, db_path, quickstart_programs):
    """Same rows, different file bytes (another name, extra whitespace in the JSON, keys reordered):
    still duplicates, found by the idempotency key, not by the file fingerprint."""
    run_json(quickstart_programs, _first(tmp_path), db_path)
    before_counts, before_bal = counts(db_path), balances(db_path)
    same = write_events(tmp_path / "in2" / "copy.parquet", [
        event("customer_loyalty", "first-purchase-001", "user_123", "2025-11-01T12:00:00Z",
              '{ "amount" : 49.99,   "type": "purchase" }')])
    report = run_json(quickstart_programs, same, db_path)
    assert (report["read"], report["completed"], report["failed"], report["duplicates"], report["rejected"]) == (1, 0, 0, 1, 0)
    assert counts(db_path) == before_counts
    assert balances(db_path) == before_bal


def test_same_key_different_payload_is_conflict(tmp_path, db_path, quickstart_programs):
    run_json(quickstart_programs, _first(tmp_path), db_path)
    before_bal = balances(db_path)
    before = counts(db_path)
    other = write_events(tmp_path / "in2" / "conflict.parquet", [
        event("customer_loyalty", "first-purchase-001", "user_123", "2025-11-01T12:00:00Z",
              {"type": "purchase", "amount": 99.99})])
    report = run_json(quickstart_programs, other, db_path)
    assert (report["read"], report["completed"], report["duplicates"], report["rejected"]) == (1, 0, 0, 1)
    rej = query(db_path, "SELECT reason, source, row_number FROM rejected_rows")
    assert rej == [("idempotency_conflict", str(other), 1)]
    assert balances(db_path) == before_bal
    after = counts(db_path)
    assert {k: v for k, v in after.items() if k != "rejected_rows"} == {k: v for k, v in before.items() if k != "rejected_rows"}


def test_partly_overlapping_file(tmp_path, db_path, quickstart_programs):
    """Second file: 2 rows already committed, 3 new purchases (one for a new user) -> 2 duplicates,
    3 processed; balances follow 10 PTS per distinct purchase."""
    def purchase(key, user, hour):
        return event("customer_loyalty", key, user, f"2025-11-01T{hour:02d}:00:00Z", {"type": "purchase", "amount": 5})

    first_rows = [purchase("k1", "user_123", 1), purchase("k2", "user_123", 2), purchase("k3", "user_456", 3)]
    second_rows = [first_rows[0], first_rows[2], purchase("k4", "user_123", 4),
                   purchase("k5", "user_789", 5), purchase("k6", "user_456", 6)]
    run_json(quickstart_programs, write_events(tmp_path / "a" / "one.parquet", first_rows), db_path)
    report = run_json(quickstart_programs, write_events(tmp_path / "b" / "two.parquet", second_rows), db_path)
    assert (report["read"], report["completed"], report["failed"], report["duplicates"], report["rejected"]) == (5, 3, 0, 2, 0)

    distinct = {r["idempotency_key"]: r["external_id"] for r in first_rows + second_rows}
    expected: dict = {}
    for user in distinct.values():
        expected[(user, "PTS")] = expected.get((user, "PTS"), Decimal(0)) + POINTS_PER_PURCHASE
    assert balances(db_path) == expected
    c = counts(db_path)
    assert c["events"] == len(distinct) and c["journal_entries"] == len(distinct) and c["postings"] == 2 * len(distinct)


def test_duplicates_within_one_file(tmp_path, db_path, quickstart_programs):
    row = event("customer_loyalty", "dup-1", "user_123", "2025-11-01T12:00:00Z", QUICKSTART)
    conflict = event("customer_loyalty", "dup-1", "user_123", "2025-11-01T12:00:00Z", {"type": "purchase", "amount": 1})
    f = write_events(tmp_path / "in" / "dups.parquet", [row, row, conflict])
    report = run_json(quickstart_programs, f, db_path)
    assert (report["read"], report["completed"], report["duplicates"], report["rejected"]) == (3, 1, 1, 1)
    assert query(db_path, "SELECT reason, row_number FROM rejected_rows") == [("idempotency_conflict", 3)]
    assert balances(db_path) == {("user_123", "PTS"): POINTS_PER_PURCHASE}
