"""Moving value between accounts: the one place that checks sufficiency and records effects.

An account is (entity type, entity id, asset id, bucket). Every applied value action or operation
moves an amount from one account to another; the writer turns each move into a journal entry
with two postings.
"""

from __future__ import annotations

from decimal import Decimal

from engine import ids
from engine.catalog.models import Asset
from engine.lots import Lot, consume
from engine.state import Tx

ISSUANCE = str(ids.system_account_id("SYSTEM_ISSUANCE"))
BREAKAGE = str(ids.system_account_id("SYSTEM_BREAKAGE"))
REDEMPTION = str(ids.system_account_id("SYSTEM_REDEMPTION"))

INSUFFICIENT = "insufficient_balance"
WALLET_SHORT = "insufficient_wallet"

Account = tuple[str, str, str, str]
#: Entities that hold value of their own (and whose balances may not go short).
HOLDERS = ("PARTICIPANT", "GROUP", "PROGRAM_WALLET")


class ActionFailed(Exception):
    """An action or operation failed: the whole event/operation is rolled back with this code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def system(name: str, asset_id: str) -> Account:
    return (name, {"SYSTEM_ISSUANCE": ISSUANCE, "SYSTEM_BREAKAGE": BREAKAGE, "SYSTEM_REDEMPTION": REDEMPTION}[name],
            asset_id, "AVAILABLE")


def wallet(program_id: str, asset_id: str) -> Account:
    return ("PROGRAM_WALLET", program_id, asset_id, "AVAILABLE")


def source_of_issue(asset: Asset, program_id: str, asset_id: str) -> Account:
    """Where credited value comes from: issuance (UNLIMITED) or the program wallet (PREFUNDED)."""
    return wallet(program_id, asset_id) if asset.issuance_policy == "PREFUNDED" else system("SYSTEM_ISSUANCE", asset_id)


def move(tx: Tx, effects: list, source: Account, dest: Account, amount: Decimal, *, kind: str, asset: Asset,
         overdraft: bool = False, lot: dict | None = None, **meta) -> list[tuple[str, Decimal]]:
    """Move `amount` from `source` to `dest` in the event's working state, or fail. Participant
    and wallet accounts may not go below zero (unless `overdraft`: DEBIT with allow_negative).
    For LOT assets, value leaving a holder's AVAILABLE bucket consumes its lots FIFO, and value
    arriving in a holder's AVAILABLE or DEFERRED bucket is a new lot (`lot`: id, program_id,
    expires_at, matures_at). Returns the lots that paid for it (lot id, amount), FIFO."""
    if source[0] in HOLDERS and not overdraft:
        have = tx.balance(source)
        if asset.inventory_mode == "LOT" and source[0] == "PARTICIPANT" and source[3] == "AVAILABLE":
            # semantics.md 9.1: a lot past its expires_at is never spendable, even before its
            # expiry entry is written (e.g. one created by this very event with expires_at: 0s)
            have = min(have, sum((lot.remaining for lot in tx.lots(source[:3]) if lot.spendable(tx.now)), Decimal(0)))
        if have - amount < 0:
            code = WALLET_SHORT if source[0] == "PROGRAM_WALLET" else INSUFFICIENT
            raise ActionFailed(code, insufficient_message(kind, source, asset.symbol, have, amount))
    taken: list = []
    if asset.inventory_mode == "LOT":
        if source[0] in HOLDERS and source[3] == "AVAILABLE":
            taken = consume(tx.lots(source[:3]), amount, tx.now)
        if dest[0] in HOLDERS and dest[3] in ("AVAILABLE", "DEFERRED") and not spec_restores(lot):
            spec = lot or {}
            tx.lots(dest[:3]).append(Lot(
                id=spec["id"], entity_type=dest[0], entity_id=dest[1], asset_id=dest[2], amount=amount,
                remaining=amount, status=dest[3], created_at=tx.now, expires_at=spec.get("expires_at"),
                matures_at=spec.get("matures_at"), program_id=spec["program_id"]))
    tx.move(source, dest, amount)
    participant = source if source[0] == "PARTICIPANT" else dest
    effects.append({
        "action_type": kind, "asset_id": source[2], "amount": amount, "allow_negative": overdraft,
        "entity_id": participant[1], "from_type": source[0], "from_id": source[1], "from_bucket": source[3],
        "to_type": dest[0], "to_id": dest[1], "to_bucket": dest[3], **meta,
    })
    return taken


def spec_restores(lot: dict | None) -> bool:
    """A reversal gives value back to existing lots instead of creating one."""
    return bool(lot and lot.get("restore"))


def insufficient_message(kind: str, source: Account, symbol: str, have: Decimal, amount: Decimal) -> str:
    """The one wording of an insufficient balance, whichever path found it."""
    where = "program wallet" if source[0] == "PROGRAM_WALLET" else f"{source[3].lower()} balance"
    return f"insufficient {where} for {kind}: {symbol} {plain(have)}, needs {plain(amount)}"


def plain(d: Decimal) -> str:
    s = format(d, "f")
    return (s.rstrip("0").rstrip(".") if "." in s else s) or "0"
