"""Determinism across thread counts (semantics.md 1.4): the same programs and input give a
byte-identical ledger whether Polars and DuckDB run on one thread or on all cores.

Each workload runs through the real CLI twice into fresh DuckDB files, once with
POLARS_MAX_THREADS=1 and PERKFLOW_DUCKDB_THREADS=1 and once with the defaults (every core), in
several chunks so that chunk boundaries are crossed too; every base table is then compared row
for row (ids, amounts, hashes, the batch root).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.ledger.db import SCAN_BATCH_ROWS
from engine.workloads import generate
from tests.reliability.harness import ROOT, clean_env, cli, diff, dump

# W1: the set-based path; W2: LOT lots, a PREFUNDED wallet and budgets on the running path.
# Chunks of 2,000 rows cross many chunk boundaries; chunks past db.SCAN_BATCH_ROWS make the
# stages several Arrow batches, which DuckDB scans on several threads.
CASES = [("W1", 6_000, 400, 2_000), ("W2", 6_000, 400, 2_000),
         ("W1", 2 * SCAN_BATCH_ROWS + 5_000, 3_000, SCAN_BATCH_ROWS + 2_500),
         ("W2", SCAN_BATCH_ROWS + 5_000, 2_000, SCAN_BATCH_ROWS + 5_000)]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 or more cores to differ from one thread")
@pytest.mark.parametrize("name,events,participants,chunk_rows", CASES)
def test_one_thread_and_all_cores_write_the_same_ledger(tmp_path: Path, name: str, events: int,
                                                        participants: int, chunk_rows: int) -> None:
    manifest = generate(name, events, participants, 3, tmp_path / "data")
    data = tmp_path / "data"
    dumps = {}
    for label, threads in (("one thread", "1"), ("all cores", None)):
        env = {k: v for k, v in clean_env().items() if k not in ("POLARS_MAX_THREADS", "PERKFLOW_DUCKDB_THREADS")}
        if threads:
            env |= {"POLARS_MAX_THREADS": threads, "PERKFLOW_DUCKDB_THREADS": threads}
        db = tmp_path / f"{label.replace(' ', '_')}.duckdb"
        args = ["run", "--programs", str(data / "programs"), "--events", str(data / "events"), "--db", str(db),
                "--json", "--chunk-rows", str(chunk_rows)]
        if manifest["operations"]:
            args += ["--operations", str(data / manifest["operations"])]
        r = cli(*args, env=env)
        assert r.code == 0, f"{label}: exit {r.code}\n{r.stderr[-3000:]}"
        assert r.report["completed"] > events // 2, r.report  # the workload did write a ledger
        dumps[label] = dump(db)
    assert len(dumps["one thread"]["journal_entries"]) > events // 2
    assert dumps["one thread"] == dumps["all cores"], diff(dumps["one thread"], dumps["all cores"])


def test_a_bad_thread_count_is_a_configuration_error(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    r = cli("run", "--programs", str(ROOT / "data" / "programs"), "--events", str(ROOT / "data" / "sample" / "events"),
            "--db", str(db), env=clean_env(PERKFLOW_DUCKDB_THREADS="two"))
    assert r.code == 2, (r.code, r.stderr)
    assert "PERKFLOW_DUCKDB_THREADS='two'" in r.stderr and "whole number" in r.stderr
