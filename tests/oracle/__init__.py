"""The one-event-at-a-time oracle of perkflow's behaviour contract (see README.md)."""

from tests.oracle.interpreter import OracleResult, Unsupported, run_oracle

__all__ = ["OracleResult", "Unsupported", "run_oracle"]
