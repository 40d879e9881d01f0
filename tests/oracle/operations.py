"""Operations for the oracle (semantics.md 2.3, 7, 9): the Scrip endpoints outside rules, applied
one at a time to a `Working` copy that is kept or dropped as a whole, like an event.

Written from the contract and docs/decisions.md; where both are silent the choice is marked
"CHOICE:" and listed in tests/oracle/README.md. The params (`asset`, `amount`, `type`, `bucket`,
`allow_negative`, `recipients`, `reward`, `quantity`, `redemption`, `key`, `value`,
`reset_after`, `tag`, `status`, `attributes`, `tags`) are the input format of
`perkflow run --operations` (an interface, not a behaviour).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from tests.oracle.books import (
    DEC, ZERO, Redemption, group_account, participant_account, system_account, wallet_account,
)
from tests.oracle.interpreter import (
    MAX_INTEGER_DIGITS, ActionFailed, Counter, ProgramDef, decimals_of, group_id, issuer, parse_go_duration, plain_text,
)

INVALID = "invalid_operation"
PROGRAM_OPERATIONS = frozenset({"fund", "burn"})
#: Scrip's /v1/groups/{id}/balances/...: params.group names the group; the row names no participant.
GROUP_OPERATIONS = frozenset({"group_adjust", "group_hold", "group_release", "group_forfeit"})
NO_PARTICIPANT = PROGRAM_OPERATIONS | GROUP_OPERATIONS
STATUSES = ("ACTIVE", "SUSPENDED", "CLOSED")


# CHOICE: an operation on a participant checks its asset, then that the participant may act
# (participant_inactive), then its other params, then balances: who acts is settled before what
# it does, as for an event, whose participant is resolved before anything is evaluated (s5 step 1).


class _Op:
    def __init__(self, oracle, op, program: ProgramDef, working) -> None:
        self.oracle, self.op, self.program, self.w = oracle, op, program, working
        self.p = op.params
        self.parts = 0

    # ---- params ----

    def required(self, name: str):
        value = self.p.get(name)
        if value is None:
            raise ActionFailed(INVALID, f"{self.op.operation}: params.{name} is required")
        return value

    def asset(self):
        symbol = self.required("asset")
        if symbol not in self.program.assets:
            raise ActionFailed(INVALID, f"unknown asset {symbol!r}")
        return self.oracle.assets[symbol]

    def amount(self, asset, raw=None) -> Decimal:
        """s7's amount checks. CHOICE: an operation must move something, so 0 fails like a
        negative amount (amount_not_positive); a rule action of 0 is a no-op instead."""
        raw = self.p.get("amount") if raw is None else raw
        if raw is None:
            raise ActionFailed(INVALID, "params.amount is required")
        try:
            d = Decimal(raw if isinstance(raw, str) else repr(raw) if isinstance(raw, float) else str(raw))
        except InvalidOperation:
            raise ActionFailed(INVALID, f"amount {raw!r} is not a number") from None
        if not d.is_finite():
            raise ActionFailed(INVALID, f"amount {raw!r} is not a number")
        if d <= 0:
            raise ActionFailed("amount_not_positive", str(d))
        if d >= Decimal(10) ** MAX_INTEGER_DIGITS:
            # CHOICE: past the ledger's range, an asset's max (itself a ledger amount) is exceeded
            # too, and semantics.md 7 names that failure
            raise ActionFailed("amount_out_of_range" if asset.max_transaction_amount is None
                               else "max_transaction_amount_exceeded", str(d))
        if decimals_of(d) > asset.scale:
            raise ActionFailed("invalid_scale", str(d))
        if asset.max_transaction_amount is not None and d > asset.max_transaction_amount:
            raise ActionFailed("max_transaction_amount_exceeded", str(d))
        return d.quantize(Decimal(1).scaleb(-asset.scale), context=DEC)

    # ---- participants ----

    @property
    def who(self) -> str:
        return self.op.external_id

    def active(self, external_id: str) -> None:
        """s7: value and counter changes of a SUSPENDED or CLOSED participant fail."""
        if self.w.status(external_id) != "ACTIVE":
            raise ActionFailed("participant_inactive", f"{external_id} is {self.w.status(external_id)}")

    # ---- moves ----

    def move(self, kind: str, source, dest, amount: Decimal, *, asset, overdraft: bool = False, lot: bool = True,
             arrives: bool = True):
        """One journal entry of this operation (its `part`). Value arriving as a LOT asset is a new
        lot without expiry (s9.3), unless `lot` is False: a reversal restores the lots itself, and
        its moves change balances only; or unless `arrives` is False: the reversal of a redemption
        into a group restored the redeemer's lots, and the group spends its own as any spend."""
        new_lot = None
        if asset.inventory_mode == "LOT" and lot and arrives:
            new_lot = self.oracle.new_lot(self.program.key, "operation", self.op.idempotency_key, None, self.parts)
        taken = self.w.move(self.program.key, ("operation", self.op.idempotency_key, None, self.parts), kind,
                            source, dest, amount, overdraft=overdraft, new_lot=new_lot, lots=lot)
        self.parts += 1
        return taken

    def mine(self, asset, bucket: str = "AVAILABLE"):
        if self.op.operation in GROUP_OPERATIONS:
            return group_account(self.group, asset.symbol, bucket)
        return participant_account(self.who, asset.symbol, bucket)

    def acting(self, any_status: bool = False) -> None:
        """Who acts may: the ACTIVE group of a group operation, else an active participant (any
        participant when `any_status`: forfeit is allowed on inactive ones)."""
        if self.op.operation in GROUP_OPERATIONS:
            ref = self.p.get("group", self.p.get("group_id"))
            if ref is None:
                raise ActionFailed(INVALID, "params.group is required")
            self.group = _group_key(self, ref)
        elif not any_status:
            self.active(self.who)


