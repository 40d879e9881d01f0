"""`perkflow maintain --as-of T`: everything time-driven that is due up to T, for everyone.

Lot maturities and expiries are written as entries at the instants they were due, exactly the
entries an event touching the holder would have triggered (same ids), so running maintenance
early, late, twice, or never before the next event gives the same ledger. Counter resets need no
entries; they are applied to the stored state (`participant_state`, `program_state`) of every
entity with a counter due, as the next event touching it would (semantics.md 3: "A maintenance
run --as-of T applies everything due up to T for all entities").
Tier lifecycle reviews, counter rollovers and tier expiries (engine/tiers.py) are applied the same
way, from the tier definitions the last run stored, so no program files are needed.
Automations (engine/automations.py) fire first, in the same batch: their SYSTEM events due up to
T go, firing by firing, through the rules of the programs the runs stored, exactly as the
events of `perkflow run` do (docs/decisions.md, "Automations").
SYSTEM events of SCHEDULE_EVENT / BROADCAST due by T that are still waiting go through the rules
next, in the same batch (engine/run.py `drain`); both use the program files the runs stored, or
`--programs` when given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl

from engine import automations, tiers
from engine.catalog import load_catalog
from engine.catalog.ledger_checks import check_assets
from engine.errors import InputError
from engine.execute import ACCOUNT_SCHEMA, EFFECT_SCHEMA, TIMED_SCHEMA
from engine.ledger import db
from engine.ledger.sqlfiles import statement
from engine.ledger.writer import BatchWriter
from engine.lots import TIMED_ACTION_INDEX, Lot, apply_due
from engine.run import catalog_version, drain, new_totals, process_chunk
from engine.state import Store


@dataclass
class MaintainReport:
    batch_id: int | None
    as_of: datetime
    lots_due: int
    entries: int
    seconds: float
    tier_changes: int = 0
    counter_resets: int = 0  # entities whose counters reset
    fired: int = 0  # SYSTEM events of automations processed
    # the entries written while the SYSTEM events (automations', SCHEDULE_EVENT's and BROADCAST's)
    # were processed: their rules' entries and the lot maturities and expiries due for the
    # participants they touched, applied before each (`entries`: those of everyone else)
    system_event_entries: int = 0
    system_events: int = 0  # SYSTEM events of SCHEDULE_EVENT / BROADCAST processed
    # the batch's counts as `batches` stores them (read = `fired`; semantics.md 13)
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    rejected: int = 0


def maintain(as_of: datetime, db_file: str | Path | None = None, *, wait: float = 30.0,
             programs: str | Path | None = None) -> MaintainReport:
    t0 = time.perf_counter()
    catalog = load_catalog(programs) if programs is not None else None
    con = db.connect(db_file, wait=wait)
    try:
        con.begin()
        db.ensure_schema(con)
        batch_id = con.execute(statement("lookups.sql", "next_batch_id")).fetchall()[0][0]
        writer = BatchWriter(con, batch_id)
        totals = new_totals()
        if catalog is not None:  # files other than the ones the runs stored: the ledger's assets stay as they are
            check_assets(con, catalog)
        catalog = catalog or _stored_catalog(con, as_of)
        # Automations first, firing by firing, through the path of `perkflow run`: the kernel
        # applies what is due for the participants their events touch, at their instants, before
        # each event (SCHEDULE_EVENT events due by each firing's instant included); what is due
        # for everyone else is applied after, at its own instant.
        planned = _fire_automations(con, catalog, as_of, writer, totals)
        _system_events(con, catalog, as_of, writer, totals)
        due = pl.from_arrow(con.sql(statement("lookups.sql", "due_lots"), params={"as_of": as_of}).to_arrow_table())
        store = Store(con, {})
        # A maturity into an overdrawn AVAILABLE bucket repays the overdraft first, and what is
        # owed counts every AVAILABLE lot of the holder (engine.lots.owed): the holders of the
        # maturing lots come with their balances and all their lots.
        maturing = due.filter((pl.col("status") == "DEFERRED") & (pl.col("matures_at") <= as_of))
        maturing = sorted(set(maturing["entity_id"].to_list()))
        store.load_balances(maturing)
        store.load_live_lots(maturing)
        holders: dict[tuple[str, str, str], list[Lot]] = store.lots
        for row in due.iter_rows(named=True):
            if row["id"] not in store.lot_ids:
                lot = Lot(**{k: (Decimal(v) if k in ("amount", "remaining") else v) for k, v in row.items()})
                holders.setdefault((lot.entity_type, lot.entity_id, lot.asset_id), []).append(lot)
        effects: list[dict] = []
        for lots in holders.values():
            apply_due(store, lots, as_of, effects, pos=0)
        tier_store = _tier_reviews(con, as_of)
        resets = _counter_resets(con, as_of, tier_store)  # after the reviews: they read counters as of their instants
        marks = {"stage_automations_planned": automations.planned_frame(planned)} if planned else {}
        if not totals["rows_read"] and not totals["system_events"] and not effects and not tier_store.tier_history and not tier_store.dirty_states:
            if marks:  # nothing fired, but the automations' instants up to as_of have passed
                writer.write(marks)
                con.commit()
            else:
                con.rollback()
            return MaintainReport(None, as_of, 0, 0, time.perf_counter() - t0)
        store.lots = holders
        frame = pl.DataFrame(effects, schema=EFFECT_SCHEMA | ACCOUNT_SCHEMA | TIMED_SCHEMA)
        base = writer.next_seq  # after the entries of the automations' events
        stage_effects = frame.sort("effective_at", "source_name", "action_type").with_row_index("_n").select(
            kind=pl.lit("lot"), source_name="source_name", program_id="program_id", rule_id="rule_id",
            rule_version="rule_version", action_index=pl.lit(TIMED_ACTION_INDEX, pl.Int64), action_type="action_type",
            asset_id="asset_id", amount="amount", allow_negative="allow_negative", description="description",
            effective_at="effective_at", seq=pl.col("_n").cast(pl.Int64) + base, from_type="from_type",
            from_id="from_id", from_bucket="from_bucket", to_type="to_type", to_id="to_id", to_bucket="to_bucket",
            reference_id="reference_id")
        tier_frames = tier_store.state_frames(batch_id, writer.tier_changes)
        stages = {"stage_effects": stage_effects, "stage_lots": store.state_frames(batch_id)["stage_lots"],
                  **{k: tier_frames[k] for k in ("stage_state", "stage_state_entities", "stage_participant_tiers",
                                                  "stage_tier_history")}, **marks}
        system_event_entries = writer.entries
        writer.write(stages)
        params = {"fingerprint": f"maintain:{as_of.isoformat()}", "sources": [],
                  "catalog_version": "" if catalog is None else catalog_version(catalog)}
        writer.close(totals | params)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.close()
    return MaintainReport(batch_id, as_of, len(due), writer.entries - system_event_entries,
                          time.perf_counter() - t0, writer.tier_changes, resets,
                          fired=totals["rows_read"], system_event_entries=system_event_entries,
                          system_events=totals["system_events"],
                          **{k: totals[k] for k in ("completed", "failed", "duplicates", "rejected")})


def _fire_automations(con, catalog, as_of: datetime, writer: BatchWriter, totals: dict) -> dict:
    """Every automation firing due up to `as_of`, one by one, each firing's SYSTEM events one
    chunk of this batch (engine/run.py process_chunk: intake, rules, ledger), so a later
    firing's filter and guard see what earlier ones did. Returns the automations' new
    planned_through."""
    if catalog is None:
        return {}
    firings, planned = automations.schedule(con, catalog, as_of)
    for _instant, group in automations.one_by_one(firings):
        rows = automations.rows_at(con, catalog, group, totals["rows_read"])
        if len(rows):
            process_chunk(con, rows, catalog, writer, totals, first=False, system=True)
    return planned


def _stored_catalog(con, as_of: datetime):
    """The program files the runs stored, compiled, when something needs the rules: an
    automation was stored, or a SYSTEM event is due (compiling them is most of a small
    maintenance run otherwise)."""
    if (con.execute(statement("lookups.sql", "automation_marks")).fetchall()
            or con.execute(statement("lookups.sql", "due_scheduled_count"), {"reach": as_of}).fetchall()[0][0]):
        return automations.stored_catalog(con)
    return None


def _system_events(con, catalog, as_of: datetime, writer: BatchWriter, totals: dict) -> None:
    """Process the SYSTEM events (SCHEDULE_EVENT) still waiting that are due by `as_of`, as a
    chunk of this batch; they need a catalog (stored by the runs, or --programs)."""
    if catalog is None:
        due = con.execute(statement("lookups.sql", "due_scheduled_count"), {"reach": as_of}).fetchall()[0][0]
        if due:
            raise InputError(f"{due} SYSTEM event(s) (SCHEDULE_EVENT) are due by {as_of.isoformat()}; they go through "
                             "the rules: give --programs to process them")
        return
    drain(con, catalog, as_of, writer, totals)


def _counter_resets(con, as_of: datetime, store: Store) -> int:
    """Apply the `reset_after` resets due by `as_of` of every entity's counters to `store` (marked
    for rewriting, exactly as Tx.state marks them before an event); returns how many entities."""
    due = con.execute(statement("lookups.sql", "due_counter_entities"), {"as_of": as_of}).fetchall()
    return store.reset_counters({eid: as_of for (eid,) in due})


def _tier_reviews(con, as_of: datetime) -> Store:
    """A store (of its own: it loads participants' lots too) with every tier review, counter
    rollover and tier expiry due up to `as_of` applied, for every participant holding a level
    in a tier with a lifecycle, a counter such a tier rolls over, or a level expiring by then."""
    store = Store(con, {})
    timed = tiers.stored(con, as_of)
    if not timed:
        return store
    lifecycle = [t for t in timed if t.lifecycle is not None]
    holders = {pid for (pid,) in con.execute(statement("lookups.sql", "expiring_holders"), {"as_of": as_of}).fetchall()}
    if lifecycle:
        holders |= {pid for (pid,) in db.execute(con, statement("lookups.sql", "lifecycle_holders"),
                                                 stage_tier_ids=pl.DataFrame({"id": [t.sid for t in lifecycle]})).fetchall()}
    rolled = [k for t in lifecycle for k in t.rollover_keys]
    if rolled:  # participants with a counter that rolls over at period closes, level or not
        found = db.execute(con, statement("lookups.sql", "counter_holders"),
                           stage_counter_keys=pl.DataFrame({"key": rolled}, schema={"key": pl.String})).fetchall()
        holders |= {pid for (pid,) in found}
    ordered = sorted(holders)
    store.preload(ordered, [])
    for pid in ordered:
        tiers.apply_due(store, timed, pid, as_of)
    return store
