"""Black-box checks of the second round of what earlier sessions noticed and left (semantics.md 7,
2.2, 9 and scrip-reference.md 9, 12, 14): each test writes program files and Parquet inputs, runs
`perkflow` in a subprocess into a real DuckDB file and reads the ledger back with SQL; expected
numbers are worked out by hand from the contract (docs/decisions.md where it is silent)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tests.e2e.test_contract_audit import LOT, SIMPLE, Ledger, at, on
from tests.helpers.io import cli, write_program


def shop(rules: list[dict], assets: list[dict], **extra) -> dict:
    return {"program": {"key": "shop", "name": "Shop"}, "assets": assets, "rules": rules, **extra}


# ---- 1. HOLD / RELEASE / FORFEIT actions without `amount` (scrip-reference.md 12, semantics.md 7) ----

#: per step: (what the event asks, the same as an operation's name and params)
HOLD_STEPS = [("earn", {"n": 100}, "adjust", {"type": "CREDIT", "amount": "100"}),
              ("hold", {"ref": "A"}, "hold", {"reference_id": "A"}),            # all 100 AVAILABLE -> HELD
              ("earn", {"n": 7}, "adjust", {"type": "CREDIT", "amount": "7"}),
              ("hold", {"ref": "B"}, "hold", {"reference_id": "B"}),            # the 7 more
              ("release", {"ref": "A"}, "release", {"reference_id": "A"}),      # LOT: A's 100 only
              ("lose", {"ref": "B"}, "forfeit", {"bucket": "HELD", "reference_id": "B"}),  # LOT: B's 7
              ("hold", {"ref": "C"}, "hold", {"reference_id": "C"}),            # what is AVAILABLE again
              ("hold", {"ref": "D"}, "hold", {"reference_id": "D"})]            # nothing left: a no-op


@pytest.mark.parametrize("asset", [SIMPLE, LOT], ids=["SIMPLE", "LOT"])
def test_hold_release_and_forfeit_actions_without_amount_take_the_whole_bucket_as_the_operations_do(tmp_path, asset):
    """scrip-reference.md 12, of hold / release / forfeit: "amount: optional. Omitting it processes
    the whole SIMPLE balance, or every matching lot for LOT"; semantics.md 7 RELEASE "by
    reference_id, or amount, or all". The HOLD action without an amount was refused at load
    (`amount` is required for HOLD): it now holds all AVAILABLE value, and a program whose rules
    do each step writes the same ledger as the same steps sent as operations."""
    ref = {"reference_id": "event.ref"} if asset is LOT else {}
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("hold", {"type": "HOLD", "asset": "PTS", **ref}),
             on("release", {"type": "RELEASE", "asset": "PTS", **ref}),
             on("lose", {"type": "FORFEIT", "asset": "PTS", "bucket": "HELD", **ref})]
    by_rules, by_ops = Ledger(tmp_path / "rules", shop(rules, [asset])), Ledger(tmp_path / "ops", shop([], [asset]))
    by_rules.run([{"key": f"s{i}", "who": "a", "when": at(1, 10 + i), "data": {"type": kind, **data}}
                  for i, (kind, data, _, _) in enumerate(HOLD_STEPS)])
    by_ops.run(operations=[{"op": "upsert_participant", "key": "new", "who": "a", "when": at(1, 9)}] + [
        {"op": name, "key": f"s{i}", "who": "a", "when": at(1, 10 + i),
         "params": {"asset": "PTS", **{k: v for k, v in params.items() if asset is LOT or k != "reference_id"}}}
        for i, (_, _, name, params) in enumerate(HOLD_STEPS)])
    for led in (by_rules, by_ops):
        assert set(led.status().values()) == {("COMPLETED", None)}
        moved = [led.entries(f"s{i}") for i, step in enumerate(HOLD_STEPS) if step[0] != "earn"]
        if asset is LOT:  # RELEASE and FORFEIT narrow to the lots of their reference
            assert moved == [[("HOLD", D(100))], [("HOLD", D(7))], [("RELEASE", D(100))], [("FORFEIT", D(7))],
                             [("HOLD", D(100))], []]
        else:  # SIMPLE: the whole bucket (nothing left HELD to forfeit: a no-op)
            assert moved == [[("HOLD", D(100))], [("HOLD", D(7))], [("RELEASE", D(107))], [],
                             [("HOLD", D(107))], []]
        led.verify()
    assert by_rules.balance("a") == by_ops.balance("a") == ((D(0), D(100), D(0)) if asset is LOT
                                                            else (D(0), D(107), D(0)))
    if asset is LOT:
        refs = "SELECT action_type, reference_id FROM journal_entries WHERE action_type <> 'ADJUSTMENT' " \
               "AND action_type <> 'CREDIT' ORDER BY seq"
        assert by_rules.sql(refs) == by_ops.sql(refs) == [("HOLD", "A"), ("HOLD", "B"), ("RELEASE", "A"),
                                                          ("FORFEIT", "B"), ("HOLD", "C")]


def test_a_hold_action_without_amount_leaves_expired_lots_and_an_amount_of_zero_is_still_a_no_op(tmp_path):
    """Without an amount a HOLD of a LOT asset holds what is spendable: a lot past its expires_at
    is never spendable (semantics.md 9.1), even before its expiry entry is written; an amount that
    evaluates to exactly 0 is a no-op (semantics.md 7), not "everything"."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "expires_at": "event.ttl"}),
             on("hold", {"type": "HOLD", "asset": "PTS"}),
             on("hold_n", {"type": "HOLD", "asset": "PTS", "amount": "event.n"})]
    led = Ledger(tmp_path, shop(rules, [LOT]))
    led.run([{"key": "e1", "who": "a", "when": at(1, 10), "data": {"type": "earn", "n": 40, "ttl": "1h"}},
             {"key": "e2", "who": "a", "when": at(1, 10), "data": {"type": "earn", "n": 25, "ttl": "240h"}},
             {"key": "e3", "who": "a", "when": at(1, 12), "data": {"type": "hold_n", "n": 0}},
             {"key": "e4", "who": "a", "when": at(1, 12), "data": {"type": "hold"}}])
    assert set(led.status().values()) == {("COMPLETED", None)}
    assert led.entries("e3") == []
    assert [e for e in led.entries("e4") if e[0] == "HOLD"] == [("HOLD", D(25))]  # not the expired 40
    led.verify()


