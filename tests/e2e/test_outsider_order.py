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


# ---------------------------------------------------------------------------------------------
# Counts (semantics.md 13): read = completed + failed + duplicates + rejected, printed and stored
# ---------------------------------------------------------------------------------------------

def test_maintain_prints_the_counts_it_stores(tmp_path):
    """semantics.md 13: "Every run prints and stores its counts: read = completed + failed +
    duplicates + rejected". A maintenance run's batch stores them (its automation firings'
    SYSTEM events are its rows read, docs/tables.md). A daily automation fires `fee` for u1 and
    u2 at 03-02 00:00 (maintain --as-of 03-02 12:00): fee DEBITs 5; u1 holds 10 (COMPLETED), u2
    holds 0 (FAILED insufficient_balance). By hand: read 2, completed 1, failed 1, duplicates 0,
    rejected 0, in `batches` and in what `maintain --json` prints. perkflow stored them but
    printed none (no way to see from its output that a firing failed)."""
    autos = [{"name": "Fee", "key": "fee", "event_name": "fee", "scope": "participants",
              "trigger": {"type": "cron", "cron_expression": "0 0 * * *"}}]
    lg = Ledger(tmp_path, program(EARN_SPEND + [on("fee", {"type": "DEBIT", "asset": "PTS", "amount": 5})],
                                  automations=autos))
    lg.run([ev("e1", "u1", at(1), "earn", n=10), ev("e2", "u2", at(1), "earn", n=0)])
    import json
    res = cli("maintain", "--as-of", at(2), "--programs", str(lg.programs), "--db", str(lg.db), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    counts = {k: out.get(k) for k in ("read", "completed", "failed", "duplicates", "rejected")}
    assert counts == {"read": 2, "completed": 1, "failed": 1, "duplicates": 0, "rejected": 0}, out
    assert lg.sql("SELECT rows_read, completed, failed, duplicates, rejected FROM batches WHERE id = ?",
                  [out["batch_id"]]) == [(2, 1, 1, 0, 0)]
    text = cli("maintain", "--as-of", at(3), "--programs", str(lg.programs), "--db", str(lg.db))
    assert text.returncode == 0 and "2 read: 1 completed, 1 failed, 0 duplicates, 0 rejected" in text.stdout, text.stdout


# ---------------------------------------------------------------------------------------------
# Idempotency of batches (semantics.md 1.3, 1.7, 4)
# ---------------------------------------------------------------------------------------------

def test_the_same_file_bytes_under_another_hive_partition_are_another_batch(tmp_path):
    """semantics.md 2.2 accepts hive partitions, and docs/decisions.md makes a partition value
    part of the row (`program_id=cafe/part.parquet` is read with program_id cafe). Two drops,
    `drop-1/program_id=shop/part.parquet` and `drop-2/program_id=cafe/part.parquet`, hold the very
    same bytes (a signup event of u crediting 5, no program_id column): they are two events of two
    programs, so u ends with 10 and both programs have the event. perkflow took the second run
    for a re-run of the first (its fingerprint covered the files' bytes alone), reported it
    "already committed", all duplicates, and the cafe event was lost (semantics.md 1.7). A real
    re-run of either drop stays a no-op."""
    import json
    from tests.helpers.io import write_events
    lg = Ledger(tmp_path, program(EARN_SPEND, key="shop"), program(EARN_SPEND, key="cafe"))
    row = [{"idempotency_key": "signup-1", "external_id": "u", "event_timestamp": at(1),
            "event_data": json.dumps({"type": "earn", "n": 5})}]
    drops = []
    for n, key in ((1, "shop"), (2, "cafe")):
        write_events(tmp_path / f"drop-{n}" / f"program_id={key}" / "part.parquet", row)
        drops.append(tmp_path / f"drop-{n}")
    outs = []
    for drop in drops + drops:
        res = cli("run", "--programs", str(lg.programs), "--events", str(drop), "--db", str(lg.db), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        outs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert [(o["already_committed"], o["completed"], o["duplicates"]) for o in outs] == [
        (False, 1, 0), (False, 1, 0), (True, 0, 1), (True, 0, 1)]
    assert sorted(lg.sql("SELECT p.key, e.status FROM events e JOIN programs p ON p.id = e.program_id")) == [
        ("cafe", "COMPLETED"), ("shop", "COMPLETED")]
    assert lg.balance("u")[0] == D(10)


# ---------------------------------------------------------------------------------------------
# A crashed run, then the same run again (semantics.md 4)
# ---------------------------------------------------------------------------------------------

def test_a_replay_killed_before_it_committed_can_be_run_again(tmp_path):
    """semantics.md 4: "A run that crashed before committing left nothing behind; running it
    again gives the same result as if it had never crashed." A replay killed (kill -9) before
    its commit leaves the new DuckDB file holding no ledger (DuckDB creates the file when the
    run opens it; the schema is made in the uncommitted transaction), which is what this test
    puts there. Running the replay again must rebuild the ledger as a replay into a new path
    does. perkflow refused it ("exists; replay writes a fresh ledger", exit 2) until the file was
    deleted by hand. A file that holds a ledger is still refused, as is one that is no DuckDB
    database."""
    import duckdb
    lg = Ledger(tmp_path, program(EARN_SPEND))
    lg.run([ev("e1", "u", at(1), "earn", n=7), ev("s1", "u", at(2), "spend", n=3)])
    clean = _replayed(lg, "clean.duckdb")
    crashed = tmp_path / "crashed.duckdb"
    duckdb.connect(str(crashed)).close()  # what the killed replay left: a DuckDB file, no tables
    again = _replayed(lg, "crashed.duckdb")
    view = "SELECT id, seq, action_type, effective_at, entry_hash FROM journal_entries ORDER BY seq"
    assert query(again, view) == query(clean, view) and len(query(again, view)) == 2
    assert _statuses(again) == _statuses(lg.db)
    for taken in (clean, tmp_path / "events-1.parquet"):
        res = cli("replay", "--from", str(lg.db), "--db", str(taken))
        assert res.returncode == 2, res.stdout + res.stderr


def test_perkflow_op_names_its_program_by_id_as_rows_do(tmp_path):
    """semantics.md 2.2-2.3: `program_id` is the program's key or id, for operations as for
    events (docs/decisions.md: UUIDs in any case). `perkflow op adjust --program <id>` credits 5
    (COMPLETED, one entry); the same command again without --timestamp is a retry of the applied
    key, so it takes the stored instant and is a DUPLICATE (semantics.md 4), whether it names the
    program by key, by id or by the id in capitals. perkflow committed the first and then stopped
    with a traceback (exit 1, IndexError: its status lookup knew programs by key only, though exit
    1 says nothing was committed), and a retry naming the program by id, not finding the stored
    instant, took the wall clock and was quarantined as an idempotency_conflict."""
    import json
    lg = Ledger(tmp_path, program(EARN_SPEND))
    lg.run([ev("e0", "u", at(1), "earn", n=0)])
    pid = lg.sql("SELECT id::VARCHAR FROM programs")[0][0]
    outs = []
    for name in ("shop", pid, pid.upper(), "shop"):
        res = cli("op", "adjust", "--programs", str(lg.programs), "--db", str(lg.db), "--program", name,
                  "--key", "k1" if name != "shop" or outs else "k0", "--external-id", "u", "--param", "asset=PTS",
                  "--param", "amount=5", "--param", "type=CREDIT", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        outs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    # k0 by key; k1 by id, then retried by the id in capitals and by key
    assert [(o["key"], o["status"], o["duplicate"], len(o["journal_entry_ids"])) for o in outs] == [
        ("k0", "COMPLETED", False, 1), ("k1", "COMPLETED", False, 1), ("k1", "COMPLETED", True, 1),
        ("k1", "COMPLETED", True, 1)]
    assert lg.balance("u")[0] == D(10) and lg.sql("SELECT COUNT(*) FROM rejected_rows") == [(0,)]
