"""The DuckDB ledger: connection, schema, and the batch writer."""
