"""`perkflow verify`: recompute the hash chain and check every ledger invariant.

Each check returns the violating rows, first violation first; the first violation is reported
with its location. All but one are a SQL section (sql/verify.sql, sql/checks.sql) of that name;
`batch_chain` streams the stored entry hashes through `engine.ledger.root.BatchRoot`, chunk by
chunk, as the writer fed them (a batch's hashes are never held whole).

Memory: every check is written so that DuckDB can stay within its memory cap (spilling joins,
aggregates and sorts to its temp folder); open the connection with `db.limit_memory` (the CLI
and the Dagster checks do) for verify's memory to stay flat as the ledger grows. Those whose
joins and aggregates grew with the ledger even so run in parts of ~ENTRIES_PER_PART entries (by a
hash of the entry id, or of the account's entity), the same violations in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from engine.catalog.integrity import COLUMNS as CATALOG_COLUMNS, catalog_breaks
from engine.ledger.db import define_hash_macros, define_id_macros, define_report_macros, execute
from engine.ledger.root import BatchRoot
from engine.ledger.sqlfiles import sections, statement

#: (file, check, what it means when rows come back), in the order they run and, within one batch, are
#: reported (`verify` orders violations by the earliest batch they name). `file`
#: holds the check's SQL section, or for `batch_chain` the statements it streams.
CHECKS = [
    ("verify.sql", "entry_hashes", "a journal entry or its postings changed after they were written"),
    ("verify.sql", "batch_chain", "a batch's entries were changed, added or removed after commit"),
    ("verify.sql", "entry_seqs", "the entries' seq numbers have a gap, a repeat or go back: entries were removed, "
                                 "added or moved"),
    ("verify.sql", "catalog_hashes", "a catalog row that entries depend on (a rule version's definition, a key an id "
                                     "is derived from) was changed or removed after commit"),
    ("verify.sql", "stored_definitions", "a view or macro stored in the ledger (what `balances`, the reports and "
                                         "`perkflow sql` read) differs from perkflow's definition of it"),
    ("verify.sql", "participant_ids", "a participant's external id was changed after commit (its id, which postings "
                                      "name, is no longer derived from it)"),
    ("checks.sql", "postings_sum_to_zero", "an entry's postings do not sum to zero, are fewer than two or all zero "
                                           "(or postings lost their entry)"),
    ("checks.sql", "entries_have_their_source", "an entry's event or operation is missing, not COMPLETED, "
                                                "or of another program"),
    ("checks.sql", "batch_counts", "a batch's stored counts do not reconcile, or differ from the entries, postings, "
                                   "events, operations or rejected rows the ledger holds"),
    ("checks.sql", "balances_match_postings", "materialised balances differ from the sum of postings"),
    ("checks.sql", "no_duplicate_entries", "a journal entry is duplicated"),
    ("checks.sql", "no_duplicate_keys", "a participant, enrolment or account is stored twice"),
    ("verify.sql", "lot_remainders", "what LOT assets' lots hold differs from the balances"),
    ("verify.sql", "summary_identity", "issued - redeemed - expired - forfeited differs from the current balance"),
    ("verify.sql", "negative_balances", "a balance is negative without an entry allowed to overdraw it "
                                       "(only a participant's or group's AVAILABLE may be)"),
    ("verify.sql", "tier_levels_match_history", "a participant's tier level differs from its tier history, "
                                                "or a change does not start from the level before it"),
]

#: Entry hashes per chunk streamed into a batch root (about 70 bytes each).
CHUNK_ROWS = 100_000
#: Entries per part of the checks read in parts (IN_PARTS and `summary_identity`): whole, W2 at 1M
#: events (2.9M entries) needed 100-150 MB of DuckDB memory for `entry_hashes` and
#: `summary_identity`, and the others more the larger the ledger.
ENTRIES_PER_PART = 1_000_000
#: The checks whose violations are read in parts ($part of $parts in their SQL), with the columns
#: their SQL orders them by (None: ORDER BY ALL).
IN_PARTS = {"entry_hashes": ["seq"], "postings_sum_to_zero": ["batch_id", "seq", "journal_entry_id", "asset_id"],
            "entries_have_their_source": ["seq"], "balances_match_postings": None,
            "no_duplicate_entries": None, "lot_remainders": None}

BATCH_CHAIN_COLUMNS = ["batch_id", "stored", "recomputed", "prev_root_hash", "problem"]
ENTRY_SEQS_COLUMNS = ["batch_id", "seq", "expected", "problem"]
STORED_DEFINITIONS_COLUMNS = ["kind", "name", "problem"]
PARTICIPANT_COLUMNS = ["batch_id", "external_id", "stored", "recomputed"]
EXPECTED_ROOT = ("expected_root", "the chain no longer reaches the root hash kept outside the ledger "
                                  "(--expect-root): batches were removed or rewritten since")


@dataclass
class Violation:
    check: str
    meaning: str
    columns: list[str]
    rows: list[tuple]
    count: int = 0  # violating rows in all (`rows` holds the first few)


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    #: the last batch and its stored root: what to keep outside the ledger file, to check later
    #: with `expect_root` that the chain still reaches it (None: a ledger of no batches)
    head: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.violations


def verify(con: duckdb.DuckDBPyConnection, limit: int = 5, chunk_rows: int = CHUNK_ROWS,
           expect_root: str | None = None) -> Report:
    """Every check; with `expect_root` (a batch root kept outside the file) also that the chain
    still reaches it: a batch whose stored root is it and equals the one recomputed. The last
    batches removed whole, or rewritten with recomputed hashes and roots, leave a chain that holds
    in itself; only a root kept elsewhere shows it (docs/security.md, "Tamper evidence")."""
    report, roots = Report(), {}
    for file, name, meaning in CHECKS:
        count, cols, rows = violations(con, name, limit, chunk_rows, roots)
        report.checked.append(name)
        if count:
            report.violations.append(Violation(name, meaning, cols, rows, count))
    head = con.execute(statement("verify.sql", "chain_head")).fetchall()
    report.head = {"batch_id": head[0][0], "root_hash": head[0][1]} if head else None
    if expect_root is not None:
        report.checked.append(EXPECTED_ROOT[0])
        expect_root = expect_root.strip().lower()
        if expect_root not in roots.values():
            head = report.head or {"batch_id": None, "root_hash": None}
            row = (None, expect_root, head["batch_id"], head["root_hash"], "no batch of the verified chain has this root")
            report.violations.append(Violation(*EXPECTED_ROOT, ["batch_id", "expected_root", "head_batch_id",
                                                                 "head_root_hash", "problem"], [row], 1))
    # The first break is the earliest in the ledger, not the first check that found one: a
    # violation that names a batch (its first row is its earliest) goes before those of later
    # batches and before those that name none; at one batch, in CHECKS order (an edited entry
    # before the root it breaks). Everything before the first break reported is trustworthy.
    report.violations.sort(key=_first_batch)
    return report


def _first_batch(v: Violation) -> float:
    batch = v.rows[0][v.columns.index("batch_id")] if "batch_id" in v.columns and v.rows else None
    return float("inf") if batch is None else batch


def _hash_definitions(con: duckdb.DuckDBPyConnection) -> None:
    """What `entry_hashes` reads besides the ledger, defined on this (read-only) connection: the
    hash macros, and each batch's hash_version (1 for a ledger written before the column)."""
    define_hash_macros(con)
    has_column = con.execute(statement("verify.sql", "has_hash_version")).fetchall()[0][0]
    con.execute(statement("verify.sql", "batch_hash_versions" if has_column else "batch_hash_versions_before_the_column"))


