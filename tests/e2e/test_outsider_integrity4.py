"""Outsider round (session 21): ledger integrity, round 4: tamper evidence (semantics.md 8) and
crash safety (4, 13). Each test drives the `perkflow` CLI in a subprocess over a real DuckDB
file; the tamper tests edit the file with SQL as an attacker with write access and the docs
would, and expect `perkflow verify` to exit 4 naming the first break.

What it found: verify passed a ledger whose catalog rows behind the entries were edited (a rule
version's definition, a key an id is derived from, a version deleted); the entries' seq numbers
were never checked (an entry removed and its batch's root recomputed passed); the
`postings_sum_to_zero` rows named no batch; and nothing let a user anchor the chain outside the
file, so the last batches removed whole passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

from tests.e2e.test_contract_audit import Ledger, at, ev, on, program
from tests.e2e.test_outsider_ledger3 import batch_root, every_action, tampered, verify_json
from tests.helpers.io import ROOT, cli, write_events

#: docs/tables.md: uuid5(NAMESPACE_URL, "https://perkflow.dev/ids")
NAMESPACE = uuid.UUID("04c43fc3-c212-5260-b620-35058c734f0a")
SIMPLE = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}


def first(report: dict) -> dict:
    return report["violations"][0]


def checks(report: dict) -> list[str]:
    return [v["check"] for v in report["violations"]]


# -- 1. the catalog rows behind the entries --------------------------------------------------

def rule_version_by_hand(program_key: str, definition: dict) -> str:
    """docs/tables.md `rule_versions`: the first 16 hex digits of the SHA-256 of the canonical JSON
    (keys sorted, no spaces) of {"program": <program key>, "rule": <definition>}."""
    text = json.dumps({"program": program_key, "rule": definition}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_s2_1_s8_each_rule_version_is_the_content_hash_of_its_stored_definition(tmp_path):
    """2.1: "A changed rule gets a new rule version (content hash)"; docs/tables.md says over what.
    Recomputed by hand from what the ledger stores, for every version."""
    lg = every_action(tmp_path, cut=6)
    rows = lg.sql("SELECT p.key, v.version, v.definition FROM rule_versions v JOIN rules r ON r.id = v.rule_id "
                  "JOIN programs p ON p.id = r.program_id")
    assert len(rows) == 12
    assert all(rule_version_by_hand(key, json.loads(d)) == version for key, version, d in rows)


def test_s8_an_edited_rule_definition_breaks_the_chain(tmp_path):
    """8: the entries name the rule version that produced them, and their hashes cover it; the
    definition behind it was not covered: `earn` credited `event.n`, edited afterwards to say
    `event.n * 100`, passed verify (exit 0), though what the ledger claims its rule did is now
    false. Now the version recomputed from the stored definition differs: a `catalog_hashes` break
    naming the rule version and the batch that first used it."""
    lg = every_action(tmp_path, cut=6)
    (rule_id, version, definition), = lg.sql(
        "SELECT v.rule_id, v.version, v.definition FROM rule_versions v JOIN rules r ON r.id = v.rule_id "
        "WHERE r.key = 'earn'")
    assert '"amount": "event.n"' in definition
    forged = definition.replace('"amount": "event.n"', '"amount": "event.n * 100"')
    db = tampered(lg.db, tmp_path / "t.duckdb", f"UPDATE rule_versions SET definition = '{forged}' "
                                                f"WHERE version = '{version}'")
    code, report = verify_json(db)
    assert code == 4, report
    assert checks(report) == ["catalog_hashes"]
    row = first(report)["rows"][0]
    assert (row["batch_id"], row["table"], row["key"], row["stored"]) == (1, "rule_versions", f"{rule_id}/{version}",
                                                                          version)
    assert row["recomputed"] == rule_version_by_hand("shop", json.loads(forged))


@pytest.mark.parametrize("sql, table", [
    # a program's key: its id (which entries and postings name) is UUIDv5 of `program:<key>`, and
    # each of its rules' versions hashes it (those, naming batch 1, are reported first)
    ("UPDATE programs SET key = 'other'", "rule_versions"),
    # an asset's symbol: id UUIDv5 of `asset:<symbol>` (postings name the id)
    ("UPDATE assets SET symbol = 'GOLD' WHERE symbol = 'CASH'", "assets"),
    # the current version's summary in `rules`
    ("UPDATE rules SET name = 'bonus' WHERE key = 'earn'", "rules"),
    ("UPDATE rules SET \"order\" = 1 WHERE key = 'earn'", "rules"),
    # a version the entries name, deleted
    ("DELETE FROM rule_versions WHERE rule_id = (SELECT id FROM rules WHERE key = 'spend')", "journal_entries"),
])
def test_s8_catalog_rows_the_entries_name_edited_or_removed_break_the_chain(tmp_path, sql, table):
    """8: each passed verify with exit 0. Ids are derived from keys (docs/tables.md), so a key
    edited no longer gives the id the chained entries name; `rules` restates its current
    version; a version named by entries must stay queryable (2.1: "old versions stay queryable")."""
    lg = every_action(tmp_path, cut=6)
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", sql))
    assert code == 4, report
    assert "catalog_hashes" in checks(report)
    catalog = next(v for v in report["violations"] if v["check"] == "catalog_hashes")
    assert table in {r["table"] for r in catalog["rows"]}


def test_s8_a_participants_external_id_edited_gives_its_balance_to_someone_else_and_breaks_the_chain(tmp_path):
    """8 / 12: postings name participants by id (UUIDv5 of `participant:<external_id>`,
    docs/tables.md) and every report shows whose it is by the external id. `b` renamed `mallory`
    in `participants` moved b's balance to mallory in `balances` and passed verify (exit 0)."""
    lg = every_action(tmp_path, cut=6)
    (b_id,), = lg.sql("SELECT id FROM participants WHERE external_id = 'b'")
    db = tampered(lg.db, tmp_path / "t.duckdb", "UPDATE participants SET external_id = 'mallory' WHERE external_id = 'b'")
    code, report = verify_json(db)
    assert code == 4, report
    assert checks(report) == ["participant_ids"]
    assert first(report)["rows"] == [{"batch_id": 2, "external_id": "mallory", "stored": str(b_id),
                                      "recomputed": str(uuid.uuid5(NAMESPACE, "participant:mallory"))}]


