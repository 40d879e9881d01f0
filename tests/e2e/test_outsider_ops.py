"""Outsider round: direct operations (semantics.md 2.3, 4; scrip-reference.md 5, 12, 13, 15-17,
21) as a black box. Each test writes program files and real operation rows, runs the `perkflow`
CLI (`perkflow run --operations`, `perkflow op`) in a subprocess into a real DuckDB file, and
compares the ledger with what the contract and Scrip's endpoints say, worked out by hand
(docs/decisions.md "Operations and rewards" where both are silent).
"""

from __future__ import annotations

import json
from decimal import Decimal as D

from tests.e2e.test_contract_audit import LOT, OK, SIMPLE, Ledger, at, ev, on, op, program
from tests.helpers.io import cli

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
INVALID = ("FAILED", "invalid_operation")


def mug(**fields) -> dict:
    return {"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "10",
            "status": "ACTIVE", **fields}


def perkflow_op(lg: Ledger, name: str, key: str, who: str | None, when: str, **params) -> dict:
    """`perkflow op NAME --json` with these params; returns what it prints."""
    args = ["op", name, "--programs", str(lg.programs), "--db", str(lg.db), "--program", "shop", "--key", key,
            "--timestamp", when, "--params", json.dumps(params), "--json"]
    res = cli(*args, *(["--external-id", who] if who else []))
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_s16_a_redemption_is_reversed_by_its_redemption_id(tmp_path):
    """scrip-reference 16: "Reverse: POST /v1/redemptions/{id}/reverse", the redemption named by
    its id (the redemption object's `id`, which `perkflow op redeem --json` prints as Scrip's
    create answers it, and the `redemptions` table holds). perkflow named it only by the
    redeeming operation's idempotency key (`params.redemption`, still accepted: documented);
    `params.redemption_id` was not a field and the reversal failed. By hand: 100 earned; 30
    redeemed (70); 10 back by id (80), the other 20 back by the id in capitals (100); a third
    reversal finds nothing left (over_reversal); an id that names no redemption of the program is
    redemption_not_found; a redemption and its reversal by id in one batch work too."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=100)])
    out = perkflow_op(lg, "redeem", "r1", "u1", at(2), asset="PTS", amount="30", description="voucher")
    rid = lg.sql("SELECT id::VARCHAR FROM redemptions WHERE idempotency_key = 'r1'")[0][0]
    assert out["status"] == "COMPLETED" and out["redemption_id"] == rid
    lg.run([], [op("reverse_redemption", "v1", "u1", at(3), redemption_id=rid, amount="10", reason="partial"),
                op("reverse_redemption", "v2", "u1", at(3, 13), redemption_id=rid.upper(), reason="rest"),
                op("reverse_redemption", "v3", "u1", at(3, 14), redemption_id=rid, reason="again"),
                op("reverse_redemption", "v4", "u1", at(3, 15), redemption_id="0" * 32, reason="nobody")])
    st = lg.status()
    assert st["v1"] == st["v2"] == OK
    assert st["v3"] == ("FAILED", "over_reversal") and st["v4"] == ("FAILED", "redemption_not_found")
    assert lg.entries("v1") == [("REDEMPTION_REVERSAL", D(10))] and lg.entries("v2") == [("REDEMPTION_REVERSAL", D(20))]
    assert lg.balance("u1") == (D(100), D(0), D(0))
    assert lg.sql("SELECT reversed_amount, status FROM redemptions") == [(D(30), "FULLY_REVERSED")]
    # the id of a redemption made in the same batch: the UUIDv5 of 'operation:' program_id ':' key (docs/tables.md)
    rid2 = lg.sql("SELECT name_uuid('operation:' || id::VARCHAR || ':r2')::VARCHAR FROM programs")[0][0]
    lg.run([], [op("redeem", "r2", "u1", at(4), asset="PTS", amount="40"),
                op("reverse_redemption", "v5", "u1", at(4, 13), redemption_id=rid2, amount="15")])
    assert lg.status()["r2"] == lg.status()["v5"] == OK
    assert lg.balance("u1") == (D(100) - 40 + 15, D(0), D(0))
    lg.verify()


def test_s12_allow_negative_on_a_credit_adjust_is_refused(tmp_path):
    """scrip-reference 12: adjust's `allow_negative:true` "is allowed on DEBIT only". A CREDIT
    with it was accepted and the flag meant nothing: the caller who sent a clawback as a CREDIT by
    mistake got value added with no word. Now it fails invalid_operation, nothing moved
    (docs/decisions.md); `allow_negative: false`, the body's default, says nothing and is accepted.
    The group version (scrip-reference 5: "same body as the participant adjust") likewise."""
    team = {"key": "team", "name": "Team", "members": [{"external_id": "u1", "role": "ADMIN"}]}
    lg = Ledger(tmp_path, program([EARN], groups=[team]))
    lg.run([ev("e1", "u1", at(1), "earn", n=5)],
           [op("adjust", "a1", "u1", at(2), type="CREDIT", asset="PTS", amount="7", allow_negative=True),
            op("adjust", "a2", "u1", at(2, 13), type="CREDIT", asset="PTS", amount="3", allow_negative=False),
            op("group_adjust", "g1", None, at(2, 14), group="team", type="CREDIT", asset="PTS", amount="4",
               allow_negative=True),
            op("adjust", "a3", "u1", at(2, 15), type="DEBIT", asset="PTS", amount="10", allow_negative=True)])
    st = lg.status()
    assert st["a1"] == INVALID and st["g1"] == INVALID
    assert st["a2"] == st["a3"] == OK
    assert lg.balance("u1") == (D(5) + 3 - 10, D(0), D(0))
    assert lg.sql("SELECT count(*) FROM balances WHERE entity_type = 'GROUP' AND available <> 0") == [(0,)]
    lg.verify()


def test_s12_allow_negative_false_as_text_does_not_overdraw(tmp_path):
    """scrip-reference 12: "A DEBIT fails when AVAILABLE is insufficient, unless
    allow_negative:true". `perkflow op --param NAME=VALUE` gives every value as text, and the text
    "false" was read as true (any non-empty text is, in Python): `--param allow_negative=false`
    overdrew the balance. By hand: 5 earned; a DEBIT of 8 with allow_negative "false" fails
    insufficient_balance (5 left), with "TRUE" it overdraws (-3); "maybe" is no true/false
    (invalid_operation)."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=5)])

    def debit(key: str, flag: str) -> dict:
        res = cli("op", "adjust", "--programs", str(lg.programs), "--db", str(lg.db), "--program", "shop",
                  "--key", key, "--external-id", "u1", "--timestamp", at(2), "--param", "type=DEBIT",
                  "--param", "asset=PTS", "--param", "amount=8", "--param", f"allow_negative={flag}", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    assert debit("d1", "false")["error_code"] == "insufficient_balance"
    assert lg.balance("u1") == (D(5), D(0), D(0))
    assert debit("d2", "maybe")["error_code"] == "invalid_operation"
    assert debit("d3", "TRUE")["status"] == "COMPLETED"
    assert lg.balance("u1") == (D(-3), D(0), D(0))
    lg.verify()


def test_s2_3_each_operation_refuses_the_fields_of_other_operations(tmp_path):
    """2.3: each row carries "the fields of the matching Scrip endpoint"; unknown fields are errors
    (2.1, docs/decisions.md "an operation's params take known fields only"). The check was of the
    union of every operation's fields, so a field of another operation passed on this one and
    was ignored: an adjust CREDIT with `expires_at` made a lot that never expires (adjust has no
    expiry: set_tier's field), a `redeem` naming a `reward` redeemed a plain amount, a transfer
    with a top-level `amount` moved only its recipients' amounts, a `redeem_item` with an `asset`
    paid in the reward's asset whatever asset it named, a `hold` with `allow_negative` held what there was. Each now
    fails invalid_operation naming the field, nothing moved; the Scrip body fields that restate
    the row (`program_id`, `idempotency_key`, the participant) are still accepted everywhere."""
    gems = {**SIMPLE, "symbol": "GEM", "name": "Gems"}
    lg = Ledger(tmp_path, program([EARN], [LOT, gems], rewards=[mug()]))
    lg.run([ev("e1", "u1", at(1), "earn", n=50), ev("e2", "u2", at(1), "earn", n=1)])
    lg.run([], [op("adjust", "x1", "u1", at(2), type="CREDIT", asset="PTS", amount="5", expires_at="24h"),
                op("redeem", "x2", "u1", at(2, 13), asset="PTS", amount="10", reward="mug"),
                op("transfer", "x3", "u1", at(2, 14), asset="PTS", amount="20",
                   recipients=[{"external_id": "u2", "amount": "2"}]),
                op("redeem_item", "x4", "u1", at(2, 15), reward="mug", asset="GEM"),
                op("hold", "x5", "u1", at(2, 16), asset="PTS", amount="20", allow_negative=True),
                op("tag", "x6", "u1", at(2, 17), tag="vip", value="gold"),
                op("adjust", "ok", "u1", at(2, 18), type="CREDIT", asset="PTS", amount="1", program_id="shop",
                   idempotency_key="ok", external_id="u1", description="restating the row")])
    st = lg.status()
    assert {k: st[k] for k in ("x1", "x2", "x3", "x4", "x5", "x6")} == dict.fromkeys(("x1", "x2", "x3", "x4", "x5", "x6"), INVALID)
    assert st["ok"] == OK
    messages = dict(lg.sql("SELECT idempotency_key, error_message FROM operations WHERE status = 'FAILED'"))
    assert "expires_at" in messages["x1"] and "reward" in messages["x2"] and "amount" in messages["x3"]
    assert "asset" in messages["x4"] and "allow_negative" in messages["x5"] and "value" in messages["x6"]
    assert lg.balance("u1") == (D(51), D(0), D(0)) and lg.balance("u2") == (D(1), D(0), D(0))
    assert lg.state("u1") == {} and lg.sql("SELECT count(*) FROM redemptions") == [(0,)]
    lg.verify()


def test_s15_a_unit_reward_takes_a_quantity_and_an_amount_reward_an_amount(tmp_path):
    """scrip-reference 16, catalog redemption: `"quantity":2 (UNIT_BASED, default 1) | "amount"
    (AMOUNT_BASED)`. A UNIT_BASED redemption given an `amount` ignored it and took 1 unit (the
    caller asked for 30 and paid 10); an AMOUNT_BASED one given a `quantity` ignored it. Each
    now fails invalid_operation, nothing redeemed. By hand: 100 earned; mug (UNIT_BASED, 10 each)
    with quantity 2 costs 20 (80 left); gift (AMOUNT_BASED, minimum 5) with amount 7 (73 left)."""
    gift = {"key": "gift", "name": "Gift card", "redemption_type": "AMOUNT_BASED", "asset": "PTS", "unit_cost": "5",
            "status": "ACTIVE"}
    lg = Ledger(tmp_path, program([EARN], rewards=[mug(), gift]))
    lg.run([ev("e1", "u1", at(1), "earn", n=100)],
           [op("redeem_item", "m1", "u1", at(2), reward="mug", amount="30"),
            op("redeem_item", "g1", "u1", at(2, 13), reward="gift", amount="7", quantity=3),
            op("redeem_item", "m2", "u1", at(2, 14), reward="mug", quantity=2),
            op("redeem_item", "g2", "u1", at(2, 15), reward="gift", amount="7")])
    st = lg.status()
    assert st["m1"] == st["g1"] == INVALID and st["m2"] == st["g2"] == OK
    assert lg.entries("m2") == [("REDEMPTION", D(20))] and lg.entries("g2") == [("REDEMPTION", D(7))]
    assert lg.balance("u1") == (D(73), D(0), D(0))
    lg.verify()


def test_s21_an_operation_description_is_text_of_at_most_500_characters(tmp_path):
    """scrip-reference 21: descriptions of "balance operations, transfers, redemptions, fund/burn"
    are text of at most 500 characters (Scrip answers 400 past it); docs/decisions.md: a params
    field of an unexpected shape fails its operation (invalid_operation) and never stops the
    batch (semantics.md 13: exit 1 is for internal errors). A list as `description` stopped the
    whole run with an internal error (exit 1, nothing committed); 501 characters were stored.
    By hand: 10 earned; the 500-character adjust credits 1 (11), the others fail, the batch
    commits."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=10)],
           [op("adjust", "d1", "u1", at(2), type="CREDIT", asset="PTS", amount="1", description=["a", "list"]),
            op("adjust", "d2", "u1", at(2, 13), type="CREDIT", asset="PTS", amount="1", description="x" * 501),
            op("redeem", "d3", "u1", at(2, 14), asset="PTS", amount="1", description={"a": 1}),
            op("reverse_redemption", "d4", "u1", at(2, 15), redemption="d3", reason=7),
            op("adjust", "d5", "u1", at(2, 16), type="CREDIT", asset="PTS", amount="1", description="y" * 500)])
    st = lg.status()
    assert st["d1"] == st["d2"] == st["d3"] == st["d4"] == INVALID and st["d5"] == OK
    assert lg.balance("u1") == (D(11), D(0), D(0))
    assert lg.sql("SELECT description FROM journal_entries WHERE action_type = 'ADJUSTMENT'") == [("y" * 500,)]
    lg.verify()


def test_s3_a_set_tier_expiry_finer_than_a_microsecond_is_floored_like_a_row_timestamp(tmp_path):
    """Decision (docs/decisions.md "Time": the ledger's clock is the microsecond; a row's timestamp
    finer than that is floored when read): set_tier's `expires_at` is an instant of the same clock
    and is floored likewise, so it is never later than what was asked. By hand: gold set at 09:00
    to expire at 10:00:00.0000009, which is 10:00:00.000000; a check at 09:59:59.999999 still
    sees gold, one at 10:00:00.0000003 (also 10:00:00.000000) is at the expiry's instant, which
    happens first (semantics.md 3: "everything due at or before t ... has happened")."""
    tier = {"key": "status", "levels": [{"key": "gold", "rank": 1}]}
    check = {"name": "check", "key": "check", "condition": 'event.type == "check" && "status" in participant.tiers',
             "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]}
    lg = Ledger(tmp_path, program([EARN, check], tiers=[tier]))
    lg.run([ev("e1", "u1", at(1), "earn", n=1)],
           [op("set_tier", "t1", "u1", "2025-03-02T09:00:00Z", tier="status", level="gold",
               expires_at="2025-03-02T10:00:00.000000900Z")])
    lg.run([ev("c1", "u1", "2025-03-02T09:59:59.999999Z", "check", n=10),
            ev("c2", "u1", "2025-03-02T10:00:00.000000300Z", "check", n=100)])
    assert lg.entries("c1") == [("CREDIT", D(10))] and lg.entries("c2") == []
    rows = lg.sql("SELECT to_level, reason, effective_at FROM tier_history ORDER BY seq")
    assert [(to, reason) for to, reason, _ in rows] == [("gold", "OPERATION"), (None, "EXPIRY")]
    assert rows[1][2].isoformat().startswith("2025-03-02T10:00:00") and rows[1][2].microsecond == 0


def test_s16_a_reversal_by_redemption_id_needs_no_participant(tmp_path):
    """scrip-reference 16: "Reverse: POST /v1/redemptions/{id}/reverse" names no participant: the
    redemption names its redeemer. A reverse_redemption row without `external_id` /
    `participant_id` was quarantined (missing_required_field), so the Scrip call had no perkflow
    form. Now the participant is optional for it (docs/decisions.md): the value goes back to the
    redeemer. By hand: u1 earns 50, redeems 20 (30); a participant-less reversal of 5 by id (35)
    and one of 5 by key (40); a participant-less reversal of an unknown id is
    redemption_not_found; the redemption shows 10 reversed."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=50)], [op("redeem", "r1", "u1", at(2), asset="PTS", amount="20")])
    rid = lg.sql("SELECT id::VARCHAR FROM redemptions")[0][0]
    out = lg.run([], [op("reverse_redemption", "v1", None, at(3), redemption_id=rid, amount="5", reason="goodwill"),
                      op("reverse_redemption", "v2", None, at(3, 13), redemption="r1", amount="5"),
                      op("reverse_redemption", "v3", None, at(3, 14), redemption_id="f" * 32)])
    assert out["rejected"] == 0
    st = lg.status()
    assert st["v1"] == st["v2"] == OK and st["v3"] == ("FAILED", "redemption_not_found")
    assert lg.balance("u1") == (D(40), D(0), D(0))
    assert lg.sql("SELECT reversed_amount, status FROM redemptions") == [(D(10), "PARTIALLY_REVERSED")]
    lg.verify()


def test_s7_an_adjust_debit_takes_available_value_only(tmp_path):
    """7: "DEBIT | participant AVAILABLE -> SYSTEM_ISSUANCE/wallet ... allow_negative: true
    overdraws the rest"; 2.3: adjust is that CREDIT/DEBIT (scrip-reference 12: "A DEBIT fails
    when AVAILABLE is insufficient, unless allow_negative"). An adjust DEBIT with `bucket: HELD`
    took reserved value back to issuance, and with allow_negative drove HELD below zero (held -5,
    which no hold reserved); the DEBIT action refuses that bucket at load (docs/decisions.md).
    Now it fails invalid_operation, nothing moved. By hand: u1 earns 10 and gets 6 credited into
    HELD; DEBIT 2 from HELD and an overdrawing DEBIT 5 from HELD of u2 (held 0) fail, as does a
    group's; DEBIT 3 (AVAILABLE, said or not) leaves u1 at 7 available, 6 held."""
    team = {"key": "team", "name": "Team", "members": [{"external_id": "u1", "role": "ADMIN"}]}
    lg = Ledger(tmp_path, program([EARN], groups=[team]))
    lg.run([ev("e1", "u1", at(1), "earn", n=10), ev("e2", "u2", at(1), "earn", n=1)],
           [op("adjust", "c1", "u1", at(2), type="CREDIT", asset="PTS", amount="6", bucket="HELD"),
            op("adjust", "d1", "u1", at(2, 13), type="DEBIT", asset="PTS", amount="2", bucket="HELD"),
            op("adjust", "d2", "u2", at(2, 14), type="DEBIT", asset="PTS", amount="5", bucket="HELD",
               allow_negative=True),
            op("group_adjust", "d3", None, at(2, 15), group="team", type="DEBIT", asset="PTS", amount="1",
               bucket="HELD", allow_negative=True),
            op("adjust", "d4", "u1", at(2, 16), type="DEBIT", asset="PTS", amount="2", bucket="AVAILABLE"),
            op("adjust", "d5", "u1", at(2, 17), type="DEBIT", asset="PTS", amount="1")])
    st = lg.status()
    assert st["d1"] == st["d2"] == st["d3"] == INVALID
    assert st["c1"] == st["d4"] == st["d5"] == OK
    assert lg.balance("u1") == (D(7), D(6), D(0)) and lg.balance("u2") == (D(1), D(0), D(0))
    assert lg.sql("SELECT count(*) FROM balances WHERE entity_type = 'GROUP' AND (available <> 0 OR held <> 0)") == [(0,)]
    lg.verify()


def test_s7_set_counter_takes_a_counter_value_and_a_positive_reset_after(tmp_path):
    """7: COUNTER's `reset_after` "makes it reset lazily to 0 once that long has passed since the
    last reset" (a COUNTER action with a reset_after that is not positive is a load error);
    counters are exact DECIMAL(38, 18) values (docs/decisions.md "Counters"; a COUNTER past 20
    integer digits fails amount_out_of_range). set_counter, Scrip's set-counter body, took
    `reset_after: "0s"`, after which every batch touching the participant stopped with an internal
    error (exit 1: a division by zero), `"-5h"` (the counter reset at once), a value of 1e30
    (stored as null) and one of 19 decimals (stored rounded to 0). Each now fails, nothing set:
    reset_after and 19 decimals invalid_operation, 1e30 amount_out_of_range. By hand: the valid
    set leaves n = 2.5, and a later event of the participant runs (exit 0)."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=1)],
           [op("set_counter", "c1", "u1", at(2), key="n", value="2.5"),
            op("set_counter", "c2", "u1", at(2, 13), key="z", value="1", reset_after="0s"),
            op("set_counter", "c3", "u1", at(2, 14), key="m", value="1", reset_after="-5h"),
            op("set_counter", "c4", "u1", at(2, 15), key="big", value="1e30"),
            op("set_counter", "c5", "u1", at(2, 16), key="tiny", value="0.0000000000000000001")])
    st = lg.status()
    assert st["c1"] == OK and st["c2"] == st["c3"] == st["c5"] == INVALID
    assert st["c4"] == ("FAILED", "amount_out_of_range")
    assert lg.state("u1") == {("COUNTER", "n"): D("2.5")}
    lg.run([ev("e2", "u1", at(3), "earn", n=1)])
    assert lg.balance("u1") == (D(2), D(0), D(0))


def test_s2_3_params_that_restate_the_row_must_be_the_rows(tmp_path):
    """2.3: a row has `program_id`, `idempotency_key`, the target, and "the fields of the matching
    Scrip endpoint"; docs/decisions.md accepts Scrip body fields that restate the row
    (program_id, idempotency_key, external_id, participant_id) and already fails a transfer whose
    pasted `source_external_id` is another participant. The row's own fields were not checked:
    an adjust row of u1 whose params said `external_id: u2` credited u1 (the caller meant u2),
    one whose params named another program or key ran in the row's. Each now fails
    invalid_operation, nothing moved; the same values in the row's spelling (its program's id in
    capitals, its participant's id) are accepted. By hand: u1 100 + 1 + 1, u2 100."""
    lg = Ledger(tmp_path, program([EARN]), program([EARN], key="other"))
    lg.run([ev("e1", "u1", at(1), "earn", n=100), ev("e2", "u2", at(1), "earn", n=100)])
    shop_id, = lg.sql("SELECT id::VARCHAR FROM programs WHERE key = 'shop'")[0]
    u1_id, = lg.sql("SELECT id::VARCHAR FROM participants WHERE external_id = 'u1'")[0]
    credit = dict(type="CREDIT", asset="PTS", amount="1")
    lg.run([], [op("adjust", "x1", "u1", at(2), **credit, external_id="u2"),
                op("adjust", "x2", "u1", at(2, 13), **credit, program_id="other"),
                op("adjust", "x3", "u1", at(2, 14), **credit, idempotency_key="another-key"),
                op("fund", "x4", None, at(2, 15), asset="PTS", amount="1", external_id="u2"),
                op("adjust", "ok1", "u1", at(2, 16), **credit, program_id=shop_id.upper(), participant_id=u1_id),
                op("adjust", "ok2", "u1", at(2, 17), **credit, external_id="u1", idempotency_key="ok2")])
    st = lg.status()
    assert st["x1"] == st["x2"] == st["x3"] == st["x4"] == INVALID and st["ok1"] == st["ok2"] == OK
    assert lg.balance("u1") == (D(102), D(0), D(0)) and lg.balance("u2") == (D(100), D(0), D(0))
    lg.verify()


def test_s16_a_partial_reversal_gives_a_quantity_or_an_amount_not_both(tmp_path):
    """scrip-reference 16: the reverse body takes `"amount" (partial, for raw or AMOUNT_BASED)`,
    `"quantity" (partial, for UNIT_BASED)`; leaving both out is a full reversal. Given both, the
    quantity was used and the amount ignored: `quantity: 1, amount: 30` gave back one unit (10)
    where the caller wrote 30. Now it fails invalid_operation, nothing given back. By hand: 100
    earned, 3 mugs of 10 (70); the ambiguous reversal fails; `quantity: 1` gives back 10 (80)."""
    lg = Ledger(tmp_path, program([EARN], rewards=[mug()]))
    lg.run([ev("e1", "u1", at(1), "earn", n=100)],
           [op("redeem_item", "m1", "u1", at(2), reward="mug", quantity=3),
            op("reverse_redemption", "v1", "u1", at(2, 13), redemption="m1", quantity=1, amount="30"),
            op("reverse_redemption", "v2", "u1", at(2, 14), redemption="m1", quantity=1)])
    st = lg.status()
    assert st["m1"] == st["v2"] == OK and st["v1"] == INVALID
    assert lg.balance("u1") == (D(80), D(0), D(0))
    assert lg.sql("SELECT reversed_quantity, reversed_amount FROM redemptions") == [(1, D(10))]


def test_s2_3_a_wallet_or_group_operation_row_names_no_participant(tmp_path):
    """2.3: each row has "the target"; `fund` / `burn` act on the program's wallet (Scrip's
    POST /v1/programs/{id}/assets/{assetId}/fund names no participant) and the group balance
    operations on the group in params (docs/decisions.md "Groups": "the row names no
    participant"). A row that also named a participant ran and ignored it (a caller who meant
    to credit u1 funded the wallet). It now fails invalid_operation, nothing moved. By hand: the
    wallet holds the 10 of the participant-less fund only; the group nothing."""
    pre = {**SIMPLE, "issuance_policy": "PREFUNDED"}
    team = {"key": "team", "name": "Team", "members": [{"external_id": "u1", "role": "ADMIN"}]}
    lg = Ledger(tmp_path, program([], [pre], groups=[team]))
    lg.run([], [op("upsert_participant", "p1", "u1", at(1)),
                op("fund", "f1", "u1", at(2), asset="PTS", amount="5"),
                op("group_adjust", "g1", "u1", at(2, 13), group="team", type="CREDIT", asset="PTS", amount="1"),
                op("fund", "f2", None, at(2, 14), asset="PTS", amount="10")])
    st = lg.status()
    assert st["f1"] == st["g1"] == INVALID and st["f2"] == OK
    assert lg.sql("SELECT entity_type, available FROM balances WHERE entity_type IN ('PROGRAM_WALLET', 'GROUP') "
                  "AND available <> 0") == [("PROGRAM_WALLET", D(10))]


def test_s17_a_transfer_recipient_takes_its_known_fields_only(tmp_path):
    """scrip-reference 17: `recipients`: entries of `{amount, one of external_id | participant_id |
    group_id}`; docs/decisions.md: an operation's params take known fields only. A recipient's
    other fields were ignored: `{"external_id": "u2", "amount": "1", "amout": "5"}` (a typo of
    the amount the caller meant) moved 1. It now fails invalid_operation naming the recipient and
    field, nothing moved; a recipient without an amount names it in the message. By hand: u1 and
    u2 keep 100 each but for the valid transfer of 3 (97, 103)."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=100), ev("e2", "u2", at(1), "earn", n=100)],
           [op("transfer", "t1", "u1", at(2), asset="PTS",
               recipients=[{"external_id": "u2", "amount": "1"}, {"external_id": "u2", "amount": "1", "amout": "5"}]),
            op("transfer", "t2", "u1", at(2, 13), asset="PTS", recipients=[{"external_id": "u2"}]),
            op("transfer", "t3", "u1", at(2, 14), asset="PTS", recipients=[{"external_id": "u2", "amount": "3"}])])
    st = lg.status()
    assert st["t1"] == st["t2"] == INVALID and st["t3"] == OK
    messages = dict(lg.sql("SELECT idempotency_key, error_message FROM operations WHERE status = 'FAILED'"))
    assert "recipients[1].amout" in messages["t1"] and "recipients[0].amount" in messages["t2"]
    assert lg.balance("u1") == (D(97), D(0), D(0)) and lg.balance("u2") == (D(103), D(0), D(0))
