"""`perkflow replay` (semantics.md 3): a full rebuild from the inputs a ledger stored, into a fresh
ledger, in pure timestamp order. The late-arrival case itself is in test_contract_audit.py."""

from __future__ import annotations

import json

from tests.helpers.io import cli, file_hash, query, write_program, program_spec
from tests.helpers.scenario import D, Scenario, asset, at, ev, on, op

THANKS = {"type": "SCHEDULE_EVENT", "event_name": "thanks", "delay": "1h"}
RULES = [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}, THANKS),
         on("thanks", {"type": "CREDIT", "asset": "PTS", "amount": "1"}),
         on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})]

# What a ledger holds apart from its batches: entry ids are derived from the rows, rule versions
# and actions, so a stream that arrived in timestamp order replays to the same entries.
LEDGER = {
    "entries": "SELECT j.id::VARCHAR, j.action_type, j.effective_at::VARCHAR FROM journal_entries j ORDER BY 1",
    "postings": "SELECT id::VARCHAR, entity_type, amount FROM postings ORDER BY 1",
    "events": "SELECT idempotency_key, status, error_code FROM events ORDER BY 1",
    "operations": "SELECT idempotency_key, status, error_code FROM operations ORDER BY 1",
    "balances": "SELECT external_id, asset_symbol, available FROM balances WHERE external_id IS NOT NULL ORDER BY 1, 2",
}


def _replay(*args: str, expect: int = 0) -> dict | str:
    res = cli("replay", *args, "--json")
    assert res.returncode == expect, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1]) if expect == 0 else res.stderr


def _live(tmp_path) -> Scenario:
    """Three batches in timestamp order (events, operations, a SYSTEM event due between them,
    a DEBIT that fails)."""
    s = Scenario(tmp_path, "shop", RULES, [asset("PTS")])
    s.run(ev("b1", "u1", at("2025-03-01T10:00:00Z"), "buy", n=5), ev("b2", "u2", at("2025-03-01T10:00:00Z"), "buy", n=7))
    s.run(op("adjust", "o1", "u1", at("2025-03-01T12:00:00Z"), type="CREDIT", asset="PTS", amount="3"),
          ev("s1", "u2", at("2025-03-01T12:00:00Z"), "spend", n=100))
    s.run(ev("s2", "u1", at("2025-03-02T09:00:00Z"), "spend", n=4))
    return s


def test_a_stream_that_arrived_in_order_replays_to_the_same_ledger(tmp_path):
    live = _live(tmp_path / "live")
    before = file_hash(live.db)
    fresh = tmp_path / "replayed.duckdb"
    counts = _replay("--from", str(live.db), "--db", str(fresh))
    # 5 input rows (the 2 SYSTEM thanks events are emitted again by the rules, not read)
    assert (counts["read"], counts["completed"], counts["failed"], counts["system_events"]) == (5, 4, 1, 2)
    for name, sql in LEDGER.items():
        assert query(fresh, sql) == query(live.db, sql), name
    # u1: 5 + thanks 1 + adjust 3 - 4 = 5; u2: 7 + thanks 1 (its spend of 100 failed)
    assert query(fresh, LEDGER["balances"]) == [("u1", "PTS", D(5)), ("u2", "PTS", D(8))]
    assert query(fresh, "SELECT count(*) FROM batches") == [(1,)]
    assert file_hash(live.db) == before  # the source is only read
    assert cli("verify", "--db", str(fresh)).returncode == 0


def test_replay_under_other_program_files_simulates_them(tmp_path):
    live = _live(tmp_path / "live")
    doubled = program_spec("shop", [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "event.n * 2"}, THANKS)]
                           + RULES[1:],
                           assets=[asset("PTS")])
    write_program(tmp_path / "sim" / "shop.yaml", doubled)
    fresh = tmp_path / "sim.duckdb"
    _replay("--from", str(live.db), "--db", str(fresh), "--programs", str(tmp_path / "sim"))
    # u1: 10 + 1 + 3 - 4 = 10; u2: 14 + 1
    assert query(fresh, LEDGER["balances"]) == [("u1", "PTS", D(10)), ("u2", "PTS", D(15))]
    assert query(live.db, LEDGER["balances"]) == [("u1", "PTS", D(5)), ("u2", "PTS", D(8))]


def test_replay_refuses_an_existing_target_and_a_missing_source(tmp_path):
    live = _live(tmp_path / "live")
    before = file_hash(live.db)
    assert "exists" in _replay("--from", str(live.db), "--db", str(live.db), expect=2)
    assert "no such ledger" in _replay("--from", str(tmp_path / "nope.duckdb"), "--db", str(tmp_path / "x.duckdb"),
                                       expect=2)
    assert file_hash(live.db) == before and not (tmp_path / "x.duckdb").exists()
