"""Shared fixtures for the core suite (helpers live in tests/helpers/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file that does not exist yet, private to the test."""
    return tmp_path / "ledger.duckdb"


@pytest.fixture
def quickstart_programs() -> Path:
    return ROOT / "data" / "programs" / "customer_loyalty.yaml"


@pytest.fixture(autouse=True)
def running_path_at_any_size(monkeypatch):
    """Tests draw small batches: let the running-state path take them (outside tests, batches
    under engine.running.MIN_EVENTS take the kernel, which is faster there; both paths give the
    same ledger, and tests/differential/test_setwise_lots.py checks the default threshold)."""
    import engine.running

    monkeypatch.setattr(engine.running, "MIN_EVENTS", 0)
