"""The oracle: a plain, one-event-at-a-time interpreter of perkflow's behaviour contract.

Binding sources: /work/shared/spec/semantics.md sections 1-7 and docs/decisions.md. This file
follows them, never the engine's code; where both are silent the choice is marked "CHOICE:" and
listed in tests/oracle/README.md. CEL is evaluated by cel-python (tests/oracle/cel.py).

Out of scope (raises `Unsupported` when a program uses it): VOID_HOLD, reference_id,
SET_TIER, holds on LOT assets (a group's too), group members
declared by participant_id, automations (README.md "Not
covered"). Tiers and their lifecycles: tests/oracle/tiers.py.
"""

from __future__ import annotations

import copy
import heapq
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import yaml
from celpy import celtypes as ct

from engine.catalog.models import Action, ProgramFile, Rule

from tests.oracle.automations import automation_def, fire_automations
from tests.oracle.books import (
    Account, Books, Entry, Insufficient, group_account, participant_account, system_account, wallet_account,
)
from tests.oracle.cel import (
    KNOWN_VARIABLES, CelError, CelParseError, Expr, compile_expr, references, to_cel,
)
from tests.oracle import tiers as T

import uuid

PARTICIPANT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://perkflow.dev/ids")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ZERO = Decimal(0)
# Exact decimal arithmetic: DECIMAL(38, 18) values never need more than 38 digits, so a wide
# private context keeps every sum exact (the default context would round at 28 digits).
DEC = Context(prec=200)
MAX_INTEGER_DIGITS = 20  # DECIMAL(38, 18) (decisions.md, Ledger)
MAX_SCALE = 18


VALUE_ACTIONS = ("CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT")
#: s7: these fail for a SUSPENDED or CLOSED participant (participant_inactive).
BLOCKED_FOR_INACTIVE = VALUE_ACTIONS + ("COUNTER",)


class Unsupported(NotImplementedError):
    """The program uses a feature the oracle does not interpret."""


class ActionFailed(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# =============================================================================================
# Output


@dataclass
class OracleResult:
    events: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    entries: list[tuple] = field(default_factory=list)
    balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    participants: dict[str, dict] = field(default_factory=dict)
    program_state: dict[str, dict] = field(default_factory=dict)
    evaluations: list[tuple] = field(default_factory=list)
    # Lots, holds, wallets and operations (the full ledger):
    operations: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    ledger: list = field(default_factory=list)  # books.Entry, ledger order
    accounts: dict[tuple, Decimal] = field(default_factory=dict)  # every non-zero account
    lots: dict[tuple, tuple] = field(default_factory=dict)  # lot origin -> (holder, symbol, amount, remaining, ...)
    redemptions: dict[tuple[str, str], tuple] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)  # external_id -> participant status
    group_state: dict[str, dict] = field(default_factory=dict)  # group key -> tags, counters, attributes
    members: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # group -> ext -> (role, status)
    # Tiers: (program, tier, external_id, from, to, AUTO | LIFECYCLE, event key or None, effective_at)
    tier_history: list[tuple] = field(default_factory=list)
    # (external_id, program, tier) -> (level, reached at, start of its current lifecycle window)
    tiers: dict[tuple[str, str, str], tuple] = field(default_factory=dict)


# =============================================================================================
# Small helpers


def participant_id(external_id: str) -> str:
    return str(uuid.uuid5(PARTICIPANT_NAMESPACE, "participant:" + external_id))


def group_id(key: str) -> str:
    return str(uuid.uuid5(PARTICIPANT_NAMESPACE, "group:" + key))


def slug(name: str) -> str:
    # CHOICE: runs of non-alphanumerics collapse into one "_" (ASCII letters and digits only).
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


