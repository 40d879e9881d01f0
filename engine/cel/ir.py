"""The typed intermediate representation both backends compile from.

One frozen dataclass per concept, so backends dispatch on the node type and the
rule planner can walk the tree without knowing anything about lark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Literal:
    value: object  # already in the Python value representation (see values.py)


@dataclass(frozen=True)
class Ident:
    name: str


@dataclass(frozen=True)
class Select:
    operand: Node
    field: str


@dataclass(frozen=True)
class Has:
    """`has(operand.field)`: presence test, never reads the field's value."""

    operand: Node
    field: str


@dataclass(frozen=True)
class Index:
    operand: Node
    index: Node


@dataclass(frozen=True)
class Call:
    """A function (`target is None`) or method call; operators are `BinaryOp`/`Neg`."""

    fn: str
    target: Node | None
    args: tuple[Node, ...]


@dataclass(frozen=True)
class BinaryOp:
    op: str  # one of + - * / % == != < <= > >= in
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg:
    operand: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Ternary:
    cond: Node
    then: Node
    other: Node


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class MapExpr:
    entries: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True)
class Comprehension:
    """A macro over a list or map: kind is all/exists/exists_one/map/filter.

    `step` is the predicate (all, exists, exists_one, filter) or the transform (map);
    `guard` is the optional filter of the three-argument `map(x, guard, transform)`.
    """

    kind: str
    range: Node
    var: str
    step: Node
    guard: Node | None = None


Node = Union[
    Literal, Ident, Select, Has, Index, Call, BinaryOp, Neg, Not, And, Or, Ternary,
    ListExpr, MapExpr, Comprehension,
]


def walk_scoped(node: Node, visit, bound: frozenset = frozenset()) -> None:
    """Call visit(node, bound) on every node, top down, where `bound` holds the names the
    enclosing comprehensions bind (a macro's variable may shadow a global); a visit that returns
    True stops the walk below that node."""
    if visit(node, bound):
        return
    if isinstance(node, Comprehension):
        walk_scoped(node.range, visit, bound)
        for k in (node.step, node.guard):
            if k is not None:
                walk_scoped(k, visit, bound | {node.var})
        return
    for k in children(node):
        walk_scoped(k, visit, bound)


def children(node: Node) -> tuple[Node, ...]:
    """Direct sub-nodes, for generic walks (depth, variables, paths)."""
    if isinstance(node, (Select, Has)):
        return (node.operand,)
    if isinstance(node, Index):
        return (node.operand, node.index)
    if isinstance(node, Call):
        return ((node.target,) if node.target is not None else ()) + node.args
    if isinstance(node, (BinaryOp, And, Or)):
        return (node.left, node.right)
    if isinstance(node, (Neg, Not)):
        return (node.operand,)
    if isinstance(node, Ternary):
        return (node.cond, node.then, node.other)
    if isinstance(node, ListExpr):
        return node.items
    if isinstance(node, MapExpr):
        return tuple(x for kv in node.entries for x in kv)
    if isinstance(node, Comprehension):
        return (node.range, node.step) + ((node.guard,) if node.guard is not None else ())
    return ()
