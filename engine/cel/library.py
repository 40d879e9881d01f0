"""The function library: every CEL operator and function, both halves side by side.

Each entry has a Python half (`@row("name")`: evaluated arguments -> value, raising
`CelEvalError`) and, where it can be expressed exactly, a Polars half (`@vec("name")`:
`Typed` arguments -> `Typed`, raising `NotVectorisable`). A missing Polars half means the
vectorised backend declines. Method calls pass the receiver as the first argument.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import re2

from . import values as v
from .errors import CelEvalError, NotVectorisable
from .polars_types import ERROR, NUMERIC, Typed, error_of, from_column, strict
from .values import CelType, CelUint, kind, no_overload

ROW: dict[str, Callable[..., object]] = {}
VEC: dict[str, Callable[..., object]] = {}


def row(*names: str):
    def register(fn):
        for name in names:
            ROW[name] = fn
        return fn
    return register


def vec(*names: str):
    def register(fn):
        for name in names:
            VEC[name] = fn
        return fn
    return register


def _num_pair(op: str, a: object, b: object) -> tuple[str, object, object]:
    """Numeric operand kinds after the s6 promotion: any double makes both double."""
    ka, kb = kind(a), kind(b)
    if ka in v.NUMERIC and kb in v.NUMERIC:
        if "double" in (ka, kb):
            return "double", float(a), float(b)
        if ka == kb:
            return ka, a, b
    raise no_overload(op, a, b)


def _checked(k: str, value: int) -> int:
    return v.check_int(value) if k == "int" else v.check_uint(value)


# ---------------------------------------------------------------- arithmetic operators

@row("+")
def add(a, b):
    ka, kb = kind(a), kind(b)
    if ka == kb and ka in ("string", "bytes"):
        return a + b
    if ka == kb == "list":
        return list(a) + list(b)
    try:
        if ka == kb == "google.protobuf.Duration":
            return v.check_duration(a + b)
        if {ka, kb} == {"google.protobuf.Timestamp", "google.protobuf.Duration"}:
            return v.check_timestamp(a + b)
    except OverflowError:
        raise CelEvalError("timestamp out of range") from None
    k, x, y = _num_pair("_+_", a, b)
    return x + y if k == "double" else _checked(k, x + y)


_CANON = {"int": pl.Int64(), "uint": pl.UInt64()}


def _vec_num_pair(op: str, a: Typed, b: Typed) -> tuple[str, pl.Expr, pl.Expr] | None:
    """Polars half of `_num_pair`: None when the static kinds have no numeric overload."""
    if a.kind in NUMERIC and b.kind in NUMERIC:
        if "double" in (a.kind, b.kind):
            return "double", a.expr.cast(pl.Float64), b.expr.cast(pl.Float64)
        if a.kind == b.kind:
            return a.kind, a.expr.cast(pl.Int128), b.expr.cast(pl.Int128)
    return None


def _vec_checked(k: str, wide: pl.Expr) -> Typed:
    """Int128 result back to int64/uint64; out of range is an overflow error (null): what a
    non-strict cast gives. (`wide` is used once: an expression is a tree, so each use of an
    operand copies its whole subtree; range checks written as comparisons tripled every nested
    arithmetic operand, and `int(x) % 5 == 0` over a state column took ~8 ms per 2,800 rows.)"""
    return Typed(wide.cast(_CANON[k], strict=False), k, _CANON[k])


def _vec_arith(op: str, a: Typed, b: Typed) -> Typed:
    pair = _vec_num_pair(op, a, b)
    if pair is None:
        return ERROR
    k, x, y = pair
    out = {"+": x + y, "-": x - y, "*": x * y}[op]
    if k == "double" and op != "*":
        out = _ieee_zero(op, x, y, out)
    return Typed(out, "double", pl.Float64()) if k == "double" else _vec_checked(k, out)


def _ieee_zero(op: str, x: pl.Expr, y: pl.Expr, out: pl.Expr) -> pl.Expr:
    """`out` (x + y or x - y on doubles) with a zero result signed as IEEE 754 signs it: -0.0 only
    for -0.0 + -0.0 and -0.0 - 0.0, +0.0 otherwise. Polars 2.1 adds a zero scalar as if it were
    no-op and subtracts from one by negating (`0.0 - x` gave -0.0 for x = 0.0, `x + 0.0` kept
    x = -0.0), where the row path (Python floats) gives 0.0; string(), 1.0 / x and the like show
    the sign."""
    def negative_zero(e: pl.Expr) -> pl.Expr:
        return (e == 0.0) & (pl.lit(1.0) / e < 0.0)
    negative = negative_zero(x) & (negative_zero(y) if op == "+" else (y == 0.0) & ~negative_zero(y))
    return pl.when(out == 0.0).then(pl.when(negative).then(pl.lit(-0.0)).otherwise(pl.lit(0.0))).otherwise(out)



def _vec_time_range(e: pl.Expr, k: str) -> Typed:
    t = error_of(k)
    if k == "timestamp":
        ok = (e >= pl.lit(v.TS_MIN)) & (e <= pl.lit(v.TS_MAX))
    else:
        ok = (e >= pl.lit(-v.DURATION_MAX)) & (e <= pl.lit(v.DURATION_MAX))
    return Typed(pl.when(ok).then(e).otherwise(None).cast(t.dtype), k, t.dtype)


@vec("+")
def add_vec(a, b):
    if a.kind == b.kind == "string":
        return Typed(a.expr + b.expr, "string", pl.String())
    kinds = (a.kind, b.kind)
    if kinds in (("timestamp", "duration"), ("duration", "timestamp")):
        return _vec_time_range(a.expr + b.expr, "timestamp")
    if kinds == ("duration", "duration"):
        return _vec_time_range(a.expr + b.expr, "duration")
    if "list" in kinds or "bytes" in kinds:
        raise NotVectorisable("list/bytes concatenation")
    return _vec_arith("+", a, b)


@row("-")
def sub(a, b):
    ka, kb = kind(a), kind(b)
    try:
        if ka == kb == "google.protobuf.Timestamp":
            return v.check_duration(a - b)
        if ka in ("google.protobuf.Timestamp", "google.protobuf.Duration") \
                and kb == "google.protobuf.Duration":
            return (v.check_timestamp if ka == "google.protobuf.Timestamp"
                    else v.check_duration)(a - b)
    except OverflowError:
        raise CelEvalError("timestamp out of range") from None
    k, x, y = _num_pair("_-_", a, b)
    return x - y if k == "double" else _checked(k, x - y)


@vec("-")
def sub_vec(a, b):
    kinds = (a.kind, b.kind)
    if kinds == ("timestamp", "timestamp"):
        return _vec_time_range(a.expr - b.expr, "duration")
    if kinds in (("timestamp", "duration"), ("duration", "duration")):
        return _vec_time_range(a.expr - b.expr, a.kind)
    return _vec_arith("-", a, b)


@row("*")
def mul(a, b):
    k, x, y = _num_pair("_*_", a, b)
    return x * y if k == "double" else _checked(k, x * y)


@vec("*")
def mul_vec(a, b):
    return _vec_arith("*", a, b)


@row("/")
def div(a, b):
    k, x, y = _num_pair("_/_", a, b)
    if k == "double":
        if y == 0:
            if x == 0 or math.isnan(x):
                return math.nan
            return math.copysign(math.inf, x) * math.copysign(1.0, y)
        return x / y
    if y == 0:
        raise CelEvalError("division by zero")
    q = abs(int(x)) // abs(int(y))
    return _checked(k, q if (x < 0) == (y < 0) else -q)


def _vec_trunc_div(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """Truncating division on Int128 (Polars `//` floors), as the row path computes it: |x| // |y|,
    negated when the signs differ; y == 0 must be masked by caller."""
    return x.sign() * y.sign() * (x.abs() // y.abs())


def _divide(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """x / y of doubles, correctly rounded, as the row path (and CEL) divide. Polars divides a
    column by a scalar (a literal, or a value broadcast) as a product with its reciprocal: 5.0 / 3
    gave 1.6666666666666665, not 1.6666666666666667, so an amount `event.b / 3` depended on
    whether its batch held one event or more (semantics.md 1.4, 1.5). Two whole columns divide
    exactly: the quotient is taken of a struct's fields, which are full columns."""
    return pl.struct(x.alias("x"), y.alias("y")).map_batches(
        lambda s: s.struct.field("x") / s.struct.field("y"), return_dtype=pl.Float64())


