"""Outsider round (session 20): the ledger as a black box: semantics.md 1 (invariants), 8 (entries,
postings, tamper evidence) and 12's balances. Each test writes program files and Parquet rows,
runs the `perkflow` CLI in a subprocess into a real DuckDB file, and compares the ledger with what
the contract and docs/tables.md say, worked out by hand; the tamper tests edit the DuckDB file
with SQL as an attacker with write access would, and expect `perkflow verify` to exit 4 naming
the first break.

What it found: verify passed a ledger whose batch manifest had been edited in three ways: a
batch's stored `prev_root_hash` changed, the entries of a batch whose `batches` row was deleted
(or a complete forged entry, its hash recomputed from the documented definition, filed under a
batch id no batch has), and a batch's stored counts changed after commit.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import duckdb
import pytest

from tests.e2e.test_contract_audit import Ledger, at, ev, on, op, program
from tests.helpers.io import cli

PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 2}
CASH = {"symbol": "CASH", "name": "Cash", "inventory_mode": "SIMPLE", "issuance_policy": "PREFUNDED", "scale": 0}
RULES = [
    on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "description": "earned"}),
    on("earn_exp", {"type": "CREDIT", "asset": "PTS", "amount": "5", "expires_at": "24h"}),
    on("earn_def", {"type": "CREDIT", "asset": "PTS", "amount": "3", "matures_at": "24h"}),
    on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "2"}),
    on("hold", {"type": "HOLD", "asset": "PTS", "amount": "4", "reference_id": "h1"}),
    on("release", {"type": "RELEASE", "asset": "PTS", "reference_id": "h1"}),
    on("forfeit", {"type": "FORFEIT", "asset": "PTS", "amount": "1"}),
    on("pend", {"type": "CREDIT", "asset": "PTS", "amount": "6", "bucket": "HELD", "reference_id": "o1"}),
    on("settle", {"type": "CREDIT", "asset": "PTS", "amount": "6", "reference_id": "o1"}),
    on("pend2", {"type": "CREDIT", "asset": "PTS", "amount": "7", "bucket": "HELD", "reference_id": "o2"}),
    on("void", {"type": "VOID_HOLD", "asset": "PTS", "reference_id": "o2"}),
    on("cash", {"type": "CREDIT", "asset": "CASH", "amount": "10"}),
]
EVENTS = [ev("e1", "a", at(1), "earn", n=50), ev("e2", "a", at(1, 13), "earn_exp"), ev("e3", "a", at(1, 14), "earn_def"),
          ev("e4", "a", at(2), "spend"), ev("e5", "a", at(2, 13), "hold"), ev("e6", "a", at(2, 14), "release"),
          ev("e7", "a", at(2, 15), "forfeit"), ev("e8", "a", at(3), "pend"), ev("e9", "a", at(3, 13), "settle"),
          ev("e10", "a", at(3, 14), "pend2"), ev("e11", "a", at(3, 15), "void"), ev("e12", "a", at(4, 13), "cash"),
          ev("e13", "b", at(4, 14), "earn", n=1)]
OPERATIONS = [op("fund", "f1", None, at(4), asset="CASH", amount="100"),
              op("burn", "b1", None, at(4, 12, 30), asset="CASH", amount="5"),
              op("adjust", "ad1", "a", at(5), type="CREDIT", asset="PTS", amount="3", description="goodwill"),
              op("redeem", "r1", "a", at(5, 13), asset="PTS", amount="2"),
              op("reverse_redemption", "rr1", "a", at(5, 14), redemption="r1", amount="1"),
              op("transfer", "t1", "a", at(5, 15), asset="PTS", recipients=[{"external_id": "b", "amount": "1.5"}])]
UTC = timezone.utc
EVENT_TYPE = {e["key"]: e["data"]["type"] for e in EVENTS}


def every_action(tmp: Path, *, cut: int | None = None, env: dict | None = None) -> Ledger:
    """A ledger with an entry of each of semantics.md 8's fifteen action types: the events in one
    batch with the operations, or the first `cut` events in a batch of their own."""
    lg = Ledger(tmp, program(RULES, [PTS, CASH]))
    if cut is None:
        lg.run(EVENTS, OPERATIONS, env=env)
    else:
        lg.run(EVENTS[:cut], env=env)
        lg.run(EVENTS[cut:], OPERATIONS, env=env)
    return lg


def verify_json(db: Path) -> tuple[int, dict]:
    res = cli("verify", "--db", str(db), "--json")
    return res.returncode, json.loads(res.stdout.strip().splitlines()[-1])


def tampered(src: Path, dst: Path, *sql: str) -> Path:
    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    try:
        for s in sql:
            con.execute(s)
    finally:
        con.close()
    return dst


# -- the hash as docs/tables.md ("Recomputing a hash by hand") defines it, written from the docs --

def _text(value) -> str:
    return "" if value is None else str(value)


def _epoch_us(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def entry_hash(entry: dict, postings: list[dict]) -> str:
    text = "|".join([str(entry["id"]), str(entry["program_id"]), _text(entry["event_id"]), _text(entry["operation_id"]),
                     _text(entry["rule_id"]), _text(entry["rule_version"]), _text(entry["action_index"]),
                     entry["action_type"], _text(entry["reference_id"]), str(_epoch_us(entry["effective_at"])),
                     "true" if entry["allow_negative"] else "false", _text(entry["description"])])
    legs = ";".join("|".join([str(p["id"]), p["entity_type"], str(p["entity_id"]), str(p["asset_id"]), p["bucket"],
                              f"{D(p['amount']):.18f}", str(p["program_id"])])
                    for p in sorted(postings, key=lambda p: str(p["id"])))
    return hashlib.sha256(f"{text}#{legs}".encode()).hexdigest()


def batch_root(prev_root: str, entries: list[dict]) -> str:
    return hashlib.sha256((prev_root + "#" + ";".join(f"{e['seq']}:{e['entry_hash']}" for e in entries)).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------

def test_s8_every_action_type_is_a_balanced_entry_naming_its_source(tmp_path):
    """8: each of the fifteen action types is an entry of >= 2 postings summing to zero per asset,
    with its program, source (event, or operation: rule id and version null), reference,
    description, effective_at (the stream instant; a lot's expiry and maturity at the instant
    they were due), batch. Worked out from the inputs: e2's 5 expire at day 2 13:00 (24 h), before
    e5 at that instant; e3's 3 mature at day 2 14:00, before e6."""
    lg = every_action(tmp_path)
    entries = lg.sql_dicts("""
        SELECT j.*, coalesce(e.idempotency_key, o.idempotency_key) AS source_key, r.key AS rule_key
        FROM journal_entries j LEFT JOIN events e ON e.id = j.event_id LEFT JOIN operations o ON o.id = j.operation_id
        LEFT JOIN rules r ON r.id = j.rule_id ORDER BY j.seq""")
    got = [(e["action_type"], e["source_key"], e["effective_at"].isoformat().replace("+00:00", "Z")) for e in entries]
    assert got == [("CREDIT", "e1", at(1)), ("CREDIT", "e2", at(1, 13)), ("CREDIT", "e3", at(1, 14)),
                   ("DEBIT", "e4", at(2)), ("EXPIRATION", None, at(2, 13)), ("HOLD", "e5", at(2, 13)),
                   ("MATURITY", None, at(2, 14)), ("RELEASE", "e6", at(2, 14)), ("FORFEIT", "e7", at(2, 15)),
                   ("CREDIT", "e8", at(3)), ("SETTLE", "e9", at(3, 13)), ("CREDIT", "e10", at(3, 14)),
                   ("VOID_HOLD", "e11", at(3, 15)), ("FUND", "f1", at(4)), ("BURN", "b1", at(4, 12, 30)),
                   ("CREDIT", "e12", at(4, 13)), ("CREDIT", "e13", at(4, 14)), ("ADJUSTMENT", "ad1", at(5)),
                   ("REDEMPTION", "r1", at(5, 13)), ("REDEMPTION_REVERSAL", "rr1", at(5, 14)), ("TRANSFER", "t1", at(5, 15))]
    (program_id,) = lg.sql("SELECT id FROM programs WHERE key = 'shop'")[0]
    versions = dict(lg.sql("SELECT id, current_version FROM rules"))
    for e in entries:
        assert e["program_id"] == program_id and e["batch_id"] == 1 and e["seq"] == entries.index(e)
        if e["action_type"] in ("EXPIRATION", "MATURITY"):
            assert (e["event_id"], e["operation_id"], e["rule_id"]) == (None, None, None)
        elif e["source_key"].startswith("e"):  # a rule's action: its rule and the version it had
            assert e["operation_id"] is None and e["rule_key"] == EVENT_TYPE[e["source_key"]]
            assert e["rule_version"] == versions[e["rule_id"]]
        else:  # an operation: no rule
            assert (e["event_id"], e["rule_id"], e["rule_version"]) == (None, None, None)
    by_key = {e["source_key"]: e for e in entries if e["source_key"]}
    assert by_key["e1"]["description"] == "earned" and by_key["e4"]["description"] == "spend"  # default: the rule's name
    assert by_key["ad1"]["description"] == "goodwill"
    assert [by_key[k]["reference_id"] for k in ("e5", "e6", "e8", "e9", "e10", "e11")] == ["h1", "h1", "o1", "o1", "o2", "o2"]
    legs = lg.sql("""SELECT j.seq, a.symbol, count(*), sum(p.amount) FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id
                     JOIN assets a ON a.id = p.asset_id GROUP BY ALL ORDER BY 1""")
    assert len(legs) == len(entries) and all(n >= 2 and total == 0 for _, _, n, total in legs)
    # balances by hand: 50 + 5 - 2 - 5 (expired) + 3 (matured) - 1 + 6 (settled) + 3 - 2 + 1 - 1.5
    assert lg.balance("a") == (D("56.5"), D(0), D(0)) and lg.balance("b") == (D("2.5"), D(0), D(0))
    assert lg.balance("a", "CASH") == (D(10), D(0), D(0))
    # the balances view equals the postings, account by account
    posted = lg.sql("""SELECT p.entity_type, p.entity_id, a.symbol, p.bucket, sum(p.amount) FROM postings p
                       JOIN assets a ON a.id = p.asset_id GROUP BY ALL HAVING sum(p.amount) <> 0 ORDER BY ALL""")
    view = lg.sql("""SELECT * FROM (UNPIVOT (SELECT entity_type, entity_id, asset_symbol, available, held, deferred FROM balances)
                     ON available, held, deferred INTO NAME bucket VALUE amount) WHERE amount <> 0 ORDER BY ALL""")
    assert sorted((t, i, s, b, D(v)) for t, i, s, b, v in posted) == sorted((t, i, s, b.upper(), D(v)) for t, i, s, b, v in view)
    lg.verify()


