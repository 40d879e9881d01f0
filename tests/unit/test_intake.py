"""Intake: idempotency with canonical payload comparison (semantics.md 4), stream order
(semantics.md 3), participants and recipients (semantics.md 5.1, 7)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from engine.intake import canonical
from engine.run import run_batch
from tests.helpers.io import event, program_spec, query, write_events, write_program


@pytest.mark.parametrize("a,b", [
    ('{"a": 1, "b": "x"}', '{"b":"x","a":1}'),                    # key order, whitespace
    ('{"a": 1}', '{"a": 1.0}'),                                     # numbers by value
    ('{"a": 1e2}', '{"a": 100}'),
    ('{"a": 0.5}', '{"a": 0.50}'),
    ('{"a": 1, "b": null}', '{"a": 1}'),                            # null = absent
    ('{"n": {"x": 1, "y": null}}', '{"n": {"x": 1.0}}'),           # ... at any depth
    ('{"l": [1, 2.0]}', '{"l": [1.0, 2]}'),
])
def test_canonical_equal(a, b):
    assert canonical(a) == canonical(b)


@pytest.mark.parametrize("a,b", [
    ('{"a": 1}', '{"a": 2}'),
    ('{"a": 1}', '{"a": "1"}'),                                     # a string is not a number
    ('{"a": true}', '{"a": 1}'),                                    # a bool is not a number
    ('{"l": [1, 2]}', '{"l": [2, 1]}'),                            # list order matters
    ('{"a": 1}', '{"a": 1, "b": 0}'),
    ('{"a": 0.1}', '{"a": 0.10000000000000001}') if False else ('{"a": 0.1}', '{"a": 0.2}'),
    ('{"n": {"x": 1}}', '{"n": {"x": 1, "y": false}}'),
])
def test_canonical_different(a, b):
    assert canonical(a) != canonical(b)


# ---------------------------------------------------------------------------------------------
# Through runs: a second batch re-sending rows in a different textual form

RULES = [{"name": "Purchase", "key": "purchase", "condition": 'event.type == "purchase"',
          "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
         {"name": "Redeem", "key": "redeem", "condition": 'event.type == "redeem"',
          "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "event.points"}]}]


@pytest.fixture
def progs(tmp_path):
    return write_program(tmp_path / "p" / "shop.yaml", program_spec("shop", RULES))


def bal(db) -> dict:
    return {e: Decimal(a) for e, a in query(db, "SELECT external_id, available FROM balances "
                                                "WHERE entity_type = 'PARTICIPANT'")}


ORIGINAL = event("shop", "k1", "alice", "2025-11-01T12:00:00Z",
                 '{"type": "purchase", "amount": 1, "meta": {"store": 7}}')


@pytest.mark.parametrize("resent,is_duplicate", [
    (ORIGINAL, True),
    ({**ORIGINAL, "event_data": '{"meta":{"store":7.0},"amount":1.0,"type":"purchase","coupon":null}'}, True),
    ({**ORIGINAL, "event_timestamp": "2025-11-01T14:00:00+02:00"}, True),   # the same instant
    ({**ORIGINAL, "event_data": '{"type": "purchase", "amount": 2, "meta": {"store": 7}}'}, False),
    ({**ORIGINAL, "event_data": '{"type": "purchase", "amount": 1}'}, False),
    ({**ORIGINAL, "event_timestamp": "2025-11-01T12:00:01Z"}, False),
    ({**ORIGINAL, "external_id": "bob"}, False),
    ({**ORIGINAL, "recipient_external_id": "bob"}, False),
], ids=["identical", "reordered-1.0-null", "same-instant", "other-amount", "field-dropped", "other-time",
        "other-participant", "added-recipient"])
def test_resent_rows(tmp_path, progs, resent, is_duplicate):
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e1" / "a.parquet", [ORIGINAL]), db)
    before = bal(db)
    rep = run_batch(progs, write_events(tmp_path / "e2" / "b.parquet", [resent],), db)
    assert rep.read == 1 and rep.completed == 0 and rep.failed == 0
    assert (rep.duplicates, rep.rejected) == ((1, 0) if is_duplicate else (0, 1))
    assert bal(db) == before
    assert query(db, "SELECT COUNT(*) FROM events") == [(1,)]
    reasons = [r for (r,) in query(db, "SELECT reason FROM rejected_rows")]
    assert reasons == ([] if is_duplicate else ["idempotency_conflict"])
    # and the same pair inside one batch behaves the same way
    db2 = tmp_path / "one.duckdb"
    rep = run_batch(progs, write_events(tmp_path / "e3" / "c.parquet", [ORIGINAL, resent]), db2)
    assert (rep.completed, rep.duplicates, rep.rejected) == ((1, 1, 0) if is_duplicate else (1, 0, 1))


def test_struct_and_json_payloads_compare_canonically(tmp_path, progs):
    """The same event sent first as JSON text and then as a Parquet struct is a duplicate."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tests.helpers.io import ts
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e1" / "a.parquet", [
        event("shop", "k1", "alice", "2025-11-01T12:00:00Z", {"type": "purchase", "amount": 1})]), db)
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")),
                        ("event_data", pa.struct([("amount", pa.int64()), ("type", pa.string()), ("extra", pa.string())]))])
    f = tmp_path / "e2" / "b.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([{"program_id": "shop", "idempotency_key": "k1", "external_id": "alice",
                                          "event_timestamp": ts("2025-11-01T12:00:00"),
                                          "event_data": {"amount": 1, "type": "purchase", "extra": None}}],
                                        schema=schema), f)
    rep = run_batch(progs, f, db)
    assert (rep.duplicates, rep.rejected) == (1, 0)


