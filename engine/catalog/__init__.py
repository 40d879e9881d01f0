"""Program files -> a validated, compiled catalog (semantics.md 2.1).

`load_catalog(path)` reads one file or a directory of YAML/JSON program files, validates every
field, compiles every CEL expression, and returns a `Catalog`. Any problem raises `CatalogError`
naming the file, the rule and the field, before anything is written anywhere.
"""

from .compiled import Catalog, CompiledAction, CompiledProgram, CompiledRule
from .load import load_catalog

__all__ = ["Catalog", "CompiledAction", "CompiledProgram", "CompiledRule", "load_catalog"]
