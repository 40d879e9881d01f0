"""The sequential kernel: events one at a time, in stream order, against the state earlier
events left (semantics.md 5). It runs the programs whose rules read or write state; what could
be computed beforehand (conditions and amounts that read only `event` and `now`) arrives in
`Precomputed` and is looked up, so only stateful expressions are evaluated here, per event.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from engine import amounts, emit, holds, ids, tiers
from engine.catalog import Catalog, CompiledAction, CompiledProgram, CompiledRule
from engine.catalog.compiled import CompiledTarget
from engine.ledger.sqlfiles import statement
from engine.cel import CelEvalError, CelProgram, type_name
from engine.cel.values import format_duration
from engine.plan import reads_state
from engine.reads import keys, reads_field
from engine.groups import GROUP_INACTIVE, GROUP_NOT_FOUND
from engine.operations import apply_operation
from engine.durations import later, parse_duration, parse_when
from engine.io.events import MAX_KEY_LENGTH
from engine.lots import apply_due, deferred, lot_spec, static_instant
from engine.moves import ActionFailed, move, plain, source_of_issue, system
from engine.state import Counter, Person, Store, Tx, status_at, stored_status_changes

NOT_FOUND = "participant_not_found"
#: An action of a program event (a scope `program` automation's firing, which names no
#: participant) that applies to the event's participant: it has none (docs/decisions.md).
NO_PARTICIPANT = "no_participant"
#: CEL's `participant` for a program event: no id, external_id, status or created_at (so
#: `has(participant.id)` tells such an event), and empty tags, counters, attributes, tiers and
#: balances, so that a rule reading them simply does not match instead of failing.
EMPTY_PARTICIPANT = {"tags": [], "counters": {}, "attributes": {}, "tiers": {}, "balances": {}}
INACTIVE = "participant_inactive"
EXTERNAL_ID_TOO_LONG = "external_id_too_long"
BLOCKED_FOR_INACTIVE = {"CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT", "COUNTER"}
VALUE_ACTIONS = {"CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT", "VOID_HOLD"}


@dataclass
class Precomputed:
    """Results computed before the kernel, keyed by (rule id, event pos) / (rule id, action, pos)."""
    conditions: dict[str, dict[int, tuple[bool, str | None]]] = field(default_factory=dict)
    values: dict[tuple[str, int, str], dict[int, tuple[object, str | None]]] = field(default_factory=dict)


@dataclass
class KernelEvent:
    pos: int
    program: CompiledProgram
    subject: str          # participant id
    recipient: str | None
    now: datetime
    event: dict  # the event's payload, or an operation's params
    operation: str | None = None
    key: str = ""  # idempotency key: names the lots its credits create
    # A row intake failed with participant_not_found while an action target could still create
    # the participant earlier in the stream (engine/intake.py): (the failure if a participant it
    # names is still missing at its turn, the outcome of step 1 if not: a failure or None).
    deferred: tuple[tuple[str, str], tuple[str, str] | None] | None = None
    system: emit.Emission | None = None  # a SYSTEM event (engine/emit.py)
    # the stream position participants are looked up at (Store.arrived): an input row's own
    # `pos`; for a SYSTEM event, set when it is processed, the last input row processed before it
    at: int | None = None

    @property
    def where(self) -> int:
        return self.pos if self.at is None else self.at


@dataclass
class KernelResult:
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)   # pos -> (code, message)
    effects: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)  # deferred rows whose participants existed at their turn
    looked_up: int = 0   # rule conditions computed beforehand (vectorised or row path) and looked up
    evaluated: int = 0   # rule conditions evaluated here, one event at a time, against state
    order: list[int] = field(default_factory=list)  # pos of every event, in the order it was processed
    system: list[KernelEvent] = field(default_factory=list)  # SYSTEM events processed, in that order
    pending: list[KernelEvent] = field(default_factory=list)  # SYSTEM events not due by the reach


@dataclass
class Emitting:
    """SYSTEM events for one kernel run: those due from earlier batches (`pending`, in stream
    order), how far the stream reaches (SYSTEM events due by then are processed), and how the
    batch numbers its emissions (`seq`, `pos`)."""
    reach: datetime | None
    batch_id: int
    emitted: int = 0   # emissions of the batch so far (its earlier chunks included)
    pending: list[KernelEvent] = field(default_factory=list)
    next_pos: int = emit.SYSTEM_POS
    # program -> enrolled participant -> (enrolled_at, status now), as stored
    _stored: dict[str, dict[str, tuple[datetime, str]]] = field(default_factory=dict)
    # program -> participant enrolled by the rows processed -> its first instant there
    _batch: dict[str, dict[str, datetime]] = field(default_factory=dict)
    _changes: dict[str, list[tuple[datetime, str]]] | None = None  # stored status changes, when needed

    def seq(self) -> int:
        self.emitted += 1
        return (self.batch_id << 32) | emit.EMITTED_BIT | self.emitted

    def pos(self) -> int:
        self.next_pos += 1
        return self.next_pos

    def active_enrolled(self, store: Store, program_id: str, instant: datetime) -> list[str]:
        """Participants enrolled in the program so far in the stream (stored enrolments, and
        those of the rows processed: `enrol`) at or before `instant`, and ACTIVE at `instant`
        (docs/decisions.md, "SYSTEM events": a late BROADCAST reaches who was there then), in
        id order."""
        if program_id not in self._stored:
            rows = store.con.execute(statement("lookups.sql", "program_enrollments"), {"program_id": program_id}).fetchall()
            self._stored[program_id] = {pid: (at, status) for pid, at, status in rows}
        stored, batch = self._stored[program_id], self._batch.get(program_id, {})
        if self._changes is None:
            self._changes = stored_status_changes(store.con)
        changed = self._changes.keys() | store.status_log.keys()
        out = []
        for pid in sorted(stored.keys() | batch.keys()):
            enrolled_at, status = stored.get(pid, (batch.get(pid), "ACTIVE"))
            if enrolled_at > instant:
                continue
            person = store.people.get(pid)  # the store has the status as of now, if it has the participant
            if person is not None:
                status = person.status
            if pid in changed:  # its status now may not be its status then
                status = status_at(self._changes.get(pid, []) + store.status_log.get(pid, []), instant, status)
            if status == "ACTIVE":
                out.append(pid)
        return out

    def enrol(self, ev: KernelEvent) -> None:
        """A row (or SYSTEM event) that passed step 1 enrols its participant and recipient."""
        for pid in (ev.subject, ev.recipient):
            if pid is not None:
                self._batch.setdefault(ev.program.sid, {}).setdefault(pid, ev.now)

    def enrol_created(self, program_id: str, participant_id: str, at: datetime) -> Callable[[], None]:
        """... and an action target that creates a participant enrols it; returns the undo (the
        event fails: the participant was never created)."""
        enrolled = self._batch.setdefault(program_id, {})
        if participant_id in enrolled:
            return lambda: None
        enrolled[participant_id] = at
        return lambda: enrolled.pop(participant_id, None)


def run_kernel(events: list[KernelEvent], catalog: Catalog, store: Store, pre: Precomputed,
               emitting: Emitting | None = None) -> KernelResult:
    out = KernelResult()
    # tiers whose levels change with time: lifecycle steps, and tier expiry (any tier; set_tier's expires_at)
    timed = catalog.timed_tiers()
    emitting = emitting or Emitting(None, 0)
    for ev in _stream(events, emitting, out):
        out.order.append(ev.pos)
        if ev.system is not None:
            out.system.append(ev)
            if ev.program.model.status != "ACTIVE":  # step 1 for a SYSTEM event: its participant exists
                out.failures[ev.pos] = ("program_inactive", f"program {ev.program.key} is not ACTIVE")
                continue
            if ev.subject is not None and (ev.subject not in store.loaded or ev.subject not in store.lots_loaded):
                store.preload([ev.subject], [])
        if ev.deferred is not None:  # semantics.md 5 step 1, decided at the row's turn
            failure = _resolve(ev, store)
            if failure is not None:
                out.failures[ev.pos] = failure
                continue
            out.resolved.append(ev.pos)
        emitting.enrol(ev)
        tx = Tx(store, ev.now)
        tx.emitting = emitting
        # everything due for a participant happens before the event first touches it: its
        # subject and recipient now, action targets and transfer recipients when they are named
        tx.touch = _toucher(ev, tx, out.effects, timed)
        tx.touch(ev.subject)
        tx.touch(ev.recipient)
        effects, evals = [], []
        try:
            if ev.operation is not None:
                if ev.subject is not None:  # its due counter resets happen first, as for an event
                    tx.state("PARTICIPANT", ev.subject)
                apply_operation(ev, tx, catalog, effects)
            else:
                _run_event(ev, tx, pre, effects, evals, catalog, out)
        except ActionFailed as f:
            tx.rollback()
            out.failures[ev.pos] = (f.code, f.message)
            out.evaluations += evals
            continue
        tx.commit()
        out.effects += effects
        out.evaluations += evals
        for kind, subject, due, event_json, key in tx.emitted:
            system = emit.Emission(emitting.seq(), 1 + (ev.system.depth if ev.system else 0),
                                   kind == "BROADCAST" or bool(ev.system and ev.system.from_broadcast),
                                   f"system:{emit.event_id(ev.program.sid, ev.key)}", event_json)
            heapq.heappush(emitting.pending, _queued(KernelEvent(
                emitting.pos(), ev.program, subject, None, due, emit.cel_event(event_json), key=key, system=system)))
    out.pending = [q[-1] for q in sorted(emitting.pending)]
    return out


def _queued(ev: KernelEvent) -> tuple:
    """A SYSTEM event's place in the queue: its instant, then its emission order."""
    return (ev.now, ev.system.seq, ev)


