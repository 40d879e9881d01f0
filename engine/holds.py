"""Holds by reference on LOT assets (semantics.md 7, 9.1; docs/decisions.md "Holds, settles and
voids"): how much a reference holds, the settle that a CREDIT with `reference_id` into
AVAILABLE is, and VOID_HOLD. Both settle and void act on the *provisional* lots of the
reference: lots a CREDIT put straight into HELD, from the acting program, not released since.
"""

from __future__ import annotations

from decimal import Decimal

from engine import amounts
from engine.catalog.models import Asset
from engine.lots import in_status
from engine.moves import Account, ActionFailed, move, plain
from engine.state import Tx

#: A rule action writes at most one entry per action index; a settle's second entry (the
#: difference between the settled and the held amount) takes index + PART_STRIDE.
PART_STRIDE = 1000


def held(tx: Tx, account: Account, asset: Asset, reference: str | None) -> Decimal | None:
    """All that `account` (an AVAILABLE or HELD bucket) holds, or only the lots of `reference`;
    None when nothing. RELEASE without an amount, and the hold / release / forfeit operations
    without one (Scrip: "omitting it processes the whole SIMPLE balance, or every matching lot").
    AVAILABLE value of a LOT asset counts only its spendable lots: a lot past its expires_at is
    never spendable (semantics.md 9.1), even before its expiry entry is written."""
    if reference is not None and asset.inventory_mode == "LOT":
        amount = in_status(tx.lots(account[:3]), account[3], tx.now, reference=reference)
    else:
        amount = tx.balance(account)
        if asset.inventory_mode == "LOT" and account[3] == "AVAILABLE":
            amount = min(amount, in_status(tx.lots(account[:3]), "AVAILABLE", tx.now))
    return amount if amount > 0 else None


def whole(tx: Tx, kind: str, source: Account, asset: Asset, reference: str | None) -> Decimal | None:
    """What a HOLD, RELEASE or FORFEIT without an amount takes, action or operation alike: all
    that its source bucket holds, None when nothing (a no-op). A HOLD's reference only stamps the
    lots it holds, so it takes the whole AVAILABLE bucket; RELEASE and FORFEIT narrow to the
    lots of their reference. That amount is the entry's, so it is capped like a given one
    (semantics.md 7: "at most the asset's max_transaction_amount"; docs/decisions.md)."""
    amount = held(tx, source, asset, None if kind == "HOLD" else reference)
    if amount is not None and asset.max_transaction_amount is not None and amount > asset.max_transaction_amount:
        raise ActionFailed(amounts.MAX_EXCEEDED, f"{kind} without an amount takes the whole {source[3]} balance: "
                                                 f"{amounts.describe(amounts.MAX_EXCEEDED, plain(amount), asset)}; "
                                                 "give an amount")
    return amount


def _provisional(spec: dict, reference: str) -> dict:
    return {**spec, "match": reference, "provisional": True, "only_program": spec["program_id"]}


def settle(tx: Tx, effects: list, issue: Account, dest: Account, amount: Decimal, asset: Asset, spec: dict,
           meta: dict) -> None:
    """A CREDIT of `amount` with a reference into AVAILABLE: the provisional lots of the reference
    (held H) become available, up to `amount` (SETTLE); the participant ends with `amount` for the
    reference: above H the difference is credited as a new lot (CREDIT), below H the unsettled
    rest goes back to its source (VOID_HOLD). Without provisional value it is a plain credit."""
    reference = spec["reference_id"]
    narrow = _provisional(spec, reference)
    held_account = (*dest[:3], "HELD")
    have = in_status(tx.lots(dest[:3]), "HELD", tx.now, reference=reference, provisional=True,
                     program=spec["program_id"])
    settled = min(have, amount)
    part = 0
    if settled > 0:
        move(tx, effects, held_account, dest, settled, kind="SETTLE", asset=asset, lot=narrow, **meta)
        part = 1
    later = {**meta, "action_index": meta["action_index"] + PART_STRIDE * part}
    if amount > have:
        move(tx, effects, issue, dest, amount - have, kind="CREDIT", asset=asset, lot=spec, **later)
    elif have > amount:
        move(tx, effects, held_account, issue, have - amount, kind="VOID_HOLD", asset=asset, lot=narrow, **later)


def void(tx: Tx, effects: list, held_account: Account, issue: Account, asset: Asset, spec: dict,
         reference: str, meta: dict) -> None:
    """Cancel the provisional lots of `reference` back to their source; nothing of the reference
    held provisionally (unknown, settled, released, voided or expired) is a no-op."""
    narrow = _provisional(spec, reference)
    amount = in_status(tx.lots(held_account[:3]), "HELD", tx.now, reference=reference, provisional=True,
                       program=spec["program_id"])
    if amount > 0:
        move(tx, effects, held_account, issue, amount, kind="VOID_HOLD", asset=asset, lot=narrow, **meta)
