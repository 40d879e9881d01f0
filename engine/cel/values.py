"""The Python value representation of CEL values, and the value-level rules.

bool, int (int64), `CelUint` (uint64), float (double), str, bytes, None (null),
list, dict, tz-aware `datetime` (timestamp), `timedelta` (duration), `CelType`.
Python's bool is an int subclass and `CelUint` is too, so every rule here checks the
CEL kind via `kind()` rather than `isinstance` chains scattered over the code.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .errors import CelEvalError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
UINT_MAX = 2**64 - 1
TS_MIN = datetime(1, 1, 1, tzinfo=timezone.utc)
TS_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
DURATION_MAX = timedelta(seconds=315576000000)  # +-10000 years, as in the CEL spec


class CelUint(int):
    """A CEL uint: a distinct type so `1u == 1` and `1u + 1` follow CEL's overloads."""

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, e.g. the result of `type(1)` or the identifier `int`."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelType) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("CelType", self.name))

    def __repr__(self) -> str:
        return f"CelType({self.name})"


TYPE_NAMES = ("bool", "int", "uint", "double", "string", "bytes", "null_type", "list",
              "map", "type", "google.protobuf.Timestamp", "google.protobuf.Duration")


def kind(v: object) -> str:
    """The CEL type name of a Python value; raises for values CEL cannot represent."""
    if v is None:
        return "null_type"
    t = type(v)
    if t is bool:
        return "bool"
    if t is CelUint:
        return "uint"
    if t is int:
        return "int"
    if t is float:
        return "double"
    if t is str:
        return "string"
    if t is bytes:
        return "bytes"
    if t is list or t is tuple:
        return "list"
    if t is dict:
        return "map"
    if t is datetime:
        return "google.protobuf.Timestamp"
    if t is timedelta:
        return "google.protobuf.Duration"
    if t is CelType:
        return "type"
    if isinstance(v, float):  # a program file's number a float cannot hold (catalog/documents.py)
        return "double"
    raise CelEvalError(f"unsupported value of Python type {t.__name__}")


NUMERIC = frozenset(("int", "uint", "double"))


def type_name(v: object) -> str:
    """The CEL type of a value for a message ("got timestamp", "got map"): CEL's names, never
    Python's (`NoneType`, `datetime.datetime(..., tzinfo=zoneinfo.ZoneInfo(key='UTC'))`, a
    participant's whole state printed as a dict)."""
    try:
        name = kind(v)
    except CelEvalError:
        return type(v).__name__
    return {"google.protobuf.Timestamp": "timestamp", "google.protobuf.Duration": "duration",
            "null_type": "null"}.get(name, name)


def check_int(v: int) -> int:
    if not INT_MIN <= v <= INT_MAX:
        raise CelEvalError("integer overflow")
    return v


def check_uint(v: int) -> CelUint:
    if not 0 <= v <= UINT_MAX:
        raise CelEvalError("unsigned integer overflow")
    return CelUint(v)


def check_timestamp(v: datetime) -> datetime:
    if not TS_MIN <= v <= TS_MAX:
        raise CelEvalError("timestamp out of range")
    return v


def check_duration(v: timedelta) -> timedelta:
    if abs(v) > DURATION_MAX:
        raise CelEvalError("duration out of range")
    return v


def no_overload(fn: str, *args: object) -> CelEvalError:
    kinds = ", ".join(kind(a) for a in args)
    return CelEvalError(f"no such overload: {fn}({kinds})")


def equals(a: object, b: object) -> bool:
    """CEL heterogeneous equality; numbers compare by value, int/double via double (s6)."""
    ka, kb = kind(a), kind(b)
    if ka in NUMERIC and kb in NUMERIC:
        if "double" in (ka, kb):
            return float(a) == float(b)
        return int(a) == int(b)
    if ka != kb:
        return False
    if ka == "list":
        return len(a) == len(b) and all(equals(x, y) for x, y in zip(a, b))
    if ka == "map":
        if len(a) != len(b):
            return False
        for k, v in a.items():
            found = map_lookup(b, k)
            if found is _MISSING or not equals(v, found):
                return False
        return True
    return a == b


