"""Outsider round on payload fidelity (session 21): program files and operations written as Scrip's
API payloads document them (scrip-reference.md 2-22, semantics.md 2.1, 2.3, 13), through the real
CLI. Each test names its section; expectations are worked out by hand from those sections.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from tests.e2e.test_contract_audit import Ledger, at, ev, on, op, program
from tests.helpers.io import cli, write_program


def _squash(text: str) -> str:
    return "".join(text.split())


def _validate_text(tmp: Path, name: str, text: str) -> tuple[int, str]:
    """`perkflow validate` of one program file written as `text`; exit code and output."""
    path = tmp / "programs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    res = cli("validate", "--programs", str(path))
    return res.returncode, res.stdout + res.stderr


SHOP_YAML = """\
program: {key: shop, name: Shop}
assets: [{symbol: PTS, name: Points, scale: 0, inventory_mode: SIMPLE, issuance_policy: UNLIMITED}]
rules:
  - name: purchase
    key: purchase
    condition: event.type == "purchase"
    actions:
"""


# --- semantics.md 2.1: fields as Scrip's JSON payloads; YAML and JSON of one payload agree ------

def test_s2_1_an_unquoted_clock_time_in_yaml_is_the_text_json_gives(tmp_path):
    """semantics.md 2.1 / 7: `{"type": "SET_ATTRIBUTE", "key": "pref_time", "value": "12:30"}` in
    a JSON file stores the attribute "12:30" (static text is a literal string). The same payload in
    YAML, `value: 12:30`, must store the same "12:30": YAML 1.1 read it as the base-60 number 750
    and stored "750"."""
    led = Ledger(tmp_path)
    led.programs.mkdir(parents=True)
    (led.programs / "shop.yaml").write_text(
        SHOP_YAML + "      - {type: SET_ATTRIBUTE, key: pref_time, value: 12:30}\n"
                    "      - {type: SET_ATTRIBUTE, key: window, value: 1:30.5}\n", encoding="utf-8")
    led.run([ev("k1", "u1", at(1), "purchase")])
    state = led.state("u1")
    assert state[("ATTRIBUTE", "pref_time")] == "12:30", state
    assert state[("ATTRIBUTE", "window")] == "1:30.5", state


def test_s2_1_an_unquoted_number_with_a_leading_zero_is_a_load_error_not_an_octal_amount(tmp_path):
    """semantics.md 2.1 / 13, decisions "Value fields" (an unquoted YAML number is the decimal the
    file shows): `amount: 010` shows ten, and YAML 1.1 reads it as octal 8 (the participant was
    credited 8, silently); JSON has no such number. It is ambiguous, so the file does not load:
    exit 2 naming the file and the line, nothing written. `0x1F`-style numbers and plain ones
    still load."""
    code, out = _validate_text(tmp_path, "shop.yaml",
                               SHOP_YAML + "      - {type: CREDIT, asset: PTS, amount: 010}\n")
    assert code == 2, out
    for word in ("shop.yaml", "010", "leading zero", "line 8"):
        assert word in out, (word, out)
    code, out = _validate_text(tmp_path, "shop.yaml", SHOP_YAML.replace("key: purchase", "key: purchase\n    order: 010")
                               + "      - {type: CREDIT, asset: PTS, amount: 10}\n")
    assert code == 2 and "leading zero" in out, out
    code, out = _validate_text(tmp_path, "shop.yaml", SHOP_YAML + "      - {type: CREDIT, asset: PTS, amount: 0x10}\n")
    assert code == 0, out


# --- scrip-reference.md 9, 10: a counter's and an attribute's key --------------------------------

@pytest.mark.parametrize("action", [
    {"type": "COUNTER", "key": "", "value": "1"},
    {"type": "SET_ATTRIBUTE", "key": "", "value": "gold"}])
def test_s7_a_counter_or_attribute_action_with_an_empty_key_is_a_load_error(tmp_path, action):
    """scrip-reference.md 10: counters and attributes are named by a key (`/state/counters/{key}`);
    the set_counter and set_attribute operations already refuse `params.key: ""`. The same key in
    a rule action loaded and wrote a counter (or attribute) named by nothing on every event; it is
    a load error naming the file, rule and `actions[0].key`, exit 2."""
    path = write_program(tmp_path / "programs" / "shop.yaml", program([on("purchase", action)]))
    res = cli("validate", "--programs", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    for word in ("shop.yaml", "rules[0] (purchase)", "actions[0].key", "non-empty"):
        assert _squash(word) in _squash(res.stderr), (word, res.stderr)


# --- scrip-reference.md 18, 21: event_name is 1-255 characters ----------------------------------

@pytest.mark.parametrize("action", [
    {"type": "SCHEDULE_EVENT", "delay": "24h"}, {"type": "BROADCAST"}])
def test_s7_a_system_event_name_keeps_scrips_limit_of_255(tmp_path, action):
    """scrip-reference.md 18: an automation's `event_name` is 1-255 characters, and SCHEDULE_EVENT
    creates one (`source: rule_action`); perkflow's automations already kept the limit. A
    SCHEDULE_EVENT or BROADCAST `event_name` of 255 loads; 256 is a load error naming the field."""
    for length, expect in ((255, 0), (256, 2)):
        spec = program([on("purchase", {**action, "event_name": "e" * length})])
        path = write_program(tmp_path / "programs" / "shop.yaml", spec)
        res = cli("validate", "--programs", str(path))
        assert res.returncode == expect, (length, res.stdout + res.stderr)
    assert "actions[0].event_name" in res.stderr and "255" in res.stderr, res.stderr


# --- scrip-reference.md 4, 21: the participant profile of upsert_participant --------------------

def test_s2_3_upsert_participant_profile_fields_keep_scrips_limits(tmp_path):
    """scrip-reference.md 4 / 21: `email` optional, validated, up to 255; `phone` up to 50;
    `first_name`, `last_name`, `display_name` up to 255; an empty string clears a field. perkflow
    accepts the profile without storing it, and accepted anything: a 51-character phone, an email
    without an @, a number as display name. Each now fails the operation `invalid_operation`
    naming the field; values at the limits (and "") complete."""
    led = Ledger(tmp_path, program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "10"})]))
    led.run(operations=[
        op("upsert_participant", "ok", "u1", at(1), phone="1" * 50, email="jane@example.com",
           first_name="J" * 255, last_name="", display_name="Jane Doe"),
        op("upsert_participant", "phone", "u2", at(1), phone="1" * 51),
        op("upsert_participant", "email", "u3", at(1), email="jane.example.com"),
        op("upsert_participant", "long_email", "u4", at(1), email="j@" + "e" * 254),
        op("upsert_participant", "name", "u5", at(1), last_name="x" * 256),
        op("upsert_participant", "display", "u6", at(1), display_name=5),
    ])
    status = led.status()
    assert status.pop("ok") == ("COMPLETED", None)
    assert status == {k: ("FAILED", "invalid_operation") for k in ("phone", "email", "long_email", "name", "display")}
    messages = dict(led.sql("SELECT idempotency_key, error_message FROM operations"))
    for key, field in (("phone", "params.phone"), ("email", "params.email"), ("long_email", "params.email"),
                       ("name", "params.last_name"), ("display", "params.display_name")):
        assert field in messages[key], (key, messages[key])


# --- scrip-reference.md 3, 7, 9, 15; seeds/quickstart.txt: an asset named by its id -------------

def test_s2_1_a_rule_budget_and_reward_may_name_the_asset_by_its_id_as_the_quickstart_does(tmp_path):
    """seeds/quickstart.txt: "Copy the asset_id from this response", then the rule's action says
    `"asset_id": "YOUR_ASSET_ID"`; Scrip's budgets and rewards name the asset by id too. perkflow's
    asset id is the `assets` table's id (UUIDv5 of the symbol), which operations already accept
    and `program_id` may restate. In a program file it was "unknown asset symbol". Written as the
    quickstart's JSON bodies with the ids (one in capitals, UUIDs are case-insensitive), the file
    loads and means what the symbol means: the purchase credits 10 PTS, with the same rule
    version as the file that writes `PTS` (ids and versions derive from the symbol)."""
    led_sym = Ledger(tmp_path / "sym")
    spec = {"program": {"name": "Customer Loyalty"},
            "assets": [{"name": "Points", "symbol": "PTS", "inventory_mode": "SIMPLE",
                        "issuance_policy": "UNLIMITED", "scale": 0}],
            "rules": [{"name": "10 Points per Purchase", "condition": 'event.type == "purchase"',
                       "budgets": [{"asset_id": "PTS", "limit": "1000"}],
                       "actions": [{"type": "CREDIT", "asset_id": "PTS", "amount": "10"}]}],
            "rewards": [{"name": "Mug", "redemption_type": "UNIT_BASED", "asset_id": "PTS", "unit_cost": "10",
                         "status": "ACTIVE"}]}
    led_sym.programs.mkdir(parents=True)
    (led_sym.programs / "loyalty.json").write_text(json.dumps(spec), encoding="utf-8")
    events = [{**ev("first-purchase-001", "user_123", at(1), "purchase", amount=49.99), "program": "customer_loyalty"}]
    led_sym.run(events)
    asset_id = led_sym.sql("SELECT id FROM assets WHERE symbol = 'PTS'")[0][0]
    by_id = json.loads(json.dumps(spec))
    by_id["rules"][0]["actions"][0]["asset_id"] = str(asset_id).upper()
    by_id["rules"][0]["budgets"][0]["asset_id"] = str(asset_id)
    by_id["rewards"][0]["asset_id"] = str(asset_id)
    led_id = Ledger(tmp_path / "id")
    led_id.programs.mkdir(parents=True)
    (led_id.programs / "loyalty.json").write_text(json.dumps(by_id), encoding="utf-8")
    led_id.run(events)
    assert led_id.balance("user_123") == (D(10), D(0), D(0))
    version = "SELECT rule_version FROM rule_evaluations"
    assert led_id.sql(version) == led_sym.sql(version) and len(led_id.sql(version)) == 1
    assert led_id.sql("SELECT asset_id FROM rewards") == led_sym.sql("SELECT asset_id FROM rewards")
    # an id that is no asset of this file is still an error naming the rule and the id
    by_id["rules"][0]["actions"][0]["asset_id"] = "5f0523d7-0000-5000-8000-000000000000"
    (led_id.programs / "loyalty.json").write_text(json.dumps(by_id), encoding="utf-8")
    res = cli("validate", "--programs", str(led_id.programs))
    assert res.returncode == 2 and "5f0523d7-0000" in res.stderr and "rules[0]" in res.stderr, res.stderr


# --- scrip-reference.md 5: a group as Scrip's create-a-group body --------------------------------

def test_s11_a_group_written_as_scrips_create_body_loads_keyed_by_its_name(tmp_path):
    """scrip-reference.md 5: `POST /v1/groups` takes `name`, `members` and an optional
    `on_behalf_of_participant_id` (for audit); there is no key. Programs, rules, rewards and
    automations written without `key` get a slug of their name (semantics.md 2.1: ids derive from
    keys); a group said "groups[0].key: Field required", and `on_behalf_of_participant_id`
    "unknown field". Written so, the group is keyed `family_pool`, a rule reaches it by that key
    and credits its wallet 10; an on_behalf id that is no UUID is a load error naming the field."""
    spec = program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "10",
                                    "target": {"type": "GROUP", "id": "family_pool"}})])
    spec["groups"] = [{"name": "Family Pool", "on_behalf_of_participant_id": "5f0523d7-15e8-58f0-8005-90a61152916c",
                       "members": [{"external_id": "u1", "role": "ADMIN"}]}]
    led = Ledger(tmp_path, spec)
    led.run([ev("k1", "u1", at(1), "purchase")])
    assert led.status() == {"k1": ("COMPLETED", None)}
    assert led.sql("SELECT g.key, b.available FROM balances b JOIN groups g ON g.id = b.entity_id "
                   "WHERE b.entity_type = 'GROUP'") == [("family_pool", D(10))]
    spec["groups"][0]["on_behalf_of_participant_id"] = "jane"
    path = write_program(tmp_path / "bad" / "shop.yaml", spec)
    res = cli("validate", "--programs", str(path))
    assert res.returncode == 2 and "groups[0].on_behalf_of_participant_id" in res.stderr, res.stderr


# --- semantics.md 2.1, 13: an unknown field's error says what the object takes -------------------

def test_s2_1_an_unknown_field_error_lists_the_fields_its_object_takes(tmp_path):
    """scrip-reference.md 14: the counter-rollover mode's field name "was not found"; perkflow's is
    `rollover` (docs/decisions.md). A Scrip user who writes `counters: {mode: EXCESS}` got
    "unknown field (check its spelling against semantics.md 2.1)", and semantics.md 10 names no
    field. The error (exit 2) still names the file and path, and now lists the fields that object
    takes, so the user finds `rollover`; likewise for a pasted response field such as `program.id`."""
    spec = program([on("purchase", {"type": "COUNTER", "key": "spend", "value": "1"})])
    spec["program"]["id"] = "5f0523d7-15e8-58f0-8005-90a61152916c"
    spec["tiers"] = [{"key": "status", "levels": [
        {"key": "gold", "rank": 1, "qualification": {"criteria": [{"counter": "spend", "operator": ">=",
                                                                   "threshold": 5}]}}],
        "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                      "downgrade_policy": {"mode": "DROP_TO_QUALIFYING"},
                      "counters": {"mode": "EXCESS", "qualifying": ["spend"]}}}]
    path = write_program(tmp_path / "programs" / "shop.yaml", spec)
    res = cli("validate", "--programs", str(path))
    assert res.returncode == 2, res.stdout
    lines = {line.split(":")[0].strip(): line for line in res.stderr.splitlines()}
    counters = lines["tiers[0] (status).lifecycle.counters.mode"]
    assert "unknown field" in counters and "qualifying, rollover" in counters, res.stderr
    assert "redemption_target_type" in lines["program.id"], res.stderr


# --- scrip-reference.md 14, 21: a tier's and a level's display_name are names (1-255) -------------

@pytest.mark.parametrize("where", ["tier", "level"])
def test_s10_tier_and_level_display_names_keep_the_255_limit_and_errors_name_display_name(tmp_path, where):
    """scrip-reference.md 21: "Names 1-255 characters"; a tier's and a level's `display_name`
    (perkflow's `name`) had no limit. 255 characters load; 256 is a load error that names the field
    as the file writes it, `display_name` (an error said `name`, a field the file does not have)."""
    def spec(length: int) -> dict:
        level = {"key": "gold", "rank": 1}
        tier = {"key": "status", "levels": [level]}
        (tier if where == "tier" else level)["display_name"] = "G" * length
        return program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "1"})], tiers=[tier])
    for length, expect in ((255, 0), (256, 2)):
        path = write_program(tmp_path / "programs" / "shop.yaml", spec(length))
        res = cli("validate", "--programs", str(path))
        assert res.returncode == expect, (length, res.stdout + res.stderr)
    field = "tiers[0] (status).display_name" if where == "tier" else "tiers[0] (status).levels[0].display_name"
    assert field in res.stderr and "255" in res.stderr, res.stderr


# --- scrip-reference.md 5: add-members' batch form is said to be unsupported ---------------------

def test_s2_3_add_group_member_with_scrips_batch_members_says_it_is_not_supported(tmp_path):
    """scrip-reference.md 5: `POST /v1/groups/{id}/members` takes `{"members": [{participant_id,
    role}]}` for a batch or `{participant_id, role}` for one. An operation row names one
    participant, so perkflow takes one row per member (docs/decisions.md); the batch body failed
    as if `members` were a typo ("is not a field of add_group_member"). It fails
    `operation_not_supported` saying what to send instead, and nobody joins; the one-member form
    completes."""
    spec = program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "1"})])
    spec["groups"] = [{"key": "fam", "name": "Fam", "members": [{"external_id": "u1", "role": "ADMIN"}]}]
    led = Ledger(tmp_path, spec)
    led.run([ev("k1", "u1", at(1), "purchase"), ev("k2", "u2", at(1), "purchase"), ev("k3", "u3", at(1), "purchase")])
    led.run(operations=[
        op("add_group_member", "batch", "u2", at(2), group_id="fam",
           members=[{"external_id": "u3", "role": "MEMBER"}]),
        op("add_group_member", "one", "u2", at(3), group_id="fam", role="MEMBER")])
    status = led.status()
    assert status["batch"] == ("FAILED", "operation_not_supported") and status["one"] == ("COMPLETED", None)
    message = led.sql("SELECT error_message FROM operations WHERE idempotency_key = 'batch'")[0][0]
    assert "params.members" in message and "one add_group_member row per member" in message, message
    assert sorted(led.sql("SELECT external_id FROM group_members WHERE status = 'ACTIVE'")) == [("u1",), ("u2",)]


# --- scrip-reference.md 2: a link to an asset alone says what to write instead -------------------

def test_s2_1_an_asset_link_alone_says_to_define_the_asset_in_this_file_too(tmp_path):
    """scrip-reference.md 2: Scrip shares an asset by linking it, `POST /v1/programs/{id}/assets`
    with `{"asset_id"}`. semantics.md 2.1: the same asset defined identically in two program files
    is one shared asset. A second program file that writes the link, `assets: [{asset_id: PTS}]`,
    said "unknown field" and "Field required" three times; the load error (exit 2) now names the
    file and `assets[0]`, says the link is not supported and what to write instead."""
    first = program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "1"})])
    second = program([on("visit", {"type": "CREDIT", "asset": "PTS", "amount": "2"})], key="cafe")
    second["assets"] = [{"asset_id": "PTS"}]
    write_program(tmp_path / "programs" / "shop.yaml", first)
    path = write_program(tmp_path / "programs" / "cafe.yaml", second)
    res = cli("validate", "--programs", str(tmp_path / "programs"))
    assert res.returncode == 2, res.stdout
    for word in (str(path), "assets[0]", "not supported", "define the asset here", "semantics.md 2.1"):
        assert _squash(word) in _squash(res.stderr), (word, res.stderr)


# --- scrip-reference.md 0, 8; semantics.md 2.1, 6: a literal that can never convert ---------------

@pytest.mark.parametrize("where, text, call", [
    ("condition", "event.type == 'settlement' && now() < timestamp('2026-09-01')", "timestamp('2026-09-01')"),
    ("amount", "now - duration('1d') < now ? 5 : 1", "duration('1d')"),
])
def test_s6_a_literal_timestamp_or_duration_that_can_never_convert_is_a_load_error(tmp_path, where, text, call):
    """scrip-reference.md 0: Scrip's own example rule says `now() < timestamp('2026-09-01')`. CEL's
    timestamp() takes RFC 3339 with a time zone, so that call fails on every event: the rule loaded
    and was SKIPPED_ERROR forever ("invalid timestamp '2026-09-01'"), and an amount with
    `duration('1d')` failed every event. A conversion of a literal that can never succeed is known
    at load: exit 2 naming the file, rule, field and the call, with the form to write. (The same
    with a valid literal loads and runs.)"""
    action = {"type": "CREDIT", "asset": "PTS", "amount": text if where == "amount" else "5"}
    rule = {"name": "Summer Travel Promo", "condition": text if where == "condition" else "true", "actions": [action]}
    path = write_program(tmp_path / "programs" / "shop.yaml", program([rule]))
    res = cli("validate", "--programs", str(path))
    assert res.returncode == 2, res.stdout
    for word in ("shop.yaml", "rules[0] (Summer Travel Promo)", where, call, "can never", "RFC 3339"):
        assert _squash(word) in _squash(res.stderr), (word, res.stderr)
    fixed = text.replace("'2026-09-01'", "'2026-09-01T00:00:00Z'").replace("'1d'", "'24h'")
    led = Ledger(tmp_path / "ok", program([{**rule, "condition": fixed if where == "condition" else "true",
                                            "actions": [{**action, "amount": fixed if where == "amount" else "5"}]}]))
    led.run([{**ev("k1", "u1", at(1), "settlement"), "when": "2026-07-01T00:00:00Z"}])
    assert led.balance("u1") == (D(5), D(0), D(0))


# --- scrip-reference.md 6.2; semantics.md 2.2, 13: Scrip's batch body saved as a .json file -----

def test_s13_scrips_batch_body_in_a_json_file_is_refused_saying_to_write_ndjson(tmp_path):
    """scrip-reference.md 6.2: `POST /v1/events/batch` takes `{"events": [...]}`. A user who saves
    that body as `batch.json` and passes it as `--events` got "cannot be read as Parquet: Parquet
    magic bytes not found in footer", which says nothing of what to do. semantics.md 13: a file
    that cannot be read stops the run, nothing written, with one clear message naming the file
    and problem: it now says a .json file is not read and to write the items as NDJSON; the same
    items as NDJSON lines run and credit the quickstart's 10 points."""
    led = Ledger(tmp_path, program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "10"})]))
    item = {"program_id": "shop", "external_id": "user_123", "idempotency_key": "first-purchase-001",
            "event_timestamp": at(1), "event_data": {"type": "purchase", "amount": 49.99}}
    body = tmp_path / "batch.json"
    body.write_text(json.dumps({"events": [item]}), encoding="utf-8")
    res = cli("run", "--programs", str(led.programs), "--events", str(body), "--db", str(led.db))
    assert res.returncode == 2 and not led.db.exists(), res.stdout + res.stderr
    for word in ("batch.json", ".ndjson", "one JSON object per line"):
        assert word in res.stderr, (word, res.stderr)
    lines = tmp_path / "batch.ndjson"
    lines.write_text(json.dumps(item) + "\n", encoding="utf-8")
    res = cli("run", "--programs", str(led.programs), "--events", str(lines), "--db", str(led.db))
    assert res.returncode == 0, res.stderr
    assert led.balance("user_123") == (D(10), D(0), D(0))


