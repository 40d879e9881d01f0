"""Typed models of program files (semantics.md 2.1), field names as in the Scrip API payloads.

Every documented field is declared, so an unknown field is a validation error rather than a
silently ignored typo. Fields whose behaviour is not built yet are declared too, and rejected by
`engine.catalog.support` with "not supported yet: <field>".
"""

from __future__ import annotations

import math
import re
import types
import typing
import uuid
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationInfo,
                      field_validator, model_validator)

from engine.amounts import LIMIT, QUANTUM, decimal_text, fraction_digits
from engine.durations import bound_text

Status = Literal["ACTIVE", "SUSPENDED", "ARCHIVED"]


def _shortest(v: Any) -> Any:
    """YAML may hand us a float: take its shortest repr, never its binary value. Text is read as
    operation params are (`decimal_text`): ASCII digits, sign, point, exponent; `Decimal()` alone
    took '5_000' as 5000 and '١٢' as 12."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        try:
            return decimal_text(v)
        except InvalidOperation:
            raise ValueError(f"{v!r} is not a decimal number (ASCII digits with an optional sign, point "
                             "and exponent)") from None
    return v


def _number_text(v: Any) -> Any:
    """A YAML number in a text field (amounts, values, budget limits) as exact plain decimal text:
    a float by its shortest repr (never its binary value) and without an exponent, because YAML
    hands `0.00001` over as the float whose repr is `1e-05`, which the value-field rule does not
    read as a number (an unquoted amount of 0.00001 at scale 5 was a load error, "neither a
    number nor a CEL expression"). Booleans and text pass through."""
    if isinstance(v, bool):
        return v
    if isinstance(v, float):
        return format(Decimal(repr(v)), "f") if math.isfinite(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    return v


def beyond_scale(v: Decimal, scale: int) -> str | None:
    """Why a bound written in a program file (an asset's max_transaction_amount, a budget's
    limit) cannot be one of its asset's amounts, or None: more decimals than `scale`."""
    if fraction_digits(v) <= scale:
        return None
    step = Decimal(1).scaleb(-scale)
    down, up = (v.quantize(step, rounding=r) for r in (ROUND_FLOOR, ROUND_CEILING))
    return (f"{v} has more decimals than the asset's scale {scale}, which every amount of it has at most; "
            f"write {down} or {up}")


def _positive(v: Decimal) -> Decimal:
    if not v.is_finite() or v <= 0:
        raise ValueError("must be a positive number")
    if v >= LIMIT or v != v.quantize(QUANTUM, context=Context(prec=60)):
        # it is stored as a ledger amount (assets, rewards): DuckDB would refuse one too large
        # (the run crashed, exit 1) and round one with more decimals to a value the engine does
        # not use
        raise ValueError(f"must be below 10^20 with at most 18 decimals (a ledger amount, DECIMAL(38, 18)); got {v}")
    return v


#: A positive decimal from a program file (costs, max_transaction_amount), exact whatever YAML made
#: of it, and one the ledger's DECIMAL(38, 18) columns hold.
PositiveAmount = Annotated[Decimal, BeforeValidator(_shortest), AfterValidator(_positive)]


def _whole_text(v: Any) -> Any:
    """Text in a whole-number field (scale, order, ranks, counts, days) is ASCII digits with an
    optional sign, as decimals are (`_shortest`): pydantic alone reads '1_0' as 10 and '2.0' as 2,
    and `true` as 1."""
    if isinstance(v, bool):
        raise ValueError(f"{str(v).lower()} is not a whole number")
    if isinstance(v, str) and not re.fullmatch(r"[+-]?[0-9]+", v.strip()):
        raise ValueError(f"{v!r} is not a whole number (ASCII digits with an optional sign)")
    return v


#: A whole number from a program file; a YAML number is read as YAML has it.
WholeNumber = Annotated[int, BeforeValidator(_whole_text)]
#: The largest whole numbers the ledger's columns hold (INTEGER: a rule's `order`, a level's
#: `rank`; BIGINT: a reward's `max_total`, `max_per_participant`): past them the catalog write
#: failed with an internal error (exit 1) after validate had passed the file.
INT32_MAX, INT64_MAX = 2 ** 31 - 1, 2 ** 63 - 1
#: Scrip's limit on an automation's `event_name` (scrip-reference.md 18), also a SCHEDULE_EVENT's
#: and a BROADCAST's (the SYSTEM events they emit are an automation's, `source: rule_action`).
EVENT_NAME_MAX = 255


#: A key written in a program file (program, rule, reward, group, automation): a slug, as the ones
#: made from names are (`slug`). Ids derive from keys (semantics.md 2.1) and keys name rows in
#: idempotency keys and reports, so `Bad Key!` or `a:b` is a load error rather than a key.
KEY = r"^[a-z0-9][a-z0-9_\-]{0,127}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A null field is an absent one, as in events (semantics.md 2.2) and as `key: null` and
        `order: null` already were: it takes its default. An empty YAML section (`tiers:` with
        nothing under it, or every rule commented out) is null, and `"budgets": null` Scrip's
        JSON; both were "Input should be a valid list". A required field stays required."""
        if not isinstance(data, dict):
            return data
        defaulted = {k for k, f in cls.model_fields.items() if not f.is_required() and f.default is not None}
        return {k: v for k, v in data.items() if v is not None or k not in defaulted}


def slug(name: str) -> str:
    """The key a name gives when a file leaves `key` out: lowercase ASCII words joined by `_`."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:128]


def _key_from_name(data: Any) -> Any:
    """A program or group written without `key` (Scrip's create bodies have none) gets a slug of
    its name; a name that gives no slug leaves the key required."""
    if isinstance(data, dict) and data.get("key") is None and isinstance(data.get("name"), str):
        if key := slug(data["name"]):
            data = {**data, "key": key}
    return data


class Program(Strict):
    key: str = Field(pattern=KEY)  # default: slug of name (_key_from_name)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=1000)  # scrip-reference.md 2, 21
    on_unknown_participant: Literal["CREATE", "REJECT"] = "CREATE"
    status: Status = "ACTIVE"
    # where redeemed value is posted (Scrip's program fields; semantics.md 9.4)
    redemption_target_type: Literal["SYSTEM_REDEMPTION", "SYSTEM_BREAKAGE", "LEDGER_ENTITY"] = "SYSTEM_REDEMPTION"
    redemption_target_entity_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _key_from_name(cls, data: Any) -> Any:
        # Scrip creates a program from its name alone (seeds/quickstart.txt), so a file without a
        # key gets a slug of the name, as rules, rewards and automations do (semantics.md 2.1)
        return _key_from_name(data)

    @model_validator(mode="after")
    def _target_entity(self) -> "Program":
        # Scrip: LEDGER_ENTITY requires redemption_target_entity_id; the SYSTEM_* values must omit it
        if (self.redemption_target_type == "LEDGER_ENTITY") != (self.redemption_target_entity_id is not None):
            raise ValueError("redemption_target_entity_id is required with redemption_target_type LEDGER_ENTITY "
                             "and must be omitted with SYSTEM_REDEMPTION or SYSTEM_BREAKAGE")
        return self


class Asset(Strict):
    symbol: str
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    inventory_mode: Literal["SIMPLE", "LOT"] = "SIMPLE"
    issuance_policy: Literal["UNLIMITED", "PREFUNDED"] = "UNLIMITED"
    scale: WholeNumber = Field(ge=0, le=18)
    max_transaction_amount: PositiveAmount | None = None
    # Scrip's asset object carries its status (scrip-reference.md 3), so a pasted one may too.
    # ARCHIVED (no new ledger entries, permanently) is not built.
    status: str = "ACTIVE"

    @field_validator("max_transaction_amount")
    @classmethod
    def _within_scale(cls, v: Decimal | None, info: ValidationInfo) -> Decimal | None:
        # every amount of the asset has at most `scale` decimals (semantics.md 7), so 10.005 on a
        # scale-2 asset is a max of 10.00 or a typo for 10.01: which one is not ours to guess
        scale = info.data.get("scale")
        if v is not None and scale is not None and (why := beyond_scale(v, scale)):
            raise ValueError(why)
        return v

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        # Scrip: "1-16 alphanumeric characters" (scrip-reference.md 3, 21)
        if not re.fullmatch(r"[A-Za-z0-9]{1,16}", v):
            raise ValueError(f"{v!r}: a symbol is 1 to 16 ASCII letters and digits (e.g. PTS, NIGHTS, USD)")
        return v

    @field_validator("status")
    @classmethod
    def _active_only(cls, v: str) -> str:
        if v != "ACTIVE":
            raise ValueError(f"{v!r}: only ACTIVE assets are supported (archiving an asset, which in Scrip stops "
                             "all new entries of it, is not built); leave status out or write ACTIVE")
        return v


class Budget(Strict):
    asset: str
    limit: Annotated[str, BeforeValidator(_number_text)]  # "10000" as the contract writes it, or a YAML number
    schedule_type: Literal["INTERVAL", "CRON"] | None = None
    interval: str | None = None
    cron_expression: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _asset_alias(data)


class Target(Strict):
    type: Literal["PARTICIPANT", "GROUP", "PROGRAM"]
    id: str | None = None
    external_id: str | None = None
    participant_id: str | None = None


ActionType = Literal[
    "CREDIT", "DEBIT", "HOLD", "RELEASE", "FORFEIT", "VOID_HOLD", "TAG", "UNTAG", "COUNTER",
    "SET_ATTRIBUTE", "SET_TIER", "SCHEDULE_EVENT", "BROADCAST",
]


class Action(Strict):
    type: ActionType
    asset: str | None = None
    amount: str | None = None
    bucket: Literal["AVAILABLE", "HELD"] | None = None
    allow_negative: StrictBool = False
    # the entry's text: part of the rule, so the rule's limit (scrip-reference.md 21; an
    # operation's, 500, is engine/operations.py DESCRIPTION_MAX)
    description: str | None = Field(default=None, max_length=1000)
    reference_id: str | None = None
    expires_at: str | None = None
    matures_at: str | None = None
    key: str | None = None
    value: str | None = None
    reset_after: str | None = None
    tag: str | None = None
    tier: str | None = None
    level: str | None = None
    event_name: str | None = None
    delay: str | None = None
    payload: dict[str, Any] | None = None
    target: Target | None = None

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _asset_alias(data)

    @field_validator("amount", "value", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # A YAML number is a number: keep its exact decimal text (floats via shortest repr). A
        # static boolean is the literal text "true" / "false", as SET_ATTRIBUTE stores a CEL
        # boolean (semantics.md 7: a static value that is not a number is a literal string).
        if isinstance(v, bool):
            return "true" if v else "false"
        return _number_text(v)


def _bool_text(v: Any) -> Any:
    """A condition written as a YAML or JSON boolean (`condition: true`, unquoted as YAML strings
    may be) is the CEL literal `true` / `false`, the text the same payload has in JSON."""
    return ("true" if v else "false") if isinstance(v, bool) else v


#: CEL text of a condition (a rule's, an automation's filter or guard).
Condition = Annotated[str, BeforeValidator(_bool_text)]


class Rule(Strict):
    name: str = Field(min_length=1, max_length=255)
    key: str | None = Field(default=None, pattern=KEY)  # default: slug of name
    description: str | None = Field(default=None, max_length=1000)  # scrip-reference.md 7, 21
    condition: Condition = Field(min_length=1)
    order: WholeNumber | None = Field(default=None, ge=1, le=INT32_MAX)
    stop_after_match: StrictBool = False
    active_from: datetime | None = None
    active_to: datetime | None = None
    status: Status = "ACTIVE"
    budgets: list[Budget] = []
    actions: list[Action] = Field(min_length=1)

    @field_validator("active_from", "active_to", mode="before")
    @classmethod
    def _to_the_microsecond(cls, v):
        return bound_text(v)

    @field_validator("active_from", "active_to")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return _aware_instant(v)


class Reward(Strict):
    """A catalog reward (semantics.md 9.4; Scrip's rewards catalog)."""
    key: str | None = Field(default=None, pattern=KEY)  # default: slug of name
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=1000)  # scrip-reference.md 15, 21
    category: str | None = Field(default=None, max_length=100)
    redemption_type: Literal["UNIT_BASED", "AMOUNT_BASED"]
    asset: str
    unit_cost: PositiveAmount
    max_total: WholeNumber | None = Field(default=None, ge=1, le=INT64_MAX)
    max_per_participant: WholeNumber | None = Field(default=None, ge=1, le=INT64_MAX)
    status: Literal["DRAFT", "ACTIVE", "OUT_OF_STOCK", "ARCHIVED"] = "ACTIVE"
    available_from: datetime | None = None
    available_until: datetime | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("available_from", "available_until", mode="before")
    @classmethod
    def _to_the_microsecond(cls, v):
        return bound_text(v)  # a half-open window, as a rule's (docs/decisions.md "Time")

    @field_validator("available_from", "available_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return _aware_instant(v)

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _asset_alias(data)

    @model_validator(mode="after")
    def _window(self) -> "Reward":
        # an empty window makes a reward nobody can ever redeem: a mistake, said at load
        if self.available_from and self.available_until and self.available_until <= self.available_from:
            raise ValueError("available_until must be after available_from")
        return self


def _aware_instant(v: datetime | None) -> datetime | None:
    """An instant written in a program file must say its time zone (a naive one would be compared
    with the stream's aware instants)."""
    if v is not None and v.tzinfo is None:
        raise ValueError("must be an RFC 3339 timestamp with a time zone, e.g. 2025-01-01T00:00:00Z")
    return v


def _finite(v: Decimal) -> Decimal:
    if not v.is_finite():
        raise ValueError("must be a finite number")
    return v


#: A tier threshold: any finite decimal, exact whatever YAML made of it.
Threshold = Annotated[Decimal, BeforeValidator(_shortest), AfterValidator(_finite)]


class Criterion(Strict):
    """One qualification test: the participant's counter (0 when never written) against a threshold."""
    counter: str = Field(min_length=1)
    operator: Literal[">=", ">", "==", "<=", "<"]
    threshold: Threshold


class Qualification(Strict):
    mode: Literal["ALL", "ANY"] = "ALL"
    criteria: list[Criterion] = Field(min_length=1)


class TierLevel(Strict):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,99}$")
    name: str | None = Field(default=None, max_length=255)  # Scrip: names are up to 255 characters
    description: str | None = None
    rank: WholeNumber = Field(ge=-INT32_MAX, le=INT32_MAX)
    qualification: Qualification | None = None  # none: reached only by SET_TIER / set_tier
    benefits: dict[str, Any] = {}
    # display only; Scrip: "color (hex)": #RGB or #RRGGBB (with alpha: #RGBA, #RRGGBBAA)
    color: str | None = Field(default=None, pattern=r"^#([0-9A-Fa-f]{3,4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$")
    icon_url: str | None = None  # display only

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _name_alias(data)


class Retention(Strict):
    mode: Literal["PERIOD_BASED", "ACTIVITY_REFRESH"]
    duration: str | None = None  # Go duration: the retention window (docs/decisions.md "Tiers")


class QualificationPeriod(Strict):
    type: Literal["CALENDAR_YEAR", "FIXED_YEAR", "NONE"]
    start_month: WholeNumber | None = Field(default=None, ge=1, le=12)  # FIXED_YEAR
    start_day: WholeNumber | None = Field(default=None, ge=1, le=31)    # FIXED_YEAR


class DowngradePolicy(Strict):
    mode: Literal["DROP_TO_QUALIFYING", "DROP_ONE", "HOLD"]
    grace_days: WholeNumber = Field(default=0, ge=0, le=364)  # shorter than the (yearly) period it follows
    min_level: str | None = None


class TierCounters(Strict):
    """Scrip's rollover field name was not published; `rollover` here (docs/decisions.md)."""
    rollover: Literal["NONE", "EXCESS"] = "NONE"
    qualifying: list[str] | None = None  # none: every counter the tier's criteria read


class StatusValidity(Strict):
    """Scrip shows `extend_months` without its meaning; ours is in docs/decisions.md ("Tiers")."""
    extend_months: WholeNumber = Field(ge=1, le=120)


class Lifecycle(Strict):
    retention: Retention
    qualification_period: QualificationPeriod | None = None
    status_validity: StatusValidity | None = None
    downgrade_policy: DowngradePolicy | None = None
    counters: TierCounters | None = None


class Tier(Strict):
    """A tier type (Scrip: a ranked track of levels inside a program; semantics.md 10)."""
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,99}$")
    name: str | None = Field(default=None, max_length=255)  # Scrip: names are up to 255 characters
    description: str | None = None
    levels: list[TierLevel] = Field(min_length=1)
    lifecycle: Lifecycle | None = None  # none: a "rules-only" tier

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        return _name_alias(data)


def _participant_uuid(v: str | None) -> str | None:
    if v is not None:
        try:
            uuid.UUID(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a participant id (a UUID); name the participant by external_id") from None
    return v


class GroupMember(Strict):
    """A member of a group as declared (Scrip's `members` of POST /v1/groups: participant_id and
    role; here also by external_id, as events name participants)."""
    external_id: str | None = Field(default=None, min_length=1)
    participant_id: str | None = Field(default=None, min_length=1)
    role: Literal["ADMIN", "MEMBER"] = "MEMBER"

    @field_validator("participant_id")
    @classmethod
    def _a_uuid(cls, v: str | None) -> str | None:
        # participant ids are UUIDs: anything else used to pass `validate` and crash the run
        # (exit 1) when the group was written
        return _participant_uuid(v)

    @model_validator(mode="after")
    def _one_id(self) -> "GroupMember":
        if (self.external_id is None) == (self.participant_id is None):
            raise ValueError("give exactly one of external_id or participant_id")
        return self


class Group(Strict):
    """A shared wallet with members (semantics.md 11; Scrip's groups). Project-wide like assets:
    the same key in two program files must be defined identically."""
    key: str = Field(pattern=KEY)  # default: slug of name (Scrip's create-a-group body has no key)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    status: Literal["ACTIVE", "ARCHIVED"] = "ACTIVE"
    members: list[GroupMember] = Field(min_length=1)
    # Scrip's create body: "optional, for audit"; accepted (a participant id), not stored, as the
    # operations' on_behalf_of_participant_id
    on_behalf_of_participant_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _key_from_name(cls, data: Any) -> Any:
        return _key_from_name(data)

    @field_validator("on_behalf_of_participant_id")
    @classmethod
    def _a_uuid(cls, v: str | None) -> str | None:
        return _participant_uuid(v)

    @model_validator(mode="after")
    def _an_admin(self) -> "Group":
        if not any(m.role == "ADMIN" for m in self.members):
            raise ValueError("at least one member must be ADMIN")
        return self


class Trigger(Strict):
    """When an automation fires (Scrip's `trigger`; semantics.md 11)."""
    type: Literal["cron", "one_time", "immediate", "participant_state"]
    cron_expression: str | None = None
    timezone: str = "UTC"  # IANA name: the zone cron fields are read in
    trigger_at: datetime | None = None  # one_time
    schedule_type: Literal["ATTRIBUTE_DATE", "THRESHOLD", "INTERVAL", "CRON"] | None = None  # participant_state
    schedule_config: dict[str, Any] | None = None  # participant_state

    @field_validator("trigger_at", mode="before")
    @classmethod
    def _to_the_microsecond(cls, v):
        # due at or before T exactly when its next microsecond is: up, like a window's bound
        return bound_text(v)

    @field_validator("trigger_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return _aware_instant(v)


class Automation(Strict):
    """An automation (Scrip's automation payload, semantics.md 11): a trigger that emits SYSTEM
    events `event_name` (with `payload`) into the stream."""
    name: str = Field(min_length=1, max_length=255)
    key: str | None = Field(default=None, pattern=KEY)  # default: slug of name
    event_name: str = Field(min_length=1, max_length=EVENT_NAME_MAX)
    scope: Literal["program", "participants"]
    trigger: Trigger
    description: str | None = None
    payload: dict[str, Any] = {}
    participant_filter: Condition | None = None
    guard_condition: Condition | None = None
    filter_hints: dict[str, Any] | None = None  # Scrip's optimisation hints: accepted, not needed here
    participant_id: str | None = None  # one_time + scope program: the one participant it names
    status: Literal["active", "paused"] = "active"

    @field_validator("payload", mode="before")
    @classmethod
    def _no_payload(cls, v):
        # `payload: null` is no payload, nothing merged (Scrip's payload is optional), as on
        # SCHEDULE_EVENT and BROADCAST; it was a load error here alone
        return {} if v is None else v


class ProgramFile(Strict):
    program: Program
    assets: list[Asset] = []
    rules: list[Rule] = []
    tiers: list[Tier] = []
    rewards: list[Reward] = []
    groups: list[Group] = []
    automations: list[Automation] = []


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model that holds the field at `loc` (a pydantic error location into a ProgramFile)."""
    ann: Any = ProgramFile
    for part in loc[:-1]:
        ann = _bare(ann)
        if isinstance(part, int):
            ann = typing.get_args(ann)[0] if typing.get_origin(ann) is list else None
        elif isinstance(ann, type) and issubclass(ann, BaseModel) and part in ann.model_fields:
            ann = ann.model_fields[part].annotation
        else:
            return None
    ann = _bare(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def fields_at(loc: tuple) -> list[str] | None:
    """The fields of the object that holds the field at `loc`, for an "unknown field" message
    that says what the object takes (with Scrip's names it accepts for them); None when the
    location is not inside a model."""
    model = _model_at(loc)
    if model is None:
        return None
    scrip = _SCRIP_NAMES.get(model, {})
    return [f"{f} (or {scrip[f]})" if f in scrip else f for f in sorted(model.model_fields)]


def scrip_name_at(loc: tuple) -> str | None:
    """Scrip's name that the model holding the field at `loc` accepts for it (`display_name` for
    a tier's `name`), if any."""
    return _SCRIP_NAMES.get(_model_at(loc), {}).get(loc[-1]) if loc else None


def _bare(ann: Any) -> Any:
    """`X` of `Annotated[X, ...]` and `X | None`."""
    while True:
        origin = typing.get_origin(ann)
        if origin is Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType) and len(args := [a for a in typing.get_args(ann)
                                                                          if a is not type(None)]) == 1:
            ann = args[0]
        else:
            return ann


def _alias(data: Any, scrip: str, ours: str) -> Any:
    """Accept Scrip's field name `scrip` for our field `ours` (one of the two, not both)."""
    if isinstance(data, dict) and scrip in data:
        data = dict(data)
        if ours in data:
            raise ValueError(f"give either `{ours}` or `{scrip}`, not both")
        data[ours] = data.pop(scrip)
    return data


def _asset_alias(data: Any) -> Any:
    """Scrip's `asset_id` names the asset by symbol here, like `asset`."""
    return _alias(data, "asset_id", "asset")


def _name_alias(data: Any) -> Any:
    """Scrip's `display_name` of a tier or level is our `name`."""
    return _alias(data, "display_name", "name")


#: Scrip's names that models accept for their fields (`_asset_alias`, `_name_alias`), for messages.
_SCRIP_NAMES = {Action: {"asset": "asset_id"}, Budget: {"asset": "asset_id"}, Reward: {"asset": "asset_id"},
                Tier: {"name": "display_name"}, TierLevel: {"name": "display_name"}}
