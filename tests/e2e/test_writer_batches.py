"""The batch writer across two batches of the W1 program: each batch's counts of entries and
postings, and balances that add the second batch's postings to the first's (the writer sums a
batch's postings from its stage, not from the postings table, and counts two postings per entry)."""

from __future__ import annotations

from decimal import Decimal

from engine.workloads import W1
from tests.helpers.io import balances, event, query, run_json, write_events, write_program

P = "bench_w1"


def test_two_batches_counts_and_balances(tmp_path):
    programs = write_program(tmp_path / "programs" / "w1.yaml", W1.program())
    db = tmp_path / "ledger.duckdb"
    # 2025-03-05 is a Wednesday: no weekend bonus; no promo window applies in March.
    first = [
        event(P, "a", "m1", "2025-03-05T10:00:00Z", {"type": "purchase", "amount": 200.0, "category": "apparel"}),
        event(P, "b", "m1", "2025-03-05T11:00:00Z", {"type": "purchase", "amount": 10.4, "category": "electronics"}),
        event(P, "c", "m2", "2025-03-05T12:00:00Z", {"type": "review", "rating": 5}),
    ]
    second = [
        event(P, "d", "m1", "2025-03-06T10:00:00Z", {"type": "refund", "amount": 31.0}),
        event(P, "e", "m2", "2025-03-06T11:00:00Z", {"type": "purchase", "amount": 20.0, "category": "fuel"}),
    ]
    run_json(programs, write_events(tmp_path / "first.parquet", first), db)
    run_json(programs, write_events(tmp_path / "second.parquet", second), db)

    # first: a -> base points + big basket (2 entries), b -> electronics 3x only (stop), c -> good review
    # second: d -> refund clawback, e -> fuel half only (stop)
    entries = {1: 2 + 1 + 1, 2: 1 + 1}
    assert query(db, "SELECT id, entries_written, postings_written FROM batches ORDER BY id") == [
        (1, entries[1], 2 * entries[1]), (2, entries[2], 2 * entries[2])]
    stored = query(db, "SELECT e.batch_id, COUNT(*) FROM postings p JOIN journal_entries e ON p.journal_entry_id = e.id "
                       "GROUP BY ALL ORDER BY 1")
    assert stored == [(1, 2 * entries[1]), (2, 2 * entries[2])]

    m1 = Decimal(200) + 100 + round(Decimal("10.4") * 3) - 31   # 200 + 100 + 31 - 31
    m2 = Decimal(10) + round(Decimal(20) * Decimal("0.5"))       # 10 + 10
    assert balances(db) == {("m1", "PTS"): m1, ("m2", "PTS"): m2}
    issuance = query(db, "SELECT SUM(amount) FROM account_balances WHERE entity_type = 'SYSTEM_ISSUANCE'")[0][0]
    assert issuance == -(m1 + m2)


def test_an_unchanged_catalog_is_not_rewritten_and_a_changed_one_is(tmp_path):
    """A batch whose program files give the catalog rows the ledger already holds skips the
    catalog statements (the stored program document keeps the batch that stored it); a changed
    program is written; going back to the first version writes it again (the skip compares with
    what the ledger holds, not with any catalog seen before)."""
    spec = W1.program()
    programs = write_program(tmp_path / "programs" / "w1.yaml", spec)
    db = tmp_path / "ledger.duckdb"

    def run(day: int) -> None:
        rows = [event(P, f"k{day}", "m1", f"2025-03-0{day}T10:00:00Z", {"type": "review", "rating": 5})]
        run_json(programs, write_events(tmp_path / f"day{day}.parquet", rows), db)

    def stored() -> tuple:
        return (query(db, "SELECT name FROM programs")[0][0],
                query(db, "SELECT batch_id FROM program_documents")[0][0],
                query(db, "SELECT batch_id FROM catalog_fingerprint"))

    run(1)
    run(2)
    assert stored() == (spec["program"]["name"], 1, [(1,)])
    renamed = spec | {"program": spec["program"] | {"name": "Renamed W1"}}
    write_program(programs, renamed)
    run(3)
    assert stored() == ("Renamed W1", 3, [(3,)])
    write_program(programs, spec)
    run(4)
    assert stored() == (spec["program"]["name"], 4, [(4,)])
    # every batch still booked its event: 10 points per good review (W1's rule), 4 days
    assert balances(db) == {("m1", "PTS"): Decimal(40)}
