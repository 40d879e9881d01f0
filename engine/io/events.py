"""Reading event files into one normalised frame, with the row-level contract of semantics.md 2.2.

File-level problems (not readable, missing columns, wrong column types) raise `InputError` naming
the file: the run stops before writing anything. Row-level problems set `reject_reason` and
`reject_message` on the row, which the run quarantines while processing the rest.

The `event` column is a Polars Struct whenever the payloads share one typing (the vectorised path
can read it); otherwise it is an Object column of dicts and every rule takes the row path. JSON
payloads follow CEL's JSON mapping: every number is a double. In both forms a null field is an
absent field.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import re
from collections.abc import Iterator
from datetime import datetime, time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine import durations
from engine.cel.values import CelUint
from engine.errors import InputError
from engine.io import payload_types

from .files import expand, hive_values

REQUIRED = ("program_id", "idempotency_key", "event_timestamp", "event_data")
STRING_COLUMNS = ("program_id", "external_id", "participant_id", "idempotency_key",
                  "recipient_external_id", "recipient_id")
OPTIONAL = ("external_id", "participant_id", "recipient_external_id", "recipient_id")
MAX_KEY_LENGTH = 255
MAX_DEPTH = 64  # payloads nested deeper are quarantined: no loyalty event needs more
TS = pl.Datetime("us", "UTC")

#: Columns of the normalised frame, in order. Operation files (semantics.md 2.3) are read into the
#: same frame: `timestamp` becomes event_timestamp, `params` becomes the payload, and `operation`
#: names the operation (null for events), so that intake and idempotency serve both. The parsed
#: payload is `event` for an event (a Struct column where the files agree, else Object) and
#: `params` for an operation (Object: dicts, only the kernel reads them): an operation's params
#: in `event` made it Object for the whole batch, and every rule of a batch with operations took
#: the row path.
COLUMNS = ("source", "row_number", "arrival", "kind", "operation", "program_id", "external_id", "participant_id",
           "idempotency_key", "event_timestamp", "event", "params", "event_json", "event_type", "recipient_external_id",
           "recipient_id", "reject_reason", "reject_message", "raw")
OPERATION_RENAMES = {"timestamp": "event_timestamp", "params": "event_data"}


def no_rows() -> pl.DataFrame:
    """That frame with no rows: the input of a chunk of SYSTEM events alone (`perkflow maintain`
    processing the scheduled ones that are due)."""
    types = {"row_number": pl.Int64, "arrival": pl.Int64, "event_timestamp": TS, "event": pl.Object, "params": pl.Object}
    return pl.DataFrame(schema={c: types.get(c, pl.String) for c in COLUMNS})


def read_events(spec: str | Path, kind: str = "event") -> pl.DataFrame:
    """Event files (kind "event") or operation files (kind "operation") into the normalised frame."""
    return read_inputs([(spec, kind)])


def read_inputs(inputs: list[tuple[str | Path, str]]) -> pl.DataFrame:
    """Several inputs (spec, kind) into one frame, in arrival order: input by input, file by file."""
    return _joined([_read_file(f, root, kind) for spec, kind in inputs for f, root in expand(spec)], 0)


def _joined(frames: list[pl.DataFrame], arrival: int) -> pl.DataFrame:
    """Frames read in arrival order as one, numbered in arrival order from `arrival`."""
    return joined(frames).with_columns(arrival=pl.int_range(pl.len(), dtype=pl.Int64) + arrival)


def joined(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Normalised frames of several files as one (their payload columns unified)."""
    frames = _unify_events(frames)
    return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]


def streamable(inputs: list[tuple[str | Path, str]], rows: int) -> bool:
    """Can these inputs be read `rows` at a time? Yes when they are Parquet files (events and
    operations) of more than `rows` rows in all whose columns pass the file-level checks (so
    that a bad file still fails before the ledger is opened). Files in stream order are read as
    they are (`read_chunks`); others are put in stream order through a spill folder first
    (engine/io/reorder.py). CSV and NDJSON are read whole and ordered in memory."""
    files = [(f, root, kind) for spec, kind in inputs for f, root in expand(spec)]
    if any(f.suffix.lower() not in (".parquet", ".pq") for f, _, _ in files):
        return False
    try:
        if sum(pq.ParquetFile(f).metadata.num_rows for f, _, _ in files) <= rows:
            return False
        for f, root, kind in files:
            _normalise(arrow_frame(pq.read_schema(f).empty_table()), f, root, kind, 0)
    except (InputError, pa.ArrowException, OSError, KeyError, ValueError):
        return False  # the whole read reports the problem, before the ledger is opened
    return True


def row_bytes(inputs: list[tuple[str | Path, str]]) -> float | None:
    """The average uncompressed size of a row of these Parquet inputs, from their footers (None:
    not all Parquet, or unreadable: `streamable` decides those)."""
    try:
        metas = [pq.ParquetFile(f).metadata for spec, _ in inputs for f, _root in expand(spec)]
    except (pa.ArrowException, OSError, ValueError, InputError):
        return None
    rows = sum(m.num_rows for m in metas)
    if not rows:
        return None
    return sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups)) / rows


def in_stream_order(inputs: list[tuple[str | Path, str]]) -> bool:
    """Is the arrival order of these (`streamable`) files already the stream order of
    semantics.md 3: timestamps never decrease, file after file (what a generator, an export or
    a daily partition gives)? Rows without a valid timestamp are quarantined wherever they are."""
    last = None
    for spec, kind in inputs:
        for f, _root in expand(spec):
            ts = _valid_timestamps(f, kind)
            if len(ts) == 0:
                continue
            if not ts.is_sorted() or (last is not None and ts[0] < last):
                return False
            last = ts[-1]
    return True


def time_span(spec: str | Path) -> tuple[int, datetime | None, datetime | None] | None:
    """(rows, first, last valid timestamp) of an input of Parquet event files, without reading
    more than its timestamp column; None when it has a file of another kind or one that cannot be
    read (reading it whole reports that)."""
    try:
        files = [f for f, _root in expand(spec)]
        if any(f.suffix.lower() not in (".parquet", ".pq") for f in files):
            return None
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        ts = pl.concat([_valid_timestamps(f, "event") for f in files])
    except (InputError, pa.ArrowException, OSError, KeyError, pl.exceptions.PolarsError):
        return None
    return rows, ts.min(), ts.max()


def _valid_timestamps(f: Path, kind: str) -> pl.Series:
    """A Parquet file's valid row timestamps, in file order (rows without one are quarantined)."""
    column = "timestamp" if kind == "operation" else "event_timestamp"
    ts, _ = _timestamps(f, arrow_frame(pq.read_table(f, columns=[column])).to_series())
    return ts.drop_nulls()


