"""Bad input, fuzzed (semantics.md 13): hypothesis-generated broken event files and program files.

Every case ends in one of two ways, never a traceback (exit 1 / "internal error" fails the test):
- exit 2 with one clear `error:` message, and the database files byte-for-byte unchanged;
- exit 0 with the broken rows quarantined in `rejected_rows` (each with a reason code) while the
  valid rows are processed; counts reconcile: read = completed + failed + duplicates + rejected.

Most cases run in-process (`engine.cli.main`) for speed; `test_subprocess_sample` sends a fixed
sample of each kind through the real `perkflow` process. Seeds are fixed (derandomized) so CI
sees the same inputs on every run; PERKFLOW_FUZZ_SCALE multiplies the example counts (long profile).
"""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from tests.reliability.harness import cli as cli_subprocess
from tests.reliability.harness import db_files_hash

SCALE = float(os.environ.get("PERKFLOW_FUZZ_SCALE", "1"))
SUMMARY = os.environ.get("PERKFLOW_RELIABILITY_SUMMARY")
COUNTS = {"event_rows": 0, "event_files": 0, "program_files": 0, "bad_rows": 0, "exit0": 0, "exit2": 0}


def examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


PROGRAM = {
    "program": {"key": "shop", "name": "Shop", "on_unknown_participant": "CREATE"},
    "assets": [{"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                "scale": 0}],
    "rules": [
        {"name": "Purchase points", "key": "purchase", "order": 10, "condition": 'event.type == "purchase"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "round(event.amount, 0)"}]},
        {"name": "Visit bonus", "key": "visit", "order": 20,
         "condition": 'event.type == "visit" && size(event.note) < 1000000',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
    ],
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    programs = d / "programs"
    programs.mkdir()
    (programs / "shop.yaml").write_text(yaml.safe_dump(PROGRAM, sort_keys=False))
    db = d / "ledger.duckdb"
    first = d / "first.parquet"
    _write_parquet(first, [_good_row("seed-1"), _good_row("seed-2")])
    code = main(["run", "--programs", str(programs), "--events", str(first), "--db", str(db), "--json"])
    assert code == 0
    yield {"dir": d, "programs": programs, "db": db, "first": first, "n": itertools.count()}
    if SUMMARY:
        path = Path(SUMMARY)
        current = json.loads(path.read_text()) if path.exists() else {}
        current["fuzz"] = dict(COUNTS)
        path.write_text(json.dumps(current, indent=2, sort_keys=True))


def _good_row(key: str, **over) -> dict:
    row = {"program_id": "shop", "idempotency_key": key, "external_id": "alice",
           "event_timestamp": "2025-11-01T10:00:00Z", "event_data": json.dumps({"type": "purchase", "amount": 12.5})}
    row.update(over)
    return row


STRING_COLS = ["program_id", "idempotency_key", "external_id", "participant_id", "event_timestamp", "event_data",
               "recipient_external_id", "recipient_id"]


def _write_parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    if schema is None:
        cols = [c for c in STRING_COLS if any(c in r for r in rows)]
        schema = pa.schema([(c, pa.string()) for c in cols])
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in schema.names} for r in rows], schema=schema), path)
    return path


def run_case(capsys, env, events: Path, programs: Path | None = None) -> tuple[int, dict | None, str]:
    """One `perkflow run`; checks the universal outcome rules and returns (code, report, stderr)."""
    db = env["db"]
    before = db_files_hash(db)
    capsys.readouterr()
    code = main(["run", "--programs", str(programs or env["programs"]), "--events", str(events), "--db", str(db),
                 "--json"])
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err and code != 1, f"exit {code}:\n{err[-4000:]}"
    assert code in (0, 2), f"unexpected exit {code}: {err[-2000:]}"
    if code == 2:
        COUNTS["exit2"] += 1
        assert err.strip().startswith("error:") and len(err.strip()) > 20, err
        assert db_files_hash(db) == before, "a run that stopped with exit 2 changed the database"
        return code, None, err
    COUNTS["exit0"] += 1
    report = json.loads(out.strip().splitlines()[-1])
    assert report["read"] == report["completed"] + report["failed"] + report["duplicates"] + report["rejected"], report
    if not report["already_committed"]:
        con = duckdb.connect(str(db), read_only=True)
        try:
            rej = con.execute("SELECT reason, COUNT(*) FROM rejected_rows WHERE batch_id = ? GROUP BY 1",
                              [report["batch_id"]]).fetchall()
            n_events = con.execute("SELECT COUNT(*) FROM events WHERE batch_id = ?", [report["batch_id"]]).fetchone()[0]
        finally:
            con.close()
        assert sum(c for _, c in rej) == report["rejected"] and all(r for r, _ in rej), rej
        assert n_events == report["completed"] + report["failed"]
        report["reasons"] = {r: c for r, c in rej}
    return code, report, err


# ---------------------------------------------------------------------------------------------
# Event files: rows with one defect each, among valid rows (exit 0, the bad rows quarantined)

huge = st.integers(min_value=10_000, max_value=300_000).map(lambda n: "x" * n)
weird_text = st.one_of(st.text(max_size=40), huge, st.sampled_from(["\x00", "\u202e", "💥" * 50, "'; DROP TABLE events; --"]))

# defect name -> (strategy of row overrides, expected fate: "reject" | "process" | "either")
ROW_DEFECTS = {
    "null_program": (st.just({"program_id": None}), "reject"),
    "empty_program": (st.just({"program_id": ""}), "reject"),
    "unknown_program": (weird_text.filter(lambda s: s not in ("", "shop")).map(lambda s: {"program_id": s}), "reject"),
    "null_key": (st.just({"idempotency_key": None}), "reject"),
    "empty_key": (st.just({"idempotency_key": ""}), "reject"),
    "long_key": (st.integers(256, 5000).map(lambda n: {"idempotency_key": "k" * n}), "reject"),
    "no_participant": (st.just({"external_id": None}), "reject"),
    "null_timestamp": (st.just({"event_timestamp": None}), "reject"),
    "bad_timestamp": (st.one_of(st.text(max_size=30), st.sampled_from([
        "2025-13-01T00:00:00Z", "2025-02-30T00:00:00Z", "2025-11-01T25:00:00Z", "2025-11-01", "2025-11-01T10:00:00",
        "yesterday", "1730000000", "+275760-09-13T00:00:00Z", "99999-01-01T00:00:00Z"])).filter(
        lambda s: not s[:4].isdigit() or "T" not in s or len(s) < 20).map(lambda s: {"event_timestamp": s}), "reject"),
    "extreme_timestamp": (st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                                           "1677-09-21T00:12:43Z", "2262-04-11T23:47:16Z", "1970-01-01T00:00:00Z",
                                           "2025-11-01T10:00:00+14:00", "2025-11-01T10:00:00-12:00"]).map(
        lambda s: {"event_timestamp": s}), "either"),
    "null_data": (st.just({"event_data": None}), "reject"),
    "data_not_json": (st.text(max_size=30).filter(lambda s: not _is_json(s)).map(lambda s: {"event_data": s}), "reject"),
    "data_not_object": (st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                                  st.none(), st.text(max_size=10), st.lists(st.integers(), max_size=3)).map(
        lambda v: {"event_data": json.dumps(v)}), "reject"),
    "nan_amount": (st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda c: {"event_data": '{"type": "purchase", "amount": %s}' % c}), "reject"),
    # (deeper payloads crash the reader: see test_deeply_nested_event_data_is_quarantined)
    "deep_json": (st.integers(20, 300).map(lambda d: {"event_data": '{"a":' * d + "1" + "}" * d}), "either"),
    "huge_amount": (st.sampled_from(["1e308", "-1e308", "1e30", "123456789012345678901234567890", "-0.0", "5e-324"]).map(
        lambda a: {"event_data": '{"type": "purchase", "amount": %s}' % a}), "process"),
    "wrong_amount_type": (st.one_of(st.text(max_size=10), st.booleans(), st.lists(st.integers(), max_size=2),
                                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)).map(
        lambda v: {"event_data": json.dumps({"type": "purchase", "amount": v})}), "process"),
    "huge_string_payload": (huge.map(lambda s: {"event_data": json.dumps({"type": "visit", "note": s})}), "process"),
    "weird_external_id": (weird_text.filter(bool).map(lambda s: {"external_id": s}), "process"),
    "unknown_participant_id": (st.uuids().map(lambda u: {"external_id": None, "participant_id": str(u)}), "process"),
    "empty_object": (st.just({"event_data": "{}"}), "process"),
    # a key twice is ambiguous: invalid_event_data (docs/decisions.md "Input", session 20 round 2)
    "dup_key_json": (st.just({"event_data": '{"type": "purchase", "amount": 1, "amount": 2}'}), "reject"),
}


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
        return True
    except ValueError:
        return False


