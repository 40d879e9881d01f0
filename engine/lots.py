"""Lots of LOT assets (semantics.md 9.1): each credit is a lot; spending consumes FIFO by
(created_at, id); expiry and maturity happen at their own instants.

Time-driven changes are not an event's doing: they are applied to the committed state before an
event touches the entity (or by `perkflow maintain --as-of T`), and stand even if the event
fails. Their entries carry the instant they were due.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from engine import ids
from engine.durations import later

BREAKAGE = str(ids.system_account_id("SYSTEM_BREAKAGE"))

# The stored action index of every MATURITY and EXPIRATION entry. A lot matures at most once and
# expires at most once, and the entry is already named by the lot (`source_name` lot:<id>) and
# its kind (rule_version), so the index adds nothing but must not vary: the index apply_due and
# engine.setwise_lots give a change is its place among what one pass wrote, which depends on
# which pass wrote it (the holder's next event, one maintenance run or several), and so did the
# entry's id. They keep that number to order the entries; run and maintain stage this one.
TIMED_ACTION_INDEX = 0


@dataclass
class Lot:
    id: str
    entity_type: str
    entity_id: str
    asset_id: str
    amount: Decimal
    remaining: Decimal
    status: str  # DEFERRED | AVAILABLE | HELD | CONSUMED | EXPIRED
    created_at: datetime
    expires_at: datetime | None
    matures_at: datetime | None
    program_id: str  # the program whose credit created it; its expiry entries belong there too
    reference_id: str | None = None
    # credited straight into HELD and not settled or released since: the only lots a VOID_HOLD
    # cancels (lots a HOLD moved into HELD are the participant's own value: release those)
    provisional: bool = False

    def spendable(self, now: datetime) -> bool:
        """Expired lots are never spendable, even before their expiry entry is written."""
        return self.usable("AVAILABLE", now)

    def expired(self, now: datetime) -> bool:
        """Expired (semantics.md 9.1): past its expires_at, whether or not its expiry entry was
        written (a lot consumed before it expired never gets one)."""
        return self.status == "EXPIRED" or (self.expires_at is not None and self.expires_at <= now)

    def usable(self, status: str, now: datetime, reference: str | None = None, provisional: bool = False,
               program: str | None = None) -> bool:
        """Holds value in `status` and has not expired; narrowed, when given, to one reference,
        to provisional lots, and to the lots one program's credits created."""
        return (self.status == status and self.remaining > 0 and not self.expired(now)
                and (reference is None or self.reference_id == reference)
                and (self.provisional or not provisional)
                and (program is None or self.program_id == program))

    def spent(self) -> bool:
        """Holds nothing any more and never will by time or spending (CONSUMED or EXPIRED, nothing
        left): only a reversal gives a CONSUMED lot value again (`restore`)."""
        return self.remaining == 0 and self.status in ("CONSUMED", "EXPIRED")

    def copy(self) -> Lot:
        # (a field-for-field copy: dataclasses.replace re-runs __init__ and costs ~20x more, and an
        # event copies every live lot of each holder it touches)
        twin = object.__new__(Lot)
        twin.__dict__.update(self.__dict__)
        return twin


def static_instant(spec: timedelta | datetime | None, now: datetime) -> datetime | None:
    """expires_at / matures_at written as a duration from `now` or as an instant (ValueError
    past the last instant the ledger holds: `durations.later`)."""
    return later(now, spec) if isinstance(spec, timedelta) else spec


def not_before(expires_at: datetime | None, now: datetime) -> datetime | None:
    """A lot never expires before it exists: an expires_at already past when the credit is made
    (a fixed date gone by, a negative duration) is `now`, so the lot expires at once, dated its
    creation, never with an EXPIRATION entry before the CREDIT that made it (docs/decisions.md).
    engine/setwise_lots.py `_made` does the same set-wise."""
    return None if expires_at is None else max(expires_at, now)


def deferred(matures_at: datetime | None, now: datetime) -> bool:
    """A credit that matures later goes to DEFERRED: not spendable until it matures."""
    return matures_at is not None and matures_at > now


def new_lot(spec: dict, holder: tuple[str, str, str, str], amount: Decimal, now: datetime) -> Lot:
    """The lot a credit of `amount` into `holder`'s bucket makes (`spec`: see lot_spec)."""
    return Lot(id=spec["id"], entity_type=holder[0], entity_id=holder[1], asset_id=holder[2], amount=amount,
               remaining=amount, status=holder[3], created_at=now, expires_at=not_before(spec.get("expires_at"), now),
               matures_at=spec.get("matures_at"), program_id=spec["program_id"],
               reference_id=spec.get("reference_id"), provisional=holder[3] == "HELD")


def narrowing(spec: dict | None) -> dict:
    """The filters of a lot spec (see engine.moves.move) as keyword arguments of `usable`."""
    spec = spec or {}
    return {"reference": spec.get("match"), "provisional": bool(spec.get("provisional")),
            "program": spec.get("only_program")}


