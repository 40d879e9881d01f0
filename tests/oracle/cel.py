"""CEL for the oracle: cel-python's own evaluator plus perkflow's documented extras.

Deliberately independent of `engine/cel`: expressions are parsed and evaluated by
cel-python (`celpy`); we only register functions (semantics.md 6, docs/cel.md):

* the extras: `get`, `round`, `floor`, `ceil`, `abs`, `min`, `max`, `sets.contains`,
  `sets.intersects`, `sets.equivalent`, `lowerAscii`, `upperAscii`, `now()`;
* overrides of the operators where perkflow deviates from, or cel-python lags behind, CEL:
  - mixed int/double arithmetic and ordering promote to double (the s6 deviation; cel-python
    rejects `double * int`), and plain `float` results are wrapped back into `DoubleType`
    (cel-python's `DoubleType * DoubleType` returns a bare float, which then breaks later
    comparisons with CEL values);
  - `==`, `!=` and `in` use CEL's heterogeneous equality (values of different kinds are unequal
    rather than an error; numbers compare by value), which the CEL spec requires and cel-python
    0.5 does not implement.

Everything else (parsing, field selection, macros, `has`, timestamps, conversions, error
absorption of `&&`/`||`) is cel-python's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import celpy
import lark
from celpy import celtypes as ct
from celpy.evaluation import CELEvalError, base_functions

KNOWN_VARIABLES = frozenset({"event", "now", "participant", "program"})

# Enough digits for any double's shortest repr quantised at any sensible n.
_DEC = Context(prec=400)

_ENV = celpy.Environment()


class CelError(Exception):
    """An expression failed to evaluate (missing key, no such overload, overflow, ...)."""


class CelParseError(Exception):
    """The text is not CEL."""


# --------------------------------------------------------------------------------------------
# numbers and equality


def is_number(v: Any) -> bool:
    return isinstance(v, (ct.IntType, ct.UintType, ct.DoubleType))


def _wrap(v: Any) -> Any:
    """cel-python sometimes returns bare Python floats: give them back their CEL type."""
    if isinstance(v, float) and not isinstance(v, ct.DoubleType):
        return ct.DoubleType(v)
    if isinstance(v, list) and not isinstance(v, ct.ListType):  # list + list
        return ct.ListType(v)
    if isinstance(v, str) and not isinstance(v, ct.StringType):  # string + string
        return ct.StringType(v)
    return v


def _promote(a: Any, b: Any) -> tuple[Any, Any]:
    """The s6 deviation: int/uint mixed with double becomes double."""
    if isinstance(a, ct.DoubleType) and isinstance(b, (ct.IntType, ct.UintType)):
        return a, ct.DoubleType(float(b))
    if isinstance(b, ct.DoubleType) and isinstance(a, (ct.IntType, ct.UintType)):
        return ct.DoubleType(float(a)), b
    return a, b


def _arith(op):
    base = base_functions[op]

    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, CELEvalError):
            return a
        if isinstance(b, CELEvalError):
            return b
        if {type(a), type(b)} == {ct.IntType, ct.UintType}:
            # CEL has no int/uint arithmetic; cel-python would silently allow it.
            raise TypeError(f"no such overload: {op} on int and uint")
        a, b = _promote(a, b)
        if op == "_/_" and isinstance(b, ct.DoubleType) and float(b) == 0.0:
            # IEEE 754, as CEL's doubles divide: cel-python gave +inf for -1.0 / 0.0 and 0.0 / 0.0
            if float(a) == 0.0 or math.isnan(a):
                return ct.DoubleType(math.nan)
            return ct.DoubleType(math.copysign(math.inf, a) * math.copysign(1.0, b))
        return _wrap(base(a, b))

    return apply


def _ordering(op):
    base = base_functions[op]

    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, CELEvalError):
            return a
        if isinstance(b, CELEvalError):
            return b
        a, b = _promote(a, b)
        return base(a, b)

    return apply


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, ct.BoolType):
        return "bool"
    if is_number(v) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return "number"
    for kind, cls in (
        ("string", ct.StringType), ("bytes", ct.BytesType), ("list", ct.ListType),
        ("map", ct.MapType), ("timestamp", ct.TimestampType), ("duration", ct.DurationType),
    ):
        if isinstance(v, cls):
            return kind
    return "other:" + type(v).__name__


def cel_equal(a: Any, b: Any) -> bool:
    """CEL heterogeneous equality (numbers by value; int vs double decided in double)."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return False
    if ka == "number":
        if isinstance(a, float) or isinstance(b, float):
            return float(a) == float(b)
        return int(a) == int(b)
    if ka == "list":
        return len(a) == len(b) and all(cel_equal(x, y) for x, y in zip(a, b))
    if ka == "map":
        if len(a) != len(b):
            return False
        for key, value in a.items():
            match = [k for k in b if cel_equal(k, key)]
            if not match or not cel_equal(value, b[match[0]]):
                return False
        return True
    return bool(a == b)


