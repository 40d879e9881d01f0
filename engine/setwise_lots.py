"""Lots on the set-wise paths: what engine.kernel does for lots, replayed once the running path
(engine/running.py) or the set-based path (engine/execute.py) has settled the batch's outcome.

Lots cannot change an event's outcome there: engine.plan sends a batch to the kernel when a rule
debits a LOT asset, holds it, or reads its balance. So those paths decide every event without
them, and afterwards, per participant that holds lots or gets some, one event at a time in
stream order as the kernel does: first the maturities and expiries due by the event's `now`
(semantics.md 3; they stand even if the event failed: engine.lots.apply_due), then the lots the
event's LOT credits make (into DEFERRED while they vest; only the running path has LOT credits).
The effects come out in the kernel's order, so the ledger is the kernel's entry for entry
(tests/differential/test_setwise_lots.py).
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import polars as pl

from engine.catalog import Catalog
from engine.lots import apply_due, deferred, lot_spec, new_lot, next_due, static_instant
from engine.state import Store


def settle(effects: pl.DataFrame, runnable: pl.DataFrame, catalog: Catalog, store: Store) -> pl.DataFrame:
    """`effects` (the running path's, in ledger order, with accounts) with its LOT credits' lots
    made in `store`, those that vest moved to DEFERRED, and the due maturities and expiries of
    the participants' lots inserted before the event that touched them."""
    store.load_due_lots(runnable["subject_id"].unique().to_list(), runnable["event_timestamp"].max())
    lot_assets = {catalog.asset_sids[s] for s, a in catalog.assets.items() if a.inventory_mode == "LOT"}
    credits = effects.with_row_index("_row").filter(
        (pl.col("action_type") == "CREDIT") & pl.col("asset_id").is_in(list(lot_assets)))
    holders = {eid for (etype, eid, _), lots in store.lots.items() if etype == "PARTICIPANT" and lots}
    holders.update(credits["entity_id"].to_list())
    if not holders:
        return effects
    actions = {(r.sid, a.index): (p, r, a) for p in catalog.programs.values() for r in p.active_rules for a in r.actions}
    made: dict[int, list[tuple]] = {}  # pos -> its LOT credits, in ledger order
    for row in credits.iter_rows(named=True):
        made.setdefault(row["pos"], []).append(row)
    timed: list[dict] = []
    vesting: list[int] = []  # rows of `effects` whose credit goes to DEFERRED
    touching = runnable.filter(pl.col("subject_id").is_in(list(holders))).sort("pos")
    due_at: dict[str, datetime | None] = {}  # participant -> when something of its lots is next due

    def first_due(pid: str) -> datetime | None:
        return min((at for lots in store.participant_lots(pid) if (at := next_due(lots)) is not None), default=None)
    for pos, pid, now, key in touching.select("pos", "subject_id", "event_timestamp", "idempotency_key").iter_rows():
        at = due_at[pid] if pid in due_at else first_due(pid)
        if at is not None and at <= now:  # (most events find nothing due: skip the walk over lots)
            for lots in store.participant_lots(pid):
                apply_due(store, lots, now, timed, pos)
            at = first_due(pid)
        for c in made.get(pos, ()):
            program, rule, action = actions[(c["rule_id"], c["action_index"])]
            spec = lot_spec(SimpleNamespace(operation=None, program=program, key=key), rule.version, action.index)
            spec.update(expires_at=static_instant(action.expires_at, now),
                        matures_at=static_instant(action.matures_at, now))
            bucket = "DEFERRED" if deferred(spec["matures_at"], now) else "AVAILABLE"
            if bucket == "DEFERRED":
                vesting.append(c["_row"])
            lot = new_lot(spec, ("PARTICIPANT", pid, c["asset_id"], bucket), c["amount"], now)
            store.hold(lot)
            store.dirty_lots.add(lot.id)
            at = min((x for x in (at, next_due([lot])) if x is not None), default=None)
        due_at[pid] = at
    if vesting:
        vest = pl.int_range(pl.len()).is_in(vesting)
        effects = effects.with_columns(to_bucket=pl.when(vest).then(pl.lit("DEFERRED")).otherwise("to_bucket"))
    if not timed:
        return effects
    due = pl.DataFrame(timed, schema=effects.schema).select(effects.columns)
    # (stable: a participant's due changes of several assets keep the kernel's order)
    return pl.concat([effects, due]).sort("pos", "rule_order", "action_index", maintain_order=True)
