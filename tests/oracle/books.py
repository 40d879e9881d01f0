"""The oracle's value-holding state: accounts, lots, redemptions, reward counts (semantics.md 8, 9).

Plain data with the few obvious operations on it. Moving value (sufficiency, FIFO, new lots) is
`Books.move`; time-driven lot changes are `Books.due_lot_changes`. Nothing here knows about rules
or operations, and nothing comes from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Context, Decimal

DEC = Context(prec=200)
ZERO = Decimal(0)
BALANCE_LIMIT = Decimal(10) ** 20  # DECIMAL(38, 18) holds 20 integer digits

#: (entity type, name, asset symbol, bucket). Names: a participant's external id, a program key
#: for PROGRAM_WALLET, None for the system accounts.
Account = tuple[str, str | None, str, str]
HOLDERS = ("PARTICIPANT", "GROUP", "PROGRAM_WALLET")  # entities whose balances may not go short
LOT_HOLDERS = ("PARTICIPANT", "GROUP")  # entities whose LOT value is lots that expire and mature (s9.1, s11)


def group_account(group_key: str, symbol: str, bucket: str = "AVAILABLE") -> Account:
    return ("GROUP", group_key, symbol, bucket)


def participant_account(external_id: str, symbol: str, bucket: str = "AVAILABLE") -> Account:
    return ("PARTICIPANT", external_id, symbol, bucket)


def wallet_account(program_key: str, symbol: str) -> Account:
    return ("PROGRAM_WALLET", program_key, symbol, "AVAILABLE")


def system_account(name: str, symbol: str) -> Account:
    return (name, None, symbol, "AVAILABLE")


class Insufficient(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Lot:
    """A credit of a LOT asset (semantics.md 9.1). `origin` names the action that created it:
    (program key, "event" or "operation", idempotency key, rule key or None, action index or part)."""

    origin: tuple
    order_id: str  # the lot id: FIFO is by created_at, then id (semantics.md 9.1)
    holder: str  # a participant's external id, or a group's key (holder_type GROUP)
    symbol: str
    program_key: str
    amount: Decimal
    remaining: Decimal
    status: str  # DEFERRED | AVAILABLE | CONSUMED | EXPIRED
    created_at: datetime
    expires_at: datetime | None
    matures_at: datetime | None
    holder_type: str = "PARTICIPANT"  # or GROUP: a group's lots expire and mature the same way (s11)

    def spendable(self, now: datetime) -> bool:
        # s9.1: expired lots are never spendable, even before the expiry entry is written.
        return self.status == "AVAILABLE" and self.remaining > 0 and (self.expires_at is None or self.expires_at > now)


@dataclass
class Redemption:
    program_key: str
    key: str  # the redeeming operation's idempotency key (decisions.md: reversals name it)
    holder: str
    symbol: str
    amount: Decimal
    quantity: int | None
    unit_cost: Decimal | None
    reward: str | None
    taken: list[tuple[tuple, Decimal]]  # (lot origin, amount) in FIFO order, LOT assets only
    target: str = "SYSTEM_REDEMPTION"  # where it posted value: its reversals take value back from there,
    group: str | None = None  # a system account or (LEDGER_ENTITY) this group's AVAILABLE
    reversed: Decimal = ZERO
    reversed_quantity: int = 0


@dataclass
class Entry:
    """One journal entry: `amount` from `source` to `dest`. `origin` is (kind, idempotency key,
    rule key, action index or part) for events and operations, None for time-driven entries."""

    program_key: str
    origin: tuple | None
    action_type: str
    source: Account
    dest: Account
    amount: Decimal
    effective_at: datetime


@dataclass
class Books:
    accounts: dict[Account, Decimal] = field(default_factory=dict)
    lots: list[Lot] = field(default_factory=list)  # every lot, in creation order
    redemptions: dict[tuple[str, str], Redemption] = field(default_factory=dict)
    reward_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (program, reward, ext or "")

    def balance(self, account: Account) -> Decimal:
        return self.accounts.get(account, ZERO)

    def holder_lots(self, external_id: str, symbol: str, holder_type: str = "PARTICIPANT") -> list[Lot]:
        """FIFO order: created_at, then lot id."""
        return sorted((lot for lot in self.lots if (lot.holder_type, lot.holder, lot.symbol) == (
            holder_type, external_id, symbol)), key=lambda lot: (lot.created_at, lot.order_id))

    def spendable(self, external_id: str, symbol: str, now: datetime, holder_type: str = "PARTICIPANT") -> Decimal:
        return sum((lot.remaining for lot in self.holder_lots(external_id, symbol, holder_type) if lot.spendable(now)),
                   ZERO)

    def owed(self, external_id: str, symbol: str, holder_type: str = "PARTICIPANT") -> Decimal:
        """decisions.md "Overdrafts on LOT assets": what an overdraft (a DEBIT with allow_negative)
        left unpaid: how far the AVAILABLE balance is below what the AVAILABLE lots hold (lots
        past their expiry hold value until it is written off, but never paid for a debit)."""
        in_lots = sum((lot.remaining for lot in self.holder_lots(external_id, symbol, holder_type)
                       if lot.status == "AVAILABLE"), ZERO)
        return max(DEC.subtract(in_lots, self.balance((holder_type, external_id, symbol, "AVAILABLE"))), ZERO)

    @staticmethod
    def repay(lots: list[Lot], debt: Decimal) -> None:
        """decisions.md "Overdrafts on LOT assets": value arriving in the AVAILABLE bucket of an
        overdrawn participant repays the overdraft first: the lots that brought it keep what is
        left, oldest first; a lot left with nothing is CONSUMED."""
        for lot in sorted(lots, key=lambda lot: (lot.created_at, lot.order_id)):
            if debt <= 0:
                break
            take = min(lot.remaining, debt)
            lot.remaining = DEC.subtract(lot.remaining, take)
            debt = DEC.subtract(debt, take)
            if lot.remaining == 0:
                lot.status = "CONSUMED"

    def move(self, source: Account, dest: Account, amount: Decimal, *, now: datetime, lot_asset: bool,
             overdraft: bool = False, new_lot: dict | None = None) -> list[tuple[tuple, Decimal]]:
        """Move `amount` or raise Insufficient. A holder's account may not go below zero unless
        `overdraft`; for LOT assets what a participant (or group) can spend is its spendable lots,
        which pay oldest first. Value arriving in its AVAILABLE or DEFERRED bucket of a LOT asset
        is a new lot (`new_lot`: origin, order_id, program_key, expires_at, matures_at), unless
        `new_lot` is None (a reversal restores existing lots instead). Returns the lots taken."""
        lot_source = lot_asset and source[0] in LOT_HOLDERS and source[3] == "AVAILABLE"
        arrives = lot_asset and dest[0] in LOT_HOLDERS and dest[3] in ("AVAILABLE", "DEFERRED") and new_lot is not None
        debt = self.owed(dest[1], dest[2], dest[0]) if arrives and dest[3] == "AVAILABLE" else ZERO
        if source[0] in HOLDERS and not overdraft:
            have = self.spendable(source[1], source[2], now, source[0]) if lot_source else self.balance(source)
            if have < amount:
                code = "insufficient_wallet" if source[0] == "PROGRAM_WALLET" else "insufficient_balance"
                raise Insufficient(code, f"{source}: {have} < {amount}")
        # decisions.md "A balance past DECIMAL(38, 18)": no move may leave a balance the ledger
        # cannot hold (|balance| < 10^20), system accounts included; the holder is named first
        for account, after in sorted(((source, DEC.subtract(self.balance(source), amount)),
                                      (dest, DEC.add(self.balance(dest), amount))),
                                     key=lambda pair: pair[0][0] not in HOLDERS):
            if abs(after) >= BALANCE_LIMIT:
                raise Insufficient("amount_out_of_range", f"{account}: {after}")
        taken: list[tuple[tuple, Decimal]] = []
        if lot_source:
            left = amount
            for lot in self.holder_lots(source[1], source[2], source[0]):
                if left <= 0:
                    break
                if not lot.spendable(now):
                    continue
                take = min(lot.remaining, left)
                lot.remaining = DEC.subtract(lot.remaining, take)
                left = DEC.subtract(left, take)
                taken.append((lot.origin, take))
                if lot.remaining == 0:
                    lot.status = "CONSUMED"
        if arrives:
            expires_at = new_lot.get("expires_at")  # decisions.md: never before the lot exists
            self.lots.append(Lot(
                new_lot["origin"], new_lot["order_id"], dest[1], dest[2], new_lot["program_key"], amount, amount,
                dest[3], now, None if expires_at is None else max(expires_at, now), new_lot.get("matures_at"), dest[0]))
            self.repay([self.lots[-1]], debt)
        self.accounts[source] = DEC.subtract(self.balance(source), amount)
        self.accounts[dest] = DEC.add(self.balance(dest), amount)
        return taken

    def due_lot_changes(self, external_id: str, now: datetime, holder_type: str = "PARTICIPANT") -> list[Entry]:
        """Maturities and expiries of the participant's (or group's) lots due at or before `now` (s3, s9.1),
        applied one at a time in time order (maturities of one instant oldest lot first); each
        entry carries the instant it was due. A lot that expires at or before the instant it would
        mature expires from DEFERRED and never matures. A maturity into an overdrawn AVAILABLE
        bucket repays the overdraft first (decisions.md), and the lot's expiry takes only what is
        left."""
        due = []
        for lot in self.lots:
            if (lot.holder_type, lot.holder) != (holder_type, external_id) or lot.remaining <= 0 or lot.status not in (
                    "AVAILABLE", "DEFERRED"):
                continue
            matures = lot.status == "DEFERRED" and lot.matures_at is not None and lot.matures_at <= now and (
                lot.expires_at is None or lot.expires_at > lot.matures_at)
            if matures:
                due.append((lot.matures_at, 0, lot))
            if lot.expires_at is not None and lot.expires_at <= now:
                due.append((lot.expires_at, 1, lot))
        out: list[Entry] = []
        for instant, kind, lot in sorted(due, key=lambda d: (d[0], d[1], d[2].created_at, d[2].order_id)):
            if kind == 0:
                debt = self.owed(lot.holder, lot.symbol, lot.holder_type)
                out.append(self._shift(lot, "DEFERRED", "AVAILABLE", "MATURITY", instant))
                lot.status = "AVAILABLE"
                self.repay([lot], debt)
            elif lot.remaining > 0:  # (nothing left once a maturity repaid the whole lot)
                out.append(self._shift(lot, lot.status, None, "EXPIRATION", instant))
                lot.remaining = ZERO
                lot.status = "EXPIRED"
        # s3: each at its own instant, in time order (a lot's maturity before its expiry)
        return sorted(out, key=lambda e: e.effective_at)

    def _shift(self, lot: Lot, from_bucket: str, to_bucket: str | None, kind: str, instant: datetime) -> Entry:
        source = (lot.holder_type, lot.holder, lot.symbol, from_bucket)
        dest = ((lot.holder_type, lot.holder, lot.symbol, to_bucket) if to_bucket
                else system_account("SYSTEM_BREAKAGE", lot.symbol))
        self.accounts[source] = DEC.subtract(self.balance(source), lot.remaining)
        self.accounts[dest] = DEC.add(self.balance(dest), lot.remaining)
        return Entry(lot.program_key, None, kind, source, dest, lot.remaining, instant)