@vec("/")
def div_vec(a, b):
    pair = _vec_num_pair("/", a, b)
    if pair is None:
        return ERROR
    k, x, y = pair
    if k == "double":
        return Typed(_divide(x, y), "double", pl.Float64())
    safe_y = pl.when(y == 0).then(pl.lit(1, pl.Int128)).otherwise(y)
    q = pl.when(y == 0).then(None).otherwise(_vec_trunc_div(x, safe_y))
    return _vec_checked(k, q)


@row("%")
def mod(a, b):
    k, x, y = _num_pair("_%_", a, b)
    if k == "double":
        raise no_overload("_%_", a, b)
    if y == 0:
        raise CelEvalError("modulus by zero")
    if k == "int" and x == v.INT_MIN and y == -1:
        raise CelEvalError("integer overflow")
    r = abs(int(x)) % abs(int(y))
    return _checked(k, -r if x < 0 else r)


@vec("%")
def mod_vec(a, b):
    pair = _vec_num_pair("%", a, b)
    if pair is None or pair[0] == "double":
        return ERROR
    k, x, y = pair
    safe_y = pl.when(y == 0).then(pl.lit(1, pl.Int128)).otherwise(y)
    r = x.sign() * (x.abs() % safe_y.abs())  # |x| % |y| with the dividend's sign, as the row path
    bad = (y == 0) | ((x == v.INT_MIN) & (y == -1)) if k == "int" else (y == 0)
    return _vec_checked(k, pl.when(bad).then(None).otherwise(r))


