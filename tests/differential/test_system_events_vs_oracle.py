"""SCHEDULE_EVENT and BROADCAST, engine against oracle (docs/decisions.md, "SYSTEM events"): random
programs whose rules schedule and broadcast SYSTEM events (with delays that land on, between
and beyond the stream's instants, payload expressions, chains, failing emitters, state read by
the SYSTEM events' rules, program events scheduled with `target: PROGRAM` whose actions for
their participant fail `no_participant`), random event streams, run whole and cut into several time-ordered
batches, then `perkflow maintain --as-of` after the last row. Statuses, ledger order, balances,
participant state, evaluations and what is still waiting must all agree; and the ledger's
entries must be the same however the stream was cut (semantics.md 1.5).

The oracle (tests/oracle/system_events.py) is given the engine's id scheme for SYSTEM event
keys (as it is given lot ids): the scheme is the project's, not the contract's.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import emit, ids
from engine.catalog import load_catalog
from engine.maintain import maintain
from engine.run import run_batch
from tests.differential.ledger_view import entry_identity, read_ledger
from tests.helpers.io import write_events, write_program
from tests.oracle.interpreter import Oracle
from tests.helpers.examples import examples

EXAMPLES = examples("PERKFLOW_DIFF_EXAMPLES", 40)
SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
TYPES = ["a", "b", "c", "d"]
PEOPLE = ["u1", "u2", "u3", "u4"]
COLUMNS = ["program_id", "idempotency_key", "external_id", "event_timestamp", "event_data"]
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])

DELAYS = ["0s", "30m", "1h", "90m", "3h", 'duration("1h")', 'duration(string(int(event.n) * 30) + "m")']
PAYLOADS = [{}, {"n": 1}, {"n": "event.n + 1"}, {"n": "get(participant.counters, 'seen', 0.0) + 1"},
            {"n": 2, "who": "participant.external_id", "tag": "plain text"}]


@st.composite
def action(draw, kinds: list[str]) -> dict:
    kind = draw(st.sampled_from(kinds))
    name = draw(st.sampled_from(TYPES))
    if kind == "SCHEDULE_EVENT":
        a = {"type": "SCHEDULE_EVENT", "event_name": name, "delay": draw(st.sampled_from(DELAYS)),
             "payload": draw(st.sampled_from(PAYLOADS))}
        target = draw(st.integers(0, 4))
        if target == 0:
            a["target"] = {"type": "PARTICIPANT", "external_id": draw(st.sampled_from(PEOPLE + ["u9"]))}
        elif target in (1, 2):  # a program event (no participant), whose own SCHEDULE_EVENTs are the program's too
            a["target"] = {"type": "PROGRAM"}
        return a
    if kind == "BROADCAST":
        return {"type": "BROADCAST", "event_name": name, "payload": draw(st.sampled_from(PAYLOADS))}
    if kind == "CREDIT":
        return {"type": "CREDIT", "asset": "PTS", "amount": draw(st.sampled_from(["1", "event.n", "get(event, 'n', 5.0)"]))}
    if kind == "DEBIT":
        return {"type": "DEBIT", "asset": "PTS", "amount": draw(st.sampled_from(["1", "3"]))}
    if kind == "COUNTER":
        return {"type": "COUNTER", "key": "seen", "value": "1"}
    return {"type": "TAG", "tag": draw(st.sampled_from(["x", "event.type"]))}


@st.composite
def programs(draw) -> list[dict]:
    out = []
    for key in ("p", "q")[:draw(st.integers(1, 2))]:
        rules = []
        for i in range(draw(st.integers(1, 5))):
            t = draw(st.sampled_from(TYPES))
            condition = draw(st.sampled_from([f'event.type == "{t}"', f'event.type == "{t}" && has(event.n)',
                                              f'event.type == "{t}" && get(participant.counters, "seen", 0.0) < 3.0']))
            kinds = ["SCHEDULE_EVENT", "SCHEDULE_EVENT", "BROADCAST", "CREDIT", "CREDIT", "DEBIT", "COUNTER", "TAG"]
            acts = draw(st.lists(action(kinds), min_size=1, max_size=2))
            rules.append({"name": f"r{i}", "key": f"r{i}", "order": 10 * (i + 1), "condition": condition,
                          "actions": acts, "stop_after_match": draw(st.booleans())})
        if draw(st.booleans()):  # a rule for program events: broadcasts, or schedules the next program event
            t = draw(st.sampled_from(TYPES))
            acts = draw(st.lists(action(["BROADCAST", "SCHEDULE_EVENT"]), min_size=1, max_size=2))
            acts = [a | {"target": {"type": "PROGRAM"}} if a["type"] == "SCHEDULE_EVENT" else a for a in acts]
            rules.append({"name": "program", "key": "program", "order": 5, "stop_after_match": True,
                          "condition": f'!has(participant.id) && event.type == "{t}"', "actions": acts})
        out.append({"program": {"key": key, "name": key.upper()},
                    "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE",
                                "issuance_policy": "UNLIMITED", "scale": 0}],
                    "rules": rules})
    return out


@st.composite
def streams(draw, program_keys: list[str]) -> list[dict]:
    n = draw(st.integers(1, 12))
    rows = []
    for i in range(n):
        data = {"type": draw(st.sampled_from(TYPES))}
        if draw(st.booleans()):
            data["n"] = draw(st.integers(1, 3))
        rows.append({"program_id": draw(st.sampled_from(program_keys)), "idempotency_key": f"e{i}",
                     "external_id": draw(st.sampled_from(PEOPLE)),
                     "at": T0 + timedelta(minutes=30 * draw(st.integers(0, 10))), "data": data})
    return sorted(rows, key=lambda r: r["at"])  # arrival order = time order: any cut is a time-ordered one


def _keys(prog_dir: Path):
    """The engine's id scheme for SYSTEM event keys (engine/emit.py), for the oracle."""
    catalog = load_catalog(prog_dir)
    version = {(p.key, r.key): r.version for p in catalog.programs.values() for r in p.rules}

    def system_key(kind, program_key, emitter_key, rule_key, index, receiver):
        emitter = emit.event_id(str(ids.program_id(program_key)), emitter_key)
        if kind == "schedule":
            return emit.schedule_key(emitter, version[(program_key, rule_key)], index)
        return emit.broadcast_key(emitter, version[(program_key, rule_key)], index, str(ids.participant_id(receiver)))
    return system_key