@st.composite
def event_file_cases(draw):
    """A file of valid rows and rows with defects; sometimes the same key twice (duplicate or conflict)."""
    n_good = draw(st.integers(0, 4))
    defects = draw(st.lists(st.sampled_from(sorted(ROW_DEFECTS)), min_size=1, max_size=5))
    rows, fates = [], []
    for _ in range(n_good):
        rows.append({"type": "purchase", "amount": draw(st.floats(0, 500).map(lambda x: round(x, 2)))})
        fates.append("process")
    for d in defects:
        rows.append((d, draw(ROW_DEFECTS[d][0])))
        fates.append(ROW_DEFECTS[d][1])
    dup = draw(st.sampled_from([None, "same", "conflict"]))
    fmt = draw(st.sampled_from(["parquet", "parquet", "parquet", "ndjson", "csv"]))
    order = draw(st.permutations(range(len(rows))))
    return [rows[i] for i in order], [fates[i] for i in order], dup, fmt


def _materialise(env, rows_spec, dup) -> tuple[list[dict], list[str]]:
    n = next(env["n"])
    rows = []
    for i, spec in enumerate(rows_spec):
        base = _good_row(f"case{n}-row{i}", external_id=f"user{i % 3}")
        if isinstance(spec, tuple):
            base.update(spec[1])
        else:
            base["event_data"] = json.dumps(spec)
        rows.append(base)
    extra = []
    if dup and rows:
        # repeat a valid row (a repeated rejected row would be a first occurrence, not a duplicate)
        first = next((r for r, spec in zip(rows, rows_spec) if not isinstance(spec, tuple)), None)
        if first is not None:
            again = dict(first)
            if dup == "conflict":
                again["event_data"] = json.dumps({"type": "purchase", "amount": 999.0})
            rows.append(again)
            extra.append(dup)
    return rows, extra


