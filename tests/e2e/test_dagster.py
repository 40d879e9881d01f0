"""Dagster layer end to end: materialise against temp DuckDB files and a temp landing folder.

Everything runs in-process (dagster.materialize) with DAGSTER_HOME pointing at a temp copy of the
repo's dagster.yaml; nothing touches data/ or the network.
"""

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from engine.generate import sample_events
from engine.run import run_batch
from pipelines.defs import assets, checks
from pipelines.defs.resources import LedgerDatabase, PerkflowFiles

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "data" / "programs"
DAYS = ["2025-11-01", "2025-11-02", "2025-11-03"]
ALL_ASSETS = [assets.raw_event_batches, assets.ledger, assets.lot_maintenance, assets.balances, *checks.ledger_checks]
CHECK_NAMES = set(checks.CHECKS)


@pytest.fixture(autouse=True)
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # The resources get explicit paths; make sure nothing falls back to the repo's data/.
    for var in ("PERKFLOW_DB", "PERKFLOW_LANDING", "PERKFLOW_PROGRAMS"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def landing(tmp_path) -> Path:
    """Three days of Coffee Club events, two files per day, in <landing>/date=YYYY-MM-DD/."""
    root = tmp_path / "landing"
    for i, day in enumerate(DAYS):
        start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        for part in range(2):
            df = sample_events(150, participants=25, seed=100 + 10 * i + part, start=start, days=1)
            folder = root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            df.write_parquet(folder / f"part-{part}.parquet")
    return root


def resources(db_file: Path, landing: Path) -> dict:
    return {"ledger_db": LedgerDatabase(path=str(db_file)),
            "perkflow_files": PerkflowFiles(programs=str(PROGRAMS), landing=str(landing))}


def run_days(db_file: Path, landing: Path, day: str, last: str | None = None) -> dg.ExecuteInProcessResult:
    """One run: a single day, or (with `last`) the range day..last as one single-run backfill."""
    tags = {}
    if last:
        tags = {"dagster/asset_partition_range_start": day, "dagster/asset_partition_range_end": last}
    return dg.materialize(ALL_ASSETS, resources=resources(db_file, landing),
                          partition_key=None if last else day, tags=tags)


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def balances_rows(db_file: Path) -> list[tuple]:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        return con.execute("SELECT entity_type, entity_id, asset_id, available, held, deferred "
                           "FROM balances ORDER BY ALL").fetchall()
    finally:
        con.close()


def ledger_state(db_file: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        return {
            "entries": con.execute("SELECT id, event_id, rule_version, action_index, action_type, effective_at "
                                   "FROM journal_entries ORDER BY id").fetchall(),
            "postings": con.execute("SELECT id, journal_entry_id, entity_type, entity_id, asset_id, bucket, amount "
                                    "FROM postings ORDER BY id").fetchall(),
            "events": con.execute("SELECT id, status, error_code FROM events ORDER BY id").fetchall(),
            "account_balances": con.execute("SELECT * FROM account_balances ORDER BY ALL").fetchall(),
        }
    finally:
        con.close()


def test_materialise_days_matches_run_batch(tmp_path, landing):
    db_file = tmp_path / "dagster.duckdb"
    for day in DAYS:
        result = run_days(db_file, landing, day)
        assert result.success
        assert check_results(result) == {name: True for name in CHECK_NAMES}
        assert result.asset_materializations_for_node("balances"), "balances ran after the blocking checks"
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert mats["ledger"].materialization.metadata["read"].value == 300

    direct = tmp_path / "direct.duckdb"
    report = run_batch(PROGRAMS, landing, direct)  # all three days in one batch, no Dagster
    assert report.read == 900 and report.rejected == 0
    rows = balances_rows(db_file)
    assert rows, "the sample produced balances"
    assert rows == balances_rows(direct)

    # Re-running a day is a no-op (same files: already committed).
    again = run_days(db_file, landing, DAYS[1])
    assert again.success
    assert balances_rows(db_file) == rows


def test_range_backfill_in_one_run_equals_daily_runs(tmp_path, landing):
    daily_db = tmp_path / "daily.duckdb"
    for day in DAYS:
        assert run_days(daily_db, landing, day).success

    backfill_db = tmp_path / "backfill.duckdb"
    result = run_days(backfill_db, landing, DAYS[0], DAYS[-1])
    assert result.success
    assert check_results(result) == {name: True for name in CHECK_NAMES}
    ledger_mats = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("ledger")]
    assert sorted(m.partition for m in ledger_mats) == DAYS  # one run, three partitions materialised

    assert ledger_state(backfill_db) == ledger_state(daily_db)
    assert balances_rows(backfill_db) == balances_rows(daily_db)
    # the three days follow one another in time: one batch, each day recorded as booked in it
    con = duckdb.connect(str(backfill_db), read_only=True)
    try:
        assert con.execute("SELECT id, rows_read FROM batches").fetchall() == [(1, 900)]
        assert con.execute("SELECT batch_id, rows_read FROM batch_inputs").fetchall() == [(1, 300)] * 3
    finally:
        con.close()
    again = run_days(backfill_db, landing, DAYS[1])  # one day of the range again: a no-op
    assert again.success
    assert ledger_state(backfill_db) == ledger_state(daily_db)
    mats = {m.asset_key.to_user_string(): m for m in again.get_asset_materialization_events()}
    assert mats["ledger"].materialization.metadata["duplicates"].value == 300
    con = duckdb.connect(str(backfill_db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM batches").fetchall() == [(1,)]  # nothing booked again
    finally:
        con.close()


def test_empty_day_is_booked_as_nothing(tmp_path, landing):
    db_file = tmp_path / "empty.duckdb"
    result = run_days(db_file, landing, "2025-11-05")  # nothing landed that day
    assert result.success
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert mats["raw_event_batches"].materialization.metadata["files"].value == 0


def test_definitions_validate():
    env = {k: v for k, v in os.environ.items()} | {"DAGSTER_HOME": os.environ["DAGSTER_HOME"]}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m", "pipelines.definitions"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_check_sql_catches_corrupted_posting(tmp_path, landing):
    db_file = tmp_path / "good.duckdb"
    run_batch(PROGRAMS, landing / f"date={DAYS[0]}", db_file)
    bad = tmp_path / "bad.duckdb"
    shutil.copy(db_file, bad)
    con = duckdb.connect(str(bad))
    try:
        for name in CHECK_NAMES:  # clean before
            assert checks.violations(con, name)[0] == 0, name
        pid, entry, asset = con.execute(
            "SELECT id, journal_entry_id, asset_id FROM postings WHERE amount > 0 ORDER BY id LIMIT 1").fetchone()
        con.execute("UPDATE postings SET amount = amount + 1 WHERE id = ?", [pid])
        count, _, broken = checks.violations(con, "postings_sum_to_zero")
        assert [(r[0], r[1]) for r in broken] == [(entry, asset)] and count == 1
        assert broken[0][2] == 1
        assert checks.violations(con, "balances_match_postings")[0] == 1
        assert checks.violations(con, "no_duplicate_entries")[0] == 0
        # and a duplicated entry is caught by the third check
        con.execute("INSERT INTO journal_entries SELECT * FROM journal_entries WHERE id = ?", [entry])
        _, _, dup = checks.violations(con, "no_duplicate_entries")
        assert {r[0] for r in dup} == {"id", "event_rule_action"}
    finally:
        con.close()


def test_blocking_check_failure_stops_balances(tmp_path, landing):
    db_file = tmp_path / "corrupt.duckdb"
    assert run_days(db_file, landing, DAYS[0]).success
    con = duckdb.connect(str(db_file))
    con.execute("UPDATE postings SET amount = amount + 1 WHERE id = (SELECT min(id) FROM postings)")
    con.close()
    result = dg.materialize(ALL_ASSETS, resources=resources(db_file, landing), partition_key=DAYS[1],
                            raise_on_error=False)
    results = check_results(result)
    assert set(results) == CHECK_NAMES  # the checks of `perkflow verify`, all of them
    # the edited posting breaks its entry's hash, the entry's zero sum and the materialised balance
    assert {n for n, ok in results.items() if not ok} == {"entry_hashes", "postings_sum_to_zero",
                                                          "balances_match_postings"}
    assert not result.asset_materializations_for_node("balances")


def test_sensor_requests_new_days_once(tmp_path, landing):
    from pipelines.defs.sensors import landed_files_sensor

    files = PerkflowFiles(programs=str(PROGRAMS), landing=str(landing))
    today = datetime.now(timezone.utc).date().isoformat()
    (landing / f"date={today}").mkdir()
    sample_events(5, 2, 1).write_parquet(landing / f"date={today}" / "early.parquet")  # not a partition yet

    first = landed_files_sensor(dg.build_sensor_context(resources={"perkflow_files": files}))
    assert [(r.partition_key) for r in first.run_requests] == DAYS
    assert today not in first.cursor

    again = landed_files_sensor(dg.build_sensor_context(cursor=first.cursor, resources={"perkflow_files": files}))
    assert not again.run_requests

    sample_events(10, 5, 999, start=datetime(2025, 11, 2, tzinfo=timezone.utc), days=1).write_parquet(
        landing / f"date={DAYS[1]}" / "late.parquet")
    late = landed_files_sensor(dg.build_sensor_context(cursor=first.cursor, resources={"perkflow_files": files}))
    assert [r.partition_key for r in late.run_requests] == [DAYS[1]]
    assert late.run_requests[0].run_key != next(r.run_key for r in first.run_requests if r.partition_key == DAYS[1])


def test_schedule_targets_previous_day():
    from pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("daily_ledger_schedule")
    assert schedule.cron_schedule == "15 1 * * *"
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 11, 4, 1, 15, tzinfo=timezone.utc))
    [request] = list(schedule.evaluate_tick(ctx).run_requests)
    assert request.partition_key == "2025-11-03"


def test_lot_maintenance_asset_writes_due_expiries(tmp_path):
    """The daily maintenance asset expires lots due by the end of its day, at their own instants."""
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "lots.yaml").write_text(
        "program: {key: lotty, name: Lotty}\n"
        "assets:\n  - {symbol: MILES, name: Miles, scale: 0, inventory_mode: LOT}\n"
        "rules:\n  - name: Earn\n    condition: event.type == \"purchase\"\n    actions:\n"
        "      - {type: CREDIT, asset: MILES, amount: \"10\", expires_at: \"36h\"}\n")
    db_file, _events = _three_days(tmp_path, programs, "lotty")
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        credited = con.execute("SELECT COUNT(*) FROM lots").fetchall()[0][0]
        # every lot was credited on Nov 1 with a 36 h expiry: all due by the end of Nov 3
        expired = con.execute("SELECT COUNT(*), MIN(effective_at) >= TIMESTAMPTZ '2025-11-02 12:00:00+00' "
                              "FROM journal_entries WHERE action_type = 'EXPIRATION'").fetchall()[0]
        left = con.execute("SELECT COALESCE(SUM(amount), 0) FROM account_balances "
                           "WHERE entity_type = 'PARTICIPANT'").fetchall()[0][0]
    finally:
        con.close()
    assert credited > 0 and expired == (credited, True) and left == 0


