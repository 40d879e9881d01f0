"""What `perkflow run` loads before it starts work (design/performance.md: start-up <= 2 s).

A guard by construction, not a timing assertion: a run whose output is piped imports neither
Dagster (orchestration only), nor rich (nothing to draw), nor pyarrow's dataset and compute
layers (~75 ms CPU of each start), and still books its batch; the garbage collector is on again
once the engine's modules are loaded (the CLI freezes their objects, engine/cli.py `_imports`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from engine.workloads import generate

ROOT = Path(__file__).resolve().parents[2]

#: `perkflow ARGS` as the console script runs it, then what the process had loaded, on stderr.
PROBE = """
import gc, json, runpy, sys
sys.argv = ["perkflow", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("engine.cli", run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({"exit": code, "gc": gc.isenabled(), "modules": sorted(sys.modules)}), file=sys.stderr)
"""

#: Loaded by no piped `perkflow run`.
NOT_LOADED = ("dagster", "rich", "pyarrow.dataset", "pyarrow.compute")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    generate("W1", 20, 10, 1, d)  # what engine/bench.py `startup` runs
    return d


def _perkflow(*args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return proc, json.loads(proc.stderr.strip().splitlines()[-1])


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_cli_run_json_loads_no_orchestration_drawing_or_dataset_layer(tiny: Path, tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    proc, probe = _perkflow("run", "--programs", str(tiny / "programs"), "--events", str(tiny / "events"),
                            "--db", str(db), "--json")
    assert probe["exit"] == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["read"] == 20 and report["completed"] == 20
    assert _loaded(probe["modules"], NOT_LOADED) == []
    assert "polars" in probe["modules"] and "duckdb" in probe["modules"]  # the probe sees the run's imports
    assert probe["gc"] is True
    with duckdb.connect(str(db), read_only=True) as con:
        entries, roots = con.execute("SELECT (SELECT count(*) FROM journal_entries), "
                                     "(SELECT count(*) FROM batches WHERE length(root_hash) = 64)").fetchone()
    assert entries == report["entries"] > 0 and roots == 1


def test_cli_run_piped_table_is_still_printed(tiny: Path, tmp_path: Path) -> None:
    """Without --json the counts table is drawn (rich loaded on first use), no spinner on a pipe."""
    proc, probe = _perkflow("run", "--programs", str(tiny / "programs"), "--events", str(tiny / "events"),
                            "--db", str(tmp_path / "ledger.duckdb"))
    assert probe["exit"] == 0, proc.stderr
    assert "batch 1" in proc.stdout and "completed" in proc.stdout and "20" in proc.stdout
    assert "starting" not in proc.stdout and "\x1b[?25l" not in proc.stdout  # no status line, no cursor hiding
    assert "rich.console" in probe["modules"] and _loaded(probe["modules"], ("dagster",)) == []


def test_cli_error_is_still_styled_text(tmp_path: Path) -> None:
    """A bad input's message goes through the lazily made error console: exit 2, named file."""
    proc, probe = _perkflow("run", "--programs", str(tmp_path / "missing"), "--events", str(tmp_path),
                            "--db", str(tmp_path / "ledger.duckdb"), "--json")
    assert probe["exit"] == 2
    assert "error:" in proc.stderr and str(tmp_path / "missing") in proc.stderr.replace("\n", "")
    assert not (tmp_path / "ledger.duckdb").exists()
