"""Blocking asset checks on `ledger`: the same checks as `perkflow verify` (engine.verify.CHECKS:
the hash chain and every invariant, sections of sql/verify.sql and sql/checks.sql), run by
engine.verify on a memory-capped read-only connection.

Each section returns the rows that violate its invariant; zero rows is a pass. A failed check
(severity ERROR, blocking) stops `balances` from materialising in the same run.
"""


import dagster as dg

from engine import verify
from engine.ledger import db
from engine.verify import CHECKS as VERIFY_CHECKS

from . import assets
from .resources import LedgerDatabase

SAMPLE = 20  # violating rows shown in the check's metadata

#: check name -> (SQL file, what a violation means), exactly those of `perkflow verify`
CHECKS = {name: (file, meaning) for file, name, meaning in VERIFY_CHECKS}
#: the checks computed in Python over the rows their SQL reads, and where they are
STREAMED = {"batch_chain": "engine/verify.py batch_chain, over sql/verify.sql -- name: chain_*",
            "entry_seqs": "engine/verify.py entry_seqs, over sql/verify.sql -- name: entry_seqs",
            "catalog_hashes": "engine/catalog/integrity.py, over sql/verify.sql -- name: catalog_*",
            "stored_definitions": "engine/verify.py stored_definitions, over sql/verify.sql -- name: stored_*"}


def violations(con, name: str) -> tuple[int, list[str], list[tuple]]:
    """(number of violating rows, column names, the first SAMPLE of them) for one check."""
    return verify.violations(con, name, SAMPLE)


def _ledger_check(name: str, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=assets.ledger, name=name, description=description, blocking=True, pool=assets.POOL)
    def _check(ledger_db: LedgerDatabase) -> dg.AssetCheckResult:
        with ledger_db.connect(read_only=True) as con:
            db.limit_memory(con)
            count, columns, sample = violations(con, name)
        where = STREAMED.get(name, f"sql/{CHECKS[name][0]} -- name: {name}")
        metadata: dict = {"violations": count, "sql": dg.MetadataValue.text(where)}
        if count:
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in sample]
            metadata["first_violations"] = dg.MetadataValue.md("\n".join(lines))
        return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)

    return _check


ledger_checks = [_ledger_check(name, f"Fails when {meaning}.") for name, (_, meaning) in CHECKS.items()]
