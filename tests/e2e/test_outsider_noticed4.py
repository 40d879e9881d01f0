"""Black-box checks of the fourth round of what earlier sessions noticed and left (semantics.md
2, 6, 7, 11 and scrip-reference.md): each test writes program files and inputs, runs `perkflow`
in a subprocess into a real DuckDB file and reads the ledger back with SQL; expected values are
worked out by hand from the contract (docs/decisions.md where it is silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, on, op, program
from tests.helpers.io import cli

PATHS = [(0, None), (0, {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}), (600, None)]
PATH_IDS = ["kernel", "running-min-0", "set-based-600"]


# ---- 1. participant_id and external_id naming different participants ---------------------------

@pytest.mark.parametrize("fillers, env", PATHS, ids=PATH_IDS)
def test_a_participant_id_and_an_external_id_of_different_participants_fail_the_event(tmp_path, fillers, env):
    """scrip-reference.md 6: an event names its participant by `external_id` or `participant_id`,
    "exactly one"; semantics.md 5 step 1 resolves it. Both of one participant (e2) name it once:
    COMPLETED. An existing id beside someone else's external id (e3), or an external id nobody
    has (e4), or a recipient named both ways differently (e5) cannot be resolved to one
    participant: FAILED participant_mismatch, nothing credited, nobody created (the id used to
    win silently and credit u1). One point per `buy`: u1 has e1 + e2 = 2, u2 its own e0 = 1."""
    led = Ledger(tmp_path, program([on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e0", "u2", at(1, 9), "buy"), ev("e1", "u1", at(1, 10), "buy")])
    u1 = led.sql("SELECT id::VARCHAR FROM participants WHERE external_id = 'u1'")[0][0]
    rows = [ev("e2", "u1", at(2, 10), "buy") | {"participant_id": u1},
            ev("e3", "u2", at(2, 11), "buy") | {"participant_id": u1},
            ev("e4", "nobody", at(2, 12), "buy") | {"participant_id": u1.upper()},
            ev("e5", "u2", at(2, 13), "buy") | {"recipient_id": u1, "recipient_external_id": "u2"}]
    rows += [ev(f"f{i}", f"p{i}", at(2, 14), "buy") for i in range(fillers)]
    counts = led.run(rows, env=env)
    assert (counts["completed"], counts["failed"]) == (1 + fillers, 3)
    status = led.status()
    assert status["e2"] == OK
    assert status["e3"] == status["e4"] == status["e5"] == ("FAILED", "participant_mismatch")
    message = dict(led.sql("SELECT idempotency_key, error_message FROM events"))["e3"]
    assert u1 in message and "u2" in message
    assert led.balance("u1") == (D(2), D(0), D(0)) and led.balance("u2") == (D(1), D(0), D(0))
    assert led.sql("SELECT COUNT(*) FROM participants WHERE external_id = 'nobody'") == [(0,)]
    led.verify()
    # explain says no rule ran (step 1), rather than that `buy` was not matched
    res = cli("explain", "e3", "--programs", str(led.programs), "--db", str(led.db), "--json")
    assert res.returncode == 0 and "the event FAILED (participant_mismatch) before its rules" in res.stdout


# ---- 2. one RFC 3339 shape for every instant -------------------------------------------------

NOT_RFC3339 = "is not an RFC 3339 timestamp with a time zone; write e.g. 2025-01-01T00:00:00Z"


@pytest.mark.parametrize("as_of", ["2025-03-02T00:00:00+0100", "20250302T000000Z", "2025-03-02T00:00Z",
                                   "2025-03-02T00:00:00+01", "2025-W09-7T00:00:00Z"])
def test_maintain_as_of_takes_only_an_rfc_3339_timestamp(tmp_path, as_of):
    """semantics.md 2.2 / 3: instants are RFC 3339 (event_timestamp rows of these shapes are
    quarantined invalid_timestamp); `--as-of` is an instant too, so the same shapes are its
    error (exit 2, semantics.md 13) rather than read by Python's looser ISO 8601 parser."""
    led = Ledger(tmp_path, program([on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e1", "u", at(1), "buy")])
    res = cli("maintain", "--as-of", as_of, "--programs", str(led.programs), "--db", str(led.db))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"--as-of: {as_of!r} {NOT_RFC3339}" in " ".join(res.stderr.split())
    res = cli("maintain", "--as-of", "2025-03-02 00:00:00z", "--programs", str(led.programs), "--db", str(led.db))
    assert res.returncode == 0, res.stderr  # RFC 3339 5.6 allows a space for T and a lowercase z


@pytest.mark.parametrize("field, value", [
    ("active_from", "2025-03-01T00:00:00+0100"), ("active_to", "20250401T000000Z"),
    ("active_from", "2025-03-01T00:00+01:00"), ("active_from", 1740787200)])
def test_a_program_files_instant_takes_only_an_rfc_3339_timestamp(tmp_path, field, value):
    """The same shape for a program file's instants (semantics.md 2.1: an error naming file,
    rule and field, exit 2, nothing written); a number was read as Unix seconds."""
    led = Ledger(tmp_path, program([on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "1"}, **{field: value})]))
    err = " ".join(led.run([ev("e1", "u", at(1), "buy")], expect=2)["stderr"].split())
    assert f"shop.yaml" in err and f"rules[0] (buy).{field}" in err and f"{value!r} {NOT_RFC3339}" in err
    assert not led.db.exists() or led.sql("SELECT COUNT(*) FROM events") == [(0,)]


# ---- 3. a literal target external_id over 255 characters -------------------------------------

def test_a_literal_target_external_id_over_255_characters_is_a_load_error(tmp_path):
    """scrip-reference.md 4: a participant's `external_id` is "Required, 1-255"; a target naming
    a longer one fails each event at run time (external_id_too_long, docs/decisions.md "Input").
    Written literally in the file it could never name anyone, so it is the file's error
    (semantics.md 2.1: file, rule and field named, exit 2, nothing written); 255 characters load
    and credit that participant 1."""
    def gift(to: str) -> dict:
        return program([on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "1",
                                   "target": {"type": "PARTICIPANT", "external_id": to}})])

    led = Ledger(tmp_path, gift("z" * 256))
    err = " ".join(led.run([ev("e1", "u", at(1), "buy")], expect=2)["stderr"].split())
    assert "shop.yaml" in err and "rules[0] (buy)" in err and "target.external_id" in err, err
    assert "at most 255 characters" in err and "256" in err, err
    assert not led.db.exists() or led.sql("SELECT COUNT(*) FROM events") == [(0,)]
    led = Ledger(tmp_path / "ok", gift("z" * 255))
    led.run([ev("e1", "u", at(1), "buy")])
    assert led.status()["e1"] == OK and led.balance("z" * 255) == (D(1), D(0), D(0))


