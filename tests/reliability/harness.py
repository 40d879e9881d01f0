"""Reusable reliability harness: run `perkflow` in subprocesses, kill them, and compare ledgers.

Two ways of comparing databases:

- `dump(db)`: every table of the ledger, every column except wall-clock ones, as sorted rows.
  Two runs of the same inputs from the same starting point (a clean run, and a run that was
  killed and then run again) must give identical dumps: same ids, statuses, amounts, seqs,
  batch ids, counts.
- `ledger_view(db)`: the batch-independent part of the ledger (event ids and statuses, entry
  ids, seqs and hashes, posting ids and amounts, balances, participants, state). Cutting a stream
  into N batches changes batch ids, arrival sequences, source files and batch roots, never this
  view (semantics.md 1.5).

`kill_run(...)` starts `perkflow run` in its own process group and SIGKILLs the group after a
delay, recording how far the run got (the writer's PERKFLOW_TRACE lines on stderr).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
COFFEE = ROOT / "data" / "programs" / "coffee_club.yaml"

#: Columns that hold the wall clock (informational only); never compared.
WALL_CLOCK = {("batches", "committed_at")}

#: The batch writer's last statement (engine/ledger/writer.py ORDER); every statement is traced.
LAST_STATEMENT = "insert_batch"


def perkflow_argv(*args: str) -> list[str]:
    """The `perkflow` command, as its console script runs it (`engine.cli:main`), from this
    checkout (cwd=ROOT puts its `engine` first on sys.path)."""
    return [sys.executable, "-m", "engine.cli", *args]


def run_argv(programs: Path, events: Path, db: Path, *extra: str) -> list[str]:
    return perkflow_argv("run", "--programs", str(programs), "--events", str(events), "--db", str(db),
                         "--json", *extra)


def clean_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PERKFLOW_DB", None)
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def report(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def cli(*args: str, timeout: float = 300, env: dict | None = None) -> Result:
    t = time.perf_counter()
    p = subprocess.run(perkflow_argv(*args), cwd=ROOT, env=env or clean_env(), capture_output=True, text=True,
                       timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr, time.perf_counter() - t)


def run(programs: Path, events: Path, db: Path, *extra: str, timeout: float = 300) -> Result:
    return cli("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json", *extra,
               timeout=timeout)


def run_ok(programs: Path, events: Path, db: Path, *extra: str) -> dict:
    r = run(programs, events, db, *extra)
    assert r.code == 0, f"exit {r.code}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}"
    return r.report


@dataclass
class Kill:
    delay: float          # seconds after start at which SIGKILL was sent
    killed: bool          # False when the run had already finished
    code: int | None      # exit status (negative signal number when killed)
    statements: int       # writer statements finished before the kill (PERKFLOW_TRACE lines)
    stderr: str

    @property
    def phase(self) -> str:
        if not self.killed:
            return "finished"
        if self.statements == 0:
            return "before writing (start-up, programs, reading, intake, evaluation)"
        if f"  {LAST_STATEMENT}:" not in self.stderr:
            return "writing the ledger"
        return "commit / after commit"


def kill_run(argv: list[str], delay: float, *, workdir: Path) -> Kill:
    """Start `argv`, SIGKILL its process group after `delay` seconds (unless it finished)."""
    err_path = workdir / f"stderr-{time.monotonic_ns()}.txt"
    with open(err_path, "w") as err:
        p = subprocess.Popen(argv, cwd=ROOT, env=clean_env(PERKFLOW_TRACE="1"), stdout=subprocess.DEVNULL,
                             stderr=err, start_new_session=True)
        t0 = time.monotonic()
        killed = False
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            killed = True
            p.wait()
        delay = min(delay, time.monotonic() - t0)
    text = err_path.read_text(errors="replace")
    err_path.unlink()
    statements = sum(1 for line in text.splitlines() if line.startswith("  ") and line.rstrip().endswith("s")
                     and ":" in line)
    return Kill(delay=delay, killed=killed, code=p.returncode, statements=statements, stderr=text)


def copy_db(src: Path, dst: Path) -> Path:
    """Copy a database file with its WAL (if any)."""
    for suffix in ("", ".wal"):
        s, d = Path(str(src) + suffix), Path(str(dst) + suffix)
        if d.exists():
            d.unlink()
        if s.exists():
            shutil.copyfile(s, d)
    return dst


def db_files_hash(db: Path) -> str:
    """SHA-256 over the database file and its WAL: 'unchanged' means byte-for-byte."""
    h = hashlib.sha256()
    for suffix in ("", ".wal"):
        f = Path(str(db) + suffix)
        h.update(suffix.encode() + b"\0")
        if f.exists():
            h.update(f.read_bytes())
        else:
            h.update(b"<absent>")
    return h.hexdigest()


def _open(db: Path, *, snapshot: bool) -> tuple[duckdb.DuckDBPyConnection, Path | None]:
    """Open for reading. With `snapshot`, open a private copy (so that replaying a WAL left by a
    killed process cannot touch the file under test)."""
    if not snapshot:
        con = duckdb.connect(str(db), read_only=True)
        con.execute("SET TimeZone = 'UTC'")
        return con, None
    tmp = Path(tempfile.mkdtemp(prefix="perkflow-snap-"))
    copy_db(db, tmp / "snap.duckdb")
    con = duckdb.connect(str(tmp / "snap.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    return con, tmp


def _tables(con) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
        "ORDER BY table_name").fetchall()]


def _columns(con, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
        "ORDER BY ordinal_position", [table]).fetchall()]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


#: What tells batches apart: the manifest tables, and in the others each row's batch and its
#: place in its batch's arrival order. `dump(across_batches=True)` leaves them out.
BATCH_TABLES = {"batches", "batch_inputs"}
BATCH_COLUMNS = {"batch_id", "created_batch_id", "first_batch_id", "arrival_seq"}


def dump(db: Path, *, snapshot: bool = False, across_batches: bool = False) -> dict[str, list[tuple]]:
    """Every base table as sorted rows of text (wall-clock columns left out). A database file
    that does not exist dumps as {}. `across_batches`: without BATCH_TABLES and BATCH_COLUMNS,
    what must not change when the same stream is cut into other batches (semantics.md 1.5)."""
    if not Path(db).exists():
        return {}
    con, tmp = _open(Path(db), snapshot=snapshot)
    try:
        out = {}
        for t in _tables(con):
            if across_batches and t in BATCH_TABLES:
                continue
            cols = [c for c in _columns(con, t) if (t, c) not in WALL_CLOCK
                    and not (across_batches and c in BATCH_COLUMNS)]
            sel = ", ".join(f"CAST({_q(c)} AS VARCHAR)" for c in cols)
            out[t] = [tuple(r) for r in con.execute(f"SELECT {sel} FROM {_q(t)} ORDER BY ALL").fetchall()]
        return out
    finally:
        con.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


#: The batch-independent ledger: (table, columns) compared across different cuts of a stream.
LEDGER_VIEW = {
    "events": "id, program_id, participant_id, external_id, idempotency_key, event_timestamp, event_data, status, "
              "error_code, error_message",
    "journal_entries": "id, seq, program_id, event_id, rule_id, rule_version, action_index, action_type, description, "
                       "effective_at, entry_hash",
    "postings": "id, journal_entry_id, program_id, entity_type, entity_id, asset_id, bucket, amount",
    "account_balances": "entity_type, entity_id, asset_id, bucket, amount",
    "participants": "id, external_id, status, created_at",
    "enrollments": "participant_id, program_id, enrolled_at",
    "rule_evaluations": "event_id, rule_id, rule_version, outcome, message",
    "entity_state": "entity_type, entity_id, kind, key, text_value, number_value, reset_after_us, last_reset_at",
}


def ledger_view(db: Path) -> dict[str, list[tuple]]:
    con, _ = _open(Path(db), snapshot=False)
    try:
        out = {}
        for t, cols in LEDGER_VIEW.items():
            sel = ", ".join(f"CAST({c.strip()} AS VARCHAR)" for c in cols.split(","))
            out[t] = [tuple(r) for r in con.execute(f"SELECT {sel} FROM {t} ORDER BY ALL").fetchall()]
        # Budget state that later batches read: the latest period per (rule, budget). (A single run
        # stores only that row; several batches keep the earlier periods' rows as well.)
        out["budget_consumption (latest period)"] = [tuple(r) for r in con.execute(
            "SELECT CAST(rule_id AS VARCHAR), CAST(budget_index AS VARCHAR), CAST(asset_id AS VARCHAR), "
            "CAST(period AS VARCHAR), CAST(consumed AS VARCHAR) FROM budget_consumption QUALIFY period = "
            "MAX(period) OVER (PARTITION BY rule_id, budget_index, asset_id) ORDER BY ALL").fetchall()]
        out["balances"] = [tuple(r) for r in con.execute(
            "SELECT external_id, asset_symbol, CAST(available AS VARCHAR), CAST(held AS VARCHAR), "
            "CAST(deferred AS VARCHAR) FROM balances ORDER BY ALL").fetchall()]
        return out
    finally:
        con.close()


def check_invariants(db: Path) -> None:
    """Double entry, materialised balances = sum of postings, no id written twice, counts reconcile."""
    con, _ = _open(Path(db), snapshot=False)
    try:
        def one(sql):
            return con.execute(sql).fetchall()
        assert one("SELECT journal_entry_id, asset_id, SUM(amount) FROM postings GROUP BY ALL HAVING SUM(amount) <> 0 "
                   "LIMIT 5") == [], "an entry's postings do not sum to zero"
        assert one("SELECT journal_entry_id FROM postings GROUP BY 1 HAVING COUNT(*) < 2 LIMIT 5") == [], \
            "an entry with fewer than two postings"
        assert one("""
            WITH p AS (SELECT entity_type, entity_id, asset_id, bucket, SUM(amount) AS amount FROM postings GROUP BY ALL)
            SELECT * FROM p FULL OUTER JOIN account_balances b USING (entity_type, entity_id, asset_id, bucket)
            WHERE p.amount IS DISTINCT FROM b.amount AND NOT (p.amount IS NULL AND b.amount = 0) LIMIT 5""") == [], \
            "account_balances differ from the sum of postings"
        for t in ("events", "journal_entries", "postings"):
            assert one(f"SELECT id, COUNT(*) FROM {t} GROUP BY id HAVING COUNT(*) > 1 LIMIT 5") == [], f"{t}: id twice"
        assert one("SELECT participant_id, program_id FROM enrollments GROUP BY ALL HAVING COUNT(*) > 1 LIMIT 5") == []
        assert one("SELECT external_id FROM participants GROUP BY 1 HAVING COUNT(*) > 1 LIMIT 5") == []
        assert one("SELECT id FROM batches WHERE rows_read <> completed + failed + duplicates + rejected") == [], \
            "batch counts do not reconcile"
        assert one("""SELECT b.id FROM batches b
                      WHERE b.completed + b.failed <> (SELECT COUNT(*) FROM events e WHERE e.batch_id = b.id)
                         OR b.rejected <> (SELECT COUNT(*) FROM rejected_rows r WHERE r.batch_id = b.id)""") == [], \
            "batch manifest counts differ from the rows written"
    finally:
        con.close()


def diff(a: dict[str, list[tuple]], b: dict[str, list[tuple]], limit: int = 3) -> str:
    """A short description of how two dumps differ ('' when equal)."""
    out = []
    for t in sorted(set(a) | set(b)):
        ra, rb = a.get(t), b.get(t)
        if ra == rb:
            continue
        if ra is None or rb is None:
            out.append(f"{t}: only in {'second' if ra is None else 'first'}")
            continue
        sa, sb = set(ra), set(rb)
        out.append(f"{t}: {len(ra)} vs {len(rb)} rows; only first {sorted(sa - sb)[:limit]}; "
                   f"only second {sorted(sb - sa)[:limit]}")
    return "\n".join(out)