@row("neg")
def neg(a):
    k = kind(a)
    if k == "int":
        return v.check_int(-a)
    if k == "double":
        return -a
    if k == "google.protobuf.Duration":
        return v.check_duration(-a)
    raise no_overload("-_", a)


@vec("neg")
def neg_vec(a):
    if a.kind == "int":
        return _vec_checked("int", pl.lit(0, pl.Int128) - a.expr.cast(pl.Int128))
    if a.kind in ("double", "duration"):
        return Typed(-a.expr, a.kind, a.dtype) if a.kind == "double" \
            else _vec_time_range(-a.expr, "duration")
    return ERROR


# ---------------------------------------------------------------- comparison operators

@row("==")
def eq(a, b):
    return v.equals(a, b)


@row("!=")
def ne(a, b):
    return not v.equals(a, b)


def _ordering(op):
    return lambda a, b: v.compare(op, a, b)


for _op in ("<", "<=", ">", ">="):
    ROW[_op] = _ordering(_op)


_ORDERED = frozenset(("bool", "string", "bytes", "timestamp", "duration"))


def _vec_compare(op: str, a: Typed, b: Typed) -> Typed:
    """==, !=, <, <=, >, >= with CEL's NaN rules (Polars orders NaN as largest, NaN == NaN)."""
    equality = op in ("==", "!=")
    if a.kind in NUMERIC and b.kind in NUMERIC:
        if "double" in (a.kind, b.kind):
            x, y = a.expr.cast(pl.Float64), b.expr.cast(pl.Float64)
            nan = x.is_nan() | y.is_nan()
        else:
            x, y = a.expr.cast(pl.Int128), b.expr.cast(pl.Int128)
            nan = pl.lit(False)
        out = pl.when(nan).then(pl.lit(op == "!=")).otherwise(_OPS[op](x, y))
    elif a.kind == b.kind and (a.kind in _ORDERED):
        out = _OPS[op](a.expr, b.expr)
    elif a.kind == b.kind or "error" in (a.kind, b.kind):
        if "error" in (a.kind, b.kind):
            return error_of("bool")
        raise NotVectorisable(f"{a.kind} {op} {b.kind}")
    elif equality:
        out = pl.lit(op == "!=")
    else:
        return error_of("bool")
    return Typed(strict(out, a, b), "bool", pl.Boolean())


_OPS = {
    "==": lambda x, y: x == y, "!=": lambda x, y: x != y, "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y,
}
for _op in _OPS:
    VEC[_op] = (lambda op: lambda a, b: _vec_compare(op, a, b))(_op)


@row("in")
def in_(a, container):
    k = kind(container)
    if k == "list":
        return any(v.equals(a, x) for x in container)
    if k == "map":
        if kind(a) not in ("int", "uint", "bool", "string", "double"):
            return False
        return v.map_lookup(container, a) is not v._MISSING
    raise no_overload("@in", a, container)


@vec("in")
def in_vec(a, container):
    if container.kind == "list":
        inner = from_column(pl.lit(None), container.dtype.inner)
        if inner.kind != a.kind or a.kind not in _ORDERED | NUMERIC:
            if a.kind in NUMERIC and inner.kind in NUMERIC or "error" in (a.kind, inner.kind):
                raise NotVectorisable(f"{a.kind} in list of {inner.kind}")
            return Typed(strict(pl.lit(False), a, container), "bool", pl.Boolean())
        if a.kind == "double":
            raise NotVectorisable("double membership (NaN rules)")
        found = container.expr.list.contains(a.expr)
        return Typed(strict(found, a, container), "bool", pl.Boolean())
    if container.kind == "map" and a.is_const and isinstance(a.const, str):
        fields = {f.name for f in container.dtype.fields}
        if a.const not in fields:
            return Typed(strict(pl.lit(False), container), "bool", pl.Boolean())
        present = container.expr.struct.field(a.const).is_not_null()
        return Typed(strict(present, container), "bool", pl.Boolean())
    if container.kind in ("list", "map", "error"):
        raise NotVectorisable(f"`in` over {container.kind} with a non-literal key")
    return error_of("bool")


