"""A perkflow DuckDB ledger read back into exactly the shape of the oracle's `OracleResult`
(tests/oracle/interpreter.py), so the differential test can compare the two field by field.

Only the ledger's public tables and views are read (sql/schema.sql, sql/views.sql): events,
journal_entries, postings, participants, account_balances, rule_evaluations, rejected_rows,
batches, entity_state (through the participant_state / program_state views), rules, programs,
assets. Amounts and counters are `Decimal`s; compare them by value (`==`), which tuple and dict
equality do.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb

from engine.ids import name_id_text
from tests.oracle.interpreter import OracleResult

# Processing order of the events: batch by batch; within a batch the stream order of
# semantics.md 3, (event_timestamp, arrival). arrival_seq is global (batch << 32 | row).
_EVENT_ORDER = "e.batch_id, e.event_timestamp, e.arrival_seq"


def _leg(row) -> int:
    """Which posting of its entry a row's destination is (1 for an entry of two postings)."""
    legs, entry, posting = row[15], row[16], row[17]
    return next(k for k in range(1, legs) if name_id_text("posting", entry, str(k)) == posting)


def _dec(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _scaled(amount, scale: int) -> Decimal:
    """An amount with the asset's scale (DECIMAL(38, 18) -> `scale` places; exact)."""
    return _dec(amount).quantize(Decimal(1).scaleb(-scale))


def _state_shape(rows) -> dict:
    tags, counters, attributes = set(), {}, {}
    for kind, key, text, number in rows:
        if kind == "TAG":
            tags.add(key)
        elif kind == "COUNTER":
            counters[key] = _dec(number)
        elif kind == "ATTRIBUTE":
            attributes[key] = text
        else:  # pragma: no cover - a kind the oracle does not know
            raise AssertionError(f"unexpected entity_state kind {kind!r}")
    return {"tags": sorted(tags), "counters": dict(sorted(counters.items())), "attributes": attributes}


def _states(con: duckdb.DuckDBPyConnection) -> tuple[dict, dict]:
    """Participant state by external id, program state by program key (tags, counters, attributes)."""
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    state = {}
    for ext, kind, key, text, number in q(
            "SELECT external_id, kind, key, text_value, number_value FROM participant_state"):
        state.setdefault(ext, []).append((kind, key, text, number))
    participants = {ext: _state_shape(state.get(ext, [])) for (ext,) in q(
        "SELECT external_id FROM participants ORDER BY external_id")}

    pstate = {}
    for pk, kind, key, text, number in q(
            "SELECT program_key, kind, key, text_value, number_value FROM program_state"):
        pstate.setdefault(pk, []).append((kind, key, text, number))
    program_state = {pk: _state_shape(pstate.get(pk, [])) for (pk,) in q("SELECT key FROM programs ORDER BY key")}
    return participants, program_state


def read_ledger(con: duckdb.DuckDBPyConnection) -> OracleResult:
    """The ledger behind `con` as an `OracleResult`."""
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    r = OracleResult()

    r.events = {
        (pk, key): (status, code)
        for pk, key, status, code in q(
            "SELECT p.key, e.idempotency_key, e.status, e.error_code FROM events e JOIN programs p ON p.id = e.program_id")
    }

    # Ledger order (journal_entries.seq); the participant leg of each entry names the account.
    rows = q(f"""
        SELECT pr.key, e.idempotency_key, ru.key, j.action_index, j.action_type, pa.external_id, a.symbol,
               abs(po.amount), a.scale,
               (SELECT count(*) FROM postings x WHERE x.journal_entry_id = j.id AND x.entity_type = 'PARTICIPANT')
        FROM journal_entries j
        JOIN programs pr ON pr.id = j.program_id
        LEFT JOIN events e ON e.id = j.event_id
        LEFT JOIN rules ru ON ru.id = j.rule_id
        JOIN postings po ON po.journal_entry_id = j.id AND po.entity_type = 'PARTICIPANT'
        LEFT JOIN participants pa ON pa.id = po.entity_id
        JOIN assets a ON a.id = po.asset_id
        ORDER BY j.seq""")
    for *entry, amount, scale, legs in rows:
        assert legs == 1, f"entry {entry} has {legs} participant postings"
        r.entries.append((*entry, _scaled(amount, scale)))

    r.balances = {
        (ext, sym): _scaled(amount, scale)
        for ext, sym, amount, scale in q("""
            SELECT pa.external_id, a.symbol, b.amount, a.scale
            FROM account_balances b
            JOIN participants pa ON pa.id = b.entity_id
            JOIN assets a ON a.id = b.asset_id
            WHERE b.entity_type = 'PARTICIPANT' AND b.bucket = 'AVAILABLE'
            ORDER BY 1, 2""")
    }

    r.participants, r.program_state = _states(con)

    r.evaluations = [tuple(row) for row in q(f"""
        SELECT p.key, e.idempotency_key, ru.key, v.outcome
        FROM rule_evaluations v
        JOIN events e ON e.id = v.event_id
        JOIN programs p ON p.id = e.program_id
        JOIN rules ru ON ru.id = v.rule_id
        ORDER BY {_EVENT_ORDER}, ru."order" """)]

    r.rejected = [
        (json.loads(raw).get("idempotency_key"), reason)
        for raw, reason in q("SELECT raw, reason FROM rejected_rows ORDER BY batch_id, row_number")
    ]
    r.duplicates = int(q("SELECT coalesce(sum(duplicates), 0) FROM batches")[0][0])
    return r


def read_ledger_file(db_file: str | Path) -> OracleResult:
    con = duckdb.connect(str(db_file), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return read_ledger(con)
    finally:
        con.close()


def entry_identity(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Entries as the ledger identifies them (for batch invariance): ids, order within the ledger,
    the event, rule version, action, effective instant, and every posting's account and amount.
    `seq` and `batch_id` depend on the cut into batches by construction, so they are left out;
    the relative order (row number by seq) is kept."""
    entries = con.execute("""
        SELECT j.id, j.program_id, j.event_id, j.rule_id, j.rule_version, j.action_index, j.action_type,
               j.effective_at, j.allow_negative
        FROM journal_entries j ORDER BY j.seq""").fetchall()
    postings = con.execute("""
        SELECT id, journal_entry_id, entity_type, entity_id, asset_id, bucket, amount
        FROM postings ORDER BY journal_entry_id, id""").fetchall()
    return entries + postings


# ---------------------------------------------------------------------------------------------
# The full ledger (lots, holds, wallets, operations): the extra fields of `OracleResult`.


def _account_names(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Entity id -> the oracle's name for it: a participant's external id, a wallet's program key,
    a group's key."""
    names = {str(i): ext for i, ext in con.execute("SELECT id, external_id FROM participants").fetchall()}
    names.update({str(i): key for i, key in con.execute("SELECT id, key FROM programs").fetchall()})
    names.update({str(i): key for i, key in con.execute("SELECT id, key FROM groups").fetchall()})
    return names


def _account(entity_type: str, entity_id, symbol: str, bucket: str, names: dict[str, str]) -> tuple:
    if entity_type in ("PARTICIPANT", "PROGRAM_WALLET", "GROUP"):
        return (entity_type, names[str(entity_id)], symbol, bucket)
    return (entity_type, None, symbol, bucket)  # SYSTEM_ISSUANCE, SYSTEM_BREAKAGE, SYSTEM_REDEMPTION


def lot_ids(con: duckdb.DuckDBPyConnection):
    """The engine's lot id of an oracle lot origin (program key, kind, idempotency key, rule key,
    index): the project's id scheme (engine.lots.lot_spec), with each rule's current version.
    The oracle needs it only to break FIFO ties between lots created at the same instant
    (semantics.md 9.1: "FIFO by created_at (then id)")."""
    from engine import ids
    programs = {key: str(i) for i, key in con.execute("SELECT id, key FROM programs").fetchall()}
    versions = {(pk, rk): v for pk, rk, v in con.execute(
        "SELECT p.key, r.key, r.current_version FROM rules r JOIN programs p ON p.id = r.program_id").fetchall()}

    def lot_id(program_key: str, kind: str, key: str, rule_key: str | None, index: int) -> str:
        version = "op" if kind == "operation" else versions[(program_key, rule_key)]
        return str(ids.name_id("lot", kind, programs[program_key], key, version, str(index)))
    return lot_id


def read_full_ledger(con: duckdb.DuckDBPyConnection) -> OracleResult:
    """`read_ledger` plus operations, every journal entry with both accounts, every non-zero
    account, lots, redemptions and participant statuses (tests/oracle/README.md, Output)."""
    from tests.oracle.books import Entry
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    r = OracleResult()
    r.events = {
        (pk, key): (status, code)
        for pk, key, status, code in q(
            "SELECT p.key, e.idempotency_key, e.status, e.error_code FROM events e JOIN programs p ON p.id = e.program_id")
    }
    r.operations = {
        (pk, key): (status, code)
        for pk, key, status, code in q(
            "SELECT p.key, o.idempotency_key, o.status, o.error_code FROM operations o JOIN programs p ON p.id = o.program_id")
    }
    names = _account_names(con)
    scales = {sym: scale for sym, scale in q("SELECT symbol, scale FROM assets")}
    rows = q("""
        SELECT pr.key, j.action_type, j.effective_at, j.action_index,
               e.idempotency_key, o.idempotency_key, ru.key,
               src.entity_type, src.entity_id, src.bucket, dst.entity_type, dst.entity_id, dst.bucket,
               a.symbol, dst.amount, (SELECT count(*) FROM postings x WHERE x.journal_entry_id = j.id),
               j.id::VARCHAR, dst.id::VARCHAR
        FROM journal_entries j
        JOIN programs pr ON pr.id = j.program_id
        LEFT JOIN events e ON e.id = j.event_id
        LEFT JOIN operations o ON o.id = j.operation_id
        LEFT JOIN rules ru ON ru.id = j.rule_id
        JOIN postings src ON src.journal_entry_id = j.id AND src.amount < 0
        JOIN postings dst ON dst.journal_entry_id = j.id AND dst.amount > 0
        JOIN assets a ON a.id = dst.asset_id
        ORDER BY j.seq""")
    # The oracle writes one move per entry; perkflow writes a transfer to several recipients as one
    # entry of the source's posting and one per recipient (posting k of the entry, its id
    # name_uuid('posting:' || entry || ':' || k) as sql/write_batch.sql names it): read back as one move
    # per recipient, each the operation's next part, in recipient order.
    seqs: dict[str, int] = {}  # entry id -> its place in ledger order (rows come in it)
    rows = sorted(rows, key=lambda r: (seqs.setdefault(r[16], len(seqs)), _leg(r)))
    for (pk, kind, at, index, ev_key, op_key, rule_key, st, si, sb, dt, di, db_, sym, amount, legs, *_), leg \
            in zip(rows, map(_leg, rows)):
        assert legs == 2 or (kind == "TRANSFER" and legs > 2), f"{kind} entry of {ev_key or op_key} has {legs} postings"
        index += leg - 1
        origin = (("event", ev_key, rule_key, index) if ev_key is not None
                  else ("operation", op_key, None, index) if op_key is not None else None)
        r.ledger.append(Entry(pk, origin, kind, _account(st, si, sym, sb, names), _account(dt, di, sym, db_, names),
                              _scaled(amount, scales[sym]), at))
    r.accounts = {
        _account(t, i, sym, b, names): _scaled(amount, scales[sym])
        for t, i, sym, b, amount in q("""
            SELECT b.entity_type, b.entity_id, a.symbol, b.bucket, b.amount
            FROM account_balances b JOIN assets a ON a.id = b.asset_id WHERE b.amount <> 0""")
    }
    r.accounts = dict(sorted(r.accounts.items(), key=repr))
    # Lots are named by the entry that created them (the lot id is derived from it).
    lot_id = lot_ids(con)
    origins = {}
    for e in r.ledger:
        if e.origin is not None:
            kind, key, rule_key, index = e.origin
            origin = (e.program_key, kind, key, rule_key, index)
            origins[lot_id(*origin)] = origin
    for i, eid, sym, amount, remaining, status, created, expires, matures in q("""
            SELECT l.id, l.entity_id, a.symbol, l.amount, l.remaining, l.status, l.created_at, l.expires_at,
                   l.matures_at
            FROM lots l JOIN assets a ON a.id = l.asset_id ORDER BY l.created_at, l.id"""):
        r.lots[origins.get(str(i), ("unknown lot", str(i)))] = (
            names[str(eid)], sym, _scaled(amount, scales[sym]), _scaled(remaining, scales[sym]), status, created,
            expires, matures)
    r.redemptions = {
        (pk, key): (ext, sym, _scaled(amount, scales[sym]), _scaled(rev, scales[sym]), qty, rev_qty, target, group)
        for pk, key, ext, sym, amount, rev, qty, rev_qty, target, group in q("""
            SELECT p.key, x.idempotency_key, pa.external_id, a.symbol, x.amount, x.reversed_amount, x.quantity,
                   x.reversed_quantity, x.target_type, g.key
            FROM redemptions x JOIN programs p ON p.id = x.program_id JOIN participants pa ON pa.id = x.participant_id
            JOIN assets a ON a.id = x.asset_id LEFT JOIN groups g ON g.id = x.target_entity_id ORDER BY 1, 2""")
    }
    r.statuses = dict(q("SELECT external_id, status FROM participants ORDER BY external_id"))
    r.participants, r.program_state = _states(con)
    gstate = {}
    for gk, kind, key, text, number in q("SELECT group_key, kind, key, text_value, number_value FROM group_state"):
        gstate.setdefault(gk, []).append((kind, key, text, number))
    r.group_state = {gk: _state_shape(gstate.get(gk, [])) for (gk,) in q("SELECT key FROM groups ORDER BY key")}
    r.members = {gk: {} for (gk,) in q("SELECT key FROM groups ORDER BY key")}
    for gk, ext, role, status in q("""
            SELECT g.key, p.external_id, m.role, m.status FROM group_members m JOIN groups g ON g.id = m.group_id
            JOIN participants p ON p.id = m.participant_id ORDER BY 1, 2"""):
        r.members[gk][ext] = (role, status)
    r.rejected = [
        (json.loads(raw).get("idempotency_key"), reason)
        for raw, reason in q("SELECT raw, reason FROM rejected_rows ORDER BY batch_id, row_number")
    ]
    r.duplicates = int(q("SELECT coalesce(sum(duplicates), 0) FROM batches")[0][0])
    return r
