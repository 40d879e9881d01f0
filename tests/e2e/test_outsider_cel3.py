"""An outsider's third black-box round over the CEL environment and amounts (semantics.md 6, and
the amount rules of 7), through the real CLI: program files, real Parquet, `perkflow run` in a
subprocess into a real DuckDB file, read back with SQL. Expectations are computed by hand from
the contract (docs/decisions.md where it is silent). Each scenario runs on every path a batch
can take: the default one (set-based for a program whose rules read no state, the kernel for a
small stateful batch), the running-state path (`PERKFLOW_RUNNING_MIN_EVENTS=0`) and
`--row-path`; invariant 1.4 wants the same ledger from each.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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

NOON = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


def _status(led: Ledger) -> dict[str, tuple[str, str | None, str | None]]:
    return {k: (s, c, m) for k, s, c, m in
            led.sql("SELECT idempotency_key, status, error_code, error_message FROM events")}


def _struct_run(led: Ledger, payload_type: pa.DataType, rows: list[tuple[str, str, datetime, dict]],
                flags: tuple = (), env: dict | None = None) -> None:
    """One `perkflow run` of (key, external id, timestamp, payload) rows with a typed struct
    `event_data` column (Parquet field types kept: semantics.md 2.2)."""
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")), ("event_data", payload_type)])
    path = led.dir / f"events-{len(rows)}.parquet"
    pq.write_table(pa.Table.from_pylist([{"program_id": "shop", "idempotency_key": k, "external_id": who,
                                          "event_timestamp": when, "event_data": data}
                                         for k, who, when, data in rows], schema=schema), path)
    res = cli("run", "--programs", str(led.programs), "--events", str(path), "--db", str(led.db), "--json", *flags,
              env=env)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s6_min_and_max_take_an_int_and_a_uint(tmp_path, name, flags, env, stateful):
    """semantics.md 6 lists `min(a, b)` and `max(a, b)`; CEL orders int and uint values with each
    other exactly (`1 < 2u`), and cel-go's math.least / math.greatest take them mixed, giving the
    operand picked with its own type. A Parquet uint field is a CEL uint (docs/decisions.md), so
    "at most 5 points per item" over a uint32 `qty` is `min(event.qty, 5)`. Every path failed
    it with `no such overload: min(uint, int)`: the amount failed the event (expression_error)
    and the condition was SKIPPED_ERROR. By hand: qty 7 -> min 5 (the int), qty 2 -> 2u;
    max(event.n, event.qty) with n = -4 is the qty; the condition max(qty, 3) >= 4 holds for
    qty 7 only."""
    rules = [
        {"name": "capped", "key": "capped", "order": 10, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "min(event.qty, 5)"}]},
        {"name": "bigger", "key": "bigger", "order": 20, "condition": 'event.type == "buy"',
         "actions": [{"type": "COUNTER", "key": "best", "value": "max(event.n, event.qty)"}]},
        {"name": "many", "key": "many", "order": 30, "condition": 'max(event.qty, 3) >= 4',
         "actions": [{"type": "TAG", "tag": "many"}]},
    ] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules))
    payload = pa.struct([("type", pa.string()), ("qty", pa.uint32()), ("n", pa.int64())])
    _struct_run(led, payload, [("k1", "a", NOON, {"type": "buy", "qty": 7, "n": -4}),
                               ("k2", "b", NOON, {"type": "buy", "qty": 2, "n": -4})], flags, env)
    assert _status(led) == {"k1": ("COMPLETED", None, None), "k2": ("COMPLETED", None, None)}
    assert led.sql("SELECT COUNT(*) FROM rule_evaluations WHERE outcome <> 'MATCHED'") == [(0,)]
    assert led.balance("a") == (D(5), D(0), D(0))
    assert led.balance("b") == (D(2), D(0), D(0))
    assert led.state("a") == {("COUNTER", "best"): D(7), ("TAG", "many"): None}
    assert led.state("b") == {("COUNTER", "best"): D(2)}


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s1_4_a_nan_amount_fails_with_the_same_message_on_every_path(tmp_path, name, flags, env, stateful):
    """semantics.md 7: an amount must be a number (> 0, within the scale); NaN is none, so the
    event fails with expression_error (docs/decisions.md). Invariant 1.4: the same message on
    every path. The set-based path (a program whose rules read no state) said "got NaN" where the
    kernel and the row path said "got nan" for the same event."""
    rules = [{"name": "earn", "key": "earn", "order": 10, "condition": 'event.type == "buy"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.a / event.b"}]}] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "u", at(1), "buy", a=0.0, b=0.0), ev("e2", "u", at(2), "buy", a=-1.0, b=0.0)],
            flags=flags, env=env)
    assert _status(led) == {
        "e1": ("FAILED", "expression_error",
               "rule 'earn' action 0: amount expression failed: amount must be a finite number, got NaN"),
        "e2": ("FAILED", "expression_error",
               "rule 'earn' action 0: amount expression failed: amount must be a finite number, got -inf"),
    }
    assert led.sql("SELECT COUNT(*) FROM postings") == [(0,)]
