"""Black-box checks of the third round of what earlier sessions noticed and left (semantics.md 5,
7, 9, 11 and scrip-reference.md): each test writes program files and Parquet inputs, runs
`perkflow` in a subprocess into a real DuckDB file and reads the ledger back with SQL; expected
values are worked out by hand from the contract (docs/decisions.md where it is silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, on, op, program
from tests.helpers.io import cli


# ---- 1. a participant an action target creates is rolled back with its failing event ----------

#: CREDIT 5 to the friend an event names (a target: created if unknown), then DEBIT `cost` from
#: the event's participant (insufficient: the event FAILS; 0: a no-op).
REFERRAL = on("ref", {"type": "CREDIT", "asset": "PTS", "amount": "5",
                      "target": {"type": "PARTICIPANT", "external_id": "event.friend"}},
              {"type": "DEBIT", "asset": "PTS", "amount": "event.cost"})
BUY = on("buy", {"type": "CREDIT", "asset": "PTS", "amount": "1"})


@pytest.mark.parametrize("fillers, env", [(0, None), (0, {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}), (600, None)],
                         ids=["small-batch", "running-min-0", "600-events"])
def test_a_participant_created_by_a_target_of_a_failing_event_is_not_created(tmp_path, fillers, env):
    """semantics.md 5 step 5: if any action failed, the whole event is rolled back, "no state
    change"; a target is evaluated in step 3 (an action), not in step 1 (resolution of the
    event's own participant, whose creation stands: docs/decisions.md). u refers `newbie` and
    cannot pay 100: the event FAILS and `newbie` is neither created nor enrolled; newbie's own
    purchase later in the same batch creates and enrols it at its own instant (12:00, not the
    failed referral's 10:00). u's referral of `pal` at cost 0 completes: pal exists from 11:00
    with 5. Targets take the one-event-at-a-time kernel whatever the batch size or running-path
    threshold (plan.py); the cases check each setting through the CLI all the same."""
    led = Ledger(tmp_path, program([REFERRAL, BUY]))
    rows = [ev("e1", "u", at(1, 10), "ref", friend="newbie", cost=100),
            ev("e2", "u", at(1, 11), "ref", friend="pal", cost=0),
            ev("e3", "newbie", at(1, 12), "buy")]
    rows += [ev(f"f{i}", f"p{i}", at(1, 13), "buy") for i in range(fillers)]
    counts = led.run(rows, env=env)
    assert (counts["completed"], counts["failed"]) == (2 + fillers, 1)
    assert led.status()["e1"] == ("FAILED", "insufficient_balance")
    assert led.status()["e2"] == led.status()["e3"] == OK
    people = led.sql("SELECT p.external_id, p.created_at::VARCHAR, e.enrolled_at::VARCHAR FROM participants p "
                     "LEFT JOIN enrollments e ON e.participant_id = p.id WHERE p.external_id IN ('u', 'pal', 'newbie') "
                     "ORDER BY 1")
    assert people == [("newbie", "2025-03-01 12:00:00+00", "2025-03-01 12:00:00+00"),
                      ("pal", "2025-03-01 11:00:00+00", "2025-03-01 11:00:00+00"),
                      ("u", "2025-03-01 10:00:00+00", "2025-03-01 10:00:00+00")]  # u: its own event, step 1
    assert led.balance("newbie") == (D(1), D(0), D(0)) and led.balance("pal") == (D(5), D(0), D(0))
    assert led.sql("SELECT COUNT(*) FROM participants")[0][0] == 3 + fillers
    led.verify()


def test_a_failed_targets_participant_is_not_there_for_later_events_of_a_reject_program(tmp_path):
    """The rolled-back creation is not seen by the rest of the stream: a later event of a REJECT
    program naming `newbie` fails participant_not_found (docs/decisions.md "Participants"), and
    a BROADCAST after the failure reaches only u."""
    shop = program([REFERRAL, on("all", {"type": "BROADCAST", "event_name": "gift"}),
                    on("gift", {"type": "CREDIT", "asset": "PTS", "amount": "1"})])
    club = program([BUY], key="club", program={"on_unknown_participant": "REJECT"})
    led = Ledger(tmp_path, shop, club)
    led.run([ev("e1", "u", at(1, 10), "ref", friend="newbie", cost=100),
             {**ev("c1", "newbie", at(1, 11), "buy"), "program": "club"},
             ev("e2", "u", at(1, 12), "all")])
    assert led.status()["e1"] == ("FAILED", "insufficient_balance")
    assert led.status()["c1"] == ("FAILED", "participant_not_found")
    assert led.sql("SELECT external_id FROM participants") == [("u",)]
    assert led.balance("u") == (D(1), D(0), D(0))
    led.verify()


# ---- 2. a budget of an asset its rule never credits -------------------------------------------

STAR = {"symbol": "STAR", "name": "Stars", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}


@pytest.mark.parametrize("actions, fix", [
    ([{"type": "CREDIT", "asset": "PTS", "amount": "5"}, {"type": "DEBIT", "asset": "STAR", "amount": "1"}],
     "budget one it credits: PTS"),
    ([{"type": "TAG", "tag": "vip"}], "leave the budget out")], ids=["debits-it", "credits-nothing"])
def test_a_budget_of_an_asset_the_rule_never_credits_is_a_load_error(tmp_path, actions, fix):
    """scrip-reference.md 7 "Budgets": spending caps per asset, an evaluation that would exceed
    one is skipped; docs/decisions.md "Budgets": a budget caps the total of the rule's CREDIT
    amounts of its asset. A STAR budget on a rule that only debits STAR (or credits nothing)
    could never be reached: semantics.md 2.1 validation names the file, the rule and the field,
    exit 2, nothing written (a limit of 0, which could never allow anything, is refused alike)."""
    rule = on("buy", *actions, budgets=[{"asset": "STAR", "limit": "10"}])
    led = Ledger(tmp_path, program([rule], [program([])["assets"][0], STAR]))
    err = led.run([ev("e1", "u", at(1), "buy")], expect=2)["stderr"]
    assert "shop.yaml: rules[0] (buy): budgets[0].asset: this rule has no CREDIT of STAR" in err
    assert fix in err
    assert not led.db.exists() or led.sql("SELECT COUNT(*) FROM events") == [(0,)]


# ---- 3. a condition that can never give a bool ------------------------------------------------

@pytest.mark.parametrize("condition, gives", [
    ("1 + 1", "the value of `+`"), ('"purchase"', "a string"), ("size(event.items)", "an int (size)"),
    ("event.vip ? 2 : 1", "an int"), ("-event.amount", "a number"), ("event.items.map(i, i.sku)", "a list")])
def test_a_condition_that_can_never_give_a_bool_is_a_load_error(tmp_path, condition, gives):
    """scrip-reference.md 7: `condition` is a "CEL expression that returns a bool"; semantics.md
    2.1: bad CEL is an error naming the file, the rule and the field, nothing written. An
    outermost literal, arithmetic operator, conversion, size() or list macro cannot give a bool on
    any event (the rule could never match); it loaded and was SKIPPED_ERROR on every event."""
    led = Ledger(tmp_path, program([{"name": "buy", "key": "buy", "condition": condition,
                                     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    err = led.run([ev("e1", "u", at(1), "buy", amount=3, items=[])], expect=2)["stderr"]
    assert f"shop.yaml: rules[0] (buy): condition: must give a bool, and {condition!r} can only give {gives}" in err


@pytest.mark.parametrize("condition", ["event.vip", 'get(event, "vip", 0)', "dyn(event.n)", "event.vip ? true : 1"])
def test_a_condition_whose_type_shows_only_per_event_still_loads_and_is_judged_per_event(tmp_path, condition):
    """Only the certain cases are refused: a dyn value (a field of `event`, get(), dyn(), a ternary
    with one bool branch) may be a bool, so it loads, and each event judges it (semantics.md 5
    step 3: a missing field or a type error makes the condition false, recorded SKIPPED_ERROR).
    e1 has vip and n true: matched; e2 has no vip and n 5 (get's default 0, 5 and the ternary's
    1 are not bools, event.vip is missing): SKIPPED_ERROR."""
    led = Ledger(tmp_path, program([{"name": "buy", "key": "buy", "condition": condition,
                                     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]))
    led.run([ev("e1", "u", at(1, 1), "buy", vip=True, n=True), ev("e2", "u", at(1, 2), "buy", n=5)])
    assert led.sql("SELECT e.idempotency_key, r.outcome FROM rule_evaluations r JOIN events e "
                   "ON e.id = r.event_id ORDER BY 1") == [("e1", "MATCHED"), ("e2", "SKIPPED_ERROR")]


# ---- 4. SET_ATTRIBUTE of a negative zero ------------------------------------------------------

@pytest.mark.parametrize("env", [None, {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}], ids=["kernel", "running"])
def test_a_negative_zero_is_stored_as_the_attribute_0(tmp_path, env):
    """semantics.md 7: SET_ATTRIBUTE sets the attribute to "the string of value";
    docs/decisions.md: a number's string is its plain decimal text, and a decimal has no negative
    zero: `event.x * -1.0` with x = 0 (-0.0 in binary floating point), a YAML `-0.0` and the
    set_attribute operation's JSON -0.0 store "0", as JSON's -0 already did (numbers are compared
    by value, semantics.md 4). An explicit CEL `string(...)` is text the rule chose: CEL's "-0"."""
    rules = [on("a", {"type": "SET_ATTRIBUTE", "key": "cel", "value": "event.x * -1.0"},
                {"type": "SET_ATTRIBUTE", "key": "yaml", "value": -0.0},
                {"type": "SET_ATTRIBUTE", "key": "str", "value": "string(event.x * -1.0)"})]
    led = Ledger(tmp_path, program(rules))
    counts = led.run([ev("e1", "u", at(1, 10), "a", x=0)], env=env)
    assert (counts["running_rounds"] > 0) == (env is not None)  # the path the case is about
    led.run(operations=[{"op": "set_attribute", "key": "o1", "who": "u", "when": at(1, 11),
                         "params": {"key": "op", "value": -0.0}}], env=env)
    assert led.status() == {"e1": OK, "o1": OK}
    assert led.state("u") == {("ATTRIBUTE", "cel"): "0", ("ATTRIBUTE", "yaml"): "0", ("ATTRIBUTE", "op"): "0",
                              ("ATTRIBUTE", "str"): "-0"}


# ---- 5. automation filters and guards see what is due by the firing instant ---------------------

def test_automation_filter_and_guard_see_lots_and_tiers_as_of_the_firing_instant(tmp_path):
    """semantics.md 9.1: "Expired lots are never spendable, even before the expiry entry is
    written"; 3: before an event at t, everything due at or before t for the entities it
    touches has happened; 11: filter and guard are judged at the firing (docs/decisions.md).
    At 10:00 u earns 100 expiring at 11:00, w earns 50 maturing at 11:30 (DEFERRED until then),
    x holds level gold until 11:45. One maintenance run to 13:00 fires, at 12:00, `nudge` for
    whoever has AVAILABLE PTS (filter) and `vip` for whoever holds a club level (guard): by
    12:00 u has 0 available (its lot expired), w has 50 (matured), x holds no level. So nudge
    reaches w only and vip no one; maintenance wrote the expiry, maturity and tier removal."""
    tier = {"key": "club", "levels": [{"key": "silver", "rank": 1}, {"key": "gold", "rank": 2}]}
    lot = {**program([])["assets"][0], "inventory_mode": "LOT"}
    one_time = {"type": "one_time", "trigger_at": "2025-03-01T12:00:00Z"}
    spec = program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "expires_at": "event.ttl",
                                "matures_at": "event.wait"}),
                    on("nudge", {"type": "TAG", "tag": "nudged"}), on("vip", {"type": "TAG", "tag": "vip"})],
                   [lot], tiers=[tier], automations=[
        {"name": "Nudge", "key": "nudge", "event_name": "nudge", "scope": "participants", "trigger": one_time,
         "participant_filter": "participant.balances.PTS.available > 0.0"},
        {"name": "Vip", "key": "vip", "event_name": "vip", "scope": "participants", "trigger": one_time,
         "guard_condition": '"club" in participant.tiers'}])
    led = Ledger(tmp_path, spec)
    led.run([ev("e1", "u", at(1, 10), "earn", n=100, ttl="1h", wait="0s"),
             ev("e2", "w", at(1, 10), "earn", n=50, ttl="240h", wait="90m"),
             ev("e3", "x", at(1, 10), "hello")],  # no rule: x exists, holds nothing
            [op("set_tier", "s1", "x", at(1, 10), tier="club", level="gold", expires_at="2025-03-01T11:45:00Z")])
    res = cli("maintain", "--as-of", "2025-03-01T13:00:00Z", "--db", str(led.db))
    assert res.returncode == 0, res.stderr
    assert led.sql("SELECT external_id, key FROM participant_state WHERE kind = 'TAG' ORDER BY 1, 2") == [
        ("w", "nudged")]
    assert [e["external_id"] for e in led.sql_dicts("SELECT external_id FROM events WHERE idempotency_key "
                                                    "LIKE 'system:%' ORDER BY 1")] == ["w"]
    assert (led.balance("u"), led.balance("w")) == ((D(0), D(0), D(0)), (D(50), D(0), D(0)))
    assert led.sql("SELECT count(*) FROM participant_tiers") == [(0,)]
    led.verify()


# ---- 8. what maintain --json calls the entries of SYSTEM events -------------------------------

def test_maintain_json_names_the_entries_of_scheduled_system_events_as_such(tmp_path):
    """A run's SCHEDULE_EVENT waits for maintenance; its SYSTEM event credits 5 (one entry). No
    automation exists, so that entry is not an automation's: maintain --json reports it as
    `system_event_entries` (README: the entries written while processing automation and
    SCHEDULE_EVENT / BROADCAST events), beside 0 automation events and 1 SYSTEM event; it was
    `automation_entries`: 1. `entries` (lot changes of everyone else) is 0: a SIMPLE asset."""
    rules = [on("buy", {"type": "SCHEDULE_EVENT", "event_name": "later", "delay": "24h"}),
             on("later", {"type": "CREDIT", "asset": "PTS", "amount": "5"})]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "u", at(1, 10), "buy")])
    res = cli("maintain", "--as-of", at(3), "--db", str(led.db), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "automation_entries" not in out
    assert (out["automation_events"], out["system_events"], out["system_event_entries"], out["entries"]) == (0, 1, 1, 0)
    assert led.balance("u") == (D(5), D(0), D(0))
