"""Direct operations (semantics.md 2.3): what the Scrip API offers outside rules, merged into
the same ordered stream as events and applied by the sequential kernel.

Each row names an operation, its program, an idempotency key, a timestamp, the participant
(`external_id` or `participant_id`; none for program-level operations) and `params` with the
fields of the matching Scrip endpoint. A failing operation is FAILED as a whole, like an event.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from engine import amounts
from engine.catalog import Catalog
from engine.durations import parse_duration
from engine.lots import lot_spec
from engine.moves import ActionFailed, move, source_of_issue, system, wallet
from engine.state import Counter, Tx

INVALID = "invalid_operation"
NOT_SUPPORTED = "operation_not_supported"
INACTIVE = "participant_inactive"

#: Operations that act on the program (its wallet), not on a participant.
PROGRAM_OPERATIONS = frozenset({"fund", "burn"})
#: Operations named in semantics.md 2.3 that are recognised but not built yet.
NOT_BUILT = frozenset({"void_hold", "redeem_item", "reverse_redemption", "set_tier"})
STATUSES = ("ACTIVE", "SUSPENDED", "CLOSED")


def apply_operation(op, tx: Tx, catalog: Catalog, effects: list) -> None:
    """Apply one operation (a KernelEvent with `operation` and `params`) to the working state."""
    name = op.operation
    if name in NOT_BUILT:
        raise ActionFailed(NOT_SUPPORTED, f"operation {name} is not supported yet")
    HANDLERS[name](_Op(op, tx, catalog, effects))


class _Op:
    """One operation's view of its params, with typed accessors that fail it clearly."""

    def __init__(self, op, tx: Tx, catalog: Catalog, effects: list):
        self.op, self.tx, self.catalog, self.effects = op, tx, catalog, effects
        self.params = op.event or {}
        self.parts = 0

    def field(self, name: str, default=None, required: bool = True):
        value = self.params.get(name, default)
        if value is None and required:
            raise ActionFailed(INVALID, f"{self.op.operation}: params.{name} is required")
        return value

    def asset(self):
        symbol = self.field("asset", self.params.get("asset_id"))
        if symbol not in self.catalog.assets or symbol not in self.op.program.assets:
            raise ActionFailed(INVALID, f"{self.op.operation}: unknown asset {symbol!r} for program {self.op.program.key}")
        return self.catalog.assets[symbol], str(self.catalog.asset_ids[symbol])

    def amount(self, asset, name: str = "amount", required: bool = True) -> Decimal | None:
        raw = self.field(name, required=required)
        if raw is None:
            return None
        text, err = (raw, None) if isinstance(raw, str) else amounts.python_value_text(raw)
        try:
            text = format(Decimal(text.strip()), "f") if err is None else None
        except (InvalidOperation, AttributeError):
            err = f"{raw!r} is not a number"
        if err:
            raise ActionFailed(INVALID, f"{self.op.operation}: params.{name}: {err}")
        code = amounts.check_text(text, asset)
        if code == amounts.ZERO or code is not None:
            code = amounts.NOT_POSITIVE if code == amounts.ZERO else code
            raise ActionFailed(code, f"{self.op.operation}: {amounts.describe(code, text, asset)}")
        return Decimal(text)

    def participant(self, etype: str = "PARTICIPANT"):
        pid = self.op.subject
        person = self.tx.store.people.get(pid)
        if person is not None and person.status != "ACTIVE":
            raise ActionFailed(INACTIVE, f"{self.op.operation}: participant {person.external_id} is {person.status}")
        return pid

    def move(self, source, dest, amount: Decimal, kind: str, asset, overdraft: bool = False) -> None:
        """A move of this operation; value arriving as LOT gets a new lot without expiry
        (transfers: "dated at the transfer without the source's expiry")."""
        move(self.tx, self.effects, source, dest, amount, kind=kind, asset=asset, overdraft=overdraft,
             lot=lot_spec(self.op, "op", self.parts),
             pos=self.op.pos, rule_id=None, rule_version=None, rule_order=0, action_index=self.parts,
             description=self.params.get("description") or self.op.operation)
        self.parts += 1


def _adjust(o: _Op) -> None:
    asset, aid = o.asset()
    amount = o.amount(asset)
    pid = o.participant()
    bucket = o.field("bucket", "AVAILABLE")
    if bucket not in ("AVAILABLE", "HELD"):
        raise ActionFailed(INVALID, f"adjust: params.bucket must be AVAILABLE or HELD, got {bucket!r}")
    issue = source_of_issue(asset, str(o.op.program.id), aid)
    mine = ("PARTICIPANT", pid, aid, bucket)
    kind = o.field("type")
    if kind == "CREDIT":
        o.move(issue, mine, amount, "ADJUSTMENT", asset)
    elif kind == "DEBIT":
        o.move(mine, issue, amount, "ADJUSTMENT", asset, overdraft=bool(o.field("allow_negative", False)))
    else:
        raise ActionFailed(INVALID, f"adjust: params.type must be CREDIT or DEBIT, got {kind!r}")


