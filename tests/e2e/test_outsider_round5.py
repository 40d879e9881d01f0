"""An outsider's scenario tests, round 5: time, batches and shards, black box. Expectations come
from semantics.md (sections 1.5, 3, 4, 6, 10) and docs/decisions.md alone, computed by hand;
every test runs the real CLI (`perkflow run / maintain / replay / verify`) on Parquet files into
a real DuckDB file. Found and fixed (each test says what perkflow did before):

- Sharding participants (semantics.md 1.5): a stream split by participant into two files run as
  two `perkflow run`s (the second holding events older than the first's) must give one batch's
  entries (ids, amounts, instants, hashes), balances, lots, state, tiers and SYSTEM events. Entry
  hashes covered `seq` (a shard's entries come together), so every hash differed; and the older
  shard's SYSTEM events due before the ledger's clock waited in `scheduled_events`.
- A late event (semantics.md 3) moved an ACTIVITY_REFRESH window back to its own instant, so the
  review came early and dropped the member.
- Idempotency across batches (semantics.md 4): an operation re-sent with its amount written
  another way (`"10"` / `10` / `"10.0"`) and a struct timestamp re-sent in another zone were
  `idempotency_conflict`s, not DUPLICATEs.

Pinned (they held): time-driven changes due at exactly a later batch's event or reached by
`maintain --as-of` first; rows older than a maintenance run; `replay` against late and sharded
ledgers; events re-sent written differently.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.io import cli, event, query, write_events, write_program

PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
LP = {"symbol": "LP", "name": "Lot points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}


def _program(rules: list[dict], **extra) -> dict:
    return {"program": {"key": "p", "name": "P", "on_unknown_participant": "CREATE", "status": "ACTIVE"},
            "assets": [PTS, LP], "rules": rules, **extra}


def _rows(rows: list[tuple]) -> list[dict]:
    """(key, external id, RFC 3339 instant, event_data) -> event rows of program p."""
    return [event("p", k, u, t, data) for k, u, t, data in rows]


def _ok(res) -> None:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"


def _batches(tmp: Path, name: str, spec: dict, batches: list) -> Path:
    """Each item of `batches` is a list of rows (one `perkflow run`) or an instant (one `perkflow
    maintain --as-of`), in order, into tmp/<name>.duckdb."""
    programs = write_program(tmp / name / "programs" / "p.yaml", spec).parent
    db = tmp / f"{name}.duckdb"
    for i, batch in enumerate(batches):
        if isinstance(batch, str):
            _ok(cli("maintain", "--as-of", batch, "--programs", str(programs), "--db", str(db)))
        else:
            events = write_events(tmp / name / f"b{i}.parquet", _rows(batch))
            _ok(cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db)))
    return db


def _status(db: Path) -> dict[str, tuple]:
    return {k: (s, c) for k, s, c in query(db, "SELECT idempotency_key, status, error_code FROM events")}


def _entries(db: Path) -> list[tuple]:
    """(type, effective_at as text, {account: amount}) in ledger order."""
    out = []
    for jid, typ, at in query(db, "SELECT id, action_type, strftime(effective_at, '%Y-%m-%dT%H:%M:%SZ') "
                                  "FROM journal_entries ORDER BY seq"):
        legs = {f"{t}:{b}": Decimal(a) for t, b, a in query(
            db, "SELECT entity_type, bucket, amount FROM postings WHERE journal_entry_id = ?", [jid])}
        out.append((typ, at, legs))
    return out


def _available(db: Path) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    return {(e, s): (Decimal(a), Decimal(d)) for e, s, a, d in query(
        db, "SELECT external_id, asset_symbol, available, deferred FROM balances WHERE entity_type = 'PARTICIPANT'")}


# ---------------------------------------------------------------------------------------------
# Sharding participants across runs (semantics.md 1.5)
# ---------------------------------------------------------------------------------------------

SHARD_SPEC = _program([
    {"name": "buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"', "actions": [
        {"type": "CREDIT", "asset": "PTS", "amount": "event.amount"},
        {"type": "CREDIT", "asset": "LP", "amount": 10, "expires_at": "48h"},
        {"type": "COUNTER", "key": "visits", "value": 1, "reset_after": "72h"},
        {"type": "COUNTER", "key": "spend", "value": "event.amount"},
        {"type": "TAG", "tag": "buyer"},
        {"type": "SCHEDULE_EVENT", "event_name": "thanks", "delay": "24h"}]},
    {"name": "thanks", "key": "thanks", "order": 20, "condition": 'event.type == "thanks"', "actions": [
        {"type": "CREDIT", "asset": "PTS", "amount": 1}]},
    {"name": "use", "key": "use", "order": 30, "condition": 'event.type == "use"', "actions": [
        {"type": "DEBIT", "asset": "LP", "amount": 5}]},
], tiers=[{"key": "club", "name": "Club", "levels": [
    {"key": "silver", "rank": 1, "qualification": {"mode": "ALL", "criteria": [
        {"counter": "spend", "operator": ">=", "threshold": 100}]}}]}])

# a's events are days 3-5, b's days 1-3: the second shard (b) is older than the first (a)
SHARD_A = [("a1", "a", "2025-03-03T09:00:00Z", {"type": "buy", "amount": 60}),
           ("a2", "a", "2025-03-04T09:00:00Z", {"type": "use"}),
           ("a3", "a", "2025-03-05T09:00:00Z", {"type": "buy", "amount": 50}),
           ("a4", "a", "2025-03-05T10:00:00Z", {"type": "use"})]
SHARD_B = [("b1", "b", "2025-03-01T08:00:00Z", {"type": "buy", "amount": 120}),
           ("b2", "b", "2025-03-03T08:00:00Z", {"type": "use"}),
           ("b3", "b", "2025-03-03T09:30:00Z", {"type": "buy", "amount": 5})]


def _shard_view(db: Path) -> dict[str, list]:
    """Everything semantics.md 1.5 calls the ledger that does not depend on how rows were grouped
    into batches: entries (not their seq: a ledger lists a batch's entries together), postings,
    balances, events, lots, state, tiers, tier history and waiting SYSTEM events."""
    q = {
        "entries": "SELECT id, program_id, event_id, rule_id, rule_version, action_index, action_type, "
                   "description, effective_at, entry_hash FROM journal_entries",
        "postings": "SELECT id, journal_entry_id, entity_type, entity_id, asset_id, bucket, amount FROM postings",
        "balances": "SELECT external_id, asset_symbol, available, held, deferred FROM balances",
        "events": "SELECT id, idempotency_key, event_timestamp, status, error_code FROM events",
        "lots": "SELECT * EXCLUDE (batch_id) FROM lots",
        "state": "SELECT * EXCLUDE (batch_id) FROM entity_state",
        "tiers": "SELECT * EXCLUDE (batch_id) FROM participant_tiers",
        "tier_history": "SELECT * EXCLUDE (batch_id, seq) FROM tier_history",
        "waiting": "SELECT idempotency_key, participant_id, event_timestamp, event_data FROM scheduled_events",
    }
    return {k: sorted(map(str, query(db, sql))) for k, sql in q.items()}


def test_participant_shards_give_one_batchs_entries_and_hashes(tmp_path):
    """semantics.md 1.5: "Sharding participants across N workers gives the same ledger." The rules
    touch only the event's own participant (SIMPLE and LOT credits, a LOT debit, counters with
    reset_after, a tag, a tier by auto-qualification, a SCHEDULE_EVENT), so each shard holds all
    that its participants' results depend on. Run as shard a then shard b (older), or b then a,
    the ledger equals one batch's: entry ids, amounts, instants and hashes included."""
    one = _batches(tmp_path, "one", SHARD_SPEC, [sorted(SHARD_A + SHARD_B, key=lambda r: r[2])])
    ab = _batches(tmp_path, "ab", SHARD_SPEC, [SHARD_A, SHARD_B])
    ba = _batches(tmp_path, "ba", SHARD_SPEC, [SHARD_B, SHARD_A])

    # by hand, for one batch. a: buy 60 (LP lot 10 to 03-05 09:00), thanks 03-04 09:00 (+1),
    # use 5 LP at 03-04 (5 left), the lot expires at 03-05 09:00 before a3 (EXPIRATION of 5),
    # a3 buys 50 (new lot 10; spend 110 -> silver), use 5 at 10:00 (5 left); a3's thanks is due
    # 03-06 09:00, after the stream: waiting. PTS 60 + 1 + 50 = 111.
    # b: buy 120 (lot to 03-03 08:00; silver), thanks 03-02 08:00 (+1), b2 at exactly 03-03 08:00:
    # the lot expired at that instant first (EXPIRATION 10), so the debit fails; b3 buys 5 (lot
    # 10), its thanks waits (03-04 09:30 is after b's last row, not after the stream: a's rows
    # reach it, so it is processed in one batch). PTS 120 + 1 + 5 + 1 = 127.
    for db in (one, ab, ba):
        assert _status(db)["b2"] == ("FAILED", "insufficient_balance")
        got = _available(db)
        assert got[("a", "PTS")][0] == 111 and got[("a", "LP")][0] == 5
        assert got[("b", "PTS")][0] == 127 and got[("b", "LP")][0] == 10
        expirations = sorted(query(db, "SELECT strftime(effective_at, '%m-%d %H:%M') FROM journal_entries "
                                       "WHERE action_type = 'EXPIRATION'"))
        assert expirations == [("03-03 08:00",), ("03-05 09:00",)]
        assert sorted(query(db, "SELECT p.external_id, t.level FROM participant_tiers t "
                                "JOIN participants p ON p.id = t.participant_id")) == [("a", "silver"), ("b", "silver")]
    assert _shard_view(ab) == _shard_view(one)
    assert _shard_view(ba) == _shard_view(one)
    for db in (one, ab, ba):
        res = cli("verify", "--db", str(db))
        assert res.returncode == 0, res.stdout + res.stderr


