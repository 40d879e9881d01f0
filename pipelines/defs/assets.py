"""Assets: the landed event files, the ledger they are booked into, and the balances it yields.

The assets orchestrate; the engine does the work. `ledger` books the days of its run in day order
with `engine.run.Backfill.run_days` (one open file for the range; consecutive days in time order as
one batch), and nothing else writes to the database.
"""


import hashlib
from datetime import datetime, timedelta, timezone

import dagster as dg
import pyarrow.parquet as pq

from engine.maintain import maintain
from engine.run import Backfill

from engine.ledger.sqlfiles import statement

from .partitions import daily
from .resources import LedgerDatabase, PerkflowFiles

POOL = "duckdb_writer"  # DuckDB: one process may open the file for writing, and then no other may open it


def _days(context: dg.AssetExecutionContext) -> list[str]:
    """The partition keys of this run, oldest first (one key, or a range under a single-run backfill)."""
    return sorted(context.partition_keys)


@dg.asset(
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"parquet"},
    group_name="perkflow",
    description="Event files landed for a day under <landing>/date=YYYY-MM-DD/ (PERKFLOW_LANDING). "
                "Materialising takes an inventory (files, bytes, rows, content hash); it does not copy data.",
)
def raw_event_batches(context: dg.AssetExecutionContext, perkflow_files: PerkflowFiles) -> dg.MaterializeResult:
    inventory = []
    for day in _days(context):
        files = perkflow_files.day_files(day)
        h = hashlib.sha256()
        rows = 0
        size = 0
        for f in files:
            size += f.stat().st_size
            h.update(f.name.encode() + b"\0" + f.read_bytes())
            if f.suffix.lower() in (".parquet", ".pq"):
                rows += pq.ParquetFile(f).metadata.num_rows
        if not files:
            context.log.warning(f"{day}: nothing landed in {perkflow_files.day_dir(day)}")
        inventory.append({"day": day, "files": len(files), "bytes": size, "parquet_rows": rows,
                          "sha256": h.hexdigest()[:16] if files else ""})
    return dg.MaterializeResult(metadata={
        "landing": dg.MetadataValue.path(str(perkflow_files.landing_dir())),
        "days": len(inventory),
        "files": sum(i["files"] for i in inventory),
        "bytes": sum(i["bytes"] for i in inventory),
        "dagster/row_count": sum(i["parquet_rows"] for i in inventory),
        "empty_days": ", ".join(i["day"] for i in inventory if not i["files"]) or "none",
        "inventory": dg.MetadataValue.md(_table(inventory)),
    })


