"""Outsider round (session 19): small contract items, each reproduced through the `perkflow` CLI
into a real DuckDB file and compared with semantics.md and scrip-reference.md, worked out by hand
(docs/decisions.md where both are silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, on, op, program

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
INVALID = ("FAILED", "invalid_operation")


def test_set_counter_reset_after_must_be_duration_text(tmp_path):
    """scrip-reference 15: `reset_after` is "a Go-style duration string"; `""` removes auto-reset,
    omitting it leaves it unchanged. `"0s"` is refused (not a positive duration); the JSON number
    0 was read as "" and silently removed the counter's auto-reset. A number (0 or 5) is not
    duration text: invalid_operation, and the counter keeps its 24h auto-reset. By hand: c = 5
    with 24h; the three refused sets change nothing."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1, 11), "earn", n=1)])
    lg.run([], [op("set_counter", "s1", "u1", at(1), key="c", value="5", reset_after="24h"),
                op("set_counter", "s2", "u1", at(1, 13), key="c", value="6", reset_after=0),
                op("set_counter", "s3", "u1", at(1, 14), key="c", value="7", reset_after="0s"),
                op("set_counter", "s4", "u1", at(1, 15), key="c", value="8", reset_after=5)])
    st = lg.status()
    assert st["s1"] == OK and st["s2"] == st["s3"] == st["s4"] == INVALID, st
    rows = lg.sql("SELECT number_value, reset_after_us FROM participant_state WHERE kind = 'COUNTER'")
    assert [(D(v), r) for v, r in rows] == [(D(5), 24 * 3600 * 10**6)], rows


def test_an_empty_description_or_reason_is_refused(tmp_path):
    """scrip-reference 16/12/17: a redemption's, adjust's, transfer's `description` and a
    reversal's `reason` are 1-500 characters. `""` was accepted (the entry then took the
    operation's name as its description). Now invalid_operation, nothing moved; a one-character
    description is fine. By hand: 100 earned; r1 ("") and i1 ("") refused, r2 ("x") takes 10:
    90; v1 (reason "") refused: still 90."""
    mug = {"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "10",
           "status": "ACTIVE"}
    lg = Ledger(tmp_path, program([EARN], rewards=[mug]))
    lg.run([ev("e1", "u1", at(1), "earn", n=100)])
    lg.run([], [op("redeem", "r1", "u1", at(2), asset="PTS", amount="10", description=""),
                op("redeem_item", "i1", "u1", at(2, 13), reward="mug", description=""),
                op("redeem", "r2", "u1", at(2, 14), asset="PTS", amount="10", description="x"),
                op("reverse_redemption", "v1", "u1", at(2, 15), redemption="r2", reason="")])
    st = lg.status()
    assert st["r1"] == st["i1"] == st["v1"] == INVALID and st["r2"] == OK, st
    assert lg.balance("u1") == (D(90), D(0), D(0))


