"""A ledger scenario for the e2e tests: program files, then batches of events and operations run
through the engine into a real DuckDB file, read back by SQL, and checked after every batch
(`perkflow verify` passes; ledger_summary's current balance is what participants hold).

Kept separate from the tests so that each test file is only its inputs and hand-computed numbers.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.ledger import db
from engine.run import run_batch
from engine.verify import verify
from tests.helpers.io import program_spec, query, write_events, write_program

D = Decimal


def asset(symbol: str, mode: str = "SIMPLE", policy: str = "UNLIMITED", scale: int = 0, **extra) -> dict:
    return {"symbol": symbol, "name": symbol.title(), "inventory_mode": mode, "issuance_policy": policy,
            "scale": scale, **extra}


def on(event_type: str, *actions: dict, order: int | None = None) -> dict:
    """A rule that runs `actions` for events of `event_type` (payload field `type`)."""
    rule = {"name": event_type, "key": event_type, "condition": f'event.type == "{event_type}"',
            "actions": list(actions)}
    if order is not None:
        rule["order"] = order
    return rule


def op(operation: str, key: str, who: str | None, when: str, /, **params) -> dict:
    return {"kind": "operation", "operation": operation, "key": key, "who": who, "when": when, "params": params}


def ev(key: str, who: str, when: str, event_type: str, **data) -> dict:
    return {"kind": "event", "key": key, "who": who, "when": when, "data": {"type": event_type, **data}}


class Scenario:
    """One program (or several) and one ledger file."""

    def __init__(self, tmp: Path, key: str, rules: list[dict], assets: list[dict], rewards: list[dict] | None = None,
                 groups: list[dict] | None = None, **program):
        self.dir, self.key = tmp, key
        self.db = tmp / "ledger.duckdb"
        self.programs = tmp / "programs"
        spec = program_spec(key, rules, assets=assets, **program)
        if rewards:
            spec["rewards"] = rewards
        if groups:
            spec["groups"] = groups
        write_program(self.programs / f"{key}.yaml", spec)
        self.batches = 0

    def run(self, *rows: dict, program: str | None = None) -> dict[str, tuple[str, str | None]]:
        """One batch of events and operations; returns {idempotency key: (status, error code)}
        and checks the ledger's invariants after it."""
        self.batches += 1
        program = program or self.key
        events = [r for r in rows if r["kind"] == "event"]
        ops = [r for r in rows if r["kind"] == "operation"]
        ev_path = op_path = None
        if events:
            ev_path = write_events(self.dir / f"events-{self.batches}.parquet", [
                {"program_id": r.get("program", program), "idempotency_key": r["key"], "external_id": r["who"],
                 "event_timestamp": r["when"], "event_data": json.dumps(r["data"])} for r in events])
        if ops:
            op_path = self.dir / f"ops-{self.batches}.parquet"
            cols = ("operation", "program_id", "idempotency_key", "external_id", "timestamp", "params")
            table = pa.Table.from_pylist([
                {"operation": r["operation"], "program_id": r["params"].pop("program", program),
                 "idempotency_key": r["key"], "external_id": r["who"], "timestamp": r["when"],
                 "params": json.dumps(r["params"])} for r in ops], schema=pa.schema([(c, pa.string()) for c in cols]))
            pq.write_table(table, op_path)
        self.report = run_batch(self.programs, ev_path, self.db, operations=op_path)  # the last batch's
        self.check()
        rows_out = query(self.db, "SELECT idempotency_key, status, error_code FROM events UNION ALL "
                                  "SELECT idempotency_key, status, error_code FROM operations")
        return {k: (s, c) for k, s, c in rows_out}

    def check(self) -> None:
        """`perkflow verify` holds, and per asset the summary's current balance (summed over
        programs) equals what participants and groups hold in all buckets."""
        con = db.connect(self.db, read_only=True)
        try:
            report = verify(con)
        finally:
            con.close()
        assert report.ok, [(v.check, v.rows) for v in report.violations]
        summary = dict(query(self.db, "SELECT asset_symbol, SUM(current_balance) FROM ledger_summary GROUP BY ALL"))
        held = dict(query(self.db, "SELECT asset_symbol, SUM(COALESCE(available, 0) + COALESCE(held, 0) "
                                   "+ COALESCE(deferred, 0)) FROM balances WHERE entity_type IN ('PARTICIPANT', 'GROUP') "
                                   "GROUP BY ALL"))
        for symbol in set(summary) | set(held):
            assert summary.get(symbol, 0) == held.get(symbol, 0), (symbol, summary, held)

    def balance(self, who: str, symbol: str) -> tuple[Decimal, Decimal, Decimal]:
        """(available, held, deferred) of a participant."""
        rows = query(self.db, "SELECT available, held, deferred FROM balances WHERE external_id = ? "
                              "AND asset_symbol = ?", [who, symbol])
        return tuple(D(v or 0) for v in rows[0]) if rows else (D(0), D(0), D(0))

    def wallet(self, symbol: str, program: str | None = None) -> Decimal:
        rows = query(self.db, "SELECT b.available FROM balances b JOIN programs p ON p.id = b.entity_id "
                              "WHERE b.entity_type = 'PROGRAM_WALLET' AND p.key = ? AND b.asset_symbol = ?",
                     [program or self.key, symbol])
        return D(rows[0][0] or 0) if rows else D(0)

    def group(self, key: str, symbol: str) -> tuple[Decimal, Decimal, Decimal]:
        """(available, held, deferred) of a group."""
        rows = query(self.db, "SELECT b.available, b.held, b.deferred FROM balances b JOIN groups g ON g.id = b.entity_id "
                              "WHERE b.entity_type = 'GROUP' AND g.key = ? AND b.asset_symbol = ?", [key, symbol])
        return tuple(D(v or 0) for v in rows[0]) if rows else (D(0), D(0), D(0))

    def members(self, key: str) -> dict[str, tuple[str, str]]:
        """external id -> (role, status) of a group's members, former ones included."""
        rows = query(self.db, "SELECT p.external_id, m.role, m.status FROM group_members m JOIN groups g ON g.id = m.group_id "
                              "JOIN participants p ON p.id = m.participant_id WHERE g.key = ?", [key])
        return {e: (r, s) for e, r, s in rows}

    def system(self, name: str, symbol: str) -> Decimal:
        rows = query(self.db, "SELECT SUM(b.amount) FROM account_balances b JOIN assets a ON a.id = b.asset_id "
                              "WHERE b.entity_type = ? AND a.symbol = ?", [name, symbol])
        return D(rows[0][0] or 0)

    def lots(self, who: str, symbol: str) -> list[tuple[str, Decimal, str | None, bool]]:
        """(status, remaining, reference_id, provisional) of a participant's lots holding value,
        oldest first."""
        rows = query(self.db, "SELECT l.status, l.remaining, l.reference_id, l.provisional FROM lots l "
                              "JOIN participants p ON p.id = l.entity_id JOIN assets a ON a.id = l.asset_id "
                              "WHERE p.external_id = ? AND a.symbol = ? AND l.remaining > 0 "
                              "ORDER BY l.created_at, l.id", [who, symbol])
        return [(s, D(r), ref, bool(p)) for s, r, ref, p in rows]

    def lot_bag(self, who: str, symbol: str) -> list[tuple[str, Decimal, str | None, bool]]:
        """The same lots in a fixed order that does not depend on lot ids (status, remaining, reference)."""
        return bag(self.lots(who, symbol))

    def entries(self, key: str) -> list[tuple[str, Decimal, str | None]]:
        """(action_type, amount, reference_id) of the entries an event or operation wrote, in order."""
        rows = query(self.db, """
            SELECT j.action_type, MAX(p.amount), j.reference_id FROM journal_entries j
            JOIN postings p ON p.journal_entry_id = j.id
            LEFT JOIN events e ON e.id = j.event_id LEFT JOIN operations o ON o.id = j.operation_id
            WHERE COALESCE(e.idempotency_key, o.idempotency_key) = ?
            GROUP BY j.id, j.seq, j.action_type, j.reference_id ORDER BY j.seq""", [key])
        return [(t, D(a), r) for t, a, r in rows]

    def state(self, who: str) -> dict[tuple[str, str], object]:
        rows = query(self.db, "SELECT kind, key, text_value, number_value FROM participant_state WHERE external_id = ?",
                     [who])
        return {(k, key): (D(n) if n is not None else t) for k, key, t, n in rows}


def bag(lots: list[tuple]) -> list[tuple]:
    return sorted(lots, key=lambda lot: (lot[0], lot[1], lot[2] or "", lot[3]))


def at(text: str) -> str:
    """An RFC 3339 instant from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text).strftime("%Y-%m-%dT%H:%M:%SZ")