def test_key_is_unique_per_program(tmp_path):
    write_program(tmp_path / "p" / "a.yaml", program_spec("alpha", RULES))
    write_program(tmp_path / "p" / "b.yaml", program_spec("beta", RULES))
    db = tmp_path / "l.duckdb"
    rep = run_batch(tmp_path / "p", write_events(tmp_path / "e" / "x.parquet", [
        event("alpha", "same", "alice", "2025-11-01T00:00:00Z", {"type": "purchase"}),
        event("beta", "same", "alice", "2025-11-01T00:00:00Z", {"type": "purchase", "other": 1}),
    ]), db)
    assert (rep.completed, rep.duplicates, rep.rejected) == (2, 0, 0)
    assert bal(db) == {"alice": Decimal(20)}


def test_program_referenced_by_id(tmp_path, progs):
    from engine.catalog import load_catalog
    pid = str(load_catalog(progs).programs["shop"].id)
    db = tmp_path / "l.duckdb"
    rep = run_batch(progs, write_events(tmp_path / "e" / "x.parquet", [
        event("shop", "k1", "alice", "2025-11-01T00:00:00Z", {"type": "purchase"}),
        event(pid, "k1", "alice", "2025-11-01T00:00:00Z", {"type": "purchase"}),  # same program, by id
    ]), db)
    assert (rep.completed, rep.duplicates) == (1, 1)


def test_stream_order_is_timestamp_then_arrival(tmp_path, progs):
    """A redeem that arrives first but happened after the purchase succeeds (timestamp order);
    with equal timestamps, arrival decides."""
    db = tmp_path / "l.duckdb"
    rows = [
        event("shop", "r1", "alice", "2025-11-01T10:00:00Z", {"type": "redeem", "points": 10}),
        event("shop", "p1", "alice", "2025-11-01T09:00:00Z", {"type": "purchase"}),
        event("shop", "r2", "bob", "2025-11-01T09:00:00Z", {"type": "redeem", "points": 10}),   # before bob's purchase
        event("shop", "p2", "bob", "2025-11-01T09:00:00Z", {"type": "purchase"}),
    ]
    run_batch(progs, write_events(tmp_path / "e" / "x.parquet", rows), db)
    assert dict(query(db, "SELECT idempotency_key, status FROM events")) == {
        "r1": "COMPLETED", "p1": "COMPLETED", "r2": "FAILED", "p2": "COMPLETED"}
    assert bal(db) == {"alice": Decimal(0), "bob": Decimal(10)}
    # journal order follows the stream order
    keys = [k for (k,) in query(db, "SELECT e.idempotency_key FROM journal_entries j JOIN events e ON e.id = j.event_id "
                                    "ORDER BY j.seq")]
    assert keys == ["p2", "p1", "r1"] or keys == ["p1", "p2", "r1"]
    assert keys.index("p1") < keys.index("r1")