def _write_any(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "parquet":
        return _write_parquet(path.with_suffix(".parquet"), rows)
    if fmt == "ndjson":
        p = path.with_suffix(".ndjson")
        p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return p
    import csv

    p = path.with_suffix(".csv")
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=STRING_COLS[:6])
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in STRING_COLS[:6]})
    return p


@examples(50)
@given(case=event_file_cases())
def test_fuzzed_rows_are_quarantined(env, capsys, case):
    specs, fates, dup, fmt = case
    rows, extra = _materialise(env, specs, dup)
    path = _write_any(env["dir"] / f"rows{next(env['n'])}", rows, fmt)
    COUNTS["event_files"] += 1
    COUNTS["event_rows"] += len(rows)
    COUNTS["bad_rows"] += sum(1 for s in specs if isinstance(s, tuple))
    code, report, err = run_case(capsys, env, path)
    if fmt == "csv" and code == 2:
        return  # CSV cannot hold some values (NUL bytes, nulls vs empty): the file may be unreadable as a whole
    assert code == 0, f"a file with valid columns stopped the run: {err}"
    assert report["read"] == len(rows)
    must_reject = sum(1 for f in fates if f == "reject")
    must_process = sum(1 for f in fates if f == "process")
    conflicts = extra.count("conflict")
    processed = report["completed"] + report["failed"]
    if fmt == "parquet":
        assert report["rejected"] >= must_reject + conflicts, report
        assert processed + report["duplicates"] >= must_process - conflicts, report
    assert report["duplicates"] <= extra.count("same")


# ---------------------------------------------------------------------------------------------
# Event files that cannot be read at all (exit 2, nothing written) -- or odd but readable ones

def _table(cols: dict[str, pa.Array]) -> pa.Table:
    return pa.table(cols)


