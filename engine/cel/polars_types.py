"""Static typing for the Polars backend: each compiled sub-expression carries its CEL kind.

Knowing kinds at compile time lets the backend pick the exact overload (or an all-null
error literal for an ill-typed operation) without inspecting data. A Polars null always
means "CEL error or absent".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from .errors import NotVectorisable
from .values import CelUint, kind

_NO_CONST = object()


@dataclass(frozen=True)
class Typed:
    expr: pl.Expr
    kind: str  # bool int uint double string bytes timestamp duration list map error
    dtype: pl.DataType
    const: object = _NO_CONST  # the Python value when known at compile time

    @property
    def is_const(self) -> bool:
        return self.const is not _NO_CONST


ERROR = Typed(pl.lit(None, dtype=pl.Null), "error", pl.Null())
NUMERIC = frozenset(("int", "uint", "double"))

_KIND_DTYPE = {
    "bool": pl.Boolean(), "int": pl.Int64(), "uint": pl.UInt64(), "double": pl.Float64(),
    "string": pl.String(), "bytes": pl.Binary(),
    "timestamp": pl.Datetime("us", "UTC"), "duration": pl.Duration("us"),
}


def error_of(k: str) -> Typed:
    """An all-null (error) value that still has a dtype, for Kleene logic and branches."""
    if k in _KIND_DTYPE:
        return Typed(pl.lit(None, dtype=_KIND_DTYPE[k]), k, _KIND_DTYPE[k])
    return ERROR


def from_column(expr: pl.Expr, dtype: pl.DataType) -> Typed:
    """Normalise a column to the canonical dtype of its CEL kind."""
    if dtype == pl.Null:
        return ERROR
    if dtype == pl.Boolean:
        return Typed(expr, "bool", dtype)
    if dtype.is_integer():
        target = pl.UInt64() if dtype.is_unsigned_integer() else pl.Int64()
        return Typed(expr.cast(target), "uint" if dtype.is_unsigned_integer() else "int",
                     target)
    if dtype.is_float():
        return Typed(expr.cast(pl.Float64), "double", pl.Float64())
    if dtype == pl.String:
        return Typed(expr, "string", dtype)
    if dtype == pl.Binary:
        return Typed(expr, "bytes", dtype)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone and dtype.time_unit != "ns":
        target = pl.Datetime("us", "UTC")
        return Typed(expr.dt.convert_time_zone("UTC").cast(target), "timestamp", target)
    if isinstance(dtype, pl.Duration) and dtype.time_unit != "ns":
        return Typed(expr.cast(pl.Duration("us")), "duration", pl.Duration("us"))
    if isinstance(dtype, pl.List):
        return Typed(expr, "list", dtype)
    if isinstance(dtype, pl.Struct):
        return Typed(expr, "map", dtype)
    raise NotVectorisable(f"column dtype {dtype} has no exact CEL counterpart")


def literal(value: object) -> Typed:
    """A scalar constant; CEL null, lists and maps have no null-free columnar form."""
    k = kind(value)
    names = {"google.protobuf.Timestamp": "timestamp", "google.protobuf.Duration": "duration"}
    k = names.get(k, k)
    if k not in _KIND_DTYPE:
        raise NotVectorisable(f"a {k} literal cannot be vectorised")
    if isinstance(value, (datetime, timedelta)) or type(value) in (bool, str, bytes, float):
        plain = value
    else:
        plain = int(value) if type(value) is CelUint else value
    return Typed(pl.lit(plain, dtype=_KIND_DTYPE[k]), k, _KIND_DTYPE[k], const=value)


def strict(result: pl.Expr, *operands: Typed) -> pl.Expr:
    """Null (error) wherever any operand is null, whatever `result` would say there."""
    checks = [o.expr.is_null() for o in operands if o.kind != "error"]
    if not checks:
        return result
    return pl.when(pl.any_horizontal(checks)).then(None).otherwise(result)
