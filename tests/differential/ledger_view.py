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

from tests.oracle.interpreter import OracleResult

# Processing order of the events: batch by batch; within a batch the stream order of
# semantics.md 3, (event_timestamp, arrival). arrival_seq is global (batch << 32 | row).
_EVENT_ORDER = "e.batch_id, e.event_timestamp, e.arrival_seq"


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

    state = {}
    for ext, kind, key, text, number in q(
            "SELECT external_id, kind, key, text_value, number_value FROM participant_state"):
        state.setdefault(ext, []).append((kind, key, text, number))
    r.participants = {ext: _state_shape(state.get(ext, [])) for (ext,) in q(
        "SELECT external_id FROM participants ORDER BY external_id")}

    pstate = {}
    for pk, kind, key, text, number in q(
            "SELECT program_key, kind, key, text_value, number_value FROM program_state"):
        pstate.setdefault(pk, []).append((kind, key, text, number))
    r.program_state = {pk: _state_shape(pstate.get(pk, [])) for (pk,) in q("SELECT key FROM programs ORDER BY key")}

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
