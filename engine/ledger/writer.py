"""Writing one batch: catalog rows, participants, events, entries, postings, balances, manifest.

The caller holds the transaction; everything here goes through the named statements of
sql/write_batch.sql over Arrow tables readable as `stage_*` relations (`db.execute`).
"""

from __future__ import annotations

import hashlib
import json
import re
import os
import sys
import time
from decimal import Decimal

import duckdb
import polars as pl

from engine import amounts
from engine.catalog import Catalog
from engine.errors import BalanceRangeError

from . import db
from .root import BatchRoot
from .sqlfiles import statement

ORDER = [
    "insert_catalog_programs", "insert_catalog_program_documents", "insert_catalog_automations",
    "archive_removed_automations", "update_automations_planned", "insert_catalog_group_founders", "insert_catalog_groups", "insert_catalog_assets",
    "insert_catalog_rewards", "insert_catalog_rules", "archive_removed_rules", "archive_removed_rewards",
    "insert_catalog_rule_versions", "insert_catalog_tiers", "delete_catalog_tier_levels", "insert_catalog_tier_levels",
    "delete_catalog_fingerprint", "insert_catalog_fingerprint",
    "insert_participants", "insert_enrollments", "insert_events", "insert_payload_types", "insert_operations", "update_participant_status",
    "insert_rejected", "insert_evaluations",
    "stage_entries", "insert_postings", "insert_leg_postings", "insert_entries", "match_balances", "update_balances", "insert_balances",
    "delete_entity_state", "insert_entity_state", "delete_group_members", "insert_group_members", "delete_participant_tiers", "insert_participant_tiers",
    "insert_tier_history", "delete_lots", "insert_lots", "upsert_reward_usage", "keep_redemptions", "delete_redemptions",
    "insert_redemptions",
    "upsert_budget_consumption", "delete_scheduled_events", "insert_scheduled_events",
]