def _bucket(o: _Op, asset, default: str) -> str:
    bucket = o.p.get("bucket") or default
    if bucket not in ("AVAILABLE", "HELD"):
        raise ActionFailed(INVALID, f"bucket {bucket!r}")
    return bucket


def _adjust(o: _Op) -> None:
    asset = o.asset()
    o.acting()
    amount = o.amount(asset)
    bucket = _bucket(o, asset, "AVAILABLE")
    kind = o.p.get("type")
    issue = issuer(o.program.key, asset)
    if kind == "CREDIT":
        o.move("ADJUSTMENT", issue, o.mine(asset, bucket), amount, asset=asset)
    elif kind == "DEBIT" and bucket != "AVAILABLE":
        # s7: DEBIT is participant AVAILABLE -> its source (decisions.md: as the DEBIT action's bucket)
        raise ActionFailed(INVALID, "adjust: a DEBIT takes AVAILABLE value only")
    elif kind == "DEBIT":
        o.move("ADJUSTMENT", o.mine(asset, bucket), issue, amount, asset=asset,
               overdraft=bool(o.p.get("allow_negative", False)))
    else:
        raise ActionFailed(INVALID, f"adjust type {kind!r}")


def _whole(o: _Op, asset, bucket: str) -> Decimal | None:
    """Scrip: an omitted amount "processes the whole SIMPLE balance, or every matching lot for
    LOT": all the bucket holds (a LOT asset's AVAILABLE: its spendable lots, s9.1); None if nothing."""
    account = o.mine(asset, bucket)
    have = o.w.books.balance(account)
    if asset.inventory_mode == "LOT" and bucket == "AVAILABLE":
        have = min(have, o.w.books.spendable(account[1], account[2], o.op.timestamp, account[0]))
    return have if have > 0 else None


def _hold(o: _Op) -> None:
    asset = o.asset()
    o.acting()
    amount = o.amount(asset) if o.p.get("amount") is not None else _whole(o, asset, "AVAILABLE")
    if amount is None:
        return
    o.move("HOLD", o.mine(asset), o.mine(asset, "HELD"), amount, asset=asset)


def _release(o: _Op) -> None:
    asset = o.asset()
    o.acting()
    amount = o.amount(asset) if o.p.get("amount") is not None else None
    if amount is None:  # s7: RELEASE by amount, or all
        amount = o.w.books.balance(o.mine(asset, "HELD"))
        if amount <= 0:
            return
    o.move("RELEASE", o.mine(asset, "HELD"), o.mine(asset), amount, asset=asset)


def _forfeit(o: _Op) -> None:
    asset = o.asset()
    o.acting(any_status=True)  # Scrip: forfeit is "allowed on CLOSED participants"
    if o.p.get("bucket") is None:  # Scrip: "required for forfeit"
        raise ActionFailed(INVALID, "params.bucket is required")
    bucket = _bucket(o, asset, "AVAILABLE")
    amount = o.amount(asset) if o.p.get("amount") is not None else _whole(o, asset, bucket)
    if amount is None:
        return
    o.move("FORFEIT", o.mine(asset, bucket), system_account("SYSTEM_BREAKAGE", asset.symbol), amount, asset=asset)


