"""Outsider round (session 21): unusual workloads at scale, in small versions. Each test writes
program files and real Parquet rows, runs the `perkflow` CLI in a subprocess into a real DuckDB
file, and compares the ledger with numbers worked out by hand (or by an independent model in
this file) from semantics.md 7 and 9. The round ran the same shapes at 100k-1M events for time
and memory (benchmarks/README.md, "Session 21: unusual workloads at scale"); these tests keep the
behaviour each fix touched, with no timing assertions.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

from tests.e2e.test_contract_audit import LOT, OK, Ledger, at, ev, op, on, program
from tests.helpers.io import cli, write_events

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
SPEND = on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})


def lots_by_age(lg: Ledger) -> list[tuple[D, str]]:
    return [(D(r), s) for r, s in lg.sql("SELECT remaining, status FROM lots ORDER BY created_at, id")]


def test_s9_4_a_reversal_gives_value_back_to_lots_spent_earlier_in_the_same_batch(tmp_path):
    """9.4: reversals restore LOT value LIFO to the lots it came from, even lots since spent to
    nothing (CONSUMED). The kernel now keeps a holder's spent lots out of the lots each event
    copies (the copy grew with a hot participant's whole history: quadratic); a reversal must
    still find them. L1=3, L2=4, L3=5; r1 redeems 6 (L1 3, L2 3); a spend of 1 empties L2; v1
    reverses r1 whole: L2 gets 3 back, L1 3 (balance 12 - 6 - 1 + 6 = 11); a spend of 4 then
    takes L1's 3 and 1 of L2 (FIFO): lots [0 CONSUMED, 2, 5], balance 7."""
    lg = Ledger(tmp_path, program([EARN, SPEND], [LOT]))
    lg.run([ev("e1", "a", at(1, 10), "earn", n=3), ev("e2", "a", at(1, 11), "earn", n=4),
            ev("e3", "a", at(1, 12), "earn", n=5), ev("e4", "a", at(3), "spend", n=1),
            ev("e5", "a", at(5), "spend", n=4)],
           [op("redeem", "r1", "a", at(2), asset="PTS", amount="6", description="pay"),
            op("reverse_redemption", "v1", None, at(4), redemption="r1", reason="refund")])
    assert set(lg.status().values()) == {OK}
    assert lg.entries("v1") == [("REDEMPTION_REVERSAL", D(6))]
    assert lots_by_age(lg) == [(D(0), "CONSUMED"), (D(2), "AVAILABLE"), (D(5), "AVAILABLE")]
    assert lg.balance("a") == (D(7), D(0), D(0))
    # nothing went to breakage as if the lots had expired
    assert lg.sql("SELECT count(*) FROM journal_entries WHERE action_type = 'EXPIRATION'") == [(0,)]
    lg.verify()


def test_s9_1_a_hot_participant_spends_fifo_across_hundreds_of_lots_with_expiry(tmp_path):
    """9.1 at the shape of one participant holding most of a batch: 600 events, earns of 1..9
    (each a lot expiring after 48 hours) and spends of 1..19 that fail on insufficient balance
    (semantics.md 5 and 7: the whole event rolls back), every lot spent oldest first, expired ones forfeited at
    their instant before the next event. An independent FIFO model below gives each lot's
    remaining, the statuses and the balance; the batch cut in three gives the same."""
    expiring = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "expires_at": "48h"})
    rows, model, expected_status = [], [], {}  # model: [remaining, hour made, status] per lot
    for i in range(600):
        hour = i * 5  # 5 hours apart: a lot outlives 9 more events
        when = (datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for lot in model:  # expiries due at or before this event happen first (semantics.md 3)
            if lot[1] + 48 <= hour and lot[0] > 0:
                lot[0], lot[2] = D(0), "EXPIRED"
        kind, n = ("spend", 1 + (i * 7) % 19) if i % 3 == 2 else ("earn", 1 + (i * 5) % 9)
        expected_status[f"k{i}"] = OK
        if kind == "earn":
            model.append([D(n), hour, "AVAILABLE"])
        elif sum(lot[0] for lot in model) < n:
            expected_status[f"k{i}"] = ("FAILED", "insufficient_balance")
        else:
            left = D(n)
            for lot in model:
                take = min(lot[0], left)
                lot[0] -= take
                left -= take
                if lot[0] == 0 and lot[2] == "AVAILABLE":
                    lot[2] = "CONSUMED"
        rows.append(ev(f"k{i}", "hot", when, kind, n=n))
    expected_balance = sum(lot[0] for lot in model if lot[2] == "AVAILABLE")
    fails = sum(1 for s in expected_status.values() if s != OK)
    assert 10 < fails < 50 and any(lot[2] == "EXPIRED" for lot in model)  # the shape exercises both
    for cut in (1, 3):
        lg = Ledger(tmp_path / f"cut{cut}", program([expiring, SPEND], [LOT]))
        size = len(rows) // cut
        for part in range(cut):
            lg.run(rows[part * size:(part + 1) * size])
        assert lg.status() == expected_status
        assert lots_by_age(lg) == [(lot[0], lot[2]) for lot in model], cut
        assert lg.balance("hot") == (expected_balance, D(0), D(0))
        lg.verify()


def test_s12_wide_event_rows_are_processed_in_chunks_sized_by_their_bytes(tmp_path):
    """performance.md (peak RSS <= 2 GB, memory follows the chunk) with wide rows: 50 event_data
    fields of ~200 characters are ~10 KB a row, and a default chunk of 62,500 such rows peaked
    at 5.4 GB at 100k events (session 21). The default chunk is now also capped by the rows'
    uncompressed Parquet bytes (64 MB). Here 1,500 rows of ~50 KB (75 MB) are two chunks
    (PERKFLOW_TRACE prints each chunk's stages), and the ledger is what the rules say: each
    event credits `n` (1..7), and a rule reading the last long field credits 1 more when it
    starts with "a" (every other row)."""
    rows = [ev(f"k{i}", f"u{i % 10}", at(1 + i // 500, 10 + (i % 500) // 60, i % 500 % 60), "earn", n=1 + i % 7,
               **{f"s{k}": f"{i}-{k}-" + "z" * 1000 for k in range(48)}, tail=("a" if i % 2 else "b") + "q" * 500)
            for i in range(1500)]  # (text that differs row by row, as real payloads do: see CHUNK_BYTES)
    tail = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"}, key="tail", name="tail",
              condition='event.type == "earn" && event.tail.startsWith("a")')
    lg = Ledger(tmp_path, program([EARN, tail]))
    events = write_events(tmp_path / "wide.parquet", [
        {"program_id": "shop", "idempotency_key": e["key"], "external_id": e["who"], "event_timestamp": e["when"],
         "event_data": json.dumps(e["data"])} for e in rows])
    res = cli("run", "--programs", str(lg.programs), "--events", str(events), "--db", str(lg.db), "--json",
              env={"PERKFLOW_TRACE": "1"})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["completed"] == 1500
    chunks = [line for line in res.stderr.splitlines() if line.startswith("[stage] evaluating rules (")]
    assert len(chunks) == 2, res.stderr[-3000:]
    expected = {}
    for i in range(1500):
        expected[f"u{i % 10}"] = expected.get(f"u{i % 10}", 0) + 1 + i % 7 + (i % 2)
    for who, total in expected.items():
        assert lg.balance(who) == (D(total), D(0), D(0))
    lg.verify()