def _engine(prog_dir: Path, batches: list[list[dict]], d: Path, as_of: datetime):
    db_file = d / "ledger.duckdb"
    for i, rows in enumerate(batches):
        f = write_events(d / f"b{i}.parquet", [
            {"program_id": r["program_id"], "idempotency_key": r["idempotency_key"], "external_id": r["external_id"],
             "event_timestamp": r["at"].strftime("%Y-%m-%dT%H:%M:%SZ"), "event_data": json.dumps(r["data"])}
            for r in rows], schema=SCHEMA)
        run_batch(prog_dir, f, db_file)
    waiting = _waiting(db_file)
    maintain(as_of, db_file, programs=prog_dir)
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return read_ledger(con), entry_identity(con), waiting, _waiting(db_file, con)
    finally:
        con.close()


def _waiting(db_file: Path, con=None) -> list[str]:
    own = con is None
    con = con or duckdb.connect(str(db_file), read_only=True)
    try:
        return sorted(k for (k,) in con.execute("SELECT idempotency_key FROM scheduled_events").fetchall())
    finally:
        if own:
            con.close()


def _oracle(files: list[Path], prog_dir: Path, batches: list[list[dict]], as_of: datetime):
    oracle = Oracle(files, system_key=_keys(prog_dir))
    for rows in batches:
        oracle.run_batch([{"program_id": r["program_id"], "idempotency_key": r["idempotency_key"],
                           "external_id": r["external_id"], "event_timestamp": r["at"],
                           "event_data": {k: float(v) if isinstance(v, int) else v for k, v in r["data"].items()}}
                          for r in rows])
    waiting = sorted(q[2].idempotency_key for q in oracle.queue)
    oracle.maintain(as_of)
    return oracle.snapshot(), waiting


def _cut(rows: list[dict], cuts: list[int]) -> list[list[dict]]:
    points = sorted({c % (len(rows) + 1) for c in cuts} | {0, len(rows)})
    return [rows[a:b] for a, b in zip(points, points[1:]) if b > a]


