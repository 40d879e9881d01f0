"""Error types that map onto the exit codes of semantics.md section 13.

`InputError` (exit 2) means the input or configuration is invalid and nothing was written.
Anything else escaping a run is an internal error (exit 1, nothing committed).
"""


class InputError(Exception):
    """Invalid input or configuration; the message names the file/row/field and what to do."""

    exit_code = 2


class CatalogError(InputError):
    """A program file does not validate."""


class NoLedgerError(InputError):
    """A DuckDB file that holds no perkflow ledger: what a first run (or replay) killed before its
    commit leaves. Read-only commands stop on it; a run or replay creates the ledger in it."""


class BalanceRangeError(InputError):
    """A batch would take an account's balance past what the ledger's DECIMAL(38, 18) holds
    (|balance| < 10^20): the run stops and nothing is written, never a wrapped balance."""

    def __init__(self, what: str):
        super().__init__(f"the batch would take {what} to 10^20 or more, past what the ledger holds exactly "
                         "(DECIMAL(38, 18)); nothing was written. Check the amounts of its rows.")


class LedgerBrokenError(Exception):
    """A ledger that a command must trust fails `perkflow verify` (exit 4, as verify's own)."""

    exit_code = 4


class DatabaseBusyError(Exception):
    """Another process holds the DuckDB write lock."""

    exit_code = 3
