"""A backfill on one open file (`engine.run.Backfill`, used by the Dagster `ledger` asset and the W3
benchmark) books exactly what one `run_batch` per day books: same tables, ids, amounts, batch ids
and root hashes. A day that fails stops the backfill with the days before it committed and the
database as a clean run of those days left it; running the range again books the rest.

`Backfill.run_days` books consecutive days whose rows follow one another in time as one batch:
every table but the batch manifest is then what a batch per day gives, apart from batch ids and
arrival sequences (semantics.md 1.5); each day stays committed on its own (a no-op when run
again), a day whose rows go back in time is booked alone, and a failing range is booked day by
day so that the days before the failing one are committed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine import workloads
from engine.errors import InputError
from engine import run
from engine.run import Backfill, run_batch
from tests.reliability.harness import ROOT, check_invariants, clean_env, diff, dump, perkflow_argv


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("w3")
    workloads.generate("W3", 4000, 300, 7, out)
    folders = sorted(p for p in (out / "events").iterdir() if p.is_dir())
    assert len(folders) > 20
    return out / "programs", folders[:12]


def test_a_backfill_books_what_one_run_per_day_books(days, tmp_path):
    programs, folders = days
    one_by_one, backfilled = tmp_path / "runs.duckdb", tmp_path / "backfill.duckdb"
    for folder in folders:
        run_batch(programs, folder, one_by_one)
    with Backfill(backfilled) as backfill:
        reports = [backfill.run(programs, folder) for folder in folders]
        again = [backfill.run(programs, folder) for folder in folders[:3]]  # committed days are no-ops
    assert [r.batch_id for r in reports] == list(range(1, len(folders) + 1))
    assert all(r.already_committed for r in again)
    want, got = dump(one_by_one), dump(backfilled)
    assert got == want, diff(want, got)
    check_invariants(backfilled)


def test_a_failing_day_stops_the_backfill_with_the_days_before_it_committed(days, tmp_path):
    programs, folders = days
    broken = tmp_path / "broken"
    shutil.copytree(folders[3], broken)
    next(broken.glob("*.parquet")).write_bytes(b"not parquet")
    clean, db = tmp_path / "clean.duckdb", tmp_path / "backfill.duckdb"
    for folder in folders[:3]:
        run_batch(programs, folder, clean)
    with pytest.raises(InputError):
        with Backfill(db) as backfill:
            for folder in [*folders[:3], broken, *folders[4:6]]:
                backfill.run(programs, folder)
    want, got = dump(clean), dump(db)
    assert got == want, diff(want, got)
    with Backfill(db) as backfill:  # the range again, mended: the first three are no-ops
        reports = [backfill.run(programs, folder) for folder in folders[:6]]
    assert [r.already_committed for r in reports] == [True] * 3 + [False] * 3
    check_invariants(db)


@pytest.fixture(scope="module")
def season(tmp_path_factory, days) -> tuple[Path, list[Path], Path]:
    """Sixty days of the W3 workload (lots mature after 30 days within them), booked one batch per
    day: what the ranges are compared with."""
    programs, _ = days
    folders = sorted(p for p in (programs.parent / "events").iterdir() if p.is_dir())[:60]
    daily = tmp_path_factory.mktemp("daily") / "daily.duckdb"
    with Backfill(daily) as backfill:
        for folder in folders:
            backfill.run(programs, folder)
    return programs, folders, daily


@pytest.mark.parametrize("range_rows", [run.RANGE_ROWS, 150])
def test_days_booked_as_ranges_give_the_ledger_a_batch_per_day_gives(season, tmp_path, monkeypatch, range_rows):
    programs, folders, daily = season
    monkeypatch.setattr(run, "RANGE_ROWS", range_rows)
    db = tmp_path / "ranges.duckdb"
    with Backfill(db) as backfill:
        booked = backfill.run_days(programs, folders)
    assert [day for days, _ in booked for day in days] == folders
    rows = [sum(pq.ParquetFile(f).metadata.num_rows for f in day.glob("*.parquet")) for day in folders]
    batches = [r.batch_id for _, r in booked]
    assert batches == list(range(1, len(batches) + 1))
    assert len(batches) < len(folders) / 3
    for days, r in booked:  # each range as large as the bound lets it be
        assert sum(rows[folders.index(d)] for d in days) <= max(range_rows, rows[folders.index(days[0])])
        assert r.read == sum(rows[folders.index(d)] for d in days) == r.completed + r.failed + r.duplicates + r.rejected
    want, got = dump(daily, across_batches=True), dump(db, across_batches=True)
    assert got == want, diff(want, got)
    check_invariants(db)


def test_each_day_of_a_range_is_committed_on_its_own(season, tmp_path):
    programs, folders, _ = season
    db = tmp_path / "ranges.duckdb"
    with Backfill(db) as backfill:
        booked = backfill.run_days(programs, folders[:20])
    (days, first), = booked  # twenty small days: one range
    before = dump(db)
    with Backfill(db) as backfill:
        alone = [backfill.run(programs, day) for day in folders[:20]]
        again = backfill.run_days(programs, folders[:20])
        more = backfill.run_days(programs, folders[15:25])  # five booked, five new
    rows = [sum(pq.ParquetFile(f).metadata.num_rows for f in day.glob("*.parquet")) for day in folders]
    assert [(r.already_committed, r.batch_id, r.read, r.duplicates) for r in alone] == \
        [(True, first.batch_id, n, n) for n in rows[:20]]
    assert [(d, r.already_committed, r.batch_id) for d, r in again] == [([f], True, first.batch_id) for f in folders[:20]]
    assert [r.already_committed for _, r in more] == [True] * 5 + [False]
    assert more[-1][0] == folders[20:25] and more[-1][1].batch_id == 2 and more[-1][1].duplicates == 0
    after = dump(db)
    assert {t: rows for t, rows in after.items() if t not in ("batches", "batch_inputs")} != \
        {t: rows for t, rows in before.items() if t not in ("batches", "batch_inputs")}  # days 21-25 booked


def test_a_day_that_goes_back_in_time_is_booked_alone(season, tmp_path):
    """Its rows are late rows (semantics.md 3), processed after the rows before them, which one
    batch of both days would not do (it orders them by time)."""
    programs, folders, _ = season
    order = [*folders[:4], folders[6], folders[5], folders[4], *folders[7:10]]
    daily, db = tmp_path / "daily.duckdb", tmp_path / "ranges.duckdb"
    with Backfill(daily) as backfill:
        for folder in order:
            backfill.run(programs, folder)
    with Backfill(db) as backfill:
        booked = backfill.run_days(programs, order)
    assert [days for days, _ in booked] == [[*folders[:4], folders[6]], [folders[5]], [folders[4], *folders[7:10]]]
    want, got = dump(daily, across_batches=True), dump(db, across_batches=True)
    assert got == want, diff(want, got)


def test_a_failing_day_of_a_range_leaves_the_days_before_it_committed(season, tmp_path):
    programs, folders, _ = season
    broken = tmp_path / "broken"  # timestamps in order, but no idempotency_key column
    broken.mkdir()
    table = pq.read_table(next(folders[3].glob("*.parquet")))
    pq.write_table(table.drop(["idempotency_key"]), broken / "part.parquet")
    clean, db = tmp_path / "clean.duckdb", tmp_path / "ranges.duckdb"
    for folder in folders[:3]:
        run_batch(programs, folder, clean)
    with pytest.raises(InputError, match="broken/part.parquet"):
        with Backfill(db) as backfill:
            backfill.run_days(programs, [*folders[:3], broken, *folders[4:6]])
    want, got = dump(clean), dump(db)
    assert got == want, diff(want, got)
    with Backfill(db) as backfill:  # the range again, mended: the first three are no-ops
        booked = backfill.run_days(programs, folders[:6])
    assert [(days, r.already_committed) for days, r in booked] == \
        [([f], True) for f in folders[:3]] + [(folders[3:6], False)]
    check_invariants(db)


def test_perkflow_backfill_books_a_folder_of_days_as_the_dagster_asset_does(season, tmp_path):
    """`perkflow backfill` (a subprocess of the CLI) over a folder of 20 days: one range, the ledger
    of a batch per day; run again, every day a no-op; a missing folder is exit 2."""
    programs, folders, _ = season
    root = tmp_path / "events"
    for folder in folders[:20]:
        shutil.copytree(folder, root / folder.name)
    (root / "empty").mkdir()  # no event files: skipped
    days = sorted(p for p in root.iterdir() if p.name != "empty")
    daily, db = tmp_path / "daily.duckdb", tmp_path / "cli.duckdb"
    with Backfill(daily) as backfill:
        for day in days:
            backfill.run(programs, day)

    def backfill_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(perkflow_argv("backfill", "--programs", str(programs), "--db", str(db), *args),
                              capture_output=True, text=True, cwd=ROOT, env=clean_env())
    first = backfill_cli("--days", str(root), "--json")
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    read = sum(pq.ParquetFile(f).metadata.num_rows for day in days for f in day.glob("*.parquet"))
    assert [(r["days"], r["batch_id"], r["already_committed"], r["read"]) for r in rows] == \
        [([d.name for d in days], 1, False, read)]
    want, got = dump(daily, across_batches=True), dump(db, across_batches=True)
    assert got == want, diff(want, got)
    again = backfill_cli("--days", str(root), "--json")
    assert again.returncode == 0, again.stderr
    assert [(r["days"], r["batch_id"], r["already_committed"]) for r in map(json.loads, again.stdout.splitlines())] == \
        [([d.name], 1, True) for d in days]
    assert dump(db, across_batches=True) == want
    missing = backfill_cli("--days", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "nowhere: no such folder" in missing.stderr