def _redeem(o: _Op, reward_key: str | None) -> None:
    """s9.4: AVAILABLE -> the program's redemption target, recorded as a redemption that reversals name."""
    quantity = unit_cost = None
    if reward_key is None:
        asset = o.asset()
        o.active(o.who)
        amount = o.amount(asset)
    else:
        reward = o.program.rewards.get(reward_key)
        if reward is None:
            raise ActionFailed(INVALID, f"unknown reward {reward_key!r}")
        asset = o.oracle.assets[reward.asset]
        o.active(o.who)
        now = o.op.timestamp
        if reward.status != "ACTIVE" or (reward.available_from and now < reward.available_from) or (
                reward.available_until and now >= reward.available_until):
            raise ActionFailed("reward_not_available", reward.key)
        counts = o.w.books.reward_counts
        if reward.redemption_type == "UNIT_BASED":
            quantity = o.p.get("quantity", 1)
            if isinstance(quantity, float) and quantity.is_integer():
                quantity = int(quantity)
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
                raise ActionFailed(INVALID, f"quantity {quantity!r}")
            total = counts.get((o.program.key, reward.key, ""), 0)
            mine = counts.get((o.program.key, reward.key, o.who), 0)
            if reward.max_total is not None and total + quantity > reward.max_total:
                raise ActionFailed("out_of_stock", reward.key)
            if reward.max_per_participant is not None and mine + quantity > reward.max_per_participant:
                raise ActionFailed("max_per_participant_exceeded", reward.key)
            unit_cost = reward.unit_cost
            # s7: the cost is an amount of the asset, checked like one (scale, max_transaction_amount)
            amount = o.amount(asset, raw=format(DEC.multiply(unit_cost, quantity), "f"))
            counts[(o.program.key, reward.key, "")] = total + quantity
            counts[(o.program.key, reward.key, o.who)] = mine + quantity
        else:
            amount = o.amount(asset)
            if amount < reward.unit_cost:
                raise ActionFailed("below_minimum", f"{amount} < {reward.unit_cost}")
    # s9.4: to the program's redemption target, which the redemption keeps for its reversals;
    # decisions.md: a LEDGER_ENTITY group must be ACTIVE, and is touched as any group an operation names
    target, group = o.program.redemption_target, o.program.redemption_group
    if group is not None:
        o.w.touch_group(group)
        if o.oracle.groups[group].status != "ACTIVE":
            raise ActionFailed("group_inactive", group)
    dest = system_account(target, asset.symbol) if group is None else group_account(group, asset.symbol)
    taken = o.move("REDEMPTION", o.mine(asset), dest, amount, asset=asset)
    o.w.books.redemptions[(o.program.key, o.op.idempotency_key)] = Redemption(
        o.program.key, o.op.idempotency_key, o.who, asset.symbol, amount, quantity, unit_cost, reward_key, taken,
        target, group)


