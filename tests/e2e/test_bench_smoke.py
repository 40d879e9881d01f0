"""A small benchmark run: a guard by construction, not a timing assertion.

Fails when a W1 rule leaves the vectorised path (in the plan or in the run), when the fast path
and the per-row path disagree on the ledger, when W1's ledger differs from the one-event-at-a-time
oracle's (tests/oracle), or when W1's balances differ from the hand-written DuckDB SQL of
benchmarks/w1_hand.sql.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from engine import bench
from engine.catalog import load_catalog
from engine.cli import main
from engine.plan import needs_kernel, plan_program
from engine.run import run_batch
from engine.workloads import generate

EVENTS = 3_000


@pytest.fixture(scope="module")
def w1(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("w1")
    generate("W1", EVENTS, 300, 11, d)
    return d


def _ledger(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        return {
            "events": q("SELECT id, status, error_code FROM events ORDER BY arrival_seq"),
            "entries": q("SELECT id, seq, event_id, rule_id, action_index, action_type, effective_at, entry_hash "
                         "FROM journal_entries ORDER BY seq"),
            "postings": q("SELECT journal_entry_id, entity_type, entity_id, asset_id, bucket, amount FROM postings "
                          "ORDER BY journal_entry_id, entity_type, amount"),
            "balances": q("SELECT entity_type, entity_id, asset_id, bucket, amount FROM account_balances "
                          "ORDER BY ALL"),
        }
    finally:
        con.close()


def test_w1_plans_vectorised(w1: Path) -> None:
    (program,) = load_catalog(w1 / "programs").programs.values()
    plans = plan_program(program)
    assert len(plans) == 10
    assert [p for p in plans if p.path != "vectorised"] == []
    assert not needs_kernel(program)


def test_w1_fast_path_equals_row_path_and_hand_sql(w1: Path, tmp_path: Path) -> None:
    fast = run_batch(w1 / "programs", w1 / "events", tmp_path / "fast.duckdb")
    assert fast.read == fast.completed == EVENTS
    assert fast.row_evaluated == 0, "a W1 expression left the vectorised path"
    assert fast.vectorised > 0
    slow = run_batch(w1 / "programs", w1 / "events", tmp_path / "row.duckdb", row_path=True)
    assert slow.row_evaluated > 0
    assert (slow.completed, slow.failed, slow.entries) == (fast.completed, fast.failed, fast.entries)
    a, b = _ledger(tmp_path / "fast.duckdb"), _ledger(tmp_path / "row.duckdb")
    for table in a:
        assert a[table] == b[table], f"{table}: fast path and row path differ"

    again = run_batch(w1 / "programs", w1 / "events", tmp_path / "fast.duckdb")
    assert again.already_committed

    bench._task_run({"programs": str(w1 / "programs"), "events": str(w1 / "events"), "db": str(tmp_path / "fast.duckdb"),
                     "balances_out": str(tmp_path / "engine.parquet")})
    bench._task_hand({"events": str(w1 / "events" / "*.parquet"), "db": str(tmp_path / "hand.duckdb"),
                      "balances_out": str(tmp_path / "hand.parquet")})
    assert bench.compare_balances(tmp_path / "engine.parquet", tmp_path / "hand.parquet") is None


def test_compare_balances_notices_a_difference(tmp_path: Path) -> None:
    import polars as pl

    pl.DataFrame({"external_id": ["a", "b"], "balance": [1, 2]}).write_parquet(tmp_path / "x.parquet")
    pl.DataFrame({"external_id": ["a", "b"], "balance": [1, 3]}).write_parquet(tmp_path / "y.parquet")
    assert "1 of 2" in bench.compare_balances(tmp_path / "x.parquet", tmp_path / "y.parquet")


def test_bench_cli_small_run(tmp_path: Path, capsys) -> None:
    """The whole W1 benchmark path (children, hand SQL check, baselines, start-up), tiny."""
    rc = main(["bench", "--workloads", "W1", "--events", "2000", "--baseline-sample", "50", "--json",
               "--workdir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["checks"] == {"w1_balances_equal_hand_sql": True}
    figures = [r["figure"] for r in out["rows"]]
    assert figures == ["W1", "W1 re-run (no-op)", "W1 hand SQL (DuckDB)", "per-row cel-python, W1 rules",
                       "perkflow run start-up"]
    assert out["rows"][0]["run"]["row_evaluated"] == 0
    # the baseline really evaluates the rules (celpy answers BoolType, which once matched nothing)
    assert out["rows"][3]["run"]["matched"] > 0
    assert out["machine"]["cores"] >= 1 and out["machine"]["duckdb"]
    assert all(r["seconds"] > 0 for r in out["rows"])


def test_bench_json_file_and_table(tmp_path: Path, capsys) -> None:
    """`--json FILE` writes the results there and still prints the table people read."""
    rc = main(["bench", "--workloads", "W1", "--events", "500", "--baseline-sample", "20",
               "--json", str(tmp_path / "bench.json"), "--workdir", str(tmp_path / "wd")])
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert rc == 0 and saved["checks"] == {"w1_balances_equal_hand_sql": True}
    assert "perkflow bench" in printed and "W1 hand SQL (DuckDB)" in printed


def test_w1_equals_the_oracle(tmp_path: Path) -> None:
    """The benchmark's W1 through the engine gives the one-event-at-a-time oracle's ledger."""
    import polars as pl

    from tests.differential.ledger_view import read_ledger_file
    from tests.oracle import run_oracle

    d = tmp_path / "w1"
    generate("W1", 400, 40, 5, d)
    db = tmp_path / "w1.duckdb"
    report = run_batch(d / "programs", d / "events", db)
    assert report.row_evaluated == 0
    files = sorted((d / "events").rglob("*.parquet"))
    rows = pl.concat([pl.read_parquet(f) for f in files]).to_dicts()
    batch = [{"program_id": r["program_id"], "idempotency_key": r["idempotency_key"], "external_id": r["external_id"],
              "event_timestamp": r["event_timestamp"],
              "event_data": {k: v for k, v in r["event_data"].items() if v is not None}} for r in rows]
    want = run_oracle(sorted((d / "programs").glob("*.yaml")), [batch])
    got = read_ledger_file(db)
    assert len(got.entries) > len(rows) // 2 and len(got.events) == len(rows)
    for field in ("events", "entries", "balances", "evaluations"):
        assert getattr(got, field) == getattr(want, field), f"W1: engine and oracle differ in {field}"


def test_per_row_baseline_runs_w2(tmp_path: Path) -> None:
    """The W2 baseline evaluates state-reading rules (tags, counters, tiers) without errors; a
    TAG's tag is a name, not CEL (compiling it once made the W2 baseline crash)."""
    generate("W2", 600, 30, 3, tmp_path / "w2")
    out = bench._task_baseline({"events": str(tmp_path / "w2" / "events"),
                                "programs": str(tmp_path / "w2" / "programs"), "sample": 600})
    assert out["events"] == 600 and out["errors"] == 0 and out["matched"] > 0


