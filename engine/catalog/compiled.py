"""The catalog after validation: programs, shared assets and rules with CEL compiled and ids fixed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from engine import ids
from engine.cel import CelProgram
from engine.cron import Cron
from engine.reads import Reads, merge, reads

from .models import Asset, Criterion, Lifecycle, Program, Qualification, Reward


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: A value field: a static value (Decimal for numbers, str for literal text) or an expression.
Value = Decimal | str | CelProgram


@dataclass(frozen=True)
class CompiledTarget:
    type: str  # PARTICIPANT | GROUP | PROGRAM
    external_id: CelProgram | str | Decimal | None = None  # an expression, or a literal id
    participant_id: CelProgram | str | Decimal | None = None
    group: CelProgram | str | None = None  # GROUP: an expression, or a literal group key


@dataclass(frozen=True)
class GroupMember:
    participant_id: str
    external_id: str | None  # as declared (None when declared by participant_id)
    role: str  # ADMIN | MEMBER


@dataclass(frozen=True)
class CompiledGroup:
    """A group as declared in a program file: its founding members (semantics.md 11)."""
    id: uuid.UUID
    key: str
    name: str
    status: str  # ACTIVE | ARCHIVED
    members: tuple[GroupMember, ...]
    definition: dict  # as written (normalised)
    source: str = ""  # the (first) file that declares it

    @cached_property
    def sid(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class CompiledAction:
    index: int
    type: str
    asset: Asset | None = None
    asset_id: uuid.UUID | None = None
    amount: Value | None = None  # CREDIT/DEBIT: a static Decimal or an expression
    allow_negative: bool = False
    bucket: str | None = None  # CREDIT: where value lands; FORFEIT: where it is taken from
    description: str | None = None
    tag: Value | None = None
    key: str | None = None
    value: Value | None = None
    reset_after: timedelta | None = None
    tier: str | None = None  # SET_TIER: the tier key (checked against the program's tiers)
    level: Value | None = None  # SET_TIER: a level key, or an expression giving one
    target: CompiledTarget | None = None
    expires_at: timedelta | datetime | CelProgram | None = None  # LOT credits: duration from now,
    matures_at: timedelta | datetime | CelProgram | None = None  # an instant, or a CEL timestamp
    reference_id: Value | None = None  # LOT holds, settles and voids: literal text or an expression
    event_name: str | None = None  # SCHEDULE_EVENT / BROADCAST: the SYSTEM event's `type`
    delay: timedelta | CelProgram | None = None  # SCHEDULE_EVENT: due at now + delay
    payload: dict | None = None  # SCHEDULE_EVENT / BROADCAST: JSON with CelProgram leaves (engine/emit.py)

    @cached_property
    def asset_sid(self) -> str | None:
        """The asset id as text, as the kernel keys accounts (computed once, not per event)."""
        return None if self.asset_id is None else str(self.asset_id)

    @property
    def expressions(self) -> tuple[CelProgram, ...]:
        out = [v for v in (self.amount, self.tag, self.value, self.level, self.expires_at, self.matures_at,
                           self.reference_id)
               if isinstance(v, CelProgram)]
        if isinstance(self.delay, CelProgram):
            out.append(self.delay)
        out += payload_programs(self.payload)
        if self.target is not None:
            out += [p for p in (self.target.external_id, self.target.participant_id, self.target.group)
                    if isinstance(p, CelProgram)]
        return tuple(out)


def payload_programs(value) -> list[CelProgram]:
    """The CEL expressions among a compiled payload's leaves, in document order."""
    if isinstance(value, CelProgram):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in payload_programs(v)]
    if isinstance(value, list):
        return [p for v in value for p in payload_programs(v)]
    return []


@dataclass(frozen=True)
class CompiledBudget:
    asset_id: uuid.UUID
    asset: str
    limit: Decimal
    interval: timedelta | None  # INTERVAL budgets
    cron: Cron | None = None    # CRON budgets; neither: lifetime
    index: int = 0              # its position in the rule's `budgets`: with the rule, what names it

    def period(self, now: datetime) -> int:
        """Which period `now` falls in (docs/decisions.md): 0 for lifetime budgets, the
        epoch-aligned interval index, or the minute (since the epoch) of the latest cron firing."""
        if self.cron is not None:
            return int(self.cron.previous(now).timestamp()) // 60
        return 0 if self.interval is None else (now - EPOCH) // self.interval




def rule_version(program_key: str, definition: dict) -> str:
    """A rule's version: the content hash of its program's key and its definition as written
    (normalised), the text `rule_versions.definition` stores. Entries name it, and their hashes
    cover it, so `perkflow verify` recomputes it from the stored definition (engine/catalog/
    integrity.py): an edited definition no longer gives the version the chain vouches for."""
    return ids.content_hash({"program": program_key, "rule": definition})


@dataclass(frozen=True)
class CompiledRule:
    id: uuid.UUID
    key: str
    version: str  # content hash: a changed rule is a new version
    name: str
    order: int
    status: str
    stop_after_match: bool
    active_from: datetime | None
    active_to: datetime | None
    condition: CelProgram
    actions: tuple[CompiledAction, ...]
    budgets: tuple[CompiledBudget, ...]
    definition: dict

    @cached_property
    def sid(self) -> str:
        """The rule id as text (computed once, not per event)."""
        return str(self.id)  # the rule as written (normalised), stored in rule_versions