def violations(con: duckdb.DuckDBPyConnection, name: str, limit: int = 5, chunk_rows: int = CHUNK_ROWS,
               roots: dict | None = None) -> tuple[int, list[str], list[tuple]]:
    """(number of violating rows, column names, the first `limit` of them) for one check
    (`roots`: filled by `batch_chain` with each batch's root that the chain vouches for)."""
    if name == "batch_chain":
        found = list(batch_chain(con, chunk_rows, roots))
        return len(found), BATCH_CHAIN_COLUMNS, found[:limit]
    if name == "entry_seqs":
        found = list(entry_seqs(con, chunk_rows))
        return len(found), ENTRY_SEQS_COLUMNS, found[:limit]
    if name == "catalog_hashes":
        found = catalog_breaks(con)
        return len(found), CATALOG_COLUMNS, found[:limit]
    if name == "stored_definitions":
        found = stored_definitions(con)
        return len(found), STORED_DEFINITIONS_COLUMNS, found[:limit]
    if name == "participant_ids":
        define_id_macros(con)
        found = con.execute(statement("verify.sql", "participant_ids")).fetchall()
        return len(found), PARTICIPANT_COLUMNS, found[:limit]
    file = next(f for f, n, _ in CHECKS if n == name)
    if name == "entry_hashes":
        _hash_definitions(con)
    if name in IN_PARTS:
        # each part's rows in the check's order: the first `limit` of all are among their firsts
        count, cols, rows = 0, [], []
        for part, parts in _parts(con):
            n, cols, first = _first(con.execute(sections(file)[name], {"part": part, "parts": parts}), limit)
            count, rows = count + n, rows + first
        by = [cols.index(c) for c in IN_PARTS[name] or cols]
        # as DuckDB orders them (ascending, NULLs last; UUIDs, text and numbers compare alike)
        return count, cols, sorted(rows, key=lambda r: tuple((r[i] is None, r[i]) for i in by))[:limit]
    if name == "summary_identity":
        # each part's sums per program and asset (a few rows), added up by DuckDB in exact decimals.
        # The check is of the ledger's own report macros (the summary its users query); a ledger
        # whose views predate them (written by an older perkflow, recreated by its next writing
        # run) is summed with this perkflow's, so that verify stays read-only on it.
        def sums() -> pa.Table:
            return pa.concat_tables(con.sql(sections(file)[name], params={"part": part, "parts": parts})
                                    .to_arrow_table() for part, parts in _parts(con))
        try:
            parts = sums()
        except duckdb.CatalogException:
            define_report_macros(con)
            parts = sums()
        return _first(execute(con, statement(file, "summary_identity_whole"), parts=parts), limit)
    return _first(con.execute(sections(file)[name]), limit)


