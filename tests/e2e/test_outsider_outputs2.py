"""Outsider round 2 on outputs and program files (semantics.md 2.1, 12), black-box.

Each scenario is written from the contract and the docs alone (README.md, docs/), its expectations
worked out by hand in the comments, and run through the real CLI (`perkflow run / op / validate /
sql / report`) into a real DuckDB file, read back with SQL. The tests of a divergence failed before
its fix (docs/decisions.md names each).
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal as D

from tests.e2e.test_contract_audit import SIMPLE, Ledger, at, ev, on, op, program
from tests.helpers.io import cli

LOT = {"symbol": "CASH", "name": "Cash", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 2}


def rich_project() -> tuple[dict, ...]:
    """Two programs that write every kind of row that has an id: participants, events, rule
    evaluations, entries, postings, lots, redemptions, a transfer, a group, a tier, a reward, an
    automation, a SYSTEM event."""
    tier = {"key": "status", "levels": [{"key": "gold", "rank": 1, "qualification": {
        "mode": "ALL", "criteria": [{"counter": "n", "operator": ">=", "threshold": 1}]}}]}
    shop = program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "100"},
                       {"type": "CREDIT", "asset": "CASH", "amount": "5.5", "expires_at": "24h"},
                       {"type": "COUNTER", "key": "n", "value": "1"},
                       {"type": "SCHEDULE_EVENT", "event_name": "later", "delay": "1h"}),
                    on("gift", {"type": "CREDIT", "asset": "PTS", "amount": "7", "target": {"type": "GROUP",
                                                                                             "id": "family"}})],
                   [SIMPLE, LOT], tiers=[tier],
                   rewards=[{"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED", "asset": "PTS",
                             "unit_cost": "10", "status": "ACTIVE"}],
                   groups=[{"key": "family", "name": "Family", "members": [{"external_id": "u1", "role": "ADMIN"}]}],
                   automations=[{"key": "daily", "name": "Daily", "event_name": "tick", "scope": "participants",
                                 "trigger": {"type": "cron", "cron_expression": "0 0 * * *"}}])
    club = program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})], key="club")
    return shop, club


def build(tmp_path) -> Ledger:
    led = Ledger(tmp_path, *rich_project())
    led.run([ev("e1", "u1", at(1, 1), "earn"), ev("e2", "u2", at(1, 2), "earn"), ev("e3", "u1", at(1, 4), "gift"),
             ev("c1", "u2", at(1, 5), "earn") | {"program": "club"}],
            [op("redeem_item", "r1", "u1", at(1, 6), reward="mug"),
             op("reverse_redemption", "v1", "u1", at(1, 7), redemption="r1"),
             op("transfer", "t1", "u1", at(1, 8), asset="PTS", recipients=[{"external_id": "u2", "amount": "3"}]),
             op("redeem", "r2", "u2", at(1, 9), asset="CASH", amount="1.5")])
    return led


def uuid_values(led: Ledger) -> dict[str, list[str]]:
    """Every stored UUID, per table.column: the UUID columns, and the VARCHAR columns holding ids."""
    cols = led.sql("SELECT table_name, column_name, data_type FROM information_schema.columns "
                   "WHERE table_schema = 'main' AND (data_type = 'UUID' OR column_name = 'id' OR column_name LIKE '%\\_id' "
                   "ESCAPE '\\') AND table_name IN (SELECT table_name FROM information_schema.tables "
                   "WHERE table_type = 'BASE TABLE') ORDER BY ALL")
    found = {}
    for table, column, _ in cols:
        values = [v for (v,) in led.sql(f'SELECT DISTINCT "{column}"::VARCHAR FROM "{table}" WHERE "{column}" IS NOT NULL')]
        try:
            found[f"{table}.{column}"] = sorted(str(uuid.UUID(v)) for v in values)
        except ValueError:
            continue   # not an id column (e.g. an idempotency key, an external id)
    return found


def test_s2_1_every_stored_id_is_an_rfc4122_uuidv5_and_the_same_in_a_fresh_database(tmp_path):
    """semantics.md 2.1: "Ids are UUIDv5 derived from keys ... so the same files always give the same
    ids"; 4: event ids from (program, idempotency_key), entry ids from (event id, rule version,
    action index). So every id the ledger stores (events', operations', entries' and postings'
    included) is an RFC 4122 UUID of version 5 (variant bits 10), and the same files and inputs
    in a fresh database give the same ids. Before: events, operations, entries and postings held
    md5 digests cast to UUID, whose version and variant nibbles are whatever the digest gave."""
    one, two = build(tmp_path / "a"), build(tmp_path / "b")
    ids = uuid_values(one)
    for must in ("events.id", "operations.id", "journal_entries.id", "postings.id", "journal_entries.event_id",
                 "postings.journal_entry_id", "lots.id", "redemptions.id", "participants.id", "programs.id",
                 "rule_evaluations.event_id"):
        assert ids.get(must), must
    wrong = {col: [v for v in vals if uuid.UUID(v).version != 5 or uuid.UUID(v).variant != uuid.RFC_4122]
             for col, vals in ids.items()}
    assert {col: vals[:2] for col, vals in wrong.items() if vals} == {}
    assert uuid_values(two) == ids


def test_s13_programs_naming_a_device_say_so_not_no_such_file(tmp_path):
    """semantics.md 13: program files that do not validate stop the run "with one clear message".
    `--programs /dev/null` exists (a device): it said "no such file or directory", which sends the
    user looking for a typo. Now: exit 2, the path, and that it is not a regular file or folder."""
    res = cli("validate", "--programs", "/dev/null")
    assert res.returncode == 2
    assert "/dev/null" in res.stderr and "no such file" not in res.stderr and "not a regular file" in res.stderr
    # so do --events and --operations (13: "one clear message naming the file and problem"),
    # nothing written
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    for flag in ("--events", "--operations"):
        res = cli("run", "--programs", str(led.programs), flag, "/dev/null", "--db", str(led.db))
        assert res.returncode == 2 and "/dev/null: not a regular file" in res.stderr, res.stderr
    assert not led.db.exists()


def test_s12_perkflow_sql_prints_intervals_as_durations_not_python_text(tmp_path):
    """semantics.md 12: tables and views "for ad-hoc SQL" through `perkflow sql`. An INTERVAL came
    out as Python's timedelta text: `interval 14 month` as "420 days, 0:00:00" (another duration:
    a timedelta has no months) and 26 hours as "1 day, 2:00:00". By hand, DuckDB's own text of
    those values: "1 year 2 months", "26:00:00"; in --json and in the table."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn")])
    query = "SELECT interval 14 month AS m, interval 26 hour AS h, 7 AS n"
    res = cli("sql", query, "--json", "--db", str(led.db))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [{"m": "1 year 2 months", "h": "26:00:00", "n": 7}]
    table = cli("sql", query, "--db", str(led.db))
    assert "1 year 2 months" in table.stdout and "days," not in table.stdout