# ---------------------------------------------------------------- size and conversions

@row("size")
def size(a):
    if kind(a) in ("string", "bytes", "list", "map"):
        return len(a)
    raise no_overload("size", a)


@vec("size")
def size_vec(a):
    if a.kind == "string":
        return Typed(a.expr.str.len_chars().cast(pl.Int64), "int", pl.Int64())
    if a.kind == "bytes":
        return Typed(a.expr.bin.size().cast(pl.Int64), "int", pl.Int64())
    if a.kind == "list":
        return Typed(a.expr.list.len().cast(pl.Int64), "int", pl.Int64())
    if a.kind == "map":
        raise NotVectorisable("size() of a struct (absent fields are nulls)")
    return ERROR


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                         r"|[+-]?(?:[iI]nf(?:inity)?|NaN|nan)")


@row("int")
def to_int(a):
    k = kind(a)
    if k in ("int", "uint"):
        return v.check_int(int(a))
    if k == "double":
        if not (-(2.0**63) < a < 2.0**63):
            raise CelEvalError("int() argument out of range")
        return int(a)
    if k == "string" and _INT_TEXT.fullmatch(a):
        return v.check_int(int(a))
    if k == "google.protobuf.Timestamp":
        return math.floor((a - _EPOCH).total_seconds()) if a.microsecond else \
            int((a - _EPOCH).total_seconds())
    if k == "string":
        raise CelEvalError(f"cannot convert {a!r} to int")
    raise no_overload("int", a)


@vec("int")
def to_int_vec(a):
    if a.kind == "int":
        return a
    if a.kind == "uint":
        return _vec_checked("int", a.expr.cast(pl.Int128))
    if a.kind == "double":
        ok = (a.expr > -(2.0**63)) & (a.expr < 2.0**63)
        return Typed(pl.when(ok).then(a.expr).otherwise(None).cast(pl.Int64, strict=False),
                     "int", pl.Int64())
    if a.kind in ("string", "timestamp"):
        raise NotVectorisable(f"int() of {a.kind}")
    return ERROR


@row("uint")
def to_uint(a):
    k = kind(a)
    if k in ("int", "uint"):
        return v.check_uint(int(a))
    if k == "double":
        if not (-1.0 < a < 2.0**64):
            raise CelEvalError("uint() argument out of range")
        return CelUint(int(a))
    if k == "string" and _INT_TEXT.fullmatch(a) and a[0] not in "+-":  # Go's ParseUint: no sign
        return v.check_uint(int(a))
    if k == "string":
        raise CelEvalError(f"cannot convert {a!r} to uint")
    raise no_overload("uint", a)


@vec("uint")
def to_uint_vec(a):
    if a.kind in ("int", "uint"):
        return _vec_checked("uint", a.expr.cast(pl.Int128))
    if a.kind == "double":
        ok = (a.expr > -1.0) & (a.expr < 2.0**64)
        return Typed(pl.when(ok).then(a.expr).otherwise(None).cast(pl.UInt64, strict=False),
                     "uint", pl.UInt64())
    if a.kind == "string":
        raise NotVectorisable("uint() of string")
    return ERROR


@row("double")
def to_double(a):
    k = kind(a)
    if k in ("int", "uint", "double"):
        return float(a)
    if k == "string" and _FLOAT_TEXT.fullmatch(a):
        value = float(a)
        # a finite text beyond a double ("1e400") is a range error, as Go's ParseFloat says
        # (cel-go); only "inf" / "Infinity" spell an infinity
        if math.isinf(value) and not re.search("[iI]nf", a):
            raise CelEvalError(f"cannot convert {a!r} to double: out of a double's range")
        return value
    if k == "string":
        raise CelEvalError(f"cannot convert {a!r} to double")
    raise no_overload("double", a)


@vec("double")
def to_double_vec(a):
    if a.kind in NUMERIC:
        return Typed(a.expr.cast(pl.Float64), "double", pl.Float64())
    if a.kind == "string":
        raise NotVectorisable("double() of string (parsing rules differ)")
    return ERROR


@row("string")
def to_string(a):
    k = kind(a)
    if k == "string":
        return a
    if k in ("int", "uint"):
        return str(int(a))
    if k == "double":
        return v.format_double(a)
    if k == "bool":
        return "true" if a else "false"
    if k == "bytes":
        try:
            return a.decode("utf-8")
        except UnicodeDecodeError:
            raise CelEvalError("bytes are not valid UTF-8") from None
    if k == "google.protobuf.Timestamp":
        return v.format_timestamp(a)
    if k == "google.protobuf.Duration":
        return v.format_duration(a)
    raise no_overload("string", a)


