"""Tiers (semantics.md 10): ranked levels per tier type, held one per participant and tier.

Levels change in these ways inside the sequential kernel, each recorded as a tier_history row:
- AUTO: after the rules of an event that did not fail (semantics.md 5 step 4), every participant
  the event touched is upgraded to the highest level whose qualification its counters meet.
  Auto-qualification never downgrades, and skips a tier a SET_TIER action set in this event.
- ACTION: a SET_TIER action of a rule; OPERATION: the `set_tier` operation, whose
  `expires_at` schedules the level's removal (Scrip's PUT .../state/tiers/{key}).
- LIFECYCLE: downgrades when a held level's window ends (calendar period end, retention duration,
  inactivity for ACTIVITY_REFRESH, status validity; plus grace_days), and counter rollover at
  period closes; EXPIRY: the removal of a level set with an expiry, at `expires_at` (to_level
  null). Both are time-driven changes applied at their own instant: before an event first
  touches the participant, or by `perkflow maintain --as-of` (semantics.md 3). They stand even if
  that event fails.
The changes of an event live in its transaction (`Tx`), so a failed event changes no tier.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from engine import amounts
from engine.catalog.compiled import CompiledLevel, CompiledProgram, CompiledTier
from engine.catalog.load import compile_tier
from engine.catalog.models import Criterion, Tier
from engine.cel import type_name
from engine.ledger.sqlfiles import statement
from engine.moves import ActionFailed
from engine.state import EntityState, Store, TierState, Tx

AUTO, ACTION, OPERATION, LIFECYCLE, EXPIRY = "AUTO", "ACTION", "OPERATION", "LIFECYCLE", "EXPIRY"
#: SET_TIER whose level (a CEL result) is text that names no level of the tier (docs/decisions.md
#: "Tiers"); a result that is not text is an expression_error, as for a tag.
UNKNOWN_LEVEL = "unknown_tier_level"


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
    results = (meets(c, st) for c in q.criteria)
    return all(results) if q.mode == "ALL" else any(results)


def meets(c: Criterion, st: EntityState) -> bool:
    """One criterion (a tier's, or a THRESHOLD automation's): the counter, 0 when never written,
    against the threshold."""
    value = st.counters[c.counter].value if c.counter in st.counters else Decimal(0)
    return amounts.COMPARE[c.operator](value, c.threshold)


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
                change(tx, tier, pid, best.key, AUTO, source_of(ev))


def tier_of(program: CompiledProgram, key) -> CompiledTier:
    tier = program.tiers.get(key) if isinstance(key, str) else None
    if tier is None:
        raise ActionFailed("invalid_operation", f"set_tier: {key!r} is not a tier of program {program.key}"
                                                + (f" (tiers: {', '.join(program.tiers)})" if program.tiers else ""))
    return tier


def level_key(tier: CompiledTier, raw, where: str, *, unknown: str = UNKNOWN_LEVEL,
              not_text: str = amounts.EXPRESSION_ERROR) -> str:
    """A level key given by a SET_TIER expression or an operation's params (`where` names the
    field), checked: exactly a level key of the tier (`unknown` if not), and text (`not_text`)."""
    if not isinstance(raw, str):
        raise ActionFailed(not_text, f"{where} must be text, a level key of tier {tier.key} "
                                     f"(levels: {', '.join(tier.by_key)}), got {type_name(raw)}")
    if raw not in tier.by_key:
        raise ActionFailed(unknown, f"{where} {raw!r} is not a level of tier {tier.key} "
                                    f"(levels: {', '.join(tier.by_key)})")
    return raw


def set_by_action(tx: Tx, ev, tier_key: str, pid: str, level: str) -> None:
    """SET_TIER: set the level and keep auto-qualification off this tier for the event."""
    tier = ev.program.tiers[tier_key]
    tx.tiers_set.add((pid, tier.sid))
    change(tx, tier, pid, level, ACTION, source_of(ev))


def source_of(ev) -> tuple[str, str]:
    """(kind, name) of an event or operation: its id is name_uuid(name) in SQL, as for its entries."""
    kind = "event" if ev.operation is None else "operation"
    return kind, f"{kind}:{ev.program.sid}:{ev.key}"


def change(tx: Tx, tier: CompiledTier, pid: str, level: str, reason: str, source: tuple[str, str] | None) -> None:
    """Set a participant's level at the transaction's instant (no-op when unchanged) and record it.
    A new level is a new assignment: the expiry of the one before goes with it."""
    st = tx.state("PARTICIPANT", pid)
    held = st.tiers.get(tier.sid)
    if held is not None and held.level == level:
        return
    st.tiers[tier.sid] = TierState(level, tx.now)
    if held is not None and _activity_refresh(tier) and _window_start(held) > tx.now:
        # a level reached by a late event: the member's last activity (the window the level
        # before had) is later than this event, and the new level's window runs from it
        st.tiers[tier.sid].reviewed_at = _window_start(held)
    tx.activation = None  # later rules of the event see the new level
    _record(tx, tier, pid, None if held is None else held.level, level, reason, source)


def assign(tx: Tx, tier: CompiledTier, pid: str, level: str, expires_at: datetime | None,
           source: tuple[str, str]) -> None:
    """The set_tier operation (Scrip's PUT .../state/tiers/{key}): the level, and `expires_at`
    replacing any expiry task, also when the level stays (None clears it)."""
    change(tx, tier, pid, level, OPERATION, source)
    tx.state("PARTICIPANT", pid).tiers[tier.sid].expires_at = expires_at


def _expire(tx: Tx, tier: CompiledTier, pid: str) -> None:
    """Tier expiry at the transaction's instant (its expires_at): the participant holds no level
    in the tier any more; recorded with to_level null and no source."""
    held = tx.state("PARTICIPANT", pid).tiers.pop(tier.sid)
    _record(tx, tier, pid, held.level, None, EXPIRY, None)


def _record(tx: Tx, tier: CompiledTier, pid: str, before: str | None, after: str | None, reason: str,
            source: tuple[str, str] | None) -> None:
    kind, name = source or (None, None)
    tx.tier_changes.append({
        "program_id": str(tier.program_id), "tier_id": tier.sid, "tier_key": tier.key, "participant_id": pid,
        "from_level": before, "to_level": after, "reason": reason,
        "source_kind": kind, "source_name": name, "effective_at": tx.now})


# -- lifecycle (semantics.md 10; docs/decisions.md "Tiers") ------------------------------------
# A held level lives in a window that starts when it was reached, when its last review kept it
# (TierState.reviewed_at = that window's end) or, for ACTIVITY_REFRESH, at the participant's last
# completed event (reviewed_at = that event's instant). The window ends at the next calendar
# period end, after retention.duration, or (no period, no duration) after status_validity's
# months; the review is due at the window end, plus extend_months when status_validity extends a
# period or duration window, plus grace_days.

def _calendar(tier: CompiledTier) -> bool:
    period = tier.lifecycle.qualification_period
    return period is not None and period.type != "NONE"


def add_months(t: datetime, months: int) -> datetime:
    """Calendar months later, the day clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    years, month0 = divmod(t.month - 1 + months, 12)
    year, month = t.year + years, month0 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def period_end_after(tier: CompiledTier, after: datetime) -> datetime:
    """The first qualification-period end strictly after `after`: 1 January (CALENDAR_YEAR) or
    start_month/start_day (FIXED_YEAR), at 00:00 UTC."""
    period = tier.lifecycle.qualification_period
    month, day = (1, 1) if period.type == "CALENDAR_YEAR" else (period.start_month, period.start_day)
    year = after.astimezone(timezone.utc).year
    while True:
        end = datetime(year, month, day, tzinfo=timezone.utc)
        if end > after:
            return end
        year += 1


def _window_end(tier: CompiledTier, start: datetime) -> datetime | None:
    validity = tier.lifecycle.status_validity
    if _calendar(tier):
        return period_end_after(tier, start)
    if tier.duration is not None:
        return start + tier.duration
    if validity is not None:  # no period, no duration: the validity is the window
        return add_months(start, validity.extend_months)
    return None  # qualification_period NONE alone: never reviewed


def _due_after_window(tier: CompiledTier, end: datetime) -> datetime:
    life = tier.lifecycle
    if life.status_validity is not None and (_calendar(tier) or tier.duration is not None):
        end = add_months(end, life.status_validity.extend_months)
    return end + timedelta(days=life.downgrade_policy.grace_days)


def _window_start(held: TierState) -> datetime:
    return max(held.achieved_at, held.reviewed_at) if held.reviewed_at else held.achieved_at


def _next_review(tier: CompiledTier, held: TierState) -> tuple[datetime, datetime] | None:
    """(due instant, window end) of the next review of a held level; None if it is never reviewed.
    A window never starts before the lifecycle does (`since`)."""
    start = _window_start(held)
    end = _window_end(tier, start if tier.since is None else max(start, tier.since))
    return None if end is None else (_due_after_window(tier, end), end)


def close_after(tier: CompiledTier, after: datetime) -> datetime:
    """The first period close (period end + extend_months + grace_days: when its reviews are due)
    strictly after `after`: the instant a counter last rolled over (or was created) rolls next."""
    life = tier.lifecycle
    months = life.status_validity.extend_months if life.status_validity else 0
    end = period_end_after(tier, after - timedelta(days=31 * months + life.downgrade_policy.grace_days + 1))
    while _due_after_window(tier, end) <= after:
        end = period_end_after(tier, end)
    return _due_after_window(tier, end)


def downgrade_target(tier: CompiledTier, st: EntityState) -> str | None:
    """The level a review moves the participant to, or None to keep its level. A participant
    that still qualifies for its level keeps it; otherwise the policy decides, never below
    min_level and never up."""
    policy = tier.lifecycle.downgrade_policy
    current = tier.by_key[st.tiers[tier.sid].level]
    if policy.mode == "HOLD" or qualifies(current, st):
        return None
    lower = [lv for lv in tier.levels if lv.rank < current.rank]  # ascending rank
    if not lower:
        return None
    if policy.mode == "DROP_ONE":
        target = lower[-1]
    else:  # DROP_TO_QUALIFYING; nothing qualifying: the lowest level (a level once held is never removed)
        target = next((lv for lv in reversed(lower) if qualifies(lv, st)), lower[0])
    floor = tier.by_key.get(policy.min_level) if policy.min_level else None
    if floor is not None and target.rank < floor.rank:
        target = floor if floor.rank < current.rank else current
    return None if target is current else target.key


def roll_over(tier: CompiledTier, st: EntityState, at: datetime) -> bool:
    """Counter rollover at a period close, after that close's review: each rolled counter not
    rolled since `at` keeps, for EXCESS, what exceeds the threshold its level (held now) sets
    on it, else 0; the counter's last_reset_at becomes `at` (its rollover mark). Whether any
    counter rolled over (maintenance counts them)."""
    held = st.tiers.get(tier.sid)
    level = held and tier.by_key.get(held.level)
    excess = tier.lifecycle.counters.rollover == "EXCESS"
    rolled = False
    for key in tier.rollover_keys:
        c = st.counters.get(key)
        if c is None or c.last_reset_at >= at:
            continue
        thresholds = [cr.threshold for cr in (level.qualification.criteria if level and level.qualification else ())
                      if cr.counter == key and cr.operator in (">=", ">")]
        c.value = max(Decimal(0), c.value - max(thresholds)) if excess and thresholds else Decimal(0)
        c.last_reset_at = at
        rolled = True
    return rolled


def _activity_refresh(tier: CompiledTier) -> bool:
    return tier.lifecycle is not None and tier.lifecycle.retention.mode == "ACTIVITY_REFRESH"


def refresh(ev, tx: Tx) -> None:
    """ACTIVITY_REFRESH: a completed event of the participant restarts its levels' windows, from
    the member's *last* activity: a late event (older than the window's start, semantics.md 3)
    is activity too, but never moves the window back (it would bring a review forward)."""
    if ev.subject is None:  # a program event (scope program automation) has no participant
        return
    st = tx.state("PARTICIPANT", ev.subject)
    for tier in ev.program.tiers.values():
        held = st.tiers.get(tier.sid)
        if held is not None and _activity_refresh(tier) and tx.now > _window_start(held):
            held.reviewed_at = tx.now


def next_step(timed: list[CompiledTier], st: EntityState) -> tuple | None:
    """(instant, kind, tier index, window end) of the participant's next time-driven tier step:
    kind 0 a lifecycle review, 1 a rollover, 2 a tier expiry; at one instant reviews come first
    (they read the counters before they roll), then rollovers, then expiries (semantics.md 3:
    tier period ends before tier expiry), each in tier order."""
    steps = []
    for i, tier in enumerate(timed):
        held = st.tiers.get(tier.sid)
        if held is not None and held.expires_at is not None:
            steps.append((held.expires_at, 2, i, None))
        if tier.lifecycle is None:
            continue
        review = held is not None and held.level in tier.by_key and _before_time_ends(_next_review, tier, held)
        if review:
            steps.append((review[0], 0, i, review[1]))
        marks = [c.last_reset_at for k in tier.rollover_keys if (c := st.counters.get(k)) is not None]
        if marks and tier.since is not None:  # a counter's period starts no earlier than the lifecycle
            marks = [max(m, tier.since) for m in marks]
        if marks and (close := _before_time_ends(close_after, tier, min(marks))):
            steps.append((close, 1, i, None))
    return min(steps) if steps else None


def _before_time_ends(instant, *args):
    """`instant(*args)`, or None when it falls past 9999-12-31T23:59:59.999999Z, the last
    instant the ledger holds (engine.durations.later): a review or rollover due then never comes."""
    try:
        return instant(*args)
    except (OverflowError, ValueError):  # datetime's year 10000 is a ValueError, + timedelta an OverflowError
        return None


def apply_due(store: Store, timed: list[CompiledTier], pid: str, now: datetime) -> bool:
    """Every lifecycle review, counter rollover and tier expiry of the participant due at or
    before `now` in the tiers `timed`, in time order, each in its own transaction at its due
    instant, committed to the store. Whether a counter rolled over."""
    rolled = False
    while timed:
        st = store.states.get(("PARTICIPANT", pid))
        step = st and next_step(timed, st)
        if not step or step[0] > now:
            return rolled
        at, kind, i, end = step
        tier = timed[i]
        tx = Tx(store, at)
        working = tx.state("PARTICIPANT", pid)  # counters as of the due instant (lazy resets applied)
        if kind == 0:
            target = downgrade_target(tier, working)
            if target is not None:
                change(tx, tier, pid, target, LIFECYCLE, None)
            working.tiers[tier.sid].reviewed_at = end
        elif kind == 1:
            rolled = roll_over(tier, working, at) or rolled
        else:
            _expire(tx, tier, pid)
        tx.commit()
    return rolled


def stored(con, as_of: datetime) -> list[CompiledTier]:
    """The tier types whose levels change with time by `as_of` (a lifecycle, or a level expiring
    by then), compiled from the definitions the ledger stores (`tiers.definition`, as the last run
    that had their program's file wrote them; only tiers that file still has)."""
    return [replace(compile_tier(f"stored tier {tier_id}", program_key, Tier.model_validate(json.loads(definition))),
                    since=since)
            for tier_id, program_key, definition, since in con.execute(statement("lookups.sql", "timed_tiers"),
                                                                       {"as_of": as_of}).fetchall()]


def attach_since(con, catalog) -> None:
    """Give each tier of the catalog's programs the instant its lifecycle starts (`since`): the
    one stored with it while the lifecycle stays as written, else the ledger's clock before this
    batch (None for a ledger with nothing yet). A lifecycle added to (or changed in) a tier that
    members already hold reviews them and rolls their counters from then on, not at the period
    ends that passed before it existed (which would rewrite what later events already saw)."""
    stored = {i: (json.loads(life) if life else None, since)
              for i, life, since in con.execute(statement("lookups.sql", "tier_lifecycles")).fetchall()}
    clock = None
    for program in catalog.programs.values():
        for key, tier in program.tiers.items():
            life = tier.definition.get("lifecycle")
            old = stored.get(tier.sid)
            if life is None:
                since = None
            elif old is not None and old[0] == life:
                since = old[1]
            else:
                clock = clock or con.execute(statement("lookups.sql", "catalog_clock")).fetchall()[0][0]
                since = clock
            if since != tier.since:
                program.tiers[key] = replace(tier, since=since)