def _stream(events: list[KernelEvent], emitting: Emitting, out: KernelResult):
    """The batch's rows merged with the SYSTEM events due by its reach: a SYSTEM event due at t
    comes before the rows timestamped t still to come (docs/decisions.md, "SYSTEM events"),
    after the event that emitted it; SYSTEM events due together come in emission order.
    Those due later stay in `emitting.pending`."""
    queue = emitting.pending
    queue[:] = [q if isinstance(q, tuple) else _queued(q) for q in queue]
    heapq.heapify(queue)
    frontier = -1
    i = 0
    while True:
        row = events[i] if i < len(events) else None
        if queue and (row is None or queue[0][0] <= row.now) and (
                emitting.reach is None or queue[0][0] <= emitting.reach):
            ev = heapq.heappop(queue)[-1]
            ev.at = frontier
            yield ev
        elif row is not None:
            i += 1
            frontier = row.pos
            yield row
        else:
            return


def _resolve(ev: KernelEvent, store: Store) -> tuple[str, str] | None:
    """Step 1 of a deferred row: its participant and recipient exist by now (created by an
    earlier row or action target), or it fails as intake said."""
    missing, found = ev.deferred
    here = all(store.find_id(pid, ev.where) is not None for pid in (ev.subject, ev.recipient) if pid is not None)
    return found if here else missing


