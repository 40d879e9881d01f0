"""Catalog: deterministic ids, rule versions, shared assets (semantics.md 2.1)."""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from decimal import Decimal

import pytest

from engine.catalog import load_catalog
from engine.errors import CatalogError
from engine.run import run_batch
from tests.helpers.io import PROGRAMS_DIR, event, program_spec, query, write_events, write_program

RULES = [
    {"name": "Purchase points", "key": "purchase", "condition": 'event.type == "purchase"', "order": 10,
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
    {"name": "Visit bonus", "condition": 'event.type == "visit"',
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
]


def ids_of(catalog) -> dict:
    out = {"assets": dict(catalog.asset_ids)}
    for p in catalog.programs.values():
        out[p.key] = (p.id, {r.key: (r.id, r.version, r.order) for r in p.rules})
    return out


def test_same_files_same_ids(tmp_path):
    a = load_catalog(PROGRAMS_DIR)
    copy_dir = tmp_path / "elsewhere" / "programs"
    shutil.copytree(PROGRAMS_DIR, copy_dir)
    b = load_catalog(copy_dir)
    assert ids_of(a) == ids_of(b)
    assert ids_of(a) == ids_of(load_catalog(PROGRAMS_DIR))


def test_ids_are_uuid5_from_keys():
    cat = load_catalog(PROGRAMS_DIR)
    prog = cat.programs["customer_loyalty"]
    assert prog.id.version == 5 and isinstance(prog.id, uuid.UUID)
    assert all(r.id.version == 5 for p in cat.programs.values() for r in p.rules)
    assert all(i.version == 5 for i in cat.asset_ids.values())
    # distinct keys, distinct ids
    all_ids = [p.id for p in cat.programs.values()] + [r.id for p in cat.programs.values() for r in p.rules] \
        + list(cat.asset_ids.values())
    assert len(set(all_ids)) == len(all_ids)


def test_yaml_and_json_forms_give_same_ids(tmp_path):
    spec = program_spec("shop", copy.deepcopy(RULES))
    y = write_program(tmp_path / "y" / "shop.yaml", spec)
    j = tmp_path / "j" / "shop.json"
    j.parent.mkdir()
    j.write_text(json.dumps(spec, indent=4))
    assert ids_of(load_catalog(y)) == ids_of(load_catalog(j))


def test_default_key_and_order():
    """key defaults to a slug of the name; order to previous highest + 10."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        cat = load_catalog(write_program(Path(d) / "shop.yaml", program_spec("shop", copy.deepcopy(RULES))))
    rules = {r.key: r for r in cat.programs["shop"].rules}
    assert set(rules) == {"purchase", "visit_bonus"}
    assert rules["visit_bonus"].order == rules["purchase"].order + 10


def test_program_key_defaults_to_a_slug_of_its_name(tmp_path):
    """The quickstart creates its program by name alone: a file without `program.key` is the
    program whose key is the name's slug, with the same ids as if the key were written."""
    keyed = program_spec("customer_loyalty", copy.deepcopy(RULES))
    unkeyed = copy.deepcopy(keyed)
    unkeyed["program"] = {"name": "Customer  Loyalty!"}
    a = load_catalog(write_program(tmp_path / "a" / "p.yaml", keyed))
    b = load_catalog(write_program(tmp_path / "b" / "p.yaml", unkeyed))
    assert list(b.programs) == ["customer_loyalty"]
    assert ids_of(a) == ids_of(b)
    unnamed = copy.deepcopy(keyed)
    unnamed["program"] = {"name": "!!!"}  # no letters or digits: no key to derive, the key is required
    with pytest.raises(CatalogError, match="program.key"):
        load_catalog(write_program(tmp_path / "c" / "p.yaml", unnamed))


@pytest.mark.parametrize("change", ["condition", "amount", "stop_after_match", "order"])
def test_changed_rule_gets_new_version_same_id(tmp_path, change):
    base = program_spec("shop", copy.deepcopy(RULES))
    changed = copy.deepcopy(base)
    r = changed["rules"][0]
    if change == "condition":
        r["condition"] = 'event.type == "purchase" && true'
    elif change == "amount":
        r["actions"][0]["amount"] = "11"
    elif change == "stop_after_match":
        r["stop_after_match"] = True
    else:
        r["order"] = 5
    a = load_catalog(write_program(tmp_path / "a" / "shop.yaml", base)).programs["shop"]
    b = load_catalog(write_program(tmp_path / "b" / "shop.yaml", changed)).programs["shop"]
    ra, rb = ({r.key: r for r in p.rules} for p in (a, b))
    assert ra["purchase"].id == rb["purchase"].id
    assert ra["purchase"].version != rb["purchase"].version
    if change != "order":  # the untouched rule keeps its version
        assert ra["visit_bonus"].version == rb["visit_bonus"].version


def test_ledger_records_rule_version_and_keeps_old_versions(tmp_path):
    progs = tmp_path / "programs" / "shop.yaml"
    spec = program_spec("shop", copy.deepcopy(RULES))
    write_program(progs, spec)
    v1 = {r.key: r.version for r in load_catalog(progs).programs["shop"].rules}["purchase"]
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e1" / "a.parquet", [
        event("shop", "k1", "u", "2025-11-01T00:00:00Z", {"type": "purchase"})]), db)
    spec["rules"][0]["actions"][0]["amount"] = "20"
    write_program(progs, spec)
    v2 = {r.key: r.version for r in load_catalog(progs).programs["shop"].rules}["purchase"]
    assert v1 != v2
    run_batch(progs, write_events(tmp_path / "e2" / "b.parquet", [
        event("shop", "k2", "u", "2025-11-02T00:00:00Z", {"type": "purchase"})]), db)
    rule_id = str(load_catalog(progs).programs["shop"].rules[0].id)
    versions = {v for (v,) in query(db, "SELECT version FROM rule_versions WHERE rule_id = ?", [rule_id])}
    assert {v1, v2} <= versions
    entries = query(db, "SELECT rule_version, p.amount FROM journal_entries j JOIN postings p ON p.journal_entry_id = j.id "
                        "WHERE p.entity_type = 'PARTICIPANT' ORDER BY seq")
    assert [(v, Decimal(a)) for v, a in entries] == [(v1, Decimal(10)), (v2, Decimal(20))]


