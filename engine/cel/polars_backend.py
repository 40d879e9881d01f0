"""Vectorised path: compile the IR to one `polars.Expr`, or decline with `NotVectorisable`.

A Polars null means "CEL error or absent", so Kleene `&`/`|` are exactly CEL's
error-absorbing `&&`/`||`. Every node is compiled to a `Typed` (expression + static CEL
kind), which lets ill-typed operations become all-null error literals at compile time.
Anything that could differ from the row path on some row is declined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from . import ir
from .errors import CelEvalError, NotVectorisable
from .library import ROW, VEC
from .polars_types import ERROR, Typed, error_of, from_column, literal, strict


@dataclass(frozen=True)
class PolarsContext:
    """Variables available to the frame: name -> (expression, its Polars dtype)."""

    variables: dict[str, tuple[pl.Expr, pl.DataType]] = field(default_factory=dict)


def to_polars(node: ir.Node, ctx: PolarsContext) -> pl.Expr:
    """The expression; it may be a constant literal, so use it in `with_columns` (which
    broadcasts) rather than alone in `select`."""
    return _compile(node, ctx).expr


def _compile(node: ir.Node, ctx: PolarsContext) -> Typed:
    return _COMPILERS[type(node)](node, ctx)


def _literal(node: ir.Literal, ctx) -> Typed:
    return literal(node.value)


def _ident(node: ir.Ident, ctx) -> Typed:
    if node.name not in ctx.variables:
        raise NotVectorisable(f"variable '{node.name}' is not in the frame")
    expr, dtype = ctx.variables[node.name]
    return from_column(expr, dtype)


def _field(operand: Typed, name: str) -> Typed:
    """A struct field; absent from the dtype -> all-null; a null field is absent."""
    if operand.kind != "map":
        if operand.kind in ("list", "error"):
            return ERROR
        return ERROR
    fields = {f.name: f.dtype for f in operand.dtype.fields}
    if name not in fields:
        return ERROR
    return from_column(operand.expr.struct.field(name), fields[name])


def _select(node: ir.Select, ctx) -> Typed:
    return _field(_compile(node.operand, ctx), node.field)


def _has(node: ir.Has, ctx) -> Typed:
    operand = _compile(node.operand, ctx)
    if operand.kind != "map":
        return error_of("bool")
    if node.field not in {f.name for f in operand.dtype.fields}:
        return Typed(strict(pl.lit(False), operand), "bool", pl.Boolean())
    present = operand.expr.struct.field(node.field).is_not_null()
    return Typed(strict(present, operand), "bool", pl.Boolean())


def _index(node: ir.Index, ctx) -> Typed:
    operand, index = _compile(node.operand, ctx), _compile(node.index, ctx)
    if operand.kind == "map":
        if index.is_const and isinstance(index.const, str):
            return _field(operand, index.const)
        raise NotVectorisable("struct index with a non-literal or non-string key")
    if operand.kind != "list":
        if operand.kind == "error":
            return ERROR
        return ERROR
    if index.kind not in ("int", "uint"):
        if index.kind in ("double", "error"):
            raise NotVectorisable(f"list index of kind {index.kind}")
        return ERROR
    i = index.expr.cast(pl.Int64, strict=False) if index.kind == "uint" else index.expr
    picked = operand.expr.list.get(pl.when(i >= 0).then(i).otherwise(None),
                                   null_on_oob=True)
    element = from_column(picked, operand.dtype.inner)
    return Typed(strict(element.expr, index), element.kind, element.dtype)


def _call(node: ir.Call, ctx) -> Typed:
    args = [_compile(a, ctx) for a in ((node.target,) if node.target else ()) + node.args]
    if all(a.is_const for a in args) and node.fn in ROW:
        return _fold(node.fn, args)
    fn = VEC.get(node.fn)
    if fn is None:
        raise NotVectorisable(f"function '{node.fn}' has no vectorised form")
    if any(a.kind == "error" for a in args):
        return ERROR
    try:
        return fn(*args)
    except TypeError:  # wrong number of arguments: no such overload
        return ERROR


def _fold(fn: str, args: list[Typed]) -> Typed:
    """Constant arguments: evaluate once with the row half, so both paths agree by design."""
    try:
        return literal(ROW[fn](*[a.const for a in args]))
    except CelEvalError:
        return ERROR
    except TypeError:
        return ERROR


def _binary(node: ir.BinaryOp, ctx) -> Typed:
    if node.op == "in" and isinstance(node.right, ir.ListExpr):
        return _in_literal_list(node, ctx)
    left, right = _compile(node.left, ctx), _compile(node.right, ctx)
    if left.is_const and right.is_const:
        return _fold(node.op, [left, right])
    if "error" in (left.kind, right.kind):
        return error_of("bool") if node.op in ("==", "!=", "<", "<=", ">", ">=", "in") \
            else ERROR
    return VEC[node.op](left, right)


def _in_literal_list(node: ir.BinaryOp, ctx) -> Typed:
    """`x in [lit, ...]`: equality against each literal, exactly as `==` vectorises."""
    left = _compile(node.left, ctx)
    items = [_compile(i, ctx) for i in node.right.items]
    if not all(i.is_const for i in items):
        raise NotVectorisable("`in` over a list literal with non-constant items")
    if left.kind == "error":
        return error_of("bool")
    found = pl.lit(False)
    for item in items:
        eq = VEC["=="](left, item).expr
        found = found | eq
    return Typed(strict(found, left), "bool", pl.Boolean())


def _neg(node: ir.Neg, ctx) -> Typed:
    operand = _compile(node.operand, ctx)
    if operand.is_const:
        return _fold("neg", [operand])
    return VEC["neg"](operand)


def _as_bool(t: Typed) -> pl.Expr:
    """A boolean operand of a logical operator; any other kind is an error (null)."""
    return t.expr if t.kind == "bool" else pl.lit(None, dtype=pl.Boolean)


def _not(node: ir.Not, ctx) -> Typed:
    operand = _compile(node.operand, ctx)
    return Typed(~_as_bool(operand), "bool", pl.Boolean())


def _and(node: ir.And, ctx) -> Typed:
    left, right = _compile(node.left, ctx), _compile(node.right, ctx)
    return Typed(_as_bool(left) & _as_bool(right), "bool", pl.Boolean())


def _or(node: ir.Or, ctx) -> Typed:
    left, right = _compile(node.left, ctx), _compile(node.right, ctx)
    return Typed(_as_bool(left) | _as_bool(right), "bool", pl.Boolean())


def _ternary(node: ir.Ternary, ctx) -> Typed:
    cond = _compile(node.cond, ctx)
    then, other = _compile(node.then, ctx), _compile(node.other, ctx)
    if then.kind == "error":
        then = error_of(other.kind)
    if other.kind == "error":
        other = error_of(then.kind)
    if then.kind != other.kind or then.dtype != other.dtype:
        raise NotVectorisable(f"ternary branches of kinds {then.kind} and {other.kind}")
    c = _as_bool(cond)
    out = pl.when(c.is_null()).then(None).when(c).then(then.expr).otherwise(other.expr)
    return Typed(out, then.kind, then.dtype)


def _declined(reason: str):
    def compile_(node, ctx):
        raise NotVectorisable(reason)
    return compile_


_COMPILERS = {
    ir.Literal: _literal, ir.Ident: _ident, ir.Select: _select, ir.Has: _has,
    ir.Index: _index, ir.Call: _call, ir.BinaryOp: _binary, ir.Neg: _neg, ir.Not: _not,
    ir.And: _and, ir.Or: _or, ir.Ternary: _ternary,
    ir.ListExpr: _declined("list values have no null-free columnar form here"),
    ir.MapExpr: _declined("map values have no null-free columnar form here"),
    ir.Comprehension: _declined("comprehensions run on the row path"),
}