def test_a_hold_action_without_amount_on_a_program_target_is_refused_naming_the_field(tmp_path):
    """A PROGRAM target takes CREDIT, DEBIT or FORFEIT of its wallet (docs/decisions.md "PROGRAM
    targets"), with an amount; that an amount may now be left out elsewhere does not change it."""
    pre = {**SIMPLE, "issuance_policy": "PREFUNDED"}
    programs = write_program(tmp_path / "programs" / "shop.yaml",
                             shop([on("x", {"type": "FORFEIT", "asset": "PTS", "target": {"type": "PROGRAM"}})], [pre]))
    res = cli("validate", "--programs", str(programs))
    assert res.returncode == 2 and "`amount` is required for FORFEIT with a PROGRAM target" in res.stderr, res.stderr


# ---- 2. a PARTICIPANT target by `id` (scrip-reference.md 9; semantics.md 7) ----

def test_a_participant_target_by_id_names_the_participant_by_its_participant_id(tmp_path):
    """scrip-reference.md 9: target `{"type":"PARTICIPANT", "id"?, "external_id"?, "participant_id"?}`.
    `id` was refused at load ("give exactly one of external_id or participant_id"); it is the
    participant's id (docs/decisions.md): a CEL expression or a literal, resolved as
    participant_id is; an id nobody has fails the event with participant_not_found."""
    led = Ledger(tmp_path, shop([on("hello", {"type": "TAG", "tag": "new"}), on("ref", {"type": "CREDIT", "asset": "PTS", "amount": "5",
                                                         "target": {"type": "PARTICIPANT", "id": "event.friend"}})],
                                [SIMPLE]))
    led.run([{"key": "e1", "who": "b", "when": at(1, 10), "data": {"type": "hello"}}])
    (b_id,), = led.sql("SELECT id FROM participants WHERE external_id = 'b'")
    literal = shop([on("fixed", {"type": "CREDIT", "asset": "PTS", "amount": "2",
                                 "target": {"type": "PARTICIPANT", "id": str(b_id)}})], [SIMPLE])
    write_program(led.programs / "fixed.yaml", {**literal, "program": {"key": "fixed", "name": "Fixed"}})
    led.run([{"key": "e2", "who": "a", "when": at(1, 11), "data": {"type": "ref", "friend": str(b_id)}},
             {"key": "e3", "who": "a", "when": at(1, 12), "data": {"type": "ref", "friend": "nobody"}},
             {"program": "fixed", "key": "e4", "who": "a", "when": at(1, 13), "data": {"type": "fixed"}}])
    assert led.status() == {"e1": ("COMPLETED", None), "e2": ("COMPLETED", None),
                            "e3": ("FAILED", "participant_not_found"), "e4": ("COMPLETED", None)}
    assert led.sql("SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT' ORDER BY 1") == [
        ("b", D(7))]
    led.verify()


