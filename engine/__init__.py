"""perkflow engine: program catalog, CEL compiler, event readers, rule execution and the DuckDB ledger.

Nothing in this package imports Dagster: the engine is usable (and tested) on its own;
`pipelines/` wraps it for orchestration.
"""
