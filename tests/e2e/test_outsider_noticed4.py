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
