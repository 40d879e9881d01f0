"""A chunk that mixes operations with events is cut, in stream order, so that its long runs of
events leave the kernel (engine/cuts.py). The ledger must be byte for byte the one the uncut
chunk gives (semantics.md 1.5, batch invariance): every table, every column (ids, seqs, hashes,
the batch root), except the wall-clock commit time.

The property test cuts at every change between operations and events (cuts.MIN_EVENTS = 1, and
every program counted as worth cutting, so that the kernel-only programs of the ledger scenarios
are cut too) over the streams of tests/differential/ledger_strategies.py: operations of every
kind among events, duplicates and conflicts of keys, several programs, one or two batches.
The CLI test runs a generated W2 batch with its funding operations at the default threshold.

`PERKFLOW_CUT_EXAMPLES` sets the number of cases (default 40; tests/helpers/examples.py).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import assume, given, settings

from engine import cuts
from engine.run import run_batch
from tests.differential import ledger_strategies as L
from tests.differential.test_chunked_batches import _tables
from tests.differential.test_engine_vs_oracle import SETTINGS
from tests.differential.test_ledger_vs_oracle import _write
from tests.helpers.examples import examples
from tests.helpers.io import cli

EXAMPLES = examples("PERKFLOW_CUT_EXAMPLES", 40)


def _ledger(prog_dir: Path, runs, db_file: Path) -> None:
    for ev_file, op_file in runs:
        run_batch(prog_dir, ev_file, db_file, operations=op_file)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(sc=L.ledger_scenarios())
def test_a_chunk_cut_between_operations_and_events_writes_the_uncut_ledger(sc):
    assume(any(evs and ops for evs, ops in zip(sc.batches, sc.operations)))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prog_dir, _files, runs = _write(d, sc)
        sizes: list[int] = []
        original, worth, threshold = cuts.parts, cuts._worth_cutting, cuts.MIN_EVENTS
        cuts._worth_cutting = lambda *_: True

        def counted(rows, catalog):
            out = original(rows, catalog)
            sizes.append(len(out))
            return out
        try:
            cuts.MIN_EVENTS = 10**9
            _ledger(prog_dir, runs, d / "uncut.duckdb")
            cuts.MIN_EVENTS = 1
            cuts.parts = counted
            _ledger(prog_dir, runs, d / "cut.duckdb")
        finally:
            cuts.parts, cuts._worth_cutting, cuts.MIN_EVENTS = original, worth, threshold
        want, got = _tables(d / "uncut.duckdb"), _tables(d / "cut.duckdb")
        for table in want:
            assert got[table] == want[table], f"{table} differs when the chunks are cut ({sizes} parts)"
    # (operations all rejected, e.g. of an unknown program, leave nothing to cut)
    assume(max(sizes) > 1)


def _run(programs: Path, events: Path, operations: Path, db_file: Path, **env) -> dict:
    res = cli("run", "--programs", str(programs), "--events", str(events), "--operations", str(operations),
              "--db", str(db_file), "--json", env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_w2_batch_with_its_funding_operations_leaves_the_kernel(tmp_path):
    """W2's events and the operation that funds its wallet, in one `perkflow run`: only the
    operation goes through the kernel (it took every event there), and the ledger is the one the
    kernel writes for the whole batch."""
    out = tmp_path / "w2"
    assert cli("generate", "--workload", "W2", "--events", "3000", "--seed", "7", "--out", str(out)).returncode == 0
    args = (out / "programs", out / "events", out / "operations")
    cut = _run(*args, tmp_path / "cut.duckdb")
    whole = _run(*args, tmp_path / "whole.duckdb", PERKFLOW_CUT_MIN_EVENTS=str(10**9))
    operations = cut["read"] - 3000
    assert operations > 0
    assert whole["sequential_events"] == cut["read"]  # uncut: every row through the kernel
    assert cut["sequential_events"] == operations and cut["running_rounds"] > 0
    for k in ("read", "completed", "failed", "duplicates", "rejected", "entries"):
        assert cut[k] == whole[k], k
    assert _tables(tmp_path / "cut.duckdb") == _tables(tmp_path / "whole.duckdb")