def _parts(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int]]:
    """(part, parts) for the checks read in parts of about ENTRIES_PER_PART entries."""
    parts = con.execute(statement("verify.sql", "entry_count")).fetchall()[0][0] // ENTRIES_PER_PART + 1
    return [(part, parts) for part in range(parts)]


def _first(cur, limit: int) -> tuple[int, list[str], list[tuple]]:
    """(number of rows, column names, the first `limit` rows) of an executed query."""
    cols = [d[0] for d in cur.description]
    rows = cur.fetchmany(limit)
    count = len(rows)
    while more := cur.fetchmany(10_000):  # count the rest without holding them
        count += len(more)
    return count, cols, rows


def batch_chain(con: duckdb.DuckDBPyConnection, chunk_rows: int = CHUNK_ROWS,
                roots: dict | None = None) -> Iterator[tuple]:
    """The breaks of the batch chain, in batch id order, as (batch_id, stored, recomputed,
    prev_root_hash, problem): a batch whose stored root differs from the one recomputed from the
    stored entry hashes and the previous batch's recomputed root; a batch whose stored
    `prev_root_hash` is not that previous root (the column is part of the chain a reader follows);
    and entries whose batch is not in `batches` (stored None: no root covers them, so an entry
    added under an unused batch id, or a batch row deleted, would otherwise go unseen). After a
    gap in the batch ids the chain is broken: every later batch is reported with recomputed None.
    (What a root covers of each entry depends on its batch's hash_version: `_hash_definitions`.)
    `roots` gets {batch id: root} of every batch found sound, the roots the chain vouches for."""
    _hash_definitions(con)
    batches = con.execute(statement("verify.sql", "chain_batches")).fetchall()
    runs = _runs(con.sql(statement("verify.sql", "chain_entry_hashes")).to_arrow_reader(chunk_rows))
    run = next(runs, None)
    prev_root, prev_id, orphan = "", None, None
    for batch_id, stored, prev_stored in [*batches, (None, None, None)]:
        chained = prev_id is None or (prev_root is not None and batch_id == prev_id + 1)
        root = BatchRoot(prev_root) if chained and batch_id is not None else None
        while run is not None and (batch_id is None or run[0] <= batch_id):
            if run[0] == batch_id:
                if root is not None:
                    root.add(run[1])
            elif run[0] != orphan:  # a batch id with entries and no batch (once, over its runs)
                orphan = run[0]
                yield orphan, None, None, None, "entries of a batch that is not in batches"
            run = next(runs, None)
        if batch_id is None:
            return
        recomputed = root.hexdigest() if root is not None else None
        if recomputed != stored:
            yield batch_id, stored, recomputed, prev_stored, "root differs from the recomputed root"
        elif prev_stored != prev_root:
            yield batch_id, stored, recomputed, prev_stored, "prev_root_hash differs from the previous batch's root"
        elif roots is not None:
            roots[batch_id] = recomputed
        prev_root, prev_id = recomputed, batch_id