@vec("string")
def to_string_vec(a):
    if a.kind == "string":
        return a
    if a.kind in ("int", "uint", "bool"):
        return Typed(a.expr.cast(pl.String), "string", pl.String())
    if a.kind in ("double", "bytes", "timestamp", "duration", "error"):
        raise NotVectorisable(f"string() of {a.kind} (formatting differs)")
    return ERROR


_TRUE = frozenset(("1", "t", "T", "true", "TRUE", "True"))
_FALSE = frozenset(("0", "f", "F", "false", "FALSE", "False"))


@row("bool")
def to_bool(a):
    k = kind(a)
    if k == "bool":
        return a
    if k == "string" and (a in _TRUE or a in _FALSE):
        return a in _TRUE
    if k == "string":
        raise CelEvalError(f"cannot convert {a!r} to bool")
    raise no_overload("bool", a)


@vec("bool")
def to_bool_vec(a):
    if a.kind == "bool":
        return a
    if a.kind == "string":
        raise NotVectorisable("bool() of string")
    return ERROR


@row("bytes")
def to_bytes(a):
    k = kind(a)
    if k == "bytes":
        return a
    if k == "string":
        return a.encode("utf-8")
    raise no_overload("bytes", a)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@row("timestamp")
def to_timestamp(a):
    k = kind(a)
    if k == "google.protobuf.Timestamp":
        return a
    if k == "string":
        return v.parse_timestamp(a)
    if k == "int":
        try:
            return v.check_timestamp(_EPOCH + timedelta(seconds=a))
        except OverflowError:
            raise CelEvalError("timestamp out of range") from None
    raise no_overload("timestamp", a)


@row("duration")
def to_duration(a):
    k = kind(a)
    if k == "google.protobuf.Duration":
        return a
    if k == "string":
        return v.parse_duration(a)
    raise no_overload("duration", a)


@row("type")
def type_of(a):
    return CelType(kind(a))


@row("dyn")
def dyn(a):
    return a


@vec("dyn")
def dyn_vec(a):
    return a


# ---------------------------------------------------------------- math (perkflow extras)

_DECIMAL = Context(prec=1000, Emax=10**6, Emin=-(10**6))


@row("round")
def round_(x, n=0):
    """Half away from zero on the decimal value of x (its shortest repr): 1.005 -> 1.01. An int
    or uint stays one, exactly (a float holds integers exactly only up to 2**53), so
    round(x) = round(x, 0) = x for them and round(1234, -1) = 1230; `n` defaults to 0."""
    if kind(n) != "int" or kind(x) not in v.NUMERIC:
        raise no_overload("round", x, n)
    if kind(x) != "double":
        # past 40 digits every int64 / uint64 rounds to 0 (and -2**63 digits stopped the run: an
        # internal error out of Decimal's exponent range)
        return x if n >= 0 else _integral_kind(x, Decimal(x).quantize(Decimal(1).scaleb(-max(n, -40)), ROUND_HALF_UP,
                                                                     _DECIMAL))
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return x
    n = max(-330, min(350, n))  # beyond these every double rounds to 0 / stays itself
    q = Decimal(repr(x)).quantize(Decimal(1).scaleb(-n), ROUND_HALF_UP, _DECIMAL)
    return float(q)


@vec("round")
def round_vec(x, *n):
    """Exact and vectorised: plain float arithmetic decides every value that is not near a .5
    tie (where float error cannot flip the result); the few near a tie, and magnitudes beyond
    2**52, go through the row half above, so both paths agree by construction."""
    if len(n) > 1 or x.kind not in NUMERIC or (n and n[0].kind != "int"):
        return ERROR
    if n and not n[0].is_const:
        raise NotVectorisable("round() with a computed number of digits")
    digits = n[0].const if n else 0
    if x.kind != "double":  # an integer to >= 0 digits is itself (the row half)
        if digits < 0:
            raise NotVectorisable("round() of an integer to tens, hundreds, ...")
        return x
    if not 0 <= digits <= 15:
        raise NotVectorisable("round() to more than 15 or fewer than 0 digits")
    return Typed(
        x.expr.cast(pl.Float64).map_batches(lambda s: _round_series(s, digits), return_dtype=pl.Float64),
        "double", pl.Float64())