@pytest.mark.parametrize("target, says", [
    ({"type": "PARTICIPANT", "id": "event.a", "external_id": "event.b"}, "got external_id and id"),
    ({"type": "PARTICIPANT", "id": "event.a", "participant_id": "event.b"}, "got participant_id and id"),
    ({"type": "PARTICIPANT"}, "got none"),
])
def test_a_participant_target_names_its_participant_exactly_once(tmp_path, target, says):
    programs = write_program(tmp_path / "programs" / "shop.yaml",
                             shop([on("x", {"type": "TAG", "tag": "vip", "target": target})], [SIMPLE]))
    res = cli("validate", "--programs", str(programs))
    out = " ".join(res.stderr.split())
    assert res.returncode == 2 and "shop.yaml" in out and "rules[0] (x): actions[0].target: give exactly one of external_id, participant_id or id" in out, out
    assert says in out, out


# ---- 3. flows past 10^20: exact sums in verify and the report views ----

BIG = D("90000000000000000000")  # 9 * 10^19: every balance stays below 10^20


def _big_flows(tmp_path) -> Ledger:
    """Four events, each crediting 9 * 10^19 + 0.25 and debiting 9 * 10^19: 3.6 * 10^20 + 1 issued,
    3.6 * 10^20 redeemed, while the participant holds 1.00 and SYSTEM_ISSUANCE -1.00 in the end."""
    cash = {**SIMPLE, "scale": 2}
    led = Ledger(tmp_path, shop([on("big", {"type": "CREDIT", "asset": "PTS", "amount": f"{BIG}.25"},
                                    {"type": "DEBIT", "asset": "PTS", "amount": str(BIG)})], [cash]))
    led.run([{"key": f"e{i}", "who": "a", "when": at(1 + i), "data": {"type": "big"}} for i in range(4)])
    assert set(led.status().values()) == {("COMPLETED", None)}
    return led


def test_flows_past_10_20_verify_and_the_summary_is_exact_where_decimal_38_18_holds_it(tmp_path):
    """A plain SUM of DECIMAL(38, 18) overflowed once a running total passed ~1.7 * 10^20:
    `perkflow verify` exited 1 with an internal error (balances_match_postings on SYSTEM_ISSUANCE,
    summary_identity), and `report ledger_summary` / program_activity crashed. The sums are exact
    now (whole parts and fractions as HUGEINT): verify holds; each amount the views show is exact,
    and a total past what DECIMAL(38, 18) holds (|x| >= 10^20) is NULL (docs/decisions.md)."""
    led = _big_flows(tmp_path)
    led.verify()
    assert led.balance("a") == (D(1), D(0), D(0))
    for view in ("ledger_summary", "program_activity", "participant_statement"):
        res = cli("report", view, "--db", str(led.db))
        assert res.returncode == 0 and "Traceback" not in res.stderr, (view, res.stderr)
    assert led.sql("SELECT total_issued, total_redeemed, total_expired, total_forfeited, current_balance "
                   "FROM ledger_summary") == [(None, None, D(0), D(0), D(1))]
    # a period of one event (day 4): exact, and opening + issued - redeemed = closing
    assert led.sql(f"SELECT opening_balance, total_issued, total_redeemed, closing_balance "
                   f"FROM ledger_summary_between('{at(4, 0)}', '{at(5, 0)}')") == [
        (D("0.75"), BIG + D("0.25"), BIG, D(1))]
    assert led.sql(f"SELECT opening_balance, total_issued FROM ledger_summary_between('{at(3, 0)}', NULL)") == [
        (D("0.5"), None)]  # 1.8 * 10^20 + 0.5 issued in the period
    assert led.sql("SELECT day, issued['PTS'], redeemed['PTS'] FROM program_activity ORDER BY day")[0][1:] == (
        BIG + D("0.25"), BIG)  # one event a day: each day's flows are in range