def _base_cols(n=2):
    return {
        "program_id": pa.array(["shop"] * n),
        "idempotency_key": pa.array([f"f{i}" for i in range(n)]),
        "external_id": pa.array(["bob"] * n),
        "event_timestamp": pa.array(["2025-11-01T10:00:00Z"] * n),
        "event_data": pa.array(['{"type": "purchase", "amount": 3}'] * n),
    }


WRONG_TYPES = {
    "int": lambda n: pa.array(list(range(n)), pa.int64()),
    "float": lambda n: pa.array([1.5] * n, pa.float64()),
    "bool": lambda n: pa.array([True] * n),
    "binary": lambda n: pa.array([b"\xff\xfe"] * n, pa.binary()),
    "list": lambda n: pa.array([["a"]] * n, pa.list_(pa.string())),
    "date": lambda n: pa.array([0] * n, pa.date32()),
    "null": lambda n: pa.nulls(n),
    "dict": lambda n: pa.array(["shop"] * n).dictionary_encode(),
    "struct": lambda n: pa.array([{"a": 1}] * n),
    "ts_naive": lambda n: pa.array([1_761_991_200_000_000] * n, pa.timestamp("us")),
    "ts_tz": lambda n: pa.array([1_761_991_200_000] * n, pa.timestamp("ms", "Europe/Paris")),
    "large_string": lambda n: pa.array(["shop"] * n, pa.large_string()),
}


def _invalid_utf8_string_array(n: int) -> pa.Array:
    data = b"\xff\xfe\xc3\x28" * n
    offsets = pa.array([4 * i for i in range(n + 1)], pa.int32()).buffers()[1]
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(data)])


@st.composite
def bad_files(draw):
    # (invalid UTF-8 inside a Parquet string column crashes the run: test_invalid_utf8_in_parquet_column)
    kind = draw(st.sampled_from(["missing_column", "wrong_type", "garbage_bytes", "truncated", "empty_file",
                                 "no_rows", "extra_columns", "ndjson_broken", "csv_broken",
                                 "struct_payload"]))
    n = draw(st.integers(1, 4))
    cols = _base_cols(n)
    if kind == "missing_column":
        drop = draw(st.lists(st.sampled_from(sorted(cols)), min_size=1, max_size=3, unique=True))
        return kind, _parquet_bytes(_table({k: v for k, v in cols.items() if k not in drop}))
    if kind == "wrong_type":
        col = draw(st.sampled_from(sorted(cols)))
        cols[col] = WRONG_TYPES[draw(st.sampled_from(sorted(WRONG_TYPES)))](n)
        return kind, _parquet_bytes(_table(cols))
    if kind == "garbage_bytes":
        return kind, draw(st.binary(max_size=300))
    if kind == "truncated":
        full = _parquet_bytes(_table(cols))
        return kind, full[: draw(st.integers(0, len(full) - 1))]
    if kind == "empty_file":
        return kind, b""
    if kind == "invalid_utf8":
        col = draw(st.sampled_from(sorted(cols)))
        cols[col] = _invalid_utf8_string_array(n)
        return kind, _parquet_bytes(_table(cols))
    if kind == "no_rows":
        return kind, _parquet_bytes(_table({k: v.slice(0, 0) for k, v in cols.items()}))
    if kind == "extra_columns":
        cols["surprise"] = pa.array([draw(st.integers(-2**63, 2**63 - 1))] * n)  # a Parquet int64 column
        cols["__index_level_0__"] = pa.array(list(range(n)))
        return kind, _parquet_bytes(_table(cols))
    if kind == "ndjson_broken":
        lines = draw(st.lists(st.one_of(st.text(max_size=30), st.just('{"program_id": "shop"'),
                                        st.just(json.dumps(_good_row("nd"))), st.just("[1,2]"), st.just("null")),
                              min_size=1, max_size=4))
        return kind, "\n".join(lines).encode("utf-8", "surrogatepass")
    if kind == "csv_broken":
        head = draw(st.sampled_from(["program_id,idempotency_key", "a,b,c",
                                     "program_id,idempotency_key,external_id,event_timestamp,event_data"]))
        body = draw(st.lists(st.text(max_size=30), max_size=3))
        return kind, (head + "\n" + "\n".join(body)).encode("utf-8", "surrogatepass")
    # struct payloads with odd field types: NaN/inf floats, huge ints, nested lists
    vals = draw(st.lists(st.one_of(st.floats(), st.integers(-2**63, 2**63 - 1)), min_size=n, max_size=n))
    cols["event_data"] = pa.array([{"type": "purchase", "amount": float(v)} for v in vals])
    return kind, _parquet_bytes(_table(cols))