def read_chunks(inputs: list[tuple[str | Path, str]], rows: int) -> Iterator[pl.DataFrame]:
    """The inputs of a `streamable` batch `in_stream_order` as frames of at least `rows` rows (the last may be
    smaller), in arrival order, each numbered in arrival order where the previous one stopped:
    their concatenation is `read_inputs(inputs)`. Memory held is a chunk, not the batch."""
    pending: list[pl.DataFrame] = []
    arrival = held = 0
    for spec, kind in inputs:
        for f, root in expand(spec):
            first = 0
            try:
                batches = pq.ParquetFile(f).iter_batches(batch_size=rows)
                for batch in batches:
                    table = pa.Table.from_batches([batch])
                    _check_utf8(table)
                    pending.append(_normalise(arrow_frame(table), f, root, kind, first))
                    first += len(table)
                    held += len(table)
                    if held >= rows:
                        yield _joined(pending, arrival)
                        arrival, pending, held = arrival + held, [], 0
            except (pa.ArrowException, OSError, ValueError) as e:
                raise InputError(f"{f}: cannot be read as Parquet: {e}") from None
    if pending or arrival == 0:
        yield _joined(pending, arrival)


#: A line of an NDJSON file that is not a JSON object: a malformed row (semantics.md 13).
BAD_LINE = "invalid_row"


def _load(file: Path) -> tuple[pl.DataFrame, pl.Series | None, list[tuple[int, str, str]]]:
    """A file's rows as read; for NDJSON also the row number of each (its line among the non-blank
    ones) and its lines that are not JSON objects, as (row number, problem, line): those are
    quarantined one by one, the file's other rows processed (semantics.md 13). A file none of
    whose lines is a JSON object is no NDJSON file: it cannot be read."""
    suffix = file.suffix.lower()
    try:
        if suffix in (".ndjson", ".jsonl"):
            # Read payloads as text so that they follow the same JSON path as string columns.
            # An operation's `params` likewise (a JSON null is a missing value, as in Parquet).
            rows, numbers, bad, objects = _ndjson_rows(file)
            if bad and not objects:
                raise ValueError(bad[0][1])
            if not rows:  # an empty file (or blank lines), or no valid row: no columns to check
                return _no_columns(), pl.Series([], dtype=pl.Int64), bad
            for r in rows:
                for name in ("event_data", "params"):
                    if r.get(name) is not None and not isinstance(r[name], str):
                        r[name] = json.dumps(r[name])
            return pl.DataFrame(rows, infer_schema_length=None), pl.Series(numbers, dtype=pl.Int64), bad
        if suffix == ".csv":
            return _csv_rows(file)
        # ParquetFile, not pq.read_table: one file needs no dataset layer, and importing
        # pyarrow.dataset (with pyarrow.compute) costs ~75 ms CPU of every small run
        with pq.ParquetFile(file) as pf:
            table = pf.read()
        _check_utf8(table)
        return arrow_frame(table), None, []
    except Exception as e:  # noqa: BLE001 - any reader failure is "cannot be read"
        kind = {".csv": "CSV", ".ndjson": "NDJSON", ".jsonl": "NDJSON"}.get(suffix, "Parquet")
        if suffix == ".json":
            # Scrip's ingest bodies saved as they are (`{"events": [...]}` of POST /v1/events/batch,
            # or one event): read as Parquet, they said only "magic bytes not found"
            raise InputError(f"{file}: a .json file is not an event or operation file (Parquet, NDJSON or CSV; "
                             "a file of another suffix is read as Parquet); write one JSON object per line into a "
                             ".ndjson file, e.g. each item of Scrip's batch body {\"events\": [...]}") from None
        raise InputError(f"{file}: cannot be read as {kind}: {e}") from None