@pytest.mark.parametrize("tamper, check", [
    ("UPDATE account_balances SET amount = amount - 0.000000000000000001 WHERE entity_type = 'SYSTEM_ISSUANCE'",
     "balances_match_postings"),
    # a DEBIT counted in no category: redeemed is 3.6 * 10^20 short of what left the balance
    ("CREATE OR REPLACE MACRO flow_category(action_type, net_amount) AS CASE WHEN action_type = 'DEBIT' "
     "THEN 'INTERNAL' WHEN action_type = 'CREDIT' THEN 'ISSUED' ELSE 'INTERNAL' END", "summary_identity"),
])
def test_flows_past_10_20_a_broken_ledger_is_still_found(tmp_path, tamper, check):
    """The exact sums compare to the last of the 18 decimals, however large the flows, and
    report a violation rather than fail on the way."""
    import duckdb
    import json

    led = _big_flows(tmp_path)
    con = duckdb.connect(str(led.db))
    con.execute(tamper)
    con.close()
    res = cli("verify", "--db", str(led.db), "--json")
    assert res.returncode == 4 and "Traceback" not in res.stderr, res.stdout + res.stderr  # 4: violations
    assert check in {v["check"] for v in json.loads(res.stdout)["violations"]}, res.stdout


# ---- 4. idempotency across formats: a null struct field is an absent key (semantics.md 2.2, 4) ----

def test_a_null_struct_field_and_the_same_event_without_that_key_in_ndjson_are_one_payload(tmp_path):
    """semantics.md 2.2: "In a struct event_data, a null field counts as absent"; 4: the same key
    with the same canonical payload is a DUPLICATE. So a Parquet struct with `coupon: null` (and
    `meta.b: null`, one level down) and the same event in NDJSON without those keys (or with
    JSON nulls) are duplicates, in either order; a value where the other has null is a conflict."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = pa.struct([("a", pa.int64()), ("b", pa.string())])
    data = pa.struct([("type", pa.string()), ("n", pa.int64()), ("coupon", pa.string()), ("meta", meta)])
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", data)])
    row = {"program_id": "shop", "external_id": "a", "event_timestamp": at(1, 10)}
    with_nulls = {"type": "buy", "n": 5, "coupon": None, "meta": {"a": 1, "b": None}}
    without = {"type": "buy", "n": 5, "meta": {"a": 1}}
    programs = write_program(tmp_path / "programs" / "shop.yaml",
                             shop([on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})], [SIMPLE]))
    struct_file = tmp_path / "struct.parquet"
    pq.write_table(pa.Table.from_pylist([{**row, "idempotency_key": "k1", "event_data": with_nulls},
                                         {**row, "idempotency_key": "k2", "event_data": with_nulls}], schema=schema),
                   struct_file)
    ndjson = tmp_path / "absent.ndjson"
    ndjson.write_text("".join(json.dumps({**row, "idempotency_key": k, "event_data": d}) + "\n" for k, d in [
        ("k1", without), ("k3", without)]))
    conflict = tmp_path / "value.ndjson"
    conflict.write_text(json.dumps({**row, "idempotency_key": "k1", "event_data": {**without, "coupon": "X"}}) + "\n")

    def run(db, events) -> tuple:
        res = cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout.strip().splitlines()[-1])
        return out["completed"], out["duplicates"], out["rejected"]

    one, two = tmp_path / "struct_first.duckdb", tmp_path / "ndjson_first.duckdb"
    assert [run(one, struct_file), run(one, ndjson)] == [(2, 0, 0), (1, 1, 0)]   # k1 a duplicate, k3 new
    assert [run(two, ndjson), run(two, struct_file)] == [(2, 0, 0), (1, 1, 0)]   # k1 a duplicate, k2 new
    assert run(one, conflict) == (0, 0, 1)
    for db in (one, two):
        assert cli("verify", "--db", str(db)).returncode == 0
