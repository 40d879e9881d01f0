"""Outsider round (session 20, round 2): small contract items, each reproduced through the
`perkflow` CLI into a real DuckDB file and compared with semantics.md and scrip-reference.md,
worked out by hand (docs/decisions.md where both are silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, on, op, program
from tests.e2e.test_outsider_rules2 import _IDS, PATHS
from tests.helpers.io import cli, write_events

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})


def test_s2_2_a_text_timestamp_must_be_rfc_3339(tmp_path):
    """semantics.md 2.2: a text event_timestamp (and an operation's timestamp) is an "RFC 3339
    string". RFC 3339 5.6 spells an instant 4-digit year, 2-digit month, day, hour, minute and
    second, an optional fraction, and `Z` or `+hh:mm` / `-hh:mm` (T/Z in either case; a space for
    T by the RFC's note, docs/decisions.md "Time"). `+0100`, `+01`, `2025-3-1`, `+2025` and a
    leading space were read as instants; each is now quarantined as invalid_timestamp, its message
    showing the form. By hand: the five accepted rows credit 1 + 2 + 4 + 8 + 16 = 31 to u1; the
    seven others (five events, two operations) are rejected and credit nothing."""
    lg = Ledger(tmp_path, program([EARN]))
    good = ["2025-03-01T10:00:00Z", "2025-03-01t10:00:00.5z", "2025-03-01T11:00:00+01:00",
            "2025-03-01 10:00:00Z", "2025-03-01T05:00:00-05:00"]
    bad = ["2025-03-01T11:00:00+0100", "2025-03-01T11:00:00+01", "2025-3-1T10:00:00Z",
           "+2025-03-01T10:00:00Z", " 2025-03-01T10:00:00Z"]
    events = [ev(f"g{i}", "u1", t, "earn", n=2 ** i) for i, t in enumerate(good)]
    events += [ev(f"b{i}", "u1", t, "earn", n=100) for i, t in enumerate(bad)]
    adjust = {"type": "CREDIT", "asset": "PTS", "amount": "100", "description": "x"}
    ops = [op("adjust", "o1", "u1", "2025-03-01T12:00:00+0100", **adjust),
           op("adjust", "o2", "u1", "2025-03-01T1:00:00Z", **adjust)]
    report = lg.run(events, ops)
    assert (report["completed"], report["rejected"]) == (5, 7), report
    assert lg.balance("u1")[0] == D(31)
    rows = sorted((json.loads(raw)["idempotency_key"], r, m) for r, m, raw in
                  lg.sql("SELECT reason, message, raw FROM rejected_rows"))
    assert [(k, r) for k, r, _ in rows] == [(f"b{i}", "invalid_timestamp") for i in range(5)] + [
        ("o1", "invalid_timestamp"), ("o2", "invalid_timestamp")], rows
    assert all("2025-01-01T00:00:00Z" in m for _, _, m in rows), rows
    assert rows[-1][2].startswith("timestamp "), rows


def test_s13_an_operation_row_with_bad_params_is_invalid_params(tmp_path):
    """semantics.md 13: a malformed row goes to rejected_rows with a reason code; an operation row
    carries `params`, not `event_data` (2.2), and its message already said `params`, but its
    reason was `invalid_event_data`. By hand: params that are not JSON, a JSON list, and an object
    nested 70 levels deep are three invalid_params rows; an event whose event_data is a list is
    still invalid_event_data; the one good operation credits u1 5."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e0", "u1", "2025-03-01T10:00:00Z", "earn", n=0)])
    adjust = {"type": "CREDIT", "asset": "PTS", "amount": "5", "description": "x"}
    texts = {"o1": json.dumps(adjust), "o2": "not json", "o3": "[1, 2]", "o4": '{"a": ' * 70 + "1" + "}" * 70}
    ops = tmp_path / "ops.parquet"
    pq.write_table(pa.table({"operation": ["adjust"] * 4, "program_id": ["shop"] * 4,
                             "idempotency_key": list(texts), "external_id": ["u1"] * 4,
                             "timestamp": ["2025-03-01T12:00:00Z"] * 4, "params": list(texts.values())}), ops)
    events = write_events(tmp_path / "ev.parquet", [
        {"program_id": "shop", "idempotency_key": "e1", "external_id": "u1",
         "event_timestamp": "2025-03-01T11:00:00Z", "event_data": "[1]"}])
    res = cli("run", "--programs", str(lg.programs), "--db", str(lg.db), "--json",
              "--events", str(events), "--operations", str(ops))
    assert res.returncode == 0, res.stderr
    rows = sorted((json.loads(raw)["idempotency_key"], r, m) for r, m, raw in
                  lg.sql("SELECT reason, message, raw FROM rejected_rows"))
    assert [(k, r) for k, r, _ in rows] == [("e1", "invalid_event_data"), ("o2", "invalid_params"),
                                            ("o3", "invalid_params"), ("o4", "invalid_params")], rows
    assert all("params" in m and "event_data" not in m for k, _, m in rows if k != "e1"), rows
    assert lg.status()["o1"] == OK
    assert lg.balance("u1")[0] == D(5)


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s7_a_target_external_id_over_255_characters_fails_the_event(tmp_path, name, flags, env):
    """scrip-reference: a participant's `external_id` is "Required, 1-255"; an input row's longer
    one is quarantined (external_id_too_long, docs/decisions.md "Input"). A CEL target giving 256
    characters created that participant, one Scrip could not hold. Now the event fails with
    external_id_too_long and nobody is created (semantics.md 5: a failed event changes nothing).
    By hand: e1 names 255 x's (created, credited 3); e2 names 256 (FAILED, no participant,
    nothing credited); a's own participant exists from e1."""
    rules = [{"name": "gift", "key": "gift", "condition": 'event.type == "gift"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "3",
                           "target": {"type": "PARTICIPANT", "external_id": "event.to"}}]}]
    lg = Ledger(tmp_path, program(rules))
    lg.run([ev("e1", "a", at(1), "gift", to="x" * 255), ev("e2", "a", at(2), "gift", to="y" * 256)],
           flags=flags, env=env)
    st = lg.sql("SELECT idempotency_key, status, error_code, error_message FROM events ORDER BY 1")
    assert [r[:3] for r in st] == [("e1", "COMPLETED", None), ("e2", "FAILED", "external_id_too_long")], st
    assert "255" in st[1][3], st
    assert sorted(len(x) for x, in lg.sql("SELECT external_id FROM participants")) == [1, 255]
    assert lg.balance("x" * 255)[0] == D(3)