def test_s8_a_ledger_of_several_rule_versions_and_catalog_kinds_verifies(tmp_path):
    """The new check holds on a sound ledger whose rule changed between batches (two versions,
    the old one no longer current), with tiers, rewards and groups in the catalog."""
    rules = [on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "10"})]
    spec = program(rules, [SIMPLE], rewards=[{"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED",
                                              "asset": "PTS", "unit_cost": "5", "status": "ACTIVE"}],
                   groups=[{"key": "fam", "name": "Family", "members": [{"external_id": "a", "role": "ADMIN"}]}])
    lg = Ledger(tmp_path, spec)
    lg.run([ev("e1", "a", at(1), "earn")])
    spec["rules"][0]["actions"][0]["amount"] = "20"
    Ledger(tmp_path, spec)  # rewrites the program file
    lg.run([ev("e2", "a", at(2), "earn")])
    assert lg.sql("SELECT count(*) FROM rule_versions") == [(2,)]
    code, report = verify_json(lg.db)
    assert code == 0 and "catalog_hashes" in report["checked"], report


@pytest.mark.parametrize("sql, count", [
    ("DELETE FROM events WHERE idempotency_key = 'x2'", "stored_events_and_operations"),
    ("DELETE FROM rejected_rows", "stored_rejected_rows"),
])
def test_s1_7_an_input_rows_outcome_deleted_is_a_break(tmp_path, sql, count):
    """1.7: "Every input row ends in exactly one place: processed (COMPLETED or FAILED), recognised
    as a duplicate, or quarantined with a reason. Counts reconcile." A FAILED event's row (no
    entry names it) or a quarantined row deleted after commit passed verify: the batch's counts
    still added up among themselves. Now the rows stored are checked against them."""
    lg = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
                                   on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})]))
    report = lg.run([ev("x1", "a", at(1), "earn", n=5), ev("x2", "a", at(2), "spend", n=50),
                     {**ev("x3", "a", at(3), "earn", n=1), "program": "nope"}])
    assert (report["completed"], report["failed"], report["rejected"]) == (1, 1, 1)
    assert verify_json(lg.db)[0] == 0
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", sql))
    assert code == 4, report
    assert checks(report) == ["batch_counts"]
    assert {(r["batch_id"], r["count"]) for r in first(report)["rows"]} == {(1, count)}