# ---- 4. `payload: null` -----------------------------------------------------------------------

def test_payload_null_is_no_payload_on_an_automation_as_on_schedule_event(tmp_path):
    """scrip-reference.md 18: a fired automation's event has `event_data.type` = `event_name`
    "with `payload` merged in", and `payload` is an optional field (as on SCHEDULE_EVENT, 9);
    semantics.md 2.2 reads a null field as an absent one. So `payload: null` is no payload,
    nothing merged, on an automation as on SCHEDULE_EVENT (it was a load error on the
    automation alone). By hand: u joins on 03-01 12:00 (welcome scheduled 1h later: +5); the
    monthly cron fires 04-01 00:00 (+2): u has 7, and the bonus event's data is just its type."""
    rules = [on("join", {"type": "SCHEDULE_EVENT", "event_name": "welcome", "delay": "1h", "payload": None}),
             on("welcome", {"type": "CREDIT", "asset": "PTS", "amount": "5"}),
             on("bonus", {"type": "CREDIT", "asset": "PTS", "amount": "2"})]
    monthly = {"name": "Monthly", "key": "monthly", "event_name": "bonus", "scope": "participants",
               "trigger": {"type": "cron", "cron_expression": "0 0 1 * *"}, "payload": None}
    led = Ledger(tmp_path, program(rules, automations=[monthly]))
    led.run([ev("e1", "u", at(1), "join")])
    res = cli("maintain", "--as-of", "2025-04-01T00:00:00Z", "--programs", str(led.programs), "--db", str(led.db))
    assert res.returncode == 0, res.stdout + res.stderr
    assert led.balance("u") == (D(7), D(0), D(0))
    data = [json.loads(d) for d, in led.sql("SELECT event_data FROM events WHERE idempotency_key LIKE 'system:%' "
                                            "ORDER BY event_timestamp")]
    assert data == [{"type": "welcome"}, {"type": "bonus"}]
    led.verify()


# ---- 5. double() out of range; the amount a message shows ---------------------------------------

CAPPED = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0,
          "max_transaction_amount": "100"}