def _ndjson_rows(file: Path) -> tuple[list[dict], list[int], list[tuple[int, str, str]], int]:
    """The objects of an NDJSON file (blank lines skipped), their row numbers, (row number,
    problem, line) of each line that is not a JSON object or names an id by no text, named by
    its line number in the file, and how many lines were JSON objects.
    Such a line stopped the whole run (exit 2) until session 19, while semantics.md 13
    quarantines a malformed row and processes the file's valid rows."""
    rows, numbers, bad = [], [], []
    row = objects = 0
    for n, line in enumerate(file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        row += 1
        try:
            obj = json.loads(line, object_pairs_hook=unique_object)
        except json.JSONDecodeError as e:
            bad.append((row, f"line {n} is not valid JSON: {e.msg} (column {e.colno})", line))
            continue
        except DuplicateKey as e:
            bad.append((row, f"line {n}: {e}", line))
            continue
        if not isinstance(obj, dict):
            bad.append((row, f"line {n} is not a JSON object", line))
            continue
        objects += 1
        if wrong := next((c for c in (*STRING_COLUMNS, "operation") if obj.get(c) is not None
                          and not isinstance(obj[c], str)), None):
            # an id written as a JSON number or boolean is no text: Polars made `123` the id
            # "123" (and `1.0` "1.0") in a file of text ids, and stopped the run (exit 2) where
            # every row had one; it is this row's problem (a timestamp's: invalid_timestamp)
            bad.append((row, f"line {n}: {wrong} must be text (a JSON string), got {_json_kind(obj[wrong])}", line))
            continue
        for c in ("event_timestamp", "timestamp"):
            if obj.get(c) is not None and not isinstance(obj[c], str):
                obj[c] = json.dumps(obj[c])  # not RFC 3339 text: quarantined as invalid_timestamp
        rows.append(obj)
        numbers.append(row)
    return rows, numbers, bad, objects


def _csv_rows(file: Path) -> tuple[pl.DataFrame, pl.Series, list[tuple[int, str, str]]]:
    """A CSV file's rows as text (an empty cell is a missing value), their row numbers (their
    place among the non-blank records after the header), and (row number, problem, line) of each
    record whose field count is not the header's: such a row is quarantined with its lines as
    written, the file's other rows processed (semantics.md 13), as an NDJSON line that is no JSON
    object is. It stopped the whole run (too many fields: exit 2), or was padded with nulls (too
    few) and processed with its fields possibly shifted. A file with nothing in it is no rows."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a payload may pass 128 KiB
    lines = list(io.StringIO(file.read_text(encoding="utf-8-sig"), newline=""))
    records = csv.reader(lines)
    header = next(records, None)
    while header is not None and not "".join(header).strip():  # blank lines before the header
        header = next(records, None)
    if header is None:
        return _no_columns(), pl.Series([], dtype=pl.Int64), []
    if len(set(header)) != len(header):
        raise ValueError(f"the header names a column twice: {', '.join(sorted({h for h in header if header.count(h) > 1}))}")
    good: list[list[str]] = []
    numbers, bad = [], []
    row, last = 0, records.line_num
    for fields in records:
        first, last = last + 1, records.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):  # a blank line, as in NDJSON
            continue
        row += 1
        if len(fields) != len(header):
            bad.append((row, f"line {first} has {len(fields)} fields, the header has {len(header)}",
                        "".join(lines[first - 1:last]).rstrip("\r\n")))
            continue
        good.append(fields)
        numbers.append(row)
    frame = pl.DataFrame(good, schema={h: pl.String for h in header}, orient="row")
    frame = frame.with_columns(pl.all().replace("", None))  # an empty cell is a missing value
    return frame, pl.Series(numbers, dtype=pl.Int64), bad


def _no_columns() -> pl.DataFrame:
    """An empty NDJSON or CSV file (0 bytes, or blank lines): no rows, and no columns to check
    (`_read_file`). Such a file stopped the run (exit 2: "missing required column(s)", "empty
    CSV"), so one empty file in a day's drop lost the others' rows for that run."""
    return pl.DataFrame()


def arrow_frame(table: pa.Table) -> pl.DataFrame:
    """A Parquet file's Arrow table as a Polars frame. A timestamp labelled with a fixed offset
    (`+05:30`, as pandas and Spark label one) is relabelled UTC first, at any depth: Arrow holds
    its values as UTC instants, so that changes no value, and Polars refuses the label (such a
    file was unreadable, exit 2). The reader reads every instant in UTC anyway."""
    if twice := _named_twice(list(table.schema), ""):
        # a column or struct field named twice: the file's problem, whichever way it is read (a
        # file read in chunks stopped the run with Polars' own error or panic, exit 1)
        raise ValueError(f"{twice} is named twice")
    schema = pa.schema([f.with_type(_readable(f.type, f.name)) for f in table.schema], metadata=table.schema.metadata)
    try:
        return pl.from_arrow(table if schema == table.schema else table.cast(schema))
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as e:  # what else Polars refuses
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _named_twice(fields: list[pa.Field], path: str) -> str | None:
    """The first column or struct field (at any depth, `event_data.n`) whose name its level repeats."""
    names = [f.name for f in fields]
    if dup := next((n for n in names if names.count(n) > 1), None):
        return f"column {path}{dup}" if not path else f"field {path}{dup}"
    for f in fields:
        t = f.type
        while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            t = t.value_type
        if pa.types.is_struct(t) and (found := _named_twice(list(t), f"{path}{f.name}.")):
            return found
    return None


def _readable(t: pa.DataType, path: str) -> pa.DataType:
    """`t` as Polars can take it (at any depth; `path` names the column or field): a timestamp
    labelled with a fixed offset relabelled UTC (`arrow_frame`), a 256-bit decimal of at most 38
    digits as the 128-bit one it fits (Polars panicked on any: "operator does not support
    primitive Int256", 30 lines of Rust backtrace before exit 2). More digits than the ledger's
    DECIMAL(38, 18) holds make the file unreadable, naming the column."""
    if pa.types.is_timestamp(t):
        return pa.timestamp(t.unit, "UTC") if t.tz and t.tz[0] in "+-" else t
    if pa.types.is_decimal256(t):
        if t.precision > 38:
            raise ValueError(f"column {path} is a decimal of {t.precision} digits; at most 38 are read")
        return pa.decimal128(t.precision, t.scale)
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_readable(t.field(i).type, f"{path}.{t.field(i).name}"))
                          for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(t.key_type, t.item_field.with_type(_readable(t.item_type, f"{path}{{}}")))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_readable(t.value_type, f"{path}[]")), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_readable(t.value_type, f"{path}[]")))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_readable(t.value_type, f"{path}[]")))
    return t


def _check_utf8(table: pa.Table) -> None:
    """Arrow trusts Parquet's strings to be UTF-8; a full validation finds the ones that are not
    (before they can crash a reader or the database write)."""
    for name in table.column_names:
        col = table[name]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            try:
                col.validate(full=True)
            except pa.ArrowInvalid:
                raise ValueError(f"column {name} holds text that is not valid UTF-8") from None