def test_s8_entry_hashes_and_batch_roots_recomputed_by_hand_from_the_docs(tmp_path):
    """8: entry_hash = SHA-256 over the entry's canonical content and its postings, each batch's
    root chained to the previous one. docs/tables.md now spells the texts out (fields, order,
    separators, how a null, an instant, a boolean and an amount are written); recomputed here
    from that text alone, for a ledger of two batches and every action type."""
    lg = every_action(tmp_path, cut=6)
    entries = lg.sql_dicts("SELECT * FROM journal_entries ORDER BY seq")
    postings = lg.sql_dicts("SELECT * FROM postings")
    for e in entries:
        assert entry_hash(e, [p for p in postings if p["journal_entry_id"] == e["id"]]) == e["entry_hash"], e["seq"]
    prev = ""
    for b in lg.sql_dicts("SELECT * FROM batches ORDER BY id"):
        assert b["prev_root_hash"] == prev
        assert b["root_hash"] == batch_root(prev, [e for e in entries if e["batch_id"] == b["id"]])
        prev = b["root_hash"]


SEQ_POSTING = "(SELECT p.id FROM postings p JOIN journal_entries j ON j.id = p.journal_entry_id WHERE j.seq = {} ORDER BY p.id LIMIT 1)"
TAMPERS = {
    # name: (SQL, first failing check, the place it names: (column, value))
    "posting amount": (f"UPDATE postings SET amount = amount + 1 WHERE id = {SEQ_POSTING.format(3)}", "entry_hashes", ("seq", 3)),
    "both amounts": ("UPDATE postings SET amount = amount * 2 WHERE journal_entry_id = (SELECT id FROM journal_entries WHERE seq = 3)",
                     "entry_hashes", ("seq", 3)),
    "posting bucket": (f"UPDATE postings SET bucket = 'HELD' WHERE id = {SEQ_POSTING.format(0)}", "entry_hashes", ("seq", 0)),
    "effective_at": ("UPDATE journal_entries SET effective_at = effective_at + INTERVAL 1 SECOND WHERE seq = 12",
                     "entry_hashes", ("seq", 12)),
    "action_type": ("UPDATE journal_entries SET action_type = 'ADJUSTMENT' WHERE seq = 5", "entry_hashes", ("seq", 5)),
    "reference_id": ("UPDATE journal_entries SET reference_id = 'other' WHERE seq = 5", "entry_hashes", ("seq", 5)),
    "posting deleted": (f"DELETE FROM postings WHERE id = {SEQ_POSTING.format(3)}", "entry_hashes", ("seq", 3)),
    "posting inserted": ("INSERT INTO postings SELECT uuid(), journal_entry_id, program_id, entity_type, entity_id, asset_id, "
                         "bucket, amount FROM postings WHERE id = " + SEQ_POSTING.format(7), "entry_hashes", ("seq", 7)),
    "entry deleted": ("DELETE FROM journal_entries WHERE seq = 3", "batch_chain", ("batch_id", 1)),
    "entries reordered": ("UPDATE journal_entries SET seq = CASE seq WHEN 13 THEN 14 ELSE 13 END WHERE seq IN (13, 14)",
                          "batch_chain", ("batch_id", 2)),
    "batch root": ("UPDATE batches SET root_hash = sha256('x') WHERE id = 1", "batch_chain", ("batch_id", 1)),
    "batches swapped": ("UPDATE batches SET id = 3 - id", "batch_chain", ("batch_id", 1)),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_s8_verify_reports_the_first_break_of_each_kind_with_its_place(tmp_path, name):
    """8: an edited amount, posting or entry field, a deleted or inserted row, reordered entries or
    batches, an edited root: `perkflow verify` exits 4 and its first violation names the entry or
    batch (batch 1: seqs 0-5, batch 2: 6-20); the untouched ledger passes."""
    lg = every_action(tmp_path, cut=6)
    assert verify_json(lg.db)[0] == 0
    sql, check, (column, value) = TAMPERS[name]
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", sql))
    assert code == 4 and not report["ok"]
    first = report["violations"][0]
    assert first["check"] == check and first["rows"][0][column] == value


def test_s8_verify_finds_a_batchs_edited_prev_root_hash(tmp_path):
    """8: "each committed batch stores a root hash over its entries chained to the previous batch's
    root"; `batches.prev_root_hash` is that link as stored (docs/tables.md). Verify recomputed each
    root from the previous *recomputed* root and never compared the stored link: a ledger whose
    batch 2 claimed another predecessor passed with exit 0. Now a stored link that is not the
    previous batch's root is a `batch_chain` break at that batch."""
    lg = every_action(tmp_path, cut=6)
    db = tampered(lg.db, tmp_path / "t.duckdb", "UPDATE batches SET prev_root_hash = sha256('elsewhere') WHERE id = 2")
    code, report = verify_json(db)
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "batch_chain" and first["rows"][0]["batch_id"] == 2


def forge(con: duckdb.DuckDBPyConnection, operation_key: str, action_type: str, seq: int, batch_id: int,
          legs: list[tuple]) -> uuid.UUID:
    """Insert a CASH entry of these legs ((external id, amount[, bucket]), AVAILABLE by default), as a second part of the
    stored operation `operation_key`, its hash computed as docs/tables.md defines it: what an
    attacker with the file and the docs can write. Returns its id."""
    con.execute("SET TimeZone = 'UTC'")
    (asset,) = con.execute("SELECT id FROM assets WHERE symbol = 'CASH'").fetchone()
    (prog,) = con.execute("SELECT id FROM programs").fetchone()
    (source,) = con.execute("SELECT id FROM operations WHERE idempotency_key = ?", [operation_key]).fetchone()
    entry = {"id": uuid.uuid4(), "seq": seq, "program_id": prog, "event_id": None, "operation_id": source,
             "rule_id": None, "rule_version": None, "action_index": 1, "action_type": action_type, "reference_id": None,
             "description": "forged", "effective_at": datetime(2025, 3, 9, tzinfo=UTC), "allow_negative": False,
             "batch_id": batch_id}
    rows = [{"id": uuid.uuid4(), "journal_entry_id": entry["id"], "program_id": prog, "entity_type": "PARTICIPANT",
             "entity_id": con.execute("SELECT id FROM participants WHERE external_id = ?", [who]).fetchone()[0],
             "asset_id": asset, "bucket": bucket, "amount": D(amount)}
            for who, amount, bucket in (leg if len(leg) == 3 else (*leg, "AVAILABLE") for leg in legs)]
    entry["entry_hash"] = entry_hash(entry, rows)
    for table, row in [("journal_entries", entry), *(("postings", r) for r in rows)]:
        con.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    return entry["id"]


def rewrite_tail(con: duckdb.DuckDBPyConnection, postings: int) -> None:
    """Batch 2 (the last) after one more entry of `postings` postings was forged into it: its root
    recomputed as docs/tables.md defines it and its counts raised, as someone rewriting the tail
    of the chain would. Only the invariants can catch what it holds."""
    (prev,) = con.execute("SELECT root_hash FROM batches WHERE id = 1").fetchone()
    tail = [{"seq": s, "entry_hash": h} for s, h in
            con.execute("SELECT seq, entry_hash FROM journal_entries WHERE batch_id = 2 ORDER BY seq").fetchall()]
    con.execute("UPDATE batches SET root_hash = ?, entries_written = entries_written + 1, "
                "postings_written = postings_written + ? WHERE id = 2", [batch_root(prev, tail), postings])


def _forge_transfer(db: Path, batch_id: int) -> None:
    """A complete, balanced entry moving 1 CASH from a to b (as a second part of the real transfer
    t1), the materialised balances moved with it. Only the batch chain can catch it."""
    con = duckdb.connect(str(db))
    try:
        forge(con, "t1", "TRANSFER", 1000, batch_id, [("a", -1), ("b", 1)])
        (asset,) = con.execute("SELECT id FROM assets WHERE symbol = 'CASH'").fetchone()
        (a,), (b,) = con.execute("SELECT id FROM participants WHERE external_id IN ('a', 'b') ORDER BY external_id").fetchall()
        con.execute("UPDATE account_balances SET amount = amount - 1 WHERE entity_id = ? AND asset_id = ?", [a, asset])
        con.execute("INSERT INTO account_balances VALUES ('PARTICIPANT', ?, ?, 'AVAILABLE', 1)", [b, asset])
    finally:
        con.close()


@pytest.mark.parametrize("batch_id", [99, 0])
def test_s8_verify_finds_an_entry_forged_under_a_batch_no_batch_row_has(tmp_path, batch_id):
    """8 / 1.8: an inserted entry must break the chain. Under an existing batch it did (batch 2's
    root); under a batch id the manifest does not have (99, 0) `perkflow verify` skipped it, and
    a forged transfer with a correct hash and matching balances passed with exit 0. Now entries
    whose batch is not in `batches` are a `batch_chain` break naming that batch id."""
    lg = every_action(tmp_path, cut=6)
    db = tmp_path / "t.duckdb"
    shutil.copy(lg.db, db)
    _forge_transfer(db, batch_id)
    code, report = verify_json(db)
    assert code == 4, report
    # its hash, sums and balances all hold; batch_counts also finds it (no batch says it wrote it),
    # and entry_seqs under batch 0 (its seq, after the ledger's last, stands before batch 1's)
    assert [v["check"] for v in report["violations"]][0] == "batch_chain"
    assert {v["check"] for v in report["violations"]} <= {"batch_chain", "batch_counts", "entry_seqs"}
    assert report["violations"][0]["rows"][0]["batch_id"] == batch_id


def test_s8_verify_finds_a_deleted_batch_row(tmp_path):
    """8: the last batch's manifest row deleted leaves its entries under no root; verify passed
    (the entries of batches not in `batches` were skipped). Now a `batch_chain` break at batch 2.
    (Deleting the first batch's row was already found: batch 2's root no longer chains.)"""
    lg = every_action(tmp_path, cut=6)
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", "DELETE FROM batches WHERE id = 2"))
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "batch_chain" and first["rows"][0]["batch_id"] == 2


@pytest.mark.parametrize("sql, count", [
    ("UPDATE batches SET completed = completed - 1 WHERE id = 1", "rows_read"),
    ("UPDATE batches SET rows_read = rows_read + 1, completed = completed + 1, entries_written = entries_written - 1 "
     "WHERE id = 2", "entries_written"),
    ("UPDATE batches SET postings_written = postings_written + 2 WHERE id = 1", "postings_written"),
])
def test_s1_7_s13_verify_finds_batch_counts_edited_after_commit(tmp_path, sql, count):
    """1.7 / 13: every run stores its counts, read = completed + failed + duplicates + rejected, and
    `batches` says how many entries and postings the batch wrote (docs/tables.md). verify,
    which "recomputes the chain and every invariant", did not look at them: a manifest claiming
    another run passed. Now `batch_counts` recomputes them."""
    lg = every_action(tmp_path, cut=6)
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", sql))
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "batch_counts" and first["rows"][0]["count"] == count


LEDGER = {"journal_entries": "SELECT * EXCLUDE (batch_id) FROM journal_entries ORDER BY seq",
          "postings": "SELECT * FROM postings ORDER BY id",
          "lots": "SELECT * EXCLUDE (batch_id) FROM lots ORDER BY id",
          "account_balances": "SELECT * FROM account_balances ORDER BY ALL",
          "redemptions": "SELECT * EXCLUDE (batch_id) FROM redemptions ORDER BY id"}


def test_s1_4_s1_5_the_same_inputs_give_the_same_ledger_on_any_thread_count_path_or_cut(tmp_path):
    """1.4 / 1.5: ids, amounts, order and hashes are the same on one DuckDB thread
    (PERKFLOW_DUCKDB_THREADS, README), on the running path forced for a small batch
    (PERKFLOW_RUNNING_MIN_EVENTS=0) and cut into two batches; one batch gives the same root."""
    def ledger(name: str, **kw) -> dict:
        lg = every_action(tmp_path / name, **kw)
        return {t: lg.sql(q) for t, q in LEDGER.items()} | {"roots": lg.sql("SELECT root_hash FROM batches")}
    (tmp_path / "base").mkdir()
    base = ledger("base")
    for name, kw in [("one_thread", {"env": {"PERKFLOW_DUCKDB_THREADS": "1"}}),
                     ("running", {"env": {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}}), ("cut", {"cut": 6})]:
        (tmp_path / name).mkdir()
        got = ledger(name, **kw)
        for table in LEDGER:
            assert got[table] == base[table], (name, table)
        assert name == "cut" or got["roots"] == base["roots"], name


def test_s1_8_no_command_rewrites_a_ledger_row(tmp_path):
    """1.8: run (late events, a re-run), op, maintain and replay on an existing ledger only add rows:
    every entry, posting and batch row before each command is still there, unchanged."""
    lg = every_action(tmp_path)

    def rows() -> dict:
        return {t: set(map(repr, lg.sql(f"SELECT * FROM {t}"))) for t in ("journal_entries", "postings", "batches")}

    def adds_only(before: dict) -> dict:
        after = rows()
        assert all(before[t] <= after[t] for t in before)
        return after

    snap = rows()
    late = [ev("e20", "a", at(6), "earn_exp"), ev("e21", "c", at(1), "earn", n=4)]
    lg.run(late)
    snap = adds_only(snap)
    lg.run(late)
    assert adds_only(snap) == snap  # the same batch again: nothing
    res = cli("op", "adjust", "--program", "shop", "--key", "o9", "--external-id", "a", "--timestamp", at(8),
              "--param", "type=DEBIT", "--param", "asset=PTS", "--param", "amount=1", "--db", str(lg.db), "--json")
    assert res.returncode == 0, res.stderr
    snap = adds_only(snap)
    assert cli("maintain", "--as-of", "2025-05-01T00:00:00Z", "--db", str(lg.db)).returncode == 0
    snap = adds_only(snap)
    assert cli("replay", "--from", str(lg.db), "--db", str(tmp_path / "replayed.duckdb")).returncode == 0
    assert rows() == snap
    lg.verify()


def test_s8_verify_reports_the_earliest_break_first_whichever_check_finds_it(tmp_path):
    """8: verify "reports the first break". With batch 1's root edited and an entry of batch 2
    edited, the first violation printed was the edited entry of batch 2 (entry_hashes is checked
    before the chain), so a reader trusting everything before the reported break trusted batch 1.
    Now the violations are ordered by the earliest batch they name, the checks' order within one
    batch; those that name no batch (sums, balances) come after."""
    lg = every_action(tmp_path, cut=6)
    db = tampered(lg.db, tmp_path / "t.duckdb", "UPDATE batches SET root_hash = sha256('x') WHERE id = 1",
                  "UPDATE journal_entries SET reference_id = 'other' WHERE seq = 16")
    code, report = verify_json(db)
    assert code == 4
    assert [(v["check"], v["rows"][0]["batch_id"]) for v in report["violations"]] == [("batch_chain", 1), ("entry_hashes", 2)]
    res = cli("verify", "--db", str(db))
    assert res.returncode == 4 and "verification failed: batch_chain" in res.stderr


def test_s1_2_verify_finds_an_entry_of_one_posting_even_when_its_hash_and_chain_hold(tmp_path):
    """1.2: "every journal entry has two or more postings that sum to zero per asset". verify
    reported entries without postings and postings that do not sum to zero, but an entry of a
    single posting of 0 passed it: the sums hold. Written with a correct hash and the last batch's
    root and counts recomputed (what someone rewriting the tail of the chain, or a writer bug,
    leaves), verify exited 0. Now fewer than two postings, or only postings of 0, is a
    `postings_sum_to_zero` violation naming the entry."""
    lg = every_action(tmp_path, cut=6)
    db = tmp_path / "t.duckdb"
    shutil.copy(lg.db, db)
    con = duckdb.connect(str(db))
    try:
        entry_id = forge(con, "ad1", "ADJUSTMENT", 21, 2, [("a", 0)])
        rewrite_tail(con, postings=1)
    finally:
        con.close()
    code, report = verify_json(db)
    assert code == 4, report
    assert [v["check"] for v in report["violations"]] == ["postings_sum_to_zero"]
    assert report["violations"][0]["rows"][0]["journal_entry_id"] == str(entry_id)


def test_s4_every_id_of_the_ledger_derived_by_hand_from_the_docs(tmp_path):
    """4 ("derived ids ... everything reproducible"), 2.1: the ids are UUIDv5 of names, but the
    docs named neither the namespace nor the exact names (an operation's entries are `:op:`, a
    lot's expiry goes through the lot), so no user could derive one, e.g. a participant_id for
    their event rows. docs/tables.md now gives both; every catalog, participant, event, operation,
    entry and posting id of a ledger with all fifteen action types is derived from that text."""
    ns = uuid.uuid5(uuid.NAMESPACE_URL, "https://perkflow.dev/ids")

    def name(*parts) -> uuid.UUID:
        return uuid.uuid5(ns, ":".join(map(str, parts)))

    lg = every_action(tmp_path)
    program_id = name("program", "shop")
    assert lg.sql("SELECT id FROM programs") == [(program_id,)]
    assert sorted(lg.sql("SELECT symbol, id FROM assets")) == [(s, name("asset", s)) for s in ("CASH", "PTS")]
    assert all(i == name("rule", "shop", k) for k, i in lg.sql("SELECT key, id FROM rules"))
    assert all(i == name("participant", x) for x, i in lg.sql("SELECT external_id, id FROM participants"))
    sources = {i: name("event", program_id, k) for k, i in lg.sql("SELECT idempotency_key, id FROM events")}
    sources |= {i: name("operation", program_id, k) for k, i in lg.sql("SELECT idempotency_key, id FROM operations")}
    assert all(i == derived for i, derived in sources.items())
    lots = [lot for (lot,) in lg.sql("SELECT id FROM lots")]
    for e in lg.sql_dicts("SELECT * FROM journal_entries"):
        if e["event_id"]:
            assert e["id"] == name("entry", e["event_id"], e["rule_version"], e["action_index"])
        elif e["operation_id"]:
            assert e["id"] == name("entry", e["operation_id"], "op", e["action_index"])
        else:  # a lot's expiry or maturity: one of the lots
            assert e["id"] in {name("entry", name("lot", lot), e["action_type"], 0) for lot in lots}
        legs = [p for (p,) in lg.sql("SELECT id FROM postings WHERE journal_entry_id = ?", [e["id"]])]
        assert sorted(legs) == sorted(name("posting", e["id"], k) for k in range(len(legs)))
    wallets = lg.sql("SELECT DISTINCT entity_type, entity_id FROM postings WHERE entity_type <> 'PARTICIPANT'")
    assert sorted(wallets) == sorted([("PROGRAM_WALLET", program_id)] + [(s, name("system", s)) for s in
                                      ("SYSTEM_ISSUANCE", "SYSTEM_BREAKAGE", "SYSTEM_REDEMPTION")])


@pytest.mark.parametrize("sql, key", [
    ("UPDATE events SET status = 'FAILED', error_code = 'insufficient_balance' WHERE idempotency_key = 'e4'", "e4"),
    ("DELETE FROM operations WHERE idempotency_key = 't1'", "t1"),
])
def test_s8_s5_verify_finds_entries_whose_event_or_operation_is_gone_or_failed(tmp_path, sql, key):
    """8 (an entry names its event or operation) / 5.5 (a FAILED event writes no postings) / 1.7:
    the DEBIT of e4 left in the ledger while its event row says FAILED, or the transfer's entry
    with its operation row deleted, passed verify: nothing looked from an entry to its source.
    Now `entries_have_their_source` names the entry (with the source's status, null when gone)."""
    lg = every_action(tmp_path)
    (entry_id, seq) = lg.sql("""SELECT j.id::VARCHAR, j.seq FROM journal_entries j LEFT JOIN events e ON e.id = j.event_id
                                LEFT JOIN operations o ON o.id = j.operation_id
                                WHERE coalesce(e.idempotency_key, o.idempotency_key) = ?""", [key])[0]
    code, report = verify_json(tampered(lg.db, tmp_path / "t.duckdb", sql))
    assert code == 4
    first = report["violations"][0]
    assert first["check"] == "entries_have_their_source"
    assert (first["rows"][0]["journal_entry_id"], first["rows"][0]["seq"]) == (entry_id, seq)


def test_s8_verify_finds_a_held_bucket_below_zero_that_no_overdraft_allows(tmp_path):
    """8: "balances can go negative only through allow_negative", and allow_negative overdraws
    AVAILABLE only (a DEBIT's). `negative_balances` looked at participants' and groups' AVAILABLE
    alone: an entry releasing 1 CASH from a's HELD, which holds nothing (hash, root and counts
    recomputed, balances moved to match), left HELD at -1 and verify passed. Now every account but
    SYSTEM_ISSUANCE below zero is reported unless it is an AVAILABLE an allowed entry overdrew."""
    lg = every_action(tmp_path, cut=6)
    db = tmp_path / "t.duckdb"
    shutil.copy(lg.db, db)
    con = duckdb.connect(str(db))
    try:
        forge(con, "ad1", "RELEASE", 21, 2, [("a", -1, "HELD"), ("a", 1, "AVAILABLE")])
        rewrite_tail(con, postings=2)
        (a,) = con.execute("SELECT id FROM participants WHERE external_id = 'a'").fetchone()
        (cash,) = con.execute("SELECT id FROM assets WHERE symbol = 'CASH'").fetchone()
        con.execute("UPDATE account_balances SET amount = amount + 1 WHERE entity_id = ? AND asset_id = ? "
                    "AND bucket = 'AVAILABLE'", [a, cash])
        con.execute("INSERT INTO account_balances VALUES ('PARTICIPANT', ?, ?, 'HELD', -1)", [a, cash])
    finally:
        con.close()
    code, report = verify_json(db)
    assert code == 4, report
    assert [v["check"] for v in report["violations"]] == ["negative_balances"]
    row = report["violations"][0]["rows"][0]
    assert (row["participant_id"], row["bucket"], D(row["amount"])) == (str(a), "HELD", D(-1))


@pytest.mark.parametrize("name, value", [("PERKFLOW_RUNNING_MIN_EVENTS", "abc"), ("PERKFLOW_RUNNING_MIN_EVENTS", "-1"),
                                         ("PERKFLOW_CUT_MIN_EVENTS", "2k")])
def test_s13_a_bad_path_setting_is_a_configuration_error_and_writes_nothing(tmp_path, name, value):
    """13 (exit 2: invalid input or configuration, nothing written) / 1.4: the settings that pick the
    path a batch takes (README, docs/decisions.md) were read with int() as their module loaded:
    `abc` stopped `perkflow run` with an internal error and a trace (exit 1), and `-1` was taken
    (every batch on the running path). Now both say what the setting takes, exit 2, and no
    ledger is made; 0 (the running path for every batch) still runs."""
    lg = Ledger(tmp_path, program(RULES, [PTS, CASH]))
    res = lg.run(EVENTS[:3], expect=2, env={name: value})
    assert f"{name}={value!r}: must be a whole number of events, 0 or more" in res["stderr"]
    assert "Traceback" not in res["stderr"] and not lg.db.exists()
    assert lg.run(EVENTS[:3], env={name: "0"})["completed"] == 3
