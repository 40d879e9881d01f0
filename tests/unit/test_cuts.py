"""Where engine/cuts.py cuts a chunk that mixes operations with events: the parts follow the
stream order, each long run of events is a part of its own, short runs stay with the
operations, and a row ranked before its key's winner goes to the winner's part."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from engine import cuts
from engine.catalog import load_catalog
from engine.io.events import read_inputs
from tests.helpers.io import write_events, write_program

OP_SCHEMA = pa.schema([(c, pa.string()) for c in
                       ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")])


def _chunk(tmp_path, events: list[tuple[str, int]], operations: list[tuple[str, int]]):
    """Events and operations (key, second of the minute) of one participant, as a read chunk."""
    program = write_program(tmp_path / "programs" / "shop.yaml", {
        "program": {"key": "shop", "name": "Shop"},
        "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}],
        "rules": [{"name": "Base", "key": "base", "order": 1, "condition": "true",
                   "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]})
    write_events(tmp_path / "events.parquet", [
        {"program_id": "shop", "idempotency_key": k, "external_id": "u1",
         "event_timestamp": f"2025-03-01T10:00:{s:02d}Z", "event_data": '{"n": 1}'} for k, s in events])
    write_events(tmp_path / "operations.parquet", [
        {"operation": "adjust", "program_id": "shop", "idempotency_key": k, "external_id": "u1",
         "timestamp": f"2025-03-01T10:00:{s:02d}Z", "params": json.dumps({"asset": "PTS", "amount": "1", "type": "CREDIT"})}
        for k, s in operations], schema=OP_SCHEMA)
    rows = read_inputs([(tmp_path / "events.parquet", "event"), (tmp_path / "operations.parquet", "operation")])
    return rows, load_catalog(program)


def _keys(parts: list[pl.DataFrame]) -> list[list[str]]:
    return [p.sort("event_timestamp", "arrival")["idempotency_key"].to_list() for p in parts]


@pytest.fixture
def three(monkeypatch):
    monkeypatch.setattr(cuts, "MIN_EVENTS", 3)


def test_long_runs_of_events_are_parts_of_their_own(tmp_path, three):
    rows, catalog = _chunk(tmp_path, [("e1", 1), ("e2", 2), ("e3", 3), ("e4", 5), ("e5", 7), ("e6", 8), ("e7", 9)],
                           [("o1", 4), ("o2", 6)])
    # e4 (one event between the operations) is too short a run to leave them
    assert _keys(cuts.parts(rows, catalog)) == [["e1", "e2", "e3"], ["o1", "e4", "o2"], ["e5", "e6", "e7"]]


def test_a_chunk_without_a_long_run_or_an_operation_is_not_cut(tmp_path, three):
    rows, catalog = _chunk(tmp_path, [("e1", 1), ("e2", 3), ("e3", 5)], [("o1", 2), ("o2", 4)])
    assert _keys(cuts.parts(rows, catalog)) == [["e1", "o1", "e2", "o2", "e3"]]
    rows, catalog = _chunk(tmp_path, [("e1", 1), ("e2", 3), ("e3", 5)], [])
    assert cuts.parts(rows, catalog) == [rows]


def test_a_row_ranked_before_its_keys_winner_goes_to_the_winners_part(tmp_path, three):
    """e2 arrives first (10:00:08, the winner of its key); its later arrival at 10:00:02 would
    open the first part, where it would be taken as new and win."""
    rows, catalog = _chunk(tmp_path, [("e1", 1), ("e3", 3), ("e4", 4), ("e2", 8), ("e5", 9), ("e6", 10),
                                      ("e2", 2)], [("o1", 5)])
    assert _keys(cuts.parts(rows, catalog)) == [["e1", "e3", "e4"], ["o1"], ["e2", "e2", "e5", "e6"]]


def test_the_parts_keep_the_events_payload_a_struct(tmp_path, three):
    """An operation's params are not an event's payload: a part of events keeps the Struct column
    the set-wise and running paths read (an Object column sends every rule to the row path)."""
    rows, catalog = _chunk(tmp_path, [("e1", 1), ("e2", 2), ("e3", 3)], [("o1", 4)])
    assert isinstance(rows["event"].dtype, pl.Struct)
    events, operations = cuts.parts(rows, catalog)
    assert events["event"].dtype == rows["event"].dtype
    assert operations["params"].to_list() == [{"asset": "PTS", "amount": "1", "type": "CREDIT"}]