#: The columns an empty NDJSON or CSV file is read with, per kind: it has the rows it should.
_EMPTY = {"event": (*REQUIRED, "external_id"),
          "operation": ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")}


def _read_file(file: Path, root: Path, kind: str) -> pl.DataFrame:
    df, numbers, bad = _load(file)
    if df.width == 0:
        df = pl.DataFrame(schema={c: pl.String for c in _EMPTY[kind]})
    out = _normalise(df, file, root, kind, 0, numbers)
    return _with_bad_lines(out, bad, file, kind) if bad else out


def _with_bad_lines(out: pl.DataFrame, bad: list[tuple[int, str, str]], file: Path, kind: str) -> pl.DataFrame:
    """A file's normalised rows with its lines that are not JSON objects (`_load`) as quarantined
    rows, in file order: the line as written is the raw row."""
    k = len(bad)
    given = {"row_number": [b[0] for b in bad], "reject_message": [b[1] for b in bad], "raw": [b[2] for b in bad],
             "source": [str(file)] * k, "kind": [kind] * k,
             "reject_reason": [BAD_LINE] * k}
    rows = pl.DataFrame([pl.Series(c, given.get(c, [None] * k), dtype=dt) for c, dt in out.schema.items()])
    both = pl.concat([out, rows], how="vertical")
    return both[both["row_number"].arg_sort().to_list()]


def _normalise(df: pl.DataFrame, file: Path, root: Path, kind: str, first_row: int,
               row_numbers: pl.Series | None = None) -> pl.DataFrame:
    """Rows of `file` (the first of them is its row `first_row + 1`, or each row is its
    `row_numbers` one) in the normalised frame, with the row-level contract applied; file-level
    problems raise InputError."""
    _PARTITIONS[str(file)] = hive_values(file, root)
    df = _with_partitions(df, str(file))
    # A column with no value in any row is typed Null (pyarrow and Polars infer it so): its rows
    # are missing that field, quarantined one by one like the nulls of a typed column. A Null
    # event_timestamp or event_data stopped the whole file (exit 2, "must be ... found Null"), as
    # did a dictionary-encoded (Categorical) one, which is text (the id columns took both).
    df = df.with_columns(pl.col(c).cast(pl.String) for c in ("operation", "event_timestamp", "timestamp", "event_data", "params")
                         if c in df.columns and (df[c].dtype in (pl.Null, pl.Categorical) or isinstance(df[c].dtype, pl.Enum)))
    given = list(df.columns)  # the row as read, for `raw` (not the columns added below)
    if kind == "operation":
        if "operation" not in df.columns:
            raise InputError(f"{file}: missing required column(s): operation; operation files need "
                             "operation, program_id, idempotency_key, timestamp, the target and params")
        if both := [f"{k} and {v}" for k, v in OPERATION_RENAMES.items() if k in df.columns and v in df.columns]:
            # which one is the operation's? (the rename below stopped the run: exit 1)
            raise InputError(f"{file}: an operation file has both columns {'; '.join(both)}: an operation's instant "
                             "is its timestamp and its fields its params; drop or rename the event columns")
        df = df.rename({k: v for k, v in OPERATION_RENAMES.items() if k in df.columns})
        if "event_data" not in df.columns:  # params are optional: {} for operations without fields
            df = df.with_columns(event_data=pl.lit("{}"))
        elif df["event_data"].dtype == pl.String:  # ... in a row too: a null is no fields, as no column is
            df = df.with_columns(pl.col("event_data").fill_null("{}"))
        elif isinstance(df["event_data"].dtype, pl.Struct) and df["event_data"].dtype.fields:
            # a struct's null row likewise: its fields, all null (= absent); it was quarantined
            # as a missing params
            params = pl.col("event_data")
            df = df.with_columns(pl.struct([params.struct.field(f.name) for f in df["event_data"].dtype.fields])
                                 .alias("event_data"))
        fields = df["event_data"].dtype
        texts = _map_leaves(pl.col("event_data"), fields, _decimal_text) if isinstance(fields, pl.Struct) else None
        if texts is not None:
            df = df.with_columns(texts.alias("event_data"))
        if df["operation"].dtype != pl.String:
            raise InputError(f"{file}: column operation must be a string column, found {df['operation'].dtype}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if kind == "event" and "external_id" not in df.columns and "participant_id" not in df.columns:
        missing.append("external_id or participant_id")
    if missing:
        if kind == "operation":
            missing = [{v: k for k, v in OPERATION_RENAMES.items()}.get(c, c) for c in missing]
        raise InputError(f"{file}: missing required column(s): {', '.join(missing)}; "
                         f"event files need {', '.join(REQUIRED)} and external_id or participant_id"
                         + (f" ({NO_TIMESTAMP.split(': ', 1)[1]})" if "event_timestamp" in missing else ""))
    for c in STRING_COLUMNS:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(c))
        elif df[c].dtype in (pl.Categorical, pl.Null) or isinstance(df[c].dtype, pl.Enum):
            df = df.with_columns(pl.col(c).cast(pl.String))
        elif df[c].dtype != pl.String:
            raise InputError(f"{file}: column {c} must be a string column, found {df[c].dtype}")
    try:
        ts, ts_bad = _timestamps(file, df["event_timestamp"])
        event, event_json, ev_bad = _payloads(file, df["event_data"])
    except InputError as e:  # an operation file's columns by their own names
        if kind != "operation":
            raise
        raise InputError(_operation_words(str(e))) from None
    out = pl.DataFrame({
        "source": pl.Series([str(file)] * len(df), dtype=pl.String),
        "row_number": row_numbers.cast(pl.Int64) if row_numbers is not None
        else pl.int_range(first_row + 1, first_row + len(df) + 1, dtype=pl.Int64, eager=True),
        "kind": pl.Series([kind] * len(df), dtype=pl.String),
        "operation": df["operation"] if kind == "operation" else pl.Series([None] * len(df), dtype=pl.String),
        "program_id": _uuid_lowercase(df["program_id"]),
        "external_id": _blank_is_missing(df["external_id"]),
        "participant_id": _uuid_lowercase(_blank_is_missing(df["participant_id"])),
        "idempotency_key": df["idempotency_key"],
        "event_timestamp": ts,
        "event": event if kind == "event" else pl.Series([None] * len(df), dtype=pl.Null),
        "params": pl.Series(event_dicts(event), dtype=pl.Object) if kind == "operation"
        else pl.Series([None] * len(df), dtype=pl.Null),
        "event_json": event_json,
        # a Parquet struct payload's type, which replay and explain read its JSON back with
        "event_type": pl.repeat(payload_types.type_key(event.dtype) if isinstance(df["event_data"].dtype, pl.Struct)
                                else None, len(df), dtype=pl.String, eager=True),
        "recipient_external_id": _blank_is_missing(df["recipient_external_id"]),
        "recipient_id": _uuid_lowercase(_blank_is_missing(df["recipient_id"])),
        "ts_bad": pl.Series(ts_bad, dtype=pl.String),
        "ev_bad": pl.Series(ev_bad, dtype=pl.String),
    })
    reason = (
        pl.when(pl.col("program_id").is_null() | (pl.col("program_id") == ""))
        .then(pl.lit("missing_required_field:program_id"))
        .when(pl.col("idempotency_key").is_null() | (pl.col("idempotency_key").str.strip_chars() == ""))
        .then(pl.lit("missing_required_field:idempotency_key"))  # blank is missing (docs/decisions.md "Input")
        .when(pl.col("idempotency_key").str.len_chars() > MAX_KEY_LENGTH)
        .then(pl.lit("idempotency_key_too_long"))
        # Scrip's participant external_id is 1-255 characters: a longer one names no participant
        # Scrip could hold (it created one)
        .when(pl.col("external_id").str.len_chars() > MAX_KEY_LENGTH)
        .then(pl.lit("external_id_too_long:external_id"))
        .when(pl.col("recipient_external_id").str.len_chars() > MAX_KEY_LENGTH)
        .then(pl.lit("external_id_too_long:recipient_external_id"))
        .when(pl.col("operation").is_null() & (pl.col("kind") == "operation"))
        .then(pl.lit("missing_required_field:operation"))
        .when(pl.coalesce(pl.col("external_id"), pl.col("participant_id")).is_null() & (pl.col("kind") == "event"))
        .then(pl.lit("missing_required_field:external_id"))
        .when(pl.col("ts_bad") == "missing").then(pl.lit("missing_required_field:event_timestamp"))
        .when(pl.col("ts_bad") == "invalid").then(pl.lit("invalid_timestamp"))
        .when(pl.col("ev_bad") == "missing").then(pl.lit("missing_required_field:event_data"))
        # an operation's payload is its params (semantics.md 2.2): its own reason, as its message says
        .when(pl.col("ev_bad").is_not_null() & (pl.col("kind") == "operation")).then(pl.lit("invalid_params"))
        .when(pl.col("ev_bad").is_not_null()).then(pl.lit("invalid_event_data"))
        .otherwise(None)
    )
    out = out.with_columns(reason=reason)
    # the raw row as the file has it (an operation file's timestamp and params by those names)
    as_read = df.rename({v: k for k, v in OPERATION_RENAMES.items() if v in df.columns}) if kind == "operation" else df
    out = out.with_columns(raw=_raw_rows(as_read.select(given), out["reason"].is_not_null()))
    blank_key = (pl.col("reason") == "missing_required_field:idempotency_key") & (pl.col("idempotency_key") != "")
    message = (pl.when(blank_key).then(pl.lit("required field idempotency_key is only whitespace"))
               # Scrip's ingest body has no timestamp (it stamps the arrival): a row copied from
               # its quickstart lacks one, so say what to write (semantics.md 2.2), not only "empty"
               .when(pl.col("reason") == "missing_required_field:event_timestamp").then(pl.lit(NO_TIMESTAMP))
               .when(pl.col("reason").str.starts_with("missing_required_field"))
               .then(pl.concat_str(pl.lit("required field "), pl.col("reason").str.split(":").list.last(), pl.lit(" is empty")))
               .when(pl.col("reason") == "idempotency_key_too_long").then(pl.lit(f"idempotency_key is longer than {MAX_KEY_LENGTH} characters"))
               .when(pl.col("reason").str.starts_with("external_id_too_long"))
               .then(pl.concat_str(pl.col("reason").str.split(":").list.last(),
                                   pl.lit(f" is longer than {MAX_KEY_LENGTH} characters")))
               .when(pl.col("reason") == "invalid_timestamp").then(pl.lit(NOT_RFC3339))
               .when(pl.col("reason").is_in(["invalid_event_data", "invalid_params"])).then(pl.col("ev_bad"))
               .otherwise(None))
    if kind == "operation":
        message = message.str.replace_all("event_timestamp", "timestamp", literal=True) \
            .str.replace_all("event_data", "params", literal=True)
    return out.select(
        *[c for c in COLUMNS if c in out.columns and c not in ("reject_reason", "reject_message", "raw")],
        reject_reason=pl.col("reason").str.split(":").list.first(),
        reject_message=message,
        raw=pl.col("raw"),
    )


def _not_json(dt: pl.DataType, path: str) -> str | None:
    """Why a struct payload's type has no JSON form (the stored payload, CEL's `event`), naming
    its first such field (`event_data.a.b`, `[]` for list elements, `{}` for map values), or None."""
    if dt == pl.Binary:
        return (f"column {path} is binary; a struct event_data holds text, numbers, booleans, instants, lists, "
                "maps and structs (send bytes as text, e.g. base64)")
    if isinstance(dt, pl.Duration):
        # stored as ISO 8601 text (`PT5S`), which no reader takes back as a duration: the run
        # evaluated it, then `perkflow replay` and `explain` stopped on it (exit 1)
        return (f"column {path} is a duration; a struct event_data holds text, numbers, booleans, instants, lists, "
                "maps and structs (send a duration as a number of seconds, or as text such as \"90s\" for "
                "CEL's duration())")
    if isinstance(dt, pl.Map):
        # a Parquet MAP is a map in CEL, as a JSON object is: its keys must be text, as JSON's are
        # (integer keys crashed the run, exit 1, when the payload was stored as JSON)
        if dt.key != pl.String:
            return (f"column {path} is a map with {dt.key} keys; a map in event_data is stored and read as a "
                    "JSON object, whose keys are text: write its keys as strings")
        return _not_json(dt.value, f"{path}{{}}")
    if isinstance(dt, pl.Struct):
        return next((b for f in dt.fields if (b := _not_json(f.dtype, f"{path}.{f.name}")) is not None), None)
    if isinstance(dt, (pl.List, pl.Array)):
        return _not_json(dt.inner, f"{path}[]")
    return None


NONFINITE = "event_data holds NaN or an infinity, which JSON (and so the stored payload) cannot hold"


def _nonfinite(expr: pl.Expr, dt: pl.DataType) -> pl.Expr | None:
    """Row-wise: does a struct payload hold a NaN or infinite float (at any depth)? None when its
    type has no float. Such a value was stored as JSON null while CEL saw the float, so the
    stored payload (what replay and explain read) said something else than the run evaluated;
    a JSON payload cannot carry one at all (quarantined there too)."""
    if dt in (pl.Float32, pl.Float64):
        return (expr.is_nan() | expr.is_infinite()).fill_null(False)
    if isinstance(dt, pl.Struct):
        parts = [p for f in dt.fields if (p := _nonfinite(expr.struct.field(f.name), f.dtype)) is not None]
        return pl.any_horizontal(parts).fill_null(False) if parts else None
    if isinstance(dt, (pl.List, pl.Array)):
        inner = _nonfinite(pl.element(), dt.inner)
        return None if inner is None else expr.cast(pl.List(dt.inner)).list.eval(inner).list.any().fill_null(False)
    if isinstance(dt, pl.Map):  # its values, as the list of its entries
        inner = _nonfinite(pl.element().struct.field("value"), dt.value)
        return None if inner is None else expr.map.entries().list.eval(inner).list.any().fill_null(False)
    return None


def _decimal_text(expr: pl.Expr, dt: pl.DataType) -> pl.Expr | None:
    """A DECIMAL field of an operation's struct `params` as its exact plain text (`10`,
    `0.123456789012345678`), which the operation reads as it reads amounts written as text (None
    for any other type; `_map_leaves` applies it at any depth). An event's DECIMAL fields are
    doubles, as CEL reads numbers (`_decimals_as_doubles`), but an operation's amount reaches the
    ledger without CEL: through a double, a DECIMAL(38, 18) amount of 0.123456789012345678 was
    booked as 0.12345678901234568 (semantics.md 1.1)."""
    if not isinstance(dt, pl.Decimal):
        return None
    text = expr.cast(pl.String)
    return text.str.replace(r"(\.\d*?)0+$", "${1}").str.replace(r"\.$", "") if dt.scale else text


def _decimals_as_doubles(dt: pl.DataType) -> pl.DataType:
    """A struct payload's type with DECIMAL fields (at any depth) as doubles: CEL has no decimal
    type, and a number in `event` is a double, as JSON numbers are (docs/decisions.md). A
    DECIMAL field reached CEL as a Python Decimal, which failed an amount (`expression_error`).
    DATE fields likewise become their ISO text (`2025-03-01`): CEL has no date type either (a
    date failed every expression that read it: "unsupported value of Python type date"), and the
    text is what the stored payload holds, so `perkflow replay` and `explain` see the same.
    Timestamp fields labelled with a time zone are read in UTC: a CEL timestamp is an instant
    (its accessors read UTC either way), and the stored payload's text is then one text per
    instant, so the same event re-sent from a file whose column has another zone is the same
    payload (semantics.md 4: a DUPLICATE, not an idempotency_conflict). Naive timestamp fields
    are UTC, as naive Parquet timestamps are (docs/decisions.md "Time"): the row path compared
    them with `now` as naive Python datetimes and stopped the run (exit 1)."""
    if isinstance(dt, pl.Decimal):
        return pl.Float64()
    if isinstance(dt, pl.Datetime) and dt.time_zone != "UTC":
        return pl.Datetime(dt.time_unit, "UTC")
    if isinstance(dt, pl.Date):
        return pl.String()
    if isinstance(dt, pl.Struct):
        return pl.Struct([pl.Field(f.name, _decimals_as_doubles(f.dtype)) for f in dt.fields])
    if isinstance(dt, pl.List):
        return pl.List(_decimals_as_doubles(dt.inner))
    if isinstance(dt, pl.Array):  # a fixed-size list (its fields slipped through: a naive one crashed the run)
        return pl.Array(_decimals_as_doubles(dt.inner), dt.size)
    if isinstance(dt, pl.Map):  # (the values of a Parquet MAP: its keys are text, `_not_json`)
        return pl.Map(dt.key, _decimals_as_doubles(dt.value))
    return dt


def _short_float_double(expr: pl.Expr, dt: pl.DataType) -> pl.Expr | None:
    """A Float32 / Float16 field as the double of its shortest text (None for any other type;
    `_map_leaves` applies it at any depth). CEL's numbers are doubles, and a number reaches an
    amount through its shortest round-trip text (semantics.md 7): a float32 price of 19.99, which
    the stored payload writes 19.99, was widened to the double 19.989999771118164, so its amount
    failed `invalid_scale` on a 2-decimal asset and a counter took 19.989999771118164."""
    return expr.cast(pl.String).cast(pl.Float64) if dt in (pl.Float32, pl.Float16) else None


def _map_leaves(expr: pl.Expr, dt: pl.DataType, leaf) -> pl.Expr | None:
    """`expr` (of type `dt`) with `leaf(expr, dt)` in place of every field or element, at any
    depth of structs and lists, for which it gives an expression; None when it gives none."""
    if (done := leaf(expr, dt)) is not None:
        return done
    if isinstance(dt, pl.Struct):
        parts = {f.name: _map_leaves(expr.struct.field(f.name), f.dtype, leaf) for f in dt.fields}
        if all(p is None for p in parts.values()):
            return None
        # a null struct stays null (rebuilt from its fields it would be a struct of nulls)
        fields = [(parts[f.name] if parts[f.name] is not None else expr.struct.field(f.name)).alias(f.name)
                  for f in dt.fields]
        return pl.when(expr.is_null()).then(None).otherwise(pl.struct(fields))
    if isinstance(dt, (pl.List, pl.Array)):
        inner = _map_leaves(pl.element(), dt.inner, leaf)
        return None if inner is None else expr.cast(pl.List(dt.inner)).list.eval(inner)
    return None


def _json_kind(value) -> str:
    """What a parsed JSON value is, in JSON's words (the message said 'NoneType' for null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {list: "an array", str: "a string", dict: "an object"}.get(type(value), "a number")


UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"


def _uuid_lowercase(col: pl.Series) -> pl.Series:
    """A UUID in its canonical lowercase text: UUIDs are case-insensitive (RFC 9562), and an
    uppercase program or participant id named nobody (`unknown_program`, `participant_not_found`)."""
    return pl.select(pl.when(col.str.contains(UUID_PATTERN)).then(col.str.to_lowercase()).otherwise(col)).to_series().alias(col.name)


def _blank_is_missing(col: pl.Series) -> pl.Series:
    """An empty or whitespace-only participant reference names nobody: it is a missing one, as
    such an idempotency_key is (it made a participant whose external id was '' or '   ')."""
    return pl.select(pl.when(col.str.strip_chars() != "").then(col)).to_series().alias(col.name)


def _operation_words(text: str) -> str:
    """A message about the normalised columns, in an operation file's own column names."""
    return text.replace("column event_timestamp", "column timestamp").replace("column event_data", "column params")


#: The hive partition values (`key=value` folders below the input root) of each file this process
#: read, by source: part of its rows as read, in `raw` too, also for a row quarantined at intake,
#: which `raw_as_read` reads again from its file alone (an unknown_program row whose program_id
#: came from its folder had no program_id in its raw).
_PARTITIONS: dict[str, dict[str, str]] = {}


def _with_partitions(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """The rows of `source` with its partition values as columns after its own (a column the
    file has wins, as hive readers do)."""
    return df.with_columns(pl.lit(v).alias(k) for k, v in _PARTITIONS.get(source, {}).items() if k not in df.columns)


def _raw_rows(df: pl.DataFrame, rejected: pl.Series) -> pl.Series:
    """The input row as JSON text, for the quarantined rows only (encoding every row of a large
    file would cost time and memory for nothing). Rows rejected later, at intake, get theirs
    from `raw_of`."""
    cols = [pl.col(c) if df[c].dtype == pl.String or df[c].dtype.is_nested()
            else pl.col(c).cast(pl.String) for c in df.columns]
    out = pl.Series("raw", [None] * len(df), dtype=pl.String)
    idx = rejected.arg_true()
    if len(idx):
        out = out.scatter(idx, df[idx].select(pl.struct(cols).struct.json_encode())[:, 0])
    return out


def raw_as_read(rows: pl.DataFrame) -> pl.Series:
    """The raw text (as `_raw_rows` gives it) of rows quarantined after reading (intake:
    unknown program or operation, reserved key, idempotency_conflict), read again from their
    `source` file by `row_number`: semantics.md 13 keeps "the raw row", and the normalised
    frame no longer holds it (the timestamp parsed, an operation's columns renamed, payload keys
    sorted). Rows whose raw is already known keep it; null where the file cannot be read again
    (a replay's rows, whose source files may be gone), for `raw_of` to fill. Parquet files are
    read only in the row groups that hold such rows."""
    out: list[str | None] = rows["raw"].to_list()
    todo = rows.with_row_index("_i").filter(pl.col("raw").is_null())
    for (source,), group in todo.group_by(["source"]):
        try:
            picked = _with_partitions(_rows_of(Path(source), group["row_number"].to_list()), source)
            if picked["idempotency_key"].to_list() != group["idempotency_key"].to_list():
                continue  # the file changed since: not these rows
        except Exception:  # noqa: BLE001 - gone, changed or unreadable now: raw_of describes the row
            continue
        for i, text in zip(group["_i"].to_list(), _raw_rows(picked, pl.Series([True] * len(picked))).to_list()):
            out[i] = text
    return pl.Series("raw", out, dtype=pl.String)


def _rows_of(file: Path, row_numbers: list[int]) -> pl.DataFrame:
    """Rows `row_numbers` (from 1) of `file` as read, in that order: of a Parquet file only
    the row groups that hold them are read; another file is read whole."""
    if file.suffix.lower() not in (".parquet", ".pq"):
        df, numbers, _ = _load(file)
        at = {n: i for i, n in enumerate(numbers.to_list())} if numbers is not None else None
        return df[[at[n] if at is not None else n - 1 for n in row_numbers]]
    pf = pq.ParquetFile(file)
    starts, at = [], 0
    for g in range(pf.metadata.num_row_groups):
        starts.append(at)
        at += pf.metadata.row_group(g).num_rows
    group_of = {n: bisect.bisect_right(starts, n - 1) - 1 for n in row_numbers}
    groups = sorted(set(group_of.values()))
    offset, at = {}, 0  # where each group starts in the frame of the groups read
    for g in groups:
        offset[g] = at
        at += pf.metadata.row_group(g).num_rows
    df = arrow_frame(pf.read_row_groups(groups))
    return df[[offset[group_of[n]] + n - 1 - starts[group_of[n]] for n in row_numbers]]


def raw_of(rows: pl.DataFrame) -> pl.Expr:
    """A row of the normalised frame as JSON text, for rows quarantined after reading whose file
    cannot be read again (`raw_as_read`)."""
    fields = ["kind", "operation", "program_id", "external_id", "participant_id", "idempotency_key",
              "recipient_external_id", "recipient_id"]
    return pl.struct(*fields, pl.col("event_timestamp").cast(pl.String),
                     pl.col("event_json").alias("event_data")).struct.json_encode()


NOT_RFC3339 = f"event_timestamp is {durations.NOT_RFC3339}"
#: A row without event_timestamp: required (semantics.md 2.2), and how it is written.
NO_TIMESTAMP = ("required field event_timestamp is empty: every row needs the instant it happened, "
                "as an RFC 3339 string with a time zone, e.g. \"event_timestamp\": "
                "\"2025-01-01T00:00:00Z\", or a time-zone-aware timestamp column; perkflow does not stamp "
                "the arrival time as Scrip's API does")


def _timestamps(file: Path, col: pl.Series) -> tuple[pl.Series, list[str | None]]:
    dt = col.dtype
    if isinstance(dt, pl.Datetime):
        ts = col.dt.replace_time_zone("UTC") if dt.time_zone is None else col.dt.convert_time_zone("UTC")
        ts = ts.dt.cast_time_unit("us")
        bad = pl.select(pl.when(col.is_null()).then(pl.lit("missing")).otherwise(None)).to_series().to_list()
        return ts, bad
    if dt == pl.String:
        # RFC 3339: 'T' or space, 'Z' or an offset, case-insensitive. Polars' format also takes
        # what RFC 3339 does not (`+0100`, `+01`, `2025-3-1`, `+2025`, a leading blank): the
        # shape is checked first, and a row of another shape has no instant (invalid_timestamp).
        # (the shape and its normal form are engine.durations', which every other instant is read by)
        norm = col.str.to_uppercase().str.replace(durations.DATE_SPACE, "${1}T")
        ts = norm.str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.f%#z", strict=False, time_zone="UTC", time_unit="us")
        ts = pl.select(pl.when(norm.str.contains(durations.RFC3339_SHAPE)).then(ts)).to_series().alias(col.name)
        bad = pl.select(
            pl.when(col.is_null() | (col == "")).then(pl.lit("missing"))
            .when(ts.is_null()).then(pl.lit("invalid")).otherwise(None)
        ).to_series().to_list()
        return ts, bad
    raise InputError(f"{file}: column event_timestamp must be a timestamp or an RFC 3339 string, found {dt}")


def _payloads(file: Path, col: pl.Series) -> tuple[pl.Series, pl.Series, list[str | None]]:
    """(event column, stored JSON text, per-row problem or None)."""
    if isinstance(col.dtype, pl.Struct):
        why = _not_json(col.dtype, "event_data")
        if why is not None:
            # JSON (the stored payload) has no bytes: Polars' JSON writer panicked on it (exit 1)
            raise InputError(f"{file}: {why}")
        col = col.cast(_decimals_as_doubles(col.dtype))
        widened = _map_leaves(pl.col(col.name), col.dtype, _short_float_double)
        if widened is not None:
            col = col.to_frame().select(widened.alias(col.name)).to_series()
        nonfinite = _nonfinite(pl.lit(col), col.dtype)
        bad = pl.select(pl.when(col.is_null()).then(pl.lit("missing"))
                        .when(nonfinite if nonfinite is not None else pl.lit(False))
                        .then(pl.lit(NONFINITE)).otherwise(None)).to_series().to_list()
        return col.alias("event"), col.struct.json_encode().alias("event_json"), bad
    if col.dtype != pl.String:
        raise InputError(f"{file}: column event_data must be a struct or a JSON object string, found {col.dtype}")
    dicts: list[dict | None] = []
    doubles: list[dict] = []  # the payloads of `dicts` that are not None, as CEL reads them
    bad: list[str | None] = []
    for text in col.to_list():
        if text is None or text == "":
            dicts.append(None)
            bad.append("missing")
            continue
        try:
            value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=unique_object)
        except DuplicateKey as e:
            dicts.append(None)
            bad.append(f"event_data: {e}")
            continue
        except (ValueError, RecursionError) as e:
            dicts.append(None)
            bad.append(f"event_data is not valid JSON: {e}")
            continue
        if not isinstance(value, dict):
            dicts.append(None)
            bad.append(f"event_data must be a JSON object, got {_json_kind(value)}")
            continue
        if _SURROGATE_ESCAPE.search(text) and _unpaired_surrogate(value):
            # Python's JSON reader takes `"\ud800"`; the ledger's JSON column does not (it
            # stopped the whole run at the write, exit 1): the row's problem, quarantined
            dicts.append(None)
            bad.append("event_data is not valid JSON: a string holds an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)")
            continue
        if _depth(value) > MAX_DEPTH:
            dicts.append(None)
            bad.append(f"event_data is nested deeper than {MAX_DEPTH} levels")
            continue
        value = strip_nulls(value)
        try:
            doubles.append(json_doubles(value))
        except OverflowError:
            # CEL reads a JSON number as a double: one beyond its range (1e400, a 400-digit
            # integer) has no value there. It crashed the run (exit 1) or was stored as the
            # non-JSON `Infinity`; it is the row's problem (semantics.md 13).
            dicts.append(None)
            bad.append("event_data holds a number outside the range of a double (about 1.8e308), "
                       "which is how CEL reads JSON numbers")
            continue
        dicts.append(value)
        bad.append(None)
    # Stored (and compared for idempotency) as sent, integers exact; CEL sees JSON numbers as doubles.
    event_json = pl.Series("event_json", [None if d is None else json.dumps(d, sort_keys=True, separators=(",", ":"))
                                          for d in dicts], dtype=pl.String)
    it = iter(doubles)
    event = dicts_to_column([None if d is None else next(it) for d in dicts])
    return event, event_json, bad


#: A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF): only then can a parsed string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class DuplicateKey(ValueError):
    """A JSON object names a key twice: which value is meant is not clear (RFC 8259 4 leaves it
    to the reader, and Python's kept the last silently)."""


def unique_object(pairs: list[tuple[str, object]]) -> dict:
    """json.loads' object_pairs_hook refusing a key written twice (input rows, program files)."""
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateKey(f"key {key!r} is written twice in one object")
    return out


def _unpaired_surrogate(value) -> bool:
    """Does the parsed payload hold a string (key or value) that is not valid Unicode text?"""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_doubles(value):
    """CEL's JSON mapping: every JSON number is a double. OverflowError for a number beyond a
    double's range (JSON's reader turns `1e400` into an infinity; NaN and Infinity literals are
    rejected before)."""
    if isinstance(value, dict):
        return {k: json_doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_doubles(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and math.isinf(value):
        raise OverflowError("number out of range")
    return value


def _depth(value) -> int:
    """Nesting depth of a JSON value, without recursion (a hostile payload can be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def strip_nulls(value):
    """A null field is an absent field (semantics.md 2.2), at every depth of a payload. A time
    of day (a Parquet TIME field) is its ISO text, as the stored payload holds it and as a DATE
    is (`_decimals_as_doubles`): CEL has no such type, and every expression that read one failed
    ("unsupported value of Python type time")."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    if isinstance(value, time):
        return _time_text(value)
    return value


def _time_text(value: time) -> str:
    """A time of day as the stored payload's JSON writes it (Polars): whole seconds, or
    milliseconds, or microseconds (`09:30:00`, `09:30:00.250`, `09:30:00.000100`)."""
    us = value.microsecond
    return value.isoformat(timespec="seconds" if not us else "milliseconds" if not us % 1000 else "microseconds")


def dicts_to_column(dicts: list[dict | None]) -> pl.Series:
    """A Struct column when the payloads share one typing, else an Object column (row path)."""
    try:
        arr = pa.array(dicts)
        if pa.types.is_struct(arr.type) and arr.type.num_fields > 0 and not _bools_made_doubles(dicts, arr.type):
            return pl.Series("event", pl.from_arrow(arr))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    return pl.Series("event", dicts, dtype=pl.Object)


def _bools_made_doubles(dicts: list[dict | None], inferred: pa.DataType) -> bool:
    """Whether a field Arrow typed as double holds a boolean in some payload. Arrow's inference
    does not refuse a field that is a number in one row and `true` in another: it turns `true`
    into 1.0, so `COUNTER value: event.v` counted a boolean as 1 and `event.v == true` was false.
    Such a batch keeps its values as sent (Object column, the row path), as a number/text mix does."""
    return any(type(v) is bool for path in _double_paths(inferred) for v in _leaves(dicts, path))


def _double_paths(dtype: pa.DataType, path: tuple = ()) -> Iterator[tuple]:
    """The paths (field names; None for a list's elements) of the double leaves of a payload type."""
    if pa.types.is_struct(dtype):
        for field in dtype:
            yield from _double_paths(field.type, (*path, field.name))
    elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        yield from _double_paths(dtype.value_type, (*path, None))
    elif pa.types.is_floating(dtype):
        yield path


def _leaves(payloads: list, path: tuple) -> list:
    """Every value at `path` (field names; None steps into a list's elements) in the payloads,
    level by level in list comprehensions: it runs over every row of a batch."""
    values = payloads
    for name in path:
        if name is None:
            values = [item for v in values if type(v) is list for item in v]
        else:
            values = [v.get(name) for v in values if type(v) is dict]
    return values


def _unify_events(frames: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """Files whose payload structs agree on every shared field keep one Struct column; any
    disagreement (a field that is a number in one file and text in another) makes the batch's
    `event` an Object column so that no value is silently converted."""
    dtypes = [f["event"].dtype for f in frames if f["event"].dtype != pl.Null]  # (an operation file's)
    if len(dtypes) <= 1 or all(d == dtypes[0] for d in dtypes):
        return frames
    if all(isinstance(d, pl.Struct) for d in dtypes) and _agree(dtypes):
        return frames  # the relaxed concat in read_events unifies the fields
    return [f.with_columns(pl.Series("event", event_dicts(f["event"]), dtype=pl.Object)) for f in frames]


def _agree(dtypes: list[pl.DataType]) -> bool:
    seen: dict[str, pl.DataType] = {}
    def walk(dt: pl.DataType, prefix: str) -> bool:
        if isinstance(dt, pl.Struct):
            return all(walk(f.dtype, f"{prefix}.{f.name}") for f in dt.fields)
        if dt == pl.Null:
            return True
        prev = seen.setdefault(prefix, dt)
        return prev == dt
    return all(walk(d, "") for d in dtypes)


def event_dicts(col: pl.Series) -> list[dict | None]:
    """The row path's view of `event`: dicts with absent (null) fields removed, unsigned integer
    fields as CEL uints (`CelUint`), as the vectorised path reads them (polars_types.from_column):
    a plain Python int made `event.u / 2u` "no such overload" on this path only (semantics.md 1.4)."""
    if col.dtype == pl.Object:
        return col.to_list()
    if not _has_unsigned(col.dtype):
        return [None if v is None else strip_nulls(v) for v in col.to_list()]
    return [None if v is None else _uints(strip_nulls(v), col.dtype) for v in col.to_list()]


def _has_unsigned(dt: pl.DataType) -> bool:
    if dt.is_unsigned_integer():
        return True
    if isinstance(dt, pl.Struct):
        return any(_has_unsigned(f.dtype) for f in dt.fields)
    if isinstance(dt, (pl.List, pl.Array)):
        return _has_unsigned(dt.inner)
    if isinstance(dt, pl.Map):
        return _has_unsigned(dt.value)
    return False


def _uints(value, dt: pl.DataType):
    """`value` (nulls stripped) with the values of its unsigned integer fields made `CelUint`s."""
    if dt.is_unsigned_integer():
        return CelUint(value)
    if isinstance(dt, pl.Struct):
        types = {f.name: f.dtype for f in dt.fields}
        return {k: _uints(v, types[k]) for k, v in value.items()}
    if isinstance(dt, (pl.List, pl.Array)):
        return [None if v is None else _uints(v, dt.inner) for v in value]
    if isinstance(dt, pl.Map):
        return {k: None if v is None else _uints(v, dt.value) for k, v in value.items()}
    return value