FOLLOW_UP_SPEC = _program([
    {"name": "buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"', "actions": [
        {"type": "SCHEDULE_EVENT", "event_name": "thanks", "delay": "24h"}]},
    {"name": "thanks", "key": "thanks", "order": 20, "condition": 'event.type == "thanks"', "actions": [
        {"type": "COUNTER", "key": "thanked", "value": 1}]},
    {"name": "check", "key": "check", "order": 30,
     "condition": 'event.type == "check" && get(participant.counters, "thanked", 0.0) == 0.0', "actions": [
         {"type": "CREDIT", "asset": "PTS", "amount": 7}]}])


def test_a_shard_of_older_rows_processes_its_system_events_in_their_place_in_every_chunk(tmp_path):
    """semantics.md 1.5 and 3: b's "thanks" is due 03-02 08:00, after b's rows of 03-01 and before
    b4 (03-02 09:00), so b2 and b3 see no thanks (7 each) and b4 sees it (nothing). Run after a's
    shard (03-05), in chunks of 2 rows (--chunk-rows), the ledger's clock is past the due instant
    all along, yet the SYSTEM event must still come after b3, in chunk 2, as in one batch."""
    a = [("a1", "a", "2025-03-05T09:00:00Z", {"type": "check"})]
    b = [("b1", "b", "2025-03-01T08:00:00Z", {"type": "buy"}), ("b2", "b", "2025-03-01T09:00:00Z", {"type": "check"}),
         ("b3", "b", "2025-03-01T20:00:00Z", {"type": "check"}), ("b4", "b", "2025-03-02T09:00:00Z", {"type": "check"})]
    programs = write_program(tmp_path / "programs" / "p.yaml", FOLLOW_UP_SPEC).parent
    db = tmp_path / "ab.duckdb"
    for i, (rows, extra) in enumerate(((a, []), (b, ["--chunk-rows", "2"]))):
        events = write_events(tmp_path / f"s{i}.parquet", _rows(rows))
        _ok(cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db), *extra))
    credited = sorted(k for (k,) in query(db, "SELECT e.idempotency_key FROM journal_entries j "
                                              "JOIN events e ON e.id = j.event_id"))
    assert credited == ["a1", "b2", "b3"]
    assert query(db, "SELECT count(*) FROM scheduled_events") == [(0,)]


