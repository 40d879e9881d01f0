"""CEL text -> IR: cel-python's lark parser, then a tree walk into `ir` nodes.

Also enforces the load-time limits of semantics.md s6 (size, nesting, bounded cost),
so a rule that could explode at run time is rejected when programs are loaded.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path

import lark
from celpy import celparser
from celpy.celparser import CELParseError, CELParser

from . import ir
from .errors import CelLimitError, CelSyntaxError
from .values import INT_MAX, INT_MIN, UINT_MAX, CelUint

MAX_BYTES = 4096
MAX_DEPTH = 32
MACROS = frozenset(("all", "exists", "exists_one", "map", "filter"))
NAMESPACED = frozenset(("sets.contains", "sets.intersects", "sets.equivalent"))

_BINARY = {
    "relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=",
    "relation_eq": "==", "relation_ne": "!=", "relation_in": "in",
    "addition_add": "+", "addition_sub": "-",
    "multiplication_mul": "*", "multiplication_div": "/", "multiplication_mod": "%",
}


def parse(text: str) -> ir.Node:
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise CelLimitError(f"expression is longer than {MAX_BYTES} bytes")
    try:
        tree = _parser().parse(text)
        node = _Builder().build(tree)
    except CELParseError as exc:
        where = f"line {exc.line}, column {exc.column}: " if exc.line else ""
        first = str(exc.args[0]).strip().splitlines()
        raise CelSyntaxError(f"syntax error at {where}{' | '.join(first)}") from None
    except RecursionError:
        raise CelLimitError(f"expression is nested deeper than {MAX_DEPTH}") from None
    if _depth(node) > MAX_DEPTH:
        raise CelLimitError(f"expression is nested deeper than {MAX_DEPTH}")
    _check_cost(node, inside_unbounded=False)
    return node


def _parser() -> CELParser:
    """cel-python's parser. Lark builds its LALR tables in ~0.23 s, an eighth of a tiny `perkflow
    run`'s start-up, and once per process: they are cached in the user's cache folder (lark's own
    `cache`, keyed by a hash of the grammar and options, rebuilt when either changes). celpy's
    constructor is called with lark's `cache` added rather than copying its options here, so
    the parser is exactly celpy's."""
    if CELParser.CEL_PARSER is None:
        cache = _cache_file()
        plain = celparser.Lark
        if cache is not None:
            celparser.Lark = functools.partial(plain, cache=str(cache))
        try:
            CELParser()
        finally:
            celparser.Lark = plain
    return CELParser()


def _cache_file() -> Path | None:
    """Where lark keeps the tables: a folder only this user can write (the cache is a pickle,
    and loading one runs code), or none, and lark builds the tables each time."""
    try:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perkflow"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except (OSError, RuntimeError):  # RuntimeError: no home folder
        return None
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not os.access(folder, os.W_OK):
        return None
    return folder / f"cel-lark-{lark.__version__}.pickle"


def _depth(node: ir.Node) -> int:
    """Nesting depth; a chain of the same `&&`/`||` counts as one level (it is flat)."""
    kids = ir.children(node)
    if isinstance(node, (ir.And, ir.Or)):
        kids = _flatten(node, type(node))
    return 1 + max((_depth(k) for k in kids), default=0)


def _flatten(node: ir.Node, cls: type) -> list:
    if isinstance(node, cls):
        return _flatten(node.left, cls) + _flatten(node.right, cls)
    return [node]


def _check_cost(node: ir.Node, inside_unbounded: bool, parts: frozenset = frozenset()) -> None:
    """Reject a comprehension over a non-literal range nested in another such one, unless its
    range is a part of an enclosing comprehension's element (`parts`: their iteration
    variables). `event.items.exists(i, i.tags.exists(t, t == "organic"))` visits each item's
    own tags: all the inner ranges together are pieces of the one payload, so its cost is linear
    in the payload's size and bounded; `event.items.all(x, event.items.exists(y, x == y))`
    visits the whole list again for every element, which is what cannot be bounded."""
    if isinstance(node, ir.Comprehension):
        part = _part_of(node.range, parts)
        unbounded = not isinstance(node.range, (ir.ListExpr, ir.MapExpr)) and not part
        if unbounded and inside_unbounded:
            raise CelLimitError("cost cannot be bounded: a comprehension over a "
                                "non-literal range nested in another one")
        _check_cost(node.range, inside_unbounded, parts)
        inner = parts | {node.var} if (unbounded or part) else parts
        for k in (node.step, node.guard):
            if k is not None:
                _check_cost(k, inside_unbounded or unbounded, inner)
        return
    for k in ir.children(node):
        _check_cost(k, inside_unbounded, parts)


def _part_of(node: ir.Node, parts: frozenset) -> bool:
    """Is `node` an element variable in `parts`, or a field / index path into one (`i.tags`)?"""
    while isinstance(node, (ir.Select, ir.Index)):
        node = node.operand
    return isinstance(node, ir.Ident) and node.name in parts


class _Builder:
    """Walks cel-python's lark tree; one method per grammar rule that carries meaning."""

    parens = 0  # parentheses open around the node being built (r_paren_expr)

    def build(self, t: lark.Tree | lark.Token) -> ir.Node:
        method = getattr(self, "r_" + t.data, None)
        if method is not None:
            return method(t)
        kids = [c for c in t.children if isinstance(c, lark.Tree)]
        if len(kids) == 1 and len(t.children) == 1:  # pass-through rules
            return self.build(kids[0])
        raise CelSyntaxError(f"unsupported syntax: {t.data}")

    def r_expr(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        c, a, b = t.children
        return ir.Ternary(self.build(c), self.build(a), self.build(b))

    def r_conditionalor(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        return ir.Or(self.build(t.children[0]), self.build(t.children[1]))

    def r_conditionaland(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        return ir.And(self.build(t.children[0]), self.build(t.children[1]))

    def _binary(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        op_tree, right = t.children
        left = op_tree.children[0]
        return ir.BinaryOp(_BINARY[op_tree.data], self.build(left), self.build(right))

    r_relation = r_addition = r_multiplication = _binary

    def r_unary(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        op, operand = t.children
        inner = self.build(operand)
        return ir.Not(inner) if op.data == "unary_not" else ir.Neg(inner)

    def r_paren_expr(self, t):
        # Parentheses leave no node, so the tree's depth does not see them: `((((x))))` 40 deep
        # loaded (and 64 deep failed only by running out of stack). Their own nesting counts
        # against the same limit (semantics.md 6: "nested deeper than 32").
        self.parens += 1
        if self.parens > MAX_DEPTH:
            raise CelLimitError(f"expression is nested deeper than {MAX_DEPTH} (parentheses)")
        try:
            return self.build(t.children[0])
        finally:
            self.parens -= 1

    def r_member_dot(self, t):
        return ir.Select(self.build(t.children[0]), str(t.children[1]))

    def r_member_index(self, t):
        return ir.Index(self.build(t.children[0]), self.build(t.children[1]))

    def r_member_object(self, t):
        raise CelSyntaxError("message construction is not supported")

    def r_member_dot_arg(self, t):
        target_tree, name = t.children[0], str(t.children[1])
        args = self._args(t.children[2] if len(t.children) > 2 else None)
        target = self.build(target_tree)
        qualified = _qualified_name(target)
        if qualified is not None and f"{qualified}.{name}" in NAMESPACED:
            return ir.Call(f"{qualified}.{name}", None, args)
        if name in MACROS:
            return self._macro(name, target, args)
        return ir.Call(name, target, args)

    def _macro(self, name, target, args):
        if not args or not isinstance(args[0], ir.Ident):
            raise CelSyntaxError(f"{name}() macro needs an identifier as first argument")
        var = args[0].name
        if name == "map" and len(args) == 3:
            return ir.Comprehension("map", target, var, args[2], guard=args[1])
        if len(args) != 2:
            raise CelSyntaxError(f"{name}() macro takes 2 arguments")
        return ir.Comprehension(name, target, var, args[1])

    def r_ident_arg(self, t):
        name = str(t.children[0])
        args = self._args(t.children[1] if len(t.children) > 1 else None)
        if name == "now" and not args:  # `now()` is the variable `now` (semantics.md s6)
            return ir.Ident("now")
        if name == "has":
            if len(args) != 1 or not isinstance(args[0], ir.Select):
                raise CelSyntaxError("has() needs a field selection argument, e.g. has(a.b)")
            return ir.Has(args[0].operand, args[0].field)
        return ir.Call(name, None, args)

    def r_dot_ident_arg(self, t):
        return self.r_ident_arg(t)

    def r_ident(self, t):
        return ir.Ident(str(t.children[0]))

    r_dot_ident = r_ident

    def r_list_lit(self, t):
        return ir.ListExpr(self._args(t.children[0] if t.children else None))

    def r_map_lit(self, t):
        if not t.children:
            return ir.MapExpr(())
        items = [self.build(c) for c in t.children[0].children]
        return ir.MapExpr(tuple(zip(items[0::2], items[1::2])))

    def _args(self, exprlist) -> tuple:
        if exprlist is None:
            return ()
        return tuple(self.build(c) for c in exprlist.children)

    def r_literal(self, t):
        tok = t.children[0]
        return ir.Literal(_literal(tok.type, str(tok)))


def _qualified_name(node: ir.Node) -> str | None:
    if isinstance(node, ir.Ident):
        return node.name
    if isinstance(node, ir.Select):
        base = _qualified_name(node.operand)
        return None if base is None else f"{base}.{node.field}"
    return None


def _literal(kind: str, text: str) -> object:
    if kind == "INT_LIT":
        value = _int(text)
        if not INT_MIN <= value <= INT_MAX:
            raise CelSyntaxError(f"integer literal out of range: {text}")
        return value
    if kind == "UINT_LIT":
        value = _int(text[:-1])
        if not 0 <= value <= UINT_MAX:
            raise CelSyntaxError(f"unsigned literal out of range: {text}")
        return CelUint(value)
    if kind == "FLOAT_LIT":
        return float(text)
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        return _string(text, as_bytes=False)
    if kind == "BYTES_LIT":
        return _string(text[1:], as_bytes=True)
    if kind == "BOOL_LIT":
        return text == "true"
    if kind == "NULL_LIT":
        return None
    raise CelSyntaxError(f"unknown literal {text}")


def _int(text: str) -> int:
    neg = text.startswith("-")
    body = text[1:] if neg else text
    value = int(body[2:], 16) if body[:2].lower() == "0x" else int(body)
    return -value if neg else value


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", '"': '"', "'": "'", "\\": "\\", "`": "`", "?": "?"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-3][0-7]{2}|.)",
                     re.S)


def _string(text: str, as_bytes: bool) -> str | bytes:
    raw = text[0] in "rR"
    if raw:
        text = text[1:]
    quote = 3 if text[:3] in ('"""', "'''") else 1
    body = text[quote:-quote]
    if raw:
        return body.encode("utf-8") if as_bytes else body
    out: list[bytes] = []
    pos = 0
    for m in _ESCAPE.finditer(body):
        out.append(body[pos:m.start()].encode("utf-8"))
        pos = m.end()
        esc = m.group(1)
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc].encode("utf-8"))
        elif esc[0] in "xX" or esc[0].isdigit():
            code = int(esc[1:], 16) if esc[0] in "xX" else int(esc, 8)
            out.append(bytes([code]) if as_bytes else chr(code).encode("utf-8"))
        elif esc[0] in "uU":
            if as_bytes:
                raise CelSyntaxError(f"\\{esc[0]} escape is not allowed in bytes literals")
            code = int(esc[1:], 16)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise CelSyntaxError(f"invalid code point escape \\{esc}")
            out.append(chr(code).encode("utf-8"))
        else:
            raise CelSyntaxError(f"invalid escape sequence \\{esc}")
    out.append(body[pos:].encode("utf-8"))
    data = b"".join(out)
    return data if as_bytes else data.decode("utf-8")
