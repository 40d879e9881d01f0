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
    recipient or target pasted in capitals (as some systems print UUIDs) is that participant, and
    a `group_id` recipient given as the group's id in capitals is that group. They were
    `participant_not_found` / `group_not_found`; a recipient in capitals that is the source is
    still a self-transfer."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("gift", {"type": "CREDIT", "asset": "PTS", "amount": "event.n",
                         "target": {"type": "PARTICIPANT", "participant_id": "event.to"}})]
    team = {"key": "team", "name": "Team", "members": [{"external_id": "b", "role": "ADMIN"}]}
    lg = Ledger(tmp_path, program(rules, [LOT], groups=[team]))
    lg.run([ev("a1", "a", at(1), "earn", n=10), ev("b1", "b", at(1), "earn", n=1)])
    a_id, b_id = (lg.sql("SELECT id::VARCHAR FROM participants WHERE external_id = ?", [w])[0][0] for w in "ab")
    team_id = lg.sql("SELECT id::VARCHAR FROM groups WHERE key = 'team'")[0][0]
    lg.run([ev("g1", "a", at(2), "gift", n=2, to=b_id.upper())],
           [op("transfer", "t1", "a", at(3), asset="PTS", description="gift",
               recipients=[{"participant_id": b_id.upper(), "amount": "3"}]),
            op("transfer", "t2", "a", at(3, 13), asset="PTS", description="to myself",
               recipients=[{"participant_id": a_id.upper(), "amount": "1"}]),
            op("transfer", "t3", "a", at(3, 14), asset="PTS", description="to the team",
               recipients=[{"group_id": team_id.upper(), "amount": "4"}])])
    st = lg.status()
    assert st["g1"] == st["t1"] == st["t3"] == OK
    assert st["t2"] == ("FAILED", "self_transfer")
    assert lg.entries("g1") == [("CREDIT", D(2))] and lg.entries("t1") == [("TRANSFER", D(3))]
    assert lg.entries("t3") == [("TRANSFER", D(4))]
    assert lg.balance("a") == (D(10) - 3 - 4, D(0), D(0))
    assert lg.balance("b") == (D(1) + 2 + 3, D(0), D(0))
    assert lg.sql("SELECT available FROM balances WHERE entity_type = 'GROUP'") == [(D(4),)]
    lg.verify()


def test_s7_a_hold_release_or_forfeit_of_the_whole_bucket_is_capped_like_a_given_amount(tmp_path):
    """7: an amount must be "at most the asset's max_transaction_amount; otherwise the action
    fails (max_transaction_amount_exceeded)" (Scrip: "any single credit or debit above it is
    rejected"). HOLD, RELEASE and FORFEIT without an amount move the whole bucket, one entry of
    that amount; with max 10, two lots of 8 make a bucket of 16, which failed as `amount: 16`
    does but moved as one entry of 16 when the amount was left out. Now the whole bucket is
    checked like a given amount (docs/decisions.md "Operations and rewards"): over the cap it
    fails, within it (after part is moved by capped steps) it moves. VOID_HOLD is not capped:
    it cancels provisional credits that each passed the cap, and never fails (decisions)."""
    pts = {**LOT, "max_transaction_amount": "10"}
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("auth", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "bucket": "HELD",
                         "reference_id": "event.ref"}),
             on("void", {"type": "VOID_HOLD", "asset": "PTS", "reference_id": "event.ref"}),
             on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n"}),
             on("hold_all", {"type": "HOLD", "asset": "PTS"}),
             on("release_all", {"type": "RELEASE", "asset": "PTS"}),
             on("forfeit_all", {"type": "FORFEIT", "asset": "PTS", "bucket": "AVAILABLE"})]
    lg = Ledger(tmp_path, program(rules, [pts]))
    lg.run([ev("a1", "a", at(1, 10), "earn", n=8), ev("a2", "a", at(1, 11), "earn", n=8),
            ev("a3", "a", at(1, 12), "hold_all"),                  # 16 > 10: fails
            ev("a4", "a", at(1, 13), "forfeit_all"),               # 16 > 10: fails
            ev("a5", "a", at(1, 14), "hold", n=8),
            ev("a6", "a", at(1, 15), "hold", n=8),                 # HELD 16, AVAILABLE 0
            ev("a7", "a", at(1, 16), "release_all"),               # 16 > 10: fails
            ev("b1", "b", at(1, 10), "auth", n=8, ref="R"), ev("b2", "b", at(1, 11), "auth", n=8, ref="R"),
            ev("b3", "b", at(1, 12), "void", ref="R"),             # 16 back to issuance, uncapped
            ev("c1", "c", at(1, 10), "earn", n=8), ev("c2", "c", at(1, 11), "earn", n=8),
            ev("c3", "c", at(1, 12), "hold", n=7),                 # AVAILABLE 9
            ev("c4", "c", at(1, 13), "forfeit_all")],              # 9 <= 10: forfeited
           [op("hold", "o1", "c", at(1, 14), asset="PTS", description="all"),        # AVAILABLE 0: no-op
            op("release", "o2", "a", at(1, 17), asset="PTS", description="all"),     # 16: fails
            op("forfeit", "o3", "a", at(1, 18), asset="PTS", description="all", bucket="HELD"),  # 16: fails
            op("release", "o4", "a", at(1, 19), asset="PTS", description="part", amount="10"),
            op("forfeit", "o5", "a", at(1, 20), asset="PTS", description="rest", bucket="HELD")])  # 6
    st = lg.status()
    exceeded = ("FAILED", "max_transaction_amount_exceeded")
    assert (st["a3"], st["a4"], st["a7"], st["o2"], st["o3"]) == (exceeded,) * 5
    assert st["a5"] == st["a6"] == st["b3"] == st["c3"] == st["c4"] == st["o1"] == st["o4"] == st["o5"] == OK
    assert lg.entries("a3") == lg.entries("a4") == lg.entries("a7") == lg.entries("o2") == lg.entries("o3") == []
    assert lg.entries("b3") == [("VOID_HOLD", D(16))]
    assert lg.entries("c4") == [("FORFEIT", D(9))] and lg.entries("o1") == []
    assert lg.entries("o4") == [("RELEASE", D(10))] and lg.entries("o5") == [("FORFEIT", D(6))]
    assert lg.balance("a") == (D(10), D(0), D(0))
    assert lg.balance("b") == (D(0), D(0), D(0))
    assert lg.balance("c") == (D(0), D(7), D(0))
    lg.verify()


