"""Row path: compile the IR to nested closures `f(activation) -> value`.

Compiling once into closures (instead of walking the tree per row) keeps the row path
cheap; errors are `CelEvalError` exceptions, absorbed only where CEL says so
(`&&`, `||`, `all`, `exists`).
"""

from __future__ import annotations

from typing import Callable

from . import ir
from . import values as v
from .errors import CelEvalError
from .library import ROW
from .values import CelType, kind, no_overload

Closure = Callable[[dict], object]


def to_python(node: ir.Node) -> Closure:
    return _COMPILERS[type(node)](node)


def _literal(node: ir.Literal) -> Closure:
    value = node.value
    return lambda act: value


def _ident(node: ir.Ident) -> Closure:
    name = node.name
    type_value = CelType(name) if name in v.TYPE_NAMES else None

    def ident(act):
        try:
            return act[name]
        except KeyError:
            if type_value is not None:
                return type_value
            raise CelEvalError(f"undeclared reference to '{name}'") from None
    return ident


def _select(node: ir.Select) -> Closure:
    operand, field = to_python(node.operand), node.field

    def select(act):
        m = operand(act)
        if kind(m) != "map":
            raise CelEvalError(f"type '{kind(m)}' does not support field selection")
        found = v.map_lookup(m, field)
        if found is v._MISSING:
            raise CelEvalError(f"no such key: '{field}'")
        return found
    return select


def _has(node: ir.Has) -> Closure:
    operand, field = to_python(node.operand), node.field

    def has(act):
        m = operand(act)
        if kind(m) != "map":
            raise CelEvalError(f"has() is not supported on type '{kind(m)}'")
        return v.map_lookup(m, field) is not v._MISSING
    return has


def _index(node: ir.Index) -> Closure:
    operand, index = to_python(node.operand), to_python(node.index)

    def at(act):
        c, i = operand(act), index(act)
        kc, ki = kind(c), kind(i)
        if kc == "list":
            if ki == "double" and i.is_integer():
                i = int(i)
            elif ki not in ("int", "uint"):
                raise no_overload("_[_]", c, i)
            if not 0 <= i < len(c):
                raise CelEvalError(f"index out of bounds: {int(i)}")
            return c[int(i)]
        if kc == "map":
            found = v.map_lookup(c, i)
            if found is v._MISSING:
                raise CelEvalError(f"no such key: {i!r}")
            return found
        raise no_overload("_[_]", c, i)
    return at


def _call(node: ir.Call) -> Closure:
    fn = ROW.get(node.fn)
    parts = [to_python(a) for a in ((node.target,) if node.target else ()) + node.args]
    if fn is None:
        name = node.fn

        def unbound(act):
            raise CelEvalError(f"unbound function '{name}'")
        return unbound

    def call(act):
        args = [p(act) for p in parts]
        try:
            return fn(*args)
        except TypeError:  # wrong number of arguments
            raise no_overload(node.fn, *args) from None
    return call


def _binary(node: ir.BinaryOp) -> Closure:
    fn, left, right = ROW[node.op], to_python(node.left), to_python(node.right)
    return lambda act: fn(left(act), right(act))


def _neg(node: ir.Neg) -> Closure:
    fn, operand = ROW["neg"], to_python(node.operand)
    return lambda act: fn(operand(act))


def _not(node: ir.Not) -> Closure:
    operand = to_python(node.operand)

    def not_(act):
        x = operand(act)
        if x is True or x is False:
            return not x
        raise no_overload("!_", x)
    return not_


def _logical(absorbing: bool) -> Callable[[ir.Node], Closure]:
    """`&&` (absorbing=False) / `||` (absorbing=True): the absorbing value wins over errors."""
    def compile_(node) -> Closure:
        left, right = to_python(node.left), to_python(node.right)

        def logical(act):
            error = None
            try:
                x = left(act)
                if x is absorbing:
                    return absorbing
                if x is not (not absorbing):
                    error = no_overload("&&" if not absorbing else "||", x)
            except CelEvalError as exc:
                error = exc
            y = right(act)
            if y is absorbing:
                return absorbing
            if y is not (not absorbing):
                raise error or no_overload("&&" if not absorbing else "||", y)
            if error:
                raise error
            return y
        return logical
    return compile_


def _ternary(node: ir.Ternary) -> Closure:
    cond, then, other = to_python(node.cond), to_python(node.then), to_python(node.other)

    def ternary(act):
        c = cond(act)
        if c is True:
            return then(act)
        if c is False:
            return other(act)
        raise no_overload("_?_:_", c)
    return ternary


def _list(node: ir.ListExpr) -> Closure:
    items = [to_python(i) for i in node.items]
    return lambda act: [i(act) for i in items]


def _map(node: ir.MapExpr) -> Closure:
    entries = [(to_python(k), to_python(x)) for k, x in node.entries]

    def map_(act):
        out = {}
        for k, x in entries:
            key = k(act)
            if kind(key) not in ("int", "uint", "bool", "string"):
                raise CelEvalError(f"unsupported map key type {kind(key)}")
            if v.map_lookup(out, key) is not v._MISSING:
                raise CelEvalError(f"duplicate map key {key!r}")
            out[key] = x(act)
        return out
    return map_


def _comprehension(node: ir.Comprehension) -> Closure:
    rng, step, var, kind_ = to_python(node.range), to_python(node.step), node.var, node.kind
    guard = to_python(node.guard) if node.guard is not None else None

    def predicate(scope, name):
        x = step(scope)
        if x is True or x is False:
            return x
        raise no_overload(name, x)

    def comprehension(act):
        r = rng(act)
        if kind(r) not in ("list", "map"):
            raise no_overload(kind_, r)
        scope = dict(act)
        if kind_ in ("all", "exists"):
            decisive = kind_ == "exists"
            error = None
            for x in r:
                scope[var] = x
                try:
                    if predicate(scope, kind_) is decisive:
                        return decisive
                except CelEvalError as exc:
                    error = error or exc
            if error:
                raise error
            return not decisive
        if kind_ == "exists_one":
            count = 0
            for x in r:
                scope[var] = x
                count += predicate(scope, kind_)
            return count == 1
        out = []
        for x in r:
            scope[var] = x
            if kind_ == "filter":
                if predicate(scope, kind_):
                    out.append(x)
            elif guard is None or _truth(guard(scope)):
                out.append(step(scope))
        return out
    return comprehension


def _truth(x) -> bool:
    if x is True or x is False:
        return x
    raise no_overload("map", x)


_COMPILERS = {
    ir.Literal: _literal, ir.Ident: _ident, ir.Select: _select, ir.Has: _has,
    ir.Index: _index, ir.Call: _call, ir.BinaryOp: _binary, ir.Neg: _neg, ir.Not: _not,
    ir.And: _logical(False), ir.Or: _logical(True), ir.Ternary: _ternary,
    ir.ListExpr: _list, ir.MapExpr: _map, ir.Comprehension: _comprehension,
}
