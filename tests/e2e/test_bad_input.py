"""Bad input (semantics.md 13): unreadable files and invalid programs stop the run with exit 2 and
write nothing (byte-for-byte); malformed rows are quarantined while valid rows are processed."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from tests.helpers.io import (balances, cli, event, file_hash, program_spec, query, run_json, write_events,
                              write_program)

GOOD_RULES = [{"name": "Purchase points", "key": "purchase", "condition": 'event.type == "purchase"',
               "order": 10, "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]}]


def squash(text: str) -> str:
    """Output without whitespace: the console may wrap long paths and messages."""
    return "".join(text.split())


def good_events(tmp_path: Path) -> Path:
    return write_events(tmp_path / "good" / "events.parquet", [
        event("shop", "g-1", "alice", "2025-11-01T10:00:00Z", {"type": "purchase"})])


def run_in_process(capsys, programs: Path, events: Path, db: Path) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json"])
    return code, capsys.readouterr().err


@pytest.fixture
def programs(tmp_path) -> Path:
    return write_program(tmp_path / "programs" / "shop.yaml", program_spec("shop", GOOD_RULES))


@pytest.fixture
def existing_db(tmp_path, programs) -> Path:
    """A ledger that already holds one committed batch."""
    db = tmp_path / "existing.duckdb"
    run_json(programs, good_events(tmp_path), db)
    return db


# ---------------------------------------------------------------------------------------------
# Files that cannot be read at all


def _not_parquet(d: Path) -> tuple[Path, str]:
    f = d / "broken.parquet"
    d.mkdir(parents=True, exist_ok=True)
    f.write_text("program_id,idempotency_key\nshop,k1\n")
    return f, "Parquet"


def _missing_column(d: Path) -> tuple[Path, str]:
    f = write_events(d / "nokey.parquet", [{"program_id": "shop", "external_id": "a",
                                            "event_timestamp": "2025-11-01T00:00:00Z", "event_data": "{}"}],
                     schema=pa.schema([("program_id", pa.string()), ("external_id", pa.string()),
                                       ("event_timestamp", pa.string()), ("event_data", pa.string())]))
    return f, "idempotency_key"


def _missing_participant_columns(d: Path) -> tuple[Path, str]:
    f = write_events(d / "nobody.parquet", [{"program_id": "shop", "idempotency_key": "k",
                                             "event_timestamp": "2025-11-01T00:00:00Z", "event_data": "{}"}],
                     schema=pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()),
                                       ("event_timestamp", pa.string()), ("event_data", pa.string())]))
    return f, "external_id"


def _int_key(d: Path) -> tuple[Path, str]:
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.int64()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", pa.string())])
    f = write_events(d / "intkey.parquet", [{"program_id": "shop", "idempotency_key": 7, "external_id": "a",
                                             "event_timestamp": "2025-11-01T00:00:00Z", "event_data": "{}"}], schema=schema)
    return f, "idempotency_key"


def _int_timestamp(d: Path) -> tuple[Path, str]:
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.int64()), ("event_data", pa.string())])
    f = write_events(d / "intts.parquet", [{"program_id": "shop", "idempotency_key": "k", "external_id": "a",
                                            "event_timestamp": 1730000000, "event_data": "{}"}], schema=schema)
    return f, "event_timestamp"


def _list_event_data(d: Path) -> tuple[Path, str]:
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", pa.list_(pa.int64()))])
    f = write_events(d / "listdata.parquet", [{"program_id": "shop", "idempotency_key": "k", "external_id": "a",
                                               "event_timestamp": "2025-11-01T00:00:00Z", "event_data": [1]}], schema=schema)
    return f, "event_data"


def _binary_payload_field(d: Path) -> tuple[Path, str]:
    """A bytes field deep in a struct payload: JSON has no bytes, and Polars' JSON writer
    panicked on it (exit 1, "not yet implemented: Writing BinaryView to JSON")."""
    payload = pa.struct([("type", pa.string()), ("items", pa.list_(pa.struct([("blob", pa.binary())])))])
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", payload)])
    f = write_events(d / "bytes.parquet", [{"program_id": "shop", "idempotency_key": "k", "external_id": "a",
                                            "event_timestamp": "2025-11-01T00:00:00Z",
                                            "event_data": {"type": "purchase", "items": [{"blob": b"\x00\xff"}]}}],
                     schema=schema)
    return f, "event_data.items[].blob is binary"


BAD_FILES = {"not_parquet": _not_parquet, "missing_column": _missing_column,
             "missing_participant_columns": _missing_participant_columns, "int_key": _int_key,
             "int_timestamp": _int_timestamp, "list_event_data": _list_event_data,
             "binary_payload_field": _binary_payload_field}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unreadable_file_new_db_not_created(case, tmp_path, db_path, programs, capsys):
    bad, problem = BAD_FILES[case](tmp_path / "in")
    code, err = run_in_process(capsys, programs, bad, db_path)
    assert code == 2
    assert squash(str(bad)) in squash(err) and problem in err
    assert not db_path.exists()


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unreadable_file_existing_db_unchanged(case, tmp_path, existing_db, programs, capsys):
    """A folder of one good file and one unreadable file: nothing at all is written."""
    folder = tmp_path / "mixed"
    write_events(folder / "a_good.parquet", [event("shop", "m-1", "bob", "2025-11-02T10:00:00Z", {"type": "purchase"})])
    bad, problem = BAD_FILES[case](folder)
    before = file_hash(existing_db)
    code, err = run_in_process(capsys, programs, folder, existing_db)
    assert code == 2
    assert squash(str(bad)) in squash(err) and problem in err
    assert file_hash(existing_db) == before


def test_unreadable_file_subprocess_exit_code(tmp_path, existing_db, programs):
    bad, _ = _not_parquet(tmp_path / "in")
    before = file_hash(existing_db)
    res = cli("run", "--programs", str(programs), "--events", str(bad), "--db", str(existing_db))
    assert res.returncode == 2
    assert squash(str(bad)) in squash(res.stderr)
    assert file_hash(existing_db) == before


@pytest.mark.parametrize("command", [["verify"], ["balances"], ["report", "ledger_summary"], ["sql", "SELECT 1"]])
def test_reading_a_file_no_run_committed_to_is_an_input_error(tmp_path, programs, command):
    # a first run that never committed leaves a DuckDB file with no tables: the read-only commands
    # say so and exit 2 (semantics.md 13), where they stopped with a raw "Table ... does not
    # exist" (exit 1); a run then creates the ledger in it as usual
    db = tmp_path / "left_empty.duckdb"
    duckdb.connect(str(db)).close()
    res = cli(*command, "--db", str(db))
    assert res.returncode == 2, res.stderr
    assert squash(str(db)) in squash(res.stderr) and "no perkflow ledger" in res.stderr
    assert "Traceback" not in res.stderr
    run_json(programs, good_events(tmp_path), db)
    assert cli(*command, "--db", str(db)).returncode in (0, 4)  # verify exits 4 only on a broken ledger


# ---------------------------------------------------------------------------------------------
# Row-level problems: quarantined, the rest processed


def test_a_whitespace_only_external_id_names_nobody(tmp_path, db_path, programs):
    # like an empty one (decisions.md "Input"): a row with no other participant reference is
    # quarantined, and no participant "   " is created; an id with other characters is kept
    ok = {"type": "purchase"}
    rows = [event("shop", "k1", "   ", "2025-11-01T10:00:00Z", ok), event("shop", "k2", " al ", "2025-11-01T10:01:00Z", ok)]
    report = run_json(programs, write_events(tmp_path / "in" / "rows.parquet", rows), db_path)
    assert (report["read"], report["rejected"], report["completed"]) == (2, 1, 1)
    assert query(db_path, "SELECT reason FROM rejected_rows") == [("missing_required_field",)]
    assert query(db_path, "SELECT external_id FROM participants") == [(" al ",)]


def test_a_whitespace_only_idempotency_key_is_quarantined_like_an_empty_one(tmp_path, db_path, programs):
    # semantics.md 2.2: idempotency_key is a string of 1..255; one of only whitespace names no
    # event (decisions.md "Input"): quarantined as missing_required_field, with a message that
    # says so. A key with whitespace around other characters is a key, kept as written.
    ok = {"type": "purchase"}
    rows = [event("shop", " ", "alice", "2025-11-01T10:00:00Z", ok),            # 1 blank
            event("shop", "\t\n ", "alice", "2025-11-01T10:01:00Z", ok),      # 2 blank
            event("shop", "\u3000", "alice", "2025-11-01T10:01:30Z", ok),      # 3 blank (ideographic space)
            event("shop", " k ", "alice", "2025-11-01T10:02:00Z", ok),          # 4 valid
            event("shop", "k", "bob", "2025-11-01T10:03:00Z", ok)]              # 5 valid, another key than 4
    f = write_events(tmp_path / "in" / "rows.parquet", rows)
    report = run_json(programs, f, db_path)
    assert (report["read"], report["rejected"], report["completed"], report["duplicates"]) == (5, 3, 2, 0)
    rejected = query(db_path, "SELECT row_number, reason, message FROM rejected_rows ORDER BY row_number")
    assert [(n, r) for n, r, _ in rejected] == [(1, "missing_required_field"), (2, "missing_required_field"),
                                                (3, "missing_required_field")]
    assert all("idempotency_key" in m and "whitespace" in m for *_, m in rejected), rejected
    assert query(db_path, "SELECT idempotency_key FROM events ORDER BY row_number") == [(" k ",), ("k",)]
    # an operation too, also the single one of `perkflow op`
    res = cli("op", "tag", "--programs", str(programs), "--program", "shop", "--key", "   ", "--external-id", "alice",
              "--param", "tag=x", "--timestamp", "2025-11-02T00:00:00Z", "--db", str(db_path), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert (out["status"], out["error_code"]) == ("REJECTED", "missing_required_field")
    assert "whitespace" in out["error_message"]
    assert query(db_path, "SELECT count(*) FROM operations") == [(0,)]



def test_bad_rows_are_quarantined(tmp_path, db_path, programs):
    ok = {"type": "purchase"}
    rows = [
        event("shop", "ok-1", "alice", "2025-11-01T10:00:00Z", ok),                  # 1 valid
        event("shop", None, "alice", "2025-11-01T10:01:00Z", ok),                    # 2 missing key
        event("shop", "", "alice", "2025-11-01T10:01:00Z", ok),                      # 3 empty key
        event("shop", "bad-ts", "alice", "yesterday", ok),                           # 4 bad timestamp
        event("shop", "naive-ts", "alice", "2025-11-01T10:02:00", ok),               # 5 no time zone
        event("shop", "list-data", "alice", "2025-11-01T10:03:00Z", "[1, 2]"),        # 6 not an object
        event("shop", "bad-json", "alice", "2025-11-01T10:03:00Z", "{not json"),      # 7 not JSON
        event("nope", "unknown-prog", "alice", "2025-11-01T10:04:00Z", ok),           # 8 unknown program
        event("shop", "k" * 256, "alice", "2025-11-01T10:05:00Z", ok),                # 9 key too long
        event("shop", "k" * 255, "bob", "2025-11-01T10:06:00Z", ok),                  # 10 valid: 255 is allowed
        event("shop", "no-person", None, "2025-11-01T10:07:00Z", ok),                 # 11 no participant
        event("shop", "no-data", "alice", "2025-11-01T10:08:00Z", None),              # 12 missing event_data
        event("shop", "ok-2", "carol", "2025-11-01T10:09:00Z", {"type": "refund"}),   # 13 valid, no rule matches
    ]
    f = write_events(tmp_path / "in" / "rows.parquet", rows)
    report = run_json(programs, f, db_path)
    valid = {1, 10, 13}
    assert report["read"] == len(rows)
    assert report["rejected"] == len(rows) - len(valid)
    assert report["completed"] == len(valid) and report["failed"] == 0 and report["duplicates"] == 0
    assert report["read"] == report["completed"] + report["failed"] + report["duplicates"] + report["rejected"]

    rejected = {n: (reason, source, raw) for source, n, reason, raw in
                query(db_path, "SELECT source, row_number, reason, raw FROM rejected_rows")}
    assert set(rejected) == set(range(1, len(rows) + 1)) - valid
    assert all(src == str(f) for _, src, _ in rejected.values())
    reasons = {n: r for n, (r, _, _) in rejected.items()}
    assert reasons[2] == reasons[3] == "missing_required_field"
    assert reasons[4] == reasons[5] == "invalid_timestamp"
    assert reasons[6] == reasons[7] == "invalid_event_data"
    assert reasons[8] == "unknown_program"
    assert reasons[9] == "idempotency_key_too_long"
    assert reasons[11] == "missing_required_field"
    assert reasons[12] == "missing_required_field"
    # The raw row is kept: it carries the row's own values.
    assert "unknown-prog" in rejected[8][2] and "nope" in rejected[8][2]
    assert balances(db_path) == {("alice", "PTS"): Decimal(10), ("bob", "PTS"): Decimal(10)}
    stored = query(db_path, "SELECT row_number, status FROM events ORDER BY row_number")
    assert stored == [(n, "COMPLETED") for n in sorted(valid)]


def test_struct_event_data_with_null_row(tmp_path, db_path, programs):
    """Struct payloads: a null struct is a missing event_data; null fields are absent fields."""
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")),
                        ("event_data", pa.struct([("type", pa.string()), ("amount", pa.float64())]))])
    from tests.helpers.io import ts
    rows = [
        {"program_id": "shop", "idempotency_key": "s1", "external_id": "a", "event_timestamp": ts("2025-11-01T00:00:00"),
         "event_data": {"type": "purchase", "amount": None}},
        {"program_id": "shop", "idempotency_key": "s2", "external_id": "a", "event_timestamp": ts("2025-11-01T00:00:01"),
         "event_data": None},
        {"program_id": "shop", "idempotency_key": "s3", "external_id": "a", "event_timestamp": None,
         "event_data": {"type": "purchase", "amount": 1.0}},
    ]
    f = tmp_path / "in" / "struct.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), f)
    report = run_json(programs, f, db_path)
    assert (report["read"], report["completed"], report["rejected"]) == (3, 1, 2)
    assert sorted(query(db_path, "SELECT row_number, reason FROM rejected_rows")) == [
        (2, "missing_required_field"), (3, "missing_required_field")]
    assert balances(db_path) == {("a", "PTS"): Decimal(10)}



def test_a_number_beyond_a_doubles_range_is_quarantined_not_a_crash(tmp_path, db_path, programs):
    """semantics.md 13: a payload CEL cannot read (its JSON numbers are doubles, 6) is the row's
    problem. A 400-digit integer stopped the whole run as an internal error (exit 1, nothing
    committed) and `1e400` was stored as `Infinity`, which is not JSON; both are now
    quarantined as invalid_event_data and the valid rows of the file are processed."""
    rows = [
        event("shop", "huge-int", "alice", "2025-11-01T10:00:00Z", '{"type": "purchase", "n": 1' + "0" * 400 + "}"),
        event("shop", "huge-exp", "alice", "2025-11-01T10:01:00Z", '{"type": "purchase", "n": 1e400}'),
        event("shop", "tiny-neg", "alice", "2025-11-01T10:02:00Z", '{"type": "purchase", "l": [-1e400]}'),
        event("shop", "fine", "alice", "2025-11-01T10:03:00Z", '{"type": "purchase", "n": 1e308}'),
    ]
    f = write_events(tmp_path / "in" / "numbers.parquet", rows)
    res = cli("run", "--programs", str(programs), "--events", str(f), "--db", str(db_path), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["read"], report["completed"], report["rejected"]) == (4, 1, 3)
    rejected = query(db_path, "SELECT row_number, reason, message FROM rejected_rows ORDER BY row_number")
    assert [(n, r) for n, r, _ in rejected] == [(1, "invalid_event_data"), (2, "invalid_event_data"),
                                               (3, "invalid_event_data")]
    assert all("range of a double" in m for _, _, m in rejected)
    assert query(db_path, "SELECT idempotency_key, event_data::VARCHAR FROM events") == [
        ("fine", '{"n":1e+308,"type":"purchase"}')]
    assert balances(db_path) == {("alice", "PTS"): Decimal(10)}


def test_a_struct_payload_holding_nan_or_an_infinity_is_quarantined(tmp_path, db_path, programs):
    """A Parquet struct payload with a NaN or infinite double (at the top, in a list, in a list of
    structs) was taken in: CEL saw the float (`event.v > 1.0` matched an infinity and credited)
    while the stored payload said `"v": null`, so explain and replay read another event than the
    run evaluated. JSON cannot hold these values (a JSON payload's NaN is quarantined), so the
    struct row is quarantined the same way (semantics.md 13) and the valid rows are processed."""
    from tests.helpers.io import ts
    rules = [{"name": "Big", "key": "big", "condition": "event.v > 1.0",
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]
    progs = write_program(tmp_path / "p" / "shop.yaml", program_spec("shop", rules))
    payload = pa.struct([("v", pa.float64()), ("l", pa.list_(pa.float64())),
                         ("s", pa.list_(pa.struct([("x", pa.float32())])))])
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")), ("event_data", payload)])
    inf, nan = float("inf"), float("nan")
    datas = [{"v": inf, "l": [], "s": []}, {"v": nan, "l": None, "s": None}, {"v": 2.0, "l": [1.0, -inf], "s": None},
             {"v": 2.0, "l": None, "s": [{"x": 1.0}, {"x": nan}]}, {"v": 2.0, "l": [1.0], "s": [{"x": None}]}]
    rows = [{"program_id": "shop", "idempotency_key": f"k{i}", "external_id": "alice",
             "event_timestamp": ts(f"2025-11-01T10:0{i}:00"), "event_data": d} for i, d in enumerate(datas, start=1)]
    f = tmp_path / "in" / "struct.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), f)
    res = cli("run", "--programs", str(progs), "--events", str(f), "--db", str(db_path), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert (report["read"], report["completed"], report["rejected"]) == (5, 1, 4)
    assert query(db_path, "SELECT row_number, reason FROM rejected_rows ORDER BY 1") == [
        (n, "invalid_event_data") for n in (1, 2, 3, 4)]
    assert query(db_path, "SELECT idempotency_key FROM events") == [("k5",)]
    assert balances(db_path) == {("alice", "PTS"): Decimal(1)}

# ---------------------------------------------------------------------------------------------
# Program files that do not validate: exit 2, message names file/rule/field, nothing written


def _spec():
    return program_spec("shop", copy.deepcopy(GOOD_RULES))


def _bad_yaml(d):
    f = d / "shop.yaml"
    f.write_text("program:\n  key: shop\n  name: [unclosed\n")
    return f, ["shop.yaml"]


def _unknown_field(d):
    s = _spec()
    s["rules"][0]["conditon"] = "true"
    return write_program(d / "shop.yaml", s), ["conditon", "Purchase points"]


def _unknown_action_field(d):
    s = _spec()
    s["rules"][0]["actions"][0]["amout"] = "1"
    return write_program(d / "shop.yaml", s), ["amout", "Purchase points"]


def _bad_enum(d):
    s = _spec()
    s["rules"][0]["actions"][0]["type"] = "GIVE"
    return write_program(d / "shop.yaml", s), ["type", "Purchase points"]


def _bad_asset_enum(d):
    s = _spec()
    s["assets"][0]["issuance_policy"] = "INFINITE"
    return write_program(d / "shop.yaml", s), ["issuance_policy"]


def _cel_syntax(d):
    s = _spec()
    s["rules"][0]["condition"] = 'event.type == "purchase" &&'
    return write_program(d / "shop.yaml", s), ["Purchase points", "condition"]


def _cel_amount_syntax(d):
    s = _spec()
    s["rules"][0]["actions"][0]["amount"] = "event.amount * * 2"
    return write_program(d / "shop.yaml", s), ["Purchase points", "amount"]


def _unknown_asset_action(d):
    s = _spec()
    s["rules"][0]["actions"][0]["asset"] = "GEMS"
    return write_program(d / "shop.yaml", s), ["Purchase points", "GEMS"]


def _unknown_asset_in_cel(d):
    s = _spec()
    s["rules"][0]["condition"] = "participant.balances.GEMS.available > 0.0"
    return write_program(d / "shop.yaml", s), ["Purchase points", "GEMS"]


def _duplicate_order(d):
    s = _spec()
    s["rules"].append({"name": "Second rule", "key": "second", "condition": "true", "order": 10,
                       "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]})
    return write_program(d / "shop.yaml", s), ["Second rule", "order"]


def _lifecycle_without_duration(d):
    """A tier lifecycle without a meaning (ACTIVITY_REFRESH needs a duration): rejected, never guessed."""
    s = _spec()
    s["tiers"] = [{"key": "status", "levels": [{"key": "gold", "rank": 1}],
                   "lifecycle": {"retention": {"mode": "ACTIVITY_REFRESH"}, "downgrade_policy": {"mode": "DROP_ONE"}}}]
    return write_program(d / "shop.yaml", s), ["tiers[0] (status)", "retention.duration", "ACTIVITY_REFRESH"]


def _budgets(d):
    """A CRON budget whose expression can never fire (31 February) is a load error."""
    s = _spec()
    s["rules"][0]["budgets"] = [{"asset": "PTS", "limit": "100", "schedule_type": "CRON", "cron_expression": "0 0 31 2 *"}]
    return write_program(d / "shop.yaml", s), ["Purchase points", "cron_expression", "never fires"]


def _static_bad_scale(d):
    """An amount that is literal text (no variable, no function) is neither number nor CEL."""
    s = _spec()
    s["rules"][0]["actions"][0]["amount"] = "ten points"
    return write_program(d / "shop.yaml", s), ["Purchase points", "amount", "neither a number nor a CEL expression"]


def _conflicting_asset(d):
    write_program(d / "a_shop.yaml", _spec())
    s = program_spec("other", copy.deepcopy(GOOD_RULES))
    s["assets"][0]["scale"] = 2
    return write_program(d / "b_other.yaml", s), ["PTS"]


BAD_PROGRAMS = {f.__name__.lstrip("_"): f for f in (
    _bad_yaml, _unknown_field, _unknown_action_field, _bad_enum, _bad_asset_enum, _cel_syntax, _cel_amount_syntax,
    _unknown_asset_action, _unknown_asset_in_cel, _duplicate_order, _lifecycle_without_duration, _budgets, _static_bad_scale,
    _conflicting_asset)}


@pytest.mark.parametrize("case", sorted(BAD_PROGRAMS))
def test_invalid_program_writes_nothing(case, tmp_path, existing_db, capsys):
    folder = tmp_path / "bad_programs"
    folder.mkdir()
    bad, words = BAD_PROGRAMS[case](folder)
    before = file_hash(existing_db)
    events = good_events(tmp_path / "e2")
    code, err = run_in_process(capsys, folder, events, existing_db)
    assert code == 2, err
    assert squash(str(bad)) in squash(err)
    for w in words:
        assert squash(w) in squash(err), (w, err)
    assert file_hash(existing_db) == before
    # and a database that does not exist yet is not created
    fresh = tmp_path / "fresh.duckdb"
    code, _ = run_in_process(capsys, folder, events, fresh)
    assert code == 2 and not fresh.exists()


def test_invalid_program_subprocess(tmp_path, db_path):
    bad, _ = _lifecycle_without_duration(tmp_path / "p")
    res = cli("run", "--programs", str(bad), "--events", str(good_events(tmp_path)), "--db", str(db_path))
    assert res.returncode == 2
    assert "retention.duration: required" in res.stderr and squash(str(bad)) in squash(res.stderr)
    assert not db_path.exists()
    res = cli("validate", "--programs", str(bad))
    assert res.returncode == 2


def test_inactive_rule_may_share_order(tmp_path, db_path):
    """Only *active* rules must have distinct orders: a SUSPENDED rule sharing one is fine and never fires."""
    s = _spec()
    s["rules"].append({"name": "Old rule", "key": "old", "condition": "true", "order": 10, "status": "SUSPENDED",
                       "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1000"}]})
    progs = write_program(tmp_path / "p" / "shop.yaml", s)
    run_json(progs, good_events(tmp_path), db_path)
    assert balances(db_path) == {("alice", "PTS"): Decimal(10)}


def test_extra_nested_columns_are_kept_in_raw_not_fatal(tmp_path, db_path, programs):
    """Columns beyond the contract (here a list and an int) do not stop the run; a rejected row's
    raw text still carries them."""
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.string()), ("event_data", pa.string()),
                        ("tags", pa.list_(pa.string())), ("store", pa.int64())])
    rows = [{"program_id": "shop", "idempotency_key": "x1", "external_id": "a", "event_timestamp": "2025-11-01T00:00:00Z",
             "event_data": '{"type": "purchase"}', "tags": ["vip"], "store": 7},
            {"program_id": "shop", "idempotency_key": "x2", "external_id": "a", "event_timestamp": "bad",
             "event_data": '{"type": "purchase"}', "tags": ["zzz-marker"], "store": 8}]
    f = write_events(tmp_path / "in" / "extra.parquet", rows, schema=schema)
    report = run_json(programs, f, db_path)
    assert (report["completed"], report["rejected"]) == (1, 1)
    (raw,) = query(db_path, "SELECT raw FROM rejected_rows")[0]
    assert "zzz-marker" in raw
    assert balances(db_path) == {("a", "PTS"): Decimal(10)}


def test_running_out_of_duckdbs_memory_cap_says_what_to_do_and_commits_nothing(tmp_path):
    """Not an internal error to report: the message names the cap and how to raise it."""
    programs = write_program(tmp_path / "programs" / "shop.yaml", program_spec("shop", GOOD_RULES))
    db = tmp_path / "ledger.duckdb"
    first = write_events(tmp_path / "first.parquet", [event("shop", "k1", "u1", "2025-03-01T10:00:00Z",
                                                            {"type": "purchase"})])
    run_json(programs, first, db)
    before = file_hash(db)
    second = write_events(tmp_path / "second.parquet", [event("shop", "k2", "u1", "2025-03-01T11:00:00Z",
                                                              {"type": "purchase"})])
    res = cli("run", "--programs", str(programs), "--events", str(second), "--db", str(db),
              env={"PERKFLOW_DUCKDB_MEMORY": "1MB"})
    assert res.returncode == 1
    assert "PERKFLOW_DUCKDB_MEMORY" in res.stderr and "nothing was committed" in res.stderr
    assert "smallerbatches" in squash(res.stderr)
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert file_hash(db) == before
    assert balances(db) == {("u1", "PTS"): Decimal(10)}

    # maintain has no input to split: it can catch up in steps instead
    res = cli("maintain", "--as-of", "2026-01-01T00:00:00Z", "--db", str(db), env={"PERKFLOW_DUCKDB_MEMORY": "1MB"})
    assert res.returncode == 1
    assert "nothingwascommitted" in squash(res.stderr) and "anearlier--as-offirst" in squash(res.stderr)
    assert "smallerbatches" not in squash(res.stderr) and "Traceback" not in res.stderr
    assert file_hash(db) == before


@pytest.mark.parametrize("running_min", [None, "1"])
def test_an_instant_past_year_9999_fails_the_event_not_the_run(tmp_path, running_min):
    """semantics.md 13: exit 1 is for unexpected internal errors. An event near 9999-12-31 whose
    rule adds a duration past the last instant the ledger holds (a lot's expires_at or
    matures_at, SCHEDULE_EVENT's delay) crashed the run (OverflowError, exit 1, nothing
    committed), and so did the next event of a participant with a `reset_after` counter; the
    running-state path wrote a lot expiring in year 10000 instead. Now the event fails with
    expression_error, as CEL's `now + duration(...)` does there, on every path
    (`PERKFLOW_RUNNING_MIN_EVENTS=1` puts this small batch on the running-state path), and the
    rest is processed."""
    lot = {"symbol": "LP", "name": "Lot", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}
    progs = tmp_path / "p"
    write_program(progs / "lots.yaml", program_spec("lots", [
        {"name": "Earn", "key": "earn", "condition": "true",
         "actions": [{"type": "CREDIT", "asset": "LP", "amount": "1", "expires_at": "720h"}]},
        {"name": "Mature", "key": "mature", "condition": 'event.type == "m"',
         "actions": [{"type": "CREDIT", "asset": "LP", "amount": "1", "matures_at": "1h"}]}], assets=[lot]))
    write_program(progs / "other.yaml", program_spec("other", [
        {"name": "Later", "key": "later", "condition": 'event.type == "s"',
         "actions": [{"type": "SCHEDULE_EVENT", "event_name": "again", "delay": "48h", "payload": {}}]},
        {"name": "Count", "key": "count", "condition": 'event.type == "c"',
         "actions": [{"type": "COUNTER", "key": "n", "value": "1", "reset_after": "24h"}]}]))
    env = {"PERKFLOW_RUNNING_MIN_EVENTS": running_min} if running_min else None

    def run(name, rows):
        f = write_events(tmp_path / "in" / name, rows)
        res = cli("run", "--programs", str(progs), "--events", str(f), "--db", str(tmp_path / "l.duckdb"), "--json",
                  env=env)
        assert res.returncode == 0, res.stderr[-600:]

    run("lots.parquet", [event("lots", "late", "alice", "9999-12-31T23:00:00Z", {"type": "x"}),
                         event("lots", "late-m", "alice", "9999-12-31T23:30:00Z", {"type": "m"}),
                         event("lots", "fine", "bob", "2025-11-01T10:00:00Z", {"type": "x"})])
    run("other.parquet", [event("other", "s1", "carol", "9999-12-31T00:00:00Z", {"type": "s"}),
                          event("other", "c1", "dave", "9999-12-31T00:00:00Z", {"type": "c"}),
                          event("other", "c2", "dave", "9999-12-31T23:59:59Z", {"type": "c"})])
    got = {k: (st, code) for k, st, code in query(tmp_path / "l.duckdb",
                                                  "SELECT idempotency_key, status, error_code FROM events")}
    assert got == {"late": ("FAILED", "expression_error"), "late-m": ("FAILED", "expression_error"),
                   "fine": ("COMPLETED", None), "s1": ("FAILED", "expression_error"),
                   "c1": ("COMPLETED", None), "c2": ("COMPLETED", None)}
    assert [m for (m,) in query(tmp_path / "l.duckdb", "SELECT error_message FROM events WHERE idempotency_key = 'late'")
            ][0].endswith("is past 9999-12-31T23:59:59.999999Z, the last instant the ledger holds")
    assert query(tmp_path / "l.duckdb", "SELECT COUNT(*), MAX(expires_at) < '9999-12-31' FROM lots") == [(1, True)]
    assert query(tmp_path / "l.duckdb", "SELECT number_value FROM participant_state WHERE key = 'n'") == [(Decimal(2),)]