def fifo(lots: list[Lot]) -> list[Lot]:
    return sorted(lots, key=lambda lot: (lot.created_at, lot.id))


def owed(lots: list[Lot], balance: Decimal) -> Decimal:
    """What a LOT holder owes on its AVAILABLE bucket (`lots`: its lots of the asset, `balance`:
    its AVAILABLE balance): how far the balance falls short of what its AVAILABLE lots hold, the
    overdraft a DEBIT with allow_negative left. That is the negative balance itself (an overdraft
    consumes every spendable lot first), plus what AVAILABLE lots past their expiry still hold
    before their expiry entry is written: they cannot pay for a debit (semantics.md 9.1), and
    their expiry will take that value from the balance too."""
    in_lots = sum((lot.remaining for lot in lots if lot.status == "AVAILABLE"), Decimal(0))
    return max(in_lots - balance, Decimal(0))


def repay(arrived: list[Lot], debt: Decimal) -> Decimal:
    """Value arriving in the AVAILABLE bucket of an overdrawn LOT holder first repays what it owes
    (docs/decisions.md, "Overdrafts on LOT assets"): the lots that brought it (a new lot, lots
    moved into AVAILABLE by a maturity, release, settle or reversal), oldest first, keep only what
    is left after `debt`; a lot left with nothing is CONSUMED. The entries still carry the whole
    amount (the balance rises from below zero). Every path that puts lot value into AVAILABLE
    calls this, so the lots always hold what the balance holds once it is not negative. Returns
    what was repaid."""
    left = debt
    for lot in fifo(arrived):
        if left <= 0:
            break
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        if lot.remaining == 0:
            lot.status = "CONSUMED"
    return debt - left


def consume(lots: list[Lot], amount: Decimal, now: datetime, status: str = "AVAILABLE",
            **narrow) -> list[tuple[str, Decimal]]:
    """Take up to `amount` from the usable lots in `status` (narrowed by `narrow`, see
    Lot.usable), oldest first: [(lot id, taken)]."""
    left, taken = amount, []
    for lot in fifo(lots):
        if left <= 0:
            break
        if not lot.usable(status, now, **narrow):
            continue
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        taken.append((lot.id, take))
        if lot.remaining == 0:
            lot.status = "CONSUMED"
    return taken


def in_status(lots: list[Lot], status: str, now: datetime, **narrow) -> Decimal:
    """What the usable lots in `status` (narrowed by `narrow`, see Lot.usable) hold together."""
    return sum((lot.remaining for lot in lots if lot.usable(status, now, **narrow)), Decimal(0))


def shift(lots: list[Lot], amount: Decimal, now: datetime, source: str, dest: str, seed: str,
          stamp: str | None = None, **narrow) -> list[tuple[str, Decimal]]:
    """Move `amount` of value between statuses of the same holder (HOLD: AVAILABLE -> HELD;
    RELEASE and SETTLE: HELD -> AVAILABLE), oldest lots first, keeping each lot's dates so
    FIFO order and expiry stay as they were. A lot moved whole changes status in place; a lot
    moved in part is split: the moved part becomes a new lot (id named by `seed`, the moving
    action, and the parent) and the rest stays. Value moved into HELD takes the `stamp`
    reference; any moved lot stops being provisional. Returns [(lot id, amount)] moved."""
    left, moved = amount, []
    for lot in fifo(lots):
        if left <= 0:
            break
        if not lot.usable(source, now, **narrow):
            continue
        part = min(lot.remaining, left)
        left -= part
        if part < lot.remaining:
            lot.remaining -= part
            lot = replace(lot, id=str(ids.name_id("lot", "split", seed, lot.id)), amount=part, remaining=part)
            lots.append(lot)
        lot.status, lot.provisional = dest, False
        if dest == "HELD":
            lot.reference_id = stamp
        moved.append((lot.id, part))
    return moved


def restore(lots: list[Lot], taken: list[tuple[str, Decimal]], amount: Decimal,
            now: datetime, debt: Decimal = Decimal(0), seed: str = "") -> list[tuple[str, Decimal]]:
    """Give `amount` back to the lots it was taken from, last taken first (LIFO); returns what
    each lot got back. Lots expired by `now` take nothing back (docs/decisions.md, "Reversals":
    the value would be unspendable, and a revived lot would expire before `now`); what they
    cannot take is for the caller to place. The value arrives in AVAILABLE: the lots that got it
    back first repay `debt`, what the holder owes (`repay`). A lot whose rest is HELD now (a hold
    took what the redemption left of it) keeps its held value: what it gets back is split off as
    a lot of its own in AVAILABLE, with its dates (id named by `seed`, the reversal, and the lot),
    as `shift` splits a lot moved in part."""
    by_id = {lot.id: lot for lot in lots}
    left, given, arrived = amount, [], []
    for lot_id, took in reversed(taken):
        lot = by_id.get(lot_id)
        if left <= 0 or lot is None or lot.expired(now):
            continue
        give = min(took, left)
        if lot.status == "HELD" and lot.remaining > 0:
            part = replace(lot, id=str(ids.name_id("lot", "restore", seed, lot.id)), amount=give, remaining=give,
                           status="AVAILABLE", provisional=False)
            lots.append(part)
            arrived.append(part)
        else:
            lot.remaining += give
            lot.status = "AVAILABLE"
            arrived.append(lot)
        left -= give
        given.append((lot_id, give))
    repay(arrived, debt)
    return given


