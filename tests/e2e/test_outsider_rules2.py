"""An outsider's second black-box round over rule evaluation and actions (semantics.md 5, 6, 7
and invariants 1.4 / 1.6), through the real CLI: program files, real Parquet, `perkflow run`
in a subprocess into a real DuckDB file, read back with SQL. Expectations are computed by hand
from the contract (docs/decisions.md where it is silent). Each scenario runs on every path: the
default one for its program (set-based for a program whose rules read no state, the kernel
otherwise), the running-state path (`PERKFLOW_RUNNING_MIN_EVENTS=0`) and `--row-path`.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_contract_audit import Ledger, at, ev, program
from tests.helpers.io import cli

#: (name, flags, env) of the paths a small batch can take
PATHS = [("default", (), None), ("running", (), {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}), ("row", ("--row-path",), None)]
_IDS = [p[0] for p in PATHS]

#: a rule that reads participant state and never matches: with it a program is stateful, so a
#: small batch takes the kernel (and the running path with PERKFLOW_RUNNING_MIN_EVENTS=0)
NEVER = {"name": "never", "key": "never", "order": 9990, "condition": 'get(participant.counters, "zz", 0.0) < 0.0',
         "actions": [{"type": "COUNTER", "key": "zz", "value": "1"}]}


def _status(led: Ledger) -> dict[str, tuple[str, str | None, str | None]]:
    return {k: (s, c, m) for k, s, c, m in
            led.sql("SELECT idempotency_key, status, error_code, error_message FROM events")}


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s5_a_rules_amounts_are_all_evaluated_before_its_first_debit_applies(tmp_path, name, flags, env, stateful):
    """semantics.md 5 step 3: a matching rule first evaluates its actions' amounts, then its
    actions apply in order. A rule [DEBIT 10, CREDIT event.bonus] on an empty balance and an
    event without `bonus` therefore fails on the amount (expression_error, action 1) before the
    DEBIT could go short; so does [DEBIT 10, CREDIT 1.5] on a scale-0 asset (invalid_scale).
    A DEBIT of an *earlier* rule applies first and fails the event short (insufficient_balance).
    The set-based path (a program whose rules read no state) reported insufficient_balance for
    the first two, where the kernel said expression_error / invalid_scale (invariant 1.4)."""
    rules = [
        {"name": "early", "key": "early", "order": 10, "condition": 'event.type == "early"',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "10"}]},
        {"name": "swap", "key": "swap", "order": 20, "condition": 'event.type in ["swap", "early"]',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "10"},
                     {"type": "CREDIT", "asset": "PTS", "amount": "event.bonus"}]},
        {"name": "half", "key": "half", "order": 30, "condition": 'event.type == "half"',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "10"},
                     {"type": "CREDIT", "asset": "PTS", "amount": "1.5"}]},
    ] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "a", at(1), "swap"), ev("e2", "a", at(2), "half"), ev("e3", "a", at(3), "early")],
            flags=flags, env=env)
    assert _status(led) == {
        "e1": ("FAILED", "expression_error", "rule 'swap' action 1: expression failed: no such key: 'bonus'"),
        "e2": ("FAILED", "invalid_scale",
               "rule 'half' action 1: amount 1.5 has more decimals than PTS's scale 0; wrap it in round(x, 0)"),
        "e3": ("FAILED", "insufficient_balance", "insufficient available balance for DEBIT: PTS 0, needs 10"),
    }
    # the failing rule matched and is recorded; nothing after it ran
    assert sorted(led.sql("SELECT e.idempotency_key, r.key, x.outcome FROM rule_evaluations x JOIN events e "
                          "ON e.id = x.event_id JOIN rules r ON r.id = x.rule_id")) == [
        ("e1", "swap", "MATCHED"), ("e2", "half", "MATCHED"), ("e3", "early", "MATCHED")]
    assert led.sql("SELECT COUNT(*) FROM postings") == [(0,)]


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s7_credits_and_debits_of_an_inactive_participant_fail_on_every_path(tmp_path, name, flags, env, stateful):
    """semantics.md 7: for a SUSPENDED or CLOSED participant CREDIT and DEBIT fail
    (participant_inactive), the whole event with them (5 step 5). A status set in an earlier
    batch, then a batch of events only: a program whose rules read no state (the set-based path,
    "10 points per purchase") credited the suspended participant and its recipient, and an event
    of it failing in a later rule reported that later failure. The failure is the first CREDIT /
    DEBIT that applies, after its rule's amounts were evaluated (5 step 3): a bad amount in that
    rule comes first."""
    rules = [
        {"name": "earn", "key": "earn", "order": 10, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]},
        {"name": "bonus", "key": "bonus", "order": 20, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.bonus"}]},
        {"name": "spend", "key": "spend", "order": 30, "condition": 'event.type == "spend"',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "1"}]},
    ] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules))
    led.run([ev("a0", "a", at(1), "buy", n=9, bonus=1)], [
        {"op": "upsert_participant", "key": "o1", "who": "s", "when": at(1, 13), "params": {}},
        {"op": "set_participant_status", "key": "o2", "who": "s", "when": at(1, 14), "params": {"status": "SUSPENDED"}},
        {"op": "upsert_participant", "key": "o3", "who": "c", "when": at(1, 13), "params": {}},
        {"op": "set_participant_status", "key": "o4", "who": "c", "when": at(1, 14), "params": {"status": "CLOSED"}}])
    led.run([ev("e1", "s", at(2), "buy", n=5, bonus=1),              # earn applies first: inactive
             ev("e2", "s", at(3), "buy", n=0.5, bonus=1),            # earn's amount fails first
             ev("e3", "s", at(4), "look"),                           # no value action: completes
             ev("e4", "c", at(5), "spend"),                          # a DEBIT too
             ev("e5", "a", at(6), "buy", n=2, bonus=1) | {"recipient_external_id": "s"},  # to the recipient
             ev("e6", "a", at(7), "buy", n=3, bonus=1)], flags=flags, env=env)
    inactive = "participant {} is {}"
    assert _status(led) == {
        "a0": ("COMPLETED", None, None),
        "e1": ("FAILED", "participant_inactive", "rule 'earn' action 0: " + inactive.format("s", "SUSPENDED")),
        "e2": ("FAILED", "invalid_scale",
               "rule 'earn' action 0: amount 0.5 has more decimals than PTS's scale 0; wrap it in round(x, 0)"),
        "e3": ("COMPLETED", None, None),
        "e4": ("FAILED", "participant_inactive", "rule 'spend' action 0: " + inactive.format("c", "CLOSED")),
        "e5": ("FAILED", "participant_inactive", "rule 'earn' action 0: " + inactive.format("s", "SUSPENDED")),
        "e6": ("COMPLETED", None, None),
    }
    # a: 9 + 1, then 3 + 1; s and c hold nothing
    assert [led.balance(who) for who in ("a", "s", "c")] == [(14, 0, 0), (0, 0, 0), (0, 0, 0)]
    assert sorted(led.sql("SELECT e.idempotency_key, r.key FROM rule_evaluations x JOIN events e ON e.id = x.event_id "
                          "JOIN rules r ON r.id = x.rule_id WHERE e.idempotency_key LIKE 'e%'")) == [
        ("e1", "earn"), ("e2", "earn"), ("e4", "spend"), ("e5", "earn"), ("e6", "bonus"), ("e6", "earn")]


@pytest.mark.parametrize("flags", [(), ("--row-path",)], ids=["default", "row"])
def test_s7_a_status_changed_inside_a_cut_batch_holds_for_the_events_after_it(tmp_path, flags):
    """semantics.md 7 and invariant 1.5: one batch where set_participant_status operations
    suspend r and s, then r is made ACTIVE again on day 9, among their purchase events. A batch
    with operations is cut into parts (engine/cuts.py; PERKFLOW_CUT_MIN_EVENTS=3 here, 2,000 by
    default) and the runs of events between the operations take the set-based path, which
    credited the suspended participants. By hand: every purchase before day 9 01:00 fails
    participant_inactive; after it r earns 2 a purchase, s stays suspended."""
    rules = [{"name": "earn", "key": "earn", "order": 10, "condition": 'event.type == "buy"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "2"}]}]
    led = Ledger(tmp_path, program(rules))
    ops = [{"op": "upsert_participant", "key": f"u-{who}", "who": who, "when": at(1, 0), "params": {}} for who in "rs"]
    ops += [{"op": "set_participant_status", "key": f"s-{who}", "who": who, "when": at(1, 1),
             "params": {"status": "SUSPENDED"}} for who in "rs"]
    ops += [{"op": "set_participant_status", "key": "back", "who": "r", "when": at(9, 1), "params": {"status": "ACTIVE"}}]
    led.run([ev(f"e{i}", "rs"[i % 2], at(2 + i), "buy") for i in range(12)], ops, flags=flags,
            env={"PERKFLOW_CUT_MIN_EVENTS": "3"})
    status = _status(led)
    for i in range(12):
        who, day = "rs"[i % 2], 2 + i
        if who == "r" and day >= 10:
            assert status[f"e{i}"] == ("COMPLETED", None, None), i
        else:
            assert status[f"e{i}"] == ("FAILED", "participant_inactive",
                                       f"rule 'earn' action 0: participant {who} is SUSPENDED"), i
    assert [led.balance(who) for who in "rs"] == [(4, 0, 0), (0, 0, 0)]


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s7_a_target_of_only_white_space_names_nobody_and_creates_no_one(tmp_path, name, flags, env):
    """semantics.md 7 creates the participant a target names; docs/decisions.md ("Input") reads an
    empty or whitespace-only external id as a missing one, which names nobody and so creates no
    one (an event row with external_id "   " is quarantined). A target whose expression gave "   "
    (a blank cell of the customer's export) created a participant "   " and credited it, where ""
    failed the event; now both fail it (expression_error) and nobody is created."""
    rules = [{"name": "gift", "key": "gift", "order": 10, "condition": 'event.type == "gift"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "3",
                           "target": {"type": "PARTICIPANT", "external_id": "event.to"}}]}]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "a", at(1), "gift", to=""), ev("e2", "a", at(2), "gift", to="   "),
             ev("e3", "a", at(3), "gift", to="\t\n"), ev("e4", "a", at(4), "gift", to=" b ")], flags=flags, env=env)
    assert _status(led) == {
        "e1": ("FAILED", "expression_error", "rule 'gift' action 0: target must be a non-empty string, got ''"),
        "e2": ("FAILED", "expression_error", "rule 'gift' action 0: target must be a non-empty string, got '   '"),
        "e3": ("FAILED", "expression_error", "rule 'gift' action 0: target must be a non-empty string, got '\\t\\n'"),
        "e4": ("COMPLETED", None, None),  # ids are kept as written, surrounding spaces included
    }
    assert sorted(led.sql("SELECT external_id FROM participants")) == [(" b ",), ("a",)]
    assert led.balance(" b ") == (3, 0, 0)


@pytest.mark.parametrize(("field", "text", "says"), [
    ("condition", 'evnt.type == "buy"', "undeclared reference to 'evnt'"),
    ("condition", 'event.type == "buy" && Event.amount > 10.0', "undeclared reference to 'Event'"),
    ("condition", 'event.tags.exists(t, t == tag)', "undeclared reference to 'tag'"),
    ("condition", 'event.name.split(",").size() > 1', "unknown function 'split'"),
    ("condition", 'isVip(participant)', "unknown function 'isVip'"),
    ("amount", 'round(evnt.amount, 0)', "undeclared reference to 'evnt'"),
], ids=["variable", "variable-case", "comprehension", "method", "function", "amount"])
def test_s2_1_s6_an_expression_naming_nothing_cel_declares_is_a_load_error(tmp_path, field, text, says):
    """semantics.md 6 declares the variables `event`, `now`, `participant`, `program` and a list
    of functions; everything else follows the CEL specification, whose checker refuses an
    undeclared reference or function before anything runs, and 2.1 wants program errors found
    before anything is written. Such a rule loaded, then skipped every event with SKIPPED_ERROR
    (or failed it, in an amount): a typo `evnt.type` silently switched a campaign off. Now
    `validate` and `run` refuse the file (exit 2) naming the file, the rule, the field and the
    name. CEL's type names (`int`, `double`, ...) stay readable: `type(event.n) == double`."""
    rule = {"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
            "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}
    if field == "condition":
        rule["condition"] = text
    else:
        rule["actions"][0]["amount"] = text
    fine = {"name": "typed", "key": "typed", "condition": "type(event.n) == double && int(event.n) > 0",
            "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "double(event.n)"}]}
    led = Ledger(tmp_path, program([fine, rule]))
    out = led.run([ev("e1", "a", at(1), "buy", n=2)], expect=2)
    said = " ".join(out["stderr"].split())
    assert "shop.yaml" in said and "rules[1] (buy)" in said and field in said and says in said, said
    assert not led.db.exists() or led.sql("SELECT COUNT(*) FROM events") == [(0,)]
    valid = cli("validate", "--programs", str(led.programs))
    assert valid.returncode == 2 and says in " ".join(valid.stderr.split()), valid.stdout + valid.stderr
    # without it, the rest loads and runs: `type`, `double`, `int` are CEL names
    led2 = Ledger(tmp_path / "fine", program([fine]))
    led2.run([ev("e1", "a", at(1), "buy", n=2)])
    assert led2.balance("a") == (2, 0, 0)
