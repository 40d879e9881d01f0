"""Re-runs and overlap (semantics.md 1.3, 1.5, 4): the same batch run 5 times, batches that
overlap partly, and one time-ordered stream cut into 1, 3 and 7 batches in different ways all
give the ledger of a single clean run (entry ids, amounts, balances, event statuses, state).

The stream mixes the stateless Coffee Club program (set-based path) with a stateful program
(counters with reset_after, tags, attributes, an INTERVAL budget: the sequential kernel), so
both paths are held to batch invariance.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import polars as pl
import pytest

from engine.cli import main
from engine.generate import sample_events
from tests.reliability.harness import COFFEE, check_invariants, diff, ledger_view, run_ok

STREAKS = """\
program:
  key: streaks
  name: Streaks
  on_unknown_participant: CREATE
assets:
  - {symbol: STAR, name: Stars, scale: 2}
rules:
  - name: Count purchases
    key: count
    order: 10
    condition: event.type == "purchase"
    actions:
      - {type: COUNTER, key: purchases, value: "1", reset_after: "168h"}
  - name: Regular bonus
    key: regular_bonus
    order: 20
    condition: event.type == "purchase" && get(participant.counters, "purchases", 0.0) >= 3.0
    budgets: [{asset: STAR, limit: "120", schedule_type: INTERVAL, interval: "720h"}]
    actions:
      - {type: CREDIT, asset: STAR, amount: "round(event.amount / 10.0, 2)"}
      - {type: TAG, tag: Regular}
  - name: Regular redeem
    key: regular_redeem
    order: 30
    condition: event.type == "redeem" && "regular" in participant.tags
    actions:
      - {type: DEBIT, asset: STAR, amount: "5"}
      - {type: SET_ATTRIBUTE, key: last_redeem, value: "now"}