def _redefined_balances(con: duckdb.DuckDBPyConnection) -> None:
    (sql,), = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'balances'").fetchall()
    con.execute(sql.replace("CREATE VIEW", "CREATE OR REPLACE VIEW").replace(" AS available", " * 2 AS available", 1))


def test_s12_s8_a_stored_view_redefined_to_show_other_balances_is_a_break(tmp_path):
    """12: `balances` is a documented view of the ledger (available = the sum of AVAILABLE
    postings). The view is stored in the file: redefined to double every available balance, it made
    `perkflow balances` show 30 for a's 15 while verify passed (every stored row intact). Now
    verify compares the file's views and macros with perkflow's own (`stored_definitions`)."""
    lg = simple_ledger(tmp_path)
    db = tmp_path / "t.duckdb"
    shutil.copy(lg.db, db)
    con = duckdb.connect(str(db))
    try:
        _redefined_balances(con)
        con.execute("CREATE OR REPLACE MACRO name_uuid(name) AS '00000000-0000-0000-0000-000000000000'")
    finally:
        con.close()
    res = cli("balances", "--db", str(db), "--json")
    assert [r["available"] for r in json.loads(res.stdout)] == ["30"]  # a holds 10 + 5
    code, report = verify_json(db)
    assert code == 4, report
    assert checks(report) == ["stored_definitions"]
    assert {(r["kind"], r["name"].split("(")[0], r["problem"]) for r in first(report)["rows"]} == {
        ("view", "balances", "definition differs"), ("macro", "name_uuid", "definition differs")}


# -- 2. the entries' seq numbers ---------------------------------------------------------------

def test_s8_an_entry_removed_with_its_batch_root_recomputed_leaves_a_gap_in_the_seqs(tmp_path):
    """8: seq is "a running count over the ledger's entries (0, 1, 2, ...)" (docs/tables.md). The
    CASH credit of e12 removed whole (entry, postings, the balances moved back, batch 2's counts
    and root recomputed as the docs define them) passed verify with exit 0: every hash, root, sum
    and balance holds. Its seq is missing from the count: now an `entry_seqs` break at batch 2."""
    lg = every_action(tmp_path, cut=6)
    db = tmp_path / "t.duckdb"
    shutil.copy(lg.db, db)
    con = duckdb.connect(str(db))
    try:
        (entry, seq), = con.execute("SELECT j.id, j.seq FROM journal_entries j JOIN events e ON e.id = j.event_id "
                                    "WHERE e.idempotency_key = 'e12'").fetchall()
        con.execute("UPDATE account_balances b SET amount = b.amount - p.amount FROM postings p "
                    "WHERE p.journal_entry_id = ? AND b.entity_type = p.entity_type AND b.entity_id = p.entity_id "
                    "AND b.asset_id = p.asset_id AND b.bucket = p.bucket", [entry])
        con.execute("DELETE FROM postings WHERE journal_entry_id = ?", [entry])
        con.execute("DELETE FROM journal_entries WHERE id = ?", [entry])
        (prev,) = con.execute("SELECT root_hash FROM batches WHERE id = 1").fetchone()
        tail = [{"seq": s, "entry_hash": h} for s, h in
                con.execute("SELECT seq, entry_hash FROM journal_entries WHERE batch_id = 2 ORDER BY seq").fetchall()]
        con.execute("UPDATE batches SET root_hash = ?, entries_written = entries_written - 1, "
                    "postings_written = postings_written - 2 WHERE id = 2", [batch_root(prev, tail)])
    finally:
        con.close()
    code, report = verify_json(db)
    assert code == 4, report
    assert checks(report) == ["entry_seqs"]
    row = first(report)["rows"][0]
    assert (row["batch_id"], row["seq"], row["expected"]) == (2, seq + 1, seq)