def test_a_shard_of_older_rows_run_last_leaves_no_system_event_waiting_that_one_batch_processed(tmp_path):
    """The shard of b (03-01) run after a's (03-05): b's "thanks" due 03-02 08:00 is behind the
    ledger's clock (03-05 09:00), so the run processes it, as one batch of both shards does,
    rather than leaving it in `scheduled_events` for a later batch."""
    a = [("a1", "a", "2025-03-05T09:00:00Z", {"type": "check"})]
    b = [("b1", "b", "2025-03-01T08:00:00Z", {"type": "buy"})]
    db = _batches(tmp_path, "ab", FOLLOW_UP_SPEC, [a, b])
    assert query(db, "SELECT count(*) FROM scheduled_events") == [(0,)]
    assert query(db, "SELECT idempotency_key LIKE 'system:schedule:%', strftime(event_timestamp, '%m-%d %H:%M'), "
                     "status FROM events WHERE batch_id = 2 ORDER BY arrival_seq") == [
        (False, "03-01 08:00", "COMPLETED"), (True, "03-02 08:00", "COMPLETED")]
    assert query(db, "SELECT number_value FROM entity_state WHERE key = 'thanked'") == [(Decimal(1),)]


# ---------------------------------------------------------------------------------------------
# Idempotency across batches (semantics.md 4)
# ---------------------------------------------------------------------------------------------