def test_shared_asset_identical_is_one_asset(tmp_path):
    write_program(tmp_path / "a.yaml", program_spec("alpha", copy.deepcopy(RULES)))
    write_program(tmp_path / "b.yaml", program_spec("beta", copy.deepcopy(RULES)))
    cat = load_catalog(tmp_path)
    assert list(cat.assets) == ["PTS"]
    # both programs' actions point at the one asset id
    ids = {a.asset_id for p in cat.programs.values() for r in p.rules for a in r.actions}
    assert ids == {cat.asset_ids["PTS"]}
    # and the shipped samples share PTS the same way
    assert load_catalog(PROGRAMS_DIR).asset_ids["PTS"] == cat.asset_ids["PTS"]


def test_shared_asset_balance_is_per_entity_and_asset(tmp_path):
    """Balances are per (entity, asset), whichever program moved them."""
    write_program(tmp_path / "p" / "a.yaml", program_spec("alpha", copy.deepcopy(RULES)))
    write_program(tmp_path / "p" / "b.yaml", program_spec("beta", copy.deepcopy(RULES)))
    db = tmp_path / "l.duckdb"
    run_batch(tmp_path / "p", write_events(tmp_path / "e" / "x.parquet", [
        event("alpha", "k1", "u", "2025-11-01T00:00:00Z", {"type": "purchase"}),
        event("beta", "k1", "u", "2025-11-01T00:00:01Z", {"type": "purchase"}),  # same key, other program
    ]), db)
    assert query(db, "SELECT external_id, asset_symbol, available FROM balances WHERE entity_type = 'PARTICIPANT'") \
        == [("u", "PTS", Decimal(20))]


@pytest.mark.parametrize("field,value", [("scale", 2), ("name", "Pointz"), ("max_transaction_amount", "100")])
def test_conflicting_asset_definition_is_error(tmp_path, field, value):
    write_program(tmp_path / "a.yaml", program_spec("alpha", copy.deepcopy(RULES)))
    other = program_spec("beta", copy.deepcopy(RULES))
    other["assets"][0][field] = value
    write_program(tmp_path / "b.yaml", other)
    with pytest.raises(CatalogError) as e:
        load_catalog(tmp_path)
    assert "PTS" in str(e.value) and "b.yaml" in str(e.value) and "a.yaml" in str(e.value)


