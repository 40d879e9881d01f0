"""Which parts of a variable (`participant`) a CEL expression reads.

The running-state path (engine/running.py) uses it twice: to build only the parts of the
participant struct an expression reads (building all of it, for every rule, every round, was
most of its time), and to re-evaluate an event only when a part it may read has changed.

Every use of the variable counts with its longest literal path: `participant.counters.purchases`,
`participant["counters"]["purchases"]` and `has(participant.counters.purchases)` read one counter;
a use that stops at a map (`"k" in participant.counters`, `participant.counters[k]`, a macro over
it, `size(participant.counters)`) reads all of that map; `participant` alone reads everything.
Over-approximating is always safe (more is built, more is re-evaluated); missing a read is not,
so anything not recognised as a literal path counts as reading what lies below it.
"""

from __future__ import annotations

from engine.cel import CelProgram
from engine.cel import ir

#: What an expression reads of the variable: field -> the keys read below it (None: all of it).
#: A Reads of None means the whole variable.
Reads = dict[str, frozenset[str] | None] | None


def reads(prog: CelProgram, name: str = "participant") -> Reads:
    """The parts of variable `name` that `prog` reads ({} when it does not read it)."""
    uses: list[tuple[str, ...]] = []

    def path(node: ir.Node, bound: frozenset) -> tuple[str, ...] | None:
        """The literal path below `name` that `node` denotes, or None if it is not one."""
        if isinstance(node, ir.Ident):
            return () if node.name == name and name not in bound else None
        if isinstance(node, (ir.Select, ir.Has)):
            base = path(node.operand, bound)
            return None if base is None else base + (node.field,)
        if isinstance(node, ir.Index) and isinstance(node.index, ir.Literal) and isinstance(node.index.value, str):
            base = path(node.operand, bound)
            return None if base is None else base + (node.index.value,)
        return None

    def visit(node: ir.Node, bound: frozenset) -> bool:
        p = path(node, bound)
        if p is not None:  # the longest path: its operands are part of this one use
            uses.append(p)
        return p is not None

    ir.walk_scoped(prog.ir, visit)
    return merge(*(_one(u) for u in uses))


def _one(use: tuple[str, ...]) -> Reads:
    if not use:
        return None
    return {use[0]: frozenset(use[1:2]) if len(use) > 1 else None}


def merge(*parts: Reads) -> Reads:
    """Everything any of `parts` reads."""
    out: dict[str, frozenset[str] | None] = {}
    for part in parts:
        if part is None:
            return None
        for field, keys in part.items():
            have = out.get(field, frozenset())
            out[field] = None if keys is None or have is None else have | keys
    return out


def keys(r: Reads, field: str, every: list[str]) -> list[str]:
    """The keys of `field` (of all `every`, in that order) that `r` reads."""
    if r is None or (field in r and r[field] is None):
        return list(every)
    wanted = r.get(field, frozenset())
    return [k for k in every if k in wanted]


def reads_field(r: Reads, field: str) -> bool:
    return r is None or field in r
