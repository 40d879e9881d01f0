"""The typing of the payloads a run read, stored so that replay and explain read `event` as it did.

A payload column keeps its field types in CEL: a Parquet struct's int64 field is an int, a
timestamp field a timestamp (docs/decisions.md). `events.event_data` holds the payload as JSON
text, which read back with JSON's mapping makes every number a double and every instant text:
`event.n / 2` of an int 3 was 1 live and 1.5 on replay, `event.at < now` errored. So the type of
each Parquet struct payload column (a Polars Struct, after the reader's own conversions) is
stored once in `payload_types`, keyed by a hash of it, and named by each event read from that
file (`events.event_data_type`), whichever way the batch was cut or its files unified. An event
without one (a JSON payload; a SYSTEM event the rules emitted) is read with JSON's mapping.

The type is stored as an Arrow IPC schema (hex), never as code: a ledger file is data, and
reading one must not run anything it holds.
"""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa

FIELD = "event_data"
#: The stored text of every key this process made: the reader names a type by its key, the
#: writer stores the text (`stage`).
_TEXTS: dict[str, str] = {}


def type_key(dtype: pl.Struct) -> str:
    """The key of a struct payload column's type."""
    arrow = pl.Series(FIELD, [], dtype=dtype).to_arrow().type
    text = pa.schema([pa.field(FIELD, arrow)]).serialize().to_pybytes().hex()
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    _TEXTS[key] = text
    return key


def stage(keys: pl.Series) -> pl.DataFrame:
    """The payload_types rows of these keys (nulls: none)."""
    found = sorted(k for k in keys.drop_nulls().unique().to_list())
    return pl.DataFrame({"key": found, "arrow_schema": [_TEXTS[k] for k in found]},
                        schema={"key": pl.String, "arrow_schema": pl.String})


def decode(text: str) -> pl.DataType:
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(text)))
    return pl.from_arrow(pa.array([], type=schema.field(FIELD).type)).dtype


def typed(payloads: pl.Series, text: str) -> pl.Series:
    """Stored JSON payloads as the Struct column the run read them into."""
    return payloads.str.json_decode(decode(text)).alias(FIELD)