def catalog_frames(catalog: Catalog) -> dict[str, pl.DataFrame]:
    programs = pl.DataFrame([
        {"id": str(p.id), "key": p.key, "name": p.model.name, "status": p.model.status,
         "on_unknown_participant": p.model.on_unknown_participant, "source_file": p.source,
         "redemption_target_type": p.model.redemption_target_type}
        for p in catalog.programs.values()])
    groups = pl.DataFrame([
        {"id": g.sid, "key": g.key, "name": g.name, "status": g.status, "definition": json.dumps(g.definition, sort_keys=True),
         "source_file": g.source} for g in catalog.groups.values()],
        schema={"id": pl.String, "key": pl.String, "name": pl.String, "status": pl.String, "definition": pl.String,
                "source_file": pl.String})
    founders = pl.DataFrame([
        {"group_id": g.sid, "participant_id": m.participant_id, "external_id": m.external_id, "role": m.role}
        for g in catalog.groups.values() for m in g.members],
        schema={"group_id": pl.String, "participant_id": pl.String, "external_id": pl.String, "role": pl.String})
    assets = pl.DataFrame([
        {"id": str(catalog.asset_ids[s]), "symbol": s, "name": a.name, "inventory_mode": a.inventory_mode,
         "issuance_policy": a.issuance_policy, "scale": a.scale,
         "max_transaction_amount": None if a.max_transaction_amount is None else str(a.max_transaction_amount)}
        for s, a in catalog.assets.items()], schema_overrides={"max_transaction_amount": pl.String})
    rules = pl.DataFrame([
        {"id": str(r.id), "program_id": str(p.id), "key": r.key, "name": r.name, "version": r.version,
         "order": r.order, "status": r.status, "stop_after_match": r.stop_after_match,
         "condition": r.condition.text, "definition": json.dumps(r.definition, sort_keys=True)}
        for p in catalog.programs.values() for r in p.rules],
        schema={"id": pl.String, "program_id": pl.String, "key": pl.String, "name": pl.String, "version": pl.String,
                "order": pl.Int64, "status": pl.String, "stop_after_match": pl.Boolean, "condition": pl.String,
                "definition": pl.String})
    rewards = pl.DataFrame([
        {"id": str(w.id), "program_id": str(p.id), "key": w.key, "name": w.model.name,
         "redemption_type": w.model.redemption_type, "asset_id": str(w.asset_id), "unit_cost": w.model.unit_cost,
         "max_total": w.model.max_total, "max_per_participant": w.model.max_per_participant,
         "status": w.model.status, "available_from": w.model.available_from,
         "available_until": w.model.available_until}
        for p in catalog.programs.values() for w in p.rewards.values()],
        schema={"id": pl.String, "program_id": pl.String, "key": pl.String, "name": pl.String,
                "redemption_type": pl.String, "asset_id": pl.String, "unit_cost": pl.Decimal(38, 18),
                "max_total": pl.Int64, "max_per_participant": pl.Int64, "status": pl.String,
                "available_from": pl.Datetime("us", "UTC"), "available_until": pl.Datetime("us", "UTC")})
    tiers = pl.DataFrame([
        {"id": t.sid, "program_id": str(p.id), "key": t.key, "name": t.name,
         "definition": json.dumps(t.definition, sort_keys=True), "lifecycle_since": t.since}
        for p in catalog.programs.values() for t in p.tiers.values()],
        schema={"id": pl.String, "program_id": pl.String, "key": pl.String, "name": pl.String, "definition": pl.String,
                "lifecycle_since": pl.Datetime("us", "UTC")})
    levels = pl.DataFrame([
        {"tier_id": t.sid, "key": lv.key, "name": lv.name, "rank": lv.rank, "benefits": json.dumps(lv.benefits, sort_keys=True)}
        for p in catalog.programs.values() for t in p.tiers.values() for lv in t.levels],
        schema={"tier_id": pl.String, "key": pl.String, "name": pl.String, "rank": pl.Int64, "benefits": pl.String})
    documents = pl.DataFrame([
        {"id": str(p.id), "key": p.key, "document": json.dumps(p.document, sort_keys=True)}
        for p in catalog.programs.values()], schema={"id": pl.String, "key": pl.String, "document": pl.String})
    automations = pl.DataFrame([
        {"id": a.sid, "program_id": str(p.id), "key": a.key, "name": a.name, "event_name": a.event_name,
         "scope": a.scope, "trigger_type": a.trigger, "status": a.status,
         "definition": json.dumps(a.definition, sort_keys=True)}
        for p in catalog.programs.values() for a in p.automations.values()],
        schema={c: pl.String for c in ("id", "program_id", "key", "name", "event_name", "scope", "trigger_type",
                                       "status", "definition")})
    return {"stage_programs": programs, "stage_groups": groups, "stage_group_founders": founders,
            "stage_assets": assets, "stage_rules": rules, "stage_rewards": rewards,
            "stage_tiers": tiers, "stage_tier_levels": levels, "stage_program_documents": documents,
            "stage_automations": automations}


def catalog_fingerprint(frames: dict[str, pl.DataFrame]) -> str:
    """The catalog rows a batch would write (`catalog_frames`), as one SHA-256: names, columns
    and values (Python reprs of the rows: exact for Decimals and datetimes, and the same for the
    same rows; write_csv cost ~5 ms per frame, a noticeable share of a backfill's small batches)."""
    h = hashlib.sha256()
    for name in sorted(frames):
        h.update(f"{name}\n{frames[name].columns!r}\n{frames[name].rows()!r}\0".encode())
    return h.hexdigest()


#: A transfer's recipients after the first: what their postings need.
LEG_COLUMNS = ("seq", "leg", "program_id", "asset_id", "to_type", "to_id", "to_bucket", "amount")


