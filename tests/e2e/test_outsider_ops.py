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
    # the id of a redemption made in the same batch: md5('operation:' program_id ':' key) (docs/tables.md)
    rid2 = lg.sql("SELECT md5('operation:' || id::VARCHAR || ':r2')::UUID::VARCHAR FROM programs")[0][0]
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