def _reverse(o: _Op) -> None:
    """s9.4: partial or full, never more than redeemed; LOT value goes back LIFO to the lots it
    came from, never beyond what each gave, and an expired lot takes nothing back (decisions.md)."""
    key = o.required("redemption")
    r = o.w.books.redemptions.get((o.program.key, key))
    if r is None:
        raise ActionFailed("redemption_not_found", key)
    asset = o.oracle.assets[r.symbol]
    left = DEC.subtract(r.amount, r.reversed)
    quantity = o.p.get("quantity")
    if quantity is not None:
        if isinstance(quantity, float) and quantity.is_integer():
            quantity = int(quantity)
        if r.quantity is None or not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise ActionFailed(INVALID, f"quantity {quantity!r}")
        if quantity > r.quantity - r.reversed_quantity:
            raise ActionFailed("over_reversal", f"{quantity} units")
        amount = DEC.multiply(r.unit_cost, quantity)
    elif o.p.get("amount") is not None:
        amount = o.amount(asset)
        if r.quantity is not None:
            # decisions.md: a UNIT_BASED redemption comes back in whole units, an amount as the units it pays for
            units = amount / r.unit_cost
            if units != units.to_integral_value():
                raise ActionFailed(INVALID, f"{amount} is not whole units of {r.unit_cost}")
            quantity = int(units)
            if quantity > r.quantity - r.reversed_quantity:
                raise ActionFailed("over_reversal", f"{quantity} units")
    else:
        amount = left
        quantity = None if r.quantity is None else r.quantity - r.reversed_quantity
    if amount <= 0 or amount > left:
        raise ActionFailed("over_reversal", f"{amount} of {left} left")
    # decisions.md: a reversal corrects an earlier redemption (the participant's own value coming
    # back, not new value), so like VOID_HOLD it works for SUSPENDED and CLOSED participants.
    o.w.touch(r.holder)
    if r.group is not None:  # decisions.md: the group it credited gives it back, whatever its status
        o.w.touch_group(r.group)
    give_left = ZERO
    if asset.inventory_mode == "LOT":
        lots = {lot.origin: lot for lot in o.w.books.lots}
        debt = o.w.books.owed(r.holder, r.symbol)  # repaid first from what comes back (decisions.md)
        give_left, restored = amount, []
        for origin, took in reversed(r.taken):
            lot = lots[origin]
            if give_left <= 0:
                break
            # "expired": past its expires_at (s9.1), whether or not its expiry entry was written
            if lot.status == "EXPIRED" or (lot.expires_at is not None and lot.expires_at <= o.op.timestamp):
                continue
            give = min(took, give_left)
            lot.remaining = DEC.add(lot.remaining, give)
            lot.status = "AVAILABLE"
            give_left = DEC.subtract(give_left, give)
            restored.append((origin, give))
        given = dict(restored)  # what a lot got back cannot be given back again later
        o.w.books.repay([lots[origin] for origin in given], debt)
        r.taken = [(origin, DEC.subtract(took, given.get(origin, ZERO))) for origin, took in r.taken]
    if r.group is None:
        o.move("REDEMPTION_REVERSAL", system_account(r.target, r.symbol),
               participant_account(r.holder, r.symbol), amount, asset=asset, lot=False)
    else:  # a spend of the group's (its spendable lots, oldest first); short: insufficient_balance
        o.move("REDEMPTION_REVERSAL", group_account(r.group, r.symbol),
               participant_account(r.holder, r.symbol), amount, asset=asset, arrives=False)
    if give_left > 0:
        # decisions.md "Reversals": what expired lots cannot take back comes back expired, as it
        # would have at their expires_at had it not been redeemed (a second part, at the reversal).
        o.move("EXPIRATION", participant_account(r.holder, r.symbol), system_account("SYSTEM_BREAKAGE", r.symbol),
               give_left, asset=asset, lot=False)
    r.reversed = DEC.add(r.reversed, amount)
    if quantity:
        r.reversed_quantity += quantity
        if r.reward:
            counts = o.w.books.reward_counts
            counts[(o.program.key, r.reward, "")] -= quantity
            counts[(o.program.key, r.reward, r.holder)] -= quantity


def _fund(o: _Op) -> None:
    asset = o.asset()
    amount = o.amount(asset)
    if asset.issuance_policy != "PREFUNDED":  # Scrip: fund and burn have no effect on UNLIMITED assets
        return
    o.move("FUND", system_account("SYSTEM_ISSUANCE", asset.symbol), wallet_account(o.program.key, asset.symbol),
           amount, asset=asset)


def _burn(o: _Op) -> None:
    asset = o.asset()
    amount = o.amount(asset)
    if asset.issuance_policy != "PREFUNDED":
        return
    o.move("BURN", wallet_account(o.program.key, asset.symbol), system_account("SYSTEM_BREAKAGE", asset.symbol),
           amount, asset=asset)