@pytest.mark.parametrize("fillers, env", PATHS, ids=PATH_IDS)
def test_an_amount_message_shows_the_decimal_and_double_of_a_text_beyond_range_fails(tmp_path, fillers, env):
    """semantics.md 7: a number from CEL becomes a decimal through its shortest round-trip text,
    so event.amount 300 (a double in JSON's mapping) is the amount 300, and a message about it
    says 300 (it said "300.0"; -200 said "-200.0"). semantics.md 6: the standard library's
    `double()` follows CEL, where a finite text beyond a double's range ("1e400") is an error
    (cel-go: Go's ParseFloat range error), not an infinity: the event fails expression_error
    naming the text. By hand: max 100, so 300 fails max_transaction_amount_exceeded; 300 - 500
    fails amount_not_positive; 7.5 (scale 0) fails invalid_scale showing 7.5."""
    rules = [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "event.amount"}),
             on("neg", {"type": "CREDIT", "asset": "PTS", "amount": "event.amount - 500"}),
             on("dbl", {"type": "CREDIT", "asset": "PTS", "amount": "double(event.s) > 1.0 ? 1 : 2"}),
             on("one", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    led = Ledger(tmp_path, program(rules, [CAPPED]))
    rows = [ev("e1", "u", at(1, 10), "buy", amount=300), ev("e2", "u", at(1, 11), "neg", amount=300),
            ev("e3", "u", at(1, 12), "dbl", s="1e400"), ev("e4", "u", at(1, 13), "buy", amount=7.5)]
    rows += [ev(f"f{i}", f"p{i}", at(1, 14), "one") for i in range(fillers)]
    led.run(rows, env=env)
    got = {k: (c, m) for k, c, m in led.sql("SELECT idempotency_key, error_code, error_message FROM events "
                                             "WHERE status = 'FAILED'")}
    assert set(got) == {"e1", "e2", "e3", "e4"}
    assert got["e1"][0] == "max_transaction_amount_exceeded" and "amount 300 exceeds" in got["e1"][1]
    assert got["e2"][0] == "amount_not_positive" and "amount -200 must" in got["e2"][1]
    assert got["e3"][0] == "expression_error" and "'1e400'" in got["e3"][1], got["e3"]
    assert got["e4"][0] == "invalid_scale" and "amount 7.5 has" in got["e4"][1]
    assert led.balance("u") == (D(0), D(0), D(0))


# ---- 6. an amount written with an exponent -----------------------------------------------------

YAML_SHOP = """program: {{key: shop, name: Shop}}
assets: [{{symbol: PTS, name: Points, inventory_mode: SIMPLE, issuance_policy: UNLIMITED, scale: 0}}]
rules:
  - {{name: buy, key: buy, condition: 'event.type == "buy"', actions: [{{type: CREDIT, asset: PTS, amount: {amount}}},
      {{type: COUNTER, key: visits, value: {value}}}]}}
"""


@pytest.mark.parametrize("fmt, amount, value", [
    ("yaml", '"1e3"', '"2.5e1"'), ("yaml", "1e3", "2.5e1"), ("yaml", "1.0e3", "25.0"),
    ("json", "1e3", "2.5e1"), ("json", '"1e3"', '"2.5E+1"')])
def test_an_amount_with_an_exponent_is_its_number_in_yaml_and_json(tmp_path, fmt, amount, value):
    """docs/decisions.md "Numbers written as text in a program file": `max_transaction_amount`, a
    budget `limit`, thresholds take an exponent ("1e3"), and a JSON number 1e3 is 1000 in an
    amount; YAML 1.1 reads an unquoted `1e3` as text, and text "1e3" in an amount or a COUNTER
    value was a load error ("neither a number nor a CEL expression"), as was YAML's float
    `1.0e3`. One rule for both formats: a decimal with an exponent is its number. By hand: one
    buy credits 1000 and adds 25 to visits."""
    led = Ledger(tmp_path)
    led.programs.mkdir(parents=True, exist_ok=True)
    if fmt == "yaml":
        (led.programs / "shop.yaml").write_text(YAML_SHOP.format(amount=amount, value=value))
    else:
        (led.programs / "shop.json").write_text(
            '{"program": {"key": "shop", "name": "Shop"}, "assets": [{"symbol": "PTS", "name": "Points", '
            '"inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}], "rules": [{"name": "buy", '
            '"key": "buy", "condition": "event.type == \\"buy\\"", "actions": [{"type": "CREDIT", "asset": "PTS", '
            f'"amount": {amount}}}, {{"type": "COUNTER", "key": "visits", "value": {value}}}]}}]}}')
    led.run([ev("e1", "u", at(1), "buy")])
    assert led.status()["e1"] == OK
    assert led.balance("u") == (D(1000), D(0), D(0))
    assert led.state("u")[("COUNTER", "visits")] == D(25)


@pytest.mark.parametrize("amount", ['"1e999999999"', '"1_0e3"', '"1e3x"'])
def test_an_amount_exponent_that_is_no_amount_is_still_a_load_error(tmp_path, amount):
    """Beyond any ledger amount (10^999999999, which would be spelled out in full), or no decimal
    at all: a load error naming file, rule and field (semantics.md 2.1)."""
    led = Ledger(tmp_path)
    led.programs.mkdir(parents=True, exist_ok=True)
    (led.programs / "shop.yaml").write_text(YAML_SHOP.format(amount=amount, value="1"))
    err = " ".join(led.run([ev("e1", "u", at(1), "buy")], expect=2)["stderr"].split())
    assert "shop.yaml" in err and "rules[0] (buy)" in err and "actions[0].amount" in err, err


# ---- 7. maintain's counts -----------------------------------------------------------------------

LOT_PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}


