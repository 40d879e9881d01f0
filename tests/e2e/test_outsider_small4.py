"""Outsider round (session 21, round 4): small contract items, each reproduced through the
`perkflow` CLI into a real DuckDB file (or `perkflow validate`) and compared with semantics.md
and scrip-reference.md 21, worked out by hand (docs/decisions.md where both are silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

from tests.e2e.test_contract_audit import OK, SIMPLE, Ledger, ev, on, op, program
from tests.helpers.io import cli, query, write_program

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})
PTS2 = {**SIMPLE, "scale": 2}


def _validate(tmp_path, spec: dict, name: str = "shop.yaml"):
    path = write_program(tmp_path / name.split(".")[0] / name, spec)
    return path, cli("validate", "--programs", str(path.parent))


def test_s21_an_action_description_over_1000_characters_is_a_load_error(tmp_path):
    """scrip-reference.md 21: descriptions are at most 1000 characters on a rule (its actions'
    descriptions are part of it) and 500 on balance operations. A 1001-character action
    description loaded and went into every journal entry: now a load error naming the file, the
    rule and `actions[0].description`; 1000 characters load. An operation row's 501-character
    description fails it as invalid_operation naming params.description."""
    long = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1", "description": "d" * 1001})
    path, res = _validate(tmp_path, program([long]))
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(path) in res.stderr and "rules[0] (earn)" in res.stderr, res.stderr
    assert "actions[0].description" in res.stderr and "1000" in res.stderr, res.stderr
    fine = on("earn", {"type": "TAG", "tag": "vip", "description": "d" * 1000})
    assert _validate(tmp_path, program([fine]), "ok.yaml")[1].returncode == 0

    lg = Ledger(tmp_path / "run", program([EARN]))
    lg.run([ev("e0", "u1", "2025-03-01T09:00:00Z", "earn")])
    adjust = {"type": "CREDIT", "asset": "PTS", "amount": "5"}
    lg.run(operations=[op("adjust", "o1", "u1", "2025-03-01T10:00:00Z", **adjust, description="x" * 501),
                       op("adjust", "o2", "u1", "2025-03-01T11:00:00Z", **adjust, description="x" * 500)])
    assert lg.status()["o1"][1] == "invalid_operation" and lg.status()["o2"] == OK
    (msg,), = lg.sql("SELECT error_message FROM operations WHERE idempotency_key = 'o1'")
    assert "params.description" in msg and "500" in msg, msg
    assert lg.balance("u1")[0] == D(1 + 5)


def test_s7_a_bound_with_more_decimals_than_the_scale_is_a_load_error(tmp_path):
    """semantics.md 7: every amount of an asset has at most `scale` decimals, so a
    max_transaction_amount or budget limit of 10.005 on a scale-2 asset can only mean 10.00 or
    10.01: a load error naming the file, the asset / rule and the field (it loaded, and capped at
    10.00 silently). 10.000 (trailing zeros) and 10.5 load. By hand, with max 10.5 and a budget
    of 10.50: an event of 10.50 completes, a second one is BUDGET_EXCEEDED."""
    asset = {**PTS2, "max_transaction_amount": "10.005"}
    path, res = _validate(tmp_path, program([EARN], [asset]))
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(path) in res.stderr and "assets[0] (PTS).max_transaction_amount" in res.stderr, res.stderr
    assert "scale 2" in res.stderr and "10.00" in res.stderr and "10.01" in res.stderr, res.stderr

    budgeted = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"},
                  budgets=[{"asset": "PTS", "limit": "10.005"}])
    path, res = _validate(tmp_path, program([budgeted], [PTS2]), "budget.yaml")
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(path) in res.stderr and "rules[0] (earn)" in res.stderr and "budgets[0].limit" in res.stderr
    assert "scale 2" in res.stderr, res.stderr

    capped = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"},
                budgets=[{"asset": "PTS", "limit": "10.50"}])
    lg = Ledger(tmp_path / "run", program([capped], [{**PTS2, "max_transaction_amount": "10.5000"}]))
    lg.run([ev("e1", "u1", "2025-03-01T10:00:00Z", "earn", n=10.5),
            ev("e2", "u1", "2025-03-01T11:00:00Z", "earn", n=0.01)])
    assert lg.balance("u1")[0] == D("10.5")
    assert lg.sql("SELECT e.idempotency_key, r.outcome FROM rule_evaluations r JOIN events e ON e.id = r.event_id "
                  "ORDER BY 1") == [("e1", "MATCHED"), ("e2", "BUDGET_EXCEEDED")]


def test_s2_2_a_row_without_event_timestamp_says_it_is_required_and_how_to_write_it(tmp_path):
    """semantics.md 2.2: event_timestamp is required, a tz-aware timestamp or an RFC 3339 string.
    Scrip's quickstart event has none (its API stamps the arrival); copied into an NDJSON file
    beside a timed row it is quarantined (missing_required_field) and its message now says the
    field is required and shows how to write it; the timed row credits 1. A file of such rows
    only lacks the column: exit 2, with the same guidance."""
    programs = write_program(tmp_path / "programs" / "shop.yaml", program([EARN]))
    timed = {"program_id": "shop", "external_id": "user_123", "idempotency_key": "timed",
             "event_timestamp": "2025-03-01T10:00:00Z", "event_data": {"type": "earn"}}
    quickstart = {"program_id": "shop", "external_id": "user_123", "idempotency_key": "first-purchase-001",
                  "event_data": {"type": "earn", "amount": 49.99}}
    mixed, alone = tmp_path / "mixed.ndjson", tmp_path / "alone.ndjson"
    mixed.write_text(json.dumps(timed) + "\n" + json.dumps(quickstart) + "\n", encoding="utf-8")
    alone.write_text(json.dumps(quickstart) + "\n", encoding="utf-8")
    db = tmp_path / "l.duckdb"
    res = cli("run", "--programs", str(programs.parent), "--events", str(mixed), "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["completed"], report["rejected"]) == (1, 1), report
    ((reason, message),) = query(db, "SELECT reason, message FROM rejected_rows")
    assert reason == "missing_required_field", reason
    for needed in ("required", "event_timestamp", "RFC 3339", "time zone", "2025-01-01T00:00:00Z"):
        assert needed in message, (needed, message)
    assert query(db, "SELECT available FROM balances WHERE external_id = 'user_123'") == [(D(1),)]

    res = cli("run", "--programs", str(programs.parent), "--events", str(alone), "--db", str(tmp_path / "m.duckdb"))
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "event_timestamp" in err and "RFC 3339" in err and "2025-01-01T00:00:00Z" in err, err


def test_s9_3_a_recipient_or_params_naming_two_things_says_which(tmp_path):
    """semantics.md 9.3, 2.3 (Scrip: a recipient is {amount, one of external_id | participant_id |
    group_id}). A recipient with two ids failed "needs one of ...", as if it had none: now
    "exactly one of ..., got external_id and participant_id" (and "got none"). The same pattern
    in operation params: `asset` beside Scrip's `asset_id`, `group` beside `group_id`, `reward`
    beside `reward_id` naming another one used the first silently; now invalid_operation naming
    both. Naming the same one is fine. By hand: u1 earns 100 (e0); x2 (asset PTS and asset_id
    PTS) credits 5 more: 105; every other operation fails and moves nothing; the group stays 0."""
    assets = [SIMPLE, {**SIMPLE, "symbol": "GEM", "name": "Gems"}]
    spec = program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})], assets,
                   groups=[{"key": "fam", "name": "Fam", "members": [{"external_id": "u1", "role": "ADMIN"}]},
                           {"key": "team", "name": "Team", "members": [{"external_id": "u1", "role": "ADMIN"}]}],
                   rewards=[{"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS",
                             "unit_cost": "1"},
                            {"key": "cap", "name": "Cap", "redemption_type": "UNIT_BASED", "asset": "PTS",
                             "unit_cost": "2"}])
    lg = Ledger(tmp_path, spec)
    lg.run([ev("e0", "u1", "2025-03-01T09:00:00Z", "earn", n=100), ev("e1", "u2", "2025-03-01T09:00:00Z", "earn", n=0)])
    t = "2025-03-01T10:00:{:02d}Z"
    value = {"asset": "PTS", "description": "x"}
    lg.run(operations=[
        op("transfer", "t1", "u1", t.format(1), **value, recipients=[{"amount": "1", "external_id": "u2",
                                                                       "participant_id": "u2"}]),
        op("transfer", "t2", "u1", t.format(2), **value, recipients=[{"amount": "1"}]),
        op("adjust", "x1", "u1", t.format(3), type="CREDIT", amount="5", asset="PTS", asset_id="GEM", description="x"),
        op("adjust", "x2", "u1", t.format(4), type="CREDIT", amount="5", asset="PTS", asset_id="PTS", description="x"),
        op("group_adjust", "g1", None, t.format(5), **value, type="CREDIT", amount="5", group="fam", group_id="team"),
        op("redeem_item", "r1", "u1", t.format(6), reward="mug", reward_id="cap", quantity=1),
    ])
    messages = dict(lg.sql("SELECT idempotency_key, error_message FROM operations WHERE status = 'FAILED'"))
    assert sorted(messages) == ["g1", "r1", "t1", "t2", "x1"], messages
    assert "exactly one of" in messages["t1"] and "external_id and participant_id" in messages["t1"], messages
    assert "exactly one of" in messages["t2"] and "none" in messages["t2"], messages
    for key, a, b in (("x1", "asset", "asset_id"), ("g1", "group", "group_id"), ("r1", "reward", "reward_id")):
        assert f"params.{a} " in messages[key] and f"params.{b} " in messages[key], messages[key]
    assert {c for c, in lg.sql("SELECT DISTINCT error_code FROM operations WHERE status = 'FAILED'")} == {
        "invalid_operation"}
    assert lg.balance("u1") == (D(105), D(0), D(0)) and lg.balance("u1", "GEM")[0] == D(0)
    assert lg.sql("SELECT count(*) FROM balances WHERE entity_type = 'GROUP' AND available <> 0") == [(0,)]
    assert lg.sql("SELECT count(*) FROM redemptions") == [(0,)]
    lg.verify()


def test_s2_1_a_literal_target_id_of_only_white_space_is_a_load_error(tmp_path):
    """semantics.md 2.1 (errors name the file, the rule and the field) and 7: a literal target
    `external_id` or `participant_id` of white space names nobody, so every event reaching it
    failed (expression_error) at run time; now a load error. A literal TAG of white space was
    already one. An expression stays run time: `event.recipient` giving "  " fails that event only."""
    for name, target in (("ext", {"type": "PARTICIPANT", "external_id": "   "}),
                         ("pid", {"type": "PARTICIPANT", "participant_id": " "})):
        rule = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1", "target": target})
        path, res = _validate(tmp_path, program([rule]), f"{name}.yaml")
        field = next(k for k in target if k != "type")
        assert res.returncode == 2, res.stdout + res.stderr
        assert str(path) in res.stderr and "rules[0] (earn)" in res.stderr, res.stderr
        assert f"actions[0].target.{field}" in res.stderr, res.stderr
    tag = on("earn", {"type": "TAG", "tag": "  "})
    assert _validate(tmp_path, program([tag]), "tag.yaml")[1].returncode == 2

    by_cel = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1",
                         "target": {"type": "PARTICIPANT", "external_id": "event.recipient"}})
    lg = Ledger(tmp_path / "run", program([by_cel]))
    lg.run([ev("e1", "u1", "2025-03-01T10:00:00Z", "earn", recipient="  "),
            ev("e2", "u1", "2025-03-01T11:00:00Z", "earn", recipient="u2")])
    assert lg.status() == {"e1": ("FAILED", "expression_error"), "e2": OK}
    assert lg.balance("u2")[0] == D(1)
