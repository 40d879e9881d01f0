"""Outsider round on inputs and bad input (session 20): semantics.md 2.2, 2.3 and 13 through the
`perkflow` CLI into a real DuckDB file, expectations worked out by hand from the contract (and
docs/decisions.md where it is silent)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.parquet as pq

from tests.e2e.test_contract_audit import OK, Ledger, at, on, program
from tests.helpers.io import cli

EARN = on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
HEADER = "program_id,external_id,idempotency_key,event_timestamp,event_data"


def _row(key: str, who: str, n: int, when: str = at(1)) -> dict:
    return {"program_id": "shop", "external_id": who, "idempotency_key": key, "event_timestamp": when,
            "event_data": json.dumps({"type": "earn", "n": n})}


def _csv_line(key: str, who: str, n: int) -> str:
    payload = json.dumps({"type": "earn", "n": n}).replace('"', '""')
    return f'shop,{who},{key},{at(1)},"{payload}"'


def _run(lg: Ledger, *flags: str, expect: int = 0):
    res = cli("run", "--programs", str(lg.programs), "--db", str(lg.db), "--json", *flags)
    assert res.returncode == expect, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout.strip().splitlines()[-1]) if expect == 0 else res


def _counts(report: dict) -> tuple:
    return tuple(report[k] for k in ("read", "completed", "failed", "duplicates", "rejected"))


def test_s1_1_an_operations_decimal_params_are_booked_exactly(tmp_path):
    """semantics.md 1.1: amounts are exact decimals from the moment they are decided; an
    operation's amount is decided by its params. A Parquet struct `params` whose `amount` is a
    DECIMAL(38, 18) went through a double: 0.123456789012345678 was booked as
    0.12345678901234568 and 12345678901234567.5 as 12345678901234568. By hand, on a scale-18
    asset: u1 is credited exactly 0.123456789012345678 + 12345678901234567.5 and 10 (a DECIMAL
    10.000...0 is the amount 10, not 18 decimals of a scale-0 amount)."""
    asset = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 18}
    lg = Ledger(tmp_path, program([EARN], [asset]))
    params = pa.struct([("type", pa.string()), ("asset", pa.string()), ("amount", pa.decimal128(38, 18)),
                        ("description", pa.string())])
    amounts = [D("0.123456789012345678"), D("12345678901234567.5"), D("10")]
    table = pa.table({
        "operation": ["adjust"] * 3, "program_id": ["shop"] * 3, "idempotency_key": ["o1", "o2", "o3"],
        "external_id": ["u1"] * 3, "timestamp": [at(1)] * 3,
        "params": pa.array([{"type": "CREDIT", "asset": "PTS", "amount": a, "description": "x"} for a in amounts],
                           type=params)})
    lg.run([{"key": "e1", "who": "u1", "when": at(1, 9), "data": {"type": "earn", "n": 0}}])
    pq.write_table(table, tmp_path / "ops.parquet")
    report = _run(lg, "--operations", str(tmp_path / "ops.parquet"))
    assert _counts(report) == (3, 3, 0, 0, 0), report
    assert [a for _, a in lg.entries("o1") + lg.entries("o2") + lg.entries("o3")] == amounts
    assert lg.balance("u1")[0] == sum(amounts)


def test_s2_2_a_folder_reads_event_files_whatever_the_case_of_their_suffix(tmp_path):
    """semantics.md 2.2: a directory (recursively) is accepted, and 1.7 nothing is lost. A folder's
    `B.PARQUET` and `c.NDJSON` were skipped without a word (their events never read, not even
    counted), while a glob or the file's own path read them (their suffix in any case). By hand:
    three rows read, u1 earns 1 + 2 + 4 = 7."""
    lg = Ledger(tmp_path, program([EARN]))
    (tmp_path / "in" / "sub").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([_row("a", "u1", 1)]), tmp_path / "in" / "a.parquet")
    pq.write_table(pa.Table.from_pylist([_row("b", "u1", 2)]), tmp_path / "in" / "sub" / "B.PARQUET")
    (tmp_path / "in" / "c.NDJSON").write_text(json.dumps(_row("c", "u1", 4)) + "\n")
    report = _run(lg, "--events", str(tmp_path / "in"))
    assert _counts(report) == (3, 3, 0, 0, 0), report
    assert lg.balance("u1")[0] == D(7)


def test_s2_2_an_empty_ndjson_or_csv_file_is_a_file_of_no_rows(tmp_path):
    """semantics.md 2.2 / 13: NDJSON and CSV are accepted; a file that cannot be read stops the
    run. A file of no rows can be read: 0 rows. An empty `.ndjson` (0 bytes, or blank lines) and
    an empty `.csv` (0 bytes, an export of no rows) stopped the whole run (exit 2, "missing
    required column(s)" / "empty CSV"), so a day's drop with one empty file beside the others
    wrote nothing. By hand: the folder holds a.parquet (u1 earns 5) and the two empty files:
    read 1, completed 1; each empty file alone reads 0 rows and exits 0."""
    lg = Ledger(tmp_path, program([EARN]))
    drop = tmp_path / "drop"
    drop.mkdir()
    pq.write_table(pa.Table.from_pylist([_row("a", "u1", 5)]), drop / "a.parquet")
    (drop / "b.ndjson").write_text("")
    (drop / "c.csv").write_text("")
    (drop / "d.ndjson").write_text("\n  \n")
    assert _counts(_run(lg, "--events", str(drop))) == (1, 1, 0, 0, 0)
    assert lg.balance("u1")[0] == D(5)
    for name in ("b.ndjson", "c.csv"):
        assert _counts(_run(lg, "--events", str(drop / name))) == (0, 0, 0, 0, 0)


def test_s13_a_csv_row_with_the_wrong_number_of_fields_is_quarantined_and_the_rest_processed(tmp_path):
    """semantics.md 13: a malformed row goes to rejected_rows (file, row number, reason, raw row)
    and the file's valid rows are processed, as an NDJSON line that is no JSON object is
    (docs/decisions.md "Input"). A CSV row with more fields than the header stopped the whole
    run (exit 2, Polars' "found more fields than defined in 'Schema'"), and one with fewer was
    padded with nulls: processed when the missing field was optional, its other fields possibly
    shifted. By hand: data rows 1 and 4 (u1 5, u4 9) are processed; row 2 (one field short:
    `recipient_external_id` missing) and row 3 (one field too many) are quarantined as
    `invalid_row` with their line as written; a quoted field holding a comma and a newline is
    one field (row 4's payload); a blank line is no row; a UTF-8 byte order mark is no part of
    the header."""
    lg = Ledger(tmp_path, program([EARN]))
    header = HEADER + ",recipient_external_id"
    short = _csv_line("k2", "u2", 7)
    long = _csv_line("k3", "u3", 7) + ",u9,extra"
    payload = '"{""type"": ""earn"",\n ""n"": 9, ""note"": ""a, b""}"'
    text = "\r\n".join([header, _csv_line("k1", "u1", 5) + ",", "  ", short, long, f"shop,u4,k4,{at(1)},{payload},"])
    (tmp_path / "e.csv").write_bytes(("\ufeff" + text + "\r\n").encode())  # a byte order mark, CRLF lines
    report = _run(lg, "--events", str(tmp_path / "e.csv"))
    assert _counts(report) == (4, 2, 0, 0, 2), report
    assert lg.balance("u1")[0] == D(5) and lg.balance("u4")[0] == D(9)
    assert lg.balance("u2")[0] == lg.balance("u3")[0] == D(0)
    rows = lg.sql("SELECT row_number, reason, message, raw FROM rejected_rows ORDER BY row_number")
    assert [(n, r) for n, r, _, _ in rows] == [(2, "invalid_row"), (3, "invalid_row")], rows
    assert "5 fields" in rows[0][2] and "7 fields" in rows[1][2] and "6" in rows[0][2], rows
    assert rows[0][3] == short and rows[1][3] == long, rows


def test_s2_2_a_timestamp_column_in_a_fixed_offset_zone_is_read_as_its_instants(tmp_path):
    """semantics.md 2.2: `event_timestamp` is a tz-aware timestamp. Arrow labels a column written
    with a fixed offset by the offset (`+05:30`, as pandas and Spark write one); such a file
    stopped the run (exit 2, Polars' "unable to parse time zone: '+05:30'"), as did a struct
    `event_data` field so labelled. An offset names the instants as surely as a zone name does.
    By hand: 15:30 at +05:30 is 10:00Z, so `now` is 2025-03-01T10:00:00Z; the payload's `at`
    (12:00 at +05:30 = 06:30Z) is before it: the rule with `event.at < now` credits 3, the one
    with `now == timestamp("2025-03-01T10:00:00Z")` credits 4: u1 has 7, the event's stored
    instant is 10:00Z."""
    import datetime as dt
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "3"}, condition="event.at < now"),
             {"name": "clock", "key": "clock", "condition": 'now == timestamp("2025-03-01T10:00:00Z")',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "4"}]}]
    lg = Ledger(tmp_path, program(rules))
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    table = pa.table({
        "program_id": ["shop"], "external_id": ["u1"], "idempotency_key": ["k1"],
        "event_timestamp": pa.array([dt.datetime(2025, 3, 1, 15, 30, tzinfo=zone)], pa.timestamp("us", tz="+05:30")),
        "event_data": pa.array([{"type": "earn", "at": dt.datetime(2025, 3, 1, 12, 0, tzinfo=zone)}],
                               pa.struct([("type", pa.string()), ("at", pa.timestamp("ms", tz="+05:30"))]))})
    pq.write_table(table, tmp_path / "e.parquet")
    report = _run(lg, "--events", str(tmp_path / "e.parquet"))
    assert _counts(report) == (1, 1, 0, 0, 0), report
    assert lg.balance("u1")[0] == D(7)
    assert lg.sql("SELECT strftime(event_timestamp AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S') FROM events") == [
        ("2025-03-01T10:00:00",)]


def test_s13_an_ndjson_id_written_as_a_number_is_the_rows_problem_not_another_id_or_the_files(tmp_path):
    """semantics.md 2.2: the ids are strings; 13: a row that breaks the contract is quarantined,
    the rest processed. In NDJSON each value carries its own type: `"external_id": 123` in a
    file of text ids was made the id "123" (and `1.0` the id "1.0", another participant), while
    a file whose every row had a number stopped the run (exit 2, "must be a string column").
    Now such a row is quarantined (`invalid_row`, the line as raw), and a timestamp written as a
    number is `invalid_timestamp`, in either file. By hand: file a: line 1 (u1 earns 1)
    processed; line 2 (external_id 123), line 3 (idempotency_key 7) invalid_row; line 4
    (event_timestamp 1740823200) invalid_timestamp. File b (every row a number id): both rows
    invalid_row, exit 0. Read 6 = 1 completed + 5 rejected."""
    lg = Ledger(tmp_path, program([EARN]))
    good = _row("a", "u1", 1)
    lines = [good, good | {"idempotency_key": "b", "external_id": 123}, good | {"idempotency_key": 7},
             good | {"idempotency_key": "d", "event_timestamp": 1740823200}]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.ndjson").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "in" / "b.ndjson").write_text("".join(json.dumps(good | {"idempotency_key": k, "external_id": 5})
                                                      + "\n" for k in ("e", "f")))
    report = _run(lg, "--events", str(tmp_path / "in"))
    assert _counts(report) == (6, 1, 0, 0, 5), report
    assert lg.balance("u1")[0] == D(1)
    assert lg.sql("SELECT COUNT(*) FROM participants") == [(1,)]
    rows = lg.sql("SELECT source, row_number, reason, message, raw FROM rejected_rows ORDER BY source, row_number")
    assert [(s.rsplit("/", 1)[-1], n, r) for s, n, r, _, _ in rows] == [
        ("a.ndjson", 2, "invalid_row"), ("a.ndjson", 3, "invalid_row"), ("a.ndjson", 4, "invalid_timestamp"),
        ("b.ndjson", 1, "invalid_row"), ("b.ndjson", 2, "invalid_row")], rows
    assert "external_id" in rows[0][3] and "idempotency_key" in rows[1][3], rows
    assert json.loads(rows[0][4]) == lines[1], rows


def test_s2_2_a_file_or_folder_whose_name_has_glob_characters_is_that_path(tmp_path):
    """semantics.md 2.2: a file, a directory or a glob is accepted. A path that exists is that
    path even when its name holds `[`, `*` or `?` (`drop[1]/`, as exports number their runs): it
    was taken as a glob, `[1]` matched the character 1, and the run stopped with "the pattern
    matches no files" (exit 2) for a folder that exists. A glob still works. By hand: the folder
    (u1 earns 5), then its file again (a no-op: the same bytes), then a glob over it (no-op)."""
    lg = Ledger(tmp_path, program([EARN]))
    drop = tmp_path / "drop[1]"
    drop.mkdir()
    pq.write_table(pa.Table.from_pylist([_row("a", "u1", 5)]), drop / "e*.parquet")
    assert _counts(_run(lg, "--events", str(drop))) == (1, 1, 0, 0, 0)
    assert _run(lg, "--events", str(drop / "e*.parquet"))["already_committed"] is True
    assert lg.balance("u1")[0] == D(5)
    glob = _run(lg, "--events", str(tmp_path / "drop?1?" / "*.parquet"))
    assert glob["already_committed"] is True, glob


def test_s2_2_an_external_id_is_at_most_255_characters_as_scrips(tmp_path):
    """scrip-reference 4: a participant's `external_id` is 1-255 characters (semantics.md 2.2 is
    silent on its length; 2.1: participants are identified by it). A 256-character one created
    a participant Scrip cannot hold; now the row is quarantined (`external_id_too_long`, naming
    the column), as a key too long is. Characters, not bytes: 255 `é` (510 bytes) is fine. By
    hand: e1 (255 x) and e2 (255 é) credit 1 each; e3 (256 x) and e4 (recipient of 256 x) are
    rejected; 2 participants."""
    lg = Ledger(tmp_path, program([EARN]))
    rows = [{"key": "e1", "who": "x" * 255, "when": at(1), "data": {"type": "earn", "n": 1}},
            {"key": "e2", "who": "é" * 255, "when": at(1), "data": {"type": "earn", "n": 1}},
            {"key": "e3", "who": "x" * 256, "when": at(1), "data": {"type": "earn", "n": 1}},
            {"key": "e4", "who": "u1", "when": at(1), "data": {"type": "earn", "n": 1},
             "recipient_external_id": "x" * 256}]
    report = lg.run(rows)
    assert _counts(report) == (4, 2, 0, 0, 2), report
    assert lg.sql("SELECT COUNT(*) FROM participants") == [(2,)]
    assert lg.sql("SELECT row_number, reason, message FROM rejected_rows ORDER BY row_number") == [
        (3, "external_id_too_long", "external_id is longer than 255 characters"),
        (4, "external_id_too_long", "recipient_external_id is longer than 255 characters")]


def test_s13_an_operation_file_with_an_events_column_beside_its_own_is_an_input_error(tmp_path):
    """semantics.md 13: a file that cannot be read stops the run with one message naming the
    file and problem, exit 2 (1 is an internal error). An operation file with both `timestamp`
    and `event_timestamp` (or `params` and `event_data`) crashed the run (exit 1, Polars'
    "column 'event_timestamp' is duplicate"): which is the operation's instant is not clear, so
    it is exit 2 naming the file and both columns, and nothing is written."""
    lg = Ledger(tmp_path, program([EARN]))
    base = {"operation": ["adjust"], "program_id": ["shop"], "idempotency_key": ["o1"], "external_id": ["u1"],
            "timestamp": [at(1)], "params": ['{"type": "CREDIT", "asset": "PTS", "amount": "1", "description": "d"}']}
    for extra, words in (({"event_timestamp": [at(2)]}, "timestamp and event_timestamp"),
                         ({"event_data": ["{}"]}, "params and event_data")):
        path = tmp_path / f"ops-{len(words)}.parquet"
        pq.write_table(pa.table(base | extra), path)
        res = _run(lg, "--operations", str(path), expect=2)
        assert path.name in res.stderr and words in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert not lg.db.exists()


def test_s13_a_column_or_field_named_twice_is_the_files_problem_however_the_file_is_read(tmp_path):
    """semantics.md 13 and 1.5: a file that cannot be read stops the run with one message naming
    the file (exit 2, nothing written), whether the batch is read whole or in chunks. A Parquet
    file naming a column twice, or a struct `event_data` naming a field twice, was exit 2 read
    whole but crashed read in chunks (`--chunk-rows`, what a large file gets: exit 1, Polars'
    DuplicateError, or a Rust panic with its backtrace)."""
    lg = Ledger(tmp_path, program([EARN]))
    n = 3
    cols = [pa.array(["shop"] * n), pa.array([f"u{i}" for i in range(n)]), pa.array([f"k{i}" for i in range(n)]),
            pa.array([at(1)] * n)]
    names = ["program_id", "external_id", "idempotency_key", "event_timestamp", "event_data"]
    payload = pa.array([json.dumps({"type": "earn", "n": 1})] * n)
    twice = pa.StructArray.from_arrays([pa.array(["earn"] * n), pa.array([1] * n), pa.array([2] * n)],
                                       names=["type", "n", "n"])
    files = {"columns.parquet": pa.Table.from_arrays([*cols, payload, pa.array(["x"] * n)], names=[*names, "external_id"]),
             "fields.parquet": pa.Table.from_arrays([*cols, twice], names=names)}
    for name, table in files.items():
        pq.write_table(table, tmp_path / name)
        for flags in ((), ("--chunk-rows", "1")):
            res = _run(lg, "--events", str(tmp_path / name), *flags, expect=2)
            assert name in res.stderr and ("twice" in res.stderr or "2 times" in res.stderr), res.stderr
            assert "Traceback" not in res.stderr and "panicked" not in res.stderr, res.stderr
    assert not lg.db.exists()


def test_s3_a_duration_field_of_a_struct_payload_is_refused_not_run_then_unreplayable(tmp_path):
    """semantics.md 3: `replay` rebuilds the ledger from the stored inputs; 13: a file of wrong
    column types stops the run, exit 2. A struct `event_data` with a duration field ran (CEL saw
    a duration) and was stored as ISO 8601 text (`PT5S`), which the typed reading of stored
    payloads cannot take back: `perkflow replay` and `explain` of that ledger crashed (exit 1).
    Such a file is refused as a binary field is, naming the field and what to send instead."""
    import datetime as dt
    lg = Ledger(tmp_path, program([EARN]))
    payload = pa.StructArray.from_arrays([pa.array(["earn"]), pa.array([1]), pa.array([dt.timedelta(seconds=5)],
                                          pa.duration("ms"))], names=["type", "n", "wait"])
    pq.write_table(pa.table({"program_id": ["shop"], "external_id": ["u1"], "idempotency_key": ["k1"],
                             "event_timestamp": [at(1)], "event_data": payload}), tmp_path / "e.parquet")
    res = _run(lg, "--events", str(tmp_path / "e.parquet"), expect=2)
    assert "e.parquet" in res.stderr and "event_data.wait is a duration" in res.stderr, res.stderr
    assert not lg.db.exists()


def test_s2_2_a_glob_naming_hive_partition_folders_reads_the_files_in_them(tmp_path):
    """semantics.md 2.2: a directory (recursively, hive partitions allowed) or a glob is
    accepted. A glob naming partition folders (`landing/date=2025-03-0*`, the days of a range)
    matched only folders and stopped the run ("the pattern matches no files", exit 2). Each
    folder it names is read as a folder is, with its partition values: the `program_id=shop`
    folder gives the rows their program. By hand: days 1 and 2 are read (u1 earns 1 + 2 = 3), day
    10 is not matched (`0*` is days 01-09); `date` is in the quarantined row's raw."""
    lg = Ledger(tmp_path, program([EARN]))
    landing = tmp_path / "landing"
    for day, n in ((1, 1), (2, 2), (10, 4)):
        folder = landing / f"date=2025-03-{day:02d}" / "program_id=shop"
        folder.mkdir(parents=True)
        row = {k: v for k, v in _row(f"k{day}", "u1", n, at(day)).items() if k != "program_id"}
        pq.write_table(pa.Table.from_pylist([row, row | {"idempotency_key": ""}]), folder / "part-0.parquet")
    report = _run(lg, "--events", str(landing / "date=2025-03-0*"))
    assert _counts(report) == (4, 2, 0, 0, 2), report
    assert lg.balance("u1")[0] == D(3)
    raws = [json.loads(r) for (r,) in lg.sql("SELECT raw FROM rejected_rows ORDER BY row_number, source")]
    assert [(r["date"], r["program_id"]) for r in raws] == [("2025-03-01", "shop"), ("2025-03-02", "shop")], raws


def test_s13_a_256_bit_decimal_column_is_read_or_named_not_a_rust_panic(tmp_path):
    """semantics.md 13: a file that cannot be read stops the run with one clear message naming
    the file and problem. A Parquet DECIMAL stored in 256 bits (what Arrow writes past 38
    digits, and Spark or DuckDB for wide decimals) made Polars panic ("operator does not support
    primitive Int256", a Rust backtrace, then exit 2) whatever its digits. One of at most 38
    digits is read as the decimal it is; one of more names the column. By hand: `n` = 2.5 as
    DECIMAL(20, 2) in 256 bits credits 2.5 on a scale-2 asset; a 40-digit extra column: exit 2,
    "column extra is a decimal of 40 digits"."""
    asset = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 2}
    lg = Ledger(tmp_path, program([EARN], [asset]))
    base = {"program_id": ["shop"], "external_id": ["u1"], "idempotency_key": ["k1"], "event_timestamp": [at(1)]}
    wide = pa.StructArray.from_arrays([pa.array(["earn"]), pa.array([D("2.5")], pa.decimal256(20, 2))], names=["type", "n"])
    pq.write_table(pa.table(base | {"event_data": wide}), tmp_path / "ok.parquet")
    pq.write_table(pa.table(base | {"event_data": [json.dumps({"type": "earn", "n": 1})],
                                    "extra": pa.array([D("1.5")], pa.decimal256(40, 2))}), tmp_path / "wide.parquet")
    res = _run(lg, "--events", str(tmp_path / "wide.parquet"), expect=2)
    assert "wide.parquet" in res.stderr and "column extra is a decimal of 40 digits" in res.stderr, res.stderr
    assert "panicked" not in res.stderr and "backtrace" not in res.stderr, res.stderr
    assert _counts(_run(lg, "--events", str(tmp_path / "ok.parquet"))) == (1, 1, 0, 0, 0)
    assert lg.balance("u1")[0] == D("2.5")


def test_s1_7_events_and_operations_given_twice_are_both_read_in_that_order(tmp_path):
    """semantics.md 1.7: every input row ends in exactly one place. `perkflow run --events A
    --events B` read B alone: A's rows were neither processed nor counted, and the run said
    nothing (exit 0). Each flag may be repeated; the inputs are read in the order given (events,
    then operations). By hand: A (u1 earns 1), B (u1 earns 2), operations C and D (adjust 4 and
    8 to u1): read 4, completed 4, u1 has 15."""
    lg = Ledger(tmp_path, program([EARN]))
    for name, key, n in (("a", "a", 1), ("b", "b", 2)):
        pq.write_table(pa.Table.from_pylist([_row(key, "u1", n)]), tmp_path / f"{name}.parquet")
    for name, amount in (("c", "4"), ("d", "8")):
        pq.write_table(pa.Table.from_pylist([{
            "operation": "adjust", "program_id": "shop", "idempotency_key": name, "external_id": "u1",
            "timestamp": at(2), "params": json.dumps({"type": "CREDIT", "asset": "PTS", "amount": amount,
                                                      "description": "x"})}]), tmp_path / f"{name}.parquet")
    report = _run(lg, *(f for x in "ab" for f in ("--events", str(tmp_path / f"{x}.parquet"))),
                  *(f for x in "cd" for f in ("--operations", str(tmp_path / f"{x}.parquet"))))
    assert _counts(report) == (4, 4, 0, 0, 0), report
    assert lg.balance("u1")[0] == D(15)
