"""Which path each rule takes, and why (`perkflow explain-plan`).

- **vectorised**: the condition (and every amount) reads only `event` and `now`, and the Polars
  backend expresses it exactly: one pass over all events of the program.
- **row**: it reads only `event` and `now`, but the Polars backend declines an expression:
  evaluated per event by the row backend, still ahead of the sequential pass.
- **sequential**: it reads participant or program state, so it is evaluated inside the
  one-event-at-a-time kernel, against the state earlier events left.

A program runs through the kernel when any of its rules reads or writes state (state actions,
targets, budgets, state in expressions); the vectorised and row results of its other rules are
computed beforehand and looked up there. Programs with none of these stay entirely set-based,
with only the balance check of DEBITs settled sequentially, for the entities that may go short.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from engine.catalog import CompiledProgram, CompiledRule
from engine.cel import CelProgram, NotVectorisable, PolarsContext
from engine.io.events import TS

STATE_VARIABLES = frozenset({"participant", "program"})
#: Actions the set-based path applies (with its sequential balance check); all others need the kernel.
SET_BASED_ACTIONS = frozenset({"CREDIT", "DEBIT"})


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


def needs_kernel(program: CompiledProgram) -> bool:
    # with tiers, every event may change its participant's level (auto-qualification, semantics.md 10)
    return bool(program.tiers) or any(rule_is_stateful(r) for r in program.active_rules)


@dataclass(frozen=True)
class RulePlan:
    program: str
    rule: str
    order: int
    path: str  # vectorised | row | sequential
    reason: str


def plan_program(program: CompiledProgram, event_dtype: pl.DataType | None = None) -> list[RulePlan]:
    """Per active rule: its path and the reason. Without an event schema, vectorisation is
    judged against an empty struct (fields unknown), which only affects the reason text."""
    ctx = PolarsContext(variables={"event": (pl.col("event"), event_dtype or pl.Struct([])),
                                   "now": (pl.col("event_timestamp"), TS)})
    out = []
    for rule in program.active_rules:
        if rule_reads_state(rule):
            path, reason = "sequential", "reads participant/program state"
        else:
            declined = _declined(rule, ctx)
            if declined:
                path, reason = "row", f"Polars backend declines: {declined}"
            else:
                path, reason = "vectorised", "reads only event and now"
            if rule_is_stateful(rule):
                reason += "; its actions run in the sequential kernel (state or bucket actions, targets or budgets)"
        out.append(RulePlan(program.key, rule.key, rule.order, path, reason))
    return out


def _declined(rule: CompiledRule, ctx: PolarsContext) -> str | None:
    for prog in (rule.condition, *(p for a in rule.actions for p in a.expressions)):
        try:
            prog.to_polars(ctx)
        except NotVectorisable as e:
            return f"{prog.text!r}: {e}"
    return None
