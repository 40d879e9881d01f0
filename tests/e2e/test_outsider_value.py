"""Outsider round 8: lots, holds, redemptions, transfers and wallets as a black box. Each test
writes program files and real Parquet rows, runs the `perkflow` CLI in a subprocess into a real
DuckDB file, and compares the ledger with numbers worked out by hand from semantics.md 7-9 (and
docs/decisions.md where the contract is silent). Earlier rounds pinned most of these sections
(test_contract_audit.py, test_audit_ledger.py, test_ledger_holds.py, test_outsider_features.py);
this file holds what they missed.
"""

from __future__ import annotations

from decimal import Decimal as D

from tests.e2e.test_contract_audit import LOT, OK, Ledger, at, ev, op, on, program


def test_s9_3_a_transfer_recipient_and_a_target_by_participant_id_in_capitals_are_that_participant(tmp_path):
    """9.3: a transfer names each recipient by `external_id | participant_id | group_id`, and 7 a
    PARTICIPANT target by `external_id | participant_id`. perkflow's participant ids are UUIDs,
    read case-insensitively wherever a row names one (docs/decisions.md "Input": RFC 9562), so a
    recipient or target pasted in capitals (as some systems print UUIDs) is that participant. It
    was `participant_not_found` for both; and a recipient in capitals that is the source is still
    a self-transfer."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("gift", {"type": "CREDIT", "asset": "PTS", "amount": "event.n",
                         "target": {"type": "PARTICIPANT", "participant_id": "event.to"}})]
    lg = Ledger(tmp_path, program(rules, [LOT]))
    lg.run([ev("a1", "a", at(1), "earn", n=10), ev("b1", "b", at(1), "earn", n=1)])
    a_id, b_id = (lg.sql("SELECT id::VARCHAR FROM participants WHERE external_id = ?", [w])[0][0] for w in "ab")
    lg.run([ev("g1", "a", at(2), "gift", n=2, to=b_id.upper())],
           [op("transfer", "t1", "a", at(3), asset="PTS", description="gift",
               recipients=[{"participant_id": b_id.upper(), "amount": "3"}]),
            op("transfer", "t2", "a", at(3, 13), asset="PTS", description="to myself",
               recipients=[{"participant_id": a_id.upper(), "amount": "1"}])])
    st = lg.status()
    assert st["g1"] == st["t1"] == OK
    assert st["t2"] == ("FAILED", "self_transfer")
    assert lg.entries("g1") == [("CREDIT", D(2))] and lg.entries("t1") == [("TRANSFER", D(3))]
    assert lg.balance("a") == (D(10) - 3, D(0), D(0))
    assert lg.balance("b") == (D(1) + 2 + 3, D(0), D(0))
    lg.verify()
