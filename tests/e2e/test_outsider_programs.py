"""Outsider round on program definition files (semantics.md 2.1, 13; scrip-reference.md 2, 3, 7,
15, 21), through the real CLI: fields as Scrip's payloads document them (types, limits), no field
silently ignored, and program files changed between batches. Expectations are worked out by hand
from those sections; each test names its section.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from tests.e2e.test_contract_audit import SIMPLE, Ledger, at, ev, on, program
from tests.helpers.io import cli, file_hash, write_program

CREDIT_AMOUNT = {"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}


def _validate(tmp: Path, spec: dict) -> tuple[int, str]:
    """`perkflow validate` of one program file; its exit code and its output on one line."""
    path = write_program(tmp / "programs" / "shop.yaml", spec)
    res = cli("validate", "--programs", str(path.parent))
    return res.returncode, "".join((res.stdout + res.stderr).split())


def _squash(text: str) -> str:
    return "".join(text.split())


# --- scrip-reference.md 3: scale, inventory_mode and issuance_policy "cannot be changed later" ---

@pytest.mark.parametrize("field, value", [("scale", 2), ("inventory_mode", "LOT"), ("issuance_policy", "PREFUNDED")])
def test_s2_1_an_assets_fixed_fields_cannot_change_once_the_ledger_has_it(tmp_path, field, value):
    """scrip-reference.md 3: an asset's `scale`, `inventory_mode` and `issuance_policy` cannot be
    changed later. A ledger that booked PTS at scale 0 and a program file that now says scale 2 (or
    LOT, or PREFUNDED) would give a scale-0 asset a balance of 5.25 (or lots, or a wallet, for
    balances made without them): the run is refused, exit 2, naming the file, asset and field, and
    the ledger file is unchanged byte for byte (semantics.md 13)."""
    led = Ledger(tmp_path, program([on("purchase", CREDIT_AMOUNT)]))
    led.run([ev("k1", "u1", at(1), "purchase", amount=5)])
    spec = copy.deepcopy(program([on("purchase", CREDIT_AMOUNT)]))  # SIMPLE is shared
    spec["assets"][0][field] = value
    path = write_program(led.programs / "shop.yaml", spec)
    before = file_hash(led.db)
    out = led.run([ev("k2", "u1", at(2), "purchase", amount=0.25)], expect=2)["stderr"]
    assert file_hash(led.db) == before
    for word in (str(path), "assets[0] (PTS)", field, "cannot be changed"):
        assert _squash(word) in _squash(out), (word, out)
    # `maintain --programs` runs those files against the same ledger: refused the same way
    res = cli("maintain", "--as-of", at(3), "--db", str(led.db), "--programs", str(led.programs))
    assert res.returncode == 2 and "cannotbechanged" in _squash(res.stderr), res.stderr
    assert file_hash(led.db) == before


def test_s2_1_an_assets_name_and_max_transaction_amount_may_change_and_the_ledger_shows_them(tmp_path):
    """scrip-reference.md 3: `PATCH /v1/assets/{id}` accepts `name` and `max_transaction_amount`.
    After the file renames PTS and sets a limit of 100, the `assets` table says so (it kept the first
    name and no limit), and the limit holds: a credit of 150 fails, one of 100 completes."""
    led = Ledger(tmp_path, program([on("purchase", CREDIT_AMOUNT)]))
    led.run([ev("k1", "u1", at(1), "purchase", amount=5)])
    spec = copy.deepcopy(program([on("purchase", CREDIT_AMOUNT)]))
    spec["assets"][0] |= {"name": "Loyalty Points", "max_transaction_amount": "100"}
    write_program(led.programs / "shop.yaml", spec)
    led.run([ev("k2", "u1", at(2), "purchase", amount=150), ev("k3", "u1", at(3), "purchase", amount=100)])
    assert led.sql("SELECT name, max_transaction_amount FROM assets") == [("Loyalty Points", D(100))]
    assert led.status() == {"k1": ("COMPLETED", None), "k2": ("FAILED", "max_transaction_amount_exceeded"),
                            "k3": ("COMPLETED", None)}


# --- scrip-reference.md 7: a budget's fields apply to one schedule_type each -------------------

@pytest.mark.parametrize("budget, field", [
    ({"schedule_type": None, "cron_expression": "0 0 1 * *"}, "cron_expression"),
    ({"schedule_type": None, "interval": "720h"}, "interval"),
    ({"schedule_type": "CRON", "cron_expression": "0 0 1 * *", "interval": "24h"}, "interval"),
    ({"schedule_type": "INTERVAL", "interval": "24h", "cron_expression": "0 0 1 * *"}, "cron_expression"),
])
def test_s2_1_a_budget_field_its_schedule_type_does_not_use_is_a_load_error(tmp_path, budget, field):
    """scrip-reference.md 7: `schedule_type = null` is a lifetime budget (no reset), CRON resets by
    `cron_expression`, INTERVAL by `interval`. A `cron_expression` on a lifetime budget would be
    ignored: the author meant a monthly cap and gets a lifetime one. semantics.md 2.1 / 13: such a
    field is an error naming the file, rule and field, never ignored; exit 2."""
    rule = on("purchase", CREDIT_AMOUNT, budgets=[{"asset": "PTS", "limit": "100", **budget}])
    code, out = _validate(tmp_path, program([rule]))
    assert code == 2, out
    for word in ("shop.yaml", "rules[0] (purchase)", f"budgets[0].{field}"):
        assert _squash(word) in out, (word, out)


# --- scrip-reference.md 2, 7, 15, 21: description and category lengths ------------------------

@pytest.mark.parametrize("where, field, limit", [
    ("program", "description", 1000), ("rules[0]", "description", 1000),
    ("rewards[0]", "description", 1000), ("rewards[0]", "category", 100)])
def test_s2_1_descriptions_and_categories_keep_scrips_limits(tmp_path, where, field, limit):
    """scrip-reference.md 2 / 7 / 15 / 21: a program's, rule's and reward's `description` is up to
    1000 characters, a reward's `category` up to 100. At the limit the file loads; one character
    more is a load error naming the file and the field path, exit 2."""
    spec = program([on("purchase", CREDIT_AMOUNT)],
                   rewards=[{"name": "Mug", "redemption_type": "UNIT_BASED", "asset_id": "PTS", "unit_cost": "100",
                             "status": "ACTIVE"}])
    for length, expect in ((limit, 0), (limit + 1, 2)):
        s = copy.deepcopy(spec)
        entry = s["program"] if where == "program" else s[where[:-3]][0]
        entry[field] = "x" * length
        code, out = _validate(tmp_path, s)
        assert code == expect, (length, out)
    assert "shop.yaml" in out and f".{field}" in out and str(limit) in out, out


# --- semantics.md 2.1: "old versions stay queryable" -------------------------------------------

def test_s2_1_explain_shows_the_rule_that_evaluated_an_event_after_the_rule_left_the_files(tmp_path):
    """semantics.md 2.1: a changed rule gets a new version, the ledger records which version
    produced each entry, and old versions stay queryable. Batch 1 credits 10 by rule `bonus`
    (order 10, `amount: "10"`); batch 2's file no longer has `bonus`. `perkflow explain k1` must
    still show `bonus` with its recorded outcome (MATCHED) and the version that ran, not an empty
    rule table above an entry of a rule it does not list; the event that came after the removal
    (k2) matched no rule and has no `bonus` row."""
    bonus = on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "10"}, key="bonus", order=10)
    led = Ledger(tmp_path, program([bonus]))
    led.run([ev("k1", "u1", at(1), "purchase")])
    write_program(led.programs / "shop.yaml", program([on("refund", {"type": "DEBIT", "asset": "PTS", "amount": "1"},
                                                             key="refund", order=20)]))
    led.run([ev("k2", "u1", at(2), "purchase")])
    assert led.balance("u1") == (D(10), D(0), D(0))
    version = led.sql("SELECT rule_version FROM rule_evaluations")[0][0]
    for key, expect in (("k1", {"bonus", "refund"}), ("k2", {"refund"})):
        res = cli("explain", key, "--db", str(led.db), "--json")
        assert res.returncode == 0, res.stderr
        shown = json.loads(res.stdout)
        assert {r["rule"] for r in shown["rules"]} == expect and shown["idempotency_key"] == key, shown
    (row,) = [r for r in json.loads(cli("explain", "k1", "--db", str(led.db), "--json").stdout)["rules"]
              if r["rule"] == "bonus"]
    assert row["recorded"].startswith("MATCHED") and row["rule_version"] == version and row["order"] == 10, row
    assert row["re_evaluated"] == "True", row
    table = cli("explain", "k1", "--db", str(led.db))  # the table form says so too
    assert table.returncode == 0 and "bonus" in table.stdout and "MATCHED" in table.stdout, table.stdout + table.stderr


# --- scrip-reference.md 3, 21: asset symbol "1-16 alphanumeric characters" ---------------------

@pytest.mark.parametrize("symbol, ok", [("P", True), ("ABCDEFGHIJ123456", True), ("ABCDEFGHIJ1234567", False),
                                        ("P_TS", False), ("P-TS", False), ("", False)])
def test_s2_1_an_asset_symbol_is_1_to_16_alphanumeric_characters(tmp_path, symbol, ok):
    """scrip-reference.md 3 / 21: `symbol` is 1-16 alphanumeric characters. A 17-character symbol or
    one with `_` is a load error naming `assets[0]` and `symbol`, exit 2 (it loaded up to 32
    characters with underscores: a symbol Scrip would refuse, so a file that could not be carried
    over)."""
    asset = dict(SIMPLE, symbol=symbol)
    code, out = _validate(tmp_path, program([on("purchase", dict(CREDIT_AMOUNT, asset=symbol))], assets=[asset]))
    assert code == (0 if ok else 2), out
    if not ok:
        assert "shop.yaml" in out and "assets[0]" in out and ".symbol:" in out and "16" in out, out


# --- semantics.md 2.1: "CEL that does not parse" is an error -----------------------------------

@pytest.mark.parametrize("field, action", [
    ("target.external_id", {"type": "CREDIT", "asset": "PTS", "amount": "5",
                            "target": {"type": "PARTICIPANT", "external_id": "event.referrer +"}}),
    ("value", {"type": "SET_ATTRIBUTE", "key": "plan", "value": "event.plan ["}),
    ("tag", {"type": "TAG", "tag": "participant.attributes.segment)"}),
])
def test_s2_1_a_value_field_that_starts_as_cel_and_does_not_parse_is_a_load_error(tmp_path, field, action):
    """semantics.md 2.1: CEL that does not parse is an error naming the file, rule and field.
    `external_id: "event.referrer +"` is an expression with a typo, not the name of a participant:
    taken as literal text it created a participant called `event.referrer +` and credited it 5.
    Text that starts with a CEL variable path (`event.`, `participant.`, `program.`) and does not
    parse is a load error (exit 2); plain words (`tag: welcomed`, `value: new-customer`) stay text."""
    code, out = _validate(tmp_path, program([on("signup", action)]))
    assert code == 2, out
    for word in ("shop.yaml", "rules[0] (signup)", f"actions[0].{field}", "syntax error"):
        assert _squash(word) in out, (word, out)
    literal = {"type": "SET_ATTRIBUTE", "key": "plan", "value": "new-customer"}
    assert _validate(tmp_path, program([on("signup", literal, {"type": "TAG", "tag": "welcomed"})]))[0] == 0


def test_s2_1_a_program_file_with_an_upper_case_extension_is_read_not_skipped(tmp_path):
    """semantics.md 2.1: a directory of program files is a project. `b.YAML` and `c.JSON` (as
    Windows tools and some exports name them) are program files: skipped, their programs were
    missing and every event naming them quarantined as `unknown_program`, with nothing said.
    Both load."""
    folder = tmp_path / "programs"
    write_program(folder / "a.yaml", program([on("purchase", CREDIT_AMOUNT)]))
    write_program(folder / "b.YAML", program([on("purchase", CREDIT_AMOUNT)], key="second"))
    spec = program([on("purchase", CREDIT_AMOUNT)], key="third")
    (folder / "C.JSON").write_text(json.dumps(spec))
    res = cli("validate", "--programs", str(folder))
    assert res.returncode == 0, res.stderr
    for key in ("shop", "second", "third"):
        assert f"ok {key}:" in res.stdout, res.stdout