def _validate(tmp_path, name: str, spec: dict):
    from tests.helpers.io import write_program
    write_program(tmp_path / name / "p.yaml", spec)
    return cli("validate", "--programs", str(tmp_path / name))


def test_s2_1_program_file_fields_of_the_wrong_form_are_load_errors(tmp_path):
    """semantics.md 2.1: "Validation happens before anything is written: unknown fields, bad enums
    ... are errors that name the file, the rule and the field". Each of these loaded (exit 0):
    - a rule or reward `key` that is no slug (`Bad Key!`, `a:b`), where program, group and
      automation keys are slugs (ids derive from keys; a defaulted key is the slug of the name);
    - a tier level `color` that is no hex colour (Scrip: "`color` (hex)");
    - a quoted `stop_after_match: "no"` / `allow_negative: "yes"`: text read as a boolean (a
      YAML/JSON boolean is a boolean; Scrip's JSON API takes no text there).
    Each is now exit 2 naming the file and the field; the well-formed ones still load."""
    earn = {"type": "CREDIT", "asset": "PTS", "amount": "1"}
    cases = {
        "rule_key": (program([on("earn", earn) | {"key": "Bad Key!"}]), "rules[0] (earn).key"),
        "rule_key_colon": (program([on("earn", earn) | {"key": "a:b"}]), "rules[0] (earn).key"),
        "reward_key": (program([on("earn", earn)], rewards=[{"key": "Mug!", "name": "Mug", "status": "ACTIVE",
                                                              "redemption_type": "UNIT_BASED", "asset": "PTS",
                                                              "unit_cost": "5"}]), "rewards[0] (Mug).key"),
        "color": (program([on("earn", earn)], tiers=[{"key": "status", "levels": [
            {"key": "gold", "rank": 1, "color": "gold"}]}]), "levels[0].color"),
        "stop_text": (program([on("earn", earn) | {"stop_after_match": "no"}]), "rules[0] (earn).stop_after_match"),
        "allow_text": (program([on("take", {"type": "DEBIT", "asset": "PTS", "amount": "1", "allow_negative": "yes"})]),
                       "actions[0].allow_negative"),
    }
    for name, (spec, field) in cases.items():
        res = _validate(tmp_path, name, spec)
        assert (name, res.returncode) == (name, 2), res.stdout
        assert "p.yaml" in res.stderr and field in res.stderr, (name, res.stderr)
    good = program([on("earn", earn | {}, key="earn_2", stop_after_match=True),
                    on("take", {"type": "DEBIT", "asset": "PTS", "amount": "1", "allow_negative": True})],
                   tiers=[{"key": "status", "levels": [{"key": "gold", "rank": 1, "color": "#FFD700"},
                                                       {"key": "silver", "rank": 0, "color": "#ccc"}]}],
                   rewards=[{"key": "mug-2", "name": "Mug", "status": "ACTIVE", "redemption_type": "UNIT_BASED",
                             "asset": "PTS", "unit_cost": "5"}])
    res = _validate(tmp_path, "good", good)
    assert res.returncode == 0, res.stderr


