"""Lots on the set-wise paths: what engine.kernel does for lots, computed set-wise once the
running path (engine/running.py) or the set-based path (engine/execute.py) has settled the
batch's outcome.

Lots cannot change an event's outcome there: engine.plan sends a batch to the kernel when a rule
debits a LOT asset, holds it, or reads its balance. So those paths decide every event without
them, and nothing spends a lot in the batch: each lot's fate is its own. A maturity or expiry
happens at the first event touching the holder (as its subject or its recipient; in stream
order, failed ones too: semantics.md 3, engine.lots.apply_due) that comes after the lot was made
and whose `now` has reached the instant; events of a batch are in timestamp order, so that is an
as-of join. The changes an event finds come out in the kernel's order (the subject's, then the
recipient's; by asset, then as engine.lots.due_changes sorts them), so the ledger is the
kernel's entry for entry (tests/differential/test_setwise_lots.py, and test_ledger_vs_oracle.py's
recipient cases).

The one way lots meet each other here is an overdraft left by an earlier batch (docs/decisions.md,
"Overdrafts on LOT assets"): the credits and maturities arriving in an overdrawn AVAILABLE bucket
repay it first (`_repaid`, a running sum against what the holder owed at the batch's start), and
a lot's expiry then takes only what the lot kept.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import polars as pl

from engine import ids
from engine.catalog import Catalog
from engine.io.events import TS
from engine.lots import BREAKAGE
from engine.state import LOT_SCHEMA, Store


def settle(effects: pl.DataFrame, runnable: pl.DataFrame, catalog: Catalog, store: Store) -> pl.DataFrame:
    """`effects` (ledger order, with accounts) with the lots its LOT credits make put in
    `store.staged`, the credits of those that vest moved to DEFERRED, and the due maturities
    and expiries of the lots of the participants the events touch (subjects and recipients;
    the lots in `store` and the new ones) inserted before the event that finds them."""
    touches = _touches(runnable)
    waiting = store.due_lots(touches["entity_id"].unique().to_list(), runnable["event_timestamp"].max())
    effects = effects.with_row_index("_row")
    made = _made(effects, runnable, catalog)
    held = _held(store)
    lots = pl.concat([held, waiting.with_columns(pos=pl.lit(-1, pl.Int64)), made.drop("_row")])
    if lots.is_empty():
        return effects.drop("_row")
    events = (touches.filter(pl.col("entity_id").is_in(lots["entity_id"].unique().implode()))
              .with_columns(rank=pl.int_range(pl.len()).over("entity_id")))
    changes = _changes(lots, events)
    repaid = _repaid(made, changes, store)
    if not repaid.is_empty():  # an expiry takes only what repaying an overdraft left of the lot
        changes = changes.join(repaid, on="id", how="left").with_columns(
            remaining=pl.when(pl.col("kind") == "EXPIRATION")
            .then(pl.col("remaining") - pl.col("repaid").fill_null(0)).otherwise("remaining")
            .cast(LOT_SCHEMA["remaining"])).filter(pl.col("remaining") > 0).drop("repaid")
    vesting = made.filter(pl.col("status") == "DEFERRED")["_row"]
    effects = effects.with_columns(to_bucket=pl.when(pl.col("_row").is_in(vesting.implode()))
                                   .then(pl.lit("DEFERRED")).otherwise("to_bucket")).drop("_row")
    _keep(lots, changes, repaid, held["id"], store)
    if changes.is_empty():
        return effects
    # numbered per (event, holder, asset) as engine.lots.apply_due numbers them; the kernel
    # touches the subject, then the recipient, a holder's assets in id order, and the stable
    # sort below (and in engine.run) by action_index keeps that order among equal indexes
    due = changes.sort("pos", "role", "asset_id", "instant", "kind_rank", "created_at", "id").with_columns(
        action_index=pl.int_range(pl.len()).over("pos", "role", "asset_id")).sort("pos", "action_index", "role", "asset_id")
    due = due.select(
        "pos", rule_id=pl.lit(None, pl.String), rule_version="kind", rule_order=pl.lit(-1, pl.Int64),
        action_index="action_index", action_type="kind", asset_id="asset_id", amount="remaining",
        allow_negative=pl.lit(False), description=pl.concat_str(pl.lit("lot "), pl.col("kind").str.to_lowercase()),
        entity_id="entity_id", from_type=pl.lit("PARTICIPANT"), from_id="entity_id", from_bucket="from_bucket",
        to_type=pl.when(pl.col("kind") == "MATURITY").then(pl.lit("PARTICIPANT")).otherwise(pl.lit("SYSTEM_BREAKAGE")),
        to_id=pl.when(pl.col("kind") == "MATURITY").then("entity_id").otherwise(pl.lit(BREAKAGE)),
        to_bucket=pl.lit("AVAILABLE"), source_name=pl.concat_str(pl.lit("lot:"), "id"), effective_at="instant",
        program_id="program_id", reference_id=pl.lit(None, pl.String),
    ).select(effects.columns).cast(effects.schema)
    # (stable: a participant's due changes of several assets keep the kernel's order)
    return pl.concat([effects, due]).sort("pos", "rule_order", "action_index", maintain_order=True)


def _touches(runnable: pl.DataFrame) -> pl.DataFrame:
    """The participants each event touches before its rules (engine.kernel: touch(subject), then
    touch(recipient)), in that order: pos, role (0 subject, 1 recipient), entity_id, now. A
    recipient that is the event's own subject is touched once."""
    subject = runnable.select("pos", role=pl.lit(0, pl.Int8), entity_id="subject_id", now="event_timestamp")
    recipient = runnable.filter(pl.col("recipient_uuid").is_not_null()
                                & (pl.col("recipient_uuid").cast(pl.String) != pl.col("subject_id"))).select(
        "pos", role=pl.lit(1, pl.Int8), entity_id=pl.col("recipient_uuid").cast(pl.String), now="event_timestamp")
    return pl.concat([subject, recipient]).drop_nulls("entity_id").sort("pos", "role")