def _toucher(ev: KernelEvent, tx: Tx, effects: list, timed: list):
    """touch(participant id): apply the maturities, expiries, counter resets, tier lifecycle
    steps (reviews, rollovers) and tier expiries due by `now` for that participant, once per
    event, to the committed state (semantics.md 3: time-driven changes are not the event's
    doing and stand even if it fails). Every participant the event reads or writes is touched
    first: its subject and recipient, every action target (value actions included), transfer
    recipients, a reversal's redeemer. touch(group id, "GROUP"): a group's due maturities and expiries, when
    an action targets it or an operation names it (docs/decisions.md "Groups": lots of groups)."""
    touched: set[tuple[str, str]] = set()
    store = tx.store

    def touch(eid: str | None, etype: str = "PARTICIPANT") -> None:
        if eid is None or (etype, eid) in touched:
            return
        touched.add((etype, eid))
        apply_holder_due(store, etype, eid, ev.now, timed, effects, ev.pos)
        if etype == "PARTICIPANT":  # groups' counters reset when read (Tx.state)
            tx.state("PARTICIPANT", eid)  # its due counter resets (Tx.state applies them)
    return touch


def apply_holder_due(store: Store, etype: str, eid: str, now: datetime, timed: list, effects: list,
                     pos: int) -> None:
    """The lot maturities and expiries, and (participants) the tier lifecycle steps and tier
    expiries, due by `now` for one holder, committed to `store` (counter resets are applied when
    Tx.state reads the holder). Used before an event touches the holder, and by automations'
    filters and guards, which judge a participant as of the firing instant."""
    for lots in store.holder_lots(etype, eid):
        apply_due(store, lots, now, effects, pos)
    if etype == "PARTICIPANT" and timed:  # groups hold no tiers
        tiers.apply_due(store, timed, eid, now)


def _run_event(ev: KernelEvent, tx: Tx, pre: Precomputed, effects: list, evals: list, catalog,
               counts: KernelResult) -> None:
    program = ev.program
    # due resets happen before anything reads the entities the event touches
    if ev.subject is not None:  # a program event has none
        tx.state("PARTICIPANT", ev.subject)
    if ev.recipient:
        tx.state("PARTICIPANT", ev.recipient)
    tx.state("PROGRAM", program.sid)
    stopped = False
    for rule in program.active_rules:
        if stopped or not _in_window(rule, ev.now):
            continue
        rid = rule.sid
        if ev.system is not None or reads_state(rule.condition):  # SYSTEM events were not there to precompute
            matched, error = _condition(rule.condition, _activation(ev, tx, catalog))
            counts.evaluated += 1
        else:
            matched, error = pre.conditions[rid].get(ev.pos, (False, None))
            counts.looked_up += 1
        if error is not None:
            evals.append(_eval(ev, rule, "SKIPPED_ERROR", error))
            continue
        if not matched:
            continue
        try:
            planned = [_plan_action(ev, tx, pre, rule, a, catalog) for a in rule.actions]
        except ActionFailed:
            evals.append(_eval(ev, rule, "MATCHED", None))  # it matched; its action failed the event
            raise
        if not _take_budget(rule, planned, tx, ev.now):
            evals.append(_eval(ev, rule, "BUDGET_EXCEEDED", None))
            continue
        evals.append(_eval(ev, rule, "MATCHED", None))
        for action, (entity, value) in zip(rule.actions, planned):
            _apply(ev, tx, rule, action, entity, value, effects, catalog)
        tx.activation = None  # later rules see this rule's effects
        if rule.stop_after_match:
            stopped = True
    tiers.refresh(ev, tx)  # ACTIVITY_REFRESH windows restart at a completed event
    tiers.auto_qualify(ev, tx)  # after the rules (semantics.md 5 step 4); a failed event never gets here