def due_changes(lots: list[Lot], now: datetime) -> list[tuple[datetime, str, Lot]]:
    """(instant, MATURITY | EXPIRATION, lot) due at or before `now`, in time order. A lot that
    expires before (or when) it matures expires from DEFERRED."""
    due = []
    for lot in filter(_changes_with_time, lots):
        # held value expires like available value: a hold reserves it, it does not extend it
        if lot.expires_at is not None and lot.expires_at <= now and (
                lot.status != "DEFERRED" or lot.matures_at is None or lot.expires_at <= lot.matures_at):
            due.append((lot.expires_at, "EXPIRATION", lot))
        elif lot.status == "DEFERRED" and lot.matures_at is not None and lot.matures_at <= now:
            due.append((lot.matures_at, "MATURITY", lot))
            if lot.expires_at is not None and lot.expires_at <= now:
                due.append((lot.expires_at, "EXPIRATION", lot))
    return sorted(due, key=lambda d: (d[0], d[1] != "MATURITY", d[2].created_at, d[2].id))


def next_due(lots: list[Lot]) -> datetime | None:
    """The first instant at which due_changes(lots, instant) is not empty (None: never)."""
    instants = [at for lot in filter(_changes_with_time, lots)
                for at in (lot.expires_at, lot.matures_at if lot.status == "DEFERRED" else None) if at is not None]
    return min(instants, default=None)


def _changes_with_time(lot: Lot) -> bool:
    """Still holds value that can mature or expire (due_changes and next_due look at these only)."""
    return lot.remaining > 0 and lot.status in ("AVAILABLE", "DEFERRED", "HELD")


def apply_due(store, lots: list[Lot], now: datetime, effects: list, pos: int) -> None:
    """Write the due maturities and expiries of `lots` (a holder's lots of one asset) into the
    committed state and `effects`. `store.balances` must hold the holder's AVAILABLE balance: a
    maturity into an overdrawn AVAILABLE bucket first repays it (`owed`, `repay`), and the lot's
    expiry then takes only what is left, nothing if nothing is. The entries are numbered in the
    order they are written."""
    n = 0
    for instant, kind, lot in due_changes(lots, now):
        account = (lot.entity_type, lot.entity_id, lot.asset_id)
        amount = lot.remaining
        if amount <= 0:  # a maturity just before repaid the whole lot: nothing left to expire
            continue
        if kind == "MATURITY":
            source, dest = (*account, "DEFERRED"), (*account, "AVAILABLE")
            debt = owed(lots, store.balances.get(dest, Decimal(0)))
            lot.status = "AVAILABLE"
            repay([lot], debt)
        else:
            source = (*account, lot.status)
            dest = ("SYSTEM_BREAKAGE", BREAKAGE, lot.asset_id, "AVAILABLE")
            lot.remaining = Decimal(0)
            lot.status = "EXPIRED"
        store.balances[source] = store.balances.get(source, Decimal(0)) - amount
        store.balances[dest] = store.balances.get(dest, Decimal(0)) + amount
        store.dirty_lots.add(lot.id)
        effects.append({
            "pos": pos, "rule_id": None, "rule_version": kind, "rule_order": -1, "action_index": n,
            "action_type": kind, "asset_id": lot.asset_id, "amount": amount, "allow_negative": False,
            "description": f"lot {kind.lower()}", "entity_id": lot.entity_id,
            "from_type": source[0], "from_id": source[1], "from_bucket": source[3],
            "to_type": dest[0], "to_id": dest[1], "to_bucket": dest[3],
            "source_name": f"lot:{lot.id}", "effective_at": instant, "program_id": lot.program_id,
        })
        n += 1


def lot_spec(ev, version: str, index: int, expires_at=None, matures_at=None) -> dict:
    """The lot a credit creates: its id names the event or operation (`ev`: program, key,
    operation) and the action that made it, so the same input always makes the same lot."""
    kind = "operation" if ev.operation else "event"
    return {"id": ids.name_id_text("lot", kind, str(ev.program.id), ev.key, version, str(index)),
            "program_id": str(ev.program.id), "expires_at": expires_at, "matures_at": matures_at}

