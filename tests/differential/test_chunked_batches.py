"""A large batch is processed in chunks (engine/run.py, `streamable` inputs); the ledger must be
byte for byte the one the whole batch at once gives (semantics.md 1.5, batch invariance): every
table, every column (ids, seqs, hashes, the batch root), except the wall-clock commit time.

Streams come from the differential strategies (targets, state, budgets, tiers, failing debits,
duplicates, idempotency conflicts, unknown programs), put in stream order (the condition for
chunking) and cut into 1-3 Parquet files; the chunk size is drawn, so chunk boundaries fall
between duplicates and their originals, inside runs of equal timestamps, and across files.

`PERKFLOW_CHUNK_EXAMPLES` sets the number of cases (default 30; tests/helpers/examples.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.io.events import in_stream_order, streamable
from engine.run import run_batch
from engine.workloads import generate
from tests.differential import strategies as S
from tests.differential.test_engine_vs_oracle import INVARIANCE_FLAGS, SCHEMA, SETTINGS
from tests.helpers.io import write_events, write_program
from tests.helpers.examples import examples

EXAMPLES = examples("PERKFLOW_CHUNK_EXAMPLES", 30)
WALL_CLOCK = {"committed_at"}


def _in_stream_order(rows: list[S.Row]) -> list[S.Row]:
    """The rows by timestamp, ties in their arrival order (a stable sort)."""
    return sorted(rows, key=lambda r: S.parse_ts(r.event_timestamp))


def _tables(db_file: Path) -> dict[str, list]:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        out = {}
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables "
                                    "WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall():
            cols = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = ? ORDER BY ordinal_position", [table]).fetchall()
                    if c not in WALL_CLOCK]
            quoted = ", ".join('"' + c + '"' for c in cols)
            out[table] = con.execute(f"SELECT {quoted} FROM {table} ORDER BY ALL").fetchall()
        return out
    finally:
        con.close()


def _cases(draw, in_stream_order: bool):
    """A drawn stream cut into 1-3 files, a chunk size that really cuts it, and a path."""
    scenario = draw(S.scenarios(INVARIANCE_FLAGS))
    rows = _in_stream_order(scenario.rows) if in_stream_order else scenario.rows
    assume(in_stream_order or rows != _in_stream_order(rows))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=2))))
    files = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)]) if b > a]
    return scenario, files, draw(st.integers(1, max(1, len(rows) - 1))), draw(st.booleans())


def _chunked_equals_whole(case, *, ordered: bool) -> None:
    scenario, files, chunk_rows, row_path = case
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for spec in scenario.programs:
            write_program(d / "programs" / f"{spec['program']['key']}.yaml", spec)
        for i, rows in enumerate(files):
            write_events(d / "events" / f"part-{i}.parquet", [r.for_parquet() for r in rows], schema=SCHEMA)
        inputs = [(d / "events", "event")]
        assert streamable(inputs, chunk_rows), "the case must really be chunked"
        assert not streamable(inputs, 10**9)
        assert in_stream_order(inputs) == ordered
        whole = run_batch(d / "programs", d / "events", d / "whole.duckdb", row_path=row_path, chunk_rows=10**9)
        steps: list[str] = []
        chunked = run_batch(d / "programs", d / "events", d / "chunked.duckdb", row_path=row_path,
                            chunk_rows=chunk_rows, progress=steps.append)
        assert ("putting the events in stream order" in steps) != ordered
        for k in ("read", "completed", "failed", "duplicates", "rejected", "entries"):
            assert getattr(chunked, k) == getattr(whole, k), k
        want, got = _tables(d / "whole.duckdb"), _tables(d / "chunked.duckdb")
        for table in want:
            assert got[table] == want[table], f"{table} differs with chunks of {chunk_rows} rows"


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(case=st.composite(_cases)(True))
def test_a_chunked_batch_writes_the_ledger_of_the_whole_batch(case):
    _chunked_equals_whole(case, ordered=True)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(case=st.composite(_cases)(False))
def test_a_batch_out_of_stream_order_is_chunked_in_stream_order(case):
    """Files whose arrival order is not the stream order are put in stream order through a spill
    folder (engine/io/reorder.py) and chunked: the same ledger as the whole batch, including
    repeated keys whose later-arriving row has the earlier timestamp (conflict_time)."""
    _chunked_equals_whole(case, ordered=False)


def test_the_first_key_to_arrive_wins_even_when_a_later_one_is_earlier(tmp_path):
    """Idempotency across reordered chunks (chunks of one row): the first row of a key that
    arrives and is valid wins (semantics.md 4), not the earliest timestamp; a rejected first
    arrival (no participant) does not win; and the winner is evaluated at its own instant."""
    prog = write_program(tmp_path / "programs" / "shop.yaml", {
        "program": {"key": "shop", "name": "Shop"},
        "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}],
        "rules": [{"name": "Count", "key": "count", "order": 1, "condition": "true",
                   "actions": [{"type": "COUNTER", "key": "n", "value": "1"}]},
                  {"name": "Second", "key": "second", "order": 2,
                   "condition": 'get(participant.counters, "n", 0.0) == 2.0',
                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "100"}]}]})

    def row(key, who, t, data='{"n": 1}'):
        return {"program_id": "shop", "idempotency_key": key, "external_id": who,
                "event_timestamp": f"2025-03-01T10:00:0{t}Z", "event_data": data}
    rows = [row("a", "u1", 5), row("b", "", 1), row("c", "u1", 3), row("a", "u1", 2, '{"n": 2}'),
            row("b", "u1", 4), row("b", "u1", 4), row("d", "u2", 0)]
    write_events(tmp_path / "events.parquet", rows, schema=SCHEMA)
    whole = run_batch(prog, tmp_path / "events.parquet", tmp_path / "whole.duckdb", chunk_rows=10**9)
    chunked = run_batch(prog, tmp_path / "events.parquet", tmp_path / "chunked.duckdb", chunk_rows=1)
    # a: the first arrival (10:00:05) wins, the second (10:00:02, other data) is a conflict; b: the
    # first arrival has no participant (rejected), the second (10:00:04) wins, the third is a duplicate
    assert (whole.completed, whole.duplicates, whole.rejected) == (4, 1, 2)
    assert _tables(tmp_path / "chunked.duckdb") == _tables(tmp_path / "whole.duckdb")
    con = duckdb.connect(str(tmp_path / "chunked.duckdb"), read_only=True)
    try:  # u1's events in stream order: c (03), b (04), a (05): the second of them is b
        assert con.execute("SELECT e.idempotency_key FROM journal_entries j JOIN events e ON e.id = j.event_id"
                           ).fetchall() == [("b",)]
    finally:
        con.close()


def test_arrival_order_and_stream_order(tmp_path, monkeypatch):
    """Files are read as they are only when their arrival order is the stream order; otherwise
    they are still chunked, through the spill folder, which is gone after the run, as are the
    spill folders of killed runs on this host (not a live run's, nor another host's)."""
    rows = [S.Row(S.PROGRAM, f"k{i}", "u1", t, "{}") for i, t in
            enumerate(["2025-03-01T00:00:02Z", "2025-03-01T00:00:01Z", "2025-03-01T00:00:03Z"])]
    write_events(tmp_path / "a.parquet", [r.for_parquet() for r in rows], schema=SCHEMA)
    a = [(tmp_path / "a.parquet", "event")]
    assert streamable(a, 1) and not in_stream_order(a)
    write_events(tmp_path / "a.parquet", [r.for_parquet() for r in _in_stream_order(rows)], schema=SCHEMA)
    assert streamable(a, 1) and in_stream_order(a)
    # two files each in order, the second starting before the first ends: not the stream order
    write_events(tmp_path / "b.parquet", [r.for_parquet() for r in rows[1:2]], schema=SCHEMA)
    assert not in_stream_order([*a, (tmp_path / "b.parquet", "event")])
    write_events(tmp_path / "c.parquet", [r.for_parquet() for r in rows], schema=SCHEMA)
    write_program(tmp_path / "programs" / "p.yaml", {
        "program": {"key": S.PROGRAM, "name": "P"}, "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}],
        "rules": [{"name": "Any", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]})
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))  # TMPDIR, as the process sees it
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs: a killed run's
    host = socket.gethostname()
    kept = [f"perkflow-reorder-{host}-{os.getpid()}-live", f"perkflow-reorder-otherhost-{gone.pid}-x"]
    for name in [f"perkflow-reorder-{host}-{gone.pid}-killed", *kept]:
        (spill / name).mkdir()
        (spill / name / "00000000-00000000.parquet").write_bytes(b"part")
    seen: list[int] = []  # spilled part files at each step of the run
    report = run_batch(tmp_path / "programs", tmp_path / "c.parquet", tmp_path / "l.duckdb", chunk_rows=1,
                       progress=lambda _msg: seen.append(len(list(spill.rglob("*.parquet")))))
    assert report.completed == 3 and max(seen) > len(kept) and sorted(p.name for p in spill.iterdir()) == sorted(kept)


@pytest.mark.parametrize("name,chunk_rows,row_path,fund_in_batch", [
    ("W1", 777, False, False), ("W2", 500, False, False), ("W2", 1300, True, False), ("W2", 700, False, True)])
def test_a_chunked_reference_workload_writes_the_ledger_of_the_whole_batch(tmp_path, name, chunk_rows, row_path,
                                                                           fund_in_batch):
    """The reference workloads (engine/workloads.py), rich where the generated streams are thin:
    thousands of entries, counters, tags, tiers and their history, a daily budget, failing
    refunds; W2 on the running-state path and (row_path) through the kernel. W2's cashback
    wallet is funded first with half of what the year's dining purchases would draw: it runs
    dry mid-batch, so a chunk opens with what the ones before it left. `fund_in_batch`: the
    funding operation file comes with the events, after them in arrival order but first in
    time, so the batch is put in stream order through the spill folder (engine/io/reorder.py)."""
    manifest = generate(name, 3000, 150, seed=7, out=tmp_path / "in")
    args = (tmp_path / "in" / "programs", tmp_path / "in" / "events")
    assert streamable([(args[1], "event")], chunk_rows)
    if name == "W2":
        half = str(int(manifest["wallets"]["CASHBACK"]) // 2)
        fund = write_events(tmp_path / "fund.parquet", [{
            "operation": "fund", "program_id": manifest["program"], "idempotency_key": "fund", "external_id": None,
            "timestamp": "2024-12-31T00:00:00Z", "params": json.dumps({"asset": "CASHBACK", "amount": half})}],
            schema=pa.schema([(c, pa.string()) for c in
                              ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")]))
        for db in () if fund_in_batch else ("whole", "chunked"):
            run_batch(args[0], None, tmp_path / f"{db}.duckdb", operations=fund)
    ops = {"operations": fund} if fund_in_batch else {}
    whole = run_batch(*args, tmp_path / "whole.duckdb", row_path=row_path, chunk_rows=10**9, **ops)
    steps: list[str] = []
    chunked = run_batch(*args, tmp_path / "chunked.duckdb", row_path=row_path, chunk_rows=chunk_rows,
                        progress=steps.append, **ops)
    assert ("putting the events in stream order" in steps) == fund_in_batch
    assert len({s for s in steps if s.startswith("evaluating rules (")}) > 1  # chunked
    assert whole.entries > 1000 and chunked.entries == whole.entries
    want, got = _tables(tmp_path / "whole.duckdb"), _tables(tmp_path / "chunked.duckdb")
    if name == "W2":
        assert want["tier_history"] and want["budget_consumption"] and whole.failed > 0
        con = duckdb.connect(str(tmp_path / "whole.duckdb"), read_only=True)
        try:  # the wallet paid cashback of 5 until it held less than 5, then ran dry
            assert con.execute("SELECT count(*) FROM events WHERE error_code = 'insufficient_wallet'").fetchall()[0][0] > 0
            assert con.execute("SELECT available FROM balances WHERE entity_type = 'PROGRAM_WALLET'").fetchall() == [
                (int(half) % 5,)]
        finally:
            con.close()
    for table in want:
        assert got[table] == want[table], f"{table} differs with chunks of {chunk_rows} rows"


@pytest.mark.parametrize("stateful", [False, True])
def test_the_default_chunk_is_smaller_when_a_program_reads_or_writes_state(tmp_path, monkeypatch, stateful):
    """The running path's per-event state frames are wider than the set-based path's, so a batch
    whose programs read or write state is cut finer by default (engine/run.py)."""
    import engine.run as run

    monkeypatch.setattr(run, "CHUNK_ROWS", 4)
    monkeypatch.setattr(run, "STATEFUL_CHUNK_ROWS", 2)
    monkeypatch.delenv("PERKFLOW_CHUNK_ROWS", raising=False)
    action = ({"type": "COUNTER", "key": "n", "value": "1"} if stateful
              else {"type": "CREDIT", "asset": "PTS", "amount": "1"})
    programs = write_program(tmp_path / "programs" / "shop.yaml", {
        "program": {"key": "shop", "name": "Shop"},
        "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                    "scale": 0}],
        "rules": [{"name": "Any", "key": "any", "order": 1, "condition": "true", "actions": [action]}]})
    events = write_events(tmp_path / "events.parquet", [
        {"program_id": "shop", "idempotency_key": f"k{i}", "external_id": "u1",
         "event_timestamp": f"2025-03-01T10:0{i}:00Z", "event_data": '{"type": "buy"}'} for i in range(6)])
    steps: list[str] = []
    report = run_batch(programs, events, tmp_path / "ledger.duckdb", progress=steps.append)
    chunks = sorted({s[s.index("(rows"):] for s in steps if "(rows" in s})
    assert chunks == (["(rows 1 to 2)", "(rows 3 to 4)", "(rows 5 to 6)"] if stateful
                      else ["(rows 1 to 4)", "(rows 5 to 6)"])
    assert report.completed == 6