def test_s8_a_repeated_seq_is_a_break(tmp_path):
    """8: two entries with one seq (a place in the ledger claimed twice) is reported as such."""
    lg = every_action(tmp_path)
    (n,), = lg.sql("SELECT count(*) FROM journal_entries")
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", f"UPDATE journal_entries SET seq = {n - 2} "
                                                                       f"WHERE seq = {n - 1}"))
    assert code == 4
    seqs = next(v for v in report["violations"] if v["check"] == "entry_seqs")
    assert seqs["rows"] == [{"batch_id": 1, "seq": n - 2, "expected": n - 1, "problem": "repeats the previous entry's seq"}]


def test_s8_seqs_numbered_per_batch_before_session_10_are_accepted_in_version_1_batches_only(tmp_path):
    """docs/tables.md: "ledgers written before session 10 hold batch << 32 | n for their older
    entries, and new ones continue after them". Such numbering (batches 1 and 2 of version 1, a
    third continuing after the largest old seq) is no gap; in a version-3 batch it is one."""
    lg = every_action(tmp_path, cut=6)
    old = ["UPDATE journal_entries SET seq = (batch_id << 32) + (seq - (SELECT min(seq) FROM journal_entries j "
           "WHERE j.batch_id = journal_entries.batch_id))"]
    for version, gap in ((1, False), (3, True)):
        db = tampered(lg.db, tmp_path / f"v{version}.duckdb", *old, f"UPDATE batches SET hash_version = {version}")
        code, report = verify_json(db)
        seqs = [v["rows"] for v in report["violations"] if v["check"] == "entry_seqs"]
        assert bool(seqs) == gap, seqs
        if gap:  # batch 1 starts at 1 << 32 where 0 is due, batch 2 at 2 << 32 after its last
            assert [(r["batch_id"], r["seq"]) for r in seqs[0]] == [(1, 1 << 32), (2, 2 << 32)]


# -- 3. the first break names its batch and entry ------------------------------------------------

def test_s8_an_unbalanced_entry_is_reported_with_its_batch_and_seq(tmp_path):
    """8: "reports the first break": an entry whose postings no longer sum to zero was reported by
    entry id only, no batch, so it sorted after every break that names one, wherever it was."""
    lg = every_action(tmp_path, cut=6)
    (entry, seq), = lg.sql("SELECT j.id, j.seq FROM journal_entries j JOIN events e ON e.id = j.event_id "
                           "WHERE e.idempotency_key = 'e12'")
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", "UPDATE postings SET amount = amount + 1 "
                                        f"WHERE journal_entry_id = '{entry}' AND amount > 0"))
    assert code == 4
    sums = next(v for v in report["violations"] if v["check"] == "postings_sum_to_zero")
    assert (sums["rows"][0]["batch_id"], sums["rows"][0]["seq"], sums["rows"][0]["journal_entry_id"]) == (2, seq, str(entry))


# -- 4. an anchor outside the file ---------------------------------------------------------------

def simple_ledger(tmp: Path) -> Ledger:
    lg = Ledger(tmp, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})]))
    lg.run([ev("e1", "a", at(1), "earn", n=10)])
    lg.run([ev("e2", "a", at(2), "earn", n=5)])
    return lg


def remove_last_batch(src: Path, dst: Path) -> Path:
    """Batch 2 removed whole: its entries, postings, events and evaluations, the balances rewound and
    its manifest row gone. What is left is exactly the ledger after batch 1."""
    return tampered(src, dst,
                    "UPDATE account_balances b SET amount = b.amount - s.total FROM (SELECT entity_type, entity_id, "
                    "asset_id, bucket, SUM(p.amount) AS total FROM postings p JOIN journal_entries j ON "
                    "j.id = p.journal_entry_id WHERE j.batch_id = 2 GROUP BY ALL) s WHERE b.entity_type = s.entity_type "
                    "AND b.entity_id = s.entity_id AND b.asset_id = s.asset_id AND b.bucket = s.bucket",
                    "DELETE FROM postings WHERE journal_entry_id IN (SELECT id FROM journal_entries WHERE batch_id = 2)",
                    "DELETE FROM journal_entries WHERE batch_id = 2",
                    "DELETE FROM rule_evaluations WHERE batch_id = 2",
                    "DELETE FROM events WHERE batch_id = 2",
                    "DELETE FROM batches WHERE id = 2")


