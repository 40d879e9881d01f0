"""Tiers (semantics.md 10): ranked levels per tier type, held one per participant and tier.

Levels change in three ways inside the sequential kernel, each recorded as a tier_history row:
- AUTO: after the rules of an event that did not fail (semantics.md 5 step 4), every participant
  the event touched is upgraded to the highest level whose qualification its counters meet.
  Auto-qualification never downgrades, and skips a tier a SET_TIER action set in this event.
- ACTION: a SET_TIER action of a rule; OPERATION: the `set_tier` operation.
The changes live in the event's transaction (`Tx`), so a failed event changes no tier.
"""

from __future__ import annotations

import operator
from decimal import Decimal

from engine import amounts
from engine.catalog.compiled import CompiledLevel, CompiledProgram, CompiledTier
from engine.moves import ActionFailed
from engine.state import EntityState, TierState, Tx

AUTO, ACTION, OPERATION, LIFECYCLE = "AUTO", "ACTION", "OPERATION", "LIFECYCLE"
_COMPARE = {">=": operator.ge, ">": operator.gt, "==": operator.eq, "<=": operator.le, "<": operator.lt}


def cel_view(program: CompiledProgram, st: EntityState) -> dict:
    """`participant.tiers`: tier key -> {level, rank, benefits} for the tiers the participant
    holds a level in (a tier without a level is absent, as Scrip answers 404 for it)."""
    out = {}
    for tier in program.tiers.values():
        held = st.tiers.get(tier.sid)
        level = held and tier.by_key.get(held.level)
        if level is not None:  # a level since removed from the file is not shown
            out[tier.key] = {"level": level.key, "rank": level.rank, "benefits": level.cel_benefits}
    return out


def qualifies(level: CompiledLevel, st: EntityState) -> bool:
    """Whether the counters meet the level's qualification (a counter never written is 0)."""
    q = level.qualification
    if q is None:  # reached only by SET_TIER / set_tier
        return False
    zero = Decimal(0)
    results = (_COMPARE[c.operator](st.counters[c.counter].value if c.counter in st.counters else zero, c.threshold)
               for c in q.criteria)
    return all(results) if q.mode == "ALL" else any(results)


def highest_qualifying(tier: CompiledTier, st: EntityState) -> CompiledLevel | None:
    return next((lv for lv in reversed(tier.levels) if qualifies(lv, st)), None)


def rank_of(tier: CompiledTier, st: EntityState) -> int | None:
    """The rank of the participant's level in this tier; None without one (or a removed level)."""
    held = st.tiers.get(tier.sid)
    level = held and tier.by_key.get(held.level)
    return None if level is None else level.rank


def auto_qualify(ev, tx: Tx) -> None:
    """Upgrade every participant this event touched, in id order (deterministic history)."""
    program: CompiledProgram = ev.program
    if not program.tiers:
        return
    for etype, pid in sorted(tx.states):
        if etype != "PARTICIPANT":
            continue
        st = tx.states[(etype, pid)]
        for tier in program.tiers.values():
            if (pid, tier.sid) in tx.tiers_set:
                continue
            best = highest_qualifying(tier, st)
            current = rank_of(tier, st)
            if best is not None and (current is None or best.rank > current):
                change(tx, ev, tier, pid, best.key, AUTO)


def tier_of(program: CompiledProgram, key) -> CompiledTier:
    tier = program.tiers.get(key) if isinstance(key, str) else None
    if tier is None:
        raise ActionFailed("invalid_operation", f"set_tier: {key!r} is not a tier of program {program.key}"
                                                + (f" (tiers: {', '.join(program.tiers)})" if program.tiers else ""))
    return tier


def level_key(tier: CompiledTier, raw, where: str, code: str = amounts.EXPRESSION_ERROR) -> str:
    """A level key given by a SET_TIER expression or an operation's params, checked."""
    if not isinstance(raw, str) or raw not in tier.by_key:
        raise ActionFailed(code, f"{where}: {raw!r} is not a level of tier {tier.key} "
                                 f"(levels: {', '.join(tier.by_key)})")
    return raw


def set_by_action(tx: Tx, ev, tier_key: str, pid: str, level: str) -> None:
    """SET_TIER: set the level and keep auto-qualification off this tier for the event."""
    tier = ev.program.tiers[tier_key]
    tx.tiers_set.add((pid, tier.sid))
    change(tx, ev, tier, pid, level, ACTION)


def change(tx: Tx, ev, tier: CompiledTier, pid: str, level: str, reason: str) -> None:
    """Set a participant's level (no-op when unchanged) and record the change."""
    st = tx.state("PARTICIPANT", pid)
    held = st.tiers.get(tier.sid)
    if held is not None and held.level == level:
        return
    st.tiers[tier.sid] = TierState(level, ev.now)
    tx.activation = None  # later rules of the event see the new level
    kind = "event" if ev.operation is None else "operation"
    tx.tier_changes.append({
        "program_id": ev.program.sid, "tier_id": tier.sid, "tier_key": tier.key, "participant_id": pid,
        "from_level": None if held is None else held.level, "to_level": level, "reason": reason,
        "source_kind": kind, "source_name": f"{kind}:{ev.program.sid}:{ev.key}", "effective_at": ev.now})