def _round_series(s: pl.Series, digits: int) -> pl.Series:
    import numpy as np

    a = s.fill_null(0.0).to_numpy().astype(np.float64, copy=True)
    scale = 10.0 ** digits
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.abs(a) * scale
        frac = y - np.floor(y)
        out = np.copysign(np.floor(y + 0.5) / scale, a)
        # float error in y is below 1e-15 relative; anything within 1e-9 of a tie is re-done exactly
        suspect = ~np.isfinite(y) | (y >= 2.0**52) | (np.abs(frac - 0.5) <= 1e-9 * np.maximum(1.0, y))
    for i in np.flatnonzero(suspect):
        out[i] = round_(float(a[i]), digits)
    return pl.Series(s.name, out, dtype=pl.Float64).zip_with(s.is_not_null(), pl.Series([None] * len(s), dtype=pl.Float64))


def _integral_kind(x, value: Decimal):
    """`value` (a whole number) as the kind of the integer x it was computed from."""
    return v.check_uint(int(value)) if kind(x) == "uint" else v.check_int(int(value))


def _round_to_integral(name, mode):
    def impl(x):
        if kind(x) not in v.NUMERIC:
            raise no_overload(name, x)
        if kind(x) != "double":  # already whole: itself, exactly and of its own kind
            return x
        x = float(x)
        if math.isnan(x) or math.isinf(x):
            return x
        return math.copysign(float(Decimal(x).to_integral_value(mode)), x)
    return impl


ROW["floor"] = _round_to_integral("floor", ROUND_FLOOR)
ROW["ceil"] = _round_to_integral("ceil", ROUND_CEILING)


def _vec_round_to_integral(method):
    def impl(x):
        if x.kind not in NUMERIC:
            return ERROR
        if x.kind != "double":
            return x
        return Typed(getattr(x.expr.cast(pl.Float64), method)(), "double", pl.Float64())
    return impl


VEC["floor"] = _vec_round_to_integral("floor")
VEC["ceil"] = _vec_round_to_integral("ceil")


@row("abs")
def abs_(x):
    k = kind(x)
    if k == "int":
        return v.check_int(abs(x))
    if k in ("uint", "double"):
        return abs(x) if k == "double" else x
    raise no_overload("abs", x)


@vec("abs")
def abs_vec(x):
    if x.kind == "int":
        return _vec_checked("int", x.expr.cast(pl.Int128).abs())
    if x.kind in ("uint", "double"):
        return Typed(x.expr.abs(), x.kind, x.dtype)
    return ERROR


def _pick(name, take_second):
    def impl(a, b):
        if {kind(a), kind(b)} == {"int", "uint"}:
            # no arithmetic, only ordering, which CEL defines across int and uint (exactly, as
            # `1 < 2u`): the operand picked keeps its kind, as cel-go's math.least/greatest do
            return b if take_second(int(a), int(b)) else a
        k, x, y = _num_pair(name, a, b)
        return y if take_second(x, y) else x
    return impl


ROW["min"] = _pick("min", lambda x, y: y < x)
ROW["max"] = _pick("max", lambda x, y: y > x)


def _vec_pick(op):
    def impl(a, b):
        if _vec_num_pair(op, a, b) is None:
            return ERROR
        if "double" in (a.kind, b.kind):
            a = Typed(a.expr.cast(pl.Float64), "double", pl.Float64())
            b = Typed(b.expr.cast(pl.Float64), "double", pl.Float64())
        take_b = _vec_compare(op, b, a).expr
        return Typed(strict(pl.when(take_b).then(b.expr).otherwise(a.expr), a, b),
                     a.kind, a.dtype)
    return impl


VEC["min"] = _vec_pick("<")
VEC["max"] = _vec_pick(">")


@row("get")
def get(m, key, default):
    if kind(m) != "map":
        raise no_overload("get", m, key, default)
    found = v.map_lookup(m, key)
    return default if found is v._MISSING else found


# ---------------------------------------------------------------- strings

def _string_method(name, impl):
    def method(s, arg):
        if kind(s) != "string" or kind(arg) != "string":
            raise no_overload(name, s, arg)
        return impl(s, arg)
    ROW[name] = method


_string_method("contains", lambda s, t: t in s)
_string_method("startsWith", lambda s, t: s.startswith(t))
_string_method("endsWith", lambda s, t: s.endswith(t))


def _vec_string_method(name, impl):
    def method(s, arg):
        if s.kind != "string" or arg.kind != "string":
            return ERROR
        return Typed(strict(impl(s.expr, arg.expr), s, arg), "bool", pl.Boolean())
    VEC[name] = method


_vec_string_method("contains", lambda s, t: s.str.contains(t, literal=True))
_vec_string_method("startsWith", lambda s, t: s.str.starts_with(t))
_vec_string_method("endsWith", lambda s, t: s.str.ends_with(t))


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is an evaluation error, not a line on stderr per row