def test_later_batch_with_earlier_timestamp_is_processed_after(tmp_path, progs):
    """History is never rewritten: a late-arriving earlier event is applied on top of the state."""
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e1" / "a.parquet", [
        event("shop", "p1", "alice", "2025-11-05T00:00:00Z", {"type": "purchase"})]), db)
    run_batch(progs, write_events(tmp_path / "e2" / "b.parquet", [
        event("shop", "r0", "alice", "2025-11-01T00:00:00Z", {"type": "redeem", "points": 4})]), db)
    assert bal(db) == {"alice": Decimal(6)}
    assert query(db, "SELECT effective_at FROM journal_entries ORDER BY seq DESC LIMIT 1")[0][0].isoformat().startswith(
        "2025-11-01")


def test_recipient_receives_and_is_created(tmp_path, progs):
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e" / "x.parquet", [
        event("shop", "g1", "alice", "2025-11-01T00:00:00Z", {"type": "purchase"}, recipient_external_id="carol"),
    ]), db)
    assert bal(db) == {"carol": Decimal(10)}
    assert sorted(e for (e,) in query(db, "SELECT external_id FROM participants")) == ["alice", "carol"]


def test_reject_unknown_participants(tmp_path):
    progs = write_program(tmp_path / "p" / "shop.yaml", program_spec("shop", RULES, on_unknown_participant="REJECT"))
    db = tmp_path / "l.duckdb"
    rep = run_batch(progs, write_events(tmp_path / "e" / "x.parquet", [
        event("shop", "k1", "stranger", "2025-11-01T00:00:00Z", {"type": "purchase"})]), db)
    assert (rep.completed, rep.failed) == (0, 1)
    assert query(db, "SELECT status, error_code FROM events") == [("FAILED", "participant_not_found")]
    assert query(db, "SELECT COUNT(*) FROM participants") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM postings") == [(0,)]


def test_participant_ids_deterministic(tmp_path, progs):
    rows = [event("shop", "k1", "alice", "2025-11-01T00:00:00Z", {"type": "purchase"})]
    ids = []
    for name in ("a", "b"):
        db = tmp_path / f"{name}.duckdb"
        run_batch(progs, write_events(tmp_path / name / "x.parquet", rows), db)
        ids.append(query(db, "SELECT p.id, e.id, j.id FROM participants p, events e, journal_entries j"))
    assert ids[0] == ids[1]


def test_only_a_program_event_of_maintenance_may_name_no_participant(tmp_path):
    """A scope program automation's firing names no participant (docs/decisions.md, "Automations"):
    intake takes it among the SYSTEM rows of `perkflow maintain`; the same row as input is not
    (read: missing_required_field; handed to intake: its participant is not found)."""
    from datetime import datetime, timezone

    import duckdb

    from engine import automations
    from engine.catalog import load_catalog
    from engine.intake import intake

    spec = program_spec("shop", RULES, on_unknown_participant="REJECT") | {"automations": [
        {"name": "Weekly", "event_name": "weekly", "scope": "program",
         "trigger": {"type": "cron", "cron_expression": "0 0 * * 1"}}]}
    progs = write_program(tmp_path / "p" / "shop.yaml", spec)
    db = tmp_path / "l.duckdb"
    rep = run_batch(progs, write_events(tmp_path / "e" / "x.parquet", [
        event("shop", "k1", None, "2025-11-01T00:00:00Z", {"type": "purchase"})]), db)
    assert rep.rejected == 1
    assert query(db, "SELECT reason FROM rejected_rows") == [("missing_required_field",)]
    catalog = load_catalog(progs)
    program = catalog.programs["shop"]
    firing = automations.Firing(datetime(2025, 11, 3, tzinfo=timezone.utc), program, program.automations["weekly"])
    con = duckdb.connect(str(db))
    try:
        rows = automations.rows_at(con, catalog, [firing], 0)
        assert rows["external_id"].to_list() == [None] and rows["participant_id"].to_list() == [None]
        assert rows["idempotency_key"].to_list() == ["system:automation:weekly:program:2025-11-03T00:00:00Z"]
        taken = intake(rows, catalog, con, system=True)
        assert taken.events.select("subject_id", "pre_code").rows() == [(None, None)]
        assert len(taken.enrollments) == 0 and len(taken.participants) == 0
        as_input = intake(rows.with_columns(idempotency_key=rows["idempotency_key"].str.replace("system:", "x:")),
                          catalog, con)
        assert as_input.events["pre_code"].to_list() == ["participant_not_found"]
    finally:
        con.close()
