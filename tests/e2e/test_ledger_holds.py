"""Holds, reference_id, settle and VOID_HOLD (semantics.md 7, 8, 9.1; docs/decisions.md "Holds,
settles and voids"), through the engine into a real ledger. Every expected number is worked out
by hand in the test; after every batch `perkflow verify` passes and the summary's current balance
equals what participants hold (tests/helpers/scenario.py)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from engine.catalog import load_catalog
from engine.errors import CatalogError
from tests.helpers.io import cli, program_spec, query, write_program
from tests.helpers.scenario import Scenario, asset, at, bag, ev, on, op

LOT = asset("PTS", "LOT")
NONE = (D(0), D(0), D(0))

LOT_RULES = [
    on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
    on("auth", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "bucket": "HELD",
                "reference_id": "event.ref"}),
    on("settle", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "reference_id": "event.ref"}),
    on("void", {"type": "VOID_HOLD", "asset": "PTS", "reference_id": "event.ref"}),
    on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n", "reference_id": "event.ref"}),
    on("hold_plain", {"type": "HOLD", "asset": "PTS", "amount": "event.n"}),
    on("release", {"type": "RELEASE", "asset": "PTS", "reference_id": "event.ref"}),
    on("release_n", {"type": "RELEASE", "asset": "PTS", "amount": "event.n", "reference_id": "event.ref"}),
    on("release_all", {"type": "RELEASE", "asset": "PTS"}),
    on("forfeit_held", {"type": "FORFEIT", "asset": "PTS", "amount": "event.n", "bucket": "HELD"}),
    on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"}),
]


def t(hour: int, day: int = 1) -> str:
    return at(f"2025-01-{day:02d} {hour:02d}:00")


def test_provisional_credit_settles_below_the_held_amount_and_voids_by_reference(tmp_path):
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT])
    out = s.run(ev("e1", "a", t(10), "earn", n=100),
                ev("e2", "a", t(11), "auth", n=30, ref="A1"),   # provisional: HELD 30 stamped A1
                ev("e3", "a", t(12), "hold", n=40, ref="H1"))   # 40 of the 100-lot moves to HELD
    assert set(out.values()) == {("COMPLETED", None)}
    assert s.balance("a", "PTS") == (D(100) - 40, D(30) + 40, D(0))
    assert s.lot_bag("a", "PTS") == bag([
        ("AVAILABLE", D(100) - 40, None, False), ("HELD", D(40), "H1", False), ("HELD", D(30), "A1", True)])

    out = s.run(ev("e4", "a", t(13), "settle", n=25, ref="A1"),  # settles 25 of the 30 held; 5 go back
                ev("e5", "a", t(14), "auth", n=10, ref="A2"),
                ev("e6", "a", t(15), "void", ref="A2"),           # merchant voided: the 10 go back
                ev("e7", "a", t(16), "release", ref="H1"))        # the whole 40 of H1
    assert set(out.values()) == {("COMPLETED", None)}
    assert s.entries("e4") == [("SETTLE", D(25), "A1"), ("VOID_HOLD", D(30) - 25, "A1")]
    assert s.entries("e6") == [("VOID_HOLD", D(10), "A2")]
    assert s.entries("e7") == [("RELEASE", D(40), "H1")]
    assert s.balance("a", "PTS") == (D(60) + 25 + 40, D(0), D(0))
    # issued: 100 + 30 + 10, un-issued by voids: 5 + 10
    assert s.system("SYSTEM_ISSUANCE", "PTS") == -(D(100) + 30 + 10 - 5 - 10)
    summary = query(s.db, "SELECT total_issued, current_balance FROM ledger_summary")
    assert summary == [(D(100) + 30 + 10 - 5 - 10, D(125))]


def test_settle_above_the_held_amount_credits_the_difference_and_a_settled_reference_cannot_be_voided(tmp_path):
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT])
    out = s.run(ev("e1", "a", t(10), "auth", n=20, ref="A3"),
                ev("e2", "a", t(11), "settle", n=32, ref="A3"),    # SETTLE 20 + CREDIT 12
                ev("e3", "a", t(12), "void", ref="A3"),            # already settled: nothing to void
                ev("e4", "a", t(13), "settle", n=7, ref="NEW"),    # no provisional value: a plain credit
                ev("e5", "a", t(14), "void", ref="UNKNOWN"))       # never held: a no-op, not a failure
    assert set(out.values()) == {("COMPLETED", None)}
    assert s.entries("e2") == [("SETTLE", D(20), "A3"), ("CREDIT", D(32) - 20, "A3")]
    assert s.entries("e3") == [] and s.entries("e5") == []
    assert s.entries("e4") == [("CREDIT", D(7), "NEW")]
    assert s.balance("a", "PTS") == (D(32) + 7, D(0), D(0))
    assert all(not provisional for *_, provisional in s.lots("a", "PTS"))


def test_void_leaves_value_a_hold_reserved_and_release_of_more_than_the_reference_holds_fails(tmp_path):
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT])
    out = s.run(ev("e1", "a", t(10), "earn", n=50),
                ev("e2", "a", t(11), "hold", n=10, ref="H2"),
                ev("e3", "a", t(12), "void", ref="H2"),               # not provisional: untouched
                ev("e4", "a", t(13), "release_n", n=11, ref="H2"),    # H2 holds 10
                ev("e5", "a", t(14), "hold", n=41, ref="H3"),         # 40 available
                ev("e6", "a", t(15), "release_n", n=4, ref="H2"))     # part of H2: the lot splits
    assert out["e3"] == ("COMPLETED", None) and s.entries("e3") == []
    assert out["e4"] == ("FAILED", "insufficient_balance")
    assert out["e5"] == ("FAILED", "insufficient_balance")
    assert out["e6"] == ("COMPLETED", None)
    assert s.entries("e4") == [] and s.entries("e5") == []
    assert s.balance("a", "PTS") == (D(50) - 10 + 4, D(10) - 4, D(0))
    # a released lot keeps the reference it was held under (its history); only HELD lots answer to it
    assert s.lot_bag("a", "PTS") == bag([
        ("AVAILABLE", D(40), None, False), ("AVAILABLE", D(4), "H2", False), ("HELD", D(6), "H2", False)])
    msg = query(s.db, "SELECT error_message FROM events WHERE idempotency_key = 'e4'")[0][0]
    assert "held balance of reference 'H2'" in msg and "needs 11" in msg


def test_hold_and_forfeit_on_lots_keep_fifo_and_release_all_returns_every_held_lot(tmp_path):
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT])
    out = s.run(ev("e1", "a", t(10), "earn", n=10),           # lot L1
                ev("e2", "a", t(11), "earn", n=20),           # lot L2
                ev("e3", "a", t(12), "hold_plain", n=15),     # L1 whole (10) + 5 of L2
                ev("e4", "a", t(13), "forfeit_held", n=12),   # L1's 10, then 2 of L2's held 5
                ev("e5", "a", t(14), "spend", n=16),          # only 15 available
                ev("e6", "a", t(15), "spend", n=15))
    assert out["e5"] == ("FAILED", "insufficient_balance")
    assert [out[k] for k in ("e1", "e2", "e3", "e4", "e6")] == [("COMPLETED", None)] * 5
    assert s.balance("a", "PTS") == (D(30) - 15 - 15, D(15) - 12, D(0))
    assert s.lots("a", "PTS") == [("HELD", D(5) - 2, None, False)]
    assert s.system("SYSTEM_BREAKAGE", "PTS") == D(12)
    s.run(ev("e7", "a", t(16), "release_all"))
    assert s.balance("a", "PTS") == (D(3), D(0), D(0))
    assert s.lots("a", "PTS") == [("AVAILABLE", D(3), None, False)]


def test_held_lots_expire_like_available_ones(tmp_path):
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "expires_at": "48h"}),
             on("auth", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "bucket": "HELD",
                         "reference_id": "event.ref", "expires_at": "24h"}),
             *LOT_RULES[3:]]
    s = Scenario(tmp_path, "shop", rules, [LOT])
    s.run(ev("e1", "a", t(10), "earn", n=50),
          ev("e2", "a", t(11), "hold_plain", n=20),
          ev("e3", "a", t(12), "auth", n=5, ref="X"))
    assert s.balance("a", "PTS") == (D(30), D(20) + 5, D(0))
    # day 3, 12:00: the earn lot (day 1 10:00 + 48h) and the provisional credit (day 1 12:00 + 24h)
    # have expired, held parts included, before this event runs
    out = s.run(ev("e4", "a", t(12, day=3), "void", ref="X"),
                ev("e5", "a", t(13, day=3), "release_all"))
    assert out["e4"] == ("COMPLETED", None) and s.entries("e4") == []
    assert s.balance("a", "PTS") == NONE
    assert query(s.db, "SELECT total_issued, total_expired, current_balance FROM ledger_summary") == [
        (D(55), D(30) + 20 + 5, D(0))]
    buckets = query(s.db, "SELECT p.bucket, -p.amount FROM journal_entries j JOIN postings p "
                          "ON p.journal_entry_id = j.id WHERE j.action_type = 'EXPIRATION' "
                          "AND p.entity_type = 'PARTICIPANT' ORDER BY p.bucket, -p.amount")
    assert buckets == [("AVAILABLE", D(30)), ("HELD", D(5)), ("HELD", D(20))]


def test_prefunded_void_and_settle_draw_on_and_return_to_the_program_wallet(tmp_path):
    wallet_lot = asset("PTS", "LOT", "PREFUNDED")
    s = Scenario(tmp_path, "shop", LOT_RULES, [wallet_lot])
    out = s.run(op("fund", "f1", None, t(9), asset="PTS", amount="100"),
                ev("e1", "a", t(10), "auth", n=30, ref="X"),
                ev("e2", "a", t(11), "void", ref="X"),            # 30 back to the wallet
                ev("e3", "a", t(12), "auth", n=50, ref="Y"),
                ev("e4", "a", t(13), "settle", n=60, ref="Y"),    # SETTLE 50, CREDIT 10 from the wallet
                ev("e5", "a", t(14), "auth", n=41, ref="Z"))      # wallet holds 40
    assert out["e5"] == ("FAILED", "insufficient_wallet")
    assert s.wallet("PTS") == D(100) - 30 + 30 - 50 - 10
    assert s.balance("a", "PTS") == (D(60), D(0), D(0))


def test_hold_release_and_void_hold_operations(tmp_path):
    simple = asset("CASH", scale=2)
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT, simple])
    out = s.run(op("upsert_participant", "o0", "a", t(9)),
                op("adjust", "o1", "a", t(10), type="CREDIT", asset="PTS", amount="80", description="seed"),
                op("adjust", "o2", "a", t(11), type="CREDIT", asset="PTS", amount="9", bucket="HELD",
                   description="pending"),
                op("hold", "o3", "a", t(12), asset="PTS", amount="30", reference_id="R1", description="auth"),
                op("release", "o4", "a", t(13), asset="PTS", amount="10", reference_id="R1", description="part"),
                op("forfeit", "o5", "a", t(14), asset="PTS", amount="5", bucket="HELD", reference_id="R1",
                   description="fraud"),
                op("release", "o6", "a", t(15), asset="PTS", reference_id="NONE", description="nothing held"),
                op("void_hold", "o7", "a", t(16), asset="PTS", reference_id="R1", description="not provisional"),
                op("void_hold", "o8", "a", t(17), asset="PTS", reference_id="R1", amount="1", description="x"),
                op("hold", "o9", "a", t(18), asset="CASH", amount="1", reference_id="R9", description="x"),
                op("void_hold", "o10", "a", t(19), asset="CASH", reference_id="R9", description="x"),
                op("hold", "o11", "a", t(20), asset="PTS", amount="0", description="zero"),
                op("hold", "o12", "a", t(21), asset="PTS", amount="1.5", description="scale 0"))
    assert out["o8"] == out["o9"] == out["o10"] == ("FAILED", "invalid_operation")
    assert out["o11"] == ("FAILED", "amount_not_positive") and out["o12"] == ("FAILED", "invalid_scale")
    for key in ("o1", "o2", "o3", "o4", "o5", "o6", "o7"):
        assert out[key] == ("COMPLETED", None), key
    assert s.entries("o6") == [] and s.entries("o7") == []
    # available 80 - 30 + 10; held 9 (adjust, provisional, no reference) + 30 - 10 - 5
    assert s.balance("a", "PTS") == (D(80) - 30 + 10, D(9) + 30 - 10 - 5, D(0))
    assert s.entries("o5") == [("FORFEIT", D(5), "R1")]
    # a CLOSED participant's provisional credit can still be voided (semantics: VOID_HOLD never fails)
    out = s.run(op("upsert_participant", "p0", "b", t(7, day=2)),
                op("adjust", "p1", "b", t(8, day=2), type="CREDIT", asset="PTS", amount="1", description="join"),
                ev("p2", "b", t(9, day=2), "auth", n=12, ref="B1"),
                op("set_participant_status", "p3", "b", t(10, day=2), status="CLOSED"),
                op("void_hold", "p4", "b", t(11, day=2), asset="PTS", reference_id="B1", description="void"),
                op("hold", "p5", "b", t(12, day=2), asset="PTS", amount="1", description="blocked"))
    assert out["p4"] == ("COMPLETED", None) and out["p5"] == ("FAILED", "participant_inactive")
    assert s.balance("b", "PTS") == (D(1), D(0), D(0))


def test_the_cli_applies_a_void_hold_and_verify_passes(tmp_path):
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT])
    s.run(ev("e1", "a", t(10), "auth", n=12, ref="A9"))
    res = cli("op", "void_hold", "--programs", str(s.programs), "--program", "shop", "--key", "v1",
              "--external-id", "a", "--timestamp", t(11), "--param", "asset=PTS", "--param", "reference_id=A9",
              "--db", str(s.db), "--json")
    assert res.returncode == 0, res.stderr
    assert '"status": "COMPLETED"' in res.stdout
    assert s.balance("a", "PTS") == NONE
    assert cli("verify", "--db", str(s.db)).returncode == 0
    s.check()


def test_reference_ids_are_literals_or_expressions_and_a_bad_value_fails_the_event(tmp_path):
    rules = [on("auth", {"type": "CREDIT", "asset": "PTS", "amount": "5", "bucket": "HELD", "reference_id": "fixed-ref"}),
             on("auth_num", {"type": "CREDIT", "asset": "PTS", "amount": "3", "bucket": "HELD",
                             "reference_id": "event.ref"}),
             on("release", {"type": "RELEASE", "asset": "PTS", "reference_id": "event.ref"})]
    s = Scenario(tmp_path, "shop", rules, [LOT])
    out = s.run(ev("e1", "a", t(10), "auth"),
                ev("e2", "a", t(11), "auth_num", ref=12345),
                ev("e3", "a", t(12), "auth_num", ref=True),
                ev("e4", "a", t(13), "release", ref="fixed-ref"))
    assert out["e3"] == ("FAILED", "expression_error")
    assert s.entries("e1") == [("CREDIT", D(5), "fixed-ref")]
    assert s.entries("e2") == [("CREDIT", D(3), "12345")]
    assert s.entries("e4") == [("RELEASE", D(5), "fixed-ref")]
    assert s.balance("a", "PTS") == (D(5), D(3), D(0))


def test_inactive_participants_cannot_hold_or_release_but_can_be_voided(tmp_path):
    s = Scenario(tmp_path, "shop", LOT_RULES, [LOT])
    s.run(ev("e1", "a", t(10), "earn", n=20), ev("e2", "a", t(11), "auth", n=6, ref="V"),
          ev("e3", "a", t(12), "hold", n=4, ref="H"))
    out = s.run(op("set_participant_status", "s1", "a", t(13), status="SUSPENDED"),
                ev("e4", "a", t(14), "hold", n=1, ref="H"),
                ev("e5", "a", t(15), "release", ref="H"),
                ev("e6", "a", t(16), "forfeit_held", n=1),
                ev("e7", "a", t(17), "settle", n=6, ref="V"),
                ev("e8", "a", t(18), "void", ref="V"))
    assert [out[k] for k in ("e4", "e5", "e6", "e7")] == [("FAILED", "participant_inactive")] * 4
    assert out["e8"] == ("COMPLETED", None)
    assert s.balance("a", "PTS") == (D(20) - 4, D(4), D(0))


@pytest.mark.parametrize("action, message", [
    ({"type": "HOLD", "asset": "CASH", "amount": "1", "reference_id": "r"}, "reference_id applies to LOT assets"),
    ({"type": "VOID_HOLD", "asset": "CASH", "reference_id": "r"}, "VOID_HOLD applies to LOT assets"),
    ({"type": "VOID_HOLD", "asset": "PTS"}, "`reference_id` is required for VOID_HOLD"),
    ({"type": "VOID_HOLD", "asset": "PTS", "reference_id": "r", "amount": "1"}, ".amount: VOID_HOLD takes no amount"),
    ({"type": "HOLD", "asset": "PTS", "amount": "1", "expires_at": "1h"}, ".expires_at: expires_at applies to CREDIT only"),
])
def test_the_catalog_names_the_rule_and_field_of_a_misplaced_hold_field(tmp_path, action, message):
    path = write_program(tmp_path / "shop.yaml", program_spec("shop", [on("x", action)],
                                                                assets=[LOT, asset("CASH", scale=2)]))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert message in str(err.value) and "rules[0] (x)" in str(err.value)


@pytest.mark.parametrize("action, says", [
    # semantics.md 7: DEBIT takes AVAILABLE value back to its source, HOLD moves AVAILABLE to
    # HELD, RELEASE HELD to AVAILABLE: a bucket is not a choice they have
    ({"type": "DEBIT", "asset": "CASH", "amount": "1", "bucket": "HELD"},
     "bucket: DEBIT takes value from AVAILABLE only (semantics.md 7); to take HELD value, RELEASE it "
     "first or FORFEIT it with bucket: HELD"),
    ({"type": "HOLD", "asset": "CASH", "amount": "1", "bucket": "HELD"},
     "bucket: HOLD always moves AVAILABLE to HELD (semantics.md 7); it takes no bucket: remove the field"),
    ({"type": "RELEASE", "asset": "CASH", "amount": "1", "bucket": "AVAILABLE"},
     "bucket: RELEASE always moves HELD to AVAILABLE (semantics.md 7); it takes no bucket: remove the field"),
])
def test_a_bucket_on_an_action_that_has_no_choice_is_a_load_error_that_says_why(tmp_path, action, says):
    programs = write_program(tmp_path / "programs" / "shop.yaml",
                             program_spec("shop", [on("x", action)], assets=[asset("CASH", scale=2)]))
    for command in (["validate", "--programs", str(programs)],
                    ["run", "--programs", str(programs), "--events", str(tmp_path / "none.parquet"),
                     "--db", str(tmp_path / "w.duckdb")]):
        res = cli(*command)
        out = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 2 and "not supported yet" not in out, out
        assert f"shop.yaml" in out and f"rules[0] (x).actions[0].{says}" in out, out
    assert not (tmp_path / "w.duckdb").exists()


def test_a_debit_may_say_bucket_available_which_is_what_it_takes(tmp_path):
    rules = [on("earn", {"type": "CREDIT", "asset": "CASH", "amount": "5"}),
             on("spend", {"type": "DEBIT", "asset": "CASH", "amount": "2", "bucket": "AVAILABLE"})]
    s = Scenario(tmp_path, "shop", rules, [asset("CASH", scale=2)])
    out = s.run(ev("e1", "a", t(10), "earn"), ev("e2", "a", t(11), "spend"))
    assert out == {"e1": ("COMPLETED", None), "e2": ("COMPLETED", None)}
    assert s.balance("a", "CASH") == (D(3), D(0), D(0))


def test_maintain_expires_held_and_provisional_lots_at_their_instants(tmp_path):
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "expires_at": "24h"}),
             on("auth", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "bucket": "HELD",
                         "reference_id": "event.ref", "expires_at": "48h"}),
             *LOT_RULES[3:]]
    s = Scenario(tmp_path, "shop", rules, [LOT])
    s.run(ev("e1", "a", t(10), "earn", n=30), ev("e2", "a", t(11), "hold_plain", n=12),
          ev("e3", "a", t(12), "auth", n=7, ref="M"))
    # day 2 at 11:00: only the earn lot (day 1 10:00 + 24h) is due, its held part included
    res = cli("maintain", "--as-of", t(11, day=2), "--db", str(s.db), "--json")
    assert res.returncode == 0, res.stderr
    assert s.balance("a", "PTS") == (D(0), D(7), D(0))
    s.check()
    res = cli("maintain", "--as-of", t(12, day=3), "--db", str(s.db), "--json")
    assert res.returncode == 0, res.stderr
    assert s.balance("a", "PTS") == NONE
    s.check()
    assert query(s.db, "SELECT total_expired FROM ledger_summary") == [(D(30) + 7,)]