def entry_legs(effects: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The effects as write_batch.sql takes them: one row per entry (its `seq`), with
    `source_amount`, the amount of its source's posting; and the legs after the first of an entry
    with several destinations (`leg` 1, 2, ...: a transfer's recipients, which share its seq), each
    one more posting of the entry. The source's posting is the sum of its entry's legs."""
    if "leg" not in effects.columns:  # maintenance: expiries and maturities, one leg each
        effects = effects.with_columns(leg=pl.lit(0, pl.Int64))
    legs = effects.filter(pl.col("leg") > 0)
    if legs.is_empty():  # the common case, without a sum over every entry
        return effects.with_columns(source_amount=pl.col("amount")), legs.select(LEG_COLUMNS)
    # lazy: Polars 2.1's eager group_by sum of Decimals wraps on overflow (balance_changes)
    totals = effects.lazy().group_by("seq").agg(source_amount=pl.col("amount").sum()).collect()
    entries = effects.filter(pl.col("leg") == 0).join(totals, on="seq", how="left", maintain_order="left")
    return entries, legs.select(LEG_COLUMNS)


def account_legs(effects: pl.DataFrame, *keep: str) -> pl.DataFrame:
    """What each effect does to each account: -amount to its `from` account, then +amount to its
    `to` account (entity_type, entity_id, asset_id, bucket, amount; and the `keep` columns)."""
    return pl.concat([
        effects.select(*keep, entity_type="from_type", entity_id="from_id", asset_id="asset_id", bucket="from_bucket",
                       amount=-pl.col("amount")),
        effects.select(*keep, entity_type="to_type", entity_id="to_id", asset_id="asset_id", bucket="to_bucket",
                       amount="amount"),
    ])


def balance_changes(effects: pl.DataFrame) -> pl.DataFrame:
    """What the effects' postings add to each account (exact: Decimal sums): every effect takes
    `amount` from its `from` account and gives it to its `to` account (the legs of one entry take
    theirs from the same source, whose posting is their sum: the same total). `row`
    numbers the accounts for write_batch.sql's match_balances."""
    legs = account_legs(effects)
    # Lazy: Polars 2.1's eager group_by sum of a Decimal wraps around on overflow; this raises.
    try:
        return (legs.lazy().group_by("entity_type", "entity_id", "asset_id", "bucket").agg(pl.col("amount").sum())
                .collect().with_row_index("row"))
    except pl.exceptions.ComputeError as e:
        if "overflow" not in str(e):
            raise
        # A partial sum overflowed: the credits of an account summed before its debits can pass
        # 10^20 when its total does not. Sum exactly in Python (rare: balances near 10^20).
        totals: dict[tuple, Decimal] = {}
        for *account, amount in legs.iter_rows():
            totals[tuple(account)] = totals.get(tuple(account), Decimal(0)) + amount
        over = next((a for a, total in totals.items() if abs(total) >= amounts.LIMIT), None)
        if over is not None:  # the events were checked (engine/balance_range.py): time-driven postings
            etype, eid, asset, bucket = over
            raise BalanceRangeError(f"account {etype} {eid} (asset {asset}, {bucket})") from None
        return pl.DataFrame([(*a, t) for a, t in totals.items()], orient="row",
                            schema=legs.schema).with_row_index("row")


def _rss_mb() -> float:
    """Current resident set size (not the peak): what each statement leaves held."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


class BatchWriter:
    """Writes one batch, chunk by chunk, inside the caller's transaction.

    `write` runs the statements of write_batch.sql in ORDER over one chunk's stages (a statement
    whose `stage_*` input is not given, or whose inputs are all empty, is skipped: a maintenance
    batch has effects and lots but no events; only the first chunk carries the catalog). `close`
    writes the batch row. The root hash is fed as chunks are written, so no statement ever holds
    the whole batch's hashes: sha256(previous root || '#' || the batch's entry hashes in seq order
    joined by ';'), computed by `root.BatchRoot`, as verify recomputes it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, batch_id: int):
        self.con, self.batch_id = con, batch_id
        # written so far: the next chunk's entry and tier-change seqs continue from these
        self.entries = self.postings = self.tier_changes = 0
        # lot maturities and expiries written (their entries; the lots, when `lots` is a set:
        # `perkflow maintain` counts them wherever they were applied, before an event or after)
        self.lot_entries = 0
        self.lots: set[str] | None = None
        self.prev_root = con.execute(statement("lookups.sql", "last_root")).fetchall()[0][0]
        self.first_seq = con.execute(statement("lookups.sql", "next_seq")).fetchall()[0][0]
        self._root = BatchRoot(self.prev_root)
        db.define_hash_macros(con)

    def write(self, stages: dict[str, pl.DataFrame]) -> None:
        params = {"batch_id": self.batch_id}  # the only parameter of the per-chunk statements
        if "stage_effects" in stages:
            # a time-driven lot change is named by its lot (engine/lots.py apply_due)
            timed = stages["stage_effects"].filter(pl.col("source_name").str.starts_with("lot:"))["source_name"]
            self.lot_entries += len(timed)
            if self.lots is not None:
                self.lots.update(timed.to_list())
            entries, legs = entry_legs(stages["stage_effects"])
            stages = stages | {"stage_effects": entries, "stage_legs": legs,
                               "stage_balances": balance_changes(stages["stage_effects"])}
        tables = {name: db.arrow(frame) for name, frame in stages.items()}
        for name in ORDER:
            sql = statement("write_batch.sql", name)
            used = set(re.findall(r"\bstage_\w+", sql))
            # Missing: not this kind of batch (or chunk). All empty: nothing to do, and each
            # statement costs a few milliseconds, which adds up over a backfill of small batches.
            if any(stage not in stages for stage in used) or all(len(stages[stage]) == 0 for stage in used):
                continue
            try:
                self._run(name, sql, params, {stage: tables[stage] for stage in used})
            except duckdb.OutOfRangeException:
                if name != "update_balances":
                    raise
                # DuckDB says only that an addition overflowed, and the transaction is aborted:
                # no account to name
                raise BalanceRangeError("a stored balance") from None
        del tables
        if "stage_effects" in stages and len(stages["stage_effects"]):
            hashes = self.con.sql(statement("write_batch.sql", "chunk_hashes"),
                                  params={"batch_id": self.batch_id, "seq_from": stages["stage_effects"]["seq"].min()})
            hashes = hashes.to_arrow_table().column(0)
            self._root.add(hashes)
            self.entries += len(hashes)
            self.postings += 2 * len(hashes) + len(stages["stage_legs"])
        self.tier_changes += len(stages.get("stage_tier_history", ()))

    @property
    def next_seq(self) -> int:
        """The seq of the next entry this batch writes (entries are numbered across the ledger)."""
        return self.first_seq + self.entries

    def catalog_stages(self, catalog: Catalog) -> dict[str, pl.DataFrame]:
        """The catalog's stages (`catalog_frames`) with their fingerprint to store, or none when
        the ledger holds exactly these catalog rows already: every catalog statement would be a
        no-op, yet cost milliseconds in each daily batch of a backfill."""
        frames = catalog_frames(catalog)
        fp = catalog_fingerprint(frames)
        if self.con.execute(statement("lookups.sql", "catalog_fingerprint")).fetchall() == [(fp,)]:
            return {}
        return frames | {"stage_catalog_fingerprint": pl.DataFrame({"fingerprint": [fp]})}

    def close(self, params: dict, parts: list[dict] = ()) -> None:
        """The batch row: counts, input fingerprint, and the root chaining it to the previous batch;
        and a row for each of `parts` (fingerprint, sources, rows_read) when it booked several
        inputs (a backfill range)."""
        params = params | {"batch_id": self.batch_id, "entries": self.entries, "postings": self.postings,
                           "root": self._root.hexdigest(), "prev_root": self.prev_root}
        self._run("insert_batch", statement("write_batch.sql", "insert_batch"), params, {})
        for part in parts:
            self._run("insert_batch_input", statement("write_batch.sql", "insert_batch_input"),
                      part | {"batch_id": self.batch_id}, {})

    def _run(self, name: str, sql: str, params: dict, tables: dict) -> None:
        used = {k: v for k, v in params.items() if f"${k}" in sql}
        t, cpu = time.perf_counter(), time.process_time()
        db.execute(self.con, sql, used, **tables)
        if os.environ.get("PERKFLOW_TRACE"):  # wall, then CPU of all threads (steadier on a shared machine)
            held = self.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0] / 2**20
            print(f"  {name}: {time.perf_counter() - t:.2f}s rss {_rss_mb():.0f} MB (DuckDB {held:.0f} MB) "
                  f"cpu {time.process_time() - cpu:.2f}s", file=sys.stderr)