def test_s2_3_a_forfeit_operation_names_its_bucket(tmp_path):
    """semantics.md 2.3: operations carry "the fields of the matching Scrip endpoint"; Scrip's
    forfeit body: "`bucket`: AVAILABLE or HELD; **required for forfeit**" (scrip-reference.md 12).
    A forfeit is irreversible, and without an amount takes all its bucket holds. By hand: u1 earns
    100 and holds 40; a forfeit without `bucket` (and without amount) fails invalid_operation,
    nothing moved (it forfeited all 60 AVAILABLE); with `bucket: HELD` it forfeits the 40 held."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "100"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn")],
            [op("hold", "h1", "u1", at(1, 2), asset="PTS", amount="40"),
             op("forfeit", "f1", "u1", at(1, 3), asset="PTS"),
             op("forfeit", "f3", "u1", at(1, 5), asset="PTS", bucket="HELD")])
    status = led.status()
    assert status["f1"] == ("FAILED", "invalid_operation") and status["f3"] == ("COMPLETED", None)
    assert led.sql("SELECT error_message FROM operations WHERE idempotency_key = 'f1'")[0][0].endswith(
        "params.bucket is required")
    assert led.entries("f1") == [] and led.entries("f3") == [("FORFEIT", D(40))]
    assert led.balance("u1") == (D(60), D(0), D(0))


def test_s12_a_redemption_row_names_its_journal_entry_and_keeps_it_through_reversals(tmp_path):
    """semantics.md 12 lists `redemptions`; Scrip's redemption object (scrip-reference.md 16)
    carries `journal_entry_id`, the entry that moved the value. By hand: u1 earns 100, redeems 30
    (r1) and a mug of 10 (r2); the row of each names the one REDEMPTION entry its operation wrote
    (30 and 10 from u1's AVAILABLE). A partial reversal of r1 in a later batch rewrites its row
    (reversed_amount 5, PARTIALLY_REVERSED): its id and journal_entry_id stay what they were."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "100"})],
                                   rewards=[{"key": "mug", "name": "Mug", "status": "ACTIVE", "asset": "PTS",
                                             "redemption_type": "UNIT_BASED", "unit_cost": "10"}]))
    led.run([ev("e1", "u1", at(1, 1), "earn")],
            [op("redeem", "r1", "u1", at(1, 2), asset="PTS", amount="30"),
             op("redeem_item", "r2", "u1", at(1, 3), reward="mug")])
    named = """SELECT r.idempotency_key, r.id::VARCHAR, j.action_type, p.amount
               FROM redemptions r JOIN journal_entries j ON j.id = r.journal_entry_id
               JOIN postings p ON p.journal_entry_id = j.id AND p.entity_type = 'PARTICIPANT'
               WHERE j.operation_id = r.id ORDER BY 1"""
    first = led.sql(named)
    assert [(k, t, a) for k, _, t, a in first] == [("r1", "REDEMPTION", D(-30)), ("r2", "REDEMPTION", D(-10))]
    led.run(operations=[op("reverse_redemption", "v1", "u1", at(1, 4), redemption="r1", amount="5")])
    assert led.sql(named) == first
    assert led.sql("SELECT status, reversed_amount FROM redemptions WHERE idempotency_key = 'r1'") == \
        [("PARTIALLY_REVERSED", D(5))]