def test_an_event_re_sent_in_a_later_batch_written_differently_is_a_duplicate(tmp_path):
    """semantics.md 4: the same key with the same canonical payload (participant, timestamp,
    event_data, recipient; key order and whitespace ignored, numbers compared by value) is a
    DUPLICATE, whichever batch it comes in; a different payload is `idempotency_conflict`.
    Batch 1 sends JSON text and RFC 3339 text; batch 2 the same events as a Parquet timestamp in
    another offset, keys reordered, 1 as 1.0; batch 3 a struct event_data with null fields."""
    programs = write_program(tmp_path / "programs" / "p.yaml", _program([
        {"name": "any", "key": "any", "order": 10, "condition": "true", "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": 1}]}])).parent
    db = tmp_path / "l.duckdb"

    def run(path: Path) -> dict:
        res = cli("run", "--programs", str(programs), "--events", str(path), "--db", str(db), "--json")
        _ok(res)
        return json.loads(res.stdout.strip().splitlines()[-1])

    first = run(write_events(tmp_path / "b1.parquet", [
        event("p", "k1", "u1", "2025-03-01T10:00:00Z", '{"a": 1, "b": {"x": 2, "y": [1, 2]}}'),
        event("p", "k2", "u1", "2025-03-01T11:00:00+02:00", '{"n": 1.5}'),
        event("p", "k3", "u1", "2025-03-01T12:00:00Z", '{"n": 1}'),
        event("p", "k4", "u1", "2025-03-01T12:00:00Z", '{"s": "x"}')]))
    assert (first["completed"], first["duplicates"], first["rejected"]) == (4, 0, 0)

    plus1, minus5 = timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))
    again = [("k1", datetime(2025, 3, 1, 11, 0, tzinfo=plus1), '{"b": {"y": [1.0, 2], "x": 2.0}, "a": 1.0}'),
             ("k2", datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc), '{ "n" : 1.50 }'),
             ("k3", datetime(2025, 3, 1, 7, 0, tzinfo=minus5), '{"n": 1.0}'),
             ("k4", datetime(2025, 3, 1, 12, 0, 1, tzinfo=timezone.utc), '{"s": "x"}')]  # one second later
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")), ("event_data", pa.string())])
    pq.write_table(pa.Table.from_pylist([
        {"program_id": "p", "idempotency_key": k, "external_id": "u1", "event_timestamp": t, "event_data": d}
        for k, t, d in again], schema=schema), tmp_path / "b2.parquet")
    second = run(tmp_path / "b2.parquet")
    assert (second["completed"], second["duplicates"], second["rejected"]) == (0, 3, 1)

    pq.write_table(pa.Table.from_pylist([
        {"program_id": "p", "idempotency_key": "k1", "external_id": "u1", "event_timestamp": "2025-03-01T10:00:00Z",
         "event_data": {"b": {"x": 2, "y": [1, 2]}, "a": 1, "c": None}},
        {"program_id": "p", "idempotency_key": "k3", "external_id": "u1", "event_timestamp": "2025-03-01T12:00:00Z",
         "event_data": {"b": None, "a": None, "n": 1}}]), tmp_path / "b3.parquet")
    third = run(tmp_path / "b3.parquet")
    assert (third["completed"], third["duplicates"], third["rejected"]) == (0, 2, 0)
    assert query(db, "SELECT idempotency_key, reason FROM rejected_rows r JOIN (SELECT 'k4' AS idempotency_key) "
                     "ON r.raw LIKE '%k4%'") == [("k4", "idempotency_conflict")]
    assert query(db, "SELECT count(*), sum(amount) FROM postings WHERE entity_type = 'PARTICIPANT'") == [(4, 4)]


def test_an_operation_re_sent_with_its_numbers_written_differently_is_a_duplicate(tmp_path):
    """semantics.md 4: operations follow "the same rule" as events: numbers compared by value. An
    operation's numeric params (`amount`, `quantity`, a transfer recipient's `amount`,
    `set_counter`'s `value`) are decimal text or JSON numbers (docs/decisions.md "Numbers in
    operation params"): `"10"`, `10`, `10.0`, `"10.00"` and `"1e1"` are one amount, credited
    alike, so a retry that writes it another way is a DUPLICATE, not `idempotency_conflict`.
    Text stays text where the field is text: `set_attribute` `"10"` and `"10.0"` store different
    attributes, a conflict; another amount is a conflict."""
    programs = write_program(tmp_path / "programs" / "p.yaml", _program([
        {"name": "any", "key": "any", "order": 10, "condition": "true", "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": 1}]}])).parent
    db = tmp_path / "l.duckdb"

    def op(key: str, operation: str, minute: int, params: dict, ext: str = "u1") -> dict:
        return {"operation": operation, "program_id": "p", "idempotency_key": key, "external_id": ext,
                "timestamp": f"2025-03-01T10:{minute:02d}:00Z", "params": json.dumps(params)}

    def run(name: str, ops: list[dict]) -> dict:
        pq.write_table(pa.Table.from_pylist(ops), tmp_path / name)
        res = cli("run", "--programs", str(programs), "--operations", str(tmp_path / name), "--db", str(db), "--json")
        _ok(res)
        return json.loads(res.stdout.strip().splitlines()[-1])

    credit = {"asset": "PTS", "type": "CREDIT"}
    events = write_events(tmp_path / "e.parquet", _rows([("e1", "u1", "2025-03-01T09:00:00Z", {"t": 1}),
                                                         ("e2", "u2", "2025-03-01T09:00:00Z", {"t": 1})]))
    _ok(cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db)))
    first = run("o1.parquet", [
        op("a1", "adjust", 1, {**credit, "amount": "10"}),
        op("a2", "adjust", 2, {**credit, "amount": 10}),
        op("a3", "adjust", 3, {**credit, "amount": "10.0"}),
        op("a4", "adjust", 4, {**credit, "amount": "10"}),
        op("c1", "set_counter", 5, {"key": "visits", "value": "5"}),
        op("s1", "set_attribute", 6, {"key": "code", "value": "10"}),
        op("t1", "transfer", 7, {"asset": "PTS", "recipients": [{"external_id": "u2", "amount": "2"}]})])
    assert (first["completed"], first["failed"]) == (7, 0)

    second = run("o2.parquet", [
        op("a1", "adjust", 1, {"amount": 10, "type": "CREDIT", "asset": "PTS"}),
        op("a2", "adjust", 2, {**credit, "amount": "10.00"}),
        op("a3", "adjust", 3, {**credit, "amount": "1e1"}),
        op("a4", "adjust", 4, {**credit, "amount": "11"}),
        op("c1", "set_counter", 5, {"key": "visits", "value": 5.0}),
        op("s1", "set_attribute", 6, {"key": "code", "value": "10.0"}),
        op("t1", "transfer", 7, {"asset": "PTS", "recipients": [{"external_id": "u2", "amount": 2}]})])
    assert (second["completed"], second["failed"], second["duplicates"], second["rejected"]) == (0, 0, 5, 2)
    assert sorted(query(db, "SELECT r.message FROM rejected_rows r")) == [
        ("idempotency_key a4 was already used with a different payload",),
        ("idempotency_key s1 was already used with a different payload",)]
    # 1 + 4 x 10 - 2 for u1; 1 + 2 for u2: nothing applied twice
    assert _available(db)[("u1", "PTS")][0] == 39 and _available(db)[("u2", "PTS")][0] == 3