def _parquet_bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


SUFFIX = {"ndjson_broken": ".ndjson", "csv_broken": ".csv"}


@examples(120)
@given(case=bad_files())
def test_fuzzed_files(env, capsys, case):
    kind, data = case
    path = env["dir"] / f"file{next(env['n'])}{SUFFIX.get(kind, '.parquet')}"
    path.write_bytes(data)
    COUNTS["event_files"] += 1
    code, report, err = run_case(capsys, env, path)
    if kind in ("missing_column", "garbage_bytes", "truncated", "empty_file"):
        assert code == 2 and path.name in "".join(err.split()), err
    if kind in ("extra_columns", "struct_payload"):
        assert code == 0, err


# ---------------------------------------------------------------------------------------------
# Program files (exit 2, nothing written)

def _mutations():
    cel_garbage = st.text(alphabet="abe.()[]{}\"'!=&|<>+-*/%?:, 0123456789_\\", min_size=1, max_size=40)
    enum_fields = [
        (("program", "status"), ["Active", "DELETED", "", 1]),
        (("program", "on_unknown_participant"), ["create", "IGNORE", True]),
        (("assets", 0, "inventory_mode"), ["lot", "FIFO", "", 3]),
        (("assets", 0, "issuance_policy"), ["LIMITED", "unlimited"]),
        (("rules", 0, "actions", 0, "type"), ["GIVE", "credit", "", 0]),
        (("rules", 0, "status"), ["ON", "active"]),
    ]
    unknown_at = [("program",), ("assets", 0), ("rules", 0), ("rules", 0, "actions", 0), ()]
    return st.one_of(
        st.tuples(st.just("unknown_field"), st.sampled_from(unknown_at),
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
                      lambda k: k not in {"key", "name", "status", "symbol", "type", "order", "scale", "condition",
                                          "amount", "asset", "actions", "rules", "assets", "program", "tiers",
                                          "rewards", "automations", "description", "budgets", "value", "tag",
                                          "bucket", "target", "delay", "payload", "tier", "level", "reference_id",
                                          "expires_at", "matures_at", "reset_after", "event_name", "stop_after_match",
                                          "active_from", "active_to", "on_unknown_participant", "inventory_mode",
                                          "issuance_policy", "max_transaction_amount", "allow_negative",
                                          "asset_id"})),
        st.tuples(st.just("bad_enum"), st.sampled_from(range(len(enum_fields))), st.integers(0, 3)).map(
            lambda t: ("bad_enum", enum_fields[t[1]][0], enum_fields[t[1]][1][t[2] % len(enum_fields[t[1]][1])])),
        st.tuples(st.just("cel_syntax"), st.sampled_from(["condition", "amount"]), cel_garbage),
        st.tuples(st.just("unknown_asset"), st.sampled_from(["action", "budget"]),
                  st.text(alphabet="ABCXYZ", min_size=1, max_size=6).filter(lambda s: s != "PTS")),
        st.tuples(st.just("duplicate_order"), st.integers(1, 10**6), st.just(None)),
        st.tuples(st.just("over_limit"), st.sampled_from(["long", "deep", "nested_unbounded", "deep_list",
                                                          "deep_calls"]), st.integers(0, 50)),
        st.tuples(st.just("bad_value"), st.sampled_from([
            (("assets", 0, "scale"), 19), (("assets", 0, "scale"), -1), (("assets", 0, "scale"), "two"),
            (("rules", 0, "order"), 0), (("rules", 0, "order"), "first"), (("rules", 0, "actions"), []),
            (("rules",), {"a": 1}), (("rules", 0, "actions", 0, "amount"), "ten points"),
            (("rules", 0, "name"), ""), (("rules", 0, "active_from"), "2025-01-01T00:00:00"),
            (("rules", 0, "budgets"), [{"asset": "PTS", "limit": "-5"}]),
            (("rules", 0, "budgets"), [{"asset": "PTS", "limit": "10", "schedule_type": "INTERVAL",
                                        "interval": "soon"}]),
            (("assets", 0, "max_transaction_amount"), "lots"), (("program", "key"), "Not A Slug"),
            (("assets",), [PROGRAM["assets"][0], {**PROGRAM["assets"][0], "scale": 2}]),
        ]), st.just(None)),
        st.tuples(st.just("invalid_yaml"), st.sampled_from(["text", "tabs", "unclosed", "list", "scalar", "empty",
                                                            "binary", "json_broken"]), st.text(max_size=60)),
    )