def _compare(engine, oracle) -> None:
    assert engine.events == oracle.events
    assert engine.entries == oracle.entries  # ledger order: SYSTEM events interleaved where processed
    assert engine.balances == oracle.balances
    assert engine.participants == oracle.participants
    assert engine.rejected == oracle.rejected
    # per event and rule; the view orders SYSTEM events by emission, not by where they were processed
    assert Counter(engine.evaluations) == Counter(oracle.evaluations)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_system_events_engine_vs_oracle_whole_and_cut(data):
    specs = data.draw(programs())
    rows = data.draw(streams([s["program"]["key"] for s in specs]))
    cuts = data.draw(st.lists(st.integers(0, 12), min_size=1, max_size=3))
    as_of = T0 + timedelta(days=2)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prog_dir = d / "programs"
        files = [write_program(prog_dir / f"{s['program']['key']}.yaml", s) for s in specs]
        whole_dir, cut_dir = d / "whole", d / "cut"
        whole_dir.mkdir()
        cut_dir.mkdir()
        engine_whole, ids_whole, waiting_whole, left_whole = _engine(prog_dir, [rows], whole_dir, as_of)
        oracle_whole, oracle_waiting = _oracle(files, prog_dir, [rows], as_of)
        _compare(engine_whole, oracle_whole)
        assert waiting_whole == oracle_waiting and left_whole == []
        batches = _cut(rows, cuts)
        engine_cut, ids_cut, _, _ = _engine(prog_dir, batches, cut_dir, as_of)
        oracle_cut, _ = _oracle(files, prog_dir, batches, as_of)
        _compare(engine_cut, oracle_cut)
        assert ids_cut == ids_whole  # batch invariance: the same entries, ids and order


def test_emission_ties_follow_the_emitter_whatever_the_cut(tmp_path):
    """A hand-built case of the tie rules: a 0s follow-up and a broadcast come right after their
    emitter, before the next row of the same instant, in one batch or cut between the rows."""
    spec = {"program": {"key": "p", "name": "P"},
            "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                        "scale": 0}],
            "rules": [{"name": "go", "key": "go", "condition": 'event.type == "a"',
                       "actions": [{"type": "SCHEDULE_EVENT", "event_name": "b", "delay": "0s", "payload": {}},
                                   {"type": "BROADCAST", "event_name": "c", "payload": {}}]},
                      {"name": "count", "key": "count", "condition": 'event.type in ["b", "c"]',
                       "actions": [{"type": "COUNTER", "key": "seen", "value": "1"}]},
                      {"name": "pay", "key": "pay", "condition": 'event.type == "d"',
                       "actions": [{"type": "CREDIT", "asset": "PTS",
                                    "amount": "get(participant.counters, 'seen', 0.0)"}]}]}
    prog_dir = tmp_path / "programs"
    files = [write_program(prog_dir / "p.yaml", spec)]
    at = T0
    rows = [{"program_id": "p", "idempotency_key": "e0", "external_id": "u2", "at": at, "data": {"type": "x"}},
            {"program_id": "p", "idempotency_key": "e1", "external_id": "u1", "at": at, "data": {"type": "a"}},
            {"program_id": "p", "idempotency_key": "e2", "external_id": "u1", "at": at, "data": {"type": "d"}},
            {"program_id": "p", "idempotency_key": "e3", "external_id": "u2", "at": at, "data": {"type": "d"}}]
    results = []
    for i, batches in enumerate(([rows], [rows[:2], rows[2:]])):
        (tmp_path / f"r{i}").mkdir()
        engine, ids_, _, _ = _engine(prog_dir, batches, tmp_path / f"r{i}", T0 + timedelta(days=1))
        oracle, _ = _oracle(files, prog_dir, batches, T0 + timedelta(days=1))
        _compare(engine, oracle)
        results.append(ids_)
        # u1 saw its follow-up and its broadcast (2) before e2; u2 its broadcast (1) before e3
        assert engine.balances == {("u1", "PTS"): 2, ("u2", "PTS"): 1}
    assert results[0] == results[1]