@dg.asset(
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(raw_event_batches),
        # Self-dependency on the previous day: a day is booked only after the day before it,
        # so backfills run in day order. The first day has no previous day.
        dg.AssetDep("ledger", partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)),
    ],
    pool=POOL,
    kinds={"duckdb"},
    group_name="perkflow",
    description="The double-entry ledger in DuckDB (PERKFLOW_DB): each day's landed files booked with "
                "engine.run.Backfill.run_days, days in order, on one open file; consecutive days whose rows follow "
                "one another in time are one batch (one transaction), which gives the ledger a batch per day gives. "
                "Idempotent: a day whose files were booked before is a no-op; overlapping input counts as duplicates.",
)
def ledger(context: dg.AssetExecutionContext, ledger_db: LedgerDatabase,
           perkflow_files: PerkflowFiles) -> dg.MaterializeResult:
    # Days oldest first (day D's opening balances are day D-1's closing ones), one transaction per
    # batch. If day k of a range fails, days before it stay committed and the step fails;
    # re-running the range books them as no-ops (same files -> already committed) and carries on
    # from day k.
    programs = perkflow_files.programs_dir()
    db_file = ledger_db.resolved_path()
    landed = {perkflow_files.day_dir(day): day for day in _days(context) if perkflow_files.day_files(day)}
    reports = [{"days": day, "batch_id": None, "already_committed": False, "read": 0, "completed": 0, "failed": 0,
                "duplicates": 0, "rejected": 0, "entries": 0} for day in _days(context) if day not in landed.values()]
    for r in reports:
        context.log.info(f"{r['days']}: no landed files, nothing to book")
    with Backfill(db_file, wait=ledger_db.wait_seconds) as backfill:  # one open file for the range
        booked = backfill.run_days(programs, list(landed), progress=lambda msg: context.log.debug(msg))
    for folders, report in booked:
        days = landed[folders[0]] + (f" .. {landed[folders[-1]]}" if len(folders) > 1 else "")
        r = report.as_dict()
        context.log.info(f"{days}: batch {r['batch_id']}"
                         f"{' (already committed, no-op)' if r['already_committed'] else ''}: "
                         f"read {r['read']}, completed {r['completed']}, failed {r['failed']}, "
                         f"duplicates {r['duplicates']}, rejected {r['rejected']}, entries {r['entries']}")
        reports.append({"days": days} | {k: r[k] for k in (
            "batch_id", "already_committed", "read", "completed", "failed", "duplicates", "rejected", "entries")})
    reports.sort(key=lambda r: r["days"])
    if not db_file.exists():  # nothing landed yet: still leave an (empty) ledger for the readers downstream
        with ledger_db.connect():  # a writable connection creates the schema and views
            pass
    total = {k: sum(r[k] for r in reports) for k in ("read", "completed", "failed", "duplicates", "rejected", "entries")}
    return dg.MaterializeResult(metadata={
        "database": dg.MetadataValue.path(str(db_file)),
        "days": len(_days(context)),
        **total,
        "batches": dg.MetadataValue.md(_table(reports)),
    })


@dg.asset(
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ledger],
    pool=POOL,
    kinds={"duckdb"},
    group_name="perkflow",
    description="Time-driven ledger changes due by the end of each day, written by engine.maintain at the "
                "instants they were due: automation firings (SYSTEM events through the rules), lot maturities "
                "and expiries, tier reviews, counter resets. Idempotent.",
)
def lot_maintenance(context: dg.AssetExecutionContext, ledger_db: LedgerDatabase) -> dg.MaterializeResult:
    reports = []
    for day in _days(context):
        as_of = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(days=1)
        r = maintain(as_of, ledger_db.resolved_path(), wait=ledger_db.wait_seconds)
        context.log.info(f"{day}: {r.fired} automation events and {r.system_events} scheduled SYSTEM events "
                         f"({r.system_event_entries} entries), {r.entries} entries for {r.lots_due} lots due by "
                         f"{as_of.isoformat()}")
        reports.append({"day": day, "batch_id": r.batch_id, "automation_events": r.fired, "lots_due": r.lots_due,
                        "entries": r.entries + r.system_event_entries})
    return dg.MaterializeResult(metadata={"days": len(reports), "entries": sum(r["entries"] for r in reports),
                                          "automation_events": sum(r["automation_events"] for r in reports),
                                          "maintenance": dg.MetadataValue.md(_table(reports))})


@dg.asset(
    deps=[ledger, lot_maintenance],
    pool=POOL,
    kinds={"duckdb"},
    group_name="perkflow",
    description="Current balances (the `balances` view over account_balances). Materialising reports "
                "row count and per-asset totals held by participants; the data stays in DuckDB.",
)
def balances(ledger_db: LedgerDatabase) -> dg.MaterializeResult:
    with ledger_db.connect(read_only=True) as con:
        rows = con.execute(statement("reports.sql", "balance_count")).fetchall()[0][0]
        per_asset = con.execute(statement("reports.sql", "balance_totals")).fetchall()
    totals = [{"asset": a, "accounts": n, "participants": p, "available": str(av), "held": str(h),
               "deferred": str(d)} for a, n, p, av, h, d in per_asset]
    metadata: dict = {"dagster/row_count": rows, "totals_per_asset": dg.MetadataValue.md(_table(totals))}
    for t in totals:  # numeric series per asset for the UI's metadata plots (exact values in the table)
        metadata[f"available[{t['asset']}]"] = float(t["available"])
    return dg.MaterializeResult(metadata=metadata)


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if r[k] is None else str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)