def stored_definitions(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """The views and macros the ledger file stores that differ from what this perkflow's
    sql/schema.sql and sql/views.sql create, as (kind, name, problem). They are the ledger's
    reading surface (`balances`, `ledger_summary`, statements; `perkflow balances` and `report`
    read them), and a file can carry any definition: a `balances` view edited to show other
    amounts passed, every stored row intact. Compared with the definitions DuckDB stores for a
    fresh in-memory ledger, only when the file says it was set up with these very files
    (`schema_version`); a ledger last written by another perkflow keeps that version's until its
    next writing run, and is not judged by this one's."""
    from engine.ledger.db import ensure_schema

    fresh = duckdb.connect()
    try:
        ensure_schema(fresh)
        if con.execute(statement("schema_version.sql", "current")).fetchall() != \
                fresh.execute(statement("schema_version.sql", "current")).fetchall():
            return []
        found = []
        for kind in ("views", "macros"):
            query = statement("verify.sql", f"stored_{kind}")
            ours, theirs = dict(fresh.execute(query).fetchall()), dict(con.execute(query).fetchall())
            for name in sorted(ours.keys() | theirs.keys()):
                if name not in theirs:
                    found.append((kind[:-1], name, "missing"))
                elif name not in ours:
                    found.append((kind[:-1], name, "not perkflow's"))
                elif ours[name] != theirs[name]:
                    found.append((kind[:-1], name, "definition differs"))
        return found
    finally:
        fresh.close()


def entry_seqs(con: duckdb.DuckDBPyConnection, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple]:
    """The breaks of the entries' numbering, as (batch_id, seq, expected, problem), streamed in
    (batch, seq) order: `seq` is a running count over the ledger (docs/tables.md), so each entry's
    is the previous one's + 1 (the first's 0). A root recomputed over a batch whose entry was
    removed or inserted holds, and so does every later one recomputed after it; the numbering
    still shows the gap or the repeat. Ledgers written before session 10 numbered a batch's
    entries batch << 32 | n: accepted in their batches (hash version 1) only."""
    _hash_definitions(con)
    prev_seq, prev_batch, n = -1, None, 0  # carried from chunk to chunk; n: entries of prev_batch so far
    for chunk in _chunks(con.sql(statement("verify.sql", "entry_seqs")).to_arrow_reader(chunk_rows)):
        b, s, v = (chunk.column(i).to_numpy() for i in range(3))
        prev = np.concatenate([[prev_seq], s[:-1]])
        starts = b != np.concatenate([[-1 if prev_batch is None else prev_batch], b[:-1]])
        # each entry's place in its batch: positions since the latest batch start (the chunk's
        # first rows continue the previous chunk's batch unless it starts one)
        pos = np.arange(len(b))
        since = np.maximum.accumulate(np.where(starts, pos, 0 if starts[0] else -n))
        place = pos - since
        old_scheme = (v == 1) & (s == (b << 32) + place)
        for i in np.flatnonzero((s != prev + 1) & ~old_scheme).tolist():
            p = int(prev[i])
            problem = ("repeats the previous entry's seq" if s[i] == p else
                       "goes back from the previous entry's seq" if s[i] < p else f"skips {int(s[i]) - p - 1} seq(s)")
            yield int(b[i]), int(s[i]), p + 1, problem
        prev_seq, n = int(s[-1]), int(place[-1]) + 1
        prev_batch = int(b[-1])


def _runs(reader) -> Iterator[tuple[int, pa.Array]]:
    """(batch id, its entry hashes) for each run of one batch within each streamed chunk."""
    for chunk in _chunks(reader):
        ids = chunk.column(0).to_numpy()
        hashes = chunk.column(1)
        cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]
        for a, b in zip(cuts, cuts[1:]):
            if b > a:
                yield int(ids[a]), hashes.slice(a, b - a)


def _chunks(reader) -> Iterator[pa.RecordBatch]:
    """The reader's chunks. DuckDB running out of its memory cap while it streams them reaches
    Python through Arrow as a plain OSError: raised again as DuckDB's own OutOfMemoryException,
    which the CLI explains (rather than reporting an internal error)."""
    it = iter(reader)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except OSError as e:
            if str(e).startswith("Out of Memory Error"):
                raise duckdb.OutOfMemoryException(str(e)) from e
            raise
        yield chunk
