"""`perkflow verify`: recompute the hash chain and check every ledger invariant.

Each check is a SQL section returning the violating rows (sql/verify.sql, sql/checks.sql); the
first violation is reported with its location.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from engine.ledger.sqlfiles import sections

#: (file, section, what it means when rows come back), in the order they are reported.
CHECKS = [
    ("verify.sql", "entry_hashes", "a journal entry or its postings changed after they were written"),
    ("verify.sql", "batch_chain", "a batch's entries were changed, added or removed after commit"),
    ("checks.sql", "postings_sum_to_zero", "an entry's postings do not sum to zero (or postings lost their entry)"),
    ("checks.sql", "balances_match_postings", "materialised balances differ from the sum of postings"),
    ("checks.sql", "no_duplicate_entries", "a journal entry is duplicated"),
    ("verify.sql", "lot_remainders", "what LOT assets' lots hold differs from the balances"),
    ("verify.sql", "summary_identity", "issued - redeemed - expired - forfeited differs from the current balance"),
    ("verify.sql", "negative_balances", "a balance is negative without an entry allowed to overdraw it"),
    ("verify.sql", "tier_levels_match_history", "a participant's tier level differs from its tier history, "
                                                "or a change does not start from the level before it"),
]


@dataclass
class Violation:
    check: str
    meaning: str
    columns: list[str]
    rows: list[tuple]


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def verify(con: duckdb.DuckDBPyConnection, limit: int = 5) -> Report:
    report = Report()
    for file, name, meaning in CHECKS:
        cur = con.execute(sections(file)[name])
        rows = cur.fetchmany(limit)
        cols = [d[0] for d in cur.description]
        cur.fetchall()  # finish the result before the next statement
        report.checked.append(name)
        if rows:
            report.violations.append(Violation(name, meaning, cols, rows))
    return report
