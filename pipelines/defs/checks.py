"""Blocking asset checks on `ledger`: the invariants of sql/checks.sql.

Each `-- name:` section there returns the rows that violate its invariant; zero rows is a pass.
A failed check (severity ERROR, blocking) stops `balances` from materialising in the same run.
"""


import dagster as dg

from engine.ledger.sqlfiles import statement

from . import assets
from .resources import LedgerDatabase

SAMPLE = 20  # violating rows shown in the check's metadata

CHECKS = {
    "postings_sum_to_zero": "Every journal entry's postings sum to zero per asset (double entry).",
    "balances_match_postings": "Materialised account_balances equal the sum of postings, per account and bucket.",
    "no_duplicate_entries": "No journal entry id occurs twice (nor two entries for one event/rule version/action).",
}


def violations(con, name: str) -> tuple[int, list[str], list[tuple]]:
    """(number of violating rows, column names, the first SAMPLE of them) for one checks.sql section."""
    sql = statement("checks.sql", name)
    count = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    cur = con.execute(f"SELECT * FROM ({sql}) LIMIT {SAMPLE}")
    return count, [d[0] for d in cur.description], cur.fetchall()


def _ledger_check(name: str, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=assets.ledger, name=name, description=description, blocking=True, pool=assets.POOL)
    def _check(ledger_db: LedgerDatabase) -> dg.AssetCheckResult:
        with ledger_db.connect(read_only=True) as con:
            count, columns, sample = violations(con, name)
        metadata: dict = {"violations": count, "sql": dg.MetadataValue.text(f"sql/checks.sql -- name: {name}")}
        if count:
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in sample]
            metadata["first_violations"] = dg.MetadataValue.md("\n".join(lines))
        return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)

    return _check


postings_sum_to_zero = _ledger_check("postings_sum_to_zero", CHECKS["postings_sum_to_zero"])
balances_match_postings = _ledger_check("balances_match_postings", CHECKS["balances_match_postings"])
no_duplicate_entries = _ledger_check("no_duplicate_entries", CHECKS["no_duplicate_entries"])
