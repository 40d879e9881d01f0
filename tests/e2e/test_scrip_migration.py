"""A Scrip user's migration, black box (round 5 of outsider tests). Expectations come from
scrip-reference.md (the payloads the hosted API documents) where semantics.md does not override
it: program files "match Scrip's API payloads so that a Scrip user recognises them" (semantics.md
2.1), so a payload pasted from the docs loads, or fails with a message naming file and field that
says what to do (exit 2, nothing written). Every test runs the real CLI into a real DuckDB file.

- Scrip's create-an-asset and create-a-rule bodies carry `program_id` (scrip-reference.md 3, 7;
  the quickstart's rule body): in a program file it may name the file's own program (key or id)
  and changes nothing; naming another program is an error saying the file's program owns it.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.io import cli, event, query, write_events, write_program

T0 = "2026-01-01T00:00:00Z"


def _quickstart(asset_extra: dict | None = None, rule_extra: dict | None = None) -> dict:
    """The quickstart's program, asset and rule bodies (seeds/quickstart.txt), as one file."""
    return {
        "program": {"name": "Customer Loyalty"},
        "assets": [{"name": "Points", "symbol": "PTS", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED",
                    "scale": 0, **(asset_extra or {})}],
        "rules": [{"name": "10 Points per Purchase", "condition": 'event.type == "purchase"',
                   "actions": [{"type": "CREDIT", "asset_id": "PTS", "amount": "10"}], **(rule_extra or {})}],
    }


def _run(tmp: Path, spec: dict):
    db = tmp / "w.duckdb"
    events = write_events(tmp / "e.parquet", [event("customer_loyalty", "first-purchase-001", "user_123", T0,
                                                    {"type": "purchase", "amount": 49.99})])
    res = cli("run", "--programs", str(write_program(tmp / "prog" / "p.yaml", spec)), "--events", str(events),
              "--db", str(db))
    return res, db


def _ledger(db: Path) -> list[tuple]:
    return query(db, "SELECT j.id, j.rule_version, p.entity_id, p.amount FROM journal_entries j "
                     "JOIN postings p ON p.journal_entry_id = j.id ORDER BY j.id, p.id")


def test_program_id_in_asset_and_rule_bodies_names_the_files_own_program(tmp_path):
    plain, plain_db = _run(tmp_path / "plain", _quickstart())
    assert plain.returncode == 0, plain.stderr
    # the program's key (a slug of its name) and its id (UUIDv5 of the key, as `programs.id` shows)
    (pid,) = query(plain_db, "SELECT id::VARCHAR FROM programs WHERE key = 'customer_loyalty'")[0]
    for i, ref in enumerate(["customer_loyalty", pid, pid.upper()]):
        res, db = _run(tmp_path / f"ref{i}", _quickstart({"program_id": ref}, {"program_id": ref}))
        assert res.returncode == 0, res.stderr
        # same ids, rule versions and amounts as without the field: it only restates the file's program
        assert _ledger(db) == _ledger(plain_db)
        assert query(db, "SELECT available FROM balances WHERE external_id = 'user_123'") == [(10,)]


def test_program_id_naming_another_program_is_an_error_naming_file_and_field(tmp_path):
    for where, spec in [("assets[0] (PTS).program_id", _quickstart({"program_id": "other_program"})),
                        ("rules[0] (10 Points per Purchase).program_id",
                         _quickstart(rule_extra={"program_id": "other_program"}))]:
        res, db = _run(tmp_path / where[:5], spec)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "p.yaml" in res.stderr and where in res.stderr, res.stderr
        assert "other_program" in res.stderr and "customer_loyalty" in res.stderr, res.stderr
        assert not db.exists() or query(db, "SELECT count(*) FROM journal_entries") == [(0,)]


# Scrip's hold / release / forfeit bodies narrow by `lot_ids` or `earned_from` / `earned_to` (LOT
# only; scrip-reference.md 12), and void-hold does not take them. perkflow does not narrow by them:
# ignored, a release "of lot X" without an amount released everything held and a forfeit "of what
# was earned in January" forfeited the whole balance. Now the operation fails, nothing moved.
LOT_PROGRAM = {
    "program": {"key": "card", "name": "Card"},
    "assets": [{"symbol": "CB", "name": "Cashback", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED",
                "scale": 2}],
    "rules": [{"name": "earn", "condition": 'event.type == "purchase"',
               "actions": [{"type": "CREDIT", "asset_id": "CB", "amount": "event.amount"}]}],
}


def test_narrowing_by_lots_or_earning_dates_fails_rather_than_moving_everything(tmp_path):
    import json

    events = write_events(tmp_path / "e.parquet", [
        event("card", f"e{i}", "u1", f"2026-01-0{i}T00:00:00Z", {"type": "purchase", "amount": 10.0})
        for i in (1, 2)])
    held_lot = "00000000-0000-0000-0000-000000000000"

    def op(key, name, when, **params):
        return {"operation": name, "program_id": "card", "idempotency_key": key, "timestamp": when,
                "external_id": "u1", "params": {"asset_id": "CB", "description": "x", **params}}
    ops = [op("h", "hold", "2026-01-03T00:00:00Z", amount="15", reference_id="auth_1"),
           op("r", "release", "2026-01-04T00:00:00Z", lot_ids=[held_lot]),
           op("f", "forfeit", "2026-01-04T00:00:01Z", bucket="AVAILABLE", earned_from="2026-01-01T00:00:00Z",
              earned_to="2026-01-01T12:00:00Z"),
           op("f2", "forfeit", "2026-01-04T00:00:02Z", bucket="HELD", earned_to="2026-01-01T12:00:00Z"),
           op("v", "void_hold", "2026-01-04T00:00:03Z", reference_id="auth_1", lot_ids=[held_lot])]
    opfile = tmp_path / "ops.ndjson"
    opfile.write_text("".join(json.dumps(o) + "\n" for o in ops))
    db = tmp_path / "w.duckdb"
    res = cli("run", "--programs", str(write_program(tmp_path / "p.yaml", LOT_PROGRAM)), "--events", str(events),
              "--operations", str(opfile), "--db", str(db))
    assert res.returncode == 0, res.stderr
    outcome = dict(((k, (s, c, m)) for k, s, c, m in
                    query(db, "SELECT idempotency_key, status, error_code, error_message FROM operations")))
    assert outcome["h"][0] == "COMPLETED"
    for key, field in [("r", "lot_ids"), ("f", "earned_from"), ("f2", "earned_to"), ("v", "lot_ids")]:
        status, code, message = outcome[key]
        assert (status, code) == ("FAILED", "operation_not_supported"), (key, outcome[key])
        assert f"params.{field}" in message, message
    # nothing released, forfeited or voided: 5 available, 15 held
    assert query(db, "SELECT available, held FROM balances WHERE external_id = 'u1'") == [(5, 15)]