"""


def run(capsys, programs: Path, events: Path, db: Path) -> dict:
    capsys.readouterr()
    code = main(["run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, f"exit {code}: {err[-3000:]}"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["read"] == report["completed"] + report["failed"] + report["duplicates"] + report["rejected"], report
    return report


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("reruns")
    programs = d / "programs"
    programs.mkdir()
    shutil.copy(COFFEE, programs / "coffee_club.yaml")
    (programs / "streaks.yaml").write_text(STREAKS)
    stream = pl.concat([sample_events(1500, 120, seed=21), sample_events(400, 40, seed=22, program="streaks")]) \
        .sort("event_timestamp", maintain_order=True)
    whole = d / "whole.parquet"
    stream.write_parquet(whole)
    clean = d / "clean.duckdb"
    report = run_ok(programs, whole, clean)  # the reference: one clean run, through the real CLI
    assert report["rejected"] == 0 and report["duplicates"] == 0
    check_invariants(clean)
    view = ledger_view(clean)
    assert view["entity_state"] and view["budget_consumption (latest period)"], "the stateful program must leave state behind"
    return {"dir": d, "programs": programs, "stream": stream, "whole": whole, "clean": view}


def write_cuts(stream: pl.DataFrame, cuts: list[int], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [0, *cuts, len(stream)]
    files = []
    for i in range(len(bounds) - 1):
        f = folder / f"part-{i:02d}.parquet"
        stream.slice(bounds[i], bounds[i + 1] - bounds[i]).write_parquet(f)
        files.append(f)
    return files


def assert_same_ledger(world, db: Path, what: str) -> None:
    check_invariants(db)
    got = ledger_view(db)
    assert got == world["clean"], f"{what}:\n{diff(world['clean'], got)}"


def test_same_batch_five_times(world, tmp_path, capsys):
    db = tmp_path / "five.duckdb"
    reports = [run(capsys, world["programs"], world["whole"], db) for _ in range(5)]
    assert not reports[0]["already_committed"]
    assert all(r["already_committed"] and r["completed"] == 0 and r["entries"] == 0 for r in reports[1:])
    assert_same_ledger(world, db, "after 5 runs of the same batch")


def test_same_rows_in_new_files_are_duplicates(world, tmp_path, capsys):
    """Same rows, different bytes (row groups, compression, file name): deduplicated row by row."""
    db = tmp_path / "rewritten.duckdb"
    run(capsys, world["programs"], world["whole"], db)
    for i, (compression, group) in enumerate([("zstd", 500), ("snappy", 1000), ("uncompressed", 10_000)]):
        f = tmp_path / f"again-{i}.parquet"
        world["stream"].write_parquet(f, compression=compression, row_group_size=group)
        r = run(capsys, world["programs"], f, db)
        assert not r["already_committed"] and r["duplicates"] == len(world["stream"]) and r["entries"] == 0, r
    assert_same_ledger(world, db, "after re-sending the same rows in new files")


@pytest.mark.parametrize("overlaps", [
    [(0.0, 0.6), (0.4, 1.0)],
    [(0.0, 0.5), (0.3, 0.8), (0.6, 1.0), (0.0, 1.0)],
    [(0.0, 0.25), (0.0, 0.5), (0.1, 0.75), (0.5, 1.0), (0.9, 1.0)],
], ids=["two", "three+whole", "five-nested"])
def test_partly_overlapping_batches(world, tmp_path, capsys, overlaps):
    stream, n = world["stream"], len(world["stream"])
    db = tmp_path / "overlap.duckdb"
    total_dups = 0
    for i, (a, b) in enumerate(overlaps):
        f = tmp_path / f"overlap-{i}.parquet"
        stream.slice(int(a * n), int(b * n) - int(a * n)).write_parquet(f)
        total_dups += run(capsys, world["programs"], f, db)["duplicates"]
    covered = sum(int(b * n) - int(a * n) for a, b in overlaps)
    assert total_dups == covered - n
    assert_same_ledger(world, db, f"overlapping batches {overlaps}")


CUTS = {
    "1-batch": lambda n, rng: [],
    "3-even": lambda n, rng: [n // 3, 2 * n // 3],
    "3-random": lambda n, rng: sorted(rng.sample(range(1, n), 2)),
    "3-lopsided": lambda n, rng: [1, n - 1],
    "7-even": lambda n, rng: [n * i // 7 for i in range(1, 7)],
    "7-random": lambda n, rng: sorted(rng.sample(range(1, n), 6)),
}


@pytest.mark.parametrize("name", sorted(CUTS))
def test_stream_cut_into_batches(world, tmp_path, capsys, name):
    """One run per file, files in stream order."""
    n = len(world["stream"])
    files = write_cuts(world["stream"], CUTS[name](n, random.Random(name)), tmp_path / "cuts")
    db = tmp_path / "cut.duckdb"
    for f in files:
        run(capsys, world["programs"], f, db)
    assert_same_ledger(world, db, f"{name}: {len(files)} batches")


@pytest.mark.parametrize("files_per_run", [[7], [2, 5], [3, 1, 3]], ids=str)
def test_stream_cut_into_files_grouped_into_runs(world, tmp_path, capsys, files_per_run):
    """7 (or 3) files of one stream; several files per run (a folder), the runs in stream order."""
    n_files = sum(files_per_run)
    rng = random.Random(n_files * 100 + len(files_per_run))
    files = write_cuts(world["stream"], sorted(rng.sample(range(1, len(world["stream"])), n_files - 1)),
                       tmp_path / "all")
    db = tmp_path / "grouped.duckdb"
    start = 0
    for k, count in enumerate(files_per_run):
        folder = tmp_path / f"run-{k}"
        folder.mkdir()
        for f in files[start:start + count]:
            shutil.copy(f, folder / f.name)
        start += count
        run(capsys, world["programs"], folder, db)
    assert_same_ledger(world, db, f"files grouped {files_per_run}")