def test_w2_cashback_wallet_is_funded_first_and_paid_on_the_running_path(tmp_path: Path) -> None:
    """W2's PREFUNDED cashback: the generator's operations file funds the wallet with 5 per dining
    purchase (counted here from the events), the bench runs it before the events, and the events
    then draw it to exactly 0 -- decided on the running-state path, not by the kernel."""
    import polars as pl

    d = tmp_path / "w2"
    generate("W2", 800, 60, 4, d)
    ev = pl.read_parquet(d / "events").unnest("event_data")
    dining = ev.filter((pl.col("type") == "purchase") & (pl.col("category") == "dining")).height
    ops = pl.read_parquet(d / "operations" / "fund.parquet")
    assert ops["operation"].to_list() == ["fund"] and json.loads(ops["params"][0]) == {
        "asset": "CASHBACK", "amount": str(5 * dining)}
    db = tmp_path / "w2.duckdb"
    out = bench._task_run({"programs": str(d / "programs"), "events": str(d / "events"), "db": str(db),
                           "operations": str(d / "operations" / "fund.parquet")})
    assert out["sequential_events"] == 0 and out["running_rounds"] > 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT sum(available) FROM balances WHERE asset_symbol = 'CASHBACK' "
                           "AND entity_type = 'PROGRAM_WALLET'").fetchall() == [(0,)]
        assert con.execute("SELECT count(*), sum(p.amount) FROM journal_entries j JOIN postings p ON p.journal_entry_id = j.id "
                           "JOIN assets a ON a.id = p.asset_id WHERE a.symbol = 'CASHBACK' AND j.action_type = 'CREDIT' "
                           "AND p.entity_type = 'PARTICIPANT'").fetchall() == [(dining, 5 * dining)]
        assert con.execute("SELECT count(*) FROM events WHERE error_code = 'insufficient_wallet'").fetchall() == [(0,)]
    finally:
        con.close()
