"""perkflow engine: program catalog, CEL compiler, event readers, rule execution and the DuckDB ledger.

Nothing in this package imports Dagster: the engine is usable (and tested) on its own;
`pipelines/` wraps it for orchestration.
"""

import decimal

# Ledger amounts have up to 38 significant digits (DECIMAL(38, 18)); Python's default 28-digit
# context would silently round their sums in the sequential kernel. Exactness needs more.
decimal.DefaultContext.prec = 80
decimal.getcontext().prec = 80
