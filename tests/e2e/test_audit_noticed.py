"""Black-box checks of what earlier audits noticed and left (semantics.md 2.1, 2.2, 7, 9, 13 and
scrip-reference.md): each test writes program files and Parquet inputs, runs `perkflow` in a
subprocess into a real DuckDB file and reads the ledger back with SQL; expected numbers are
worked out by hand from the contract (docs/decisions.md where it is silent)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tests.e2e.test_contract_audit import LOT, SIMPLE, Ledger, at, on
from tests.helpers.io import cli, event, write_events, write_program


def shop(rules: list[dict], assets: list[dict], **extra) -> dict:
    return {"program": {"key": "shop", "name": "Shop"}, "assets": assets, "rules": rules, **extra}


# ---- 1. FORFEIT action with reference_id (semantics.md 7 table, 2.3; scrip-reference.md 9, 12) ----

def test_a_forfeit_action_with_reference_id_forfeits_only_the_lots_of_that_reference(tmp_path):
    """The forfeit operation takes reference_id (LOT): the FORFEIT action does the same. Without
    an amount it forfeits all the bucket holds of the reference (as the operation and RELEASE)."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
             on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n", "reference_id": "event.ref"}),
             on("lose", {"type": "FORFEIT", "asset": "PTS", "bucket": "HELD", "reference_id": "event.ref"}),
             on("lose_n", {"type": "FORFEIT", "asset": "PTS", "bucket": "HELD", "amount": "event.n",
                           "reference_id": "event.ref"})]
    led = Ledger(tmp_path, shop(rules, [LOT]))
    led.run([{"key": "e1", "who": "a", "when": at(1, 10), "data": {"type": "earn", "n": 100}},
             {"key": "e2", "who": "a", "when": at(1, 11), "data": {"type": "hold", "n": 30, "ref": "A"}},
             {"key": "e3", "who": "a", "when": at(1, 12), "data": {"type": "hold", "n": 20, "ref": "B"}},
             {"key": "e4", "who": "a", "when": at(1, 13), "data": {"type": "lose", "ref": "A"}},
             {"key": "e5", "who": "a", "when": at(1, 14), "data": {"type": "lose_n", "n": 5, "ref": "B"}},
             {"key": "e6", "who": "a", "when": at(1, 15), "data": {"type": "lose_n", "n": 16, "ref": "B"}}])
    status = led.status()
    assert [status[k] for k in ("e1", "e2", "e3", "e4", "e5")] == [("COMPLETED", None)] * 5
    assert status["e6"] == ("FAILED", "insufficient_balance")  # B holds 20 - 5 = 15 < 16
    entries = led.sql("SELECT e.idempotency_key, j.action_type, j.reference_id, p.amount FROM journal_entries j "
                      "JOIN events e ON e.id = j.event_id JOIN postings p ON p.journal_entry_id = j.id "
                      "WHERE j.action_type = 'FORFEIT' AND p.entity_type = 'SYSTEM_BREAKAGE' ORDER BY 1")
    assert [(k, t, r, D(a)) for k, t, r, a in entries] == [("e4", "FORFEIT", "A", D(30)), ("e5", "FORFEIT", "B", D(5))]
    assert led.sql("SELECT available, held FROM balances WHERE external_id = 'a'") == [(D(50), D(15))]
    assert cli("verify", "--db", str(led.db)).returncode == 0


@pytest.mark.parametrize("action, says", [
    ({"type": "TAG", "tag": "vip", "amount": "5"}, "amount: TAG takes no amount; its fields are description, tag, target"),
    ({"type": "CREDIT", "asset": "PTS", "amount": "5", "allow_negative": True},
     "allow_negative: allow_negative applies to DEBIT only"),
    ({"type": "HOLD", "asset": "PTS", "amount": "1", "expires_at": "1h"}, "expires_at: expires_at applies to CREDIT only"),
    ({"type": "VOID_HOLD", "asset": "PTS", "reference_id": "r", "bucket": "HELD"}, "bucket: VOID_HOLD takes no bucket"),
    ({"type": "COUNTER", "key": "n", "value": "1", "asset": "PTS"}, "asset: COUNTER takes no asset"),
])
def test_a_field_an_action_never_takes_says_so_plainly_not_not_supported_yet(tmp_path, action, says):
    programs = write_program(tmp_path / "programs" / "shop.yaml", shop([on("x", action)], [LOT]))
    res = cli("validate", "--programs", str(programs))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "not supported yet" not in out, out
    assert "shop.yaml" in out and f"rules[0] (x).actions[0].{says}" in out, out


# ---- 2. names unique per program (scrip-reference.md 15, 18: reward and automation names) ----

REWARD = {"redemption_type": "UNIT_BASED", "asset": "PTS", "unit_cost": "10"}
AUTOMATION = {"event_name": "tick", "scope": "program", "trigger": {"type": "cron", "cron_expression": "0 9 * * 1"}}


@pytest.mark.parametrize("section, entries, says", [
    ("rewards", [{"key": "mug_a", "name": "Mug", **REWARD}, {"key": "mug_b", "name": "Mug", **REWARD}],
     "rewards[1] (Mug): name 'Mug' is also the name of rewards[0] (Mug)"),
    ("rewards", [{"key": "mug", "name": "Mug", **REWARD}, {"key": "mug", "name": "Cup", **REWARD}],
     "rewards[1] (Cup): key 'mug' is also the key of rewards[0] (Mug)"),
    ("automations", [{"key": "a", "name": "Weekly", **AUTOMATION}, {"key": "b", "name": "Weekly", **AUTOMATION}],
     "automations[1] (Weekly): name 'Weekly' is also the name of automations[0] (Weekly)"),
    ("rules", [on("x"), {**on("y"), "key": "x"}], "rules[1] (y): key 'x' is also the key of rules[0] (x)"),
])
def test_two_entries_with_one_name_are_a_load_error_naming_the_file_and_both(tmp_path, section, entries, says):
    """Scrip: a reward's and an automation's `name` is "unique per program"; keys give ids."""
    if section == "rules":
        entries = [{**r, "actions": [{"type": "TAG", "tag": "t"}]} for r in entries]
    spec = shop(entries if section == "rules" else [], [SIMPLE], **({} if section == "rules" else {section: entries}))
    programs = write_program(tmp_path / "programs" / "shop.yaml", spec)
    events = write_events(tmp_path / "e.parquet", [event("shop", "e1", "a", at(1), {"type": "x"})])
    for command in (["validate", "--programs", str(programs)],
                    ["run", "--programs", str(programs), "--events", str(events), "--db", str(tmp_path / "w.duckdb")]):
        res = cli(*command)
        out = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 2 and "shop.yaml" in out and says in out, out
    assert not (tmp_path / "w.duckdb").exists()
