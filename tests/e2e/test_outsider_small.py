"""Outsider round (session 19): small contract items, each reproduced through the `perkflow` CLI
into a real DuckDB file and compared with semantics.md and scrip-reference.md, worked out by hand
(docs/decisions.md where both are silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, on, op, program

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
INVALID = ("FAILED", "invalid_operation")


def test_set_counter_reset_after_must_be_duration_text(tmp_path):
    """scrip-reference 15: `reset_after` is "a Go-style duration string"; `""` removes auto-reset,
    omitting it leaves it unchanged. `"0s"` is refused (not a positive duration); the JSON number
    0 was read as "" and silently removed the counter's auto-reset. A number (0 or 5) is not
    duration text: invalid_operation, and the counter keeps its 24h auto-reset. By hand: c = 5
    with 24h; the three refused sets change nothing."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1, 11), "earn", n=1)])
    lg.run([], [op("set_counter", "s1", "u1", at(1), key="c", value="5", reset_after="24h"),
                op("set_counter", "s2", "u1", at(1, 13), key="c", value="6", reset_after=0),
                op("set_counter", "s3", "u1", at(1, 14), key="c", value="7", reset_after="0s"),
                op("set_counter", "s4", "u1", at(1, 15), key="c", value="8", reset_after=5)])
    st = lg.status()
    assert st["s1"] == OK and st["s2"] == st["s3"] == st["s4"] == INVALID, st
    rows = lg.sql("SELECT number_value, reset_after_us FROM participant_state WHERE kind = 'COUNTER'")
    assert [(D(v), r) for v, r in rows] == [(D(5), 24 * 3600 * 10**6)], rows