def _in_window(rule: CompiledRule, now: datetime) -> bool:
    return (rule.active_from is None or now >= rule.active_from) and (rule.active_to is None or now < rule.active_to)


def _condition(prog: CelProgram, activation: dict) -> tuple[bool, str | None]:
    try:
        value = prog.evaluate(activation)
    except CelEvalError as e:
        return False, str(e)
    if not isinstance(value, bool):
        return False, f"condition must return a bool, got {type_name(value)}"
    return value, None


def _activation(ev: KernelEvent, tx: Tx, catalog: Catalog) -> dict:
    """The CEL variables for this point of the event, built once per rule that changed state."""
    if tx.activation is None:
        tx.activation = _build_activation(ev, tx, catalog)
    return tx.activation


def _build_activation(ev: KernelEvent, tx: Tx, catalog: Catalog) -> dict:
    """`event`, `now`, and the parts of `participant` and `program` the program's rules read
    (engine.reads over-approximates, so a part left out is one no expression can observe)."""
    activation = {"event": ev.event, "now": ev.now,
                  "participant": participant_view(ev.program, tx, ev.subject, ev.program.state_reads["participant"],
                                                  catalog, lapsed=True)}
    if ev.program.state_reads["program"] != {}:
        activation["program"] = program_view(ev.program, tx)
    return activation


def participant_view(program: CompiledProgram, tx: Tx, pid: str, want, catalog: Catalog, lapsed: bool = False) -> dict:
    """CEL's `participant` (semantics.md 6) as of this point of `tx`, with the parts `want`
    (engine.reads) names: the rules' activations, and automation filters and guards. A
    program event (`pid` None) sees EMPTY_PARTICIPANT. `lapsed` (an event's rules): balances
    leave out LOT value already expired (`_balances_view`)."""
    if pid is None:
        return {k: type(v)() for k, v in EMPTY_PARTICIPANT.items()}
    person = tx.store.people[pid]
    st = tx.state("PARTICIPANT", pid)
    participant = {"id": person.id, "external_id": person.external_id, "status": person.status,
                   "created_at": person.created_at}
    if reads_field(want, "tags"):
        participant["tags"] = sorted(st.tags)
    if reads_field(want, "counters"):
        participant["counters"] = {k: float(c.value) for k, c in st.counters.items()}
    if reads_field(want, "attributes"):
        participant["attributes"] = dict(st.attributes)
    if reads_field(want, "tiers"):
        participant["tiers"] = tiers.cel_view(program, st)
    if reads_field(want, "balances"):
        participant["balances"] = {s: _balances_view(tx, pid, catalog, s, lapsed)
                                   for s in keys(want, "balances", list(program.assets))}
    return participant


def _balances_view(tx: Tx, pid: str, catalog: Catalog, symbol: str, lapsed: bool) -> dict:
    """{available, held, deferred} of one asset as CEL sees it: the buckets' balances, and for an
    event's rules (`lapsed`) less what LOT lots past their `expires_at` still hold before their
    expiry entry is written (semantics.md 9.1: never spendable). Only a lot this very event made
    already expired (`expires_at: 0s`, or an instant gone by) can be one: what was due before the
    event was applied when it began (docs/decisions.md "A lot never expires before it exists")."""
    aid = catalog.asset_sids[symbol]
    view = {b: tx.balance(("PARTICIPANT", pid, aid, b)) for b in ("AVAILABLE", "HELD", "DEFERRED")}
    if lapsed and catalog.assets[symbol].inventory_mode == "LOT":
        for lot in tx.lots(("PARTICIPANT", pid, aid)):
            if lot.status in view and lot.remaining > 0 and lot.expired(tx.now):
                view[lot.status] -= lot.remaining
    return {b.lower(): float(v) for b, v in view.items()}


def program_view(program: CompiledProgram, tx: Tx) -> dict:
    """CEL's `program`: its key and program-level state."""
    pst = tx.state("PROGRAM", program.sid)
    return {"key": program.key, "tags": sorted(pst.tags), "counters": {k: float(c.value) for k, c in pst.counters.items()},
            "attributes": dict(pst.attributes)}


def _value(ev: KernelEvent, tx: Tx, pre: Precomputed, rule: CompiledRule, action: CompiledAction, name: str, catalog):
    """A value field for this event: static, precomputed, or evaluated now against state."""
    field_value = getattr(action, name)
    if not isinstance(field_value, CelProgram):
        return field_value
    known = pre.values.get((rule.sid, action.index, name))
    if known is not None and ev.pos in known:
        value, error = known[ev.pos]
    else:
        try:
            value, error = field_value.evaluate(_activation(ev, tx, catalog)), None
        except CelEvalError as e:
            value, error = None, str(e)
    if error is not None:
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"rule {rule.name!r} action {action.index}: expression failed: {error}")
    return value


