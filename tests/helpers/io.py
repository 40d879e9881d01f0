"""Writing inputs and reading the ledger back, for the core tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS_DIR = ROOT / "data" / "programs"


def ts(text: str) -> datetime:
    """An aware UTC datetime from 'YYYY-MM-DDTHH:MM:SS' (Z implied)."""
    return datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=timezone.utc)


def event(program: str, key: str, external_id: str | None, when: str | datetime, data: dict | str | None,
          **extra) -> dict:
    """One event row. `data` dicts become JSON object text; strings pass through unchanged."""
    row = {
        "program_id": program,
        "idempotency_key": key,
        "external_id": external_id,
        "event_timestamp": when if isinstance(when, str) else when.isoformat().replace("+00:00", "Z"),
        "event_data": json.dumps(data) if isinstance(data, dict) else data,
    }
    row.update(extra)
    return row


STRING_COLS = ("program_id", "idempotency_key", "external_id", "participant_id", "event_timestamp",
               "event_data", "recipient_external_id", "recipient_id")


def write_events(path: Path, rows: list[dict], *, schema: pa.Schema | None = None) -> Path:
    """Rows as a Parquet file; every contract column as a string column (timestamps as RFC 3339
    text, event_data as JSON text) unless `schema` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if schema is None:
        cols = [c for c in STRING_COLS if any(c in r for r in rows)] or list(STRING_COLS[:5])
        schema = pa.schema([(c, pa.string()) for c in cols])
    table = pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema)
    pq.write_table(table, path)
    return path


def write_program(path: Path, spec: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def program_spec(key: str, rules: list[dict], *, assets: list[dict] | None = None, **program) -> dict:
    return {
        "program": {"key": key, "name": key.replace("_", " ").title(), **program},
        "assets": assets if assets is not None else [
            {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}],
        "rules": rules,
    }


def cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`perkflow ...` in a subprocess (python -m engine.cli), text output."""
    e = dict(os.environ)
    e.pop("PERKFLOW_DB", None)
    e["COLUMNS"] = "200"
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def run_json(programs: Path, events: Path, db: Path, *extra: str) -> dict:
    res = cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json", *extra)
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def file_hash(path: Path) -> str | None:
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def counts(db: Path) -> dict[str, int]:
    tables = ("events", "journal_entries", "postings", "participants", "rejected_rows", "account_balances")
    return {t: query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}


def balances(db: Path) -> dict[tuple[str, str], Decimal]:
    """{(external_id, asset symbol): available} for participants."""
    rows = query(db, "SELECT external_id, asset_symbol, available FROM balances WHERE entity_type = 'PARTICIPANT'")
    return {(e, s): Decimal(a) for e, s, a in rows}
