"""Which path each rule takes, and why (`perkflow explain-plan`).

- **vectorised**: the condition (and every amount) reads only `event` and `now`, and the Polars
  backend expresses it exactly: one pass over all events of the program.
- **row**: it reads only `event` and `now`, but the Polars backend declines an expression:
  evaluated per event by the row backend, still ahead of the sequential pass.
- **running**: it reads participant state that is a running function of earlier events
  (counters, tags, attributes, balances, tiers, budgets): evaluated set-wise against that state,
  computed with running sums and last writes, to a fixed point (engine/running.py). A batch with
  operations or recipients, one by whose end a level its participants hold expires, or one that
  does not settle, takes the kernel instead (a chunk that mixes operations with long runs of
  events is first cut between them: engine/cuts.py).
- **sequential**: it reads state the running path does not cover (program state, targets, lots
  of PREFUNDED assets, holds, ...), so it is evaluated inside the one-event-at-a-time kernel, against the
  state earlier events left.

A program runs through the kernel when any of its rules reads or writes state (state actions,
targets, budgets, state in expressions); the vectorised and row results of its other rules are
computed beforehand and looked up there. Programs with none of these stay entirely set-based,
with only the balance check of DEBITs settled sequentially, for the entities that may go short.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from engine.catalog import CompiledAction, CompiledProgram, CompiledRule
from engine.cel import CelProgram, NotVectorisable, PolarsContext
from engine.io.events import TS
from engine.reads import keys

STATE_VARIABLES = frozenset({"participant", "program"})
#: Actions the set-based path applies (with its sequential balance check); all others need the kernel.
SET_BASED_ACTIONS = frozenset({"CREDIT", "DEBIT"})
#: State actions the running-state path (engine/running.py) applies set-wise.
STATE_ACTIONS = frozenset({"TAG", "UNTAG", "COUNTER", "SET_ATTRIBUTE"})


def reads_state(prog: CelProgram) -> bool:
    return bool(prog.variables & STATE_VARIABLES)


def rule_reads_state(rule: CompiledRule) -> bool:
    return reads_state(rule.condition) or any(reads_state(p) for a in rule.actions for p in a.expressions)


def rule_is_stateful(rule: CompiledRule) -> bool:
    """Reads or writes state beyond balances, or is coupled to other events through a budget."""
    return (rule_reads_state(rule) or bool(rule.budgets)
            or any(a.type not in SET_BASED_ACTIONS or a.bucket not in (None, "AVAILABLE") or a.target is not None
                   or (a.asset is not None and (a.asset.issuance_policy == "PREFUNDED"  # a program-global wallet
                                                or a.asset.inventory_mode == "LOT"))  # lots, expiry, maturity
                   for a in rule.actions))


def program_unsupported(program: CompiledProgram, writers: dict | None = None) -> str | None:
    """Why a program's rules cannot take the running-state path, or None if they can.
    `writers` collects counter key -> reset_after across the programs of a batch."""
    writers = {} if writers is None else writers
    if any(t.lifecycle is not None for t in program.tiers.values()):
        return "tier lifecycles"
    for rule in program.active_rules:
        for prog in (rule.condition, *(p for a in rule.actions for p in a.expressions)):
            if "program" in prog.variables:
                return f"rule {rule.key}: reads program state"
        for a in rule.actions:
            if a.target is not None:
                return f"rule {rule.key}: a target"
            if a.type in ("CREDIT", "DEBIT"):
                if not _running_value(a):
                    return f"rule {rule.key}: a {a.type} of a {a.asset.inventory_mode}/{a.asset.issuance_policy} " \
                           "asset, or into a bucket, or with a lot expression or reference"
            elif a.type in STATE_ACTIONS:
                value = a.tag if a.type in ("TAG", "UNTAG") else a.value
                if isinstance(value, CelProgram) and value.variables - {"event", "now"}:
                    return f"rule {rule.key}: a {a.type} value that reads state"
                if a.type == "COUNTER" and writers.setdefault(a.key, a.reset_after) != a.reset_after:
                    return f"counter {a.key}: written with different reset_after"
            else:
                return f"rule {rule.key}: {a.type}"
    if keys(program.state_reads["participant"], "balances", list(program.lot_assets)):
        return "reads the balance of a LOT asset (maturity and expiry change it)"
    return None


def programs_unsupported(programs) -> str | None:
    """Why the programs of one batch cannot take the running-state path together, or None:
    each program's reason, and a counter key the programs write with different reset_after."""
    writers: dict[str, timedelta | None] = {}
    return next((why for p in programs if (why := program_unsupported(p, writers))), None)


def _running_value(a: CompiledAction) -> bool:
    """A CREDIT or DEBIT the running path models, into AVAILABLE: of a SIMPLE asset (a PREFUNDED
    one's program wallet is a running sum in stream order, like a budget), or of an UNLIMITED
    LOT asset, a credit whose instants are static (its lots cannot change any event's outcome,
    so they are made afterwards: engine/setwise_lots.py)."""
    if a.bucket not in (None, "AVAILABLE"):
        return False
    if a.asset.issuance_policy == "PREFUNDED":
        return a.asset.inventory_mode == "SIMPLE"
    if a.asset.issuance_policy != "UNLIMITED":
        return False
    if a.asset.inventory_mode == "SIMPLE":
        return True
    return (a.type == "CREDIT" and a.reference_id is None
            and not isinstance(a.expires_at, CelProgram) and not isinstance(a.matures_at, CelProgram))


def needs_kernel(program: CompiledProgram) -> bool:
    # with tiers, every event may change its participant's level (auto-qualification, semantics.md 10)
    return bool(program.tiers) or any(rule_is_stateful(r) for r in program.active_rules)


@dataclass(frozen=True)
class RulePlan:
    program: str
    rule: str
    order: int
    path: str  # vectorised | row | running | sequential
    reason: str


def plan_program(program: CompiledProgram, event_dtype: pl.DataType | None = None) -> list[RulePlan]:
    """Per active rule: its path and the reason. Without an event schema, vectorisation is
    judged against an empty struct (fields unknown), which only affects the reason text."""
    ctx = PolarsContext(variables={"event": (pl.col("event"), event_dtype or pl.Struct([])),
                                   "now": (pl.col("event_timestamp"), TS)})
    out = []
    why_not = program_unsupported(program)
    running = " on the running-state path"
    for rule in program.active_rules:
        if rule_reads_state(rule) and why_not is None:
            path, reason = "running", "reads participant state: evaluated set-wise" + running
        elif rule_reads_state(rule):
            path, reason = "sequential", f"reads participant/program state; not running-state: {why_not}"
        else:
            declined = _declined(rule, ctx)
            if declined:
                path, reason = "row", f"Polars backend declines: {declined}"
            else:
                path, reason = "vectorised", "reads only event and now"
            if rule_is_stateful(rule) and why_not is None:
                reason += "; its actions run" + running
            elif rule_is_stateful(rule):
                reason += f"; its actions run in the sequential kernel ({why_not})"
        out.append(RulePlan(program.key, rule.key, rule.order, path, reason))
    return out


def _declined(rule: CompiledRule, ctx: PolarsContext) -> str | None:
    for prog in (rule.condition, *(p for a in rule.actions for p in a.expressions)):
        try:
            prog.to_polars(ctx)
        except NotVectorisable as e:
            return f"{prog.text!r}: {e}"
    return None