def test_lot_maintenance_asset_fires_automations(tmp_path):
    """The daily maintenance asset calls engine.maintain, which fires automations: a daily cron at
    midnight UTC gives every participant enrolled on 1 November one point at 00:00 on 2, 3 and
    4 November (the as-of of the 3 November partition is the end of that day)."""
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "daily.yaml").write_text(
        "program: {key: daily, name: Daily}\n"
        "assets:\n  - {symbol: PTS, name: Points, scale: 0}\n"
        "rules:\n  - name: Tick\n    condition: event.type == \"tick\"\n    actions:\n"
        "      - {type: CREDIT, asset: PTS, amount: \"event.n\"}\n"
        "automations:\n  - name: Daily tick\n    event_name: tick\n    scope: participants\n"
        "    trigger: {type: cron, cron_expression: \"0 0 * * *\"}\n    payload: {n: 1}\n")
    db_file, events = _three_days(tmp_path, programs, "daily")
    people = events["external_id"].n_unique()
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        fired = con.execute("SELECT COUNT(*), COUNT(DISTINCT event_timestamp) FROM events "
                            "WHERE idempotency_key LIKE 'system:automation:daily_tick:%'").fetchall()[0]
        held = con.execute("SELECT DISTINCT available FROM balances WHERE entity_type = 'PARTICIPANT'").fetchall()
    finally:
        con.close()
    assert fired == (3 * people, 3) and held == [(3,)]


def _three_days(tmp_path: Path, programs: Path, program: str):
    """40 events of `program` landed on the first day, then every asset of the first three days
    materialised, day by day: (the ledger file, the events)."""
    landing = tmp_path / "landing"
    day = landing / f"date={DAYS[0]}"
    day.mkdir(parents=True)
    events = sample_events(40, 5, 3, program=program, start=datetime(2025, 11, 1, tzinfo=timezone.utc), days=1)
    events.write_parquet(day / "events.parquet")
    db_file = tmp_path / f"{program}.duckdb"
    res = {"ledger_db": LedgerDatabase(path=str(db_file)),
           "perkflow_files": PerkflowFiles(programs=str(programs), landing=str(landing))}
    for d in DAYS[:3]:
        assert dg.materialize(ALL_ASSETS, resources=res, partition_key=d).success
    return db_file, events