def _plan_action(ev: KernelEvent, tx: Tx, pre: Precomputed, rule: CompiledRule, action: CompiledAction, catalog):
    """(entity, value) for an action, with its amount checked: every failure of evaluation
    happens here, before budgets are consulted and before anything applies."""
    entity = _entity(ev, tx, rule, action, catalog)
    where = f"rule {rule.name!r} action {action.index}"
    if action.type in VALUE_ACTIONS:
        if action.amount is None:  # HOLD / RELEASE / FORFEIT without one take their whole bucket; VOID_HOLD has none
            return entity, None
        raw = _value(ev, tx, pre, rule, action, "amount", catalog)
        return entity, _amount(raw, action, where)
    if action.type in ("SCHEDULE_EVENT", "BROADCAST"):
        return entity, _emission(ev, tx, pre, rule, action, catalog, where)
    if action.type in ("TAG", "UNTAG"):
        return entity, tag_text(_value(ev, tx, pre, rule, action, "tag", catalog), where)
    if action.type == "COUNTER":
        return entity, counter_value(_value(ev, tx, pre, rule, action, "value", catalog), where)
    if action.type == "SET_TIER":
        raw = _value(ev, tx, pre, rule, action, "level", catalog)
        return entity, tiers.level_key(ev.program.tiers[action.tier], raw, f"{where}: level")
    raw = _value(ev, tx, pre, rule, action, "value", catalog)  # SET_ATTRIBUTE
    return entity, attribute_text(raw, where)


def _emission(ev: KernelEvent, tx: Tx, pre: Precomputed, rule: CompiledRule, action: CompiledAction, catalog,
              where: str) -> tuple[datetime, str]:
    """(due instant, event_data JSON) of the SYSTEM event(s) an action emits; the limits on
    chains of SYSTEM events fail the emitting event here (docs/decisions.md, "SYSTEM events")."""
    depth = ev.system.depth if ev.system else 0
    if depth + 1 > emit.MAX_DEPTH:
        raise ActionFailed(emit.EMISSION_DEPTH, f"{where}: this SYSTEM event is the {depth}th of a chain of SYSTEM "
                                                f"events; at most {emit.MAX_DEPTH} may follow from one input event")
    if action.type == "BROADCAST" and ev.system is not None and ev.system.from_broadcast:
        raise ActionFailed(emit.BROADCAST_LOOP, f"{where}: a SYSTEM event that follows from a BROADCAST cannot "
                                                "BROADCAST again")
    delay = timedelta(0)
    if isinstance(action.delay, timedelta):
        delay = action.delay
    elif action.delay is not None:
        delay = _value(ev, tx, pre, rule, action, "delay", catalog)
        if isinstance(delay, str):  # a Go duration as text (`event.wait` holding "24h"), as expires_at takes one
            try:
                delay = parse_duration(delay)
            except ValueError:
                pass
        if not isinstance(delay, timedelta) or delay < timedelta(0):
            got = format_duration(delay) if isinstance(delay, timedelta) else repr(delay)  # CEL's words, not Python's
            raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: delay must be a duration of at least 0s, got {got}")
    try:
        payload = emit.json_value(_payload(ev, tx, action.payload or {}, catalog, where), f"{where}: payload")
    except emit.PayloadError as e:
        raise ActionFailed(amounts.EXPRESSION_ERROR, str(e)) from None
    try:
        due = later(ev.now, delay)
    except ValueError as exc:
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: delay: {exc}") from None
    return due, emit.payload_json(action.event_name, payload)