@lru_cache(maxsize=1024)
def _regex(pattern: str):
    """`matches` is RE2 (the CEL spec): Python's `re` differs on valid patterns (`\\d` and `\\w`
    match any Unicode digit or letter there, ASCII ones in RE2; `$` also matches before a final
    newline) and accepts patterns RE2 rejects (look-arounds, back-references, `\\Z`)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise CelEvalError(f"invalid regular expression: {reason}") from None


@row("matches")
def matches(s, pattern):
    if kind(s) != "string" or kind(pattern) != "string":
        raise no_overload("matches", s, pattern)
    # on the UTF-8 bytes, which RE2 reads anyway: the bindings' str path also maps byte offsets
    # back to characters, 9.4 us a call against 4.1 us
    try:
        text = s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate; intake refuses them, CEL literals cannot make them
        raise CelEvalError("matches: the text is not valid Unicode") from None
    return _regex(pattern).search(text) is not None


# Patterns that mean the same to RE2 and Rust's `regex`: literals and basic operators.
_PORTABLE_REGEX = re.compile(r"(?:[A-Za-z0-9 _\-:/@#,]|\\\.|[.^$*+?()|]|\[[A-Za-z0-9_\-]+\])*")


@vec("matches")
def matches_vec(s, pattern):
    if s.kind != "string" or pattern.kind != "string":
        return ERROR
    if not pattern.is_const or not _PORTABLE_REGEX.fullmatch(pattern.const):
        raise NotVectorisable("matches() with a non-literal or non-portable pattern")
    try:
        _regex(pattern.const)
    except CelEvalError:
        return error_of("bool")
    if not _rust_accepts(pattern.const):  # e.g. "a(?s)+": RE2 takes it, Rust's parser does not
        raise NotVectorisable("matches() with a pattern Polars' regex cannot compile")
    return Typed(s.expr.str.contains(pattern.const), "bool", pl.Boolean())


@lru_cache(maxsize=1024)
def _rust_accepts(pattern: str) -> bool:
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError:
        return False
    return True


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@row("lowerAscii")
def lower_ascii(s):
    if kind(s) != "string":
        raise no_overload("lowerAscii", s)
    return s.translate(_LOWER)


@row("upperAscii")
def upper_ascii(s):
    if kind(s) != "string":
        raise no_overload("upperAscii", s)
    return s.translate(_UPPER)


_ASCII_UPPER = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = list("abcdefghijklmnopqrstuvwxyz")


def _vec_case(source, target):
    def impl(s):
        if s.kind != "string":
            return ERROR
        return Typed(s.expr.str.replace_many(source, target), "string", pl.String())
    return impl


VEC["lowerAscii"] = _vec_case(_ASCII_UPPER, _ASCII_LOWER)
VEC["upperAscii"] = _vec_case(_ASCII_LOWER, _ASCII_UPPER)


# ---------------------------------------------------------------- sets

def _lists(name, a, b):
    if kind(a) != "list" or kind(b) != "list":
        raise no_overload(name, a, b)


@row("sets.contains")
def sets_contains(a, b):
    _lists("sets.contains", a, b)
    return all(any(v.equals(x, y) for y in a) for x in b)


@row("sets.intersects")
def sets_intersects(a, b):
    _lists("sets.intersects", a, b)
    return any(any(v.equals(x, y) for y in a) for x in b)


@row("sets.equivalent")
def sets_equivalent(a, b):
    return sets_contains(a, b) and sets_contains(b, a)


# ---------------------------------------------------------------- timestamp accessors

def _zone(name):
    if kind(name) != "string":
        raise no_overload("time zone", name)
    m = re.fullmatch(r"([+-])?([0-9]{2}):([0-9]{2})", name)
    if m:
        hours, minutes = int(m.group(2)), int(m.group(3))
        # an offset a clock can show (CEL's FixedTZ is +-HH:MM): "+25:00" or "+05:75" is a bad
        # argument of this call (an evaluation error), not a crash of the run
        if hours > 23 or minutes > 59:
            raise CelEvalError(f"invalid time zone offset {name!r}: must be +-HH:MM under 24:00")
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CelEvalError(f"unknown time zone {name!r}") from None


_TS_ACCESSORS = {
    "getFullYear": lambda t: t.year,
    "getMonth": lambda t: t.month - 1,
    "getDayOfMonth": lambda t: t.day - 1,
    "getDate": lambda t: t.day,
    "getDayOfWeek": lambda t: t.isoweekday() % 7,
    "getDayOfYear": lambda t: t.timetuple().tm_yday - 1,
    "getHours": lambda t: t.hour,
    "getMinutes": lambda t: t.minute,
    "getSeconds": lambda t: t.second,
    "getMilliseconds": lambda t: t.microsecond // 1000,
}


def _total_micros(d: timedelta) -> int:
    return (d.days * 86400 + d.seconds) * 10**6 + d.microseconds


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // b
    return -q if a < 0 else q


_DURATION_ACCESSORS = {
    "getHours": lambda d: _trunc_div(_total_micros(d), 3600 * 10**6),
    "getMinutes": lambda d: _trunc_div(_total_micros(d), 60 * 10**6),
    "getSeconds": lambda d: _trunc_div(_total_micros(d), 10**6),
    "getMilliseconds": lambda d: _trunc_div(_total_micros(d), 1000) % 1000
    if _total_micros(d) >= 0 else -(_trunc_div(-_total_micros(d), 1000) % 1000),
}


def _accessor(name):
    def impl(t, *zone):
        k = kind(t)
        if k == "google.protobuf.Duration" and name in _DURATION_ACCESSORS and not zone:
            return _DURATION_ACCESSORS[name](t)
        if k != "google.protobuf.Timestamp" or len(zone) > 1:
            raise no_overload(name, t, *zone)
        local, years = _local(t, _zone(zone[0]) if zone else timezone.utc)
        return _TS_ACCESSORS[name](local) + (years if name == "getFullYear" else 0)
    return impl


#: one Gregorian cycle: 400 years are 146097 days, a whole number of weeks, with the same leap days
_CYCLE = timedelta(days=146097)


def _local(t: datetime, zone) -> tuple[datetime, int]:
    """(t in `zone`, years to add to its year). CEL's first and last instants may fall in year 0
    or 10000 in a zone (0001-01-01T00:00:00Z is 19:00 on 31 December of year 0 in New York, as
    cel-go says), which Python's datetime cannot hold (OverflowError: the run stopped with an
    internal error): such an instant is read 400 years inside the range, where the calendar and
    the zone's rule (before its first or after its last transition) are the same."""
    try:
        return t.astimezone(zone), 0
    except OverflowError:
        if t.year < 5000:
            return (t + _CYCLE).astimezone(zone), -400
        return (t - _CYCLE).astimezone(zone), 400