def _set(doc, path, value):
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def _over_limit(kind: str, n: int) -> str:
    if kind == "long":
        return "event.amount > 0.0 && " + " && ".join(["event.type == \"purchase\""] * (200 + n))
    if kind == "deep":  # (parentheses alone are not nesting: they leave no node behind)
        return "1 + (" * (40 + n) + "1" + ")" * (40 + n) + " > 0"
    if kind == "deep_list":
        return "[" * (40 + n) + "]" * (40 + n) + " == []"
    if kind == "deep_calls":
        return "int(" * (40 + n) + "1" + ")" * (40 + n) + " > 0"
    return "event.items.exists(x, event.items.exists(y, event.items.exists(z, x == y)))"


def _program_text(mut) -> tuple[str, str]:
    """(file suffix, text) of a program file with one defect."""
    kind, a, b = mut
    doc = json.loads(json.dumps(PROGRAM))
    if kind == "unknown_field":
        target = doc
        for p in a:
            target = target[p]
        target[b] = "surprise"
    elif kind == "bad_enum":
        _set(doc, a, b)
    elif kind == "cel_syntax":
        if a == "condition":
            doc["rules"][0]["condition"] = "event.type == " + b + " &&"
        else:
            doc["rules"][0]["actions"][0]["amount"] = "event.amount * (" + b
    elif kind == "unknown_asset":
        if a == "action":
            doc["rules"][0]["actions"][0]["asset"] = b
        else:
            doc["rules"][0]["budgets"] = [{"asset": b, "limit": "100"}]
    elif kind == "duplicate_order":
        doc["rules"][0]["order"] = doc["rules"][1]["order"] = a
    elif kind == "over_limit":
        doc["rules"][0]["condition"] = _over_limit(a, b)
    elif kind == "bad_value":
        _set(doc, a[0], a[1])
    elif kind == "invalid_yaml":
        text = {
            "text": "program: [unclosed\n  key: " + b,
            "tabs": "program:\n\tkey: shop\n\tname: " + b,
            "unclosed": 'program: {key: "shop", name: "' + b.replace('"', ""),
            "list": "- program\n- " + json.dumps(b),
            "scalar": json.dumps(b) if b else "42",
            "empty": "",
            "binary": "\x00\x01\x02" + b,
            "json_broken": '{"program": {"key": "shop",, ' + json.dumps(b),
        }[a]
        return (".json" if a == "json_broken" else ".yaml"), text
    return ".yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@examples(330)
@given(mut=_mutations())
def test_fuzzed_program_files(env, capsys, mut):
    suffix, text = _program_text(mut)
    folder = env["dir"] / f"prog{next(env['n'])}"
    folder.mkdir()
    (folder / f"shop{suffix}").write_bytes(text.encode("utf-8", "surrogatepass"))
    COUNTS["program_files"] += 1
    # the events are already committed: a program file that loads makes the run a no-op
    code, report, err = run_case(capsys, env, env["first"], programs=folder)
    must_fail = mut[0] in ("unknown_field", "bad_enum", "unknown_asset", "duplicate_order", "over_limit", "bad_value")
    if must_fail:
        assert code == 2, f"{mut} was accepted"
    if code == 0:
        assert report["already_committed"], report


# ---------------------------------------------------------------------------------------------
# A fixed sample of each kind through the real process

