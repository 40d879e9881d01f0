"""Lots on the set-wise paths (engine/setwise_lots.py) against the oracle.

The running path decides a batch set-wise and makes its lots afterwards, replaying each lot
holder's events in stream order: the maturities and expiries due before each event (also before
a failed one), then the event's own lot credits. Programs here mix LOT credits of every static
expiry/maturity shape (none, at once, before, after, an instant) with the state the running path
models (a counter and a tag gating credits, a debit that fails), over several batches, sometimes
after a first batch the kernel decides (it has an operation) so that the running path meets lots
it did not make. Each case must equal the oracle, entries, lots and balances, and every batch
without an operation must have been decided by the running path (else the case tests nothing).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from datetime import datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given, settings

import engine.running as running
from tests.differential import ledger_strategies as L
from tests.differential import strategies as S
from tests.differential.test_engine_vs_oracle import SETTINGS
from tests.differential.test_ledger_vs_oracle import check
from tests.helpers.examples import examples

EXAMPLES = examples("PERKFLOW_LEDGER_EXAMPLES", 150) // 2
T = "2025-03-01T"
START = datetime(2025, 3, 1, 8, 0)
CONDITIONS = ['event.type == "buy"', "true", '"vip" in participant.tags',
              '"n" in participant.counters && participant.counters.n >= 2.0']
EXPIRES = [None, "0s", "1h", "90m", "3h"]  # (an RFC 3339 instant: the oracle reads durations only)
MATURES = [None, "0s", "30m", "2h"]
AMOUNTS = ["5", "round(event.amount, 0)"]  # the second fails events without an amount


@st.composite
def lot_rule(draw, i: int) -> dict:
    credit = {"type": "CREDIT", "asset": "LP", "amount": draw(st.sampled_from(AMOUNTS))}
    for name, choices in (("expires_at", EXPIRES), ("matures_at", MATURES)):
        value = draw(st.sampled_from(choices))
        if value is not None:
            credit[name] = value
    return {"name": f"Lot {i}", "key": f"lot{i}", "order": 10 + i, "condition": draw(st.sampled_from(CONDITIONS)),
            "actions": [credit]}


def program(lot_rules: list[dict]) -> dict:
    state = [
        {"name": "Join", "key": "join", "order": 1, "condition": 'event.type == "join"',
         "actions": [{"type": "TAG", "tag": "vip"}]},
        {"name": "Count", "key": "count", "order": 2, "condition": 'event.type == "buy"',
         "actions": [{"type": "COUNTER", "key": "n", "value": "1"}, {"type": "CREDIT", "asset": "PTS", "amount": "2"}]},
        {"name": "Spend", "key": "spend", "order": 50, "condition": 'event.type == "spend"',
         "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "3"}]},  # fails the event when short
    ]
    return {"program": {"key": S.PROGRAM, "name": "Shop"},
            "assets": [{"symbol": "PTS", "name": "Points", "scale": 0},
                       {"symbol": "LP", "name": "Lot points", "scale": 0, "inventory_mode": "LOT"}],
            "rules": state + lot_rules}


@st.composite
def scenarios(draw) -> tuple[L.LedgerScenario, list[bool]]:
    rules = [draw(lot_rule(i)) for i in range(draw(st.integers(1, 2)))]
    n_batches = draw(st.integers(1, 3))
    batches, operations, n = [], [], 0
    minute = 0
    for b in range(n_batches):
        rows = []
        for _ in range(draw(st.integers(1, 6))):
            minute += draw(st.sampled_from([0, 15, 40, 70, 150]))  # ties, and gaps past maturities and expiries
            data = {"type": draw(st.sampled_from(["buy", "buy", "join", "spend", "other"]))}
            if draw(st.booleans()):
                data["amount"] = draw(st.sampled_from([1, 4, 7.5]))
            at = (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(S.Row(S.PROGRAM, f"k{n}", draw(st.sampled_from(["u1", "u2"])), at, json.dumps(data)))
            n += 1
        batches.append(rows)
        # the first batch sometimes carries an operation: the kernel decides it, and makes lots
        # (one never expires) that the later batches' running path must touch
        ops = []
        if b == 0 and draw(st.booleans()):
            ops += [L.OpRow(S.PROGRAM, "new", "upsert_participant", "u1", f"{T}06:00:00Z", "{}"),
                    L.OpRow(S.PROGRAM, "adj", "adjust", "u1", f"{T}07:00:00Z",
                            json.dumps({"asset": "LP", "amount": "4", "type": "CREDIT"}))]
            if draw(st.booleans()):  # overdrawn by 16: the running path's credits and maturities repay it first
                ops.append(L.OpRow(S.PROGRAM, "neg", "adjust", "u1", f"{T}07:30:00Z", json.dumps(
                    {"asset": "LP", "amount": "20", "type": "DEBIT", "allow_negative": True})))
        operations.append(ops)
    return L.LedgerScenario([program(rules)], batches, operations), [not ops for ops in operations]


@contextmanager
def running_decisions():
    """A list that gets, per call of running.run inside the block, whether it decided the batch
    (True) or left it to the kernel (False)."""
    decided: list[bool] = []
    original = running.run

    def counted(*args, **kwargs):
        out = original(*args, **kwargs)
        decided.append(out is not None)
        return out

    running.run = counted
    try:
        yield decided
    finally:
        running.run = original


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(case=scenarios())
def test_running_path_lots_equal_oracle(case):
    sc, running_batches = case
    with running_decisions() as decided:
        check(sc)
    # the batches without an operation went through running.run, and it decided each of them
    assert decided == [True] * sum(running_batches), f"running path: {decided}, batches: {running_batches}"


def test_stateless_program_touches_lots_of_another_program():
    """Found while building the running path's lots: the set-based path (a program whose rules
    read only the event) never applied the due changes of lots its participants hold from another
    program. u1's lot of 5 expires at 09:00; the club's event at 10:00 touches u1, so the expiry
    happens there (semantics.md 3), as the oracle and the kernel write it."""
    club = {"program": {"key": "club", "name": "Club"}, "assets": [{"symbol": "CP", "name": "Club points", "scale": 0}],
            "rules": [{"name": "Earn", "key": "earn", "condition": 'event.type == "buy"',
                       "actions": [{"type": "CREDIT", "asset": "CP", "amount": "1"}]}]}
    shop = program([{"name": "Lot", "key": "lot", "order": 10, "condition": 'event.type == "lot"',
                     "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "1h"}]}])
    check(L.LedgerScenario(
        [shop, club],
        [[S.Row(S.PROGRAM, "k0", "u1", f"{T}08:00:00Z", json.dumps({"type": "lot"}))],
         [S.Row("club", "k1", "u1", f"{T}10:00:00Z", json.dumps({"type": "buy"})),
          S.Row("club", "k2", "u2", f"{T}10:00:00Z", json.dumps({"type": "buy"}))]], [[], []]))


def test_small_batches_take_the_kernel_and_give_the_same_ledger(monkeypatch):
    """Below running.MIN_EVENTS a batch takes the kernel (the running path's fixed cost per pass
    is larger there); at the default threshold a batch one event short of it is not given to the
    running path, one at it is, and the ledgers are the oracle's either way."""
    monkeypatch.setattr(running, "MIN_EVENTS", int(os.environ.get("PERKFLOW_RUNNING_MIN_EVENTS") or 500))
    rules = [{"name": "Lot", "key": "lot", "order": 10, "condition": 'event.type == "buy"',
              "actions": [{"type": "CREDIT", "asset": "LP", "amount": "5", "expires_at": "90m", "matures_at": "30m"}]}]
    original = running.run
    for n in (running.MIN_EVENTS - 1, running.MIN_EVENTS):
        rows = [S.Row(S.PROGRAM, f"k{i}", f"u{i % 7}", (START + timedelta(minutes=7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      json.dumps({"type": ["buy", "spend", "join"][i % 3]})) for i in range(n)]
        calls = []
        monkeypatch.setattr(running, "run", lambda *a, **k: calls.append(1) or original(*a, **k))
        check(L.LedgerScenario([program(rules)], [rows], [[]]))
        assert len(calls) == (n >= running.MIN_EVENTS), f"{n} events: running path called {len(calls)} times"