_DURATION_NS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def parse_go_duration(text: str) -> timedelta:
    """Go's time.ParseDuration ("720h", "1h30m", "1.5h", "300ms", "-2h"), to whole microseconds
    (Python's resolution; Go's is the nanosecond)."""
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    if s == "0":
        return timedelta(0)
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"not a Go duration: {text!r}")
    nanoseconds = int(sum(Decimal(number) * _DURATION_NS[unit] for number, unit in parts))
    return sign * timedelta(microseconds=nanoseconds // 1000)


def decimals_of(d: Decimal) -> int:
    exponent = d.normalize(DEC).as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def plain_text(d: Decimal) -> str:
    """Plain decimal text without trailing zeros: 10.0 -> "10", 49.99 -> "49.99"."""
    if d == 0:
        return "0"
    return format(d.normalize(DEC), "f")


def rfc3339(ts: datetime) -> str:
    ts = ts.astimezone(timezone.utc)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def cel_number_to_decimal(value: Any) -> Decimal:
    """CEL number -> exact decimal through its shortest round-trip text (semantics.md 7)."""
    if isinstance(value, (ct.IntType, ct.UintType)):
        return Decimal(int(value))
    if isinstance(value, ct.DoubleType):
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            raise ActionFailed("expression_error", f"not a finite number: {f}")
        return Decimal(repr(f))
    raise ActionFailed("expression_error", f"expected a number, got {type(value).__name__}")


def cel_to_text(value: Any) -> str:
    """The string of a value for SET_ATTRIBUTE (and TAG): decisions.md, SET_ATTRIBUTE."""
    if isinstance(value, ct.StringType):
        return str(value)
    if isinstance(value, ct.BoolType):
        return "true" if value else "false"
    if isinstance(value, (ct.IntType, ct.UintType, ct.DoubleType)):
        number = cel_number_to_decimal(value)
        return "0" if number == 0 else plain_text(number)  # decisions.md: a decimal has no -0
    if isinstance(value, ct.TimestampType):
        return rfc3339(value)
    # CHOICE: lists and maps fail per decisions.md; null, bytes and durations fail too.
    raise ActionFailed("expression_error", f"cannot store a {type(value).__name__} as text")


# =============================================================================================
# Value fields: a plain number, a CEL expression, or a literal string (decisions.md)

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class ValueField:
    kind: str  # "number" | "expr" | "literal"
    number: Decimal | None = None
    expr: Expr | None = None
    literal: str | None = None

    @staticmethod
    def parse(text: str) -> "ValueField":
        if _NUMBER.match(text.strip()):
            return ValueField("number", number=Decimal(text.strip()))
        try:
            expr = compile_expr(text)
        except CelParseError:
            return ValueField("literal", literal=text)
        names, calls = references(expr.ast)
        if names & KNOWN_VARIABLES or calls:
            return ValueField("expr", expr=expr)
        return ValueField("literal", literal=text)

    def evaluate(self, activation: dict[str, Any], now: datetime) -> Any:
        """The value as a CEL value (a plain number as an int if integral, else a double)."""
        if self.kind == "number":
            if re.fullmatch(r"[+-]?\d+", str(self.number)):
                return ct.IntType(int(self.number))
            return ct.DoubleType(float(self.number))
        if self.kind == "literal":
            return ct.StringType(self.literal)
        try:
            return self.expr.evaluate(activation, now)
        except CelError as e:
            raise ActionFailed("expression_error", str(e)) from e

    def evaluate_text(self, activation: dict[str, Any], now: datetime) -> str:
        if self.kind == "number":
            return plain_text(self.number)  # exact, never through a float
        return cel_to_text(self.evaluate(activation, now))

    def evaluate_decimal(self, activation: dict[str, Any], now: datetime) -> Decimal:
        if self.kind == "number":
            return self.number  # exact, never through a float
        return cel_number_to_decimal(self.evaluate(activation, now))


def _tag_field(text: str) -> ValueField:
    """CHOICE: a tag is a name, like a counter's key: a plain number (`"5"`) is the literal text
    as written, not a number; an expression is still evaluated."""
    field = ValueField.parse(text)
    return ValueField("literal", literal=text) if field.kind == "number" else field


# =============================================================================================
# Catalog


@dataclass
class AssetDef:
    symbol: str
    scale: int
    max_transaction_amount: Decimal | None
    inventory_mode: str = "SIMPLE"  # SIMPLE | LOT
    issuance_policy: str = "UNLIMITED"  # UNLIMITED | PREFUNDED


@dataclass
class RewardDef:
    key: str
    redemption_type: str  # UNIT_BASED | AMOUNT_BASED
    asset: str
    unit_cost: Decimal
    max_total: int | None
    max_per_participant: int | None
    status: str
    available_from: datetime | None
    available_until: datetime | None


@dataclass
class BudgetDef:
    asset: str
    limit: Decimal
    interval: timedelta | None  # INTERVAL
    cron: str | None = None     # CRON expression; neither: lifetime


@dataclass
class ActionDef:
    index: int
    type: str
    asset: str | None
    amount: ValueField | None
    allow_negative: bool
    key: str | None
    value: ValueField | None
    reset_after: timedelta | None
    tag: ValueField | None
    target_type: str | None  # None | PARTICIPANT | GROUP | PROGRAM
    target_external_id: ValueField | None
    target_participant_id: ValueField | None
    target_group: ValueField | None = None  # GROUP: a group key (or id), literal or CEL
    bucket: str | None = None  # CREDIT: where value lands; FORFEIT: where it is taken from
    expires_at: timedelta | None = None  # LOT credits: Go durations from `now`
    matures_at: timedelta | None = None
    event_name: str | None = None  # SCHEDULE_EVENT / BROADCAST
    delay: timedelta | Expr | None = None  # SCHEDULE_EVENT: a Go duration or a CEL duration
    payload: Any = None  # JSON with Expr leaves (strings that are CEL reading a known variable)


@dataclass
class RuleDef:
    key: str
    order: int
    position: int
    condition: Expr
    stop_after_match: bool
    active_from: datetime | None
    active_to: datetime | None
    budgets: list[BudgetDef]
    actions: list[ActionDef]


@dataclass
class ProgramDef:
    key: str
    status: str
    on_unknown_participant: str
    assets: list[str]  # symbols, in file order
    rules: list[RuleDef]  # ACTIVE rules only, in evaluation order
    rewards: dict[str, RewardDef] = field(default_factory=dict)
    redemption_target: str = "SYSTEM_REDEMPTION"  # s9.4: SYSTEM_REDEMPTION | SYSTEM_BREAKAGE | LEDGER_ENTITY
    tiers: list[T.TierDef] = field(default_factory=list)  # file order
    automations: list = field(default_factory=list)  # tests/oracle/automations.AutomationDef
    redemption_group: str | None = None  # LEDGER_ENTITY: the key of the group redemptions credit


@dataclass
class GroupDef:
    """s11: a shared wallet; `members` are its founding members (external id -> role)."""
    key: str
    status: str
    members: dict[str, str]


def load_groups(files: list[tuple[Path, ProgramFile]]) -> dict[str, GroupDef]:
    """Groups are project-wide (decisions.md "Groups"): one key, one definition in every file."""
    groups: dict[str, GroupDef] = {}
    seen: dict[str, object] = {}
    for path, pf in files:
        for g in pf.groups:
            if g.key in seen and seen[g.key] != g:
                raise ValueError(f"{path}: conflicting definitions of group {g.key}")
            seen[g.key] = g
            members: dict[str, str] = {}
            for m in g.members:
                if m.external_id is None:
                    raise Unsupported(f"{path}: group {g.key}: a member declared by participant_id")
                if m.external_id in members:
                    raise ValueError(f"{path}: group {g.key}: member {m.external_id} listed twice")
                members[m.external_id] = m.role
            groups[g.key] = GroupDef(g.key, g.status, members)  # (an ADMIN among them: the model checks it)
    return groups


def load_programs(paths: list[Path]) -> tuple[dict[str, ProgramDef], dict[str, AssetDef], dict[str, GroupDef]]:
    programs: dict[str, ProgramDef] = {}
    assets: dict[str, AssetDef] = {}
    files = [(Path(path), ProgramFile.model_validate(yaml.safe_load(Path(path).read_text()))) for path in paths]
    groups = load_groups(files)
    for path, pf in files:
        # decisions.md "Redemption target": LEDGER_ENTITY names a declared group, by key or id
        entity = pf.program.redemption_target_entity_id
        redemption_group = None if entity is None else next(
            (k for k in groups if entity in (k, group_id(k))), None)
        if entity is not None and redemption_group is None:
            raise ValueError(f"{path}: redemption_target_entity_id {entity!r} is not a group of this project")
        if pf.program.key in programs:
            raise ValueError(f"{path}: duplicate program key {pf.program.key}")
        symbols = []
        for a in pf.assets:
            asset = AssetDef(a.symbol, a.scale, a.max_transaction_amount, a.inventory_mode, a.issuance_policy)
            if a.symbol in assets and assets[a.symbol] != asset:
                raise ValueError(f"{path}: conflicting definitions of asset {a.symbol}")
            assets[a.symbol] = asset
            symbols.append(a.symbol)
        rules: list[RuleDef] = []
        highest = 0
        for position, r in enumerate(pf.rules):
            # Default order: the highest order so far + 10 (10 for the first rule).
            order = r.order if r.order is not None else highest + 10
            highest = max(highest, order)
            compiled = _rule(path, r, order, position, symbols, assets, groups)  # every rule validates (s2.1), active or not
            if r.status == "ACTIVE":
                rules.append(compiled)
        rules.sort(key=lambda rule: (rule.order, rule.position))
        rewards = {}
        for rw in pf.rewards:
            if rw.asset not in symbols:
                raise ValueError(f"{path}: reward {rw.name}: unknown asset {rw.asset}")
            key = rw.key or slug(rw.name)
            rewards[key] = RewardDef(key, rw.redemption_type, rw.asset, rw.unit_cost, rw.max_total,
                                     rw.max_per_participant, rw.status, rw.available_from, rw.available_until)
        autos = [automation_def(a, lambda what: Unsupported(f"{path}: {what}"), slug) for a in pf.automations]
        programs[pf.program.key] = ProgramDef(
            pf.program.key, pf.program.status, pf.program.on_unknown_participant, symbols, rules, rewards,
            pf.program.redemption_target_type,
            [T.tier_def(pf.program.key, t, parse_go_duration) for t in pf.tiers], autos, redemption_group,
        )
    return programs, assets, groups


def _rule(path: Path, r: Rule, order: int, position: int, symbols: list[str],
          assets: dict[str, AssetDef], groups: dict[str, GroupDef]) -> RuleDef:
    key = r.key or slug(r.name)
    budgets = []
    for b in r.budgets:
        interval = parse_go_duration(b.interval) if b.schedule_type == "INTERVAL" else None
        cron = b.cron_expression if b.schedule_type == "CRON" else None
        budgets.append(BudgetDef(b.asset, Decimal(b.limit), interval, cron))
    actions = [_action(path, key, i, a, symbols, assets, groups) for i, a in enumerate(r.actions)]
    return RuleDef(
        key, order, position, compile_expr(r.condition), r.stop_after_match,
        r.active_from, r.active_to, budgets, actions,
    )


def _action(path: Path, rule_key: str, index: int, a: Action, symbols: list[str],
            assets: dict[str, AssetDef], groups: dict[str, GroupDef]) -> ActionDef:
    where = f"{path}: rule {rule_key}: action {index}"
    if a.type not in ("CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT", "TAG", "UNTAG", "COUNTER", "SET_ATTRIBUTE",
                      "SCHEDULE_EVENT", "BROADCAST"):
        raise Unsupported(f"{where}: {a.type}")
    if a.reference_id is not None:
        raise Unsupported(f"{where}: reference_id")
    target_type = a.target.type if a.target else None
    target_group = None
    if target_type in ("GROUP", "PROGRAM") and (a.target.external_id or a.target.participant_id):
        raise ValueError(f"{where}: a {target_type} target names no participant")
    if target_type == "PROGRAM" and a.target.id is not None:
        raise ValueError(f"{where}: a PROGRAM target takes no id")
    if target_type == "GROUP":
        # s7 `{type: GROUP, id}`: the id is a value field; a literal must name a declared group
        if not a.target.id:
            raise ValueError(f"{where}: a GROUP target needs an id")
        target_group = ValueField.parse(a.target.id)
        if target_group.kind == "literal" and a.target.id.strip() not in groups and a.target.id.strip() not in {
                group_id(k) for k in groups}:
            raise ValueError(f"{where}: unknown group {a.target.id}")
        # decisions.md "Groups": a group's lots expire and mature like a participant's
    amount = None
    expires_at = matures_at = None
    if a.type in VALUE_ACTIONS:
        if a.asset not in symbols:
            raise ValueError(f"{where}: unknown asset {a.asset}")
        lot = assets[a.asset].inventory_mode == "LOT"
        if a.bucket is not None and not (a.type == "CREDIT" or a.type == "FORFEIT"):
            raise ValueError(f"{where}: bucket applies to CREDIT and FORFEIT")
        if lot and (a.type in ("HOLD", "RELEASE") or a.bucket == "HELD"):
            raise Unsupported(f"{where}: holds on LOT assets")
        if (a.expires_at or a.matures_at) and not (lot and a.type == "CREDIT"):
            raise ValueError(f"{where}: expires_at/matures_at apply to CREDITs of LOT assets")
        # CHOICE: only Go durations (from `now`) are interpreted; RFC 3339 or CEL instants are not.
        expires_at = parse_go_duration(a.expires_at) if a.expires_at else None
        matures_at = parse_go_duration(a.matures_at) if a.matures_at else None
        # s7 RELEASE "or all"; HOLD and FORFEIT as their operations (scrip-reference.md 12:
        # "omitting it processes the whole SIMPLE balance, or every matching lot")
        if a.amount is None and a.type not in ("HOLD", "RELEASE", "FORFEIT"):
            raise ValueError(f"{where}: amount is required")
    if a.amount is not None and a.type in VALUE_ACTIONS:
        amount = ValueField.parse(a.amount)
        if amount.kind == "literal":
            raise ValueError(f"{where}: amount {a.amount!r} is neither a number nor an expression")
    if a.type in VALUE_ACTIONS and target_type == "PROGRAM":
        # decisions.md "PROGRAM targets": the program's value account is its wallet of a PREFUNDED
        # asset, one AVAILABLE account: CREDIT funds it from issuance, DEBIT returns to issuance,
        # FORFEIT sends to breakage; anything else is refused when the program is loaded.
        if a.type not in ("CREDIT", "DEBIT", "FORFEIT") or assets[a.asset].issuance_policy != "PREFUNDED":
            raise ValueError(f"{where}: a PROGRAM target takes CREDIT, DEBIT or FORFEIT of a PREFUNDED asset")
        if a.bucket not in (None, "AVAILABLE") or a.allow_negative or a.expires_at or a.matures_at:
            raise ValueError(f"{where}: the program wallet is one AVAILABLE account that may not go short")
        if a.amount is None:
            raise ValueError(f"{where}: a PROGRAM target needs an amount")
    if a.type == "COUNTER" and a.value is None:
        raise ValueError(f"{where}: COUNTER needs a value")
    if a.type in ("COUNTER", "SET_ATTRIBUTE") and not a.key:
        raise ValueError(f"{where}: {a.type} needs a key")
    if a.type in ("TAG", "UNTAG") and not a.tag:
        raise ValueError(f"{where}: {a.type} needs a tag")
    delay = None
    if a.type in ("SCHEDULE_EVENT", "BROADCAST"):
        if not a.event_name:
            raise ValueError(f"{where}: {a.type} needs an event_name")
        if a.type == "BROADCAST" and (a.delay is not None or target_type is not None):
            raise ValueError(f"{where}: BROADCAST takes no delay and no target")
        if a.type == "SCHEDULE_EVENT":
            # decisions.md "SYSTEM events": for a participant or (target PROGRAM) the program
            if a.delay is None or target_type == "GROUP":
                raise ValueError(f"{where}: SCHEDULE_EVENT needs a delay, and a participant or the program")
            try:
                delay = parse_go_duration(a.delay)
            except ValueError:
                delay = compile_expr(a.delay)
    return ActionDef(
        index=index,
        type=a.type,
        asset=a.asset,
        amount=amount,
        allow_negative=a.allow_negative,
        key=a.key,  # CHOICE: counter/attribute keys are static text, not value fields
        value=ValueField.parse(a.value) if a.value is not None else None,
        reset_after=parse_go_duration(a.reset_after) if a.reset_after else None,
        tag=_tag_field(a.tag) if a.tag is not None else None,
        target_type=target_type,
        target_external_id=ValueField.parse(a.target.external_id)
        if a.target and a.target.external_id is not None else None,
        # decisions.md "Participants and state": a PARTICIPANT target's `id` (Scrip's name) is its participant_id
        target_participant_id=ValueField.parse(a.target.participant_id or a.target.id)
        if target_type == "PARTICIPANT" and (a.target.participant_id or a.target.id) is not None else None,
        target_group=target_group,
        bucket=a.bucket,
        expires_at=expires_at,
        matures_at=matures_at,
        event_name=a.event_name,
        delay=delay,
        payload=_payload(a.payload or {}),
    )


def _payload(value: Any) -> Any:
    """decisions.md: payload strings that parse as CEL reading a known variable (or calling a
    function) are expressions; other values are JSON as written (a string stays a string)."""
    if isinstance(value, dict):
        return {k: _payload(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_payload(v) for v in value]
    if isinstance(value, str):
        try:
            expr = compile_expr(value)
        except CelParseError:
            return value
        names, calls = references(expr.ast)
        return expr if names & KNOWN_VARIABLES or calls else value
    return value


# =============================================================================================
# State


@dataclass
class Counter:
    value: Decimal
    last_reset_at: datetime  # starts when the counter is created
    reset_after: timedelta | None = None
    rolled_at: datetime | None = None  # the last tier period close that rolled it over


@dataclass
class EntityState:
    """Tags, counters and attributes of a participant or a program."""

    tags: set[str] = field(default_factory=set)
    counters: dict[str, Counter] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    tiers: dict[tuple[str, str], T.Held] = field(default_factory=dict)  # (program, tier key) -> level held

    def apply_due_resets(self, now: datetime) -> None:
        """decisions.md reset_after: reset to 0 at last + k * reset_after, the last due instant."""
        for counter in self.counters.values():
            period = counter.reset_after
            if period and period > timedelta(0) and counter.last_reset_at + period <= now:
                k = (now - counter.last_reset_at) // period
                counter.last_reset_at += k * period
                counter.value = ZERO

    def snapshot(self) -> dict:
        return {
            "tags": sorted(self.tags),
            "counters": {k: c.value for k, c in sorted(self.counters.items())},
            "attributes": dict(sorted(self.attributes.items())),
        }


@dataclass
class ParticipantRecord:
    external_id: str
    id: str
    created_at: datetime
    status: str = "ACTIVE"


#: decisions.md "Automations": the `participant` of a program event (scope program automation
#: without participant_id): no id, external_id, status or created_at; empty everything else.
EMPTY_PARTICIPANT = {"tags": [], "counters": {}, "attributes": {}, "tiers": {}, "balances": {}}
#: ... and an action for that event's participant (no target) fails it.
NOBODY = "no_participant"


@dataclass
class Event:
    program_key: str
    external_id: str | None  # None: a program event (scope program automation)
    idempotency_key: str
    timestamp: datetime
    event_data: dict
    recipient: str | None
    arrival: int
    depth: int = 0               # SYSTEM events: 1 + the emitter's depth
    from_broadcast: bool = False  # SYSTEM events: a BROADCAST made it or an ancestor

    def __post_init__(self) -> None:
        self.cel_data = to_cel(self.event_data)  # `event` never changes during the event

@dataclass
class Operation:
    """A row of an operations file (semantics.md 2.3): `params` are the Scrip endpoint's fields."""

    program_key: str
    operation: str
    external_id: str | None
    idempotency_key: str
    timestamp: datetime
    params: dict
    arrival: int


class Working:
    """The working state of one event or operation: a copy of everything it may change, kept or
    dropped as a whole (s5.5). Time-driven changes of the participants it touches (lot maturity
    and expiry, counter resets) are applied to the committed state first, because they are not
    its doing and stand even if it fails (s3), and then to the copy."""

    def __init__(self, oracle: "Oracle", now: datetime) -> None:
        self.oracle = oracle
        self.now = now
        self.states: dict[tuple[str, str], EntityState] = {}
        self.books: Books = copy.deepcopy(oracle.books)
        self.budgets: dict[tuple, Decimal] = {}
        self.statuses: dict[str, str] = {}
        self.entries: list[Entry] = []
        self.touched: set[str] = set()
        self.members = copy.deepcopy(oracle.members)  # s11 group memberships, kept or dropped with the rest
        self.tier_rows: list[tuple] = []
        self.emitted: list[tuple] = []  # SYSTEM events, queued if the event commits
        self.created: list[tuple[str, str]] = []  # (program, participant) its targets created: dropped if it fails

    def touch(self, external_id: str) -> None:
        """Before the event reads or writes a participant, everything due for it has happened."""
        if external_id in self.touched:
            return
        self.touched.add(external_id)
        self.oracle.record(self.oracle.books.due_lot_changes(external_id, self.now))
        self.books.due_lot_changes(external_id, self.now)  # the same changes on the copy
        self.oracle.tier_lifecycle(external_id, self.now)
        self.state(("participant", external_id))

    def touch_group(self, key: str) -> None:
        """decisions.md "Groups": an action that targets a group, or an operation that names it,
        touches it: its lots' maturities and expiries due by now happen first (and stand)."""
        if ("group", key) in self.touched:
            return
        self.touched.add(("group", key))
        self.oracle.record(self.oracle.books.due_lot_changes(key, self.now, "GROUP"))
        self.books.due_lot_changes(key, self.now, "GROUP")

    def state(self, entity: tuple[str, str]) -> EntityState:
        if entity not in self.states:
            committed = self.oracle.states.setdefault(entity, EntityState())
            committed.apply_due_resets(self.now)
            self.states[entity] = copy.deepcopy(committed)
        return self.states[entity]

    def status(self, external_id: str) -> str:
        return self.statuses.get(external_id, self.oracle.participants[external_id].status)

    def balance(self, external_id: str, symbol: str, bucket: str = "AVAILABLE") -> Decimal:
        return self.books.balance(participant_account(external_id, symbol, bucket))

    def visible_balance(self, external_id: str, symbol: str, bucket: str) -> Decimal:
        """s6 / s9.1: a bucket as CEL sees it: lots past their expiry are never spendable, even
        before the expiry entry is written (only a lot this event made expired can be one)."""
        lapsed = sum((lot.remaining for lot in self.books.holder_lots(external_id, symbol)
                      if lot.status == bucket and lot.expires_at is not None and lot.expires_at <= self.now), ZERO)
        return DEC.subtract(self.balance(external_id, symbol, bucket), lapsed)

    def consumed(self, key: tuple) -> Decimal:
        return self.budgets.get(key, self.oracle.budget_consumed.get(key, ZERO))

    def move(self, program_key: str, origin: tuple, kind: str, source: Account, dest: Account, amount: Decimal,
             *, overdraft: bool = False, new_lot: dict | None = None, lots: bool = True) -> list:
        """`lots=False`: the caller put the lots right itself (a reversal); balances only."""
        try:
            taken = self.books.move(source, dest, amount, now=self.now, overdraft=overdraft, new_lot=new_lot,
                                    lot_asset=lots and self.oracle.assets[source[2]].inventory_mode == "LOT")
        except Insufficient as e:
            raise ActionFailed(e.code, str(e)) from None
        self.entries.append(Entry(program_key, origin, kind, source, dest, amount, self.now))
        return taken

    def drop(self) -> None:
        """The event failed: the participants its targets created never were."""
        for program_key, name in self.created:
            del self.oracle.participants[name]
            self.oracle.states.pop(("participant", name), None)
            self.oracle.enrolled.pop((program_key, name), None)

    def commit(self) -> None:
        self.oracle.states.update(self.states)
        self.oracle.books = self.books
        self.oracle.budget_consumed.update(self.budgets)
        for ext, status in self.statuses.items():
            self.oracle.participants[ext].status = status
            self.oracle.status_log.setdefault(ext, []).append((self.now, status))
        self.oracle.members = self.members
        self.oracle.record(self.entries)
        self.oracle.result.tier_history += self.tier_rows


# =============================================================================================
# The interpreter


@dataclass
class Planned:
    """An action whose values were evaluated (before the budget check and before applying)."""

    action: ActionDef
    entity: tuple[str, str] | None = None  # ("participant", ext) | ("program", key)
    amount: Decimal | None = None
    text: str | None = None
    number: Decimal | None = None
    emission: tuple | None = None  # (due, event_data) of SCHEDULE_EVENT / BROADCAST


def _creation_order_ids():
    n = iter(range(10**12))
    return lambda *origin: f"{next(n):012d}"


class Oracle:
    def __init__(self, program_files: list[Path], lot_id=None, system_key=None) -> None:
        self.programs, self.assets, self.groups = load_programs(program_files)
        # s11: group key -> external id -> [role, status]; founding members from the program files
        self.members: dict[str, dict[str, list[str]]] = {
            g.key: {ext: [role, "ACTIVE"] for ext, role in g.members.items()} for g in self.groups.values()}
        self.result = OracleResult()
        self.participants: dict[str, ParticipantRecord] = {}
        self.states: dict[tuple[str, str], EntityState] = {}
        self.books = Books()
        self.posted: set[Account] = set()
        self.budget_consumed: dict[tuple, Decimal] = {}
        self.seen: dict[tuple[str, str, str], tuple] = {}  # (kind, program, idempotency_key) -> payload
        self.arrivals = 0
        # automations (tests/oracle/automations.py): who is enrolled in which program since when
        # (its first row there that passed step 1), each program's first row, and how far each
        # automation's firings were planned
        self.enrolled: dict[tuple[str, str], datetime] = {}
        self.first_instant: dict[str, datetime] = {}
        self.planned: dict[tuple[str, str], datetime] = {}
        self.fired: dict[tuple[str, str, str], datetime] = {}  # (program, automation, participant) -> its last firing
        # decisions.md "SYSTEM events": each participant's statuses, (the instant set, status), in
        # the order they were set: who a BROADCAST or an automation reaches is ACTIVE at its instant
        self.status_log: dict[str, list[tuple[datetime, str]]] = {}
        self.runs = 0
        # s9.1: FIFO by created_at, then the lot's id. Lot ids are derived by the project's id
        # scheme (not part of the contract): the caller may pass it as
        # lot_id(program_key, "event" | "operation", idempotency_key, rule_key, index); by default
        # ids follow creation order.
        self.lot_id = lot_id or _creation_order_ids()
        # SYSTEM events: the queue (due, emission number, Event), who is enrolled where, and
        # their keys (the id scheme is the project's: the harness may pass it in, like lot_id)
        self.queue: list[tuple] = []
        self.emissions = 0
        self.system_key = system_key or system_events.default_key

    def record(self, entries: list[Entry]) -> None:
        for e in entries:
            self.result.ledger.append(e)
            self.posted.update((e.source, e.dest))
            holder = e.dest if e.action_type == "CREDIT" else e.source
            if e.origin and e.origin[0] == "event" and e.action_type in ("CREDIT", "DEBIT") and holder[0] == "PARTICIPANT":
                _, key, rule_key, index = e.origin
                self.result.entries.append(
                    (e.program_key, key, rule_key, index, e.action_type, holder[1], holder[2], e.amount))

    # ---- intake ------------------------------------------------------------------------------

    def run_batch(self, rows: list[dict], operations: list[dict] = ()) -> None:
        """One run: the batch's event rows, then its operation rows, in arrival order (decisions.md)."""
        accepted: list[Event | Operation] = []
        self.runs += 1
        for kind, row in [("event", r) for r in rows] + [("operation", r) for r in operations]:
            self.arrivals += 1
            program_key = row["program_id"]
            key = row["idempotency_key"]
            if key.startswith(system_events.RESERVED):  # decisions.md: system: keys are the engine's
                self.result.rejected.append((key, "reserved_idempotency_key"))
                continue
            if program_key not in self.programs:
                self.result.rejected.append((key, "unknown_program"))
                continue
            payload = _canonical_payload(row) if kind == "event" else _canonical_operation(row)
            # s4: events and operations each have their own keys per program.
            previous = self.seen.get((kind, program_key, key))
            if previous is not None:
                if previous == payload:
                    self.result.duplicates += 1
                else:
                    self.result.rejected.append((key, "idempotency_conflict"))
                continue
            self.seen[(kind, program_key, key)] = payload
            when = row["event_timestamp"] if kind == "event" else row["timestamp"]
            self.first_instant[program_key] = min(self.first_instant.get(program_key, when), when)
            if kind == "event":
                accepted.append(Event(
                    program_key, row["external_id"], key, row["event_timestamp"],
                    _drop_nulls(row.get("event_data") or {}), row.get("recipient_external_id"),
                    self.arrivals,
                ))
            else:
                accepted.append(Operation(program_key, row["operation"], row.get("external_id"), key,
                                          row["timestamp"], _drop_nulls(row.get("params") or {}), self.arrivals))
        # Stream order (s3). Rows of earlier batches were all processed already, so a row
        # timestamped before them is processed after them, with its own `now`.
        # SYSTEM events due by the batch's last row come at their instant, before its rows of
        # that instant still to come; later ones wait for a later batch.
        rows = sorted(accepted, key=lambda e: (e.timestamp, e.arrival))
        self.stream(rows, rows[-1].timestamp if rows else None)

    def stream(self, rows: list, reach: datetime | None) -> None:
        i = 0
        while True:
            row = rows[i] if i < len(rows) else None
            if self.queue and reach is not None and self.queue[0][0] <= reach and (
                    row is None or self.queue[0][0] <= row.timestamp):
                self.process(heapq.heappop(self.queue)[2])
            elif row is not None:
                i += 1
                if isinstance(row, Operation):
                    self.process_operation(row)
                else:
                    self.process(row)
            else:
                break

    # ---- one event (s5) ----------------------------------------------------------------------

    def process(self, ev: Event) -> None:
        program = self.programs[ev.program_key]
        now = ev.timestamp

        # 1. Resolve the participant (and the recipient), then the program's status.
        for external_id in [ev.external_id] + ([ev.recipient] if ev.recipient else []):
            if external_id is not None and external_id not in self.participants:
                if program.on_unknown_participant == "REJECT":
                    return self.finish(ev, "FAILED", "participant_not_found")
                if program.status == "ACTIVE":  # events of inactive programs create nothing
                    self.create_participant(external_id, now)
        if program.status != "ACTIVE":
            return self.finish(ev, "FAILED", "program_inactive")
        self.enrol(program.key, now, ev.external_id, ev.recipient)

        # 2. Time-driven changes due at or before `now`, for the entities the event touches.
        working = Working(self, now)
        if ev.external_id is not None:
            working.touch(ev.external_id)
        if ev.recipient:
            working.touch(ev.recipient)
        working.state(("program", program.key))

        # 3. Rules in ascending order.
        evaluations: list[tuple] = []
        error: str | None = None
        for rule in program.rules:
            if rule.active_from is not None and now < rule.active_from:
                continue
            if rule.active_to is not None and now >= rule.active_to:
                continue
            activation = self.activation(ev, program, working)
            try:
                matched = rule.condition.evaluate(activation, now)
            except CelError:  # a missing key or a type error: the condition is false (s5, s6)
                matched = None
            if not isinstance(matched, ct.BoolType):
                evaluations.append((program.key, ev.idempotency_key, rule.key, "SKIPPED_ERROR"))
                continue
            if not matched:
                continue
            record = (program.key, ev.idempotency_key, rule.key)
            try:
                planned = [self.plan(a, ev, program, activation, working) for a in rule.actions]
            except ActionFailed as failure:
                evaluations.append(record + ("MATCHED",))
                error = failure.code
                break
            consumption = self.check_budgets(rule, planned, program, working, now)
            if consumption is None:
                evaluations.append(record + ("BUDGET_EXCEEDED",))
                continue
            evaluations.append(record + ("MATCHED",))
            for key, amount in consumption:
                working.budgets[key] = DEC.add(working.consumed(key), amount)
            try:
                for p in planned:
                    self.apply(p, ev, rule, program, working)
            except ActionFailed as failure:
                error = failure.code
                break
            if rule.stop_after_match:
                break

        # 5. All or nothing.
        self.result.evaluations.extend(evaluations)
        if error is not None:
            working.drop()
            return self.finish(ev, "FAILED", error)
        self.after_rules(ev, program, working)
        working.commit()
        self.finish(ev, "COMPLETED", None)
        for kind, receiver, due, data, key in working.emitted:
            self.emissions += 1
            heapq.heappush(self.queue, (due, self.emissions, Event(
                program.key, receiver, key, due, data, None, 0, ev.depth + 1,
                kind == "broadcast" or ev.from_broadcast)))

    def enrol(self, program_key: str, at: datetime, *external_ids: str | None) -> None:
        """A row that passed step 1 enrols its participant (and recipient) in the program."""
        for e in external_ids:
            if e is not None:
                self.enrolled.setdefault((program_key, e), at)

    def status_at(self, external_id: str, instant: datetime) -> str:
        """The status set last (in processing order) by a change dated at or before `instant`;
        ACTIVE, as created, when none is."""
        set_by_then = [status for at, status in self.status_log.get(external_id, []) if at <= instant]
        return set_by_then[-1] if set_by_then else "ACTIVE"

    def finish(self, ev: Event, status: str, error: str | None) -> None:
        self.result.events[(ev.program_key, ev.idempotency_key)] = (status, error)

    def create_participant(self, external_id: str, now: datetime) -> None:
        self.participants[external_id] = ParticipantRecord(external_id, participant_id(external_id), now)
        self.states.setdefault(("participant", external_id), EntityState())

    # ---- one operation (s2.3) ------------------------------------------------------------------

    def process_operation(self, op: Operation) -> None:
        program = self.programs[op.program_key]
        done = lambda status, code: self.result.operations.__setitem__(  # noqa: E731
            (op.program_key, op.idempotency_key), (status, code))
        # decisions.md: operations name an existing participant, except upsert_participant
        # (creates one) and fund/burn (name none). CHOICE: resolution first, then the program's
        # status, as for events (README choice 1).
        if op.operation not in NO_PARTICIPANT:
            if op.external_id not in self.participants:
                if op.operation != "upsert_participant":
                    return done("FAILED", "participant_not_found")
                if program.status == "ACTIVE" and upsert_fails_on_params(op.params):
                    return done("FAILED", "invalid_operation")  # and nobody is created
                if program.status == "ACTIVE":
                    self.create_participant(op.external_id, op.timestamp)
        if program.status != "ACTIVE":
            return done("FAILED", "program_inactive")
        if op.operation not in NO_PARTICIPANT:
            self.enrol(program.key, op.timestamp, op.external_id)
        working = Working(self, op.timestamp)
        if op.operation not in NO_PARTICIPANT:
            working.touch(op.external_id)
        try:
            apply_operation(self, op, program, working)
        except ActionFailed as failure:
            return done("FAILED", failure.code)
        working.commit()
        done("COMPLETED", None)

    # ---- CEL variables (s6) --------------------------------------------------------------------

    def activation(self, ev: Event, program: ProgramDef, working: Working) -> dict[str, Any]:
        pstate = working.state(("program", program.key))
        prog = {
            "key": program.key,
            "tags": sorted(pstate.tags),
            "counters": {k: c.value for k, c in pstate.counters.items()},
            "attributes": dict(pstate.attributes),
        }
        if ev.external_id is None:  # a program event
            return {"event": ev.cel_data, "participant": to_cel(copy.deepcopy(EMPTY_PARTICIPANT)), "program": to_cel(prog)}
        record = self.participants[ev.external_id]
        state = working.state(("participant", ev.external_id))
        participant = {
            "id": record.id,
            "external_id": record.external_id,
            "status": working.status(ev.external_id),
            "created_at": record.created_at,
            "tags": sorted(state.tags),
            "counters": {k: c.value for k, c in state.counters.items()},
            "attributes": dict(state.attributes),
            "tiers": T.cel_tiers(program.tiers, state.tiers),
            "balances": {
                symbol: {bucket.lower(): working.visible_balance(ev.external_id, symbol, bucket)
                         for bucket in ("AVAILABLE", "HELD", "DEFERRED")}
                for symbol in program.assets
            },
        }
        # Decimals become doubles (to_cel); created_at becomes a timestamp.
        return {"event": ev.cel_data, "participant": to_cel(participant), "program": to_cel(prog)}

    # ---- actions (s7) ----------------------------------------------------------------------------

    def plan(self, a: ActionDef, ev: Event, program: ProgramDef, activation: dict, working: Working) -> Planned:
        """Evaluate the action's values against the state at the start of its rule."""
        now = ev.timestamp
        p = Planned(a)
        if a.target_type == "PROGRAM":
            p.entity = ("program", program.key)
        elif a.target_type == "GROUP":
            value = a.target_group.evaluate(activation, now)
            if not isinstance(value, (ct.StringType, str)) or not str(value):
                raise ActionFailed("expression_error", "target id is not a non-empty string")
            key = next((k for k in self.groups if str(value) in (k, group_id(k))), None)
            if key is None:
                raise ActionFailed("group_not_found", str(value))
            p.entity = ("group", key)
        elif a.target_type == "PARTICIPANT":
            # The target is a value field: evaluated and looked up with the other values, before
            # budgets. CHOICE: an unknown id in a REJECT program fails here; in a CREATE program
            # the participant is created when the action applies (see `apply`).
            if a.target_external_id is not None:
                value = a.target_external_id.evaluate(activation, now)
                if not isinstance(value, (ct.StringType, str)):
                    raise ActionFailed("expression_error", "target external_id is not a string")
                external_id = str(value)
                if not external_id:
                    raise ActionFailed("expression_error", "target external_id is empty")
                if external_id not in self.participants and program.on_unknown_participant == "REJECT":
                    raise ActionFailed("participant_not_found", external_id)
            elif a.target_participant_id is not None:
                value = a.target_participant_id.evaluate(activation, now)
                if not isinstance(value, (ct.StringType, str)):
                    raise ActionFailed("expression_error", "target participant_id is not a string")
                found = [r.external_id for r in self.participants.values() if r.id == str(value)]
                if not found:
                    raise ActionFailed("participant_not_found", str(value))
                external_id = found[0]
            else:
                raise ActionFailed("expression_error", "PARTICIPANT target without an id")
            p.entity = ("participant", external_id)
        elif ev.recipient or ev.external_id:
            p.entity = ("participant", ev.recipient or ev.external_id)
        elif a.type == "SCHEDULE_EVENT":  # a program event schedules a program event (decisions.md)
            p.entity = ("program", program.key)
        elif a.type != "BROADCAST":  # a program event has no participant; a BROADCAST needs none
            raise ActionFailed(NOBODY, f"{a.type} without a target in a program event")

        if a.type in VALUE_ACTIONS:
            if a.amount is not None:  # HOLD / RELEASE / FORFEIT without one take all their bucket holds
                p.amount = self.checked_amount(a.amount.evaluate_decimal(activation, now), self.assets[a.asset])
        elif a.type in ("TAG", "UNTAG"):
            # CHOICE: like a target's external_id, an expression's tag must be a string (else expression_error).
            tag = a.tag.evaluate(activation, now)
            if not isinstance(tag, ct.StringType):
                raise ActionFailed("expression_error", f"tag is a {type(tag).__name__}, not a string")
            if not str(tag).strip():  # CHOICE: an empty or blank tag fails too (docs/decisions.md)
                raise ActionFailed("expression_error", "a tag must be non-empty text")
            p.text = str(tag).lower()
        elif a.type == "COUNTER":
            p.number = a.value.evaluate_decimal(activation, now)
        elif a.type == "SET_ATTRIBUTE":
            p.text = a.value.evaluate_text(activation, now)
        elif a.type in ("SCHEDULE_EVENT", "BROADCAST"):
            p.emission = self.plan_emission(a, ev, activation)
        return p

    def plan_emission(self, a: ActionDef, ev: Event, activation: dict) -> tuple:
        """(due, event_data) of a SYSTEM event; the chain limits fail the event here."""
        if ev.depth + 1 > system_events.MAX_DEPTH:
            raise ActionFailed("emission_depth_exceeded", f"depth {ev.depth + 1}")
        if a.type == "BROADCAST" and ev.from_broadcast:
            raise ActionFailed("broadcast_loop", ev.idempotency_key)
        delay = a.delay or timedelta(0)
        if isinstance(delay, Expr):
            try:
                delay = delay.evaluate(activation, ev.timestamp)
            except CelError as e:
                raise ActionFailed("expression_error", str(e)) from e
            if not isinstance(delay, (ct.DurationType, timedelta)) or delay < timedelta(0):
                raise ActionFailed("expression_error", f"delay {delay!r}")
            delay = timedelta(microseconds=delay // timedelta(microseconds=1))

        def evaluate(value):
            if isinstance(value, Expr):
                try:
                    return value.evaluate(activation, ev.timestamp)
                except CelError as e:
                    raise ActionFailed("expression_error", str(e)) from e
            if isinstance(value, dict):
                return {k: evaluate(v) for k, v in value.items()}
            if isinstance(value, list):
                return [evaluate(v) for v in value]
            return value
        try:
            payload = system_events.json_of(evaluate(a.payload))
        except system_events.NoJson as e:
            raise ActionFailed("expression_error", str(e)) from e
        return ev.timestamp + delay, system_events.event_data(a.event_name, payload)

    @staticmethod
    def checked_amount(amount: Decimal, asset: AssetDef) -> Decimal:
        if amount < 0:
            raise ActionFailed("amount_not_positive", str(amount))
        if amount == 0:
            return ZERO  # a no-op, not a failure
        if abs(amount) >= Decimal(10) ** MAX_INTEGER_DIGITS:
            # CHOICE: past the ledger's range, an asset's max (itself a ledger amount) is exceeded
            # too, and semantics.md 7 names that failure
            raise ActionFailed("amount_out_of_range" if asset.max_transaction_amount is None
                               else "max_transaction_amount_exceeded", str(amount))
        if decimals_of(amount) > asset.scale:
            raise ActionFailed("invalid_scale", f"{amount} has more than {asset.scale} decimals")
        if asset.max_transaction_amount is not None and amount > asset.max_transaction_amount:
            raise ActionFailed("max_transaction_amount_exceeded", str(amount))
        # Exact (at most `scale` decimals were checked): only the exponent changes, 38.0 -> 38.
        return amount.quantize(Decimal(1).scaleb(-asset.scale), context=DEC)

    def check_budgets(self, rule: RuleDef, planned: list[Planned], program: ProgramDef,
                      working: Working, now: datetime) -> list[tuple] | None:
        """The consumption to record, or None if a budget would be exceeded (decisions.md)."""
        consumption = []
        for index, budget in enumerate(rule.budgets):
            total = ZERO
            for p in planned:
                if p.action.type == "CREDIT" and p.action.asset == budget.asset:
                    total = DEC.add(total, p.amount)
            period = None
            if budget.interval is not None:
                # Epoch-aligned periods (UTC); exact integer microseconds.
                period = (now - EPOCH) // budget.interval
            elif budget.cron is not None:
                # decisions.md: a CRON period starts at each firing (UTC); the period is the latest
                # firing at or before now, found with croniter (independent of engine/cron.py)
                period = _latest_firing(budget.cron, now)
            key = (program.key, rule.key, index, period)
            if DEC.add(working.consumed(key), total) > budget.limit:
                return None
            consumption.append((key, total))
        return consumption

    def apply(self, p: Planned, ev: Event, rule: RuleDef, program: ProgramDef, working: Working) -> None:
        a = p.action
        now = ev.timestamp
        kind, name = p.entity or (None, None)  # None: a BROADCAST of a program event
        if kind == "participant":
            if name not in self.participants:
                # Created and enrolled in the event's program (semantics.md 5.1 "create and
                # enrol") by this action (step 3): undone if the event fails (s5.5), unlike the
                # event's own participant, created by resolution (step 1).
                self.create_participant(name, now)
                self.enrol(program.key, now, name)
                working.created.append((program.key, name))
            working.touch(name)
            if a.type in BLOCKED_FOR_INACTIVE and working.status(name) != "ACTIVE":
                raise ActionFailed("participant_inactive", f"{name} is {working.status(name)}")
        if kind == "group":  # what is due for it first, ARCHIVED or not, as for a participant
            working.touch_group(name)
        # CHOICE (decisions.md "Groups"): an ARCHIVED group is inactive, like a participant
        if kind == "group" and a.type in BLOCKED_FOR_INACTIVE and self.groups[name].status != "ACTIVE":
            raise ActionFailed("group_inactive", name)
        if a.type in VALUE_ACTIONS:
            return self.apply_value(p, ev, rule, program, working)
        if a.type in ("SCHEDULE_EVENT", "BROADCAST"):
            return self.apply_emission(p, ev, rule, program, working)
        state = working.state((kind, name))
        if a.type == "TAG":
            state.tags.add(p.text)
        elif a.type == "UNTAG":
            state.tags.discard(p.text)
        elif a.type == "SET_ATTRIBUTE":
            state.attributes[a.key] = p.text
        elif a.type == "COUNTER":
            counter = state.counters.get(a.key)
            if counter is None:
                counter = state.counters[a.key] = Counter(ZERO, now)
            if a.reset_after is not None:
                counter.reset_after = a.reset_after
            value = DEC.add(counter.value, p.number)
            # CHOICE: counters are DECIMAL(38, 18) like amounts.
            if abs(value) >= Decimal(10) ** MAX_INTEGER_DIGITS or decimals_of(value) > MAX_SCALE:
                raise ActionFailed("amount_out_of_range", f"counter {a.key} = {value}")
            counter.value = value

    def apply_emission(self, p: Planned, ev: Event, rule: RuleDef, program: ProgramDef, working: Working) -> None:
        """SCHEDULE_EVENT: one SYSTEM event for the action's participant, or for no participant (a
        program event) when the action is for the program. BROADCAST: one for every participant
        enrolled in the program so far, at or before the event's instant, and ACTIVE at that
        instant (decisions.md "SYSTEM events": a late broadcast reaches who was there then), in
        participant id order."""
        due, data = p.emission
        a = p.action
        if a.type == "SCHEDULE_EVENT":
            # decisions.md: a SYSTEM event schedules at most one SYSTEM event
            if ev.depth > 0 and any(e[0] == "schedule" for e in working.emitted):
                raise ActionFailed("emission_fanout_exceeded", ev.idempotency_key)
            receivers = [p.entity[1] if p.entity[0] == "participant" else None]
        else:
            enrolled = {ext for (key, ext), at in self.enrolled.items() if key == program.key and at <= due}
            receivers = sorted((e for e in enrolled if self.status_at(e, due) == "ACTIVE"), key=participant_id)
        for receiver in receivers:
            kind = "schedule" if a.type == "SCHEDULE_EVENT" else "broadcast"
            key = self.system_key(kind, program.key, ev.idempotency_key, rule.key, a.index, receiver)
            working.emitted.append((kind, receiver, due, data, key))

    def apply_value(self, p: Planned, ev: Event, rule: RuleDef, program: ProgramDef, working: Working) -> None:
        """s7 table and s8/s9: every value action moves an amount between two accounts."""
        a = p.action
        now = ev.timestamp
        kind, holder = p.entity
        symbol, amount = a.asset, p.amount
        asset = self.assets[symbol]
        issue = issuer(program.key, asset)
        if kind == "program":  # its wallet, funded from and returned to issuance
            mine = lambda bucket: wallet_account(holder, symbol)  # noqa: E731
            issue = system_account("SYSTEM_ISSUANCE", symbol)
        elif kind == "group":
            mine = lambda bucket: group_account(holder, symbol, bucket)  # noqa: E731
        else:
            mine = lambda bucket: participant_account(holder, symbol, bucket)  # noqa: E731
        new_lot = None
        if a.type == "CREDIT":
            source, dest = issue, mine(a.bucket or "AVAILABLE")
            if asset.inventory_mode == "LOT":
                expires_at = now + a.expires_at if a.expires_at is not None else None
                matures_at = now + a.matures_at if a.matures_at is not None else None
                if matures_at is not None and matures_at > now:
                    dest = mine("DEFERRED")  # s7: a future matures_at lands in DEFERRED
                new_lot = self.new_lot(program.key, "event", ev.idempotency_key, rule.key, a.index,
                                       expires_at, matures_at)
        elif a.type == "DEBIT":
            source, dest = mine("AVAILABLE"), issue  # returns value to its source
        elif a.type == "HOLD":
            source, dest = mine("AVAILABLE"), mine("HELD")
        elif a.type == "RELEASE":
            source, dest = mine("HELD"), mine("AVAILABLE")
        else:  # FORFEIT
            source, dest = mine(a.bucket or "AVAILABLE"), system_account("SYSTEM_BREAKAGE", symbol)
        if amount is None and a.type in ("HOLD", "RELEASE", "FORFEIT"):
            # all the source bucket holds; a LOT asset's AVAILABLE only its spendable lots (s9.1)
            amount = working.books.balance(source)
            if asset.inventory_mode == "LOT" and source[3] == "AVAILABLE":
                amount = min(amount, working.books.spendable(source[1], symbol, now, source[0]))
            if amount <= 0:
                return
        if amount == 0:
            return  # s7: an amount of exactly 0 is a no-op
        working.move(program.key, ("event", ev.idempotency_key, rule.key, a.index), a.type, source, dest, amount,
                     overdraft=a.type == "DEBIT" and a.allow_negative, new_lot=new_lot)

    def new_lot(self, program_key: str, kind: str, key: str, rule_key: str | None, index: int,
                expires_at: datetime | None = None, matures_at: datetime | None = None) -> dict:
        origin = (program_key, kind, key, rule_key, index)
        return {"origin": origin, "order_id": self.lot_id(*origin), "program_key": program_key,
                "expires_at": expires_at, "matures_at": matures_at}

    # ---- tiers (semantics.md 10; tests/oracle/tiers.py) -------------------------------------------

    def after_rules(self, ev: Event, program: ProgramDef, working: Working) -> None:
        """A completed event restarts its participant's ACTIVITY_REFRESH windows, then every
        participant it touched is raised to the highest level it qualifies for (id order)."""
        now = ev.timestamp
        subject = working.state(("participant", ev.external_id)) if ev.external_id is not None else None
        for tier in program.tiers if subject is not None else ():
            held = subject.tiers.get(tier.name)
            if held is not None and tier.lifecycle is not None and tier.lifecycle.retention.mode == "ACTIVITY_REFRESH":
                held.window_start = now
        people = sorted((name for kind, name in working.states if kind == "participant"), key=participant_id)
        for ext in people:
            state = working.states[("participant", ext)]
            counters = {k: c.value for k, c in state.counters.items()}
            for tier in program.tiers:
                top = T.best(tier, counters)
                held = state.tiers.get(tier.name)
                if top is not None and (held is None or top.rank > tier.level(held.level).rank):
                    working.tier_rows.append((program.key, tier.key, ext, held and held.level, top.key, "AUTO",
                                              ev.idempotency_key, now))
                    state.tiers[tier.name] = T.Held(top.key, now, now)

    def tier_lifecycle(self, ext: str, until: datetime) -> None:
        """Every review and rollover of the participant due by `until`, in time order (reviews
        before rollovers at one instant), on the committed state."""
        state = self.states.get(("participant", ext))
        tiers = [t for p in self.programs.values() for t in p.tiers if t.lifecycle is not None]
        while state is not None and tiers:
            due = []
            for i, tier in enumerate(tiers):
                held = state.tiers.get(tier.name)
                review = held and T.review_due(tier, held)
                if review:
                    due.append((review[0], 0, i, review[1]))
                marks = [c.rolled_at or c.last_reset_at for k in tier.rolled if (c := state.counters.get(k))]
                if marks:
                    due.append((T.next_close(tier, min(marks)), 1, i, None))
            if not due or min(due)[0] > until:
                return
            at, kind, i, end = min(due)
            tier = tiers[i]
            state.apply_due_resets(at)  # the counters as of that instant
            held = state.tiers.get(tier.name)
            if kind == 0:
                to = T.downgrade(tier, held, {k: c.value for k, c in state.counters.items()})
                if to is None:
                    held.window_start = end
                else:
                    self.result.tier_history.append((tier.program_key, tier.key, ext, held.level, to, "LIFECYCLE",
                                                     None, at))
                    state.tiers[tier.name] = T.Held(to, at, at)
            else:
                for key in tier.rolled:
                    c = state.counters.get(key)
                    if c is not None and (c.rolled_at or c.last_reset_at) < at:
                        c.value = T.rolled_value(tier, held, key, c.value)
                        c.rolled_at = at

    def maintain(self, as_of: datetime) -> None:
        """`perkflow maintain --as-of`: automation firings instant by instant, each after the
        SYSTEM events due by its instant (automations.py); the SYSTEM events still due by
        `as_of`; then everything else due up to `as_of`, for everyone."""
        fire_automations(self, as_of)
        self.stream([], as_of)
        for ext in sorted(self.participants):
            self.record(self.books.due_lot_changes(ext, as_of))
            self.tier_lifecycle(ext, as_of)
        for key in sorted(self.groups):
            self.record(self.books.due_lot_changes(key, as_of, "GROUP"))
        for state in self.states.values():
            state.apply_due_resets(as_of)

    # ---- final output ------------------------------------------------------------------------

    def snapshot(self) -> OracleResult:
        r = self.result
        scale = lambda symbol: Decimal(1).scaleb(-self.assets[symbol].scale)  # noqa: E731
        q = lambda amount, symbol: amount.quantize(scale(symbol), context=DEC)  # noqa: E731
        accounts = self.books.accounts
        r.balances = {(acct[1], acct[2]): q(accounts.get(acct, ZERO), acct[2])
                      for acct in sorted(self.posted, key=repr)
                      if acct[0] == "PARTICIPANT" and acct[3] == "AVAILABLE"}
        r.accounts = {acct: q(amount, acct[2]) for acct, amount in sorted(accounts.items(), key=repr) if amount != 0}
        r.lots = {
            lot.origin: (lot.holder, lot.symbol, q(lot.amount, lot.symbol), q(lot.remaining, lot.symbol), lot.status,
                         lot.created_at, lot.expires_at, lot.matures_at)
            for lot in self.books.lots
        }
        r.redemptions = {
            key: (x.holder, x.symbol, q(x.amount, x.symbol), q(x.reversed, x.symbol), x.quantity, x.reversed_quantity,
                  x.target, x.group)
            for key, x in sorted(self.books.redemptions.items())
        }
        r.statuses = {ext: rec.status for ext, rec in sorted(self.participants.items())}
        r.participants = {
            ext: self.states.get(("participant", ext), EntityState()).snapshot()
            for ext in sorted(self.participants)
        }
        r.tiers = {(ext, prog, key): (held.level, held.reached_at, held.window_start) for (kind, ext), state in sorted(self.states.items())
                   if kind == "participant" for (prog, key), held in state.tiers.items()}
        r.program_state = {
            key: self.states.get(("program", key), EntityState()).snapshot() for key in sorted(self.programs)
        }
        r.group_state = {key: self.states.get(("group", key), EntityState()).snapshot() for key in sorted(self.groups)}
        r.members = {g: {ext: tuple(m) for ext, m in sorted(ms.items()) if ext in self.participants}
                     for g, ms in sorted(self.members.items())}
        return r


def issuer(program_key: str, asset: AssetDef) -> Account:
    """Where credited value comes from and debited value returns (s7, s9.2)."""
    if asset.issuance_policy == "PREFUNDED":
        return wallet_account(program_key, asset.symbol)
    return system_account("SYSTEM_ISSUANCE", asset.symbol)

# =============================================================================================
# Idempotency payloads


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _canonical(value: Any) -> Any:
    """Key order ignored, numbers compared by value, nulls absent."""
    if isinstance(value, dict):
        return ("map", tuple(sorted((k, _canonical(v)) for k, v in value.items() if v is not None)))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_canonical(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float, Decimal)):
        return ("number", Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
    return (type(value).__name__, value)


def _canonical_operation(row: dict) -> tuple:
    return (
        row["operation"],
        row.get("external_id"),
        row["timestamp"].astimezone(timezone.utc),
        _canonical(row.get("params") or {}),
    )


def _canonical_payload(row: dict) -> tuple:
    return (
        row["external_id"],
        row["event_timestamp"].astimezone(timezone.utc),
        _canonical(row.get("event_data") or {}),
        row.get("recipient_external_id"),
    )


# =============================================================================================


def run_oracle(program_files: list[Path], batches: list[list[dict]],
               operations: list[list[dict]] | None = None, lot_id=None,
               maintain_at: datetime | None = None, system_key=None) -> OracleResult:
    """Interpret the programs over the batches, one run after another on the same ledger.
    `operations[i]` are the operation rows run with `batches[i]` (they arrive after its events);
    `maintain_at`: a maintenance run after the last batch."""
    oracle = Oracle([Path(p) for p in program_files], lot_id=lot_id, system_key=system_key)
    for i, batch in enumerate(batches):
        oracle.run_batch(batch, (operations or [])[i] if i < len(operations or []) else [])
    if maintain_at is not None:
        oracle.maintain(maintain_at)
    return oracle.snapshot()


from tests.oracle.operations import NO_PARTICIPANT, apply_operation, upsert_fails_on_params  # noqa: E402 (uses the names above)
from tests.oracle import system_events  # noqa: E402


def _latest_firing(expr: str, now: datetime) -> datetime:
    from dagster._vendored.croniter import croniter  # Dagster's own cron library (a test-only use)
    minute = now.replace(second=0, microsecond=0)
    return minute if croniter.match(expr, minute) else croniter(expr, now).get_prev(datetime)
