"""perkflow's CEL layer: parse once into our own IR, evaluate per row or vectorised.

See docs/cel.md for what each backend supports and the deliberate deviations from CEL.
"""

from .errors import CelError, CelEvalError, CelLimitError, CelSyntaxError, NotVectorisable
from .polars_backend import PolarsContext
from .program import CelProgram, compile_cel
from .values import CelUint, type_name

__all__ = [
    "compile_cel", "CelProgram", "CelError", "CelSyntaxError", "CelLimitError",
    "CelEvalError", "NotVectorisable", "PolarsContext", "CelUint", "type_name",
]
