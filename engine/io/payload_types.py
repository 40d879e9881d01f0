"""The typing of the payloads a run read, stored so that replay and explain read `event` as it did.

A payload column keeps its field types in CEL: a Parquet struct's int64 field is an int, a
timestamp field a timestamp (docs/decisions.md). `events.event_data` holds the payload as JSON
text, which read back with JSON's mapping makes every number a double and every instant text:
`event.n / 2` of an int 3 was 1 live and 1.5 on replay, `event.at < now` errored. So each chunk's
`event` column type (a Polars Struct, after the reader's own conversions) is stored once in
`payload_types`, keyed by a hash of it, and named by each of its events
(`events.event_data_type`). An event without one (a batch whose payloads disagreed on a field's
type, read row by row; SYSTEM events the rules emitted) is read with JSON's mapping, as it was.

The type is stored as an Arrow IPC schema (hex), never as code: a ledger file is data, and
reading one must not run anything it holds.
"""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa

FIELD = "event_data"


def type_key(dtype: pl.DataType) -> tuple[str, str] | None:
    """(key, stored text) of a chunk's `event` column type; None when it is not a Struct."""
    if not isinstance(dtype, pl.Struct):
        return None
    arrow = pl.Series(FIELD, [], dtype=dtype).to_arrow().type
    text = pa.schema([pa.field(FIELD, arrow)]).serialize().to_pybytes().hex()
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


def decode(text: str) -> pl.DataType:
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(text)))
    return pl.from_arrow(pa.array([], type=schema.field(FIELD).type)).dtype


def typed(payloads: pl.Series, text: str) -> pl.Series:
    """Stored JSON payloads as the Struct column the run read them into."""
    return payloads.str.json_decode(decode(text)).alias(FIELD)
