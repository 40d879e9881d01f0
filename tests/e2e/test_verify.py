"""`perkflow verify`: passes on a clean ledger and names the problem in a tampered one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.helpers.io import ROOT, cli, event, run_json, write_events

PROGRAMS = ROOT / "data" / "programs"


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("verify")
    db = base / "ledger.duckdb"
    run_json(PROGRAMS, ROOT / "data" / "sample" / "events", db)
    # a second batch, so the chain has two links
    rows = [event("customer_loyalty", f"v-{i}", f"user_{i}", f"2025-12-0{1 + i}T10:00:00Z", {"type": "purchase"})
            for i in range(3)]
    run_json(PROGRAMS, write_events(base / "second.parquet", rows), db)
    return db


def _verify(db: Path) -> tuple[int, dict]:
    res = cli("verify", "--db", str(db), "--json")
    return res.returncode, json.loads(res.stdout)


def _tampered(clean_db: Path, tmp_path: Path, sql: str) -> Path:
    db = tmp_path / "tampered.duckdb"
    shutil.copy(clean_db, db)
    con = duckdb.connect(str(db))
    con.execute(sql)
    con.close()
    return db


def test_clean_ledger_verifies(clean_db):
    code, report = _verify(clean_db)
    assert code == 0 and report["ok"] and report["violations"] == []
    assert {"entry_hashes", "batch_chain", "postings_sum_to_zero", "balances_match_postings",
            "summary_identity"} <= set(report["checked"])


def test_edited_posting_amount_is_caught(clean_db, tmp_path):
    target = duckdb.connect(str(clean_db), read_only=True).execute(
        "SELECT id::VARCHAR, journal_entry_id::VARCHAR FROM postings ORDER BY id LIMIT 1").fetchall()[0]
    db = _tampered(clean_db, tmp_path, f"UPDATE postings SET amount = amount + 1 WHERE id = '{target[0]}'")
    code, report = _verify(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "entry_hashes"
    assert first["rows"][0]["journal_entry_id"] == target[1]
    assert "postings_sum_to_zero" in [v["check"] for v in report["violations"]]


def test_deleted_journal_entry_is_caught(clean_db, tmp_path):
    batch = duckdb.connect(str(clean_db), read_only=True).execute(
        "SELECT batch_id FROM journal_entries ORDER BY seq DESC LIMIT 1").fetchall()[0][0]
    db = _tampered(clean_db, tmp_path,
                   "DELETE FROM journal_entries WHERE id = (SELECT id FROM journal_entries ORDER BY seq DESC LIMIT 1)")
    code, report = _verify(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "batch_chain" and first["rows"][0]["batch_id"] == batch
    # its postings are left without an entry
    assert "postings_sum_to_zero" in [v["check"] for v in report["violations"]]


def test_edited_balance_row_is_caught(clean_db, tmp_path):
    db = _tampered(clean_db, tmp_path,
                   "UPDATE account_balances SET amount = amount + 5 WHERE entity_type = 'PARTICIPANT' "
                   "AND entity_id = (SELECT MIN(entity_id) FROM account_balances WHERE entity_type = 'PARTICIPANT')")
    code, report = _verify(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "balances_match_postings"
    row = first["rows"][0]
    assert float(row["materialised"]) - float(row["posted"]) == 5
