"""SYSTEM events in the oracle: what SCHEDULE_EVENT and BROADCAST emit (semantics.md 7, 3, and
docs/decisions.md "SYSTEM events"), written from the contract and the decisions, not from
engine/emit.py.

- A SYSTEM event is an event of the emitting program for one participant: its `event_data` is
  the payload with `type` = event_name, its `now` the instant it is due. Its JSON numbers are
  doubles for CEL, as for every JSON payload (decisions.md "Input").
- The stream merges the batch's rows with a queue of SYSTEM events: one due at t comes before
  the rows at t not yet processed, after its emitter; several due together come in emission
  order. A batch processes those due by its last row's instant; the rest wait for a later batch.
- Chains: at most MAX_DEPTH SYSTEM events follow from one input event (the next emission fails
  its event with emission_depth_exceeded); an event that follows from a BROADCAST cannot
  BROADCAST (broadcast_loop).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from celpy import celtypes as ct

MAX_DEPTH = 16
RESERVED = "system:"


class NoJson(ValueError):
    pass


def json_of(value: Any) -> Any:
    """A CEL result (or a static payload value) as a JSON value."""
    from tests.oracle.interpreter import rfc3339

    if value is None or isinstance(value, ct.NullType):
        return None
    if isinstance(value, (ct.BoolType, bool)):
        return bool(value)
    if isinstance(value, (ct.IntType, ct.UintType, int)):
        return int(value)
    if isinstance(value, (ct.DoubleType, float)):
        if not math.isfinite(float(value)):
            raise NoJson(f"{float(value)} is not a JSON number")
        return float(value)
    if isinstance(value, (ct.StringType, str)):
        return str(value)
    if isinstance(value, ct.TimestampType):
        return rfc3339(value)
    if isinstance(value, (ct.DurationType, timedelta)):
        micros = value // timedelta(microseconds=1)
        whole, frac = divmod(micros, 10**6)
        return f"{whole}s" if not frac else f"{whole}.{frac:06d}".rstrip("0") + "s"
    if isinstance(value, (ct.ListType, list)):
        return [json_of(v) for v in value]
    if isinstance(value, (ct.MapType, dict)):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (ct.StringType, str)):
                raise NoJson("map keys must be strings")
            out[str(k)] = json_of(v)
        return out
    raise NoJson(f"a {type(value).__name__} has no JSON form")


def event_data(event_name: str, payload: dict) -> dict:
    """The SYSTEM event's payload with its type (event_name wins), nulls dropped, and JSON
    numbers as CEL sees them: doubles."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        return v
    data = clean(payload)
    data["type"] = event_name
    return data


def default_key(kind: str, program_key: str, emitter_key: str, rule_key: str, index: int,
                receiver: str | None) -> str:
    """A SYSTEM event's idempotency key when the harness gives no id scheme of its own."""
    tail = f":{receiver}" if kind == "broadcast" else ""
    return f"system:{kind}:{program_key}/{emitter_key}:{rule_key}:{index}{tail}"