# ---------------------------------------------------------------------------------------------
# Time-driven changes across batches (semantics.md 3)
# ---------------------------------------------------------------------------------------------

TIME_SPEC = _program([
    {"name": "earn", "key": "earn", "order": 10, "condition": 'event.type == "earn"', "actions": [
        {"type": "CREDIT", "asset": "LP", "amount": 10, "expires_at": "48h"}]},
    {"name": "earn later", "key": "earn_later", "order": 20, "condition": 'event.type == "earn_later"', "actions": [
        {"type": "CREDIT", "asset": "LP", "amount": 10, "matures_at": "24h"}]},
    {"name": "spend", "key": "spend", "order": 30, "condition": 'event.type == "spend"', "actions": [
        {"type": "DEBIT", "asset": "LP", "amount": 5}]},
    {"name": "visit", "key": "visit", "order": 40, "condition": 'event.type == "visit"', "actions": [
        {"type": "COUNTER", "key": "v", "value": 1, "reset_after": "72h"}]},
    {"name": "first visit of the period", "key": "fresh", "order": 50,
     "condition": 'event.type == "visit" && participant.counters.v == 1.0', "actions": [
         {"type": "CREDIT", "asset": "PTS", "amount": 1}]},
    {"name": "buy", "key": "buy", "order": 60, "condition": 'event.type == "buy"', "actions": [
        {"type": "SCHEDULE_EVENT", "event_name": "thanks", "delay": "24h"}]},
    {"name": "thanks", "key": "thanks", "order": 70, "condition": 'event.type == "thanks"', "actions": [
        {"type": "TAG", "tag": "thanked"}]},
    {"name": "check", "key": "check", "order": 80, "condition": 'event.type == "check" && "thanked" in participant.tags',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": 100}]},
])

# Per participant: a first row on 03-01 10:00, and a second row at exactly the instant the first
# one's time-driven change is due (03-03 10:00 expiry; 03-02 10:00 maturity; 03-04 10:00 counter
# reset, 72h after the counter was created; 03-02 10:00 SCHEDULE_EVENT).
TIME_FIRST = [("e1", "ex", "2025-03-01T10:00:00Z", {"type": "earn"}),
              ("m1", "mat", "2025-03-01T10:00:00Z", {"type": "earn_later"}),
              ("v1", "cnt", "2025-03-01T10:00:00Z", {"type": "visit"}),
              ("b1", "sch", "2025-03-01T10:00:00Z", {"type": "buy"})]
TIME_AT_DUE = [("m2", "mat", "2025-03-02T10:00:00Z", {"type": "spend"}),
               ("c2", "sch", "2025-03-02T10:00:00Z", {"type": "check"}),
               ("e2", "ex", "2025-03-03T10:00:00Z", {"type": "spend"}),
               ("v2", "cnt", "2025-03-04T10:00:00Z", {"type": "visit"})]


def test_changes_due_at_exactly_a_later_batchs_event_have_happened_before_it(tmp_path):
    """semantics.md 3: "before an event at time t is evaluated, everything due at or before t for
    the entities it touches has happened", and entries for time-driven changes carry the instant
    they were due. By hand, whatever the cut (one batch; two batches; maintenance --as-of each due
    instant between them): ex's lot expired at 03-03 10:00, so e2's debit fails
    (insufficient_balance) and the EXPIRATION of 10 is dated 03-03 10:00; mat's lot matured at
    03-02 10:00 (MATURITY dated then), so m2 spends 5 of it; cnt's counter reset at 03-04 10:00,
    so v2 counts 1 again and pays the first-visit point again (2 in all); sch's thanks (due 03-02
    10:00) came before c2 at the same instant, so c2 pays 100."""
    cuts = {"one": [TIME_FIRST + TIME_AT_DUE], "two": [TIME_FIRST, TIME_AT_DUE],
            "maintained": [TIME_FIRST, "2025-03-02T10:00:00Z", "2025-03-03T10:00:00Z", "2025-03-04T10:00:00Z",
                           TIME_AT_DUE]}
    found = {}
    for name, batches in cuts.items():
        db = _batches(tmp_path, name, TIME_SPEC, batches)
        status = _status(db)
        assert status["e2"] == ("FAILED", "insufficient_balance"), name
        assert status["m2"] == status["c2"] == status["v2"] == ("COMPLETED", None), name
        got = _available(db)
        assert got[("ex", "LP")] == (0, 0) and got[("mat", "LP")] == (5, 0), name
        assert got[("cnt", "PTS")][0] == 2 and got[("sch", "PTS")][0] == 100, name
        timed = sorted(query(db, "SELECT p.external_id, j.action_type, strftime(j.effective_at, '%m-%d %H:%M') "
                                 "FROM journal_entries j JOIN postings x ON x.journal_entry_id = j.id "
                                 "JOIN participants p ON p.id = x.entity_id "
                                 "WHERE j.action_type IN ('EXPIRATION', 'MATURITY') AND x.amount < 0"))
        assert timed == [("ex", "EXPIRATION", "03-03 10:00"), ("mat", "MATURITY", "03-02 10:00")], name
        assert query(db, "SELECT number_value, strftime(last_reset_at, '%m-%d %H:%M') FROM entity_state "
                         "WHERE key = 'v'") == [(Decimal(1), "03-04 10:00")], name
        found[name] = _shard_view(db)
    assert found["two"] == found["one"]
    assert found["maintained"]["entries"] == found["one"]["entries"]


def test_rows_older_than_a_maintenance_run_see_what_it_applied(tmp_path):
    """semantics.md 3: `maintain --as-of T` applies everything due up to T for all entities, and
    history is never rewritten (docs/decisions.md: a late row is processed against the state as
    it is now, with its own timestamp as `now`). ex's lot expired at 03-03 10:00 when maintenance
    ran to 03-05; a spend dated 03-02 arriving afterwards finds it expired (insufficient_balance),
    though the lot was live at its `now`; the EXPIRATION stays dated 03-03 10:00. cnt's counter,
    reset by maintenance at 03-04 10:00 (72h after 03-01 10:00), counts a visit dated 03-02 from
    0: 1, and the reset instant stays 03-04 10:00 (a row before it cannot move it back)."""
    db = _batches(tmp_path, "late", TIME_SPEC, [
        [TIME_FIRST[0], TIME_FIRST[2], ("v0", "cnt", "2025-03-01T12:00:00Z", {"type": "visit"})],
        "2025-03-05T00:00:00Z",
        [("e0", "ex", "2025-03-02T10:00:00Z", {"type": "spend"}), ("v9", "cnt", "2025-03-02T10:00:00Z", {"type": "visit"})]])
    assert _status(db)["e0"] == ("FAILED", "insufficient_balance")
    assert [e[:2] for e in _entries(db) if e[0] == "EXPIRATION"] == [("EXPIRATION", "2025-03-03T10:00:00Z")]
    assert query(db, "SELECT number_value, strftime(last_reset_at, '%m-%d %H:%M') FROM entity_state "
                     "WHERE key = 'v'") == [(Decimal(1), "03-04 10:00")]
    # the visits of 03-01 paid the first-visit point once (counts 1, 2); the late one counts 1 again
    assert _available(db)[("cnt", "PTS")][0] == 2


# ---------------------------------------------------------------------------------------------
# replay (semantics.md 3) against incremental runs
# ---------------------------------------------------------------------------------------------

def test_replay_puts_a_late_row_in_its_place_and_rebuilds_a_sharded_ledger_as_one_batch(tmp_path):
    """semantics.md 3: a late row is processed after the rows of its participant already
    processed (`now` its own timestamp); `replay` rebuilds in pure timestamp order. cnt visits
    03-01 10:00, 03-02 10:00, then 03-04 10:00 (the counter resets at that instant: 1), then a late
    visit dated 03-03 10:00 arrives: live it counts 2 (after the reset) and pays nothing; in the
    replay it is the third visit of the first period (3), and 03-04 resets to 1 again: 2 first-
    visit points either way, counter 2 live and 1 replayed. The two may differ there; they agree
    where rows arrived in order: replayed, the sharded ledger is the one-batch ledger entry for
    entry, seqs included."""
    visits = [("v1", "cnt", "2025-03-01T10:00:00Z", {"type": "visit"}), ("v2", "cnt", "2025-03-02T10:00:00Z", {"type": "visit"}),
              ("v3", "cnt", "2025-03-04T10:00:00Z", {"type": "visit"})]
    late = ("v4", "cnt", "2025-03-03T10:00:00Z", {"type": "visit"})
    live = _batches(tmp_path, "live", TIME_SPEC, [visits, [late]])
    assert query(live, "SELECT number_value FROM entity_state WHERE key = 'v'") == [(Decimal(2),)]
    replayed = tmp_path / "replayed.duckdb"
    _ok(cli("replay", "--from", str(live), "--db", str(replayed)))
    assert query(replayed, "SELECT number_value, strftime(last_reset_at, '%m-%d %H:%M') FROM entity_state "
                           "WHERE key = 'v'") == [(Decimal(1), "03-04 10:00")]
    assert _available(live)[("cnt", "PTS")][0] == _available(replayed)[("cnt", "PTS")][0] == 2

    one = _batches(tmp_path, "one", SHARD_SPEC, [sorted(SHARD_A + SHARD_B, key=lambda r: r[2])])
    sharded = _batches(tmp_path, "sharded", SHARD_SPEC, [SHARD_A, SHARD_B])
    rebuilt = tmp_path / "rebuilt.duckdb"
    _ok(cli("replay", "--from", str(sharded), "--db", str(rebuilt)))
    in_order = "SELECT id, seq, effective_at, entry_hash FROM journal_entries ORDER BY seq"
    assert query(rebuilt, in_order) == query(one, in_order)
    # live, the sharded ledger holds the same entries (ids, instants, hashes) in another order
    assert query(sharded, in_order) != query(one, in_order)
    assert sorted((i, t, h) for i, _, t, h in query(sharded, in_order)) == sorted(
        (i, t, h) for i, _, t, h in query(one, in_order))


def _club_program(lifecycle: dict, **counter) -> dict:
    """Tier club (silver: spend >= 50, gold: spend >= 100) with `lifecycle`; "buy" adds its amount
    to the spend counter (`counter`: e.g. its reset_after), "check" pays the level's rank x 10."""
    return _program([
        {"name": "buy", "key": "buy", "order": 10, "condition": 'event.type == "buy"', "actions": [
            {"type": "COUNTER", "key": "spend", "value": "event.amount", **counter}]},
        {"name": "check", "key": "check", "order": 20, "condition": 'event.type == "check"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "participant.tiers.club.rank * 10"}]}],
        tiers=[{"key": "club", "name": "Club", "lifecycle": lifecycle, "levels": [
            {"key": "silver", "rank": 1, "qualification": {"mode": "ALL", "criteria": [
                {"counter": "spend", "operator": ">=", "threshold": 50}]}},
            {"key": "gold", "rank": 2, "qualification": {"mode": "ALL", "criteria": [
                {"counter": "spend", "operator": ">=", "threshold": 100}]}}]}])


def test_a_tier_period_end_at_exactly_a_later_batchs_event_has_been_reviewed_before_it(tmp_path):
    """semantics.md 3 and 10: a tier period end is a time-driven change at its own instant
    (CALENDAR_YEAR: 1 January 00:00 UTC; grace 0), so an event at exactly that instant sees the
    level after the review, whether it comes in the same batch, the next one, or after `maintain
    --as-of` that instant. By hand: spend 150 on 2025-06-01 reaches gold (>= 100). The 2026-01-01
    review keeps gold (150 still qualifies), then the counters roll over (NONE: 0). 2026 spends
    20; the 2027-01-01 review finds 20, below silver's 50 too: DROP_TO_QUALIFYING drops to the
    lowest level, silver. The check at 2027-01-01T00:00:00Z pays rank x 10 = 10 (not gold's 20)."""
    spec = _club_program({"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                          "downgrade_policy": {"mode": "DROP_TO_QUALIFYING", "grace_days": 0},
                          "counters": {"rollover": "NONE"}})
    before = [("b1", "m", "2025-06-01T10:00:00Z", {"type": "buy", "amount": 150}),
              ("b2", "m", "2026-06-01T10:00:00Z", {"type": "buy", "amount": 20})]
    at_end = [("c1", "m", "2027-01-01T00:00:00Z", {"type": "check"})]
    for name, batches in {"one": [before + at_end], "two": [before, at_end],
                          "maintained": [before, "2027-01-01T00:00:00Z", at_end]}.items():
        db = _batches(tmp_path, name, spec, batches)
        assert _available(db)[("m", "PTS")][0] == 10, name
        assert query(db, "SELECT from_level, to_level, reason, strftime(effective_at, '%Y-%m-%d %H:%M') FROM tier_history "
                         "ORDER BY effective_at") == [
            (None, "gold", "AUTO", "2025-06-01 10:00"), ("gold", "silver", "LIFECYCLE", "2027-01-01 00:00")], name
        assert query(db, "SELECT number_value, strftime(last_reset_at, '%Y-%m-%d') FROM entity_state "
                         "WHERE key = 'spend'") == [(Decimal(0), "2027-01-01")], name


def test_a_late_event_does_not_move_an_activity_window_back(tmp_path):
    """semantics.md 3 (a late event is processed after the participant's later ones, `now` its
    own timestamp) and docs/decisions.md "Lifecycle windows": ACTIVITY_REFRESH reviews a level
    `duration` (720h) after the member's *last* completed event. m buys 150 on 01-01 (gold) and
    pings on 01-26: the review is due 02-25. A ping dated 01-11 arriving later is activity, but not
    the last: the review stays due 02-25, so the check on 02-15 still sees gold (rank 2: 20).
    n buys 60 on 01-01 (silver) and pings on 01-26; a late buy of 100 dated 01-05 makes n gold
    (spend 100: the counter, created 01-01 with reset_after 240h, had reset at 01-21, before the
    late row is processed). That gold is reached late, but n's last activity is still 01-26: the
    review is due 02-25, not 30 days after 01-05, so n's check on 02-15 also pays 20. Before, the
    late row's instant became the window's start: both were reviewed early (02-10, 02-04) and
    dropped one level (silver, 10; n's spend had reset to 0)."""
    spec = _club_program({"retention": {"mode": "ACTIVITY_REFRESH", "duration": "720h"},
                          "downgrade_policy": {"mode": "DROP_ONE"}}, reset_after="240h")
    first = [("m1", "m", "2025-01-01T10:00:00Z", {"type": "buy", "amount": 150}),
             ("n1", "n", "2025-01-01T10:00:00Z", {"type": "buy", "amount": 60}),
             ("m2", "m", "2025-01-26T10:00:00Z", {"type": "ping"}),
             ("n2", "n", "2025-01-26T10:00:00Z", {"type": "ping"})]
    late = [("n0", "n", "2025-01-05T10:00:00Z", {"type": "buy", "amount": 100}),
            ("m0", "m", "2025-01-11T10:00:00Z", {"type": "ping"})]
    checks = [("m3", "m", "2025-02-15T10:00:00Z", {"type": "check"}),
              ("n3", "n", "2025-02-15T10:00:00Z", {"type": "check"})]
    db = _batches(tmp_path, "late", spec, [first, late, checks])
    got = _available(db)
    assert got[("m", "PTS")][0] == 20 and got[("n", "PTS")][0] == 20
    assert query(db, "SELECT p.external_id, h.from_level, h.to_level, h.reason FROM tier_history h "
                     "JOIN participants p ON p.id = h.participant_id ORDER BY 1, h.effective_at") == [
        ("m", None, "gold", "AUTO"), ("n", None, "silver", "AUTO"), ("n", "silver", "gold", "AUTO")]
    # maintenance up to the day before the window ends reviews nothing; at 02-25 10:00 it does
    _ok(cli("maintain", "--as-of", "2025-02-25T09:59:59Z", "--db", str(db)))
    assert query(db, "SELECT count(*) FROM tier_history WHERE reason = 'LIFECYCLE'") == [(0,)]


def test_a_struct_timestamp_re_sent_in_another_time_zone_is_a_duplicate(tmp_path):
    """semantics.md 4 ("the same canonical payload ... is a DUPLICATE") and 6 (CEL timestamps are
    instants): a struct `event_data` field of Parquet type timestamp is one instant whatever zone
    the column is labelled with; rules read it so (`event.at.getHours()` is UTC). The same event
    re-sent in a later batch from a file whose column is in +02:00 (12:00+02:00 = 10:00Z) is the
    same payload: a DUPLICATE. Another instant under the key is an `idempotency_conflict`. It was
    a conflict: the stored payload kept the column's zone in its text."""
    programs = write_program(tmp_path / "programs" / "p.yaml", _program([
        {"name": "ten", "key": "ten", "order": 10, "condition": "event.at.getHours() == 10", "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": 1}]}])).parent
    db = tmp_path / "l.duckdb"
    at = datetime(2025, 3, 1, 10, tzinfo=timezone.utc)

    def run(name: str, zone: str, rows: list[tuple[str, datetime]]) -> dict:
        schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                            ("event_timestamp", pa.string()), ("event_data", pa.struct([("at", pa.timestamp("us", tz=zone))]))])
        pq.write_table(pa.Table.from_pylist([
            {"program_id": "p", "idempotency_key": k, "external_id": "u1", "event_timestamp": "2025-03-01T10:00:00Z",
             "event_data": {"at": t}} for k, t in rows], schema=schema), tmp_path / name)
        res = cli("run", "--programs", str(programs), "--events", str(tmp_path / name), "--db", str(db), "--json")
        _ok(res)
        return json.loads(res.stdout.strip().splitlines()[-1])

    first = run("utc.parquet", "UTC", [("k1", at), ("k2", at)])
    assert (first["completed"], first["entries"]) == (2, 2)  # 10:00 UTC: both match
    again = run("cest.parquet", "+02:00", [("k1", at), ("k2", at + timedelta(minutes=1))])
    assert (again["completed"], again["duplicates"], again["rejected"]) == (0, 1, 1)
    assert query(db, "SELECT message FROM rejected_rows") == [
        ("idempotency_key k2 was already used with a different payload",)]
    # and a first row from a +02:00 file matches at 10:00 UTC, as the rules read it
    third = run("cest-new.parquet", "+02:00", [("k3", at)])
    assert (third["completed"], third["entries"]) == (1, 1)
