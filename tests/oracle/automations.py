"""Automations in the oracle (semantics.md 11; docs/decisions.md, "Automations"), written from
the contract and the decisions, not from engine/automations.py.

`fire_automations(oracle, as_of)` is the automations part of the oracle's `perkflow maintain --as-of`
(`Oracle.maintain`): every firing due up to
`as_of`, firing by firing, each one an ordinary event streamed by `Oracle.stream` (so the
rules see it like any other, after the SYSTEM events due by its instant); `Oracle.maintain` then
applies every other time-driven change due up to `as_of` for everyone.

Firings: cron instants (croniter, which Dagster vendors, in the trigger's time zone) and one_time
`trigger_at` after the automation's last planning, or from the program's first row when never
planned; immediate once, at the first maintenance's as-of. Scope participants: every participant
enrolled in the program at or before the instant (by its first row there that passed step 1) and
ACTIVE at the instant (Oracle.status_at: the statuses set so far, by their instants), in
participant id order, admitted by the filter and the guard (CEL over
`participant`, `program`, `now`, on the state at that point). Paused automations and inactive
programs pass their instants. Scope program without participant_id (decisions.md): one event per
firing that names no participant (Event.external_id None); its guard sees the empty participant
its rules see. participant_state (decisions.md): ATTRIBUTE_DATE and INTERVAL per participant from
its enrolment; CRON the cron instants of schedule_config.cron_expression, each for the
participants enrolled by then; THRESHOLD one firing at each maintenance as-of, for the
participants whose counter (resets due applied) passes the comparison and that had no firing of
the automation since the counter last restarted (created, set, reset or rolled over).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from celpy import celtypes as ct

from tests.oracle.cel import CelError, Expr, compile_expr, to_cel

if TYPE_CHECKING:
    from tests.oracle.interpreter import Oracle, ProgramDef


@dataclass
class AutomationDef:
    key: str
    event_name: str
    scope: str
    trigger: str
    cron: str | None
    zone: ZoneInfo
    trigger_at: datetime | None
    payload: dict
    tests: list[Expr]  # participant_filter, guard_condition (those given)
    participant: str | None  # one_time + scope program; None with scope program: the program's own event
    status: str
    attribute: str | None = None  # participant_state ATTRIBUTE_DATE
    time: tuple[int, int] = (0, 0)
    every: timedelta | None = None  # participant_state INTERVAL
    threshold: tuple[str, str, Decimal] | None = None  # participant_state THRESHOLD: counter, operator, value


def automation_def(a, unsupported, slug) -> AutomationDef:
    """From the program file's model (engine.catalog.models.Automation, the oracle's one import)."""
    t = a.trigger
    if t.type in ("immediate",) and a.scope != "participants":
        raise ValueError("immediate automations take scope participants")
    tests = [compile_expr(x) for x in (a.participant_filter, a.guard_condition) if x is not None]
    config = t.schedule_config or {}
    hh, mm = (int(x) for x in str(config.get("time", "00:00")).split(":"))
    from tests.oracle.interpreter import parse_go_duration
    every = parse_go_duration(config["interval"]) if t.schedule_type == "INTERVAL" else None
    cron = config["cron_expression"] if t.schedule_type == "CRON" else t.cron_expression
    threshold = None
    if t.schedule_type == "THRESHOLD":
        threshold = (config["counter"], config["operator"], Decimal(str(config["threshold"])))
    return AutomationDef(a.key or slug(a.name), a.event_name, a.scope, t.type, cron,
                         ZoneInfo(t.timezone), t.trigger_at, _doubles(a.payload), tests, a.participant_id, a.status,
                         config.get("attribute"), (hh, mm), every, threshold)


def _month_day(text: str) -> tuple[int, int] | None:
    """(month, day) of YYYY-MM-DD, MM-DD, or the date of a timestamp (`T` or space after it)."""
    head = text.split("T")[0].split(" ")[0]
    parts = head.split("-")
    if len(parts) == 3 and len(parts[0]) == 4 and parts[0].isdigit():
        parts = parts[1:]
    if len(parts) != 2 or not all(len(x) == 2 and x.isdigit() for x in parts):
        return None
    try:
        datetime(2024, int(parts[0]), int(parts[1]))  # a leap year
    except ValueError:
        return None
    return int(parts[0]), int(parts[1])


def _birthdays(oracle: "Oracle", program_key: str, a: AutomationDef, after: datetime,
               as_of: datetime) -> list[tuple[datetime, str]]:
    """participant_state (decisions.md): (instant, participant) for every enrolled participant,
    after its enrolment (who is ACTIVE at each instant is decided there: _fan_out). ATTRIBUTE_DATE: the month and day in its attribute each year
    at the configured wall time (29 February is 28 February in other years). INTERVAL: every
    `interval` from its enrolment."""
    import calendar
    out = []
    for (key, ext), enrolled_at in oracle.enrolled.items():
        if key != program_key:
            continue
        lo = max(after, enrolled_at - timedelta(microseconds=1))
        if a.every is not None:  # INTERVAL: enrolment + k * every, k >= 1
            t = enrolled_at + a.every
            while t <= as_of:
                if t > lo:
                    out.append((t, ext))
                t += a.every
            continue
        text = oracle.states.get(("participant", ext)).attributes.get(a.attribute, "")
        md = _month_day(text)
        if md is None:
            continue
        month, day = md
        for year in range(lo.astimezone(a.zone).year, as_of.astimezone(a.zone).year + 1):
            d = day if (month, day) != (2, 29) or calendar.isleap(year) else 28
            t = datetime(year, month, d, *a.time, tzinfo=a.zone).astimezone(timezone.utc)
            if lo < t <= as_of:
                out.append((t, ext))
    return out


def _doubles(value: Any) -> Any:
    """decisions.md: JSON numbers are doubles in CEL (the payload becomes `event`)."""
    if isinstance(value, dict):
        return {k: _doubles(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_doubles(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _instants(a: AutomationDef, after: datetime, planned: datetime | None, as_of: datetime) -> list[datetime]:
    if a.trigger == "immediate":
        return [as_of] if planned is None else []
    if a.trigger == "one_time":
        return [a.trigger_at] if after < a.trigger_at <= as_of else []
    from dagster._vendored.croniter import croniter  # test-only, as for CRON budgets
    # CHOICE (decisions.md): the fields are wall-clock time in the zone; croniter walks naive wall
    # times (its own zone arithmetic is off by an hour after a DST change), zoneinfo maps them
    # to instants (fold 0: a skipped wall time lands after the gap, a repeated one fires once)
    out, it = [], croniter(a.cron, after.astimezone(a.zone).replace(tzinfo=None))
    while True:
        t = it.get_next(datetime).replace(tzinfo=a.zone).astimezone(timezone.utc)
        if t > as_of:
            return out
        if t > after and (not out or t > out[-1]):
            out.append(t)


def _key_text(t: datetime) -> str:
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"


def fire_automations(oracle: "Oracle", as_of: datetime) -> None:
    """The firings due up to `as_of`, firing by firing; a firing's events come after the SYSTEM
    events (SCHEDULE_EVENT) due by its instant, as in any stream."""
    from tests.oracle.interpreter import Event

    due: list[tuple[datetime, str, str, frozenset | None]] = []
    # the ledger knows the automations from the first run on (runs store the program files)
    programs = oracle.programs.values() if oracle.runs else []
    for program in sorted(programs, key=lambda p: p.key):
        for a in program.automations:
            planned = oracle.planned.get((program.key, a.key))
            if planned is not None and planned >= as_of:
                continue
            after = planned
            if after is None and program.key in oracle.first_instant:
                after = oracle.first_instant[program.key] - timedelta(microseconds=1)
            if after is None and a.trigger != "immediate":
                continue
            oracle.planned[(program.key, a.key)] = as_of
            if a.status != "active" or program.status != "ACTIVE":
                continue
            if a.threshold is not None:  # judged at the as-of, on the state then (_fan_out)
                due.append((as_of, program.key, a.key, None))
            elif a.trigger == "participant_state" and a.cron is not None:  # CRON: as a cron for participants
                due += [(t, program.key, a.key, None) for t in _instants(a, after, planned, as_of)]
            elif a.trigger == "participant_state":
                dated: dict[datetime, set[str]] = {}
                for t, ext in _birthdays(oracle, program.key, a, after, as_of):
                    dated.setdefault(t, set()).add(ext)
                due += [(t, program.key, a.key, frozenset(people)) for t, people in dated.items()]
            else:
                due += [(t, program.key, a.key, None) for t in _instants(a, after, planned, as_of)]
    for instant, program_key, auto_key, only in sorted(due, key=lambda d: d[:3]):
        program = oracle.programs[program_key]
        a = next(x for x in program.automations if x.key == auto_key)
        for ext in _fan_out(oracle, program, a, instant):
            if only is not None and ext not in only:
                continue
            who = oracle.participants[ext].id if a.scope == "participants" else "program"
            if ext is not None:
                oracle.fired[(program.key, a.key, ext)] = instant
            key = f"system:automation:{a.key}:{who}:{_key_text(instant)}"
            data = dict(a.payload) | {"type": a.event_name}
            oracle.arrivals += 1
            oracle.seen[("event", program.key, key)] = ("system", key)
            oracle.first_instant.setdefault(program.key, instant)
            oracle.stream([Event(program.key, ext, key, instant, data, None, oracle.arrivals)], instant)


def _fan_out(oracle: "Oracle", program: "ProgramDef", a: AutomationDef, instant: datetime) -> list[str | None]:
    if a.scope == "program" and a.participant is None:
        people = [None]  # the program's own event
    elif a.scope == "participants":
        people = [ext for (key, ext), at in oracle.enrolled.items()
                  if key == program.key and at <= instant and oracle.status_at(ext, instant) == "ACTIVE"]
        people.sort(key=lambda ext: oracle.participants[ext].id)
    else:
        people = [ext for ext, rec in oracle.participants.items() if a.participant in (ext, rec.id)][:1]
    if a.threshold is not None:
        people = [ext for ext in people if _threshold_due(oracle, program, a, ext, instant)]
    return [ext for ext in people if all(_true(t, _activation(oracle, program, ext, instant), instant)
                                         for t in a.tests)]


def _threshold_due(oracle: "Oracle", program: "ProgramDef", a: AutomationDef, ext: str, instant: datetime) -> bool:
    """The counter (0 if never written; resets due by the instant applied) passes, and no firing of
    the automation for the participant since the counter last restarted."""
    import copy
    import operator

    from tests.oracle.interpreter import EntityState

    key, op, value = a.threshold
    state = copy.deepcopy(oracle.states.get(("participant", ext), EntityState()))
    state.apply_due_resets(instant)
    counter = state.counters.get(key)
    compare = {">=": operator.ge, ">": operator.gt, "==": operator.eq, "<=": operator.le, "<": operator.lt}[op]
    if not compare(counter.value if counter else Decimal(0), value):
        return False
    last = oracle.fired.get((program.key, a.key, ext))
    if last is None:
        return True
    return counter is not None and last < max(counter.last_reset_at, counter.rolled_at or counter.last_reset_at)


def _activation(oracle: "Oracle", program: "ProgramDef", ext: str, instant: datetime) -> dict:
    """`participant`, `program` and `now` at the instant, on a copy of the state (nothing of the
    test stays)."""
    import copy

    from tests.oracle.interpreter import EMPTY_PARTICIPANT, EntityState

    pstate = copy.deepcopy(oracle.states.get(("program", program.key), EntityState()))
    pstate.apply_due_resets(instant)
    prog = {"key": program.key, "tags": sorted(pstate.tags), "counters": {k: c.value for k, c in pstate.counters.items()},
            "attributes": dict(pstate.attributes)}
    if ext is None:
        return {"participant": to_cel(copy.deepcopy(EMPTY_PARTICIPANT)), "program": to_cel(prog)}
    record = oracle.participants[ext]
    state = copy.deepcopy(oracle.states.get(("participant", ext), EntityState()))
    state.apply_due_resets(instant)
    # s3 / s9.1: the lots' maturities and expiries due by the instant have happened (on a copy:
    # their entries are written when the participant is next touched, decisions.md "Automations")
    books = copy.deepcopy(oracle.books)
    books.due_lot_changes(ext, instant)
    from tests.oracle.books import participant_account
    participant = {
        "id": record.id, "external_id": ext, "status": record.status, "created_at": record.created_at,
        "tags": sorted(state.tags), "counters": {k: c.value for k, c in state.counters.items()},
        "attributes": dict(state.attributes), "tiers": {},
        "balances": {s: {b.lower(): books.balance(participant_account(ext, s, b)) for b in ("AVAILABLE", "HELD", "DEFERRED")}
                     for s in program.assets},
    }
    return {"participant": to_cel(participant), "program": to_cel(prog)}


def _true(test: Expr, activation: dict, now: datetime) -> bool:
    try:
        return isinstance(v := test.evaluate(activation, now), ct.BoolType) and bool(v)
    except CelError:
        return False
