"""event_timestamp finer than a microsecond (docs/decisions.md, "Time"): the ledger's clock
resolution is 1 us (DuckDB TIMESTAMPTZ); input instants are floored to the microsecond when read,
from RFC 3339 text and from Parquet timestamp[ns] alike, and everything after (stream order,
`now`, the idempotency payload comparison) uses the floored instant. Real CLI runs into real
DuckDB files; expected values reasoned from that rule."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa

from tests.helpers.io import balances, program_spec, query, run_json, write_events, write_program

# each `visit` is paid its place in the participant's stream: 1 for the first, 2 for the second ...
RULES = [{"name": "Pay place", "key": "pay", "order": 10, "condition": 'event.type == "visit"',
          "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "get(participant.counters, 'n', 0.0) + 1"},
                      {"type": "COUNTER", "key": "n", "value": "1"}]}]
VISIT = '{"type": "visit"}'
NS_SCHEMA = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                       ("event_timestamp", pa.timestamp("ns", tz="UTC")), ("event_data", pa.string())])


def _programs(tmp_path):
    return write_program(tmp_path / "programs" / "shop.yaml", program_spec("shop", RULES))


def _row(key: str, who: str, when: str) -> dict:
    return {"program_id": "shop", "idempotency_key": key, "external_id": who, "event_timestamp": when,
            "event_data": VISIT}


def _paid(db) -> dict[str, Decimal]:
    rows = query(db, "SELECT e.idempotency_key, MAX(p.amount) FROM journal_entries j JOIN events e ON e.id = j.event_id "
                     "JOIN postings p ON p.journal_entry_id = j.id GROUP BY ALL")
    return {k: Decimal(a) for k, a in rows}


def test_instants_in_one_microsecond_are_one_instant_ordered_by_arrival(tmp_path):
    # in the file: c (1.000001 s), a (0.000000900), b (0.000000100). Floored: a and b are both at
    # .000000, so they go in arrival order (a, then b) although b is 800 ns earlier; c is 1 us later
    rows = [_row("c", "u", "2025-03-01T10:00:00.000001000Z"), _row("a", "u", "2025-03-01T10:00:00.000000900Z"),
            _row("b", "u", "2025-03-01T10:00:00.000000100Z")]
    db = tmp_path / "w.duckdb"
    report = run_json(_programs(tmp_path), write_events(tmp_path / "e.parquet", rows), db)
    assert (report["completed"], report["rejected"]) == (3, 0)
    assert _paid(db) == {"a": Decimal(1), "b": Decimal(2), "c": Decimal(3)}
    stored = dict(query(db, "SELECT idempotency_key, epoch_us(event_timestamp) - epoch_us(TIMESTAMPTZ "
                            "'2025-03-01 10:00:00+00') FROM events"))
    assert stored == {"a": 0, "b": 0, "c": 1}


def test_a_key_sent_again_with_a_timestamp_differing_below_a_microsecond_is_a_duplicate(tmp_path):
    programs, db = _programs(tmp_path), tmp_path / "w.duckdb"
    first = [_row("k1", "u", "2025-03-01T10:00:00.123456100Z"), _row("k2", "u", "2025-03-01T10:00:01Z")]
    run_json(programs, write_events(tmp_path / "1.parquet", first), db)
    # the same instants to the microsecond, written with other digits below it, in another batch
    # and as Parquet timestamp[ns]; k2 then differs by 1 us: another payload, a conflict
    t = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)
    again = [{"program_id": "shop", "idempotency_key": "k1", "external_id": "u", "event_data": VISIT,
              "event_timestamp": pa.scalar(int(t.timestamp()) * 10**9 + 123456999, pa.timestamp("ns", tz="UTC"))},
             {"program_id": "shop", "idempotency_key": "k2", "external_id": "u", "event_data": VISIT,
              "event_timestamp": pa.scalar(int(t.timestamp()) * 10**9 + 1_000_001_000, pa.timestamp("ns", tz="UTC"))}]
    report = run_json(programs, write_events(tmp_path / "2.parquet", again, schema=NS_SCHEMA), db)
    assert (report["duplicates"], report["rejected"], report["completed"]) == (1, 1, 0)
    assert query(db, "SELECT reason FROM rejected_rows") == [("idempotency_conflict",)]
    # and within one batch: the first row wins, the second is its duplicate
    same = [_row("k3", "v", "2025-03-02T00:00:00.000000001Z"), _row("k3", "v", "2025-03-02T00:00:00.000000999Z")]
    report = run_json(programs, write_events(tmp_path / "3.parquet", same), db)
    assert (report["completed"], report["duplicates"], report["rejected"]) == (1, 1, 0)


def test_text_and_parquet_nanoseconds_floor_alike_before_1970_too(tmp_path):
    # -500 ns from the epoch is 23:59:59.9999995 on 31 Dec 1969: both readings floor it to
    # .999999 (toward the past, not toward zero), so the second row is the first one's duplicate
    programs, db = _programs(tmp_path), tmp_path / "w.duckdb"
    run_json(programs, write_events(tmp_path / "1.parquet", [_row("old", "u", "1969-12-31T23:59:59.9999995Z")]), db)
    row = {"program_id": "shop", "idempotency_key": "old", "external_id": "u", "event_data": VISIT,
           "event_timestamp": pa.scalar(-500, pa.timestamp("ns", tz="UTC"))}
    report = run_json(programs, write_events(tmp_path / "2.parquet", [row], schema=NS_SCHEMA), db)
    assert (report["duplicates"], report["rejected"]) == (1, 0)
    assert query(db, "SELECT epoch_us(event_timestamp) FROM events") == [(-1,)]
    assert balances(db) == {("u", "PTS"): Decimal(1)}