def _payload(ev: KernelEvent, tx: Tx, value, catalog, where: str):
    """A compiled payload with its expressions evaluated (against the state at this point)."""
    if isinstance(value, CelProgram):
        try:
            return value.evaluate(_activation(ev, tx, catalog))
        except CelEvalError as e:
            raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: payload expression failed: {e}") from None
    if isinstance(value, dict):
        return {k: _payload(ev, tx, v, catalog, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_payload(ev, tx, v, catalog, where) for v in value]
    return value


def tag_text(raw, where: str) -> str:
    if not isinstance(raw, str):
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: tag must be a string, got {type_name(raw)}")
    if not raw.strip():  # as the tag operation says (it stored a tag '' that no one can name)
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: a tag must be non-empty text, got {raw!r}")
    return raw.lower()


def counter_value(raw, where: str) -> Decimal:
    if isinstance(raw, Decimal):
        value = raw
    else:
        text, err = amounts.python_value_text(raw, "counter value")
        if err:
            raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: {err}")
        value = Decimal(text)
    # a counter is a DECIMAL(38, 18), exact (docs/decisions.md): more decimals are out of its
    # range, as more than 20 integer digits are (the oracle's reading too). 3e-19 was added as 0
    # and 0.1234567890123456789 rounded, silently, and only when the batch was written
    if amounts.fraction_digits(value) > amounts.COUNTER_SCALE:
        raise ActionFailed(amounts.OUT_OF_RANGE, f"{where}: counter value {amounts.shown(amounts.plain(value))} has more "
                                                 f"than {amounts.COUNTER_SCALE} decimals; wrap it in round(x, "
                                                 f"{amounts.COUNTER_SCALE})")
    return value


def _amount(raw, action: CompiledAction, where: str) -> Decimal | None:
    if isinstance(raw, Decimal):
        text = format(raw, "f")
    else:
        text, err = amounts.python_value_text(raw)
        if err:
            raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: amount expression failed: {err}")
    code = amounts.check_text(text, action.asset)
    if code == amounts.ZERO:
        return None
    if code is not None:
        raise ActionFailed(code, f"{where}: {amounts.describe(code, text, action.asset)}")
    return Decimal(text)


def attribute_text(raw, where: str) -> str:
    """The text a number, bool, timestamp or duration is stored as (SET_ATTRIBUTE, set_attribute,
    a reference_id): a number's plain decimal value, where a negative zero is 0 (docs/decisions.md)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, float)):
        text, err = amounts.python_value_text(raw, "attribute value")
        if err:
            raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: {err}")
        raw = Decimal(text)
    if isinstance(raw, Decimal):
        return "0" if raw == 0 else plain(raw)
    if isinstance(raw, timedelta):  # CEL's string(duration): "5400s"
        return format_duration(raw)
    if isinstance(raw, datetime):
        text = raw.astimezone(timezone.utc).isoformat().replace("+00:00", "")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text + "Z"
    raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: attribute value must be text, a number, a bool, a timestamp or a duration, "
                                                 f"got {type_name(raw)}")


def _entity(ev: KernelEvent, tx: Tx, rule: CompiledRule, action: CompiledAction, catalog) -> tuple[str, str]:
    """(entity type, id) the action applies to: its target, else the recipient, else the participant."""
    t: CompiledTarget | None = action.target
    if t is None:
        pid = ev.recipient or ev.subject
        if pid is None and action.type == "SCHEDULE_EVENT":  # a program event schedules one of the program's
            return "PROGRAM", ev.program.sid
        if pid is None and action.type != "BROADCAST":  # a BROADCAST goes to everyone, not to the event's participant
            raise ActionFailed(NO_PARTICIPANT, f"rule {rule.name!r} action {action.index}: a {action.type} for the "
                                               "event's participant, but this program event (an automation with scope "
                                               "program) has none; give a target (PROGRAM, GROUP or a participant)")
        return "PARTICIPANT", pid
    if t.type == "PROGRAM":
        return "PROGRAM", ev.program.sid
    where = f"rule {rule.name!r} action {action.index}: target"
    if t.type == "GROUP":
        ref = _target_ref(ev, tx, catalog, t.group, f"{where}.id")
        group = catalog.resolve_group(ref)
        if group is None:
            raise ActionFailed(GROUP_NOT_FOUND, f"{where}: no group {ref!r} (declare it under `groups`)")
        return "GROUP", group.sid
    ref = _target_ref(ev, tx, catalog, t.external_id if t.external_id is not None else t.participant_id, where)
    store = tx.store
    if t.participant_id is not None:
        found = store.find_id(ref, ev.where)
        if found is None:
            raise ActionFailed(NOT_FOUND, f"{where}: no participant with id {ref}")
        return "PARTICIPANT", found
    if len(ref) > MAX_KEY_LENGTH:  # no participant Scrip could hold (1-255), as an input row's id
        raise ActionFailed(EXTERNAL_ID_TOO_LONG, f"{where}.external_id is longer than {MAX_KEY_LENGTH} characters "
                                                 f"({len(ref)}): {ref[:40]!r}...")
    found = store.find_external(ref, ev.where)
    if found is None:
        model = ev.program.model
        if model.on_unknown_participant != "CREATE":
            raise ActionFailed(NOT_FOUND, f"{where}: participant {ref!r} not found (on_unknown_participant: REJECT)")
        # created when the action applies; undone if the event then fails (docs/decisions.md)
        return "NEW_PARTICIPANT", ref
    return "PARTICIPANT", found


def _target_ref(ev: KernelEvent, tx: Tx, catalog, spec, where: str) -> str:
    """A target's id: a literal, or a CEL expression evaluated now, giving non-empty text."""
    if isinstance(spec, CelProgram):
        try:
            ref = spec.evaluate(_activation(ev, tx, catalog))
        except CelEvalError as e:
            raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: {e}") from None
    else:  # a literal id
        ref = spec if isinstance(spec, str) else format(spec, "f")
    # white space alone names nobody, as in an input row's external_id (docs/decisions.md "Input")
    if not isinstance(ref, str) or not ref.strip():
        got = repr(ref) if isinstance(ref, str) else type_name(ref)
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where} must be a non-empty string, got {got}")
    return ref


def _create(tx: Tx, external_id: str, ev: KernelEvent) -> str:
    """Create (and enrol in the event's program: semantics.md 5.1) the participant a target
    names. Unlike the creation of the event's own participant (step 1, which stands), this is
    an action's doing in step 3: if the event fails, both are undone (semantics.md 5 step 5)."""
    existing = tx.store.by_external.get(external_id)
    if existing is not None and tx.store.arrived(existing, ev.where):  # an earlier action of this event created it
        return existing
    person = Person(ids.participant_id_text(external_id), external_id, "ACTIVE", ev.now)
    tx.undo.append(tx.store.create_now(person, ev.program.sid))
    tx.undo.append(tx.emitting.enrol_created(ev.program.sid, person.id, ev.now))
    return person.id


