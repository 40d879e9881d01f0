"""Rule execution for one batch: conditions and amounts, then sequential settlement.

Meaning (semantics.md 5): events in stream order, each against the state left by earlier ones;
rules in ascending `order`; a failing action fails the whole event. How it runs:

1. Conditions and amounts read only `event` and `now` here, so each rule is evaluated over all
   events of its program at once: vectorised through the Polars backend, or on the row path
   (Python closures, per event) when the backend declines an expression or `row_path` is forced.
   Both paths feed the same amount checks in `engine.amounts`.
2. Balances are the only state that can make an action fail (a DEBIT beyond the available
   balance). An optimistic cumulative sum per (entity, asset) finds the entities whose running
   balance would go short; only their events go through the sequential kernel, which applies
   each event's actions in order and rolls back the events that fail. With `row_path` every
   entity goes through the kernel, which is what the differential tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from decimal import Decimal

import polars as pl

from engine import amounts, balance_range, emit, running, setwise_lots
from engine.catalog import Catalog, CompiledAction, CompiledProgram, CompiledRule
from engine.cel import CelEvalError, CelProgram, NotVectorisable, PolarsContext, type_name
from engine.io.events import TS, event_dicts
from engine.kernel import INACTIVE, Emitting, KernelEvent, KernelResult, Precomputed, run_kernel
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.moves import ISSUANCE, INSUFFICIENT, SYSTEM_IDS, insufficient_message
from engine.plan import needs_kernel, reads_state
from engine.state import Store


EFFECT_SCHEMA = {
    "pos": pl.Int64, "rule_id": pl.String, "rule_version": pl.String, "rule_order": pl.Int64,
    "action_index": pl.Int64, "action_type": pl.String, "asset_id": pl.String,
    "amount": amounts.DECIMAL, "allow_negative": pl.Boolean, "description": pl.String,
}
#: Every applied action moves `amount` from one account to another, as a journal entry of its own;
#: a move with a `leg` after 0 adds its destination to the entry of the move before it instead (a
#: transfer's recipients, engine.operations). Null (the set-wise and running paths: no column) is 0.
ACCOUNT_SCHEMA = {"entity_id": pl.String, "from_type": pl.String, "from_id": pl.String, "from_bucket": pl.String,
                  "to_type": pl.String, "to_id": pl.String, "to_bucket": pl.String, "leg": pl.Int64}
#: Time-driven effects (lot expiry, maturity) name their own source, instant and program.
TIMED_SCHEMA = {"source_name": pl.String, "effective_at": pl.Datetime("us", "UTC"), "program_id": pl.String,
                "reference_id": pl.String}  # and the hold reference an entry was correlated to
#: `stage` orders the failures of one rule: 0 while its amounts are evaluated, 1 when its actions
#: apply (the kernel's `_plan_action`, then `_apply`)
FAILURE_SCHEMA = {"pos": pl.Int64, "rule_order": pl.Int64, "stage": pl.Int64, "action_index": pl.Int64,
                  "error_code": pl.String, "error_message": pl.String}
EVAL_SCHEMA = {"pos": pl.Int64, "rule_id": pl.String, "rule_version": pl.String,
               "outcome": pl.String, "message": pl.String}


@dataclass
class Outcome:
    status: pl.DataFrame       # pos, status, error_code, error_message
    effects: pl.DataFrame      # applied actions, in ledger order (EFFECT_SCHEMA + entity_id)
    evaluations: pl.DataFrame  # EVAL_SCHEMA
    vectorised: int = 0        # rule expressions evaluated on the vectorised path
    row_evaluated: int = 0     # ... and on the row path
    sequential_events: int = 0  # events that went through the sequential kernel
    conditions_precomputed: int = 0  # (event, rule) conditions evaluated set-wise before the kernel
    conditions_sequential: int = 0   # ... and evaluated in the kernel against state
    running_rounds: int = 0          # rounds of the running-state path (engine/running.py), if it ran
    resolved: list[int] = field(default_factory=list)  # deferred rows (engine/intake.py) that passed step 1
    system: pl.DataFrame | None = None     # SYSTEM events processed (SYSTEM_SCHEMA), with their outcome
    scheduled: pl.DataFrame | None = None  # SYSTEM events emitted and not yet due (SCHEDULED_SCHEMA)


def execute(events: pl.DataFrame, catalog: Catalog, store: Store, *, row_path: bool = False,
            emitting: Emitting | None = None, sequential: bool = False) -> Outcome:
    """`events`: pos (stream order), program_key, subject_id, recipient_uuid, entity_id,
    pre_code/pre_message (a failure decided before rules, e.g. participant_not_found), `deferred`
    with found_code/found_message (engine/intake.py), event_timestamp, event. `store`: committed
    balances and state, loaded on demand. `emitting`: the SYSTEM events due by the batch's reach
    are loaded into it; with any, or with a program that emits, the batch takes the kernel.
    `sequential`: every event through the kernel, whatever the programs.

    Raises `balance_range.OutOfRange` when a set-wise path (running or set-based) meets a balance
    past DECIMAL(38, 18): the caller runs the chunk again with `sequential`, on a fresh store
    (these paths stage state in it), and the kernel fails the events that would take it there."""
    runnable = events.filter(pl.col("pre_code").is_null())
    keys = runnable["program_key"].unique().to_list()
    kernel_rows = events.filter(pl.col("pre_code").is_null() | pl.col("deferred"))
    if emitting is not None:
        gone = _load_due(emitting, catalog, store)
        if emitting.pending or len(gone):
            return _execute_sequential(events, kernel_rows, catalog, store, row_path, emitting, gone)
    if sequential:
        return _execute_sequential(events, kernel_rows, catalog, store, row_path, emitting)
    # a program event (scope program automation) has no participant: only the kernel knows one
    nobody = bool(runnable.filter(pl.col("kind") == "event")["subject_id"].is_null().any())
    if nobody or (runnable["kind"] == "operation").any() or any(needs_kernel(catalog.programs[k]) for k in keys):
        if (not nobody and not row_path and len(runnable) >= running.MIN_EVENTS
                and running.unsupported(runnable, catalog) is None):
            with balance_range.overflow_is_out_of_range():
                done = running.run(runnable, catalog, store, HELPERS)
                if done is not None:
                    outcome = _finish(events, done.effects.sort("pos", "rule_order", "action_index"), done.status,
                                      done.evaluations, _Stats())
                    outcome.effects = setwise_lots.settle(outcome.effects, runnable, catalog, store)
                    balance_range.check(outcome.effects, store.con, done.rolled_back)
            if done is not None:
                # the running path resets its participants' counters itself; not their programs'
                _reset_due_counters(runnable, store, participants=False)
                outcome.conditions_precomputed, outcome.running_rounds = done.conditions, done.rounds
                return outcome
        # deferred rows are decided at their turn in the kernel; elsewhere no action target
        # creates participants (programs with targets take the kernel), so intake's failure stands
        return _execute_sequential(events, kernel_rows, catalog, store, row_path, emitting)
    with balance_range.overflow_is_out_of_range():
        outcome = _execute_setwise(events, runnable, catalog, store, row_path)
    # no rule here reads or writes counters, but those of the entities the events touch, due to
    # reset by now, reset all the same (stored state shows them, as after the kernel's Tx.state)
    _reset_due_counters(runnable, store)
    return outcome


def _execute_setwise(events: pl.DataFrame, runnable: pl.DataFrame, catalog: Catalog, store: Store,
                     row_path: bool) -> Outcome:
    """Stateless programs: every rule over all its program's events at once, debits settled
    set-wise (`_settle`); raises balance_range.OutOfRange as `execute` says."""
    # Only the opening balances matter here (debits are settled set-wise): one query, not the
    # store's full per-entity state.
    opening = db.frame(store.con, statement("lookups.sql", "opening_balances"),
                       stage_entities=runnable.select(id=pl.col("entity_id").unique().drop_nulls())
                       ).cast({"amount": amounts.DECIMAL})
    # no operation is in such a batch, so a participant's status is its committed one throughout
    inactive = db.frame(store.con, statement("lookups.sql", "participants_by_id"),
                        stage_entities=runnable.select(id=pl.col("entity_id").unique().drop_nulls())
                        ).filter(pl.col("status") != "ACTIVE")
    stats = _Stats()
    effects, failures, evals = [], [], []
    for key, sub in runnable.group_by("program_key", maintain_order=True):
        program = catalog.programs[key[0]]
        e, f, v = _evaluate_program(sub, program, row_path, stats, inactive)
        effects += e
        failures += f
        evals += v
    eff = _concat(effects, EFFECT_SCHEMA)
    fail = _concat(failures, FAILURE_SCHEMA)
    # An event with any failed action applies nothing; report its first failure.
    first_fail = fail.sort("pos", "rule_order", "stage", "action_index").unique("pos", keep="first",
                                                                              maintain_order=True)
    # The rules before an event's failing one still ran, one event at a time: a debit among them
    # that goes short fails the event first (insufficient_balance), so they are settled too, as
    # `doomed` effects that are checked but never applied. The failing rule's own debits never
    # applied: a rule evaluates all its actions' amounts before the first applies (semantics.md
    # 5 step 3, the kernel's `_plan_action`), and every failure here is such an evaluation.
    at = first_fail.select("pos", _fo="rule_order")
    doomed = eff.join(at, on="pos").filter(pl.col("rule_order") < pl.col("_fo")).drop("_fo")
    eff = pl.concat([eff.join(at.select("pos"), on="pos", how="anti").with_columns(doomed=pl.lit(False)),
                     doomed.with_columns(doomed=pl.lit(True))])
    eff = eff.join(events.select("pos", "entity_id"), on="pos").sort("pos", "rule_order", "action_index")
    moved = eff
    eff, short = _settle(moved, opening, catalog, row_path)
    fail_all = pl.concat([
        short,  # a short debit comes before the failing action of its event (see `doomed`)
        first_fail.join(short.select("pos"), on="pos", how="anti").select(
            "pos", "error_code", "error_message", "rule_order"),
    ])
    outcome = _finish(events, eff, fail_all, _concat(evals, EVAL_SCHEMA | {"rule_order": pl.Int64}), stats)
    # lots the batch's participants hold (of other programs' LOT assets) mature and expire as its
    # events touch them
    outcome.effects = setwise_lots.settle(outcome.effects, runnable, catalog, store)
    # what the failed events moved before they failed (doomed, or before their short debit) counts too
    rolled_back = moved.filter(pl.col("doomed") | pl.col("pos").is_in(short["pos"].implode()))["amount"]
    balance_range.check(outcome.effects, store.con, rolled_back)
    return outcome


def _reset_due_counters(runnable: pl.DataFrame, store: Store, *, participants: bool = True) -> None:
    """On the set-wise paths: the due counter resets of the entities the events touch -- their
    participant and recipient (unless the running path did those), their program -- failed
    events too (semantics.md 3), in `store` for the state write. Nothing on these paths writes
    the counters reset here, so the resets due by the latest instant an entity is touched at are
    all it gets (Store.reset_counters); a batch with no reset due by its last instant skips it."""
    if runnable.is_empty():
        return
    until = runnable["event_timestamp"].max()
    if not store.con.execute(statement("lookups.sql", "any_counter_due"), {"until": until}).fetchall()[0][0]:
        return
    cols = (["subject_id", "recipient_uuid"] if participants else []) + ["program_uuid"]
    touches = (pl.concat([runnable.select(id=pl.col(c).cast(pl.String), now="event_timestamp") for c in cols])
               .drop_nulls("id").group_by("id").agg(pl.col("now").max()))
    store.reset_touched_counters(touches)


def _finish(events: pl.DataFrame, eff: pl.DataFrame, failures: pl.DataFrame, evals: pl.DataFrame,
            stats: _Stats) -> Outcome:
    """The Outcome of the set-wise paths: `eff` applied CREDIT/DEBIT effects in ledger order (with
    entity_id), `failures` (pos, error_code, error_message, rule_order) of failed runnable events."""
    credit = pl.col("action_type") == "CREDIT"
    # CREDIT: issuance -> participant; DEBIT: back to issuance. Of a PREFUNDED asset (the running
    # path's `wallet_id`), the program wallet stands for issuance (moves.source_of_issue).
    wallet = pl.col("wallet_id") if "wallet_id" in eff.columns else pl.lit(None, dtype=pl.String)
    issue_type = pl.when(wallet.is_null()).then(pl.lit("SYSTEM_ISSUANCE")).otherwise(pl.lit("PROGRAM_WALLET"))
    issue_id = pl.coalesce(wallet, pl.lit(ISSUANCE))
    eff = eff.with_columns(
        from_type=pl.when(credit).then(issue_type).otherwise(pl.lit("PARTICIPANT")),
        from_id=pl.when(credit).then(issue_id).otherwise(pl.col("entity_id")),
        from_bucket=pl.lit("AVAILABLE"),
        to_type=pl.when(credit).then(pl.lit("PARTICIPANT")).otherwise(issue_type),
        to_id=pl.when(credit).then(pl.col("entity_id")).otherwise(issue_id),
        to_bucket=pl.lit("AVAILABLE"),
        **{name: pl.lit(None, dtype=dtype) for name, dtype in TIMED_SCHEMA.items()},
    ).drop("wallet_id", strict=False)
    fail_all = pl.concat([
        failures,
        events.filter(pl.col("pre_code").is_not_null()).select(
            "pos", error_code="pre_code", error_message="pre_message", rule_order=pl.lit(None, dtype=pl.Int64)),
    ])
    status = events.select("pos").join(fail_all.drop("rule_order"), on="pos", how="left").with_columns(
        status=pl.when(pl.col("error_code").is_null()).then(pl.lit("COMPLETED")).otherwise(pl.lit("FAILED"))
    )
    # One event at a time, a failing action ends the event: the rules after it were never
    # evaluated, so their (set-wise computed) evaluations are not recorded.
    evaluations = (evals
                   .join(fail_all.select("pos", failed_at="rule_order"), on="pos", how="left")
                   .filter(pl.col("failed_at").is_null() | (pl.col("rule_order") <= pl.col("failed_at")))
                   .select(list(EVAL_SCHEMA)))
    return Outcome(status=status, effects=eff, evaluations=evaluations,
                   vectorised=stats.vectorised, row_evaluated=stats.row)


def _execute_sequential(events: pl.DataFrame, runnable: pl.DataFrame, catalog: Catalog, store: Store,
                        row_path: bool, emitting: Emitting | None = None, gone: pl.DataFrame | None = None) -> Outcome:
    """Every runnable event through the kernel, in stream order; the stateless conditions and
    amounts of every program are computed beforehand, vectorised where possible."""
    stats = _Stats()
    pre = Precomputed()
    kernel_events: list[KernelEvent] = []
    for (key, kind), sub in runnable.group_by("program_key", "kind", maintain_order=True):
        program = catalog.programs[key]
        if kind == "event":  # rules apply to events; operations carry their own meaning
            _precompute(_Frame(sub), program, pre, stats, row_path)
        dicts = event_dicts(sub["event"]) if kind == "event" else sub["params"].to_list()
        for pos, subject, recipient, now, ev, op, key, deferred in zip(
                sub["pos"], sub["subject_id"], sub["recipient_uuid"], sub["event_timestamp"], dicts, sub["operation"],
                sub["idempotency_key"], _deferrals(sub)):
            kernel_events.append(KernelEvent(pos, program, subject, recipient, now, ev or {}, op, key, deferred))
    kernel_events.sort(key=lambda e: e.pos)
    entity_ids = pl.concat([runnable["subject_id"], runnable["recipient_uuid"]]).drop_nulls().unique().to_list()
    # the system accounts too: their stored balances bound what the batch may add (moves.out_of_range)
    store.preload(entity_ids + [str(catalog.programs[k].id) for k in catalog.programs]
                  + [g.sid for g in catalog.groups.values()] + list(SYSTEM_IDS), [])
    result = run_kernel(kernel_events, catalog, store, pre, emitting)
    failures = [(pos, code, msg) for pos, (code, msg) in result.failures.items()]
    fail_all = pl.concat([
        pl.DataFrame(failures, schema={"pos": pl.Int64, "error_code": pl.String, "error_message": pl.String}, orient="row"),
        events.filter(pl.col("pre_code").is_not_null() & ~pl.col("deferred")).select(
            "pos", error_code="pre_code", error_message="pre_message"),
    ])
    status = events.select("pos").join(fail_all, on="pos", how="left").with_columns(
        status=pl.when(pl.col("error_code").is_null()).then(pl.lit("COMPLETED")).otherwise(pl.lit("FAILED")))
    eff = pl.DataFrame(result.effects, schema=EFFECT_SCHEMA | ACCOUNT_SCHEMA | TIMED_SCHEMA)
    evals = pl.DataFrame(result.evaluations, schema=EVAL_SCHEMA)
    outcome = Outcome(status=status, effects=eff, evaluations=evals, vectorised=stats.vectorised,
                      row_evaluated=stats.row, sequential_events=len(kernel_events),
                      conditions_precomputed=result.looked_up, conditions_sequential=result.evaluated,
                      resolved=result.resolved)
    if emitting is not None:
        system_outcome(outcome, result, emitting, store, gone)
    return outcome


#: A processed SYSTEM event, in the columns run._stages reads from the batch's rows.
SYSTEM_SCHEMA = {"pos": pl.Int64, "kind": pl.String, "program_uuid": pl.String, "program_key": pl.String,
                 "idempotency_key": pl.String, "subject_id": pl.String, "external_id": pl.String,
                 "event_timestamp": pl.Datetime("us", "UTC"), "arrival": pl.Int64, "event_json": pl.String,
                 "status": pl.String, "error_code": pl.String, "error_message": pl.String, "source": pl.String,
                 "row_number": pl.Int64}
#: A SYSTEM event waiting in `scheduled_events` (sql/write_batch.sql).
SCHEDULED_SCHEMA = {"program_id": pl.String, "idempotency_key": pl.String, "participant_id": pl.String,
                    "event_timestamp": pl.Datetime("us", "UTC"), "event_json": pl.String, "emit_seq": pl.Int64,
                    "depth": pl.Int32, "from_broadcast": pl.Boolean, "source": pl.String}


def _load_due(emitting: Emitting, catalog: Catalog, store: Store) -> pl.DataFrame:
    """Put the SYSTEM events waiting in `scheduled_events` and due by the reach into
    `emitting.pending`; returns those of programs no longer in the program files (SCHEDULED_SCHEMA),
    which fail (`unknown_program`) rather than wait forever."""
    if emitting.reach is None:
        return pl.DataFrame(schema=SCHEDULED_SCHEMA)
    due = db.frame(store.con, statement("lookups.sql", "due_scheduled_events"), {"reach": emitting.reach})
    due = due.cast({k: v for k, v in SCHEDULED_SCHEMA.items() if k in due.columns})
    by_id = {p.sid: p for p in catalog.programs.values()}
    for program_id, key, pid, due_at, event_json, seq, depth, from_broadcast, source in due.select(
            list(SCHEDULED_SCHEMA)).iter_rows():
        program = by_id.get(program_id)
        if program is not None:
            emitting.pending.append(KernelEvent(
                emitting.pos(), program, pid, None, due_at, emit.cel_event(event_json), key=key,
                system=emit.Emission(seq, depth, from_broadcast, source, event_json)))
    return due.filter(~pl.col("program_id").is_in(list(by_id)))


def system_outcome(outcome: Outcome, result: KernelResult, emitting: Emitting, store: Store,
                   gone: pl.DataFrame | None) -> None:
    """The SYSTEM events of a kernel run as rows (`outcome.system`), those still waiting
    (`outcome.scheduled`), and the effects ranked in processing order (`rank`: the ledger's
    order, SYSTEM events interleaved with the rows)."""
    base = emitting.batch_id << 32
    rows = [(ev.pos, "event", ev.program.sid, ev.program.key, ev.key, ev.subject,
             store.people[ev.subject].external_id if ev.subject in store.people else None, ev.now,
             ev.system.seq - base, ev.system.event_json, *(("FAILED", *result.failures[ev.pos])
                                                            if ev.pos in result.failures else ("COMPLETED", None, None)),
             ev.system.source, 0)
            for ev in result.system]
    if gone is not None:
        for program_id, key, pid, due_at, event_json, seq, _, _, source in gone.select(list(SCHEDULED_SCHEMA)).iter_rows():
            rows.append((emitting.pos(), "event", program_id, None, key, pid, None, due_at, seq - base, event_json,
                         "FAILED", "unknown_program", f"program {program_id} is not defined in the program files",
                         source, 0))
    outcome.system = pl.DataFrame(rows, schema=SYSTEM_SCHEMA, orient="row")
    outcome.scheduled = pl.DataFrame(
        [(ev.program.sid, ev.key, ev.subject, ev.now, ev.system.event_json, ev.system.seq, ev.system.depth,
          ev.system.from_broadcast, ev.system.source) for ev in result.pending],
        schema=SCHEDULED_SCHEMA, orient="row")
    rank = pl.DataFrame({"pos": result.order, "rank": range(len(result.order))},
                        schema={"pos": pl.Int64, "rank": pl.Int64})
    outcome.effects = outcome.effects.join(rank, on="pos", how="left", maintain_order="left")


def _deferrals(sub: pl.DataFrame) -> list:
    """Per row, KernelEvent.deferred: None, or (intake's failure, the outcome if found)."""
    if not sub["deferred"].any():
        return [None] * len(sub)
    return [((code, message), None if found is None else (found, found_message)) if deferred else None
            for deferred, code, message, found, found_message in sub.select(
                "deferred", "pre_code", "pre_message", "found_code", "found_message").iter_rows()]


def _precompute(frame: _Frame, program: CompiledProgram, pre: Precomputed, stats: _Stats, row_path: bool) -> None:
    """Conditions and CREDIT/DEBIT amounts that read only `event` and `now`, for the kernel."""
    pos = frame.df["pos"].to_list()
    for rule in program.active_rules:
        if reads_state(rule.condition):
            continue
        matched, errored, messages = _condition(frame, rule, stats, row_path)
        msgs = messages.to_list() if messages is not None else None
        table = {}
        for i in (matched | errored).arg_true().to_list():
            table[pos[i]] = (bool(matched[i]), msgs[i] if msgs is not None and errored[i] else None)
        pre.conditions[str(rule.id)] = table
        if not matched.any():
            continue
        matched_pos = [pos[i] for i in matched.arg_true().to_list()]
        for action in rule.actions:
            if not isinstance(action.amount, CelProgram) or reads_state(action.amount):
                continue
            values, errors = _raw_values(frame, action.amount, matched, stats, row_path)
            pre.values[(str(rule.id), action.index, "amount")] = dict(zip(matched_pos, zip(values, errors)))


def _raw_values(frame: _Frame, prog: CelProgram, mask: pl.Series, stats: _Stats, row_path: bool):
    """(values, errors) of an expression over the masked rows, as Python values."""
    values = frame.vectorised(prog, mask, row_path)
    if values is not None and (values.dtype.is_integer() or values.dtype.is_float()):
        stats.vectorised += 1
        out = values.to_list()
        errors = [None] * len(out)
        missing = values.is_null()
        if missing.any():  # the row path decides: why, in its words (or its value: a CEL null in a list)
            idx = mask.arg_true().filter(missing)
            sub = pl.Series([False] * len(mask)).scatter(idx, True)
            vals, errs = _row_eval(prog, frame.activations(sub))
            for j, v, e in zip(missing.arg_true().to_list(), vals, errs):
                out[j], errors[j] = v, e
        return out, errors
    stats.row += 1
    return _row_eval(prog, frame.activations(mask))


@dataclass
class _Stats:
    vectorised: int = 0
    row: int = 0


class _Frame:
    """One program's events, with the row path's inputs built only if some rule needs them."""

    def __init__(self, df: pl.DataFrame):
        self.df = df
        self._dicts: list | None = None
        dtype = df.schema["event"]
        self.ctx = None if dtype == pl.Object else PolarsContext(
            variables={"event": (pl.col("event"), dtype), "now": (pl.col("event_timestamp"), TS)})

    def activations(self, mask: pl.Series | None = None) -> list[dict]:
        if self._dicts is None:
            self._dicts = [
                {"event": ev, "now": now}
                for ev, now in zip(event_dicts(self.df["event"]), self.df["event_timestamp"].to_list())
            ]
        if mask is None:
            return self._dicts
        return [self._dicts[i] for i in mask.arg_true().to_list()]

    def vectorised(self, prog: CelProgram, mask: pl.Series | None, row_path: bool) -> pl.Series | None:
        """The expression over (the masked) rows, or None when it must take the row path."""
        if row_path or self.ctx is None:
            return None
        try:
            expr = prog.to_polars(self.ctx)
        except NotVectorisable:
            return None
        df = self.df if mask is None else self.df.filter(mask)
        # with_columns broadcasts a constant result (e.g. an all-error literal) to every row
        return df.with_columns(expr.alias("__value"))["__value"]


def _row_eval(prog: CelProgram, activations: list[dict]) -> tuple[list, list[str | None]]:
    values, errors = [], []
    for act in activations:
        try:
            values.append(prog.evaluate(act))
            errors.append(None)
        except CelEvalError as e:
            values.append(None)
            errors.append(str(e))
    return values, errors


def _evaluate_program(sub: pl.DataFrame, program: CompiledProgram, row_path: bool, stats: _Stats,
                      inactive: pl.DataFrame):
    """`inactive`: id, external_id, status of the participants here that are not ACTIVE."""
    frame = _Frame(sub)
    pos = sub["pos"]
    n = len(sub)
    stopped = pl.Series([False] * n)
    # CREDIT and DEBIT (every action of a program here) fail for a participant that is not ACTIVE
    # (semantics.md 7), the first that applies: the first action of its first matching rule
    who = sub.select("pos", "entity_id").join(inactive.rename({"id": "entity_id"}), on="entity_id", how="left",
                                              maintain_order="left")  # row-aligned with `matched`
    blocked_rows = who["status"].is_not_null()
    effects, failures, evals = [], [], []
    for rule in program.active_rules:
        window = _window(sub, rule)
        live = window & ~stopped
        if not live.any():
            continue
        matched, errored, messages = _condition(frame, rule, stats, row_path)
        matched = matched & live
        errored = errored & live
        evals.append(_eval_rows(pos, matched, rule, "MATCHED", None))
        if errored.any():
            evals.append(_eval_rows(pos, errored, rule, "SKIPPED_ERROR", messages))
        if rule.stop_after_match:
            stopped = stopped | matched
        if not matched.any():
            continue
        for action in rule.actions:
            eff, fail = _action(frame, matched, rule, action, stats, row_path)
            effects.append(eff)
            failures.append(fail)
        if rule.actions and (matched & blocked_rows).any():
            first = rule.actions[0].index
            failures.append(who.filter(matched & blocked_rows).select(
                "pos", rule_order=pl.lit(rule.order, dtype=pl.Int64), stage=pl.lit(1, dtype=pl.Int64),
                action_index=pl.lit(first, dtype=pl.Int64), error_code=pl.lit(INACTIVE),
                error_message=pl.concat_str(pl.lit(f"rule {rule.name!r} action {first}: participant "),
                                            "external_id", pl.lit(" is "), "status")))
    return effects, failures, evals


def _window(sub: pl.DataFrame, rule: CompiledRule) -> pl.Series:
    cond = pl.lit(True)
    if rule.active_from is not None:
        cond = cond & (pl.col("event_timestamp") >= pl.lit(rule.active_from).cast(TS))
    if rule.active_to is not None:
        cond = cond & (pl.col("event_timestamp") < pl.lit(rule.active_to).cast(TS))
    return sub.select(cond.alias("w")).to_series()


def _condition(frame: _Frame, rule: CompiledRule, stats: _Stats, row_path: bool):
    """(matched, errored, messages): an error or a non-bool result is false, and recorded.
    Messages always come from the row path, so that both paths record the same text."""
    values = frame.vectorised(rule.condition, None, row_path)
    if values is not None and values.dtype == pl.Boolean:
        stats.vectorised += 1
        return settle_nulls(values, lambda mask: _row_eval(rule.condition, frame.activations(mask)))
    stats.row += 1
    vals, errs = _row_eval(rule.condition, frame.activations())
    errs = condition_errors(vals, errs)
    matched = pl.Series([v is True and e is None for v, e in zip(vals, errs)], dtype=pl.Boolean)
    errored = pl.Series([e is not None for e in errs], dtype=pl.Boolean)
    return matched, errored, pl.Series(errs, dtype=pl.String)


def condition_errors(vals: list, errs: list) -> list:
    """The row path's errors of a condition, a result that is not a bool being one."""
    return [e if e is not None or isinstance(v, bool) else f"condition must return a bool, got {type_name(v)}"
            for v, e in zip(vals, errs)]


def settle_nulls(values: pl.Series, row_eval) -> tuple[pl.Series, pl.Series, pl.Series | None]:
    """(matched, errored, messages) of a vectorised condition. A null there is an error *or* a
    CEL null the columns cannot tell from one (an element of a list: `[1, null, 3][1] == 1` is
    false, `!= 1` true), so the row path (`row_eval(mask) -> (values, errors)`) decides the null
    rows: their outcome and message are its own (semantics.md 1.4: one meaning on every path)."""
    matched, errored = values.fill_null(False), values.is_null()
    if not errored.any():
        return matched, errored, None
    vals, errs = row_eval(errored)
    errs = condition_errors(vals, errs)
    idx = errored.arg_true()
    matched = matched.scatter(idx, pl.Series([v is True and e is None for v, e in zip(vals, errs)], dtype=pl.Boolean))
    messages = pl.Series([None] * len(values), dtype=pl.String).scatter(idx, pl.Series(errs, dtype=pl.String))
    return matched, messages.is_not_null(), messages


def _scatter(mask: pl.Series, values: list) -> pl.Series:
    out = pl.Series([None] * len(mask), dtype=pl.String)
    return out.scatter(mask.arg_true(), pl.Series(values, dtype=pl.String)) if len(values) else out


def _eval_rows(pos: pl.Series, mask: pl.Series, rule: CompiledRule, outcome: str, messages: pl.Series | None) -> pl.DataFrame:
    df = pl.DataFrame({"pos": pos, "message": messages if messages is not None else pl.Series([None] * len(pos), dtype=pl.String)})
    return df.filter(mask).select(
        "pos", rule_id=pl.lit(str(rule.id)), rule_version=pl.lit(rule.version),
        outcome=pl.lit(outcome), message="message", rule_order=pl.lit(rule.order, dtype=pl.Int64))


def _action(frame: _Frame, matched: pl.Series, rule: CompiledRule, action: CompiledAction, stats: _Stats, row_path: bool):
    """Effects (valid, non-zero amounts) and failures for one action over the matched events."""
    pos = frame.df["pos"].filter(matched)
    code, message, amount = _amounts(frame, matched, action, stats, row_path)
    base = pl.DataFrame({"pos": pos, "code": code, "message": message, "amount": amount}).with_columns(
        rule_order=pl.lit(rule.order, dtype=pl.Int64), action_index=pl.lit(action.index, dtype=pl.Int64))
    eff = base.filter(pl.col("code").is_null()).select(
        "pos", rule_id=pl.lit(str(rule.id)), rule_version=pl.lit(rule.version), rule_order="rule_order",
        action_index="action_index", action_type=pl.lit(action.type), asset_id=pl.lit(str(action.asset_id)),
        amount=pl.col("amount").cast(amounts.DECIMAL), allow_negative=pl.lit(action.allow_negative),
        description=pl.lit(action.description or rule.name, dtype=pl.String))
    fail = base.filter(pl.col("code").is_not_null() & (pl.col("code") != amounts.ZERO)).select(
        "pos", "rule_order", stage=pl.lit(0, dtype=pl.Int64), action_index="action_index", error_code="code",
        error_message=pl.concat_str(pl.lit(f"rule {rule.name!r} action {action.index}: "), pl.col("message")))
    return eff, fail


def _amounts(frame: _Frame, matched: pl.Series, action: CompiledAction, stats: _Stats, row_path: bool):
    """(code, message, DECIMAL amount) per matched event. An expression that fails to evaluate
    is worded as the kernel words it ("expression failed: ..."; a value that is no amount:
    "amount expression failed: ..."), so that a program's failed events say the same on the
    running-state path and per row (they said "amount expression failed: no such key")."""
    k = int(matched.sum())
    asset = action.asset
    cel_errors: list[tuple[int, str]] = []  # (matched row, evaluation error)
    if isinstance(action.amount, Decimal):
        text = pl.Series([format(action.amount, "f")] * k, dtype=pl.String)
        err = pl.Series([None] * k, dtype=pl.String)
    else:
        values = frame.vectorised(action.amount, matched, row_path)
        if values is not None and (values.dtype.is_integer() or values.dtype.is_float()):
            stats.vectorised += 1
            text, err = amounts.series_text(values)
            missing = values.is_null()
            if missing.any():  # the row path decides: why, in its words (or its value: a CEL null in a list)
                idx = matched.arg_true().filter(missing)
                mask = pl.Series([False] * len(matched)).scatter(idx, True)
                vals, errs = _row_eval(action.amount, frame.activations(mask))
                pairs = [amounts.python_value_text(v) if e is None else (None, e) for v, e in zip(vals, errs)]
                text = text.scatter(missing.arg_true(), pl.Series([p[0] for p in pairs], dtype=pl.String))
                err = err.scatter(missing.arg_true(), pl.Series([p[1] for p in pairs], dtype=pl.String))
                cel_errors = [(j, e) for j, e in zip(missing.arg_true().to_list(), errs) if e is not None]
        else:
            stats.row += 1
            vals, errs = _row_eval(action.amount, frame.activations(matched))
            pairs = [amounts.python_value_text(v) if e is None else (None, e) for v, e in zip(vals, errs)]
            text = pl.Series([p[0] for p in pairs], dtype=pl.String)
            err = pl.Series([p[1] for p in pairs], dtype=pl.String)
            cel_errors = [(j, e) for j, e in enumerate(errs) if e is not None]
    code, value = amounts.check(text, asset)
    if err.null_count() == len(err) and code.null_count() == len(code):
        return code, pl.Series([None] * len(code), dtype=pl.String), value
    codes, messages = amounts.failures(err.to_list(), code.to_list(), text.to_list(), asset)
    for j, e in cel_errors:
        messages[j] = f"expression failed: {e}"
    return pl.Series(codes, dtype=pl.String), pl.Series(messages, dtype=pl.String), value


def _settle(eff: pl.DataFrame, opening: pl.DataFrame, catalog: Catalog, row_path: bool):
    """Apply balance sufficiency in stream order. Returns (applied effects, failures). Doomed
    effects (of events failing later anyway) move no balance; their entities go to the kernel."""
    signed = (pl.when(pl.col("doomed")).then(pl.lit(0))
              .when(pl.col("action_type") == "DEBIT").then(-pl.col("amount")).otherwise(pl.col("amount")))
    withbal = (
        eff.with_row_index("_i")
        .join(opening.rename({"amount": "_open"}), on=["entity_id", "asset_id"], how="left")
        .sort("_i")
        .with_columns(_run=pl.col("_open").fill_null(0).cast(amounts.DECIMAL)
                      + signed.cum_sum().over("entity_id", "asset_id"))
    )
    if row_path:
        suspects = withbal["entity_id"].unique()
    else:
        debit = (pl.col("action_type") == "DEBIT") & ~pl.col("allow_negative")
        short = withbal.filter(debit & ((pl.col("_run") < 0) | pl.col("doomed")))
        suspects = short["entity_id"].unique()
    failure_schema = {"pos": pl.Int64, "error_code": pl.String, "error_message": pl.String, "rule_order": pl.Int64}
    applied = eff.filter(~pl.col("doomed")).drop("doomed")
    if len(suspects) == 0:
        return applied, pl.DataFrame(schema=failure_schema)
    # Events touching a suspect entity go through the kernel, with every account they touch.
    suspect_pos = eff.filter(pl.col("entity_id").is_in(suspects.implode()))["pos"].unique()
    todo = eff.filter(pl.col("pos").is_in(suspect_pos.implode()))
    failed = _kernel(todo, opening, catalog)
    failures = pl.DataFrame(
        [(pos, INSUFFICIENT, message, order) for pos, (message, order) in failed.items()],
        schema=failure_schema, orient="row")
    return applied.filter(~pl.col("pos").is_in(failures["pos"].implode())), failures


def _kernel(todo: pl.DataFrame, opening: pl.DataFrame, catalog: Catalog) -> dict[int, tuple[str, int]]:
    """One event at a time: apply its actions in order, roll it back if a debit goes short (a
    doomed event is always rolled back). Returns pos -> (message, order of the rule whose debit failed).
    A balance it would take past DECIMAL(38, 18) is found by balance_range.check afterwards."""
    symbols = {str(i): s for s, i in catalog.asset_ids.items()}
    entities = set(todo["entity_id"].unique().to_list())
    balance: dict[tuple[str, str], Decimal] = {
        (e, a): amt for e, a, amt in opening.filter(pl.col("entity_id").is_in(list(entities))).iter_rows()
    }
    failed: dict[int, tuple[str, int]] = {}
    current_pos, trial, ok, keep = None, {}, True, True

    def close() -> None:
        if current_pos is not None and ok and keep:
            balance.update(trial)

    for pos, typ, entity, asset, amount, allow_negative, order, doomed in todo.select(
        "pos", "action_type", "entity_id", "asset_id", "amount", "allow_negative", "rule_order", "doomed"
    ).iter_rows():
        if pos != current_pos:
            close()
            current_pos, trial, ok, keep = pos, {}, True, not doomed
        if not ok:
            continue
        key = (entity, asset)
        have = trial.get(key, balance.get(key, Decimal(0)))
        new = have - amount if typ == "DEBIT" else have + amount
        if typ == "DEBIT" and not allow_negative and new < 0:
            ok = False
            failed[pos] = (insufficient_message("DEBIT", ("PARTICIPANT", entity, asset, "AVAILABLE"),
                                                symbols.get(asset, asset), have, amount), order)
            continue
        trial[key] = new
    close()
    return failed


def _concat(frames: list[pl.DataFrame], schema: dict) -> pl.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.select([pl.col(c).cast(t) for c, t in schema.items()]) for f in frames])


#: What the running-state path (engine/running.py) shares with the set-wise path here.
HELPERS = SimpleNamespace(
    Frame=_Frame, Stats=_Stats, window=_window, condition=_condition, amounts=_amounts, row_eval=_row_eval,
    scatter=_scatter, settle_nulls=settle_nulls, condition_errors=condition_errors, eval_rows=_eval_rows, concat=_concat, event_dicts=event_dicts,
    EFFECT_SCHEMA=EFFECT_SCHEMA, EVAL_SCHEMA=EVAL_SCHEMA)