@dataclass(frozen=True)
class CompiledReward:
    id: uuid.UUID
    key: str
    model: "Reward"
    asset_id: uuid.UUID


@dataclass(frozen=True)
class CompiledLevel:
    key: str
    name: str
    rank: int
    qualification: Qualification | None
    benefits: dict  # as written (stored as JSON)
    cel_benefits: dict  # as CEL sees it: JSON numbers are doubles


@dataclass(frozen=True)
class CompiledTier:
    id: uuid.UUID
    program_id: uuid.UUID
    key: str
    name: str
    levels: tuple[CompiledLevel, ...]  # ascending rank
    lifecycle: Lifecycle | None
    definition: dict  # as written (normalised), stored in the tiers table
    duration: timedelta | None = None  # lifecycle.retention.duration, parsed
    rollover_keys: tuple[str, ...] = ()  # lifecycle.counters: the counters rolled over at period closes
    # the ledger's clock when its lifecycle, as written, was first stored (None: from the start):
    # its windows and counter periods start no earlier (engine/tiers.py attach_since)
    since: datetime | None = None

    @cached_property
    def sid(self) -> str:
        return str(self.id)

    @cached_property
    def by_key(self) -> dict[str, CompiledLevel]:
        return {lv.key: lv for lv in self.levels}


@dataclass(frozen=True)
class CompiledAutomation:
    """An automation ready to plan firings (engine/automations.py)."""
    id: uuid.UUID
    key: str  # names its SYSTEM events' idempotency keys
    name: str
    program_key: str
    event_name: str
    scope: str  # program | participants
    trigger: str  # cron | one_time | immediate | participant_state
    cron: Cron | None
    timezone: ZoneInfo
    trigger_at: datetime | None
    payload: dict
    participant_filter: CelProgram | None
    guard_condition: CelProgram | None
    participant_id: str | None
    status: str  # active | paused
    definition: dict  # as written (normalised), stored in the automations table
    date_attribute: str | None = None  # participant_state ATTRIBUTE_DATE: the attribute holding the date
    date_time: tuple[int, int] = (0, 0)  # ... and the wall-clock (hour, minute) it fires at
    every: timedelta | None = None  # participant_state INTERVAL: the period, from each participant's enrolment
    threshold: Criterion | None = None  # participant_state THRESHOLD: the counter test (a tier criterion's shape)

    @cached_property
    def sid(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class CompiledProgram:
    id: uuid.UUID
    key: str
    model: Program
    source: str  # the file it came from
    rules: tuple[CompiledRule, ...]  # every rule, ascending order
    assets: tuple[str, ...] = ()  # symbols defined in this program's file (participant.balances keys)
    rewards: dict[str, CompiledReward] = field(default_factory=dict)  # by key
    tiers: dict[str, CompiledTier] = field(default_factory=dict)  # by key, in file order
    lot_assets: tuple[str, ...] = ()  # the LOT assets among `assets`
    automations: dict[str, CompiledAutomation] = field(default_factory=dict)  # by key, in file order
    document: dict = field(default_factory=dict)  # the program file as validated: stored for `perkflow maintain`

    @cached_property
    def active_rules(self) -> tuple[CompiledRule, ...]:
        return tuple(r for r in self.rules if r.status == "ACTIVE")

    @cached_property
    def state_reads(self) -> dict[str, Reads]:
        """What the active rules' expressions read of `participant` and of `program`: the kernel
        builds only those parts of the CEL variables (building all of them was a third of its time)."""
        progs = [p for r in self.active_rules for p in (r.condition, *(q for a in r.actions for q in a.expressions))]
        return {name: merge(*(reads(p, name) for p in progs)) for name in ("participant", "program")}

    @cached_property
    def sid(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class Catalog:
    programs: dict[str, CompiledProgram]  # by key
    assets: dict[str, Asset]  # by symbol, shared across the project
    asset_ids: dict[str, uuid.UUID] = field(default_factory=dict)
    groups: dict[str, CompiledGroup] = field(default_factory=dict)  # by key, shared across the project
    #: tiers with a lifecycle or an expiring level that the ledger stores for programs (or tiers)
    #: this run's files do not define, filled once the ledger is open (engine/run.py): their
    #: reviews, rollovers and expiries still fall due for the participants this run touches
    stored_tiers: list[CompiledTier] = field(default_factory=list)

    def timed_tiers(self) -> list[CompiledTier]:
        """Every tier whose levels or counters may change with time (semantics.md 3): the
        programs' own (any tier: set_tier's expires_at) and the stored ones."""
        return [t for p in self.programs.values() for t in p.tiers.values()] + self.stored_tiers

    @cached_property
    def groups_by_id(self) -> dict[str, CompiledGroup]:
        return {g.sid: g for g in self.groups.values()}

    def resolve_group(self, ref: str) -> CompiledGroup | None:
        """A group by key or by id (a GROUP target or an operation may name either). A key is
        the customer's, compared exactly; an id is perkflow's UUID, read in any case
        (docs/decisions.md "Input")."""
        return self.groups.get(ref) or self.groups_by_id.get(ref.lower())

    @cached_property
    def asset_sids(self) -> dict[str, str]:
        return {s: str(i) for s, i in self.asset_ids.items()}

    def resolve_program(self, ref: str) -> CompiledProgram | None:
        """A program by key or by id (events may carry either)."""
        if ref in self.programs:
            return self.programs[ref]
        for prog in self.programs.values():
            if str(prog.id) == ref:
                return prog
        return None