def _take_budget(rule: CompiledRule, planned: list, tx: Tx, now: datetime) -> bool:
    """Consume the rule's budgets for this evaluation, or return False (and consume nothing)
    if any of them would be exceeded."""
    takes = []
    for b in rule.budgets:  # each budget on its own, also two on one asset
        total = sum((v for a, (_, v) in zip(rule.actions, planned)
                     if a.type == "CREDIT" and a.asset_id == b.asset_id and v is not None), Decimal(0))
        key = (rule.sid, b.index, str(b.asset_id), b.period(now))
        if tx.budget_consumed(key) + total > b.limit:
            return False
        takes.append((key, total))
    for key, total in takes:
        tx.consume(key, total)
    return True


def _apply(ev: KernelEvent, tx: Tx, rule: CompiledRule, action: CompiledAction, entity: tuple[str, str], value,
           effects: list, catalog: Catalog) -> None:
    etype, eid = entity
    if etype == "NEW_PARTICIPANT":  # a target that names an unknown external id (docs/decisions.md)
        etype, eid = "PARTICIPANT", _create(tx, eid, ev)
    where = f"rule {rule.name!r} action {action.index}"
    if etype in ("PARTICIPANT", "GROUP"):  # what is due for it happens first, even if it is inactive
        tx.touch(eid, etype)
    if etype == "PARTICIPANT" and action.type in BLOCKED_FOR_INACTIVE:
        person = tx.store.people.get(eid)
        if person is not None and person.status != "ACTIVE":
            raise ActionFailed(INACTIVE, f"{where}: participant {person.external_id} is {person.status}")
    if etype == "GROUP" and action.type in BLOCKED_FOR_INACTIVE:
        group = catalog.groups_by_id[eid]
        if group.status != "ACTIVE":  # docs/decisions.md "Groups": an ARCHIVED group is inactive
            raise ActionFailed(GROUP_INACTIVE, f"{where}: group {group.key} is {group.status}")
    if action.type in VALUE_ACTIONS:
        _apply_value(ev, tx, rule, action, (etype, eid), value, effects, catalog)
        return
    if action.type in ("SCHEDULE_EVENT", "BROADCAST"):  # for the program: a SYSTEM event of no participant
        _emit(ev, tx, rule, action, eid if etype == "PARTICIPANT" else None, value)
        return
    st = tx.state(etype, eid)
    if action.type == "TAG":
        st.tags.add(value)
    elif action.type == "UNTAG":
        st.tags.discard(value)
    elif action.type == "COUNTER":
        c = st.counters.get(action.key)
        if c is None:
            c = st.counters[action.key] = Counter(Decimal(0), action.reset_after, ev.now)
        elif action.reset_after is not None and c.reset_after != action.reset_after:
            c.reset_after = action.reset_after
        if abs(c.value + value) >= amounts.LIMIT:
            raise ActionFailed(amounts.OUT_OF_RANGE, f"{where}: counter {action.key} would exceed "
                                                     f"{amounts.MAX_INTEGER_DIGITS} integer digits")
        c.value += value
    elif action.type == "SET_TIER":
        tiers.set_by_action(tx, ev, action.tier, eid, value)
    else:
        st.attributes[action.key] = value


def _emit(ev: KernelEvent, tx: Tx, rule: CompiledRule, action: CompiledAction, subject: str | None,
          value: tuple[datetime, str]) -> None:
    """Queue the SYSTEM event(s) of the action on the event's transaction: they are emitted
    only if the event completes. SCHEDULE_EVENT: for `subject`, or (None) a program event of
    no participant (docs/decisions.md). BROADCAST: to every participant enrolled in the program so far
    in the stream, at or before the event's `now`, and ACTIVE at that instant, in participant id
    order (Emitting.active_enrolled)."""
    due, event_json = value
    emitter = emit.event_id(ev.program.sid, ev.key)
    if action.type == "SCHEDULE_EVENT":
        if ev.system is not None and any(kind == "SCHEDULE_EVENT" for kind, *_ in tx.emitted):
            raise ActionFailed(emit.FANOUT, f"rule {rule.name!r} action {action.index}: a SYSTEM event may schedule "
                                            "one SYSTEM event, not more")
        tx.emitted.append(("SCHEDULE_EVENT", subject, due, event_json,
                           emit.schedule_key(emitter, rule.version, action.index)))
        return
    for pid in tx.emitting.active_enrolled(tx.store, ev.program.sid, due):
        tx.emitted.append(("BROADCAST", pid, due, event_json, emit.broadcast_key(emitter, rule.version, action.index, pid)))


