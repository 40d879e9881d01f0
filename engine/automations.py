"""Automations (semantics.md 11): which SYSTEM events are due up to an instant, as input rows.

The planner only makes rows: each firing is an ordinary event row (event_data = the payload with
`type` = event_name, event_timestamp = the firing instant, idempotency key
`system:automation:<automation key>:<participant id | 'program'>:<instant, RFC 3339 UTC>`) that
`perkflow maintain` runs through the same intake, rules and writer as `perkflow run`
(engine/maintain.py). Firings are planned one by one (instant, program key, automation key), so
that a guard (and a filter) sees the state the earlier firings left. How far each automation was planned is kept in the
`automations` table (`planned_through`), so a firing is never planned twice; the deterministic
keys make a repeat a duplicate anyway.

Which instants (docs/decisions.md, "Automations"):
- cron: every firing of the expression, in the trigger's time zone, after the automation was
  introduced (`introduced_at`, the ledger's clock when a run first stored it; for an automation
  in the ledger's first batch, from the program's first event on) and after the last planning,
  up to the as-of;
- one_time: `trigger_at`, if it falls in that window;
- immediate: once, at the as-of of the first maintenance run that plans it;
- participant_state ATTRIBUTE_DATE: yearly, per participant, on the month and day of a date
  attribute (a birthday) at `schedule_config.time` in the trigger's time zone, in that window;
  INTERVAL: every `schedule_config.interval` from each participant's enrolment, in that window;
  CRON: every firing of `schedule_config.cron_expression` from each participant's enrolment, in
  that window; THRESHOLD: at the as-of, for the participants whose counter passes the test and
  who have not had a firing of it since the counter's period began (its last_reset_at).
Paused automations, and automations of programs that are not ACTIVE, pass their instants
without firing.

Who: scope participants, every participant enrolled by the instant and ACTIVE at it (filter and
guard admitting); scope
program, the participant named by `participant_id`, else one program event that names no
participant (intake and the kernel take it as such: docs/decisions.md, "Automations").
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import polars as pl

from engine.catalog import Catalog, CompiledProgram
from engine.catalog.compiled import CompiledAutomation
from engine.catalog.models import Criterion
from engine.catalog.load import compile_documents
from engine.cel import CelEvalError, CelProgram
from engine.io.events import COLUMNS, TS, dicts_to_column, json_doubles, strip_nulls
from engine.kernel import apply_holder_due, participant_view, program_view
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.reads import keys, merge, reads
from engine.state import EntityState, Store, Tx, status_at, stored_status_changes
from engine.tiers import meets

KEY_PREFIX = "system:automation:"


@dataclass(frozen=True)
class Firing:
    instant: datetime
    program: CompiledProgram
    automation: CompiledAutomation
    only: frozenset[str] | None = None  # ATTRIBUTE_DATE: the participants whose date it is


def stored_catalog(con) -> Catalog | None:
    """The programs the runs stored (table program_documents), compiled again; None if none."""
    rows = con.execute(statement("lookups.sql", "program_documents")).fetchall()
    if not rows:
        return None
    return compile_documents([(f"stored program {key}", json.loads(doc)) for key, doc in rows])


def schedule(con, catalog: Catalog, as_of: datetime) -> tuple[list[Firing], dict[str, datetime]]:
    """(the firings due up to `as_of` not planned before, in stream order: instant, program key,
    automation key; the new `planned_through` of each automation planned)."""
    rows = con.execute(statement("lookups.sql", "automation_marks")).fetchall()
    marks = {i: (introduced, through) for i, introduced, through, _ in rows}
    starts = dict(con.execute(statement("lookups.sql", "program_first_instants")).fetchall())
    firings: list[Firing] = []
    planned: dict[str, datetime] = {}
    for program in catalog.programs.values():
        for auto in program.automations.values():
            if auto.sid not in marks:
                continue  # not stored by a run (a document without its automations row cannot happen)
            introduced, through = marks[auto.sid]
            if through is not None and through >= as_of:
                continue
            start = through or introduced
            if start is None and starts.get(program.sid) is not None:
                start = starts[program.sid] - timedelta(microseconds=1)  # the first event's instant fires
            if start is None and auto.trigger != "immediate":
                continue  # nothing in the program's stream yet: its firings start with its first event
            planned[auto.sid] = as_of
            if auto.status != "active" or program.model.status != "ACTIVE":
                continue  # paused: its instants pass without firing, and are not made up later
            if auto.threshold is not None:  # who passes is decided when it fires (rows_at)
                firings.append(Firing(as_of, program, auto))
            elif auto.trigger == "participant_state":
                firings += _per_participant(con, program, auto, start, as_of)
            else:
                firings += [Firing(t, program, auto) for t in instants(auto, start, through, as_of)]
    # removed from its program's file (archived by the run that stored the file without it): its
    # instants pass without firing, as a paused one's, and are not made up if it comes back
    for i, _, through, status in rows:
        if status == "archived" and (through is None or through < as_of):
            planned[i] = as_of
    firings.sort(key=lambda f: (f.instant, f.program.key, f.automation.key))
    return firings, planned


def _per_participant(con, program: CompiledProgram, auto: CompiledAutomation, after: datetime,
                     as_of: datetime) -> list[Firing]:
    """participant_state: each participant enrolled in the program has instants of its own
    in (after, as_of], none before its enrolment. ATTRIBUTE_DATE: the yearly anniversaries of the
    month and day in the attribute (as the ledger holds it now) at the configured wall-clock time
    in the trigger's zone. INTERVAL: every `interval` from its enrolment. CRON: the firings of
    the expression from its enrolment. One firing per instant, naming the participants it is for."""
    rows = con.execute(statement("lookups.sql", "enrolled_attribute"),
                       {"program_id": program.sid, "attribute": auto.date_attribute or ""}).fetchall()
    ticks = cron_times(auto, after, as_of) if auto.cron is not None else []
    by_instant: dict[datetime, set[str]] = {}
    for pid, enrolled_at, text in rows:
        lo = max(after, enrolled_at - timedelta(microseconds=1))
        if auto.every is not None:
            times = periods(enrolled_at, auto.every, lo, as_of)
        elif auto.cron is not None:
            times = [t for t in ticks if t > lo]
        else:
            times = anniversaries(text, auto.date_time, auto.timezone, lo, as_of)
        for t in times:
            by_instant.setdefault(t, set()).add(pid)
    return [Firing(t, program, auto, frozenset(p)) for t, p in by_instant.items()]


def periods(start: datetime, every: timedelta, after: datetime, until: datetime) -> list[datetime]:
    """start + k * every (k >= 1) in (after, until]."""
    k = max(1, (after - start) // every + 1)
    out = []
    while (t := start + k * every) <= until:
        if t > after:
            out.append(t)
        k += 1
    return out


def anniversaries(text: str | None, at: tuple[int, int], tz, after: datetime, until: datetime) -> list[datetime]:
    """The yearly instants in (after, until] of the month and day in `text` (YYYY-MM-DD, an RFC
    3339 timestamp's date as written, or MM-DD) at wall-clock `at` in `tz`; 29 February falls on
    28 February in other years. Text that is not such a date gives none."""
    # ASCII digits only, as every date and time text (docs/decisions.md "The rule language")
    m = re.match(r"^\s*(?:([0-9]{4})-)?([0-9]{2})-([0-9]{2})(?:$|[T ])", text or "")
    if m is None:
        return []
    month, day = int(m.group(2)), int(m.group(3))
    try:
        # with a year, that year's date (2001-02-29 is no date); without, a leap year, where every
        # valid month and day exists
        date(int(m.group(1) or 2024), month, day)
    except ValueError:
        return []
    out = []
    for year in range(after.astimezone(tz).year, until.astimezone(tz).year + 1):
        d = day if (month, day) != (2, 29) or calendar.isleap(year) else 28
        t = datetime(year, month, d, *at, tzinfo=tz).astimezone(timezone.utc)
        if after < t <= until:
            out.append(t)
    return out


def instants(auto: CompiledAutomation, after: datetime | None, planned_through: datetime | None,
             as_of: datetime) -> list[datetime]:
    """The automation's firing instants in (after, as_of]."""
    if auto.trigger == "immediate":
        return [as_of] if planned_through is None else []
    if auto.trigger == "one_time":
        return [auto.trigger_at] if after < auto.trigger_at <= as_of else []
    return cron_times(auto, after, as_of)


def cron_times(auto: CompiledAutomation, after: datetime, as_of: datetime) -> list[datetime]:
    """The firings of the automation's cron expression in (after, as_of], in its time zone."""
    out, t = [], after
    while (t := auto.cron.next_after(t, auto.timezone)) <= as_of:
        out.append(t)
    return out


def one_by_one(firings: list[Firing]):
    """The firings in stream order, each planned against the state the ones before it left (two
    automations firing at one instant: the second one's filter and guard see what the first
    one's events did; one automation's participants are chosen together, when it fires)."""
    for firing in firings:
        yield firing.instant, [firing]


def rows_at(con, catalog: Catalog, firings: list[Firing], arrival: int) -> pl.DataFrame:
    """The SYSTEM event rows of firings at one instant, numbered in arrival order from `arrival`,
    in the normalised input frame of engine/io/events.py."""
    rows: list[dict] = []
    for f in firings:
        auto, program = f.automation, f.program
        if auto.scope == "participants":
            enrolled = con.execute(statement("lookups.sql", "enrolled_participants"),
                                   {"program_id": program.sid, "instant": f.instant}).fetchall()
            changes = stored_status_changes(con, f.instant) if enrolled else {}
            # ACTIVE at the firing instant, not when maintenance runs (docs/decisions.md)
            people = [(pid, ext) for pid, ext, now in enrolled if (f.only is None or pid in f.only)
                      and status_at(changes.get(pid, []), f.instant, now) == "ACTIVE"]
        elif auto.participant_id is not None:
            people = con.execute(statement("lookups.sql", "participant_by_ref"),
                                 {"ref": auto.participant_id, "instant": f.instant}).fetchall()
        else:  # scope program: one event of the program, for no participant (docs/decisions.md)
            people = [(None, None)]
        people = _admitted(con, catalog, program, auto, f.instant, people)
        payload = strip_nulls(dict(auto.payload) | {"type": auto.event_name})
        for pid, external_id in people:
            who = pid if auto.scope == "participants" else "program"
            rows.append({"source": f"automation:{program.key}/{auto.key}", "program_id": program.key,
                         "external_id": external_id, "idempotency_key": f"{KEY_PREFIX}{auto.key}:{who}:{rfc3339(f.instant)}",
                         "event_timestamp": f.instant, "payload": payload})
    n = len(rows)
    text = pl.Series([None] * n, dtype=pl.String)
    frame = pl.DataFrame({
        "source": pl.Series([r["source"] for r in rows], dtype=pl.String),
        "row_number": pl.Series(range(1, n + 1), dtype=pl.Int64),
        "arrival": pl.Series(range(arrival, arrival + n), dtype=pl.Int64),
        "kind": pl.Series(["event"] * n, dtype=pl.String),
        "operation": text,
        "program_id": pl.Series([r["program_id"] for r in rows], dtype=pl.String),
        "external_id": pl.Series([r["external_id"] for r in rows], dtype=pl.String),
        "participant_id": text,
        "idempotency_key": pl.Series([r["idempotency_key"] for r in rows], dtype=pl.String),
        "event_timestamp": pl.Series([r["event_timestamp"] for r in rows], dtype=TS),
        "event": dicts_to_column([json_doubles(r["payload"]) for r in rows]),
        "params": pl.Series([None] * n, dtype=pl.Null),
        "event_json": pl.Series([json.dumps(r["payload"], sort_keys=True, separators=(",", ":")) for r in rows],
                                dtype=pl.String),
        "recipient_external_id": text, "recipient_id": text, "event_type": text,
        "reject_reason": text, "reject_message": text, "raw": text,
    })
    return frame.select(COLUMNS)


def _admitted(con, catalog: Catalog, program: CompiledProgram, auto: CompiledAutomation, instant: datetime,
              people: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The participants the THRESHOLD test, the filter and the guard admit at `instant`, each
    judged on its state as the ledger holds it now with everything due by the instant applied.
    An expression that fails or does not give a bool admits no one, as a failing rule condition
    matches nothing. The program event of a scope program automation (participant None) is
    judged on the empty participant its rules see (engine/kernel.py EMPTY_PARTICIPANT)."""
    tests = [p for p in (auto.participant_filter, auto.guard_condition) if p is not None]
    if auto.threshold is not None and people and not meets(auto.threshold, EntityState()):
        # 0 fails the test: only holders of the counter can pass (spares loading everyone's state)
        counter = pl.DataFrame({"key": [auto.threshold.counter]}, schema={"key": pl.String})
        holders = {pid for (pid,) in db.execute(con, statement("lookups.sql", "counter_holders"),
                                                stage_counter_keys=counter).fetchall()}
        people = [p for p in people if p[0] in holders]
    if (not tests and auto.threshold is None) or not people:
        return people
    want = merge(*(reads(p, "participant") for p in tests))
    # as of the firing instant: what is due by then for the participant has happened, as before
    # an event (semantics.md 3), though maintenance writes its entries and rows only later, as the
    # participant's SYSTEM event comes to be processed (docs/decisions.md "Automations"): a lot
    # expired by then is not spendable (9.1), one matured by then is; tier reviews, rollovers
    # (counters, which a THRESHOLD reads) and expiries have happened; counter resets are applied
    # by Tx.state. Lots are loaded only when the tests read a LOT asset's balance.
    lots = bool(keys(want, "balances", list(program.lot_assets)))
    timed = catalog.timed_tiers()
    store = Store(con, {})  # read-only: discarded after the test
    pids = [pid for pid, _ in people if pid is not None]
    store.preload(pids + [program.sid], [], lots=lots)
    if lots or timed:
        for pid in pids:
            apply_holder_due(store, "PARTICIPANT", pid, instant, timed, [], 0)
    tx = Tx(store, instant)
    fired = {} if auto.threshold is None else dict(con.execute(
        statement("lookups.sql", "automation_last_firings"),
        {"program_id": program.sid, "prefix": f"{KEY_PREFIX}{auto.key}:"}).fetchall())
    out = []
    for pid, external_id in people:
        if auto.threshold is not None and not _crossed(auto.threshold, tx.state("PARTICIPANT", pid), fired.get(pid)):
            continue
        if tests:
            activation = {"now": instant, "participant": participant_view(program, tx, pid, want, catalog),
                          "program": program_view(program, tx)}
            if not all(_true(p, activation) for p in tests):
                continue
        out.append((pid, external_id))
    return out


def _crossed(test: Criterion, st: EntityState, last_fired: datetime | None) -> bool:
    """THRESHOLD (docs/decisions.md): the counter passes the test and the automation has not
    fired for the participant in the counter's period, which begins at its `last_reset_at`
    (creation, set_counter, a `reset_after` reset or a tier rollover). A dip and a re-cross in
    one period fire nothing more; a counter never written has one period, its whole life."""
    if not meets(test, st):
        return False
    if last_fired is None:
        return True
    counter = st.counters.get(test.counter)
    return counter is not None and last_fired < counter.last_reset_at


def _true(prog: CelProgram, activation: dict) -> bool:
    try:
        return prog.evaluate(activation) is True
    except CelEvalError:
        return False


def rfc3339(t: datetime) -> str:
    """An instant as RFC 3339 UTC text with a `Z`, microseconds only when there are some."""
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"


def planned_frame(planned: dict[str, datetime]) -> pl.DataFrame:
    """The stage of update_automations_planned (sql/write_batch.sql)."""
    return pl.DataFrame({"id": list(planned), "planned_through": list(planned.values())},
                        schema={"id": pl.String, "planned_through": TS})