def test_maintain_counts_every_lot_change_counter_reset_and_rollover_it_applied(tmp_path):
    """semantics.md 3: a maintenance run --as-of T "applies everything due up to T for all
    entities"; for an entity a SYSTEM event touches, before that event (at its instant), for
    the others after. Its counts said less: `lots_due` / `entries` left out the lots of
    participants a SYSTEM event touched (their entries were in `system_event_entries`), and
    `counter_resets` left out their resets and every tier-period rollover. By hand: a and b buy
    on 2025-12-30 12:00: a lot of 10 expiring 48h later (2026-01-01 12:00), visits (reset_after
    24h: due 12-31 12:00), spend 60 (silver; CALENDAR_YEAR period end 2026-01-01 00:00 rolls it
    over: NONE). a's hello schedules a ping for 2026-01-02 00:00 (60h), which credits 1. maintain
    --as-of 2026-01-03: a's changes happen before the ping, b's after it: 2 lots expired (2
    EXPIRATION entries), 2 entities reset, 2 participants rolled over, 1 entry of the ping's rule."""
    rules = [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "10", "expires_at": "48h"},
                {"type": "COUNTER", "key": "visits", "value": "1", "reset_after": "24h"},
                {"type": "COUNTER", "key": "spend", "value": "event.amount"}),
             on("hello", {"type": "SCHEDULE_EVENT", "event_name": "ping", "delay": "60h"}),
             on("ping", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    club = [{"key": "club", "name": "Club", "levels": [{"key": "silver", "rank": 1, "qualification": {
        "mode": "ALL", "criteria": [{"counter": "spend", "operator": ">=", "threshold": 50}]}}],
        "lifecycle": {"retention": {"mode": "PERIOD_BASED"}, "qualification_period": {"type": "CALENDAR_YEAR"},
                      "downgrade_policy": {"mode": "DROP_TO_QUALIFYING"}, "counters": {"rollover": "NONE"}}}]
    led = Ledger(tmp_path, program(rules, [LOT_PTS], tiers=club))
    when = "2025-12-30T12:00:00Z"
    led.run([{"key": k, "who": who, "when": when, "data": {"type": t, "amount": 60}}
             for k, who, t in (("a1", "a", "buy"), ("b1", "b", "buy"), ("a2", "a", "hello"))])
    res = cli("maintain", "--as-of", "2026-01-03T00:00:00Z", "--programs", str(led.programs), "--db", str(led.db),
              "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert {k: report[k] for k in ("lots_due", "entries", "system_event_entries", "system_events", "counter_resets",
                                   "counter_rollovers", "tier_changes")} == {
        "lots_due": 2, "entries": 2, "system_event_entries": 1, "system_events": 1, "counter_resets": 2,
        "counter_rollovers": 2, "tier_changes": 0}
    stored = led.sql(f"SELECT entries_written FROM batches WHERE id = {report['batch_id']}")[0][0]
    assert report["entries"] + report["system_event_entries"] == stored
    assert led.balance("a") == (D(1), D(0), D(0)) and led.balance("b") == (D(0), D(0), D(0))
    assert led.state("a")[("COUNTER", "spend")] == led.state("b")[("COUNTER", "spend")] == D(0)
    led.verify()


# ---- noticed on the way: a double divided on the vectorised path --------------------------------

@pytest.mark.parametrize("env", [None, {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}], ids=["default", "running-min-0"])
def test_a_double_quotient_is_the_same_whatever_the_batch_holds(tmp_path, env):
    """semantics.md 1.4 / 1.5 / 6: the same events give the same ledger in 1 batch or N, and CEL's
    `/` of doubles is IEEE division, correctly rounded (cel-go; Python's float division), turned
    into a decimal through its shortest round-trip text (7). Polars divided a column by a
    constant as a product with its reciprocal, one unit in the last place off: with three events
    in a batch, `event.b / 3` credited 1.6666666666666665 for b = 5, with one event
    1.6666666666666667. By hand (scale 18): repr(5 / 3), repr(10 / 3), repr(7 / 3)."""
    scaled = {**program([])["assets"][0], "scale": 18}
    rules = [on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "event.b / 3"})]
    events = [ev(who, who, at(1, 10), "buy", b=b) for who, b in (("a", 5), ("b", 10), ("c", 7))]
    together, apart = Ledger(tmp_path / "one", program(rules, [scaled])), Ledger(tmp_path / "n", program(rules, [scaled]))
    together.run(events, env=env)
    for e in events:
        apart.run([e], env=env)
    for who, b in (("a", 5), ("b", 10), ("c", 7)):
        want = D(repr(b / 3))
        assert together.balance(who)[0] == apart.balance(who)[0] == want, who
