"""Moving value between accounts: the one place that checks sufficiency and records effects.

An account is (entity type, entity id, asset id, bucket). Every applied value action or operation
moves an amount from one account to another; the writer turns each move into a journal entry
with two postings, or adds it to the entry before as one more destination posting (a move with a
`leg` after 0: a transfer's recipients, engine.ledger.writer.entry_legs).
"""

from __future__ import annotations

from decimal import Decimal

from engine import amounts, ids
from engine.amounts import plain  # noqa: F401 (re-exported: holds, kernel, operations, explain)
from engine.catalog.models import Asset
from engine.lots import consume, in_status, narrowing, new_lot, owed, repay, shift
from engine.state import Tx

ISSUANCE = str(ids.system_account_id("SYSTEM_ISSUANCE"))
BREAKAGE = str(ids.system_account_id("SYSTEM_BREAKAGE"))
REDEMPTION = str(ids.system_account_id("SYSTEM_REDEMPTION"))
SYSTEM_IDS = (ISSUANCE, BREAKAGE, REDEMPTION)

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

    For LOT assets (`lot`: the spec of the lots this move makes, see engine.lots.lot_spec):
    value moving between a holder's AVAILABLE and HELD buckets moves its lots between those
    statuses (engine.lots.shift); otherwise value leaving a holder's AVAILABLE or HELD bucket
    consumes its lots FIFO, and value arriving in a holder's bucket is a new lot. The spec may
    narrow the source lots to one reference (`match`) or to provisional ones (`provisional`),
    and stamps new or newly held lots with `reference_id`. Lots arriving in an overdrawn
    AVAILABLE bucket first repay the overdraft (engine.lots.repay). A spec that `restore`s says the
    caller has put the lots right itself (a reversal, engine.lots.restore): the move changes
    balances only; one that `gives_back` says only the destination's lots were put right (a
    reversal from a group, which spends its lots as any spend). Returns the lots that paid for it
    (lot id, amount), FIFO."""
    spec = lot or {}
    narrow = narrowing(spec)
    reference = narrow["reference"]
    lot_asset = asset.inventory_mode == "LOT" and not spec_restores(lot)
    if source[0] in HOLDERS and not overdraft:
        if lot_asset and any(narrow.values()):  # only the lots it names count
            have = in_status(tx.lots(source[:3]), source[3], tx.now, **narrow)
        else:
            have = tx.balance(source)
            if lot_asset and source[0] in ("PARTICIPANT", "GROUP") and source[3] == "AVAILABLE":
                # semantics.md 9.1: a lot past its expires_at is never spendable, even before its
                # expiry entry is written (e.g. one created by this very event with expires_at: 0s)
                have = min(have, sum((lot.remaining for lot in tx.lots(source[:3]) if lot.spendable(tx.now)), Decimal(0)))
        if have - amount < 0:
            code = WALLET_SHORT if source[0] == "PROGRAM_WALLET" else INSUFFICIENT
            raise ActionFailed(code, insufficient_message(kind, source, asset.symbol, have, amount, reference))
    out_of_range(tx, source, dest, amount, asset.symbol)
    taken: list = []
    if lot_asset:
        arrived = []  # the lots that bring value into dest
        # value arriving in an overdrawn AVAILABLE bucket repays the overdraft first
        arriving = dest[0] in HOLDERS and not spec.get("gives_back")
        repaying = arriving and dest[3] == "AVAILABLE"
        debt = owed(tx.lots(dest[:3]), tx.balance(dest)) if repaying else Decimal(0)
        if source[:3] == dest[:3] and {source[3], dest[3]} == {"AVAILABLE", "HELD"}:
            taken = shift(tx.lots(source[:3]), amount, tx.now, source[3], dest[3], spec["id"],
                          spec.get("reference_id"), **narrow)
            moved = {lot_id for lot_id, _ in taken}
            arrived = [lot for lot in tx.lots(dest[:3]) if lot.id in moved]
        else:
            if source[0] in HOLDERS and source[3] in ("AVAILABLE", "HELD"):
                taken = consume(tx.lots(source[:3]), amount, tx.now, source[3], **narrow)
            if arriving:
                arrived = [new_lot(spec, dest, amount, tx.now)]
                tx.lots(dest[:3]).extend(arrived)
        if debt > 0:
            repay(arrived, debt)
    tx.move(source, dest, amount)
    participant = source if source[0] == "PARTICIPANT" else dest
    effects.append({
        "action_type": kind, "asset_id": source[2], "amount": amount, "allow_negative": overdraft,
        "entity_id": participant[1], "from_type": source[0], "from_id": source[1], "from_bucket": source[3],
        "to_type": dest[0], "to_id": dest[1], "to_bucket": dest[3],
        "reference_id": spec.get("reference_id") or reference, **meta,
    })
    return taken


_BELOW = -amounts.LIMIT


def out_of_range(tx: Tx, source: Account, dest: Account, amount: Decimal, symbol: str) -> None:
    """Fail the move (amount_out_of_range) if it would take either account's balance to 10^20
    or more, past what the ledger's DECIMAL(38, 18) holds (docs/decisions.md, "A balance past
    DECIMAL(38, 18)"). System accounts are balances too: the kernel's store holds their stored
    balances (execute._execute_sequential). When both would, the message names the holder, whose
    balance is the one its owner sees."""
    left, arrived = tx.balance(source) - amount, tx.balance(dest) + amount
    if _BELOW < left < amounts.LIMIT and _BELOW < arrived < amounts.LIMIT:  # (per move: no abs() copies)
        return
    holder_first = sorted(((source, left), (dest, arrived)), key=lambda pair: pair[0][0] not in HOLDERS)
    account, new = next(pair for pair in holder_first if abs(pair[1]) >= amounts.LIMIT)
    raise ActionFailed(amounts.OUT_OF_RANGE, out_of_range_message(account, symbol, new))


def out_of_range_message(account: Account, symbol: str, new: Decimal) -> str:
    """The wording of a balance past DECIMAL(38, 18)."""
    etype, eid, _, bucket = account
    whose = "" if etype == "PARTICIPANT" else f" of {etype}" if etype.startswith("SYSTEM_") else f" of {etype} {eid}"
    return (f"the {bucket.lower()} balance{whose} would reach {symbol} {plain(new)}, past what the ledger holds "
            f"(at most {amounts.MAX_INTEGER_DIGITS} integer digits)")


def spec_restores(lot: dict | None) -> bool:
    """A reversal gives value back to existing lots (or expires it) instead of moving lots."""
    return bool(lot and lot.get("restore"))


def insufficient_message(kind: str, source: Account, symbol: str, have: Decimal, amount: Decimal,
                         reference: str | None = None) -> str:
    """The one wording of an insufficient balance, whichever path found it."""
    where = "program wallet" if source[0] == "PROGRAM_WALLET" else f"{source[3].lower()} balance"
    if reference is not None:
        where += f" of reference {reference!r}"
    return f"insufficient {where} for {kind}: {symbol} {plain(have)}, needs {plain(amount)}"