def compare(op: str, a: object, b: object) -> bool:
    """Ordering `< <= > >=` on same-kind values and across numeric kinds."""
    ka, kb = kind(a), kind(b)
    if ka in NUMERIC and kb in NUMERIC:
        if "double" in (ka, kb):
            a, b = float(a), float(b)
        else:
            a, b = int(a), int(b)
    elif ka != kb or ka not in ("bool", "string", "bytes", "google.protobuf.Timestamp",
                                "google.protobuf.Duration"):
        raise no_overload(op, a, b)
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


_MISSING = object()


def map_lookup(m: dict, key: object) -> object:
    """Look a key up with CEL key semantics: 1, 1u and 1.0 find the same entry, true does not.

    Returns `_MISSING` when absent. Python's dict conflates True/1/1.0, hence the scan for
    non-string keys (maps with numeric keys are small and rare).
    """
    k = kind(key)
    if k == "string":
        return m.get(key, _MISSING)
    if k not in ("int", "uint", "bool", "double"):
        raise CelEvalError(f"unsupported map key type {k}")
    for stored, value in m.items():
        ks = kind(stored)
        if (ks == "bool") == (k == "bool") and ks != "string" and stored == key:
            return value
    return _MISSING


def parse_timestamp(s: str) -> datetime:
    m = _RFC3339.fullmatch(s)
    if not m:
        raise CelEvalError(f"invalid timestamp {s!r}")
    year, mon, day, hh, mm, ss, frac, tz = m.groups()
    micros = 0
    if frac:
        digits = frac[1:]
        if len(digits) > 6 and int(digits[6:]):
            raise CelEvalError("nanosecond timestamps are not supported")
        micros = int(digits[:6].ljust(6, "0"))
    try:
        if tz in ("Z", "z"):
            tzinfo = timezone.utc
        else:
            sign = -1 if tz[0] == "-" else 1
            tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
        value = datetime(int(year), int(mon), int(day), int(hh), int(mm), int(ss), micros,
                         tzinfo=tzinfo)
        return check_timestamp(value.astimezone(timezone.utc))
    except (ValueError, OverflowError) as exc:
        raise CelEvalError(f"invalid timestamp {s!r}: {exc}") from None


# ASCII digits only, as RFC 3339 and Go durations write them (Python's \d takes "٢٠٢٥" too)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)

#: Nanoseconds per unit of a Go duration.
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_PART = r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)"
# ASCII digits only ('٢h' is no Go duration); one optional sign; "0" needs no unit
_GO = re.compile(rf"([+-]?)((?:{_PART})+|0)", re.ASCII)
_PARTS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", re.ASCII)


def go_nanos(text: str) -> Decimal | None:
    """A Go duration (time.ParseDuration's grammar: "720h", "1h30m", "-1.5s", "300ms", "0") in
    nanoseconds, exactly; None if `text` is not one. CEL's duration() (`parse_duration`) and
    program files and operations (engine/durations.py) read durations through this one grammar."""
    m = _GO.fullmatch(text)
    if m is None:
        return None
    nanos = sum((Decimal(n) * _NANOS[u] for n, u in _PARTS.findall(m.group(2))), Decimal(0))
    return -nanos if m.group(1) == "-" else nanos


def parse_duration(s: str) -> timedelta:
    """Go-style duration strings ("1h30m", "-1.5s"; `go_nanos`); sub-microsecond
    precision errors."""
    nanos = go_nanos(s)
    if nanos is None:
        raise CelEvalError(f"invalid duration {s!r}")
    if nanos != nanos.to_integral_value() or int(nanos) % 1000:
        raise CelEvalError("nanosecond durations are not supported")
    try:
        return check_duration(timedelta(microseconds=int(nanos) // 1000))
    except OverflowError:
        raise CelEvalError("duration out of range") from None


def format_timestamp(v: datetime) -> str:
    v = v.astimezone(timezone.utc)
    text = v.strftime("%Y-%m-%dT%H:%M:%S")
    if v.microsecond:
        text += f".{v.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_duration(v: timedelta) -> str:
    micros = (v.days * 86400 + v.seconds) * 10**6 + v.microseconds
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 10**6)
    return f"{sign}{whole}" + (f".{frac:06d}".rstrip("0") if frac else "") + "s"


def format_double(v: float) -> str:
    """CEL (Go `strconv.FormatFloat(v, 'g', -1, 64)`-like) rendering of a double."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = repr(v)
    if text.endswith(".0"):
        text = text[:-2]
    return text