def test_s2_3_an_upsert_that_fails_on_its_params_creates_nobody(tmp_path):
    """scrip-reference.md 4: `POST /v1/participants` is an upsert; a body Scrip refuses (a status
    outside ACTIVE / SUSPENDED / CLOSED, a 51-character phone) answers 400 and creates nobody.
    semantics.md 2.3 / 5.5: a failing operation is FAILED as a whole, no state change. perkflow
    created (and enrolled) the ACTIVE participant at intake and then failed the operation. Now
    neither u2 nor u3 exists after their failing upserts; u4, whose first upsert fails and second
    completes in the same batch, exists from the second with its status and tags."""
    led = Ledger(tmp_path, program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run(operations=[
        op("upsert_participant", "bad_status", "u2", at(1), status="FROZEN"),
        op("upsert_participant", "bad_phone", "u3", at(1), phone="5" * 51),
        op("upsert_participant", "u4_bad", "u4", at(1), tags="vip"),
        op("upsert_participant", "u4_ok", "u4", at(2), status="SUSPENDED", tags=["VIP"]),
    ])
    status = led.status()
    assert status == {"bad_status": ("FAILED", "invalid_operation"), "bad_phone": ("FAILED", "invalid_operation"),
                      "u4_bad": ("FAILED", "invalid_operation"), "u4_ok": ("COMPLETED", None)}, status
    messages = dict(led.sql("SELECT idempotency_key, error_message FROM operations"))
    assert "params.status" in messages["bad_status"] and "params.phone" in messages["bad_phone"], messages
    assert "params.tags" in messages["u4_bad"], messages
    assert led.sql("SELECT external_id, status FROM participants") == [("u4", "SUSPENDED")]
    assert ("TAG", "vip") in led.state("u4"), led.state("u4")


# --- semantics.md 2.1: an unquoted YAML boolean condition is the CEL literal ---------------------

def test_s2_1_an_unquoted_boolean_condition_in_yaml_is_the_cel_literal_json_writes_as_text(tmp_path):
    """semantics.md 2.1 / 5: a rule's `condition` is CEL text; `"condition": "true"` in JSON is a
    rule that always matches. In YAML a string needs no quotes, and `condition: true` is that
    same payload as a YAML user writes it, but YAML hands it over as a boolean and the file did not
    load ("Input should be a valid string"); an automation's `guard_condition: true` likewise. It
    loads as the CEL literal, with the rule version the JSON file gives (one `rule_evaluations`
    version across the two files), and the rule matches every event."""
    yaml_text = ("program: {key: shop, name: Shop}\n"
                 "assets: [{symbol: PTS, name: Points, scale: 0}]\n"
                 "rules:\n  - {name: always, key: always, condition: true, actions: [{type: CREDIT, asset: PTS, amount: '1'}]}\n"
                 "automations:\n  - {name: a, event_name: e, scope: participants, trigger: {type: immediate},"
                 " guard_condition: true}\n")
    json_doc = {"program": {"key": "shop", "name": "Shop"}, "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}],
                "rules": [{"name": "always", "key": "always", "condition": "true",
                           "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}],
                "automations": [{"name": "a", "event_name": "e", "scope": "participants",
                                 "trigger": {"type": "immediate"}, "guard_condition": "true"}]}
    versions = []
    for name, text in (("shop.yaml", yaml_text), ("shop.json", json.dumps(json_doc))):
        led = Ledger(tmp_path / name)
        led.programs.mkdir(parents=True)
        (led.programs / name).write_text(text, encoding="utf-8")
        led.run([ev("k1", "u1", at(1), "anything")])
        assert led.balance("u1") == (D(1), D(0), D(0)), name
        versions.append(led.sql("SELECT rule_version FROM rule_evaluations WHERE outcome = 'MATCHED'"))
    assert versions[0] == versions[1] and len(versions[0]) == 1, versions


def test_s2_1_an_exponent_number_reads_the_same_in_yaml_as_in_json(tmp_path):
    """semantics.md 2.1 / 7: `"amount": 1e1` and `"amount": 0.5e1` in a JSON file are the numbers
    10 and 5 and credit 15. YAML 1.1 reads unquoted `1e1` and `0.5e1` as text (it wants `1.0e+1`),
    so the same payload in YAML was a load error ("neither a number nor a CEL expression"); YAML
    1.2 and JSON read numbers. Both files now credit 15."""
    for name, text in (("shop.json", json.dumps(program([on("purchase", {"type": "CREDIT", "asset": "PTS", "amount": 1e1},
                                                            {"type": "CREDIT", "asset": "PTS", "amount": 0.5e1})]))),
                       ("shop.yaml", SHOP_YAML + "      - {type: CREDIT, asset: PTS, amount: 1e1}\n"
                                     "      - {type: CREDIT, asset: PTS, amount: 0.5e1}\n")):
        led = Ledger(tmp_path / name)
        led.programs.mkdir(parents=True)
        # (JSON as written by hand: `1e1`, not the `10.0` json.dumps makes of it)
        if name.endswith("json"):
            text = text.replace('"amount": 10.0', '"amount": 1e1').replace('"amount": 5.0', '"amount": 0.5e1')
        (led.programs / name).write_text(text, encoding="utf-8")
        led.run([ev("k1", "u1", at(1), "purchase")])
        assert led.balance("u1") == (D(15), D(0), D(0)), name


def test_s7_scrips_marketing_hold_until_says_it_is_not_in_scrips_api_and_what_to_use(tmp_path):
    """scrip-reference.md 0, 9: the marketing example's CREDIT has `hold_until`, which Scrip's API
    action schema does not. Pasted into a program file it was "unknown field (check its spelling
    ...)", as if misspelt. The load error (exit 2, file and path named) says it is not supported
    and what perkflow has for it: `matures_at` on a LOT asset, or a HELD credit settled later."""
    spec = program([on("settlement", {"type": "CREDIT", "asset_id": "PTS", "amount": "event.amount * 0.05",
                                      "hold_until": "event.settled_at"})])
    path = tmp_path / "programs" / "travel.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(spec), encoding="utf-8")
    res = cli("validate", "--programs", str(path))
    assert res.returncode == 2, res.stdout
    for word in ("travel.json", "rules[0] (settlement).actions[0].hold_until", "not supported", "matures_at",
                 "bucket: HELD"):
        assert _squash(word) in _squash(res.stderr), (word, res.stderr)


def test_s2_1_an_empty_yaml_section_or_a_json_null_list_is_an_empty_list(tmp_path):
    """semantics.md 2.1 shows `tiers: []`, `rewards: []`, `budgets: []`. A YAML file whose sections
    are left empty (`tiers:` with nothing under it: YAML's null), and Scrip-style JSON with
    `"budgets": null`, did not load ("Input should be a valid list"), though a null `key`, `order`
    or `description` was already read as absent. Null is absent (as in events, semantics.md 2.2):
    both load, the rule credits, and its version is the one of the file that writes `[]`."""
    empty = SHOP_YAML.replace("    key: purchase\n", "    key: purchase\n    budgets:\n") \
        + "      - {type: CREDIT, asset: PTS, amount: 10, description: null}\ntiers:\nrewards:\nautomations:\ngroups:\n"
    listed = SHOP_YAML.replace("    key: purchase\n", "    key: purchase\n    budgets: []\n") \
        + "      - {type: CREDIT, asset: PTS, amount: 10}\ntiers: []\nrewards: []\nautomations: []\ngroups: []\n"
    versions = []
    for name, text in (("empty", empty), ("listed", listed)):
        led = Ledger(tmp_path / name)
        led.programs.mkdir(parents=True)
        (led.programs / "shop.yaml").write_text(text, encoding="utf-8")
        led.run([ev("k1", "u1", at(1), "purchase")])
        assert led.balance("u1") == (D(10), D(0), D(0)), name
        versions.append(led.sql("SELECT rule_version FROM rule_evaluations"))
    assert versions[0] == versions[1], versions
