"""A backfill on one open file (`engine.run.Backfill`, used by the Dagster `ledger` asset and the W3
benchmark) books exactly what one `run_batch` per day books: same tables, ids, amounts, batch ids
and root hashes. A day that fails stops the backfill with the days before it committed and the
database as a clean run of those days left it; running the range again books the rest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import workloads
from engine.errors import InputError
from engine.run import Backfill, run_batch
from tests.reliability.harness import check_invariants, diff, dump


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