def test_s13_a_key_written_twice_in_a_row_or_its_payload_is_the_rows_problem(tmp_path):
    """semantics.md 13: a malformed row is quarantined with a reason, the rest processed. JSON
    (RFC 8259 4) leaves an object whose name repeats unpredictable, and Python's reader kept the
    last silently: `{"type": "earn", "n": 1, "n": 50}` credited 50, and an NDJSON line naming
    `external_id` twice credited the second. Program files already refuse a key twice
    (engine/catalog/documents.py). By hand: NDJSON line 1 (good) credits u1 1; line 2 names
    external_id twice: invalid_row naming it; line 3's event_data (JSON text) names n twice:
    invalid_event_data naming n. A Parquet row's event_data with n twice: invalid_event_data."""
    lg = Ledger(tmp_path, program([EARN]))
    head = '{"program_id": "shop", "event_timestamp": "2025-03-01T10:00:00Z", '
    lines = [head + '"idempotency_key": "a", "external_id": "u1", "event_data": "{\\"type\\": \\"earn\\", \\"n\\": 1}"}',
             head + '"idempotency_key": "b", "external_id": "u1", "external_id": "u2", '
                    '"event_data": "{\\"type\\": \\"earn\\", \\"n\\": 2}"}',
             head + '"idempotency_key": "c", "external_id": "u1", '
                    '"event_data": "{\\"type\\": \\"earn\\", \\"n\\": 4, \\"n\\": 50}"}']
    (tmp_path / "e.ndjson").write_text("\n".join(lines) + "\n")
    pq_path = write_events(tmp_path / "e.parquet", [
        {"program_id": "shop", "idempotency_key": "d", "external_id": "u1",
         "event_timestamp": "2025-03-01T11:00:00Z", "event_data": '{"type": "earn", "n": 8, "n": 70}'}])
    res = cli("run", "--programs", str(lg.programs), "--db", str(lg.db), "--json",
              "--events", str(tmp_path / "e.ndjson"), "--events", str(pq_path))
    assert res.returncode == 0, res.stderr
    rows = lg.sql("SELECT source, row_number, reason, message FROM rejected_rows ORDER BY source DESC, row_number")
    assert [(s.rsplit("/", 1)[-1], n, r) for s, n, r, _ in rows] == [
        ("e.parquet", 1, "invalid_event_data"), ("e.ndjson", 2, "invalid_row"), ("e.ndjson", 3, "invalid_event_data")], rows
    assert "'n'" in rows[0][3] and "'external_id'" in rows[1][3] and "'n'" in rows[2][3], rows
    assert lg.balance("u1")[0] == D(1)
    assert lg.sql("SELECT COUNT(*) FROM participants") == [(1,)]


def test_s13_op_params_naming_a_key_twice_is_refused(tmp_path):
    """As above, for `perkflow op --params`: `{"amount": "1", "amount": "900"}` booked 900. By
    hand: the command stops (exit 2) naming the key, and nothing is written (u has 0)."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u", at(1), "earn", n=0)])
    res = cli("op", "adjust", "--programs", str(lg.programs), "--db", str(lg.db), "--program", "shop", "--key", "o1",
              "--external-id", "u", "--timestamp", at(2), "--json",
              "--params", '{"type": "CREDIT", "asset": "PTS", "amount": "1", "amount": "900", "description": "x"}')
    assert res.returncode == 2 and "'amount'" in res.stderr, res.stdout + res.stderr
    assert lg.balance("u")[0] == D(0)
    assert lg.sql("SELECT COUNT(*) FROM operations") == [(0,)]


def test_s3_a_replay_records_its_source_ledger_not_a_deleted_temporary_file(tmp_path):
    """docs/tables.md: `batches.sources` are the batch's input files (`perkflow op <operation>`
    for a CLI operation, whose temporary file is gone: docs/decisions.md). A replay (semantics.md
    3) recorded the temporary files it read the stored rows through, deleted when it ended, in
    `batches.sources` and each row's `source`: paths nobody can follow. By hand: the replayed
    ledger's one batch names "replay of <the source ledger>" once, and so do its events' and
    operations' sources; verify passes."""
    lg = Ledger(tmp_path, program([EARN]))
    lg.run([ev("e1", "u1", at(1), "earn", n=2)],
           [op("adjust", "o1", "u1", at(2), type="CREDIT", asset="PTS", amount="3", description="x")])
    lg.run([ev("e2", "u1", at(3), "earn", n=4)])
    fresh = tmp_path / "fresh.duckdb"
    res = cli("replay", "--from", str(lg.db), "--db", str(fresh), "--json")
    assert res.returncode == 0, res.stderr
    name = f"replay of {lg.db.resolve()}"
    from tests.helpers.io import query
    assert query(fresh, "SELECT sources FROM batches") == [([name],)]
    assert query(fresh, "SELECT DISTINCT source FROM events UNION SELECT DISTINCT source FROM operations") == [(name,)]
    assert cli("verify", "--db", str(fresh)).returncode == 0