_VEC_TS_ACCESSORS = {
    "getFullYear": lambda t: t.dt.year(),
    "getMonth": lambda t: t.dt.month() - 1,
    "getDayOfMonth": lambda t: t.dt.day() - 1,
    "getDate": lambda t: t.dt.day(),
    "getDayOfWeek": lambda t: t.dt.weekday() % 7,
    "getDayOfYear": lambda t: t.dt.ordinal_day() - 1,
    "getHours": lambda t: t.dt.hour(),
    "getMinutes": lambda t: t.dt.minute(),
    "getSeconds": lambda t: t.dt.second(),
    "getMilliseconds": lambda t: t.dt.millisecond(),
}


def _vec_accessor(name):
    def impl(t, *zone):
        if t.kind == "duration":
            raise NotVectorisable(f"{name}() of a duration")
        if t.kind != "timestamp" or len(zone) > 1:
            return ERROR
        local = t.expr
        if zone:
            if not zone[0].is_const or kind(zone[0].const) != "string":
                raise NotVectorisable("time zone argument is not a literal string")
            try:
                ZoneInfo(zone[0].const)
            except (ZoneInfoNotFoundError, ValueError):
                raise NotVectorisable(f"time zone {zone[0].const!r} is not an IANA name")
            local = local.dt.convert_time_zone(zone[0].const)
            # Polars' zone rules (chrono-tz) end in 2099, after which it applies no daylight
            # saving: 2100-07-01T12:30Z was 07:xx in New York here and 08:xx on the row path
            # (zoneinfo follows the zone's rule on, as cel-go does). Later instants: null, so per row.
            out = _VEC_TS_ACCESSORS[name](local).cast(pl.Int64)
            out = pl.when(t.expr.dt.epoch("us") < _ZONE_RULES_END_US).then(out).otherwise(None)
            return Typed(out, "int", pl.Int64())
        return Typed(_VEC_TS_ACCESSORS[name](local).cast(pl.Int64), "int", pl.Int64())
    return impl


#: 2100-01-01T00:00:00Z in microseconds since the epoch: where Polars' time zone rules end
_ZONE_RULES_END_US = int((datetime(2100, 1, 1, tzinfo=timezone.utc)
                          - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()) * 10**6



for _name in _TS_ACCESSORS:
    ROW[_name] = _accessor(_name)
    VEC[_name] = _vec_accessor(_name)