@pytest.mark.parametrize("where,value", [("scale", True), ("order", True), ("order", False), ("rank", True)])
def test_a_boolean_is_no_whole_number(tmp_path, where, value):
    # pydantic reads true as 1 in an int field: `rank: true` was rank 1, `scale: true` scale 1. A
    # whole-number field takes digits (semantics.md 2.1: a file that does not validate is an error)
    spec = program_spec("alpha", copy.deepcopy(RULES))
    if where == "scale":
        spec["assets"][0]["scale"] = value
    elif where == "order":
        spec["rules"][0]["order"] = value
    else:
        spec["tiers"] = [{"key": "status", "name": "Status", "levels": [{"key": "gold", "rank": value}]}]
    write_program(tmp_path / "a.yaml", spec)
    with pytest.raises(CatalogError) as e:
        load_catalog(tmp_path)
    assert where in str(e.value) and "not a whole number" in str(e.value), str(e.value)


def test_duplicate_program_key_is_error(tmp_path):
    write_program(tmp_path / "a.yaml", program_spec("alpha", copy.deepcopy(RULES)))
    write_program(tmp_path / "b.yaml", program_spec("alpha", copy.deepcopy(RULES)))
    with pytest.raises(CatalogError, match="alpha"):
        load_catalog(tmp_path)


def test_asset_id_alias(tmp_path):
    spec = program_spec("shop", copy.deepcopy(RULES))
    spec["rules"][0]["actions"][0] = {"type": "CREDIT", "asset_id": "PTS", "amount": "10"}
    cat = load_catalog(write_program(tmp_path / "shop.yaml", spec))
    assert cat.programs["shop"].rules[0].actions[0].asset.symbol == "PTS"


def test_yaml_float_amount_is_exact(tmp_path):
    """A YAML number amount keeps its decimal text (never a binary float)."""
    spec = program_spec("shop", copy.deepcopy(RULES), assets=[
        {"symbol": "CASH", "name": "Cash", "scale": 2}])
    spec["rules"] = [{"name": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "CASH", "amount": 0.1}]}]
    cat = load_catalog(write_program(tmp_path / "shop.yaml", spec))
    assert cat.programs["shop"].rules[0].actions[0].amount == Decimal("0.1")


def test_a_changed_program_file_is_read_again_in_the_same_process(tmp_path):
    """load_catalog keeps the last catalog for files with the same names and bytes (a backfill
    runs hundreds of batches in one process); an edited file must never be served stale."""
    f = write_program(tmp_path / "p" / "shop.yaml", program_spec("shop", RULES))
    first = load_catalog(tmp_path / "p")
    assert load_catalog(tmp_path / "p") is first
    edited = copy.deepcopy(RULES)
    edited[0]["actions"][0]["amount"] = "11"
    write_program(f, program_spec("shop", edited))
    second = load_catalog(tmp_path / "p")
    (rule,) = [r for r in second.programs["shop"].rules if r.key == "purchase"]
    (before,) = [r for r in first.programs["shop"].rules if r.key == "purchase"]
    assert rule.version != before.version


def test_a_value_of_the_wrong_form_is_named_with_the_form_in_words(tmp_path):
    """A key or colour that does not match its pattern says what the field takes, not the regular
    expression that checks it."""
    spec = program_spec("shop", [dict(RULES[0], key="Bad Key!")])
    spec["tiers"] = [{"key": "status", "levels": [{"key": "gold", "rank": 1, "color": "gold"}]}]
    write_program(tmp_path / "p.yaml", spec)
    with pytest.raises(CatalogError) as e:
        load_catalog(tmp_path)
    text = str(e.value)
    assert "rules[0] (Purchase points).key: 'Bad Key!' is not a key: lowercase letters" in text
    assert "levels[0].color: 'gold' is not a hex color: #RGB" in text
    assert "[a-z" not in text and "A-Fa-f" not in text