def test_s8_verify_prints_the_head_to_keep_and_expect_root_finds_the_last_batch_removed(tmp_path):
    """8 ("tamper evidence"): a chain holds in itself when its last batches are removed whole;
    only a root kept elsewhere shows it (docs/security.md). `perkflow verify --json` printed no
    root to keep and had no way to check one. Now it prints the head (last batch and its
    root_hash), and `--expect-root HASH` exits 4 when the verified chain no longer reaches it."""
    lg = simple_ledger(tmp_path)
    roots = dict(lg.sql("SELECT id, root_hash FROM batches"))
    code, report = verify_json(lg.db)
    assert code == 0 and report["head"] == {"batch_id": 2, "root_hash": roots[2]}
    for anchor in (roots[2], roots[1], roots[2].upper()):  # the head, or any earlier root kept
        res = cli("verify", "--db", str(lg.db), "--expect-root", anchor, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
    cut = remove_last_batch(lg.db, tmp_path / "cut.duckdb")
    code, report = verify_json(cut)
    assert code == 0 and report["head"] == {"batch_id": 1, "root_hash": roots[1]}  # sound in itself
    res = cli("verify", "--db", str(cut), "--expect-root", roots[2], "--json")
    assert res.returncode == 4, res.stdout + res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert checks(report) == ["expected_root"]
    assert first(report)["rows"][0]["expected_root"] == roots[2]
    assert first(report)["rows"][0]["head_batch_id"] == 1
    # the text output names the head too, and the failing check
    res = cli("verify", "--db", str(cut), "--expect-root", roots[2])
    assert res.returncode == 4 and "expected_root" in res.stderr and roots[1] in res.stdout


def test_s8_expect_root_of_a_rewritten_batch_is_not_reached(tmp_path):
    """The last batch's entry edited and its hash and root recomputed: sound in itself, but the
    root kept before no longer appears in the chain."""
    lg = simple_ledger(tmp_path)
    (root2,), = lg.sql("SELECT root_hash FROM batches WHERE id = 2")
    db = tmp_path / "t.duckdb"
    shutil.copy(lg.db, db)
    con = duckdb.connect(str(db))
    try:  # a new root over batch 2's entries with a changed seq-independent text: a fake hash
        con.execute("UPDATE journal_entries SET entry_hash = sha256('x') WHERE batch_id = 2")
        (prev,) = con.execute("SELECT root_hash FROM batches WHERE id = 1").fetchone()
        tail = [{"seq": s, "entry_hash": h} for s, h in
                con.execute("SELECT seq, entry_hash FROM journal_entries WHERE batch_id = 2 ORDER BY seq").fetchall()]
        con.execute("UPDATE batches SET root_hash = ? WHERE id = 2", [batch_root(prev, tail)])
    finally:
        con.close()
    res = cli("verify", "--db", str(db), "--expect-root", root2, "--json")
    assert res.returncode == 4
    assert "expected_root" in checks(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("anchor", ["abc", "z" * 64, ""])
def test_s13_an_expect_root_that_is_no_hash_is_an_input_error(tmp_path, anchor):
    lg = simple_ledger(tmp_path)
    res = cli("verify", "--db", str(lg.db), "--expect-root", anchor)
    assert res.returncode == 2 and "--expect-root" in res.stderr, res.stdout + res.stderr


# -- crash safety: no room to write -------------------------------------------------------------

def _limited(args: list[str], max_bytes: int) -> subprocess.CompletedProcess:
    """`perkflow ...` with files limited to `max_bytes` (RLIMIT_FSIZE): what a full disk does to
    the writes past it (Python ignores SIGXFSZ, so they fail with EFBIG), without a small disk."""
    env = dict(os.environ, COLUMNS="200")
    env.pop("PERKFLOW_DB", None)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)


def _purchases(first: int, n: int) -> list[dict]:
    return [ev(f"e{i}", f"u{i % 300}", f"2025-03-{1 + i // 2000:02d}T{(i // 60) % 24:02d}:{i % 60:02d}:00Z", "earn",
               n=1 + i % 7) for i in range(first, first + n)]


def test_s13_s4_a_run_that_runs_out_of_room_leaves_the_ledger_as_it_was_and_says_so(tmp_path):
    """13: exit 1 is "unexpected internal error (nothing committed)"; 4: "a run that crashed before
    committing left nothing behind; running it again gives the same result as if it had never
    crashed". A batch whose writes hit a full disk left the ledger as before, but the CLI called
    it an internal error and printed a trace to report. Now: exit 1, no trace, a message that says
    what happened and what to do; the ledger is the one before the run, and the re-run once there is
    room gives the ledger of a run that never failed."""
    from tests.reliability.harness import dump

    lg = simple_ledger(tmp_path)
    big = _purchases(100, 20000)
    # the same run without a limit: what the ledger must be after the re-run
    clean = tmp_path / "clean.duckdb"
    shutil.copy(lg.db, clean)
    events = write_events(tmp_path / "big.parquet", [
        {"program_id": "shop", "idempotency_key": e["key"], "external_id": e["who"], "event_timestamp": e["when"],
         "event_data": json.dumps(e["data"])} for e in big])
    args = ["run", "--programs", str(lg.programs), "--events", str(events), "--json"]
    assert cli(*args, "--db", str(clean)).returncode == 0
    before = dump(lg.db)
    res = _limited([*args, "--db", str(lg.db)], lg.db.stat().st_size)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert "no room to write" in res.stderr and "nothing was committed" in res.stderr, res.stderr
    assert dump(lg.db, snapshot=True) == before
    res = cli(*args, "--db", str(lg.db))
    assert res.returncode == 0 and not json.loads(res.stdout.strip().splitlines()[-1])["already_committed"]
    assert dump(lg.db) == dump(clean)
    assert verify_json(lg.db)[0] == 0


def test_s13_a_database_file_that_cannot_be_written_is_a_configuration_error(tmp_path):
    """13: an unwritable --db (here: immutable, `chattr +i`, which binds root too; a read-only
    file does the same for other users) stopped `perkflow run` as an internal error with a trace.
    Now exit 2 naming the problem, nothing written."""
    lg = simple_ledger(tmp_path)
    if subprocess.run(["chattr", "+i", str(lg.db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        res = cli("run", "--programs", str(lg.programs), "--db", str(lg.db), "--events",
                  str(write_events(tmp_path / "e.parquet", [{"program_id": "shop", "idempotency_key": "x",
                                                             "external_id": "a", "event_timestamp": at(3),
                                                             "event_data": '{"type": "earn", "n": 1}'}])))
    finally:
        subprocess.run(["chattr", "-i", str(lg.db)], capture_output=True)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "cannot be opened for writing" in res.stderr and "Traceback" not in res.stderr


# -- replay of a tampered ledger --------------------------------------------------------------------

def test_s3_s8_replay_of_a_ledger_that_fails_verify_stops_and_writes_nothing(tmp_path):
    """3 / 8: `replay` rebuilds from "all stored inputs". From a ledger whose event row was deleted
    and a posting edited (verify: exit 4), it wrote a fresh ledger with a sound chain of its own
    and exit 0: the tampering vanished from the record and the rebuilt ledger lacked the event.
    Now it verifies the source first: exit 4 naming the break, nothing written; `--unverified`
    rebuilds from what is stored anyway."""
    lg = simple_ledger(tmp_path)
    bad = tampered(lg.db, tmp_path / "bad.duckdb",
                   "UPDATE postings SET amount = amount * 10 WHERE journal_entry_id = (SELECT id FROM journal_entries "
                   "WHERE seq = 1)", "DELETE FROM events WHERE idempotency_key = 'e1'")
    assert verify_json(bad)[0] == 4
    out = tmp_path / "rebuilt.duckdb"
    res = cli("replay", "--from", str(bad), "--db", str(out), "--json")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "fails `perkflow verify`" in res.stderr and "(batch 1)" in res.stderr and "--unverified" in res.stderr
    assert not out.exists()
    res = cli("replay", "--from", str(bad), "--db", str(out), "--json", "--unverified")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["read"] == 1  # e2 only: e1's row is gone
    # a sound source replays as before
    res = cli("replay", "--from", str(lg.db), "--db", str(tmp_path / "sound.duckdb"), "--json")
    assert res.returncode == 0 and json.loads(res.stdout.strip().splitlines()[-1])["read"] == 2
