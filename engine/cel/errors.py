"""Exception types of the CEL layer.

Compile-time problems (`CelSyntaxError`, `CelLimitError`) and run-time problems
(`CelEvalError`) share the `CelError` base so program loading can catch one type.
`NotVectorisable` is deliberately *not* a `CelError`: it is not a user error but a
signal to the caller to fall back to the row path.
"""


class CelError(Exception):
    """Base class of every user-facing CEL error."""


class CelSyntaxError(CelError):
    """The expression does not parse; the message carries line and column."""


class CelLimitError(CelError):
    """The expression is too long, too deeply nested, or of unbounded cost."""


class CelEvalError(CelError):
    """Evaluating the expression failed (no such key, no matching overload, overflow...)."""


class NotVectorisable(Exception):
    """The Polars backend cannot express this expression exactly; use the row path."""