def test_s7_an_adjust_credit_with_a_reference_is_provisional_by_that_reference_and_settles_by_it(tmp_path):
    """7: a CREDIT's `reference_id` (LOT) "into HELD stamps the lots; into AVAILABLE settles the
    held lots with that reference", and VOID_HOLD "cancels lots created directly in HELD with
    reference_id". The `adjust` operation is the direct CREDIT (semantics.md 2.3; an adjust into
    HELD is a provisional credit, docs/decisions.md "Holds, settles and voids"), and
    `reference_id` is one of the operations' fields, but adjust ignored it: the HELD lot had no
    reference (never voidable or settleable), and an adjust of 6 "settling" R credited 6 more on
    top of the 10 still held (16 for a 6 settlement). Now it is read as the CREDIT action reads it;
    a DEBIT with a reference (no such action exists) fails `invalid_operation`, nothing moved."""
    lg = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})], [LOT]))
    adjust = lambda key, who, when, **p: op("adjust", key, who, when, asset="PTS", description="auth", **p)  # noqa: E731
    lg.run([ev("a0", "a", at(1), "earn", n=1), ev("b0", "b", at(1), "earn", n=1)],
           [adjust("o1", "a", at(2), type="CREDIT", amount="10", bucket="HELD", reference_id="R"),
            adjust("o2", "a", at(2, 13), type="CREDIT", amount="6", reference_id="R"),   # SETTLE 6, VOID_HOLD 4
            adjust("o3", "b", at(2), type="CREDIT", amount="5", bucket="HELD", reference_id="V"),
            op("void_hold", "o4", "b", at(2, 13), asset="PTS", description="voided", reference_id="V"),
            adjust("o5", "b", at(2, 14), type="DEBIT", amount="1", reference_id="V")])
    st = lg.status()
    assert st["o1"] == st["o2"] == st["o3"] == st["o4"] == OK
    assert st["o5"] == ("FAILED", "invalid_operation") and lg.entries("o5") == []
    assert lg.entries("o2") == [("SETTLE", D(6)), ("VOID_HOLD", D(10) - 6)]
    assert lg.entries("o4") == [("VOID_HOLD", D(5))]
    assert lg.balance("a") == (D(1) + 6, D(0), D(0))
    assert lg.balance("b") == (D(1), D(0), D(0))
    assert lg.sql("SELECT l.remaining, l.reference_id FROM lots l JOIN participants p ON p.id = l.entity_id "
                  "WHERE p.external_id = 'a' AND l.status = 'AVAILABLE' ORDER BY l.created_at") == [
        (D(1), None), (D(6), "R")]
    # issued 1 + 1 + 10 + 5, un-issued by voids 4 + 5
    assert lg.sql("SELECT total_issued, current_balance FROM ledger_summary") == [
        (D(1) + 1 + 10 + 5 - 4 - 5, D(7) + 1)]
    lg.verify()


def test_s9_4_a_redemption_target_named_by_the_groups_id_in_capitals_loads_and_is_that_group(tmp_path):
    """9.4: redemption debits AVAILABLE "to the program's redemption target"; a LEDGER_ENTITY
    target names a declared group by key or id (docs/decisions.md "Redemption target"), and
    perkflow's ids are read in any case ("Input"). The group's id in capitals was a load error
    ("is not a group of this project", exit 2). Now it loads, and a redemption of 4 moves 4 from
    the participant to that group."""
    from tests.helpers.io import write_program
    team = {"key": "team", "name": "Team", "members": [{"external_id": "a", "role": "ADMIN"}]}
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})]
    lg = Ledger(tmp_path, program(rules, [LOT], groups=[team]))
    lg.run([ev("a1", "a", at(1), "earn", n=10)])
    team_id = lg.sql("SELECT id::VARCHAR FROM groups WHERE key = 'team'")[0][0]
    write_program(lg.programs / "shop.yaml", program(rules, [LOT], groups=[team], program={
        "redemption_target_type": "LEDGER_ENTITY", "redemption_target_entity_id": team_id.upper()}))
    lg.run(operations=[op("redeem", "r1", "a", at(2), asset="PTS", amount="4", description="to the team")])
    assert lg.status()["r1"] == OK and lg.entries("r1") == [("REDEMPTION", D(4))]
    assert lg.balance("a") == (D(10) - 4, D(0), D(0))
    assert lg.sql("SELECT available FROM balances WHERE entity_type = 'GROUP'") == [(D(4),)]
    lg.verify()
