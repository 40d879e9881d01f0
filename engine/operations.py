"""Direct operations (semantics.md 2.3): what the Scrip API offers outside rules, merged into
the same ordered stream as events and applied by the sequential kernel.

Each row names an operation, its program, an idempotency key, a timestamp, the participant
(`external_id` or `participant_id`; none for program-level operations) and `params` with the
fields of the matching Scrip endpoint. A failing operation is FAILED as a whole, like an event.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace

from engine import amounts, groups, holds, ids, tiers
from engine.catalog import Catalog
from engine.catalog.models import INT64_MAX
from engine.durations import parse_duration, parse_when
from engine.lots import lot_spec, owed, restore, static_instant
from engine.moves import INSUFFICIENT, ActionFailed, move, plain, source_of_issue, system, wallet
from engine.state import Counter, Redemption, Tx

INVALID = "invalid_operation"
NOT_SUPPORTED = "operation_not_supported"
INACTIVE = "participant_inactive"

#: Operations that act on the program (its wallet), not on a participant.
PROGRAM_OPERATIONS = frozenset({"fund", "burn"})
#: Operations on a group's balance (Scrip's /v1/groups/{id}/balances/adjust | hold | release |
#: forfeit): the group is params.group (or group_id); the row names no participant.
GROUP_BALANCE_OPERATIONS = frozenset({"group_adjust", "group_hold", "group_release", "group_forfeit"})
#: Operations whose row names no participant.
NO_PARTICIPANT = PROGRAM_OPERATIONS | GROUP_BALANCE_OPERATIONS
#: Operations whose row may name one or none: a reversal's redemption names its redeemer (Scrip's
#: POST /v1/redemptions/{id}/reverse names no participant).
OPTIONAL_PARTICIPANT = frozenset({"reverse_redemption"})
#: Operations named in semantics.md 2.3 that are recognised but not built yet.
NOT_BUILT: frozenset[str] = frozenset()
STATUSES = ("ACTIVE", "SUSPENDED", "CLOSED")
#: Scrip's lot narrowing params of hold / release / forfeit (void-hold refuses them), not built.
NARROWING = ("lot_ids", "earned_from", "earned_to")
#: Scrip's transfer body names its source; perkflow's row does (`_same_source`).
SOURCES = ("source_external_id", "source_participant_id", "source_group_id")
#: A transfer recipient's fields (Scrip: amount and one of the three).
RECIPIENT_FIELDS = ("amount", "external_id", "participant_id", "group_id")
#: Scrip's limit on the description of a balance operation, transfer, redemption or fund / burn.
DESCRIPTION_MAX = 500
#: The fields of Scrip's request bodies that restate the row (program_id, idempotency_key, the
#: participant) or describe it (on_behalf_of_participant_id): every operation accepts them.
ROW = frozenset({"program_id", "idempotency_key", "external_id", "participant_id", "on_behalf_of_participant_id"})
#: The asset (symbol, or its id as Scrip names it) and the entry's description of a value operation.
VALUE = ROW | {"asset", "asset_id", "description"}
GROUP = frozenset({"group", "group_id"})
_ADJUST = VALUE | {"type", "amount", "bucket", "allow_negative", "reference_id"}
_BUCKET = VALUE | {"amount", "bucket", "reference_id", *NARROWING}
#: Each operation's params fields (its Scrip endpoint's body): a field of another operation is
#: refused on this one, never ignored (docs/decisions.md "Operations and rewards").
FIELDS: dict[str, frozenset[str]] = {
    "adjust": _ADJUST, "group_adjust": _ADJUST | GROUP,
    "hold": _BUCKET, "release": _BUCKET, "forfeit": _BUCKET,
    "group_hold": _BUCKET | GROUP, "group_release": _BUCKET | GROUP, "group_forfeit": _BUCKET | GROUP,
    # (amount and the narrowing fields are Scrip's void-hold body's, refused with their own message)
    "void_hold": VALUE | {"reference_id", "amount", *NARROWING},
    "fund": VALUE | {"amount"}, "burn": VALUE | {"amount"},
    "redeem": VALUE | {"amount"},
    # (their asset is the reward's, the redemption's: one given must be that one, `_same_asset`)
    "redeem_item": VALUE | {"reward", "reward_id", "quantity", "amount"},
    "reverse_redemption": VALUE | {"redemption", "redemption_id", "amount", "quantity", "reason"},
    "transfer": VALUE | {"recipients", *SOURCES},
    "set_counter": ROW | {"key", "value", "reset_after"},
    "set_attribute": ROW | {"key", "value"},
    "tag": ROW | {"tag"}, "untag": ROW | {"tag"},
    "set_tier": ROW | {"tier", "level", "expires_at"},
    "set_participant_status": ROW | {"status"},
    # (the participant profile: accepted, not stored)
    "upsert_participant": ROW | {"status", "attributes", "tags", "email", "phone", "first_name", "last_name",
                                 "display_name"},
    # (`members` is Scrip's batch form, refused with its own message: engine/groups.py)
    "add_group_member": ROW | GROUP | {"role", "members"}, "remove_group_member": ROW | GROUP,
    "set_group_member_role": ROW | GROUP | {"role"},
}


def apply_operation(op, tx: Tx, catalog: Catalog, effects: list) -> None:
    """Apply one operation (a KernelEvent with `operation` and `params`) to the working state."""
    name = op.operation
    if name in NOT_BUILT:
        raise ActionFailed(NOT_SUPPORTED, f"operation {name} is not supported yet")
    if name in NO_PARTICIPANT and op.subject is not None:
        # the program's wallet or a group's balance: a participant named beside it was ignored
        raise ActionFailed(INVALID, f"{name} acts on the " + ("program's wallet" if name in PROGRAM_OPERATIONS
                                                              else "group in params.group")
                           + "; its row names no participant (leave external_id and participant_id empty)")
    _known_fields(name, op.event or {})
    for field in ("description", "reason"):  # the entry's text (Scrip: 1-500 characters)
        text = (op.event or {}).get(field)
        if text is not None and (not isinstance(text, str) or not 1 <= len(text) <= DESCRIPTION_MAX):
            # ("" was accepted, and the entry then took the operation's name)
            raise ActionFailed(INVALID, f"{name}: params.{field} must be text of 1 to {DESCRIPTION_MAX} characters, "
                                        f"got {text!r:.60}")
    try:
        o = _Op(op, tx, catalog, effects)
        _restates_row(o)
        HANDLERS[name](o)
    except (TypeError, ValueError, AttributeError, ArithmeticError) as e:
        # a params field of the wrong shape (a list for an asset, a map for an amount, ...) that no
        # check above caught: the row's problem, so it fails this operation (its working state is
        # dropped), never the whole batch (semantics.md 13: exit 1 is for internal errors)
        raise ActionFailed(INVALID, f"{name}: invalid params ({type(e).__name__}: {e})") from None


def _known_fields(name: str, params: dict) -> None:
    fields = FIELDS[name]
    unknown = sorted(k for k in params if k not in fields)
    if unknown:
        raise ActionFailed(INVALID, f"{name}: params.{unknown[0]} is not a field of {name}; its fields are "
                                    f"{', '.join(sorted(fields - ROW))} (docs/decisions.md, \"Operations and rewards\")")


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

    def named(self, ours: str, scrips: str, resolve, noun: str):
        """params.<ours>, or Scrip's name for it, params.<scrips>, which must then name the same
        `noun` (`resolve`: a value -> what it names, or None): the second was silently ignored,
        so an asset_id, group_id or reward_id beside another asset, group or reward went unused."""
        mine, theirs = self.params.get(ours), self.params.get(scrips)
        if mine is not None and theirs is not None and resolve(mine) != resolve(theirs):
            raise ActionFailed(INVALID, f"{self.op.operation}: params.{ours} {mine!r} and params.{scrips} {theirs!r} "
                                        f"name different {noun}s; give one of them")
        return self.field(ours, theirs)

    def group_ref(self):
        """The group params.group (or Scrip's group_id) names: a key or an id."""
        return self.named("group", "group_id", lambda ref: getattr(
            self.catalog.resolve_group(ref) if isinstance(ref, str) else None, "sid", None), "group")

    def _symbol(self, symbol):
        if isinstance(symbol, str) and symbol not in self.catalog.assets:
            # Scrip's endpoints name the asset by its id: perkflow's (the `assets` table's, any
            # case, RFC 9562) names it as well as its symbol, as program_id takes key or id
            symbol = {str(i): k for k, i in self.catalog.asset_ids.items()}.get(symbol.strip().lower(), symbol)
        return symbol

    def asset(self):
        symbol = self._symbol(self.named("asset", "asset_id", self._symbol, "asset"))
        if not isinstance(symbol, str) or symbol not in self.catalog.assets or symbol not in self.op.program.assets:
            raise ActionFailed(INVALID, f"{self.op.operation}: unknown asset {symbol!r} for program {self.op.program.key}")
        return self.catalog.assets[symbol], str(self.catalog.asset_ids[symbol])

    def amount(self, asset, name: str = "amount", required: bool = True) -> Decimal | None:
        raw = self.field(name, required=required)
        if raw is None:
            return None
        text, err = (raw, None) if isinstance(raw, str) else amounts.python_value_text(raw)
        try:
            # not "NaN" (crashed the run), "1_00" or non-ASCII digits (amounts.decimal_text)
            text = format(amounts.decimal_text(text), "f") if err is None else None
        except (InvalidOperation, AttributeError):
            err = f"{raw!r} is not a number"
        if err:
            raise ActionFailed(INVALID, f"{self.op.operation}: params.{name}: {err}")
        code = amounts.check_text(text, asset)
        if code == amounts.ZERO or code is not None:
            code = amounts.NOT_POSITIVE if code == amounts.ZERO else code
            raise ActionFailed(code, f"{self.op.operation}: {amounts.describe(code, text, asset)}")
        return Decimal(text)

    def holder(self, *, any_status: bool = False) -> tuple[str, str]:
        """(entity type, id) whose balance the operation moves: the ACTIVE group a group balance
        operation names, else the operation's participant (active unless `any_status`)."""
        if self.op.operation in GROUP_BALANCE_OPERATIONS:
            group = groups.active_group(self.catalog, self.group_ref(), self.op.operation, self.tx)
            return "GROUP", group.sid
        return "PARTICIPANT", self.participant(any_status=any_status)

    def participant(self, etype: str = "PARTICIPANT", *, any_status: bool = False):
        pid = self.op.subject
        person = self.tx.store.people.get(pid)
        if person is not None and person.status != "ACTIVE" and not any_status:
            raise ActionFailed(INACTIVE, f"{self.op.operation}: participant {person.external_id} is {person.status}")
        return pid

    def move(self, source, dest, amount: Decimal, kind: str, asset, overdraft: bool = False, lot: dict | None = None,
             leg: int = 0):
        """A move of this operation; value arriving as LOT gets a new lot without expiry
        (transfers: "dated at the transfer without the source's expiry"). A `leg` after the first
        adds its destination's posting to the entry of the move before (a transfer's recipients).
        Returns the lots taken."""
        meta = self.meta()
        if leg:
            meta |= {"action_index": self.effects[-1]["action_index"], "leg": leg}
        taken = move(self.tx, self.effects, source, dest, amount, kind=kind, asset=asset, overdraft=overdraft,
                     lot=lot or self.lot(), **meta)
        self.parts += 1
        return taken

    def lot(self, **extra) -> dict:
        """The spec of the lots this operation's next entry makes (see engine.moves.move)."""
        return {**lot_spec(self.op, "op", self.parts), **extra}

    def meta(self) -> dict:
        """What the next entry of this operation records besides its accounts."""
        return dict(pos=self.op.pos, rule_id=None, rule_version=None, rule_order=0, action_index=self.parts,
                    description=self.params.get("description") or self.params.get("reason") or self.op.operation)

    def flag(self, name: str) -> bool:
        """A true/false params field (absent or null: false). Text "true" / "false" (any case) is
        read as such, as `perkflow op --param` gives every value as text: bool("false") is true."""
        raw = self.params.get(name)
        value = truth(raw)
        if raw is None or value is not None:
            return bool(value)
        raise ActionFailed(INVALID, f"{self.op.operation}: params.{name} must be true or false, got {raw!r}")

    def no_narrowing(self) -> None:
        """Scrip narrows hold / release / forfeit to `lot_ids` or lots earned in [`earned_from`,
        `earned_to`] (scrip-reference.md 12); perkflow does not, so such a row fails rather than
        moving the whole bucket (docs/decisions.md "Operations and rewards")."""
        for name in NARROWING:
            if self.params.get(name) is not None:
                raise ActionFailed(NOT_SUPPORTED, f"{self.op.operation}: params.{name} is not supported yet; narrow "
                                                  f"by reference_id or amount, or leave it out")

    def reference(self, asset, required: bool = False) -> str | None:
        """params.reference_id: text naming a hold, LOT assets only (lots carry it)."""
        ref = self.field("reference_id", required=required)
        if ref is None:
            return None
        if isinstance(ref, bool) or not isinstance(ref, (str, int, float)) or ref == "":
            raise ActionFailed(INVALID, f"{self.op.operation}: params.reference_id must be non-empty text, got {ref!r}")
        if asset.inventory_mode != "LOT":
            raise ActionFailed(INVALID, f"{self.op.operation}: params.reference_id applies to LOT assets; "
                                        f"{asset.symbol} is SIMPLE")
        return ref if isinstance(ref, str) else plain(Decimal(repr(ref)))


def truth(raw) -> bool | None:
    """A true/false params value (a JSON boolean, or the text true / false in any case, with
    surrounding white space) as a bool; None for anything else. Idempotency compares such fields
    by this value (engine.intake.canonical)."""
    if isinstance(raw, bool):
        return raw
    text = raw.strip().lower() if isinstance(raw, str) else None
    return text == "true" if text in ("true", "false") else None


def _adjust(o: _Op) -> None:
    asset, aid = o.asset()
    etype, eid = o.holder()  # who acts is checked before what it does, as in every operation
    amount = o.amount(asset)
    bucket = o.field("bucket", "AVAILABLE")
    if bucket not in ("AVAILABLE", "HELD"):
        raise ActionFailed(INVALID, f"{o.op.operation}: params.bucket must be AVAILABLE or HELD, got {bucket!r}")
    issue = source_of_issue(asset, str(o.op.program.id), aid)
    mine = (etype, eid, aid, bucket)
    kind = o.field("type")
    reference = o.reference(asset)
    overdraft = o.flag("allow_negative")
    if kind == "CREDIT" and overdraft:
        # Scrip: allow_negative "is allowed on DEBIT only"; on a credit it would mean nothing
        raise ActionFailed(INVALID, f"{o.op.operation}: params.allow_negative applies to a DEBIT; a CREDIT never "
                                    "overdraws (leave it out, or send the clawback as type DEBIT)")
    if kind == "CREDIT" and reference is not None:
        # the direct CREDIT reads reference_id as the CREDIT action does (semantics.md 7): into
        # HELD it stamps the provisional lot, into AVAILABLE it settles the reference
        if bucket == "HELD":
            o.move(issue, mine, amount, "ADJUSTMENT", asset, lot=o.lot(reference_id=reference))
        else:
            holds.settle(o.tx, o.effects, issue, mine, amount, asset, o.lot(reference_id=reference), o.meta())
    elif kind == "CREDIT":
        o.move(issue, mine, amount, "ADJUSTMENT", asset)
    elif kind == "DEBIT" and bucket != "AVAILABLE":
        # semantics.md 7: DEBIT takes AVAILABLE value (the action refuses another bucket at load);
        # from HELD it took reserved value, and with allow_negative drove HELD below zero
        raise ActionFailed(INVALID, f"{o.op.operation}: a DEBIT takes value from AVAILABLE only; to take HELD "
                                    "value, release it first or forfeit it with bucket HELD")
    elif kind == "DEBIT" and reference is not None:
        raise ActionFailed(INVALID, f"{o.op.operation}: params.reference_id applies to a CREDIT (a DEBIT takes no "
                                    "reference; release or forfeit the reference's lots instead)")
    elif kind == "DEBIT":
        o.move(mine, issue, amount, "ADJUSTMENT", asset, overdraft=overdraft)
    else:
        raise ActionFailed(INVALID, f"{o.op.operation}: params.type must be CREDIT or DEBIT, got {kind!r}")


def _between(kind: str, source_bucket: str, dest_bucket: str | None):
    """hold / release / forfeit / redeem: one participant bucket to another place."""
    def handler(o: _Op) -> None:
        o.no_narrowing()
        asset, aid = o.asset()
        # Scrip's forfeit endpoint is "allowed on CLOSED participants" (closed-account cleanup);
        # the FORFEIT rule action is not (semantics.md 7): docs/decisions.md
        etype, eid = o.holder(any_status=kind == "FORFEIT")
        # Scrip's forfeit body: "`bucket` ... **required for forfeit**": a forfeit is irreversible and,
        # without an amount, takes all the bucket holds, so which bucket is never guessed
        bucket = o.field("bucket") if kind == "FORFEIT" else source_bucket
        if bucket not in ("AVAILABLE", "HELD"):
            raise ActionFailed(INVALID, f"{o.op.operation}: params.bucket must be AVAILABLE or HELD, got {bucket!r}")
        source = (etype, eid, aid, bucket)
        reference = o.reference(asset)
        # HOLD stamps the lots it holds; RELEASE and FORFEIT take only the lots of the reference
        lot = o.lot(reference_id=reference) if kind == "HOLD" else o.lot(match=reference)
        amount = o.amount(asset, required=False)
        if amount is None:
            # Scrip: "omitting it processes the whole SIMPLE balance, or every matching lot for
            # LOT": all the bucket holds (of the reference it narrows to; a HOLD's reference only
            # stamps); nothing there is a no-op, as for a release of an empty HELD bucket
            amount = holds.whole(o.tx, kind, source, asset, reference)
            if amount is None:
                return
        dest = ((etype, eid, aid, dest_bucket) if dest_bucket
                else system("SYSTEM_BREAKAGE" if kind == "FORFEIT" else "SYSTEM_REDEMPTION", aid))
        o.move(source, dest, amount, kind, asset, lot=lot)
    return handler


def _void_hold(o: _Op) -> None:
    """Cancel the provisional (credited straight into HELD) lots of a reference back to their
    source; allowed on inactive participants, and a no-op when nothing of the reference is held."""
    asset, aid = o.asset()
    if asset.inventory_mode != "LOT":
        raise ActionFailed(INVALID, f"void_hold: applies to LOT assets; {asset.symbol} is SIMPLE")
    if o.params.get("amount") is not None:
        raise ActionFailed(INVALID, "void_hold: params.amount is not accepted: a void cancels the whole reference")
    o.no_narrowing()
    reference = o.reference(asset, required=True)
    holder = ("PARTICIPANT", o.op.subject, aid, "HELD")
    holds.void(o.tx, o.effects, holder, source_of_issue(asset, str(o.op.program.id), aid), asset, o.lot(),
               reference, o.meta())


def _reward(o: _Op):
    """The reward `reward` (its key) or Scrip's `reward_id` names: a key, or the reward's id (the
    `rewards` table's UUID, read in any case, as assets, programs and groups are named by id)."""
    rewards = o.op.program.rewards

    def find(key):
        reward = rewards.get(key) if isinstance(key, str) else None
        if reward is None and isinstance(key, str):
            reward = next((r for r in rewards.values() if str(r.id) == key.strip().lower()), None)
        return reward

    key = o.named("reward", "reward_id", lambda k: getattr(find(k), "key", None), "reward")
    reward = find(key)
    if reward is None:
        raise ActionFailed(INVALID, f"redeem_item: unknown reward {key!r} in program {o.op.program.key}")
    return reward


def _redeem(o: _Op, reward) -> None:
    """AVAILABLE -> the program's redemption target, recorded as a redemption (semantics.md 9.4)."""
    pid = o.participant()
    if reward is None:
        asset, aid = o.asset()
        amount, quantity, unit_cost = o.amount(asset), None, None
    else:
        m = reward.model
        asset, aid = o.catalog.assets[m.asset], str(reward.asset_id)
        _same_asset(o, aid, f"reward {reward.key}")
        now = o.op.now
        rid = str(reward.id)
        if m.status != "ACTIVE" or (m.available_from and now < m.available_from) or (
                m.available_until and now >= m.available_until):
            why = f"is {m.status}" if m.status != "ACTIVE" else (
                f"is outside its availability window [{m.available_from}, {m.available_until})")
            raise ActionFailed("reward_not_available", f"redeem_item: reward {reward.key} {why}")
        # Scrip: "quantity" (UNIT_BASED, default 1) | "amount" (AMOUNT_BASED): the other one would be ignored
        other = "amount" if m.redemption_type == "UNIT_BASED" else "quantity"
        if o.params.get(other) is not None:
            raise ActionFailed(INVALID, f"redeem_item: params.{other} does not apply to {m.redemption_type} reward "
                                        f"{reward.key}; it takes " + ("a quantity (default 1)" if other == "amount"
                                                                      else "an amount"))
        if m.redemption_type == "UNIT_BASED":
            raw = o.params.get("quantity", 1)
            quantity = _count(raw)
            if quantity is None:
                raise ActionFailed(INVALID, f"redeem_item: params.quantity must be a positive integer, got {raw!r}")
            if o.tx.reward_count(rid) + quantity > INT64_MAX:  # the ledger's counts are BIGINT
                raise ActionFailed(INVALID, f"redeem_item: {quantity} units would take reward {reward.key}'s redeemed "
                                            f"count past {INT64_MAX}, what the ledger holds")
            if m.max_total is not None and o.tx.reward_count(rid) + quantity > m.max_total:
                # what is left and what was asked ("2 of 3 redeemed" read as none left while one was)
                left = max(m.max_total - o.tx.reward_count(rid), 0)  # (max_total may have been lowered)
                raise ActionFailed("out_of_stock", f"redeem_item: reward {reward.key} has {left} of {m.max_total} "
                                                   f"left, {quantity} asked")
            if m.max_per_participant is not None and o.tx.reward_count(rid, pid) + quantity > m.max_per_participant:
                raise ActionFailed("max_per_participant_exceeded",
                                   f"redeem_item: at most {m.max_per_participant} of {reward.key} per participant")
            unit_cost, amount = m.unit_cost, m.unit_cost * quantity
            # the cost is an amount of the asset like any other (semantics.md 7): within its scale
            # and its max_transaction_amount (a unit_cost of 1.5 on a scale-0 asset, or 20 units of
            # a 10-point reward under a max of 100, used to post as they were)
            cost = format(amount, "f")
            code = amounts.check_text(cost, asset)
            if code is not None:
                why = (f"has more decimals than {asset.symbol}'s scale {asset.scale}" if code == amounts.INVALID_SCALE
                       else f"is refused ({amounts.describe(code, cost, asset)})")
                raise ActionFailed(code, f"redeem_item: the cost of {quantity} x {reward.key} at {m.unit_cost}, {cost}, {why}")
            o.tx.count_reward(rid, pid, quantity)
        else:
            quantity, unit_cost = None, m.unit_cost
            amount = o.amount(asset)
            if amount < m.unit_cost:
                raise ActionFailed("below_minimum", f"redeem_item: {amount} is below the minimum {m.unit_cost}")
    # the program's redemption target (semantics.md 9.4), captured on the redemption for its reversals
    target, entity = o.op.program.model.redemption_target_type, _target_group(o)
    taken = o.move(("PARTICIPANT", pid, aid, "AVAILABLE"), _target_account(target, entity, aid), amount,
                   "REDEMPTION", asset)
    o.tx.record_redemption(str(o.op.program.id), Redemption(
        o.op.key, pid, None if reward is None else str(reward.id), aid, quantity, unit_cost, amount,
        Decimal(0), 0, "COMPLETED", taken, o.op.now, target, entity))


def _same_asset(o: _Op, asset_id: str, whose: str) -> None:
    """An asset given to an operation whose asset is fixed (a reward's, a redemption's) restates
    it, as Scrip bodies pasted as params do; another asset fails rather than being ignored."""
    if o.params.get("asset", o.params.get("asset_id")) is not None and o.asset()[1] != asset_id:
        raise ActionFailed(INVALID, f"{o.op.operation}: params.asset is not the asset of {whose}; leave it out")


def _target_account(target_type: str, entity: str | None, asset_id: str) -> tuple:
    """Where a redemption's value sits: the system account of its target, or the AVAILABLE of the
    group a LEDGER_ENTITY redemption credited (its reversals take it back from there)."""
    return system(target_type, asset_id) if entity is None else ("GROUP", entity, asset_id, "AVAILABLE")


def _target_group(o: _Op) -> str | None:
    """The id of the group a LEDGER_ENTITY program redeems into, which must be ACTIVE (None for the
    SYSTEM_* targets). The key or id was checked at load; the group is touched (what is due for it
    happens first), as by any operation that names a group (docs/decisions.md "Redemption target")."""
    model = o.op.program.model
    if model.redemption_target_type != "LEDGER_ENTITY":
        return None
    try:
        return groups.active_group(o.catalog, model.redemption_target_entity_id, o.op.operation, o.tx).sid
    except ActionFailed as f:
        raise ActionFailed(f.code, f"{f.message}: it is program {o.op.program.key}'s redemption target "
                                   "(redemption_target_entity_id)") from None


def _count(value) -> int | None:
    """A positive whole number of units (JSON params bring numbers as doubles: 2.0 is 2); text of
    ASCII digits only (`isdigit` alone takes '١٢' as 12 and '²', which int() refuses)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value >= 1 else None


def _redemption_key(o: _Op, program_id: str) -> str:
    """The redemption a reversal names: by its id (`redemption_id`, as Scrip's POST
    /v1/redemptions/{id}/reverse), or by the idempotency key of the operation that made it
    (`redemption`); both given must name the same one."""
    key, rid = o.params.get("redemption"), o.params.get("redemption_id")
    for field, value in (("redemption", key), ("redemption_id", rid)):
        if value is not None and not (isinstance(value, str) and value):
            # a key or an id is text (a number here stopped the run at the ledger lookup, exit 1)
            raise ActionFailed(INVALID, f"reverse_redemption: params.{field} must be text, got {value!r}")
    if rid is None:
        if key is None:
            raise ActionFailed(INVALID, "reverse_redemption: params.redemption_id (or params.redemption, the "
                                        "redeeming operation's idempotency key) is required")
        return key
    found = o.tx.store.redemption_key(program_id, rid)
    if found is None:
        raise ActionFailed("redemption_not_found", f"reverse_redemption: no redemption with id {rid!r} in program "
                                                   f"{o.op.program.key}")
    if key is not None and key != found:
        raise ActionFailed(INVALID, f"reverse_redemption: params.redemption {key!r} and params.redemption_id {rid!r} "
                                    "name different redemptions")
    return found


def _reverse(o: _Op) -> None:
    """Partial or full, never more than redeemed; LOT value goes back LIFO to its lots."""
    program_id = str(o.op.program.id)
    key = _redemption_key(o, program_id)
    r = o.tx.redemption(program_id, key)
    if r is None:
        raise ActionFailed("redemption_not_found", f"reverse_redemption: no redemption with key {key!r}")
    asset = next(a for s, a in o.catalog.assets.items() if str(o.catalog.asset_ids[s]) == r.asset_id)
    _same_asset(o, r.asset_id, f"redemption {key!r}")
    left = r.amount - r.reversed_amount
    quantity = o.params.get("quantity")
    if quantity is not None and o.params.get("amount") is not None:
        # Scrip: `amount` (raw or AMOUNT_BASED) | `quantity` (UNIT_BASED): one of them (the amount was ignored)
        raise ActionFailed(INVALID, "reverse_redemption: give params.quantity or params.amount, not both")
    if quantity is not None:
        quantity = _count(quantity)
        if r.quantity is None or quantity is None:
            raise ActionFailed(INVALID, "reverse_redemption: quantity applies to UNIT_BASED redemptions, as a positive integer")
        if quantity > r.quantity - r.reversed_quantity:
            raise ActionFailed("over_reversal", f"reverse_redemption: only {r.quantity - r.reversed_quantity} units left to reverse")
        amount = r.unit_cost * quantity
    elif o.params.get("amount") is not None:
        amount = o.amount(asset)
        if r.quantity is not None:
            # A UNIT_BASED redemption is reversed by whole units (Scrip: `quantity` for UNIT_BASED,
            # `amount` for raw or AMOUNT_BASED), so that its units come back with its value: an
            # amount is taken as the units it pays for, and one that is not whole units is refused
            # (it would leave the stock and the per-participant count with units whose value is gone).
            units, rest = divmod(amount, r.unit_cost)
            if rest != 0:
                raise ActionFailed(INVALID, f"reverse_redemption: {plain(amount)} is not a whole number of units of "
                                            f"{plain(r.unit_cost)}; reverse a UNIT_BASED redemption by quantity")
            quantity = int(units)
            if quantity > r.quantity - r.reversed_quantity:
                raise ActionFailed("over_reversal",
                                   f"reverse_redemption: only {r.quantity - r.reversed_quantity} units left to reverse")
    else:
        amount = left
        quantity = None if r.quantity is None else r.quantity - r.reversed_quantity
    if left <= 0:
        raise ActionFailed("over_reversal", f"reverse_redemption: redemption {key!r} is already fully reversed")
    if amount <= 0 or amount > left:
        raise ActionFailed("over_reversal", f"reverse_redemption: {plain(amount)} exceeds the {plain(left)} left to reverse")
    holder = ("PARTICIPANT", r.participant_id, r.asset_id)
    # The redeemer may be named by no row of this batch (another participant's operation): its
    # balances, state and live lots, and the lots the redemption took (consumed ones too), are
    # loaded before anything is due or given back. Without them a reversal in a later batch found
    # none of its lots and sent the whole amount to SYSTEM_BREAKAGE as if they had expired.
    o.tx.store.preload([r.participant_id], [])
    if asset.inventory_mode == "LOT":
        o.tx.store.load_lots(holder, [lot_id for lot_id, _ in r.lots_taken])
    o.tx.touch(r.participant_id)  # what is due for the redeemer happens before its value comes back
    # the target captured at the redemption: a system account, or the group it credited, which
    # gives the value back as a spend of its own (its spendable lots, FIFO), whatever its status
    entity = r.target_entity_id
    if entity is not None:
        group = o.catalog.groups_by_id.get(entity)
        if group is None:  # its balance is not loaded either: nothing could be checked or taken back
            raise ActionFailed(groups.GROUP_NOT_FOUND, f"reverse_redemption: group {entity}, the target of redemption "
                                                       f"{key!r}, is declared in no program file; declare it again "
                                                       "to reverse the redemption")
        o.tx.touch(entity, "GROUP")
    source = _target_account(r.target_type, entity, r.asset_id)
    lot, lapsed = None, Decimal(0)
    if asset.inventory_mode == "LOT":
        # (an overdrawn redeemer repays its overdraft from the restored lots first: engine.lots.repay)
        debt = owed(o.tx.lots(holder), o.tx.balance((*holder, "AVAILABLE")))
        given = dict(restore(o.tx.lots(holder), r.lots_taken, amount, o.op.now, debt, seed=o.lot()["id"]))
        # what a lot got back cannot be given back again by a later partial reversal
        r.lots_taken = [(lot_id, took - given.get(lot_id, Decimal(0))) for lot_id, took in r.lots_taken]
        lot = {"restore": True}
        lapsed = amount - sum(given.values(), Decimal(0))
    try:
        o.move(source, (*holder, "AVAILABLE"), amount, "REDEMPTION_REVERSAL", asset,
               lot=lot if entity is None or lot is None else o.lot(gives_back=True))
    except ActionFailed as f:
        if entity is None or f.code != INSUFFICIENT:
            raise
        # nothing is taken from anyone else: the group that received the value must still hold it
        raise ActionFailed(f.code, f"reverse_redemption: group {group.key}, the target of redemption {key!r}, "
                                   f"cannot give back {plain(amount)} {asset.symbol}: {f.message}") from None
    if lapsed > 0:
        # docs/decisions.md, "Reversals": value whose lots expired (by now) comes back expired, as
        # it would have at their expires_at had it not been redeemed: to SYSTEM_BREAKAGE, now
        o.move((*holder, "AVAILABLE"), system("SYSTEM_BREAKAGE", r.asset_id), lapsed, "EXPIRATION", asset, lot=lot)
    r.reversed_amount += amount
    if quantity:
        r.reversed_quantity += quantity
        if r.reward_id:
            o.tx.count_reward(r.reward_id, r.participant_id, -quantity)
    r.status = "FULLY_REVERSED" if r.reversed_amount == r.amount else "PARTIALLY_REVERSED"
    o.tx.record_redemption(program_id, r)


def _fund(o: _Op) -> None:
    asset, aid = o.asset()
    amount = o.amount(asset)
    if asset.issuance_policy == "PREFUNDED":  # Scrip: "no effect on UNLIMITED assets" (they mint)
        o.move(system("SYSTEM_ISSUANCE", aid), wallet(str(o.op.program.id), aid), amount, "FUND", asset)


def _burn(o: _Op) -> None:
    asset, aid = o.asset()
    amount = o.amount(asset)
    if asset.issuance_policy == "PREFUNDED":
        o.move(wallet(str(o.op.program.id), aid), system("SYSTEM_BREAKAGE", aid), amount, "BURN", asset)


def _transfer(o: _Op) -> None:
    """One source, 1..100 recipients, atomic and zero-sum; no self-transfer, no overdraft. One
    journal entry (Scrip answers one journal_entry_id): the source's posting of the total, then
    one posting per recipient (each recipient a leg of the entry, engine.moves.move)."""
    asset, aid = o.asset()
    pid = o.participant()
    _same_source(o)
    recipients = o.field("recipients")
    if isinstance(recipients, str):  # `perkflow op --param recipients=[...]`: every --param value is text
        raise ActionFailed(INVALID, "transfer: params.recipients must be a list of 1 to 100 recipients, not text "
                                    "(with perkflow op, give the list as JSON in --params '{\"recipients\": [...]}')")
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= 100:
        raise ActionFailed(INVALID, "transfer: params.recipients must list 1 to 100 recipients")
    # every recipient and amount is checked (and what is due for the recipient applied, semantics.md
    # 3) before value moves, so that the legs of the entry follow one another
    legs = []
    for i, r in enumerate(recipients):
        dest = _recipient(o, r, i)
        name = f"recipients[{i}].amount"  # (as the messages of o.amount name it)
        o.params = {**o.params, name: r.get("amount")}
        legs.append((dest, o.amount(asset, name)))
    for leg, (dest, amount) in enumerate(legs):
        o.move(("PARTICIPANT", pid, aid, "AVAILABLE"), (*dest, aid, "AVAILABLE"), amount, "TRANSFER", asset, leg=leg)


def _same_source(o: _Op) -> None:
    """A Scrip transfer body pasted as params names its source, which the row names already: a
    source that is the row's participant restates it; another participant fails the transfer
    rather than move the row's value; a group cannot be a source (docs/decisions.md "Groups")."""
    ext, ref, group = (o.params.get(k) for k in SOURCES)
    if group is not None:
        raise ActionFailed(NOT_SUPPORTED, "transfer: params.source_group_id: a transfer from a group is not supported; "
                                          "the source is the row's participant (external_id or participant_id)")
    for field, value, by_external in (("source_external_id", ext, True), ("source_participant_id", ref, False)):
        if value is not None and not _is_the_participant(o, value, by_external):
            raise _not_the_row(o, field, value, "participant; the source of a transfer is the row's external_id or "
                                                "participant_id")


def _restates_row(o: _Op) -> None:
    """Scrip's body fields that restate the row (its program, key and participant), pasted as
    params, must be the row's: another program, key or participant fails the operation rather
    than being ignored while the row's is used (docs/decisions.md "Operations and rewards")."""
    p, op = o.params, o.op
    program = p.get("program_id")
    if program is not None and program != op.program.key and ids.uuid_text(program) != str(op.program.id):
        raise _not_the_row(o, "program_id", program, f"program ({op.program.key})")
    if p.get("idempotency_key") is not None and p["idempotency_key"] != op.key:
        raise _not_the_row(o, "idempotency_key", p["idempotency_key"], f"idempotency_key ({op.key})")
    for field, by_external in (("external_id", True), ("participant_id", False)):
        if p.get(field) is not None and not _is_the_participant(o, p[field], by_external):
            raise _not_the_row(o, field, p[field], "participant" if op.subject else "participant (it names none)")


def _is_the_participant(o: _Op, value, by_external: bool) -> bool:
    """Whether `value` (an external id, or a participant id in any case) names the row's participant."""
    if o.op.subject is None or not isinstance(value, str):
        return False
    found = o.tx.store.find_external(value, o.op.pos) if by_external else ids.uuid_text(value)
    return found == o.op.subject


def _not_the_row(o: _Op, field: str, value, what: str) -> ActionFailed:
    return ActionFailed(INVALID, f"{o.op.operation}: params.{field} {value!r} is not the row's {what}")


def _recipient(o: _Op, r, i: int) -> tuple[str, str]:
    """(entity type, id) of recipient `i` of a transfer, which must be able to receive."""
    # Scrip: each recipient is {amount, one of external_id | participant_id | group_id}; another
    # field is refused like any unknown params field (a typo `amout` was ignored)
    extra = sorted(k for k in r if k not in RECIPIENT_FIELDS) if isinstance(r, dict) else []
    if extra:
        raise ActionFailed(INVALID, f"transfer: params.recipients[{i}].{extra[0]} is not a field of a recipient; its "
                                    f"fields are {', '.join(RECIPIENT_FIELDS)}")
    ext, ref, gref = ((r.get("external_id"), r.get("participant_id"), r.get("group_id")) if isinstance(r, dict)
                      else (None, None, None))
    given = {k: v for k, v in zip(RECIPIENT_FIELDS[1:], (ext, ref, gref)) if v is not None}
    (field, value), = given.items() if len(given) == 1 else ((None, None),)
    if field is None or not isinstance(value, str) or not value:
        # say which it got: "needs one of" read as if none had been given when two were
        got = " and ".join(given) if field is None else f"{field} {value!r} (an id is non-empty text)"
        raise ActionFailed(INVALID, f"transfer: params.recipients[{i}] needs exactly one of external_id, "
                                    f"participant_id or group_id; got {got or 'none'}")
    if gref is not None:  # a group's wallet (docs/decisions.md "Groups")
        return "GROUP", groups.active_group(o.catalog, gref, "transfer", o.tx).sid
    # as of this point of the stream (semantics.md 3)
    rid = o.tx.store.find_external(ext, o.op.pos) if ext else o.tx.store.find_id(ref, o.op.pos)
    ext = ext or ref
    if rid is None:
        raise ActionFailed("participant_not_found", f"transfer: recipient {ext!r} not found")
    if rid == o.op.subject:
        raise ActionFailed("self_transfer", "transfer: a participant cannot transfer to itself")
    person = o.tx.store.people[rid]
    if person.status != "ACTIVE":
        raise ActionFailed(INACTIVE, f"transfer: recipient {ext} is {person.status}")
    o.tx.touch(rid)  # what is due for the recipient happens before it receives (semantics.md 3)
    return "PARTICIPANT", rid


def _state_op(o: _Op, apply) -> None:
    st = o.tx.state("PARTICIPANT", o.op.subject)
    apply(st)


def _key(o: _Op) -> str:
    """params.key of set_counter / set_attribute: non-empty text."""
    key = o.field("key")
    if not isinstance(key, str) or not key:
        raise ActionFailed(INVALID, f"{o.op.operation}: params.key must be non-empty text, got {key!r}")
    return key


def _attribute_text(o: _Op, raw, what: str) -> str:
    """An attribute value as the SET_ATTRIBUTE action stores it (docs/decisions.md): text as it is,
    numbers in plain decimal, booleans as true/false; lists and maps fail (invalid_operation)."""
    from engine.kernel import attribute_text  # (the kernel imports this module)
    try:
        return attribute_text(raw, f"{o.op.operation}: {what}")
    except ActionFailed as f:
        raise ActionFailed(INVALID, f.message) from None


def _set_counter(o: _Op) -> None:
    o.participant()  # who acts is checked before what it does, as in every operation
    key = _key(o)
    raw = o.field("value")
    try:
        if isinstance(raw, bool):
            raise InvalidOperation
        value = amounts.decimal_text(raw if isinstance(raw, str) else repr(raw) if isinstance(raw, float) else str(raw))
    except InvalidOperation:
        raise ActionFailed(INVALID, f"set_counter: params.value {raw!r} is not a number") from None
    # a counter is a DECIMAL(38, 18), as the COUNTER action keeps it (1e30 was stored as null,
    # 19 decimals rounded)
    if abs(value) >= amounts.LIMIT:
        raise ActionFailed(amounts.OUT_OF_RANGE, f"set_counter: params.value {raw!r} is too large (at most "
                                                 f"{amounts.MAX_INTEGER_DIGITS} integer digits)")
    if amounts.fraction_digits(value) > 18:
        raise ActionFailed(INVALID, f"set_counter: params.value {raw!r} has more than 18 decimals")
    # Scrip: `""` removes auto-reset, omitting the field (or null) leaves it unchanged
    reset = o.params.get("reset_after")
    if reset is not None and not isinstance(reset, str):
        # the number 0 read as "" and silently removed the auto-reset, while "0s" was refused
        raise ActionFailed(INVALID, f"set_counter: params.reset_after must be a Go duration text such as "
                                    f"\"720h\" (or \"\" to remove the auto-reset), got {reset!r}")
    try:
        reset_after = parse_duration(reset) if reset else None
    except ValueError as e:
        raise ActionFailed(INVALID, f"set_counter: params.reset_after: {e}") from None
    if reset_after is not None and reset_after <= timedelta(0):
        # as the COUNTER action's (a load error there): "0s" made every later touch of the
        # participant divide by zero (exit 1), "-5h" reset the counter at once
        raise ActionFailed(INVALID, f"set_counter: params.reset_after {reset!r} must be a positive duration")

    def apply(st):  # an explicit set restarts the reset timer
        before = st.counters.get(key)
        keep = reset is None and before is not None
        st.counters[key] = Counter(value, before.reset_after if keep else reset_after, o.op.now)
    _state_op(o, apply)


def _set_attribute(o: _Op) -> None:
    key = _key(o)
    value = _attribute_text(o, o.field("value"), "params.value")
    _state_op(o, lambda st: st.attributes.__setitem__(key, value))


def _tag_text(o: _Op, raw) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ActionFailed(INVALID, f"{o.op.operation}: a tag must be non-empty text, got {raw!r}")
    return raw.lower()


def _tag(add: bool):
    def handler(o: _Op) -> None:
        tag = _tag_text(o, o.field("tag"))
        _state_op(o, lambda st: st.tags.add(tag) if add else st.tags.discard(tag))
    return handler


def _set_tier(o: _Op) -> None:
    """Scrip's PUT .../state/tiers/{key}: the participant must be active; `expires_at` schedules
    the level's removal and replaces any earlier expiry (engine/tiers.py)."""
    tier = tiers.tier_of(o.op.program, o.field("tier"))
    level = tiers.level_key(tier, o.field("level"), "set_tier: params.level", unknown=INVALID, not_text=INVALID)
    expires_at = _expiry(o)
    o.participant()
    tiers.assign(o.tx, tier, o.op.subject, level, expires_at, tiers.source_of(o.op))


def _expiry(o: _Op) -> datetime | None:
    """set_tier's params.expires_at: an RFC 3339 instant or a Go duration from the operation's
    timestamp (as a lot's expires_at), after that timestamp; null or absent: no expiry."""
    raw = o.params.get("expires_at")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ActionFailed(INVALID, f"set_tier: params.expires_at must be text (an RFC 3339 timestamp or a Go duration such as 720h), got {raw!r}")
    try:
        at = static_instant(parse_when(raw), o.op.now)
    except ValueError as e:
        raise ActionFailed(INVALID, f"set_tier: params.expires_at: {e}") from None
    if at <= o.op.now:
        raise ActionFailed(INVALID, f"set_tier: params.expires_at {raw!r} is not after the operation's timestamp "
                                    f"{o.op.now.isoformat()}: a level must expire later than it is set")
    return at.astimezone(timezone.utc)


def _set_status(o: _Op) -> None:
    status = o.field("status")
    if status not in STATUSES:
        raise ActionFailed(INVALID, f"set_participant_status: params.status must be one of {', '.join(STATUSES)}")
    o.tx.set_status(o.op.subject, status)


#: The participant profile of Scrip's create-a-participant body and its limits (scrip-reference.md
#: 4, 21): accepted and not stored, but checked, as Scrip does (a 51-character phone was accepted).
PROFILE_LIMITS = {"email": 255, "phone": 50, "first_name": 255, "last_name": 255, "display_name": 255}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _profile(o: _Op) -> None:
    """Each profile field is text within Scrip's limit, or null; `""` clears it (Scrip), so it is
    fine too; a non-empty email has the form local@domain ("email: optional, validated")."""
    for field, limit in PROFILE_LIMITS.items():
        value = o.params.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise ActionFailed(INVALID, f"upsert_participant: params.{field} must be text of at most {limit} "
                                        f"characters, got {value!r:.60}")
        if field == "email" and value and not _EMAIL.fullmatch(value):
            raise ActionFailed(INVALID, f"upsert_participant: params.email {value!r:.60} is not an email address "
                                        "(local@domain)")


def upsert_problem(params: object) -> str | None:
    """Why an upsert_participant fails on its params alone (None: it does not), known before the
    stream runs: intake creates no participant for such a row (Scrip answers 400 and creates
    nobody), and fails it `invalid_operation` with this message. The kernel checks the same."""
    if not isinstance(params, dict):
        return None  # (the operation says what is wrong with it when it runs)
    o = SimpleNamespace(op=SimpleNamespace(operation="upsert_participant"), params=params)
    try:
        _known_fields("upsert_participant", params)
        _upsert_params(o)
    except ActionFailed as f:
        return f.message
    return None


def _upsert(o: _Op) -> None:
    """Creates (at intake) or updates: attributes are merged, tags replace, status is set."""
    status, attributes, tags = _upsert_params(o)
    if status is not None:
        o.tx.set_status(o.op.subject, status)

    def apply(st):
        st.attributes.update(attributes)
        if tags is not None:
            st.tags = set(tags)
    _state_op(o, apply)


def _upsert_params(o) -> tuple[str | None, dict[str, str], set[str] | None]:
    """An upsert's status, attributes and tags, each checked (`invalid_operation`), and its profile."""
    _profile(o)
    status = o.params.get("status")
    if status is not None and status not in STATUSES:
        raise ActionFailed(INVALID, f"upsert_participant: params.status must be one of {', '.join(STATUSES)}")
    attributes = o.params.get("attributes")
    attributes = {} if attributes is None else attributes  # ("" and 0 read as no attributes)
    tags = o.params.get("tags")
    if not isinstance(attributes, dict) or not all(isinstance(k, str) and k for k in attributes):
        raise ActionFailed(INVALID, "upsert_participant: params.attributes must map keys to values")
    attributes = {k: _attribute_text(o, v, f"params.attributes.{k}") for k, v in attributes.items()}
    if tags is not None and not isinstance(tags, list):
        raise ActionFailed(INVALID, "upsert_participant: params.tags must be a list of tags")
    return status, attributes, None if tags is None else {_tag_text(o, t) for t in tags}


HANDLERS = {
    **groups.HANDLERS,
    "adjust": _adjust,
    "hold": _between("HOLD", "AVAILABLE", "HELD"),
    "release": _between("RELEASE", "HELD", "AVAILABLE"),
    "forfeit": _between("FORFEIT", "AVAILABLE", None),
    "group_adjust": _adjust,
    "group_hold": _between("HOLD", "AVAILABLE", "HELD"),
    "group_release": _between("RELEASE", "HELD", "AVAILABLE"),
    "group_forfeit": _between("FORFEIT", "AVAILABLE", None),
    "void_hold": _void_hold,
    "redeem": lambda o: _redeem(o, None),
    "redeem_item": lambda o: _redeem(o, _reward(o)),
    "reverse_redemption": _reverse,
    "fund": _fund,
    "burn": _burn,
    "transfer": _transfer,
    "set_counter": _set_counter,
    "set_attribute": _set_attribute,
    "tag": _tag(True),
    "untag": _tag(False),
    "set_tier": _set_tier,
    "set_participant_status": _set_status,
    "upsert_participant": _upsert,
}
OPERATIONS = frozenset(HANDLERS) | NOT_BUILT
assert set(FIELDS) == set(HANDLERS), "every operation lists its params fields"
