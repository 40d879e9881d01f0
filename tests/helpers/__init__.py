"""Shared test helpers: writing event Parquet files and program YAML, running the CLI,
reading the ledger back. Expected values are always computed in the tests from the contract."""