def test_subprocess_sample(env, tmp_path):
    cases = {
        "missing_column": _parquet_bytes(_table({k: v for k, v in _base_cols().items() if k != "event_data"})),
        "wrong_type": _parquet_bytes(_table(_base_cols() | {"event_timestamp": WRONG_TYPES["int"](2)})),
        "garbage": b"PAR1\x00\x00garbage",
    }
    mixed = tmp_path / "mixed.parquet"
    _write_parquet(mixed, [_good_row("sp-1"), _good_row("sp-2", event_timestamp="never"),
                           _good_row("sp-3", event_data='{"type": "purchase", "amount": NaN}'),
                           _good_row("sp-4", program_id="nope"), _good_row("sp-5", idempotency_key="k" * 300)])
    db = env["db"]
    for name, data in cases.items():
        f = tmp_path / f"{name}.parquet"
        f.write_bytes(data)
        before = db_files_hash(db)
        r = cli_subprocess("run", "--programs", str(env["programs"]), "--events", str(f), "--db", str(db), "--json")
        assert r.code in (0, 2) and "internal error" not in r.stderr and "Traceback" not in r.stderr, (name, r)
        if r.code == 2:
            assert db_files_hash(db) == before and "error:" in r.stderr
        COUNTS["event_files"] += 1
    bad_prog = tmp_path / "prog" / "shop.yaml"
    bad_prog.parent.mkdir()
    bad_prog.write_text(yaml.safe_dump({**PROGRAM, "rules": [{**PROGRAM["rules"][0], "condition": "event.type =="}]}))
    before = db_files_hash(db)
    r = cli_subprocess("run", "--programs", str(bad_prog.parent), "--events", str(mixed), "--db", str(db), "--json")
    assert r.code == 2 and "condition" in r.stderr and db_files_hash(db) == before, r
    COUNTS["program_files"] += 1
    r = cli_subprocess("run", "--programs", str(env["programs"]), "--events", str(mixed), "--db", str(db), "--json")
    assert r.code == 0, r
    rep = r.report
    assert (rep["read"], rep["completed"] + rep["failed"], rep["rejected"]) == (5, 1, 4), rep
    con = duckdb.connect(str(db), read_only=True)
    try:
        reasons = sorted(x[0] for x in con.execute("SELECT reason FROM rejected_rows WHERE batch_id = ?",
                                                   [rep["batch_id"]]).fetchall())
    finally:
        con.close()
    assert reasons == ["idempotency_key_too_long", "invalid_event_data", "invalid_timestamp", "unknown_program"]
    COUNTS["event_files"] += 1
    COUNTS["bad_rows"] += 4


# ---------------------------------------------------------------------------------------------
# Regressions for engine bugs the fuzzer found

def test_deeply_nested_event_data_is_quarantined(tmp_path):
    """Was: JSON nested ~600 deep overflowed strip_nulls' recursion (exit 1) or crashed pa.array."""
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "shop.yaml").write_text(yaml.safe_dump(PROGRAM, sort_keys=False))
    events = _write_parquet(tmp_path / "deep.parquet", [
        _good_row("deep-ok"), _good_row("deep-bad", event_data='{"a":' * 600 + "1" + "}" * 600)])
    db = tmp_path / "deep.duckdb"
    r = cli_subprocess("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json")
    assert r.code == 0, r.stderr[-500:]
    assert (r.report["completed"], r.report["rejected"]) == (1, 1)


@pytest.mark.parametrize("column", ["event_data", "external_id"])
def test_invalid_utf8_in_parquet_column(tmp_path, column):
    """Was: invalid UTF-8 went unnoticed until a pyo3 panic or DuckDB's 'Invalid unicode' (exit 1)."""
    programs = tmp_path / "programs"
    programs.mkdir()
    (programs / "shop.yaml").write_text(yaml.safe_dump(PROGRAM, sort_keys=False))
    events = tmp_path / "utf8.parquet"
    events.write_bytes(_parquet_bytes(_table(_base_cols() | {column: _invalid_utf8_string_array(2)})))
    db = tmp_path / "utf8.duckdb"
    r = cli_subprocess("run", "--programs", str(programs), "--events", str(events), "--db", str(db), "--json")
    assert r.code in (0, 2) and "Traceback" not in r.stderr, r.stderr[-500:]
    if r.code == 2:
        assert "utf8.parquet" in r.stderr and "UTF-8" in r.stderr and not db.exists()
