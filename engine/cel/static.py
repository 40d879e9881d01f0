"""What can be known of an expression's result before it runs: only what is certain.

A condition must give a bool (scrip-reference.md 7). CEL has no static checker here, and most
values are `dyn` (read from `event`, `participant`, `get(...)`): those stay allowed and are
judged per event (SKIPPED_ERROR). But an expression whose outermost operation can only give
something else — a literal, an arithmetic operator, a conversion, `size` — is never a bool, on
any event, and loading it would make a rule that never matches without saying so.
"""

from __future__ import annotations

from . import ir
from .values import kind

#: Functions whose every overload gives a value that is not a bool (docs/cel.md): name -> what.
NOT_BOOL = {
    "abs": "a number", "ceil": "a number", "floor": "a number", "round": "a number", "neg": "a number",
    "double": "a double", "int": "an int", "uint": "a uint", "size": "an int",
    "string": "a string", "lowerAscii": "a string", "upperAscii": "a string", "bytes": "bytes",
    "timestamp": "a timestamp", "duration": "a duration", "type": "a type",
    "getDate": "an int", "getDayOfMonth": "an int", "getDayOfWeek": "an int", "getDayOfYear": "an int",
    "getFullYear": "an int", "getHours": "an int", "getMilliseconds": "an int", "getMinutes": "an int",
    "getMonth": "an int", "getSeconds": "an int",
}
ARITHMETIC = frozenset("+-*/%")
_LITERAL = {"int": "an int", "uint": "a uint", "double": "a double", "string": "a string", "bytes": "bytes",
            "null_type": "null", "list": "a list", "map": "a map"}


def never_bool(node: ir.Node) -> str | None:
    """What the expression gives instead of a bool, if it certainly never gives a bool
    (on an error it gives none at all); None when it may."""
    if isinstance(node, ir.Literal):
        return None if isinstance(node.value, bool) else _LITERAL.get(kind(node.value), "not a bool")
    if isinstance(node, ir.ListExpr) or (isinstance(node, ir.Comprehension) and node.kind in ("map", "filter")):
        return "a list"
    if isinstance(node, ir.MapExpr):
        return "a map"
    if isinstance(node, ir.BinaryOp) and node.op in ARITHMETIC:  # every overload: a number, text, list or time
        return f"the value of `{node.op}` (a number, a string, a list, a timestamp or a duration)"
    if isinstance(node, ir.Neg):
        return "a number"
    if isinstance(node, ir.Call) and node.fn in NOT_BOOL:
        return f"{NOT_BOOL[node.fn]} ({node.fn})"
    if isinstance(node, ir.Ternary):
        then, other = never_bool(node.then), never_bool(node.other)
        return None if then is None or other is None else (then if then == other else f"{then} or {other}")
    return None


#: Conversions of a literal string that either always or never succeed: checked at load.
_CONVERSIONS = ("timestamp", "duration")


def constant_failures(root: ir.Node) -> list[str]:
    """`timestamp("2026-09-01")` (Scrip's own marketing rule) or `duration("1d")`: a conversion of
    a literal string that can never succeed, so every event reaching it errors (a condition is
    then SKIPPED_ERROR forever, an amount fails the event). One line per such call, with why."""
    from .errors import CelEvalError
    from .library import ROW

    failures: list[str] = []

    def visit(node, bound) -> None:
        if (isinstance(node, ir.Call) and node.fn in _CONVERSIONS and node.target is None and len(node.args) == 1
                and isinstance(node.args[0], ir.Literal) and isinstance(node.args[0].value, str)):
            try:
                ROW[node.fn](node.args[0].value)
            except CelEvalError as e:
                failures.append(f"{node.fn}({node.args[0].value!r}) can never be evaluated: {e}")

    ir.walk_scoped(root, visit)
    return failures