def _between(kind: str, source_bucket: str, dest_bucket: str | None):
    """hold / release / forfeit / redeem: one participant bucket to another place."""
    def handler(o: _Op) -> None:
        asset, aid = o.asset()
        pid = o.participant()
        bucket = o.field("bucket", source_bucket) if kind == "FORFEIT" else source_bucket
        source = ("PARTICIPANT", pid, aid, bucket)
        amount = o.amount(asset, required=kind != "RELEASE")
        if amount is None:  # release everything held
            amount = o.tx.balance(source)
            if amount <= 0:
                return
        dest = (("PARTICIPANT", pid, aid, dest_bucket) if dest_bucket
                else system("SYSTEM_BREAKAGE" if kind == "FORFEIT" else "SYSTEM_REDEMPTION", aid))
        o.move(source, dest, amount, kind, asset)
    return handler


def _fund(o: _Op) -> None:
    asset, aid = o.asset()
    o.move(system("SYSTEM_ISSUANCE", aid), wallet(str(o.op.program.id), aid), o.amount(asset), "FUND", asset)


def _burn(o: _Op) -> None:
    asset, aid = o.asset()
    o.move(wallet(str(o.op.program.id), aid), system("SYSTEM_BREAKAGE", aid), o.amount(asset), "BURN", asset)


def _transfer(o: _Op) -> None:
    """One source, 1..100 recipients, atomic and zero-sum; no self-transfer, no overdraft."""
    asset, aid = o.asset()
    pid = o.participant()
    recipients = o.field("recipients")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= 100:
        raise ActionFailed(INVALID, "transfer: params.recipients must list 1 to 100 recipients")
    for r in recipients:
        ext = r.get("external_id") if isinstance(r, dict) else None
        if not ext:
            raise ActionFailed(INVALID, "transfer: every recipient needs an external_id")
        rid = o.tx.store.find_external(ext)
        if rid is None:
            raise ActionFailed("participant_not_found", f"transfer: recipient {ext!r} not found")
        if rid == pid:
            raise ActionFailed("self_transfer", "transfer: a participant cannot transfer to itself")
        person = o.tx.store.people[rid]
        if person.status != "ACTIVE":
            raise ActionFailed(INACTIVE, f"transfer: recipient {ext} is {person.status}")
        o.params = {**o.params, "amount": r.get("amount")}
        o.move(("PARTICIPANT", pid, aid, "AVAILABLE"), ("PARTICIPANT", rid, aid, "AVAILABLE"), o.amount(asset),
               "TRANSFER", asset)


def _state_op(o: _Op, apply) -> None:
    st = o.tx.state("PARTICIPANT", o.op.subject)
    apply(st)


def _set_counter(o: _Op) -> None:
    key = o.field("key")
    raw = o.field("value")
    try:
        value = Decimal(raw if isinstance(raw, str) else repr(raw) if isinstance(raw, float) else str(raw))
    except InvalidOperation:
        raise ActionFailed(INVALID, f"set_counter: params.value {raw!r} is not a number") from None
    reset = o.params.get("reset_after")
    try:
        reset_after = parse_duration(reset) if reset else None
    except ValueError as e:
        raise ActionFailed(INVALID, f"set_counter: params.reset_after: {e}") from None
    o.participant()

    def apply(st):  # an explicit set restarts the reset timer
        st.counters[key] = Counter(value, reset_after, o.op.now)
    _state_op(o, apply)


def _set_attribute(o: _Op) -> None:
    key, value = o.field("key"), o.field("value")
    _state_op(o, lambda st: st.attributes.__setitem__(key, str(value)))


def _tag(add: bool):
    def handler(o: _Op) -> None:
        tag = str(o.field("tag")).lower()
        _state_op(o, lambda st: st.tags.add(tag) if add else st.tags.discard(tag))
    return handler


def _set_status(o: _Op) -> None:
    status = o.field("status")
    if status not in STATUSES:
        raise ActionFailed(INVALID, f"set_participant_status: params.status must be one of {', '.join(STATUSES)}")
    o.tx.set_status(o.op.subject, status)


def _upsert(o: _Op) -> None:
    """Creates (at intake) or updates: attributes are merged, tags replace, status is set."""
    status = o.params.get("status")
    if status is not None:
        _set_status(o)
    attributes = o.params.get("attributes") or {}
    tags = o.params.get("tags")

    def apply(st):
        st.attributes.update({k: str(v) for k, v in attributes.items()})
        if tags is not None:
            st.tags = {str(t).lower() for t in tags}
    _state_op(o, apply)


HANDLERS = {
    "adjust": _adjust,
    "hold": _between("HOLD", "AVAILABLE", "HELD"),
    "release": _between("RELEASE", "HELD", "AVAILABLE"),
    "forfeit": _between("FORFEIT", "AVAILABLE", None),
    "redeem": _between("REDEMPTION", "AVAILABLE", None),
    "fund": _fund,
    "burn": _burn,
    "transfer": _transfer,
    "set_counter": _set_counter,
    "set_attribute": _set_attribute,
    "tag": _tag(True),
    "untag": _tag(False),
    "set_participant_status": _set_status,
    "upsert_participant": _upsert,
}
OPERATIONS = frozenset(HANDLERS) | NOT_BUILT
