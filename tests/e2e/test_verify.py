"""`perkflow verify`: passes on a clean ledger and names the problem in a tampered one."""

from __future__ import annotations

import hashlib
import json
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.ledger import db as ledger_db
from engine.run import run_batch
from engine.verify import batch_chain, verify
from engine.workloads import generate
from tests.helpers.io import ROOT, cli, event, file_hash, program_spec, run_json, write_events, write_program

PROGRAMS = ROOT / "data" / "programs"


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("verify")
    db = base / "ledger.duckdb"
    run_json(PROGRAMS, ROOT / "data" / "sample" / "events", db)
    # a second batch, so the chain has two links
    rows = [event("customer_loyalty", f"v-{i}", f"user_{i}", f"2025-12-0{1 + i}T10:00:00Z", {"type": "purchase"})
            for i in range(3)]
    run_json(PROGRAMS, write_events(base / "second.parquet", rows), db)
    return db


def _verify(db: Path) -> tuple[int, dict]:
    res = cli("verify", "--db", str(db), "--json")
    return res.returncode, json.loads(res.stdout)


def _tampered(clean_db: Path, tmp_path: Path, sql: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    copy = tmp_path / "tampered.duckdb"
    shutil.copy(clean_db, copy)
    con = duckdb.connect(str(copy))
    con.execute(sql)
    con.close()
    return copy


def test_clean_ledger_verifies(clean_db):
    code, report = _verify(clean_db)
    assert code == 0 and report["ok"] and report["violations"] == []
    assert {"entry_hashes", "batch_chain", "postings_sum_to_zero", "balances_match_postings",
            "summary_identity"} <= set(report["checked"])


def test_edited_posting_amount_is_caught(clean_db, tmp_path):
    target = duckdb.connect(str(clean_db), read_only=True).execute(
        "SELECT id::VARCHAR, journal_entry_id::VARCHAR FROM postings ORDER BY id LIMIT 1").fetchall()[0]
    db = _tampered(clean_db, tmp_path, f"UPDATE postings SET amount = amount + 1 WHERE id = '{target[0]}'")
    code, report = _verify(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "entry_hashes"
    assert first["rows"][0]["journal_entry_id"] == target[1]
    assert "postings_sum_to_zero" in [v["check"] for v in report["violations"]]


def test_deleted_journal_entry_is_caught(clean_db, tmp_path):
    batch = duckdb.connect(str(clean_db), read_only=True).execute(
        "SELECT batch_id FROM journal_entries ORDER BY seq DESC LIMIT 1").fetchall()[0][0]
    db = _tampered(clean_db, tmp_path,
                   "DELETE FROM journal_entries WHERE id = (SELECT id FROM journal_entries ORDER BY seq DESC LIMIT 1)")
    code, report = _verify(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "batch_chain" and first["rows"][0]["batch_id"] == batch
    # its postings are left without an entry
    assert "postings_sum_to_zero" in [v["check"] for v in report["violations"]]


def test_edited_balance_row_is_caught(clean_db, tmp_path):
    db = _tampered(clean_db, tmp_path,
                   "UPDATE account_balances SET amount = amount + 5 WHERE entity_type = 'PARTICIPANT' "
                   "AND entity_id = (SELECT MIN(entity_id) FROM account_balances WHERE entity_type = 'PARTICIPANT')")
    code, report = _verify(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "balances_match_postings"
    row = first["rows"][0]
    assert float(row["materialised"]) - float(row["posted"]) == 5


@pytest.mark.parametrize("table, copy, key", [
    ("participants", "SELECT * FROM participants LIMIT 1", "participants.external_id"),
    ("enrollments", "SELECT * FROM enrollments LIMIT 1", "enrollments"),
    # a copy holding zero: the account's two rows still sum to what its postings do
    ("account_balances", "SELECT entity_type, entity_id, asset_id, bucket, 0 FROM account_balances "
                         "WHERE entity_type = 'PARTICIPANT' LIMIT 1", "account_balances"),
])
def test_a_key_stored_twice_is_caught(clean_db, tmp_path, table, copy, key):
    """participants, enrollments and account_balances have no unique index (memory, schema.sql):
    a row stored twice is verify's to find."""
    code, report = _verify(_tampered(clean_db, tmp_path, f"INSERT INTO {table} ({copy})"))
    assert code == 4
    dup = [v for v in report["violations"] if v["check"] == "no_duplicate_keys"]
    assert dup and (key, 2) in [(r["duplicated_on"], r["occurrences"]) for r in dup[0]["rows"]]


def test_streamed_batch_root_equals_the_writers_and_finds_a_late_tampered_entry(tmp_path):
    """The writer feeds each batch's root chunk by chunk (BatchRoot, one chunk per written chunk
    of events); verify streams the stored entry hashes in chunks of its own size. Both must give
    the root's definition, sha256(previous root '#' the batch's entries in seq order joined by
    ';', each as `seq:entry_hash` in a batch of hash version 3), for any chunking; and an entry
    changed in a late chunk must break its batch's root (and every later one's), as must its seq
    changed (version 3 entry hashes leave the seq to the root: sql/hash.sql)."""
    generate("W1", 900, 60, seed=5, out=tmp_path / "in")
    events = pq.read_table(next((tmp_path / "in" / "events").glob("*.parquet")))
    for name, part in (("a", events.slice(0, 600)), ("b", events.slice(600))):
        (tmp_path / name).mkdir()
        pq.write_table(part, tmp_path / name / "part.parquet")
    db_file = tmp_path / "ledger.duckdb"
    first = run_batch(tmp_path / "in" / "programs", tmp_path / "a", db_file, chunk_rows=97)  # 7 writer chunks
    second = run_batch(tmp_path / "in" / "programs", tmp_path / "b", db_file, chunk_rows=50)
    assert first.entries > 5 * 97 and second.entries > 0

    con = ledger_db.connect(db_file, read_only=True)
    try:
        prev = ""
        for batch_id, stored in con.execute("SELECT id, root_hash FROM batches ORDER BY id").fetchall():
            hashes = [f"{seq}:{h}" for seq, h in con.execute(
                "SELECT seq, entry_hash FROM journal_entries WHERE batch_id = ? ORDER BY seq", [batch_id]).fetchall()]
            assert stored == hashlib.sha256(f"{prev}#{';'.join(hashes)}".encode()).hexdigest()
            prev = stored
        for chunk_rows in (1, 7, 100, 10**6):  # streamed chunks across and within the writer's
            assert list(batch_chain(con, chunk_rows)) == [], chunk_rows
            assert verify(con, chunk_rows=chunk_rows).ok
        # an entry near the end of batch 1: in its writer's last chunk and verify's last chunks
        late_seq = con.execute("SELECT max(seq) - 2 FROM journal_entries WHERE batch_id = 1").fetchone()[0]
        roots = dict(con.execute("SELECT id, root_hash FROM batches").fetchall())
    finally:
        con.close()

    edited = _tampered(db_file, tmp_path, "UPDATE journal_entries SET entry_hash = sha256('edited') "
                                          f"WHERE seq = {late_seq}")
    con = ledger_db.connect(edited, read_only=True)
    try:
        report = verify(con, chunk_rows=7)
    finally:
        con.close()
    found = {v.check: v for v in report.violations}
    assert list(found) == ["entry_hashes", "batch_chain"]
    assert [r[1] for r in found["entry_hashes"].rows] == [late_seq]
    # batch 1's root no longer matches, and batch 2 chains from batch 1's recomputed root
    assert [(r[0], r[1]) for r in found["batch_chain"].rows] == [(1, roots[1]), (2, roots[2])]
    assert all(r[2] not in (None, r[1]) for r in found["batch_chain"].rows)

    deleted = _tampered(db_file, tmp_path / "deleted", f"DELETE FROM journal_entries WHERE seq = {late_seq}")
    con = ledger_db.connect(deleted, read_only=True)
    try:
        report = verify(con, chunk_rows=7)
    finally:
        con.close()
    assert report.violations[0].check == "batch_chain"  # every remaining entry's hash still holds
    assert [r[0] for r in report.violations[0].rows] == [1, 2]

    # the entries of batch 1 renumbered, in the same order: the entry hashes (version 3) do not
    # cover the seq, the batch root does
    renumbered = _tampered(db_file, tmp_path / "renumbered",
                           "UPDATE journal_entries SET seq = seq + 100000 WHERE batch_id = 1")
    con = ledger_db.connect(renumbered, read_only=True)
    try:
        report = verify(con, chunk_rows=7)
    finally:
        con.close()
    # (and the numbering: batch 1 no longer starts at 0, batch 2 goes back from it)
    assert [v.check for v in report.violations] == ["batch_chain", "entry_seqs"]
    assert [r[0] for r in report.violations[0].rows] == [1, 2]


def test_entry_hashes_in_parts_finds_what_one_part_finds(clean_db, tmp_path, monkeypatch):
    """`entry_hashes` recomputes the hashes in parts (by a hash of the entry id) so that its joins
    stay within DuckDB's cap on large ledgers: split into many parts, the same violations come
    back, counted once each, first seq first."""
    from engine import verify as verify_module

    seqs = [s for (s,) in duckdb.connect(str(clean_db), read_only=True).execute(
        "SELECT seq FROM journal_entries ORDER BY seq").fetchall()]
    edited = [seqs[1], seqs[len(seqs) // 2], seqs[-1]]
    db = _tampered(clean_db, tmp_path, "UPDATE postings SET amount = amount + 1 WHERE journal_entry_id IN "
                                       f"(SELECT id FROM journal_entries WHERE seq IN ({', '.join(map(str, edited))}))")
    con = ledger_db.connect(db, read_only=True)
    try:
        found = {}
        for per_part in (10**6, len(seqs) // 5, len(seqs) // 40):  # one part, ~6 parts, ~41 parts
            monkeypatch.setattr(verify_module, "ENTRIES_PER_PART", per_part)
            count, cols, rows = verify_module.violations(con, "entry_hashes", limit=2)
            found[per_part] = (count, tuple(r[cols.index("seq")] for r in rows))
    finally:
        con.close()
    assert set(found.values()) == {(3, tuple(edited[:2]))}, found


# A report definition changed in the ledger file: CREDITs under 100 no longer count as issued, so
# issued - redeemed - expired - forfeited falls short of the current balance wherever there are any.
BROKEN_FLOW_CATEGORY = """CREATE OR REPLACE MACRO flow_category(action_type, net_amount) AS
    CASE WHEN action_type = 'CREDIT' AND net_amount < 100 THEN 'INTERNAL'
         WHEN action_type IN ('CREDIT', 'VOID_HOLD') THEN 'ISSUED'
         WHEN action_type IN ('DEBIT', 'REDEMPTION', 'REDEMPTION_REVERSAL') THEN 'REDEEMED'
         WHEN action_type = 'EXPIRATION' THEN 'EXPIRED'
         WHEN action_type = 'FORFEIT' THEN 'FORFEITED'
         WHEN net_amount > 0 THEN 'ISSUED' WHEN net_amount < 0 THEN 'REDEEMED' ELSE 'INTERNAL' END"""


def test_summary_identity_in_parts_finds_what_the_whole_view_finds(clean_db, tmp_path, monkeypatch):
    """`summary_identity` adds up ledger_summary's sums over parts of the entries (its memory on
    large ledgers): in one part or many, it reports what the ledger_summary view over the whole
    ledger breaks, the same rows in the same order, and the whole verify report is the same."""
    from engine import verify as verify_module

    db = _tampered(clean_db, tmp_path, BROKEN_FLOW_CATEGORY)
    con = ledger_db.connect(db, read_only=True)
    try:
        whole = con.execute("SELECT program_key, asset_symbol, total_issued, total_redeemed, total_expired, "
                            "total_forfeited, current_balance FROM ledger_summary WHERE total_issued - "
                            "total_redeemed - total_expired - total_forfeited <> current_balance "
                            "ORDER BY program_key, asset_symbol").fetchall()
        entries = con.execute("SELECT count(*) FROM journal_entries").fetchone()[0]
        found, reports = {}, {}
        for per_part in (10**6, entries // 5, entries // 40):  # one part, ~6 parts, ~41 parts
            monkeypatch.setattr(verify_module, "ENTRIES_PER_PART", per_part)
            found[per_part] = verify_module.violations(con, "summary_identity", limit=len(whole))
            reports[per_part] = [(v.check, v.count, v.rows) for v in verify(con).violations]
    finally:
        con.close()
    assert len(whole) >= 2  # both programs of the sample
    assert {(n, tuple(rows)) for n, _, rows in found.values()} == {(len(whole), tuple(whole))}
    # (the redefined macro is itself a break: stored_definitions, session 21)
    assert [c for c, _, _ in reports[10**6]] == ["stored_definitions", "summary_identity"]
    assert reports[entries // 5] == reports[entries // 40] == reports[10**6]


def test_summary_identity_on_a_ledger_without_the_stored_sums_macro_verifies_read_only(clean_db, tmp_path):
    """A ledger written by an older perkflow lacks the macros this verify sums flows with
    (ledger_sums_part came in session 14): verify sums it with its own, read-only (it said to run
    a writing `perkflow run` first, exit 2)."""
    # (as such a ledger is: its schema_version is that perkflow's, so its definitions are not this one's to judge)
    db = _tampered(clean_db, tmp_path, "DROP MACRO TABLE ledger_summary_part; DROP MACRO TABLE ledger_sums_part; "
                                       "UPDATE schema_version SET hash = 'an older perkflow'")
    before = file_hash(db)
    code, report = _verify(db)
    assert code == 0 and report["ok"] and "summary_identity" in report["checked"], report
    assert file_hash(db) == before


OVERDRAW_RULES = [
    {"name": "Purchase points", "key": "purchase", "condition": 'event.type == "purchase"', "order": 10,
     "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
    {"name": "Overdraw", "key": "overdraw", "condition": 'event.type == "overdraw"', "order": 20,
     "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "25", "allow_negative": True}]},
]


def test_negative_balances_needs_an_entry_allowed_to_overdraw(tmp_path):
    """`negative_balances`: an AVAILABLE balance below zero passes only if an entry allowed to
    overdraw posted to that account. u1 overdrew through an allowed DEBIT (-15); u2's balance
    is edited to -3 with no such entry; u3 is positive."""
    programs = write_program(tmp_path / "programs" / "shop.yaml", program_spec("shop", OVERDRAW_RULES))
    db = tmp_path / "ledger.duckdb"
    rows = [event("shop", "k1", "u1", "2025-03-01T10:00:00Z", {"type": "purchase"}),
            event("shop", "k2", "u1", "2025-03-01T11:00:00Z", {"type": "overdraw"}),
            event("shop", "k3", "u2", "2025-03-01T10:00:00Z", {"type": "purchase"}),
            event("shop", "k4", "u3", "2025-03-01T10:00:00Z", {"type": "purchase"})]
    run_json(programs, write_events(tmp_path / "events.parquet", rows), db)
    code, report = _verify(db)
    assert code == 0, report  # u1's -15 is allowed

    ids = dict(duckdb.connect(str(db), read_only=True).execute(
        "SELECT external_id, id::VARCHAR FROM participants").fetchall())
    edited = _tampered(db, tmp_path / "edited", "UPDATE account_balances SET amount = -3 WHERE entity_id = "
                                                f"'{ids['u2']}' AND bucket = 'AVAILABLE'")
    code, report = _verify(edited)
    negative = [v for v in report["violations"] if v["check"] == "negative_balances"]
    assert code == 4 and len(negative) == 1
    assert [(r["participant_id"], Decimal(r["amount"])) for r in negative[0]["rows"]] == [(ids["u2"], Decimal(-3))]

    # the same overdraft without its permission is reported too (the entry no longer hashes either)
    unallowed = _tampered(edited, tmp_path / "unallowed", "UPDATE journal_entries SET allow_negative = false")
    code, report = _verify(unallowed)
    negative = [v for v in report["violations"] if v["check"] == "negative_balances"]
    assert sorted((r["participant_id"], Decimal(r["amount"])) for r in negative[0]["rows"]) == \
        sorted([(ids["u1"], Decimal(-15)), (ids["u2"], Decimal(-3))])


def test_running_out_of_memory_while_streaming_the_chain_is_duckdbs_out_of_memory():
    """DuckDB's out-of-memory error reaches the chain's Arrow stream as a plain OSError: it is
    raised as DuckDB's again (the CLI explains it); any other OSError is left as it is."""
    from engine.verify import _runs

    def failing(message):
        yield pa.record_batch([pa.array([1], pa.int64()), pa.array(["h"])], names=["batch_id", "entry_hash"])
        raise OSError(message)

    runs = _runs(failing("Out of Memory Error: failed to pin block of size 256.0 KiB (33.2 MiB/33.3 MiB used)"))
    assert next(runs)[0] == 1
    with pytest.raises(duckdb.OutOfMemoryException, match="failed to pin block"):
        next(runs)
    with pytest.raises(OSError, match="disk on fire") as other:
        list(_runs(failing("disk on fire")))
    assert not isinstance(other.value, duckdb.Error)


@pytest.mark.parametrize("command", [["verify"], ["report", "ledger_summary"], ["balances"],
                                     ["sql", "SELECT count(*) FROM postings p JOIN journal_entries j "
                                             "ON j.id = p.journal_entry_id"]])
def test_running_out_of_memory_in_a_read_only_command_says_nothing_was_changed(clean_db, command):
    """A command that only reads the ledger and runs out of DuckDB's cap: exit 1, the message
    says nothing was changed and how to raise the cap (not a run's 'nothing was committed ...
    smaller batches', not an internal error), and the file is untouched."""
    before = file_hash(clean_db)
    res = cli(*command, "--db", str(clean_db), env={"PERKFLOW_DUCKDB_MEMORY": "1MB"})
    assert res.returncode == 1, res.stderr
    err = " ".join(res.stderr.split())
    assert "DuckDB ran out of its memory cap; nothing was changed" in err
    assert f"`perkflow {command[0]}` only reads the ledger" in err and "PERKFLOW_DUCKDB_MEMORY=" in err
    assert "committed" not in err and "batches" not in err
    assert "internal error" not in err and "Traceback" not in err
    assert file_hash(clean_db) == before
    # with the cap it normally has, the same command works
    assert cli(*command, "--db", str(clean_db)).returncode == 0


@pytest.fixture(scope="module")
def w2_db(tmp_path_factory) -> Path:
    """A small W2 ledger (its wallet's fund, then 3,000 events of 150 participants): LOT lots,
    several assets and accounts per participant."""
    base = tmp_path_factory.mktemp("w2")
    generate("W2", 3000, 150, seed=7, out=base / "in")
    db = base / "ledger.duckdb"
    run_batch(base / "in" / "programs", None, db, operations=base / "in" / "operations" / "fund.parquet")
    run_batch(base / "in" / "programs", base / "in" / "events", db)
    return db


def test_checks_in_parts_find_what_the_whole_finds(w2_db, tmp_path, monkeypatch):
    """The checks read in parts (by a hash of the entry id, or of the account's entity) report,
    in one part, ~6 or ~41, the same number of violations and the same first ones in the same
    order; and what they report is what was tampered with."""
    from engine import verify as verify_module

    q = duckdb.connect(str(w2_db), read_only=True)
    entries = q.execute("SELECT count(*) FROM journal_entries").fetchone()[0]
    edited_postings = q.execute("SELECT journal_entry_id, entity_type, entity_id::VARCHAR, asset_id, bucket "
                                "FROM postings ORDER BY id LIMIT 7").fetchall()
    deleted = q.execute("SELECT id FROM journal_entries ORDER BY id DESC LIMIT 2").fetchall()
    copied = q.execute("SELECT id, event_id FROM journal_entries WHERE event_id IS NOT NULL ORDER BY md5(id::VARCHAR) "
                       "LIMIT 4").fetchall()
    edited_lots = q.execute("SELECT DISTINCT entity_id FROM (SELECT entity_id FROM lots WHERE status = 'AVAILABLE' "
                            "ORDER BY md5(id::VARCHAR) LIMIT 6)").fetchall()
    edited_balances = q.execute("SELECT DISTINCT b.entity_id::VARCHAR FROM account_balances b JOIN assets a ON a.id = "
                                "b.asset_id WHERE a.symbol = 'PTS' ORDER BY 1 DESC LIMIT 5").fetchall()
    failed_events = q.execute("SELECT DISTINCT event_id FROM (SELECT event_id FROM journal_entries WHERE event_id IS NOT NULL "
                              "ORDER BY md5(id::VARCHAR) DESC LIMIT 5)").fetchall()
    q.close()
    db = _tampered(w2_db, tmp_path, f"""
        UPDATE postings SET amount = amount + 1 WHERE id IN (SELECT id FROM postings ORDER BY id LIMIT 7);
        DELETE FROM journal_entries WHERE id IN (SELECT id FROM journal_entries ORDER BY id DESC LIMIT 2);
        INSERT INTO journal_entries SELECT * FROM journal_entries
            WHERE id IN ({', '.join(f"'{i}'" for i, _ in copied)});
        UPDATE lots SET remaining = remaining + 1 WHERE id IN
            (SELECT id FROM lots WHERE status = 'AVAILABLE' ORDER BY md5(id::VARCHAR) LIMIT 6);
        UPDATE account_balances SET amount = amount + 5 WHERE asset_id = (SELECT id FROM assets WHERE symbol = 'PTS')
            AND entity_id::VARCHAR IN ({', '.join(f"'{e}'" for e, in edited_balances)});
        UPDATE events SET status = 'FAILED' WHERE id IN ({', '.join(f"'{e}'" for e, in failed_events)});""")
    con = ledger_db.connect(db, read_only=True)
    try:
        found, every = {}, {}
        for per_part in (10**6, entries // 5, entries // 40):  # one part, ~6 parts, ~41 parts
            monkeypatch.setattr(verify_module, "ENTRIES_PER_PART", per_part)
            for name in verify_module.IN_PARTS:
                found[name, per_part] = verify_module.violations(con, name, limit=3)
            every[per_part] = {name: verify_module.violations(con, name, limit=10**6) for name in verify_module.IN_PARTS}
    finally:
        con.close()
    for name in verify_module.IN_PARTS:
        assert found[name, entries // 5] == found[name, entries // 40] == found[name, 10**6], name
        assert found[name, 10**6][0] > 3, name  # more than the first three: the merge of the parts' firsts counts
        assert every[entries // 40][name] == every[10**6][name], name

    _, cols, rows = every[10**6]["postings_sum_to_zero"]
    assert {r[0] for r in rows} == {p[0] for p in edited_postings} | {i for i, in deleted}
    _, cols, rows = every[10**6]["balances_match_postings"]
    assert {(r[0], str(r[1])) for r in rows} == {(p[1], p[2]) for p in edited_postings} | \
        {("PARTICIPANT", e) for e, in edited_balances}
    _, cols, rows = every[10**6]["no_duplicate_entries"]
    assert {(r[0], r[1]) for r in rows} == {("id", str(i)) for i, _ in copied} | \
        {r for r in {(r[0], r[1]) for r in rows} if r[0] == "event_rule_action"}
    assert {r[1].split("/")[0] for r in rows if r[0] == "event_rule_action"} == {str(e) for _, e in copied}
    _, cols, rows = every[10**6]["lot_remainders"]
    assert {r[1] for r in rows} == {e for e, in edited_lots}
    _, cols, rows = every[10**6]["entries_have_their_source"]
    assert {r[3] for r in rows} == {e for e, in failed_events}


# ---------------------------------------------------------------------------------------------
# Hash versions: a ledger written before the entry hash covered descriptions and posting programs

OLD_LEDGER = ROOT / "tests" / "fixtures" / "ledger_hash_v1"


def _ledger_before_hash_version(path: Path) -> Path:
    """A ledger as perkflow wrote it before batches.hash_version existed (commit 924655b: three
    purchases in batch 1, a described transfer to two recipients in batch 2): its rows (CSV, from
    DuckDB's EXPORT DATABASE of the file that version wrote) in today's tables less the column,
    with the hash macros that version stored in the file, and its schema hash, so that the next
    writing run migrates it as it would that file."""
    con = duckdb.connect(str(path))
    try:
        ledger_db.ensure_schema(con)
        con.execute("ALTER TABLE batches DROP COLUMN hash_version")
        con.execute((OLD_LEDGER / "stored_macros.sql").read_text())
        for csv in sorted(OLD_LEDGER.glob("*.csv")):
            con.execute(f"DELETE FROM {csv.stem}")
            con.execute(f"INSERT INTO {csv.stem} BY NAME SELECT * FROM read_csv(?, header = true, all_varchar = true, allow_quoted_nulls = false)",
                        [str(csv)])
    finally:
        con.close()
    return path


def _columns(db: Path, table: str) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def test_a_ledger_from_before_hash_versions_verifies_read_only_and_still_finds_edits(tmp_path):
    old = _ledger_before_hash_version(tmp_path / "old.duckdb")
    before = file_hash(old)
    code, report = _verify(old)
    assert code == 0 and report["ok"], report
    # read-only: neither the column nor anything else was added
    assert "hash_version" not in _columns(old, "batches") and file_hash(old) == before
    # its entries are still checked, with the text they were hashed over: an amount is caught
    edited = _tampered(old, tmp_path / "t", "UPDATE postings SET amount = amount * 2 WHERE amount > 0 AND "
                       "journal_entry_id = (SELECT id FROM journal_entries WHERE seq = 0)")
    code, report = _verify(edited)
    assert code == 4 and report["violations"][0]["check"] == "entry_hashes", report


def test_writing_to_an_old_ledger_starts_the_current_hash_version_and_version_1_batches_keep_theirs(tmp_path):
    old = _ledger_before_hash_version(tmp_path / "old.duckdb")
    rows = [event("shop", "e4", "u1", "2025-03-06T10:00:00Z", {"type": "purchase", "amount": 7})]
    run_json(OLD_LEDGER / "programs", write_events(tmp_path / "b3.parquet", rows), old)
    with duckdb.connect(str(old), read_only=True) as con:
        assert con.execute("SELECT id, hash_version FROM batches ORDER BY id").fetchall() == [(1, 1), (2, 1), (3, 3)]
        # the texts' macros are no longer stored in the file (verify uses its own)
        assert con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name IN ('entry_text', "
                           "'posting_text') AND database_name = current_database()").fetchall() == [(0,)]
        new_entry = con.execute("SELECT seq FROM journal_entries WHERE batch_id = 3").fetchall()[0][0]
    code, report = _verify(old)
    assert code == 0 and report["ok"], report

    def caught(sql: str) -> bool:
        code, report = _verify(_tampered(old, tmp_path / str(abs(hash(sql))), sql))
        return code == 4 and report["violations"][0]["check"] == "entry_hashes"

    # versions 2 and 3 cover the description and each posting's program
    assert caught(f"UPDATE journal_entries SET description = 'forged' WHERE seq = {new_entry}")
    assert caught("UPDATE postings SET program_id = '00000000-0000-0000-0000-000000000000' WHERE journal_entry_id = "
                  f"(SELECT id FROM journal_entries WHERE seq = {new_entry})")
    # a batch's version changed by hand does not let an edit through: no text of one version is
    # one of the other
    assert caught(f"UPDATE batches SET hash_version = 1 WHERE id = 3; UPDATE journal_entries SET description = "
                  f"'forged' WHERE seq = {new_entry}")
    assert caught("UPDATE batches SET hash_version = 2 WHERE id = 1")
    assert caught("UPDATE batches SET hash_version = 2 WHERE id = 3")  # version 2 covered the seq, 3 does not
    # version 1 batches keep the hash they were written with (docs/decisions.md): their amounts
    # are covered, their descriptions were not and cannot be now without rewriting history
    assert caught("UPDATE postings SET amount = amount + 1 WHERE amount > 0 AND journal_entry_id = "
                  "(SELECT id FROM journal_entries WHERE seq = 3)")
    assert not caught("UPDATE journal_entries SET description = 'forged' WHERE seq = 3")