def _apply_value(ev: KernelEvent, tx: Tx, rule: CompiledRule, action: CompiledAction, entity: tuple[str, str],
                 amount: Decimal | None, effects: list, catalog: Catalog) -> None:
    """Value actions move an amount between two accounts (semantics.md 7 and 8); holds by
    reference, settles and voids are in engine.holds."""
    etype, eid = entity
    asset = action.asset_sid
    issue = source_of_issue(action.asset, ev.program.sid, asset)
    if etype == "PROGRAM":  # its wallet, funded from and returned to issuance (docs/decisions.md "PROGRAM targets")
        etype, issue = "PROGRAM_WALLET", system("SYSTEM_ISSUANCE", asset)
    mine = lambda bucket: (etype, eid, asset, bucket)  # noqa: E731 - the entity's account in a bucket
    kind = action.type
    lot = None
    reference = None if action.reference_id is None else _reference(ev, tx, rule, action, catalog)
    if action.asset.inventory_mode == "LOT":
        lot = lot_spec(ev, rule.version, action.index)
    meta = dict(pos=ev.pos, rule_id=rule.sid, rule_version=rule.version, rule_order=rule.order,
                action_index=action.index, description=action.description or rule.name)
    if kind == "CREDIT":
        source, dest = issue, mine(action.bucket or "AVAILABLE")
        if lot is not None:
            expires_at, matures_at = (_instant(ev, tx, rule, action, name, catalog) for name in ("expires_at", "matures_at"))
            if deferred(matures_at, ev.now):
                dest = mine("DEFERRED")
            lot.update(expires_at=expires_at, matures_at=matures_at, reference_id=reference)
            if reference is not None and dest[3] == "AVAILABLE" and amount is not None:
                holds.settle(tx, effects, issue, dest, amount, action.asset, lot, meta)
                return
    elif kind == "VOID_HOLD":
        holds.void(tx, effects, mine("HELD"), issue, action.asset, lot, reference, meta)
        return
    elif kind == "DEBIT":
        source, dest = mine("AVAILABLE"), issue
    elif kind == "HOLD":
        source, dest = mine("AVAILABLE"), mine("HELD")
        if lot is not None:
            lot["reference_id"] = reference
    else:  # RELEASE, FORFEIT: the forfeit operation's way (engine/operations.py `_between`)
        source = mine("HELD" if kind == "RELEASE" else action.bucket or "AVAILABLE")
        dest = mine("AVAILABLE") if kind == "RELEASE" else system("SYSTEM_BREAKAGE", asset)
        if lot is not None:  # with a reference, only the lots of that reference
            lot["match"] = reference
    if action.amount is None:
        # HOLD / RELEASE / FORFEIT without an amount: everything in the bucket (of the reference),
        # as the operations take it; an amount that evaluates to exactly 0 is a no-op like any
        # other (semantics.md 7), not "everything"
        amount = holds.whole(tx, kind, source, action.asset, reference)
    if amount is None:  # an amount of exactly 0, or nothing to take, is a no-op
        return
    move(tx, effects, source, dest, amount, kind=kind, asset=action.asset, lot=lot,
         overdraft=kind == "DEBIT" and action.allow_negative, **meta)


def _reference(ev: KernelEvent, tx: Tx, rule: CompiledRule, action: CompiledAction, catalog) -> str:
    """reference_id: literal text or a number as written, or a CEL expression giving text or a number."""
    raw = _value(ev, tx, Precomputed(), rule, action, "reference_id", catalog)
    where = f"rule {rule.name!r} action {action.index}: reference_id"
    if isinstance(raw, (int, float, Decimal)) and not isinstance(raw, bool):
        text = attribute_text(raw, where)
    elif isinstance(raw, str):
        text = raw
    else:
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where} must be text or a number, got {type_name(raw)}")
    if not text:
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where} must not be empty")
    return text


def _instant(ev: KernelEvent, tx: Tx, rule: CompiledRule, action: CompiledAction, name: str, catalog) -> datetime | None:
    """expires_at / matures_at: a Go duration from now, an RFC 3339 instant, or a CEL timestamp."""
    spec = getattr(action, name)
    if spec is None:
        return None
    where = f"rule {rule.name!r} action {action.index}: {name}"
    value = spec if isinstance(spec, (timedelta, datetime)) else _value(ev, tx, Precomputed(), rule, action, name,
                                                                         catalog)
    try:
        if isinstance(value, str):  # text from the event (`event.expires_on`) reads as the static forms do
            value = parse_when(value)
        if isinstance(value, (timedelta, datetime)):
            return static_instant(value, ev.now)
    except ValueError as exc:  # unreadable text, or past the last instant the ledger holds
        raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where}: {exc}") from None
    raise ActionFailed(amounts.EXPRESSION_ERROR, f"{where} must be a timestamp, a duration or their text, "
                                                 f"got {type_name(value)}")


def _eval(ev: KernelEvent, rule: CompiledRule, outcome: str, message: str | None) -> dict:
    return {"pos": ev.pos, "rule_id": rule.sid, "rule_version": rule.version, "outcome": outcome, "message": message}

