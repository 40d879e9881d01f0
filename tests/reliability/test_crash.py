"""Crash safety (semantics.md 4): a run killed at any moment leaves nothing behind, and running it
again gives exactly the ledger of a run that never crashed. Nothing lost, nothing doubled.

`perkflow run` is started in a subprocess and SIGKILLed after a delay drawn uniformly (seeded)
over the measured duration of a clean run, so kills land in every phase: start-up, loading
programs, reading Parquet, intake, evaluation, each writer statement, the commit and after it.
After every kill the database must hold either the state before the batch or the state after
it (never anything in between); after the re-run, its dump must equal the clean run's.

Profiles (see docs/reliability.md):
    PERKFLOW_CRASH_TRIALS   total kills (default 10: CI); 100+ for the long profile
    PERKFLOW_CRASH_EVENTS   events in the single big batch (default 20000)
    PERKFLOW_CRASH_SEED     seed of the kill delays (default 20251101)
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from engine.generate import sample_events
from tests.reliability.harness import (COFFEE, check_invariants, copy_db, diff, dump, kill_run, perkflow_argv, run_argv,
                                       run_ok)

TRIALS = int(os.environ.get("PERKFLOW_CRASH_TRIALS", "10"))
EVENTS = int(os.environ.get("PERKFLOW_CRASH_EVENTS", "20000"))
SEED = int(os.environ.get("PERKFLOW_CRASH_SEED", "20251101"))
SINGLE_TRIALS = max(1, (TRIALS * 2 + 2) // 3)
MULTI_TRIALS = max(1, TRIALS - SINGLE_TRIALS)
#: Where a JSON summary of the trials goes (for docs/reliability.md), if set.
SUMMARY = os.environ.get("PERKFLOW_RELIABILITY_SUMMARY")


def _record(name: str, data: dict) -> None:
    if not SUMMARY:
        return
    path = Path(SUMMARY)
    current = json.loads(path.read_text()) if path.exists() else {}
    current[name] = data
    path.write_text(json.dumps(current, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One big batch, and the dump of a clean run of it."""
    d = tmp_path_factory.mktemp("crash-single")
    events = d / "events.parquet"
    sample_events(EVENTS, max(100, EVENTS // 10), seed=11).write_parquet(events)
    clean = d / "clean.duckdb"
    report = run_ok(COFFEE, events, clean)
    assert report["read"] == EVENTS and not report["already_committed"]
    # Duration of a clean run, measured as the kill loop will see it (process start to exit).
    timing = kill_run(run_argv(COFFEE, events, d / "timing.duckdb"), delay=600, workdir=d)
    assert not timing.killed and timing.code == 0, timing.stderr
    check_invariants(clean)
    return {"dir": d, "events": events, "clean": dump(clean), "duration": timing.delay}


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """One time-ordered stream cut into 3 batches; snapshots before and after the 2nd."""
    d = tmp_path_factory.mktemp("crash-multi")
    n = max(3000, EVENTS // 2)
    stream = sample_events(n, max(100, n // 10), seed=12)
    cuts = [0, n // 3, 2 * n // 3, n]
    files = []
    for i in range(3):
        f = d / f"batch{i + 1}.parquet"
        stream.slice(cuts[i], cuts[i + 1] - cuts[i]).write_parquet(f)
        files.append(f)
    db = d / "clean.duckdb"
    run_ok(COFFEE, files[0], db)
    before2 = copy_db(db, d / "before2.duckdb")
    timing = kill_run(run_argv(COFFEE, files[1], db), delay=600, workdir=d)
    assert not timing.killed and timing.code == 0, timing.stderr
    after2 = dump(db)
    run_ok(COFFEE, files[2], db)
    check_invariants(db)
    return {"dir": d, "files": files, "before2": before2, "dumps": {"before": dump(before2), "after": after2},
            "clean": dump(db), "duration": timing.delay}


def _trial(argv, delay, db, workdir, allowed: dict[str, dict]) -> tuple[str, str]:
    """Kill one run; the database must then hold one of the `allowed` states. Returns (phase, state)."""
    k = kill_run(argv, delay, workdir=workdir)
    assert k.killed or k.code == 0, f"run ended with exit {k.code} before the kill:\n{k.stderr[-3000:]}"
    assert "Traceback" not in k.stderr and "internal error" not in k.stderr, k.stderr[-3000:]
    # Open a copy: the WAL a killed process left must be replayed by the real re-run, not by us.
    now = dump(db, snapshot=True)
    for name, state in allowed.items():
        if now == state:
            return k.phase, name
    if "nothing" in allowed and all(not rows for t, rows in now.items() if t != "schema_version"):
        # DuckDB may have persisted part of the schema's DDL before the kill: still no data at all
        return k.phase, "nothing (partial empty schema)"
    details = "\n".join(f"vs {name}:\n{diff(state, now)}" for name, state in allowed.items())
    raise AssertionError(f"after a kill at {k.delay:.3f}s ({k.phase}) the database is in between states:\n{details}")


def test_kill_single_batch_then_rerun(single, tmp_path):
    rng = random.Random(SEED)
    phases, states = Counter(), Counter()
    i = 0
    while sum(phases.values()) - phases["finished"] < SINGLE_TRIALS:
        i += 1
        assert i <= 5 * SINGLE_TRIALS, f"too few runs could be killed: {dict(phases)}"
        db = tmp_path / f"trial{i}.duckdb"
        delay = rng.uniform(0, single["duration"])
        phase, state = _trial(run_argv(COFFEE, single["events"], db), delay, db, tmp_path,
                              {"nothing": {}, "nothing (empty schema)": _empty_like(single["clean"]),
                               "nothing (empty schema, versioned)": _empty_like(single["clean"], versioned=True),
                               "committed": single["clean"]})
        phases[phase] += 1
        states[state] += 1
        report = run_ok(COFFEE, single["events"], db)
        assert report["already_committed"] == (state == "committed"), (report, state)
        after = dump(db)
        assert after == single["clean"], f"trial {i} (kill at {delay:.3f}s, {phase}):\n{diff(single['clean'], after)}"
        again = run_ok(COFFEE, single["events"], db)
        assert again["already_committed"] and dump(db) == single["clean"]
        check_invariants(db)
        for suffix in ("", ".wal"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    _record("crash_single", {"kills": SINGLE_TRIALS, "runs": i, "events": EVENTS, "clean_run_seconds": round(single["duration"], 2),
                             "phases": dict(phases), "state_after_kill": dict(states), "failures": 0})


def test_kill_second_of_three_batches_then_rerun(multi, tmp_path):
    rng = random.Random(SEED + 1)
    files = multi["files"]
    phases, states = Counter(), Counter()
    i = 0
    while sum(phases.values()) - phases["finished"] < MULTI_TRIALS:
        i += 1
        assert i <= 5 * MULTI_TRIALS, f"too few runs could be killed: {dict(phases)}"
        db = copy_db(multi["before2"], tmp_path / f"trial{i}.duckdb")
        delay = rng.uniform(0, multi["duration"])
        phase, state = _trial(run_argv(COFFEE, files[1], db), delay, db, tmp_path,
                              {"batch 1 only": multi["dumps"]["before"], "batch 2 committed": multi["dumps"]["after"]})
        phases[phase] += 1
        states[state] += 1
        second = run_ok(COFFEE, files[1], db)
        assert second["already_committed"] == (state == "batch 2 committed")
        run_ok(COFFEE, files[2], db)
        after = dump(db)
        assert after == multi["clean"], f"trial {i} (kill at {delay:.3f}s, {phase}):\n{diff(multi['clean'], after)}"
        check_invariants(db)
        for suffix in ("", ".wal"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    _record("crash_multi", {"kills": MULTI_TRIALS, "runs": i, "events": sum(len(pl.read_parquet(f)) for f in files),
                            "clean_batch2_seconds": round(multi["duration"], 2), "phases": dict(phases),
                            "state_after_kill": dict(states), "failures": 0})


def _empty_like(clean: dict, versioned: bool = False) -> dict:
    """The schema with no rows: a run killed after creating the schema but before committing a
    batch may leave the (committed) empty schema behind, which is not a batch's data — with or
    without the schema's own version row (recorded in the batch's transaction)."""
    return {t: (rows if t == "schema_version" and versioned else []) for t, rows in clean.items()}


# ---------------------------------------------------------------------------------------------
# perkflow maintain: lot expiries and maturities written by a maintenance batch

MAINTAIN_TRIALS = max(2, TRIALS // 5)
LOT_PROGRAM = """\
program: {key: lotty, name: Lotty}
assets:
  - {symbol: MILES, name: Miles, scale: 0, inventory_mode: LOT}
rules:
  - name: Earn
    condition: event.type == "purchase"
    actions:
      - {type: CREDIT, asset: MILES, amount: "10", expires_at: "240h"}
      - {type: CREDIT, asset: MILES, amount: "5", matures_at: "72h"}
"""


@pytest.fixture(scope="module")
def lots(tmp_path_factory):
    """A ledger with many lots, and the dump after a clean `maintain --as-of` far in the future."""
    d = tmp_path_factory.mktemp("crash-maintain")
    programs = d / "lotty.yaml"
    programs.write_text(LOT_PROGRAM)
    n = max(2000, EVENTS // 4)
    events = d / "events.parquet"
    sample_events(n, max(100, n // 10), seed=13, program="lotty").write_parquet(events)
    base = d / "base.duckdb"
    run_ok(programs, events, base)
    argv = lambda db: perkflow_argv("maintain", "--as-of", "2027-01-01T00:00:00Z", "--db", str(db))  # noqa: E731
    clean = copy_db(base, d / "clean.duckdb")
    timing = kill_run(argv(clean), delay=600, workdir=d)
    assert not timing.killed and timing.code == 0, timing.stderr
    check_invariants(clean)
    return {"dir": d, "base": base, "argv": argv, "before": dump(base), "clean": dump(clean),
            "duration": timing.delay}


def test_kill_maintain_then_rerun(lots, tmp_path):
    rng = random.Random(SEED + 2)
    phases, states = Counter(), Counter()
    i = 0
    while sum(phases.values()) - phases["finished"] < MAINTAIN_TRIALS:
        i += 1
        assert i <= 8 * MAINTAIN_TRIALS, f"too few runs could be killed: {dict(phases)}"
        db = copy_db(lots["base"], tmp_path / f"trial{i}.duckdb")
        delay = rng.uniform(0, lots["duration"])
        phase, state = _trial(lots["argv"](db), delay, db, tmp_path,
                              {"before maintenance": lots["before"], "maintained": lots["clean"]})
        phases[phase] += 1
        states[state] += 1
        again = kill_run(lots["argv"](db), delay=600, workdir=tmp_path)
        assert again.code == 0, again.stderr
        assert dump(db) == lots["clean"], f"trial {i} (kill at {delay:.3f}s, {phase}):\n{diff(lots['clean'], dump(db))}"
        check_invariants(db)
        for suffix in ("", ".wal"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    _record("crash_maintain", {"kills": MAINTAIN_TRIALS, "runs": i, "phases": dict(phases),
                               "state_after_kill": dict(states), "failures": 0})
