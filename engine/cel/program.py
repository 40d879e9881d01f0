"""`compile_cel` and `CelProgram`: the one object the engine holds per expression."""

from __future__ import annotations

from . import ir
from .errors import CelEvalError
from .parse import parse
from .python_backend import to_python


class CelProgram:
    """A parsed, limit-checked expression with its static facts and both backends."""

    def __init__(self, text: str):
        self.text = text
        self.ir = parse(text)
        self._row = to_python(self.ir)
        variables, paths, functions = _analyse(self.ir)
        self.variables = frozenset(variables)
        self.paths = frozenset(paths)
        self.functions = frozenset(functions)

    def __repr__(self) -> str:
        return f"CelProgram({self.text!r})"

    def evaluate(self, activation: dict) -> object:
        """Row path: the CEL value, or `CelEvalError`."""
        try:
            return self._row(activation)
        except RecursionError:
            raise CelEvalError("value nested too deeply") from None

    def to_polars(self, ctx):
        """Vectorised path: a `polars.Expr`, or `NotVectorisable`. Null means error/absent."""
        from .polars_backend import to_polars
        return to_polars(self.ir, ctx)


def compile_cel(text: str) -> CelProgram:
    return CelProgram(text)


def _analyse(root: ir.Node) -> tuple[set, set, set]:
    """Root identifiers, dotted member paths read from them, and called function names.

    Comprehension variables are bound names, not roots, so they are excluded in scope.
    """
    variables: set[str] = set()
    paths: set[str] = set()
    functions: set[str] = set()

    def path_of(node, bound):
        if isinstance(node, ir.Ident):
            return None if node.name in bound else node.name
        if isinstance(node, ir.Select):
            base = path_of(node.operand, bound)
            return None if base is None else f"{base}.{node.field}"
        if isinstance(node, ir.Index) and isinstance(node.index, ir.Literal) \
                and isinstance(node.index.value, str):
            base = path_of(node.operand, bound)
            return None if base is None else f"{base}.{node.index.value}"
        return None

    def visit(node, bound) -> None:
        if isinstance(node, ir.Ident) and node.name not in bound:
            variables.add(node.name)
        if isinstance(node, (ir.Select, ir.Has, ir.Index)):
            p = path_of(node if not isinstance(node, ir.Has)
                        else ir.Select(node.operand, node.field), bound)
            if p is not None and "." in p:
                paths.add(p)
        if isinstance(node, ir.Call):
            functions.add(node.fn)

    ir.walk_scoped(root, visit)
    return variables, paths, functions
