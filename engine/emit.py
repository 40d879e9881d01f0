"""SYSTEM events: what SCHEDULE_EVENT and BROADCAST emit (semantics.md 7; docs/decisions.md,
"SYSTEM events").

A SYSTEM event is an ordinary event of its program: `event_data` is the action's `payload` with
`type` = `event_name`, `event_timestamp` the instant it is due, and it goes through the rules
like any other. It is recognised by its idempotency key, `system:<kind>:...`, built from the
emitting event's id, the rule version and the action index (and, for BROADCAST, the receiving
participant), so the same stream always emits the same events, however it is cut into batches.

Stream order (semantics.md 3): a SYSTEM event due at T is processed at T, before the input rows
timestamped T that are still to come (like every time-driven change: "everything due at or
before t has happened" before an event at t), after the event that emitted it; SYSTEM events due
at one instant are processed in the order they were emitted. One not due within the batch waits
in `scheduled_events` for the batch (or `perkflow maintain --as-of`) whose stream reaches it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from engine import ids
from engine.io.events import json_doubles, strip_nulls

#: Idempotency keys with this prefix are the engine's: input rows carrying one are quarantined.
RESERVED_PREFIX = "system:"
RESERVED_REASON = "reserved_idempotency_key"
#: An input row's position is below this; SYSTEM events are numbered from it (KernelEvent.pos).
SYSTEM_POS = 1 << 40
#: arrival_seq of a SYSTEM event: (batch that emitted it << 32) | EMITTED_BIT | n-th emission of that batch.
EMITTED_BIT = 1 << 31
#: A chain of SYSTEM events (each emitted by the previous one) is at most this long: an action
#: that would emit one more fails its event (EMISSION_DEPTH), which stops a rule that schedules
#: the event it matches from looping forever.
MAX_DEPTH = 16
EMISSION_DEPTH = "emission_depth_exceeded"
#: A SYSTEM event may emit at most one SCHEDULE_EVENT (its chain goes on in a line): a second
#: fails it with this code. With MAX_DEPTH and BROADCAST_LOOP this bounds what one input event
#: can set off (without it, two SCHEDULE_EVENTs of the event's own type make 2^16 events).
FANOUT = "emission_fanout_exceeded"
#: A SYSTEM event descended from a BROADCAST cannot BROADCAST again (each would fan out to every
#: participant of the program, again and again): its event fails with this code.
BROADCAST_LOOP = "broadcast_loop"


@dataclass
class Emission:
    """What makes a KernelEvent a SYSTEM event."""
    seq: int              # emission order (arrival_seq): ties at one instant are processed in it
    depth: int            # 1 for an event emitted by an input row, +1 per SYSTEM generation
    from_broadcast: bool  # a BROADCAST is among its ancestors (or made it)
    source: str           # events.source: 'system:<emitting event id>'
    event_json: str       # events.event_data as stored


def event_id(program_id: str, idempotency_key: str) -> str:
    """name_uuid('event:' || program_id || ':' || idempotency_key), as sql/write_batch.sql names events."""
    return ids.row_id_text("event", program_id, idempotency_key)


def schedule_key(emitter_id: str, rule_version: str, action_index: int) -> str:
    return f"{RESERVED_PREFIX}schedule:{emitter_id}:{rule_version}:{action_index}"


def broadcast_key(emitter_id: str, rule_version: str, action_index: int, participant_id: str) -> str:
    return f"{RESERVED_PREFIX}broadcast:{emitter_id}:{rule_version}:{action_index}:{participant_id}"


def payload_json(event_name: str, payload: dict) -> str:
    """events.event_data of a SYSTEM event: the payload with `type` = event_name (event_name wins),
    null fields dropped (null = absent, as for input rows), keys sorted."""
    data = strip_nulls(dict(payload))
    data["type"] = event_name
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def cel_event(event_json: str) -> dict:
    """The CEL `event` of a SYSTEM event, built from its stored JSON exactly as for an input row
    with JSON event_data (every JSON number a double), so that it is the same whether it is
    processed in the batch that emitted it or read back from `scheduled_events`."""
    return json_doubles(json.loads(event_json))


class PayloadError(ValueError):
    """A payload value that has no JSON form (bytes, a type, NaN)."""


def json_value(value, where: str):
    """A CEL value (or a static payload value) as JSON: numbers stay numbers (a double by its
    shortest round trip), timestamps become RFC 3339 UTC text, durations Go text in seconds."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{where}: {value} has no JSON form")
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        text = value.astimezone(timezone.utc).isoformat().replace("+00:00", "")
        return (text.rstrip("0").rstrip(".") if "." in text else text) + "Z"
    if isinstance(value, timedelta):
        seconds = Decimal(value // timedelta(microseconds=1)) / Decimal(10**6)
        return f"{seconds.normalize():f}s"
    if isinstance(value, list):
        return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise PayloadError(f"{where}: map keys must be strings, got {type(k).__name__}")
            out[k] = json_value(v, f"{where}.{k}")
        return out
    raise PayloadError(f"{where}: a {type(value).__name__} has no JSON form")