def _eq(a: Any, b: Any) -> Any:
    if isinstance(a, CELEvalError):
        return a
    if isinstance(b, CELEvalError):
        return b
    return ct.BoolType(cel_equal(a, b))


def _ne(a: Any, b: Any) -> Any:
    r = _eq(a, b)
    return r if isinstance(r, CELEvalError) else ct.BoolType(not r)


def _in(item: Any, container: Any) -> Any:
    if isinstance(item, CELEvalError):
        return item
    if isinstance(container, CELEvalError):
        return container
    if isinstance(container, (ct.ListType, ct.MapType)):
        return ct.BoolType(any(cel_equal(item, c) for c in container))
    raise TypeError(f"no such overload: {type(item).__name__} in {type(container).__name__}")


# --------------------------------------------------------------------------------------------
# the extras


class _SetsNamespace(ct.MapType):
    """Value of the identifier `sets`, so that cel-python's method call `sets.contains(a, b)`
    reaches our `contains` / `intersects` / `equivalent` with this object as first argument."""


SETS = _SetsNamespace({})


def _require_list(*vs: Any) -> None:
    for v in vs:
        if not isinstance(v, ct.ListType):
            raise TypeError(f"no such overload: expected a list, got {type(v).__name__}")


def _sets_contains(a: Any, b: Any) -> ct.BoolType:
    _require_list(a, b)
    return ct.BoolType(all(any(cel_equal(x, y) for y in a) for x in b))


def _contains(obj: Any, *args: Any) -> Any:
    if obj is SETS:
        return _sets_contains(*args)
    return base_functions["contains"](obj, *args)


def _intersects(obj: Any, a: Any, b: Any) -> ct.BoolType:
    if obj is not SETS:
        raise TypeError("no such overload: intersects")
    _require_list(a, b)
    return ct.BoolType(any(any(cel_equal(x, y) for y in a) for x in b))


def _equivalent(obj: Any, a: Any, b: Any) -> ct.BoolType:
    if obj is not SETS:
        raise TypeError("no such overload: equivalent")
    return ct.BoolType(bool(_sets_contains(a, b)) and bool(_sets_contains(b, a)))


def _get(m: Any, key: Any, default: Any) -> Any:
    if not isinstance(m, ct.MapType):
        raise TypeError(f"no such overload: get({type(m).__name__}, ...)")
    for k in m:
        if cel_equal(k, key):
            return m[k]
    return default


def _round(x: Any, n: Any = ct.IntType(0)) -> Any:
    """Half away from zero on the decimal value of x's shortest repr (docs/cel.md)."""
    if not is_number(x) or not isinstance(n, ct.IntType):
        raise TypeError("no such overload: round")
    quantum = Decimal(1).scaleb(-int(n))
    if isinstance(x, ct.DoubleType):
        if not math.isfinite(x):
            return x
        q = Decimal(repr(float(x))).quantize(quantum, rounding=ROUND_HALF_UP, context=_DEC)
        return ct.DoubleType(float(q))
    if int(n) >= 0:
        return x
    q = Decimal(int(x)).quantize(quantum, rounding=ROUND_HALF_UP, context=_DEC)
    return type(x)(int(q))


def _floor(x: Any) -> Any:
    if isinstance(x, ct.DoubleType):
        return x if not math.isfinite(x) else ct.DoubleType(math.floor(x))
    if isinstance(x, (ct.IntType, ct.UintType)):
        return x
    raise TypeError("no such overload: floor")


def _ceil(x: Any) -> Any:
    if isinstance(x, ct.DoubleType):
        # math.ceil gives an int, which loses the sign of a negative zero: ceil(-0.5) is -0.0
        return x if not math.isfinite(x) else ct.DoubleType(math.copysign(math.ceil(x), x))
    if isinstance(x, (ct.IntType, ct.UintType)):
        return x
    raise TypeError("no such overload: ceil")


def _abs(x: Any) -> Any:
    if isinstance(x, ct.DoubleType):
        return ct.DoubleType(abs(float(x)))
    if isinstance(x, (ct.IntType, ct.UintType)):
        return type(x)(abs(int(x)))  # IntType(2**63) raises ValueError -> overflow error
    raise TypeError("no such overload: abs")


