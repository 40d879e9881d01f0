"""An outsider's scenario tests (session 19): order, time, idempotency and the counts, black box.
Expectations come from semantics.md (sections 1, 3, 4, 13) and docs/decisions.md alone, worked
out by hand; every test runs the real CLI (`perkflow run / op / maintain / replay / backfill`)
on Parquet files into a real DuckDB file. Each test says what perkflow did before its fix.
"""

from __future__ import annotations

from decimal import Decimal as D

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, on, op, program
from tests.helpers.io import cli, query

EARN_SPEND = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
              on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})]


def _replayed(lg: Ledger, name: str = "replayed.duckdb"):
    new = lg.dir / name
    res = cli("replay", "--from", str(lg.db), "--db", str(new))
    assert res.returncode == 0, res.stdout + res.stderr
    return new


def _statuses(db) -> dict[str, tuple]:
    return {k: (s, c) for k, s, c in query(db, "SELECT idempotency_key, status, error_code FROM events UNION ALL "
                                               "SELECT idempotency_key, status, error_code FROM operations")}


# ---------------------------------------------------------------------------------------------
# Replay: pure timestamp order, ties in arrival order (semantics.md 3)
# ---------------------------------------------------------------------------------------------

def test_replay_keeps_an_operation_that_arrived_first_before_an_event_of_the_same_instant(tmp_path):
    """semantics.md 3: the stream is ordered by (timestamp, arrival sequence), arrival being the
    order rows were first ingested; `replay` rebuilds it "in pure timestamp order". An `adjust`
    DEBIT of 17 booked in one batch, then (next batch) an event crediting 5 at the same instant:
    the operation arrived first, so it meets a balance of 15 and fails, live and replayed, and
    the balance ends at 20. The stream arrived in time order, so replay must give the live
    ledger. perkflow's replay put every event before every operation of an instant: the credit
    came first, the DEBIT succeeded and the replayed balance was 3. The other way round (the
    event ingested first) is pinned too."""
    lg = Ledger(tmp_path, program(EARN_SPEND))
    lg.run([ev("e0", "u", at(1), "earn", n=15)])
    lg.run([], [op("adjust", "o1", "u", at(2), asset="PTS", amount="17", type="DEBIT")])
    lg.run([ev("e1", "u", at(2), "earn", n=5)])
    # v: the event first (batch 4), then the operation (batch 5), at one instant
    lg.run([ev("e2", "v", at(3), "earn", n=5)])
    lg.run([], [op("adjust", "o2", "v", at(3), asset="PTS", amount="5", type="DEBIT")])
    live = _statuses(lg.db)
    assert live["o1"] == ("FAILED", "insufficient_balance") and live["o2"] == OK
    assert lg.balance("u")[0] == D(20) and lg.balance("v")[0] == D(0)
    replayed = _replayed(lg)
    assert _statuses(replayed) == live
    assert query(replayed, "SELECT external_id, available FROM balances WHERE external_id IS NOT NULL ORDER BY 1") == [
        ("u", D(20)), ("v", D(0))]


# ---------------------------------------------------------------------------------------------
# Idempotency of operations (semantics.md 4)
# ---------------------------------------------------------------------------------------------

def _op_json(lg: Ledger, key: str, amount: str) -> dict:
    import json
    res = cli("op", "adjust", "--programs", str(lg.programs), "--db", str(lg.db), "--program", "shop", "--key", key,
              "--external-id", "u", "--timestamp", at(2), "--param", "asset=PTS", "--param", f"amount={amount}",
              "--param", "type=CREDIT", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_conflicting_op_sent_again_is_reported_rejected_again_not_as_the_applied_one(tmp_path):
    """semantics.md 4: a later operation with the same key and a different payload is quarantined
    as `idempotency_conflict`; re-running what was already committed is a no-op "that reports
    so". `perkflow op adjust k1 amount=5` credits 5; `amount=6` under k1 is REJECTED
    idempotency_conflict; the very same `amount=6` command again is a no-op of that rejected
    batch and must say so again (REJECTED, idempotency_conflict, no entries). perkflow printed the
    stored k1's outcome instead: COMPLETED, "duplicate": false, with the entry ids of the credit of
    5, as if the 6 had been applied. The balance stays 5 throughout."""
    lg = Ledger(tmp_path, program(EARN_SPEND))
    lg.run([ev("e0", "u", at(1), "earn", n=0)])
    first = _op_json(lg, "k1", "5")
    assert (first["status"], first["duplicate"]) == ("COMPLETED", False) and len(first["journal_entry_ids"]) == 1
    for _ in range(2):
        again = _op_json(lg, "k1", "6")
        assert (again["status"], again["error_code"], again["journal_entry_ids"]) == (
            "REJECTED", "idempotency_conflict", []), again
    retry = _op_json(lg, "k1", "5")
    assert (retry["status"], retry["duplicate"], retry["journal_entry_ids"]) == ("COMPLETED", True, first["journal_entry_ids"])
    assert lg.balance("u")[0] == D(5)
    assert lg.sql("SELECT reason FROM rejected_rows") == [("idempotency_conflict",)]