def _transfer(o: _Op) -> None:
    """s9.3: one source, 1..100 recipients, atomic, zero-sum, sufficient AVAILABLE, no
    self-transfer; LOT recipients get new lots dated at the transfer without expiry."""
    asset = o.asset()
    o.active(o.who)
    recipients = o.required("recipients")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= 100:
        raise ActionFailed(INVALID, "recipients")
    # Scrip answers a transfer with one journal entry: every recipient is checked (and touched, s3)
    # before any value moves; then one move per recipient, in order.
    legs = []
    for rec in recipients:
        named = [rec.get(k) for k in ("external_id", "participant_id", "group_id") if rec.get(k) is not None] \
            if isinstance(rec, dict) else []
        if len(named) != 1 or not isinstance(named[0], str) or not named[0]:
            raise ActionFailed(INVALID, "a recipient names one of external_id, participant_id or group_id")
        if rec.get("group_id") is not None:  # s11 / Scrip: a group's wallet, ACTIVE
            key = _group_key(o, rec["group_id"])
            legs.append((group_account(key, asset.symbol), o.amount(asset, rec.get("amount"))))
            continue
        ext = rec.get("external_id")
        if not ext:
            raise ActionFailed(INVALID, "recipient without external_id")
        if ext not in o.oracle.participants:
            raise ActionFailed("participant_not_found", ext)
        if ext == o.who:
            raise ActionFailed("self_transfer", ext)
        o.active(ext)
        amount = o.amount(asset, rec.get("amount"))
        o.w.touch(ext)
        legs.append((participant_account(ext, asset.symbol), amount))
    for dest, amount in legs:
        o.move("TRANSFER", o.mine(asset), dest, amount, asset=asset)


def _key(o: _Op) -> str:
    key = o.required("key")
    if not isinstance(key, str) or not key:
        raise ActionFailed(INVALID, f"key {key!r}")
    return key