def _min(a: Any, b: Any) -> Any:
    if not (is_number(a) and is_number(b)):
        raise TypeError("no such overload: min")
    if {type(a), type(b)} == {ct.IntType, ct.UintType}:  # exact ordering; the pick keeps its kind
        return b if int(b) < int(a) else a
    a, b = _promote(a, b)
    return b if b < a else a


def _max(a: Any, b: Any) -> Any:
    if not (is_number(a) and is_number(b)):
        raise TypeError("no such overload: max")
    if {type(a), type(b)} == {ct.IntType, ct.UintType}:
        return b if int(b) > int(a) else a
    a, b = _promote(a, b)
    return b if b > a else a


def _ascii_case(upper: bool):
    def apply(s: Any) -> ct.StringType:
        if not isinstance(s, ct.StringType):
            raise TypeError("no such overload: lowerAscii/upperAscii")
        if upper:
            return ct.StringType("".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s))
        return ct.StringType("".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s))

    return apply


FUNCTIONS: dict[str, Any] = {
    "_+_": _arith("_+_"),
    "_-_": _arith("_-_"),
    "_*_": _arith("_*_"),
    "_/_": _arith("_/_"),
    "_%_": _arith("_%_"),  # double % double stays a CEL error (cel-python rejects it)
    "_<_": _ordering("_<_"),
    "_<=_": _ordering("_<=_"),
    "_>_": _ordering("_>_"),
    "_>=_": _ordering("_>=_"),
    "_==_": _eq,
    "_!=_": _ne,
    "_in_": _in,
    "contains": _contains,
    "intersects": _intersects,
    "equivalent": _equivalent,
    "get": _get,
    "round": _round,
    "floor": _floor,
    "ceil": _ceil,
    "abs": _abs,
    "min": _min,
    "max": _max,
    "lowerAscii": _ascii_case(False),
    "upperAscii": _ascii_case(True),
}


# --------------------------------------------------------------------------------------------
# compiled expressions


@dataclass
class Expr:
    text: str
    ast: lark.Tree

    def evaluate(self, activation: dict[str, Any], now: datetime) -> Any:
        """Evaluate against CEL values; raise CelError on any evaluation error."""
        now_value = ct.TimestampType(now)
        functions = dict(FUNCTIONS)
        functions["now"] = lambda: now_value  # `now()` is accepted as the variable `now`
        context = dict(activation)
        context["now"] = now_value
        context["sets"] = SETS
        try:
            result = _ENV.program(self.ast, functions=functions).evaluate(context)
        except CELEvalError as e:
            raise CelError(str(e.args[0]) if e.args else repr(e)) from e
        except Exception as e:  # any cel-python failure is an evaluation error of the expression
            raise CelError(f"{type(e).__name__}: {e}") from e
        if isinstance(result, CELEvalError):
            raise CelError(str(result.args[0]) if result.args else repr(result))
        return _wrap(result)


def compile_expr(text: str) -> Expr:
    try:
        return Expr(text, _ENV.compile(text))
    except Exception as e:  # celpy.CELParseError and friends
        raise CelParseError(f"{text!r}: {e}") from e


def references(ast: lark.Tree) -> tuple[set[str], bool]:
    """(top-level identifiers used, whether any function or method is called)."""
    names: set[str] = set()
    calls = False
    for node in ast.iter_subtrees():
        if node.data in ("ident", "dot_ident"):
            names.update(t.value for t in node.children if isinstance(t, lark.Token))
        elif node.data in ("ident_arg", "dot_ident_arg", "member_dot_arg"):
            calls = True
            if node.data == "ident_arg" and node.children and isinstance(node.children[0], lark.Token):
                if node.children[0].value == "now":
                    names.add("now")
    return names, calls


# --------------------------------------------------------------------------------------------
# Python <-> CEL


def to_cel(value: Any) -> Any:
    """Python JSON-like data (and datetimes) to CEL values; null map fields count as absent."""
    if isinstance(value, dict):
        return ct.MapType({ct.StringType(k): to_cel(v) for k, v in value.items() if v is not None})
    if isinstance(value, (list, tuple)):
        return ct.ListType([to_cel(v) for v in value])
    if isinstance(value, Decimal):
        return ct.DoubleType(float(value))
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, int):
        return ct.IntType(value)
    if isinstance(value, float):
        return ct.DoubleType(value)
    if isinstance(value, str):
        return ct.StringType(value)
    return celpy.json_to_cel(value)  # None, datetimes, timedeltas