def _made(effects: pl.DataFrame, runnable: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """The lots the batch's LOT credits make (LOT_SCHEMA + `pos` of the event, `_row` of the
    credit in `effects`): ids as engine.lots.lot_spec names them, instants from the action's
    static expires_at / matures_at (a duration from `now`, or an instant), DEFERRED while they vest."""
    lot_assets = [catalog.asset_sids[s] for s, a in catalog.assets.items() if a.inventory_mode == "LOT"]
    credits = effects.filter((pl.col("action_type") == "CREDIT") & pl.col("asset_id").is_in(lot_assets))
    if credits.is_empty():
        return pl.DataFrame(schema=LOT_SCHEMA | {"pos": pl.Int64, "_row": pl.UInt32})
    actions = pl.DataFrame(
        [(r.sid, a.index, str(p.id), r.version, *_instant(a.expires_at), *_instant(a.matures_at))
         for p in catalog.programs.values() for r in p.active_rules for a in r.actions if a.type == "CREDIT"],
        schema={"rule_id": pl.String, "action_index": pl.Int64, "lot_program": pl.String, "version": pl.String,
                "expires_in": pl.Duration("us"), "expires_on": TS, "matures_in": pl.Duration("us"), "matures_on": TS},
        orient="row")
    c = (credits.select("_row", "pos", "rule_id", "action_index", "asset_id", "amount", holder="entity_id")
         .join(runnable.select("pos", "event_timestamp", "idempotency_key"), on="pos")
         .join(actions, on=["rule_id", "action_index"]))
    lot_ids = [ids.name_id_text("lot", "event", p, k, v, str(i)) for p, k, v, i in
               zip(c["lot_program"], c["idempotency_key"], c["version"], c["action_index"])]
    now = pl.col("event_timestamp")
    return c.select(
        id=pl.Series(lot_ids, dtype=pl.String), entity_type=pl.lit("PARTICIPANT"), entity_id="holder",
        asset_id="asset_id", amount="amount", remaining="amount",
        status=pl.when(pl.coalesce(now + pl.col("matures_in"), "matures_on") > now)
        .then(pl.lit("DEFERRED")).otherwise(pl.lit("AVAILABLE")),
        # never before the lot exists (engine.lots.not_before)
        created_at=now, expires_at=_not_before(pl.coalesce(now + pl.col("expires_in"), "expires_on"), now),
        matures_at=pl.coalesce(now + pl.col("matures_in"), "matures_on"), reference_id=pl.lit(None, pl.String),
        program_id="lot_program", provisional=pl.lit(False), pos="pos", _row="_row",
    ).cast(LOT_SCHEMA)


def _not_before(expires_at: pl.Expr, now: pl.Expr) -> pl.Expr:
    """engine.lots.not_before set-wise: a lot never expires before it exists (no expiry stays none)."""
    return pl.when(expires_at.is_null()).then(expires_at).otherwise(pl.max_horizontal(expires_at, now))


def _instant(spec) -> tuple:
    """A static expires_at / matures_at as (duration, instant): one of them, or neither."""
    return (spec, None) if isinstance(spec, timedelta) else (None, spec)


def _held(store: Store) -> pl.DataFrame:
    """The participants' Lots in `store` (a kernel lookup loads them) that can still mature or
    expire (LOT_SCHEMA + pos -1: made before the batch)."""
    rows = [(lot.id, lot.entity_type, lot.entity_id, lot.asset_id, lot.amount, lot.remaining, lot.status,
             lot.created_at, lot.expires_at, lot.matures_at, lot.reference_id, lot.program_id, lot.provisional, -1)
            for (etype, _, _), lots in store.lots.items() if etype == "PARTICIPANT"
            for lot in lots if lot.remaining > 0 and lot.status in ("AVAILABLE", "DEFERRED", "HELD")]
    return pl.DataFrame(rows, schema=LOT_SCHEMA | {"pos": pl.Int64}, orient="row")


def _changes(lots: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Each due change (engine.lots.due_changes) with the stream position of the event that finds
    it: the holder's first event after the lot was made (rank >= `first`) whose `now` has reached
    the change's instant. A lot that expires before (or when) it matures expires from DEFERRED;
    one that matures first expires from AVAILABLE; held value expires from HELD."""
    lots = lots.join(events.select("pos", "entity_id", first=pl.col("rank") + 1), on=["pos", "entity_id"],
                     how="left").with_columns(
        first=pl.col("first").fill_null(0))
    matures = (pl.col("status") == "DEFERRED") & pl.col("matures_at").is_not_null() & (
        pl.col("expires_at").is_null() | (pl.col("expires_at") > pl.col("matures_at")))
    changes = pl.concat([
        lots.filter(matures).with_columns(kind=pl.lit("MATURITY"), kind_rank=pl.lit(0), instant="matures_at",
                                          from_bucket=pl.lit("DEFERRED")),
        lots.filter(pl.col("expires_at").is_not_null()).with_columns(
            kind=pl.lit("EXPIRATION"), kind_rank=pl.lit(1), instant="expires_at",
            from_bucket=pl.when(matures).then(pl.lit("AVAILABLE")).otherwise("status")),
    ])
    # the first event reaching each instant: as-of on the holder's `now` (non-decreasing in
    # stream order within a batch; cum_max keeps the join exact even if it were not)
    reach = (events.with_columns(now=pl.col("now").cum_max().over("entity_id"))
             .group_by("entity_id", "now").agg(reached=pl.col("rank").min()).sort("now"))
    found = changes.sort("instant").join_asof(reach, left_on="instant", right_on="now", by="entity_id",
                                              strategy="forward", check_sortedness=False)
    at = found.filter(pl.col("reached").is_not_null()).with_columns(rank=pl.max_horizontal("first", "reached"))
    return at.join(events.select("entity_id", "rank", "role", at_pos="pos"), on=["entity_id", "rank"]).drop("pos").rename(
        {"at_pos": "pos"})


def _repaid(made: pl.DataFrame, changes: pl.DataFrame, store: Store) -> pl.DataFrame:
    """What each lot arriving in AVAILABLE repays of its holder's overdraft (id, repaid > 0;
    docs/decisions.md, "Overdrafts on LOT assets", engine.lots.repay). Nothing in these batches
    debits a LOT asset, and an expiry does not change what is owed (it takes as much from the
    lots as from the balance), so a holder's debt at an arrival is its debt at the start of the
    batch less what the arrivals before it brought: a running sum in the kernel's order (by
    event; within one, the maturities it finds, by instant, created_at and id, then the credits
    of its rules in ledger order)."""
    none = pl.DataFrame(schema={"id": pl.String, "repaid": LOT_SCHEMA["remaining"]})
    arrivals = pl.concat([
        changes.filter(pl.col("kind") == "MATURITY").select(
            "id", "entity_id", "asset_id", "pos", "created_at", phase=pl.lit(0), instant="instant",
            _row=pl.lit(None, pl.UInt32), amount="remaining"),
        made.filter(pl.col("status") == "AVAILABLE").select(
            "id", "entity_id", "asset_id", "pos", "created_at", phase=pl.lit(1), instant=pl.lit(None, TS),
            _row="_row", amount="amount"),
    ])
    if arrivals.is_empty():
        return none
    debts = store.lot_debts(arrivals["entity_id"].unique().to_list())
    if debts.is_empty():
        return none
    amount = pl.col("amount")
    before = amount.cum_sum().over("entity_id", "asset_id") - amount  # what earlier arrivals brought
    left = pl.col("owed") - pl.col("before")
    return (arrivals.join(debts, on=["entity_id", "asset_id"])
            .sort("pos", "phase", "instant", "created_at", "id", "_row")
            .with_columns(before=before)
            .select("id", repaid=pl.when(left <= 0).then(pl.lit(0)).when(left < amount).then(left).otherwise(amount)
                    .cast(LOT_SCHEMA["remaining"]))
            .filter(pl.col("repaid") > 0))


def _keep(lots: pl.DataFrame, changes: pl.DataFrame, repaid: pl.DataFrame, held: pl.Series, store: Store) -> None:
    """The lots as the changes (and the repaying of overdrafts) leave them, for the writer: the
    new ones and the changed loaded ones staged in `store.staged`, the changed Lots of `store`
    (ids `held`) changed in place. A lot that repaid all it brought is CONSUMED."""
    fate = changes.group_by("id").agg(expired=(pl.col("kind") == "EXPIRATION").any())
    final = lots.join(fate, on="id", how="left").join(repaid, on="id", how="left").with_columns(
        remaining=pl.when(pl.col("expired")).then(pl.lit(0, LOT_SCHEMA["remaining"]))
        .otherwise(pl.col("remaining") - pl.col("repaid").fill_null(0)).cast(LOT_SCHEMA["remaining"]))
    final = final.with_columns(
        status=pl.when(pl.col("expired")).then(pl.lit("EXPIRED"))
        .when(pl.col("repaid").is_not_null() & (pl.col("remaining") == 0)).then(pl.lit("CONSUMED"))
        .when(pl.col("expired").is_not_null()).then(pl.lit("AVAILABLE")).otherwise("status"))
    touched = pl.col("expired").is_not_null() | pl.col("repaid").is_not_null()
    staged = final.filter((pl.col("pos") >= 0) | (touched & ~pl.col("id").is_in(held.implode())))
    if not staged.is_empty():
        store.stage("stage_lots", staged.select(list(LOT_SCHEMA)))
    changed = {i: (status, remaining) for i, status, remaining in final.filter(
        (pl.col("pos") < 0) & touched & pl.col("id").is_in(held.implode())).select("id", "status", "remaining").iter_rows()}
    for holder in store.lots.values():
        for lot in holder:
            if lot.id in changed:
                lot.status, lot.remaining = changed[lot.id][0], Decimal(changed[lot.id][1])
                store.dirty_lots.add(lot.id)