def _text(raw) -> str:
    """An attribute value as the SET_ATTRIBUTE action stores it (decisions.md): text, numbers in
    plain decimal, booleans true/false; anything else is invalid."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, float)) and raw == raw and raw not in (float("inf"), float("-inf")):
        return plain_text(Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw))
    raise ActionFailed(INVALID, f"value {raw!r}")


def _tag_text(raw) -> str:
    if not isinstance(raw, str) or not raw:
        raise ActionFailed(INVALID, f"tag {raw!r}")
    return raw.lower()


def _set_counter(o: _Op) -> None:
    o.active(o.who)  # s7: COUNTER fails for inactive participants
    key = _key(o)
    raw = o.required("value")
    try:
        if isinstance(raw, bool):
            raise InvalidOperation
        value = Decimal(raw if isinstance(raw, str) else repr(raw) if isinstance(raw, float) else str(raw))
        if not value.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ActionFailed(INVALID, f"value {raw!r}") from None
    reset = o.p.get("reset_after")
    try:
        reset_after = parse_go_duration(reset) if reset else None
    except ValueError:
        raise ActionFailed(INVALID, f"reset_after {reset!r}") from None
    # CHOICE: an explicit set restarts the counter's reset timer. Scrip: "" removes auto-reset,
    # omitting the field leaves it unchanged.
    counters = o.w.state(("participant", o.who)).counters
    if reset is None and key in counters:
        reset_after = counters[key].reset_after
    counters[key] = Counter(value, o.op.timestamp, reset_after)


def _set_attribute(o: _Op) -> None:
    key, value = _key(o), _text(o.required("value"))
    o.w.state(("participant", o.who)).attributes[key] = value


def _tag(add: bool):
    def handler(o: _Op) -> None:
        tag = _tag_text(o.required("tag"))
        tags = o.w.state(("participant", o.who)).tags
        tags.add(tag) if add else tags.discard(tag)
    return handler


def _set_status(o: _Op) -> None:
    status = o.required("status")
    if status not in STATUSES:
        raise ActionFailed(INVALID, f"status {status!r}")
    o.w.statuses[o.who] = status


def _upsert(o: _Op) -> None:
    """Created at resolution if unknown; then status set, attributes merged, tags replaced."""
    if o.p.get("status") is not None:
        _set_status(o)
    attributes, tags = o.p.get("attributes") or {}, o.p.get("tags")
    if not isinstance(attributes, dict) or not all(isinstance(k, str) and k for k in attributes):
        raise ActionFailed(INVALID, f"attributes {attributes!r}")
    if tags is not None and not isinstance(tags, list):
        raise ActionFailed(INVALID, f"tags {tags!r}")
    attributes = {k: _text(v) for k, v in attributes.items()}
    tags = None if tags is None else {_tag_text(t) for t in tags}
    state = o.w.state(("participant", o.who))
    state.attributes.update(attributes)
    if tags is not None:
        state.tags = tags


def upsert_fails_on_params(params: dict) -> bool:
    """decisions.md (session 21): an upsert_participant whose params are wrong creates nobody (Scrip
    answers 400). Wrong: a status outside STATUSES, attributes that are no map of texts, tags that
    are no list of tags, a profile field over Scrip's limit (email 255 with an @, phone 50, names
    255)."""
    try:
        status = params.get("status")
        if status is not None and status not in STATUSES:
            return True
        attributes, tags = params.get("attributes") or {}, params.get("tags")
        if not isinstance(attributes, dict) or not all(isinstance(k, str) and k for k in attributes):
            return True
        [_text(v) for v in attributes.values()]
        if tags is not None and (not isinstance(tags, list) or [_tag_text(t) for t in tags] is None):
            return True
    except ActionFailed:
        return True
    for field, limit in (("email", 255), ("phone", 50), ("first_name", 255), ("last_name", 255),
                         ("display_name", 255)):
        v = params.get(field)
        if v is not None and (not isinstance(v, str) or len(v) > limit or (field == "email" and v and "@" not in v)):
            return True
    return False


HANDLERS = {
    "adjust": _adjust, "hold": _hold, "release": _release, "forfeit": _forfeit,
    "redeem": lambda o: _redeem(o, None), "redeem_item": lambda o: _redeem(o, o.required("reward")),
    "reverse_redemption": _reverse, "fund": _fund, "burn": _burn, "transfer": _transfer,
    "set_counter": _set_counter, "set_attribute": _set_attribute, "tag": _tag(True), "untag": _tag(False),
    "set_participant_status": _set_status, "upsert_participant": _upsert,
}


# ---- group membership (s2.3, s11; decisions.md "Groups") ----
# CHOICE order: the group (group_not_found, then group_inactive for an ARCHIVED one), the role
# (invalid_operation), then membership (already_member / not_a_member), then the ADMIN rule.


def _group(o: _Op) -> dict:
    ref = o.p.get("group", o.p.get("group_id"))
    if ref is None:
        raise ActionFailed(INVALID, "params.group is required")
    return o.w.members[_group_key(o, ref)]


def _group_key(o: _Op, ref) -> str:
    """The ACTIVE group a key or id names."""
    key = next((k for k in o.oracle.groups if isinstance(ref, str) and ref in (k, group_id(k))), None)
    if key is None:
        raise ActionFailed("group_not_found", str(ref))
    o.w.touch_group(key)  # decisions.md "Groups": an operation that names a group touches it
    if o.oracle.groups[key].status != "ACTIVE":
        raise ActionFailed("group_inactive", key)
    return key


def _role(o: _Op, default: str | None) -> str:
    role = o.p.get("role", default)
    if role is None:
        raise ActionFailed(INVALID, "params.role is required")
    if role not in ("ADMIN", "MEMBER"):
        raise ActionFailed(INVALID, f"role {role!r}")
    return role


def _member(members: dict, who: str) -> list:
    m = members.get(who)
    if m is None or m[1] != "ACTIVE":
        raise ActionFailed("not_a_member", who)
    return m


def _not_last_admin(members: dict, who: str) -> None:
    """Scrip: the last ADMIN cannot be removed or demoted."""
    if [e for e, (role, status) in members.items() if role == "ADMIN" and status == "ACTIVE"] == [who]:
        raise ActionFailed("last_admin", who)


def _add_member(o: _Op) -> None:
    members = _group(o)
    role = _role(o, "MEMBER")
    if o.who in members and members[o.who][1] == "ACTIVE":
        raise ActionFailed("already_member", o.who)
    members[o.who] = [role, "ACTIVE"]  # a former member rejoins


def _remove_member(o: _Op) -> None:
    members = _group(o)
    m = _member(members, o.who)
    _not_last_admin(members, o.who)
    m[1] = "LEFT"


def _set_role(o: _Op) -> None:
    members = _group(o)
    role = _role(o, None)
    m = _member(members, o.who)
    if role != "ADMIN":
        _not_last_admin(members, o.who)
    m[0] = role


HANDLERS.update({"group_adjust": _adjust, "group_hold": _hold, "group_release": _release, "group_forfeit": _forfeit})
HANDLERS.update({"add_group_member": _add_member, "remove_group_member": _remove_member,
                 "set_group_member_role": _set_role})


def apply_operation(oracle, op, program: ProgramDef, working) -> None:
    handler = HANDLERS.get(op.operation)
    if handler is None:
        raise ActionFailed(INVALID, f"unknown operation {op.operation!r}")
    handler(_Op(oracle, op, program, working))