def test_upsert_participant_attributes_must_be_a_map(tmp_path):
    """scrip-reference 7: `attributes` is a key->string map. `""` and `0` were read as "no
    attributes" (the operation COMPLETED doing nothing asked); `{}` and an absent field are no
    attributes. By hand: a1 ("") and a2 (0) invalid_operation; a3 ({}) and a4 (absent) complete."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=1)])
    lg.run([], [op("upsert_participant", "a1", "u1", at(2), attributes=""),
                op("upsert_participant", "a2", "u1", at(2, 13), attributes=0),
                op("upsert_participant", "a3", "u1", at(2, 14), attributes={}),
                op("upsert_participant", "a4", "u1", at(2, 15), status="ACTIVE")])
    st = lg.status()
    assert st["a1"] == st["a2"] == INVALID and st["a3"] == st["a4"] == OK, st


def test_redeem_item_past_max_total_says_what_is_left(tmp_path):
    """A UNIT_BASED reward with max_total 3: after 2 redeemed, asking 2 more fails out_of_stock
    (scrip-reference 18). The message said "is out of stock (2 of 3 redeemed)", which reads as
    none left while one is: it must say 1 of 3 left and what was asked (2). By hand: 100 earned,
    q1 takes 2 (80); q2 asks 2, fails; q3 takes the last (70); q4 asks 1 of none left."""
    mug = {"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "10",
           "status": "ACTIVE", "max_total": 3}
    lg = Ledger(tmp_path, program([EARN], rewards=[mug]))
    lg.run([ev("e1", "u1", at(1), "earn", n=100)])
    lg.run([], [op("redeem_item", "q1", "u1", at(2), reward="mug", quantity=2),
                op("redeem_item", "q2", "u1", at(2, 13), reward="mug", quantity=2),
                op("redeem_item", "q3", "u1", at(2, 14), reward="mug", quantity=1),
                op("redeem_item", "q4", "u1", at(2, 15), reward="mug", quantity=1)])
    st = lg.status()
    assert st["q1"] == st["q3"] == OK and st["q2"] == st["q4"] == ("FAILED", "out_of_stock"), st
    assert lg.balance("u1") == (D(70), D(0), D(0))
    msg = dict(lg.sql("SELECT idempotency_key, error_message FROM operations WHERE status = 'FAILED'"))
    assert "1 of 3 left" in msg["q2"] and "2 asked" in msg["q2"], msg
    assert "0 of 3 left" in msg["q4"] and "1 asked" in msg["q4"], msg


def test_counter_and_attribute_value_errors_name_their_field(tmp_path):
    """semantics.md 13 / 7: a failed action says what failed. A COUNTER whose value is text said
    "counter value: amount must be a number", and a SET_ATTRIBUTE whose value is NaN said
    "attribute value: amount must be a finite number, got nan": neither is an amount. By hand:
    both events FAIL expression_error (semantics.md 7), and their messages name the counter value
    and the attribute value, never an amount."""
    lg = Ledger(tmp_path, program([
        on("count", {"type": "COUNTER", "key": "visits", "value": "event.s"}),
        on("attr", {"type": "SET_ATTRIBUTE", "key": "ratio", "value": 'double("NaN")'})]))
    lg.run([ev("c1", "u1", at(1), "count", s="two"), ev("a1", "u1", at(1, 13), "attr")])
    msg = dict(lg.sql("SELECT idempotency_key, error_message FROM events"))
    assert lg.status()["c1"] == lg.status()["a1"] == ("FAILED", "expression_error"), (lg.status(), msg)
    assert "counter value must be a number" in msg["c1"] and "amount" not in msg["c1"], msg
    assert "attribute value must be a finite number" in msg["a1"] and "amount" not in msg["a1"], msg


def test_an_amount_past_the_ledger_range_on_an_asset_with_a_max_exceeds_the_max(tmp_path):
    """semantics.md 7: an amount must be "at most the asset's max_transaction_amount; otherwise
    the action fails (... max_transaction_amount_exceeded)". A max is below 10^20 (a ledger
    amount), so 1e20 exceeds it; it failed amount_out_of_range, perkflow's code for an amount
    the ledger cannot hold when no contract rule names the failure (docs/decisions.md "Ledger").
    By hand, max 100: 1e20 (event amount, static or from the payload, and an adjust) fails
    max_transaction_amount_exceeded; 1e19 (fits DECIMAL(38, 18)) likewise; without a max, 1e20 is
    still amount_out_of_range."""
    capped = {"symbol": "PTS", "name": "Points", "scale": 2, "max_transaction_amount": "100"}
    free = {"symbol": "FREE", "name": "Free", "scale": 2}
    lg = Ledger(tmp_path, program([
        on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
        on("big", {"type": "CREDIT", "asset": "PTS", "amount": "100000000000000000000"}),
        on("free", {"type": "CREDIT", "asset": "FREE", "amount": "event.n"})], [capped, free]))
    lg.run([ev("e1", "u1", at(1), "earn", n=1e20), ev("e2", "u1", at(1, 13), "earn", n=1e19),
            ev("e3", "u1", at(1, 14), "big"), ev("e4", "u1", at(1, 15), "free", n=1e20),
            ev("e5", "u1", at(1, 16), "earn", n=5)],
           [op("adjust", "a1", "u1", at(2), type="CREDIT", asset="PTS", amount="100000000000000000000",
               description="x")])
    st = lg.status()
    exceeded = ("FAILED", "max_transaction_amount_exceeded")
    assert st["e1"] == st["e2"] == st["e3"] == exceeded and st["e5"] == OK, st
    assert st["e4"] == ("FAILED", "amount_out_of_range") and st["a1"] == exceeded, st
    assert lg.balance("u1") == (D(5), D(0), D(0))


def test_ndjson_lines_that_are_not_objects_are_rejected_rows_and_the_rest_runs(tmp_path):
    """semantics.md 13: "Malformed rows (... event_data that is not a JSON object ...) go to
    rejected_rows with the source file, row number, reason code and the raw row; valid rows in the
    same file are processed." An NDJSON line that is not JSON (or not an object) stopped the
    whole run, exit 2. Through `perkflow run`, an event file of 5 non-blank lines (a blank one
    between): row 2 is not JSON, row 4 an array; rows 1, 3 earn 10 and 5; row 5 names an unknown
    program (its raw row is read again from the file: the 5th row, not the 3rd object). By hand:
    events read 5 = 2 completed + 3 rejected; the operations file (an adjust of 3, then `42`) 2 =
    1 + 1: u1 has 10 + 5 + 3 = 18."""
    from tests.helpers.io import cli

    lg = Ledger(tmp_path, program([EARN]))

    def line(key, n, prog="shop"):
        return json.dumps({"program_id": prog, "idempotency_key": key, "external_id": "u1",
                           "event_timestamp": at(1), "event_data": {"type": "earn", "n": n}})
    lines = [line("e1", 10), "{oops", "", line("e3", 5), "[1, 2]", line("e5", 1, "nope")]
    events = tmp_path / "e.ndjson"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ops = tmp_path / "o.ndjson"
    ops.write_text("\n".join([json.dumps({"operation": "adjust", "program_id": "shop", "idempotency_key": "o1",
                                          "external_id": "u1", "timestamp": at(2),
                                          "params": {"type": "CREDIT", "asset": "PTS", "amount": "3"}}),
                              "42"]) + "\n", encoding="utf-8")
    res = cli("run", "--programs", str(lg.programs), "--db", str(lg.db), "--events", str(events),
              "--operations", str(ops), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    assert counts["read"] == 7 and counts["rejected"] == 4 and counts["completed"] == 3, counts
    rows = lg.sql("SELECT source, row_number, reason, raw FROM rejected_rows ORDER BY source, row_number")
    assert [(s, n, r) for s, n, r, _ in rows] == [(str(events), 2, "invalid_row"), (str(events), 4, "invalid_row"),
                                                  (str(events), 5, "unknown_program"), (str(ops), 2, "invalid_row")]
    assert rows[0][3] == "{oops" and rows[1][3] == "[1, 2]" and rows[3][3] == "42"
    assert json.loads(rows[2][3])["idempotency_key"] == "e5"
    assert lg.balance("u1") == (D(18), D(0), D(0))
