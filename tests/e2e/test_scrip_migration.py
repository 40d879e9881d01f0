"""A Scrip user's migration, black box (round 5 of outsider tests). Expectations come from
scrip-reference.md (the payloads the hosted API documents) where semantics.md does not override
it: program files "match Scrip's API payloads so that a Scrip user recognises them" (semantics.md
2.1), so a payload pasted from the docs loads, or fails with a message naming file and field that
says what to do (exit 2, nothing written). Every test runs the real CLI into a real DuckDB file.

- Scrip's create-an-asset and create-a-rule bodies carry `program_id` (scrip-reference.md 3, 7;
  the quickstart's rule body): in a program file it may name the file's own program (key or id)
  and changes nothing; naming another program is an error saying the file's program owns it.
- Scrip's `lot_ids` / `earned_from` / `earned_to` narrowing of hold, release, forfeit (not built)
  fails the operation instead of being ignored (which moved the whole bucket).
- The period summary has Scrip's period-mode columns (scrip-reference.md 19).
- An operation params field no operation reads (a typo) fails the operation naming it.
- set_counter without `reset_after` keeps the counter's auto-reset; `""` removes it.
"""

from __future__ import annotations

from pathlib import Path

from engine import ids
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


def _run_operations(tmp: Path, prog: dict, ops: Path) -> tuple[Path, dict]:
    """`perkflow run` of an operations file; the ledger and each operation's (status, code, message)."""
    db = tmp / "w.duckdb"
    res = cli("run", "--programs", str(write_program(tmp / "p.yaml", prog)), "--operations", str(ops), "--db", str(db))
    assert res.returncode == 0, res.stderr
    return db, {k: (s, c, m) for k, s, c, m in
                query(db, "SELECT idempotency_key, status, error_code, error_message FROM operations")}


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


# Scrip's ledger summary in period mode (scrip-reference.md 19) gives `opening_balance`,
# `closing_balance`, `period_issued`, `period_redeemed` (gross), `period_expired`,
# `period_forfeited` and `other_adjustments_net` (reversals and similar adjustments).
# perkflow's period variant had only total_* with reversals netted into total_redeemed.
def test_period_summary_has_scrips_period_columns(tmp_path):
    import json

    prog = {"program": {"key": "shop", "name": "Shop"},
            "assets": [{"symbol": "LPT", "name": "Lot points", "inventory_mode": "LOT", "scale": 0}],
            "rules": [{"name": "earn", "condition": 'event.type == "purchase"',
                       "actions": [{"type": "CREDIT", "asset_id": "LPT", "amount": "event.amount",
                                    "expires_at": "48h"}]}]}
    events = write_events(tmp_path / "e.parquet", [
        event("shop", "e1", "u1", "2026-01-01T00:00:00Z", {"type": "purchase", "amount": 100}),
        event("shop", "e2", "u2", "2026-01-02T03:00:00Z", {"type": "purchase", "amount": 20}),
        event("shop", "e3", "u1", "2026-01-05T00:00:00Z", {"type": "purchase", "amount": 1})])

    def op(key, name, when, **params):
        return {"operation": name, "program_id": "shop", "idempotency_key": key, "timestamp": when,
                "external_id": "u1", "params": {"asset_id": "LPT", "description": "x", **params}}
    ops = tmp_path / "ops.ndjson"
    ops.write_text("".join(json.dumps(o) + "\n" for o in [
        op("r1", "redeem", "2026-01-02T00:00:00Z", amount="30"),
        op("rv1", "reverse_redemption", "2026-01-02T01:00:00Z", redemption="r1", amount="10", reason="refund"),
        op("f1", "forfeit", "2026-01-02T02:00:00Z", amount="5", bucket="AVAILABLE")]))
    db = tmp_path / "w.duckdb"
    res = cli("run", "--programs", str(write_program(tmp_path / "p.yaml", prog)), "--events", str(events),
              "--operations", str(ops), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert cli("maintain", "--as-of", "2026-01-06T00:00:00Z", "--db", str(db)).returncode == 0
    # by hand: before the period u1 earned 100; in it: 30 redeemed, 10 of it given back, 5
    # forfeited, 20 + 1 issued, and u1's 75 (01-03) and u2's 20 (01-04) expired
    row = query(db, "SELECT opening_balance, period_issued, period_redeemed, period_expired, period_forfeited, "
                    "other_adjustments_net, closing_balance, total_redeemed "
                    "FROM ledger_summary_between('2026-01-02T00:00:00Z', '2026-01-10T00:00:00Z')")
    assert row == [(100, 21, 30, 95, 5, 10, 1, 20)]
    opening, issued, redeemed, expired, forfeited, other, closing, _ = row[0]
    assert opening + issued - redeemed - expired - forfeited + other == closing


# An operation's params field that no operation reads was ignored: `alow_negative: true` (a typo
# of allow_negative) ran the adjust as if it were absent, silently. Program files refuse unknown
# fields (semantics.md 2.1); an operation row with one now fails `invalid_operation` naming it,
# nothing moved, while the fields Scrip's bodies carry besides (program_id, idempotency_key,
# description, the participant profile of an upsert) still load.
def test_unknown_operation_params_fail_the_operation_naming_the_field(tmp_path):
    import json

    prog = {"program": {"key": "shop", "name": "Shop"},
            "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}],
            "rules": [{"name": "earn", "condition": 'event.type == "purchase"',
                       "actions": [{"type": "CREDIT", "asset_id": "PTS", "amount": "10"}]}]}

    def op(key, name, when, **params):
        return {"operation": name, "program_id": "shop", "idempotency_key": key, "timestamp": when,
                "external_id": "u1", "params": params}
    ops = tmp_path / "ops.ndjson"
    ops.write_text("".join(json.dumps(o) + "\n" for o in [
        # scrip-reference.md 4: the create-participant body, profile and all
        op("p1", "upsert_participant", "2026-01-01T00:00:00Z", external_id="u1", program_id="shop", status="ACTIVE",
           email="jane@example.com", phone="+15551234567", first_name="Jane", last_name="Doe",
           display_name="Jane Doe", attributes={"plan": "premium"}, tags=["VIP"]),
        # scrip-reference.md 12: the adjust body
        op("a1", "adjust", "2026-01-02T00:00:00Z", program_id="shop", asset_id="PTS", type="CREDIT", amount="500",
           description="goodwill", bucket="AVAILABLE", allow_negative=False, idempotency_key="a1"),
        op("a2", "adjust", "2026-01-03T00:00:00Z", asset_id="PTS", type="DEBIT", amount="800",
           description="chargeback", alow_negative=True),
        op("a3", "adjust", "2026-01-03T00:00:01Z", asset_id="PTS", type="CREDIT", amount="5",
           description="x", ammount="50")]))
    db, outcome = _run_operations(tmp_path, prog, ops)
    assert outcome["p1"][:2] == ("COMPLETED", None) and outcome["a1"][:2] == ("COMPLETED", None)
    for key, field in [("a2", "alow_negative"), ("a3", "ammount")]:
        assert outcome[key][:2] == ("FAILED", "invalid_operation"), outcome[key]
        assert f"params.{field}" in outcome[key][2], outcome[key]
    assert query(db, "SELECT available FROM balances WHERE external_id = 'u1'") == [(500,)]


# Scrip's create-a-transfer body names its source (`source_external_id`, `source_participant_id` or
# `source_group_id`; scrip-reference.md 17); perkflow's operation row names it as its participant.
# Pasted as params, the source fields failed as unknown fields; a source that is the row's
# participant restates it, another one fails the transfer (nothing moves), a group cannot be one.
def test_a_transfer_body_naming_its_source_as_the_row_does_runs(tmp_path):
    import json

    prog = {"program": {"key": "shop", "name": "Shop"},
            "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}], "rules": []}

    def op(key, name, who, when, **params):
        return {"operation": name, "program_id": "shop", "idempotency_key": key, "timestamp": when,
                "external_id": who, "params": params}
    u1_id = str(ids.participant_id("u1"))
    body = {"program_id": "shop", "asset_id": "PTS", "description": "gift", "recipients": [{"amount": "10", "external_id": "u2"}]}
    ops = tmp_path / "ops.ndjson"
    ops.write_text("".join(json.dumps(o) + "\n" for o in [
        op("seed0", "upsert_participant", "u1", "2026-01-01T00:00:00Z"),
        op("seed1", "adjust", "u1", "2026-01-01T00:00:00Z", asset_id="PTS", type="CREDIT", amount="100", description="x"),
        op("seed2", "upsert_participant", "u2", "2026-01-01T00:00:00Z"),
        op("t1", "transfer", "u1", "2026-01-02T00:00:00Z", source_external_id="u1", **body),
        op("t2", "transfer", "u1", "2026-01-02T00:00:01Z", source_participant_id=u1_id.upper(), **body),
        op("t3", "transfer", "u1", "2026-01-02T00:00:02Z", source_external_id="u2", **body),
        op("t4", "transfer", "u1", "2026-01-02T00:00:03Z", source_participant_id="not-an-id", **body),
        op("t5", "transfer", "u1", "2026-01-02T00:00:04Z", source_group_id="family", **body)]))
    db, outcome = _run_operations(tmp_path, prog, ops)
    assert outcome["t1"][:2] == outcome["t2"][:2] == ("COMPLETED", None), (outcome["t1"], outcome["t2"])
    for key, field in [("t3", "source_external_id"), ("t4", "source_participant_id")]:
        assert outcome[key][:2] == ("FAILED", "invalid_operation"), outcome[key]
        assert f"params.{field}" in outcome[key][2] and "row's participant" in outcome[key][2], outcome[key]
    assert outcome["t5"][:2] == ("FAILED", "operation_not_supported"), outcome["t5"]
    assert query(db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT' ORDER BY 1"
                 ) == [("u1", 80), ("u2", 20)]


# Scrip's set-counter body `{"value": "42", "reset_after": "720h"}` (scrip-reference.md 10):
# `""` removes auto-reset, omitting the field leaves it unchanged. perkflow's set_counter without
# reset_after dropped the counter's 720h auto-reset, so it never reset again.
def test_set_counter_without_reset_after_keeps_the_auto_reset(tmp_path):
    import json

    prog = {"program": {"key": "shop", "name": "Shop"}, "assets": [{"symbol": "PTS", "name": "Points", "scale": 0}],
            "rules": [{"name": "visit", "condition": 'event.type == "visit"',
                       "actions": [{"type": "COUNTER", "key": "noop", "value": "1"}]}]}

    def op(idem, who, when, **params):
        return {"operation": "set_counter", "program_id": "shop", "idempotency_key": idem, "timestamp": when,
                "external_id": who, "params": params}
    ops = tmp_path / "ops.ndjson"
    ops.write_text("".join(json.dumps(o) + "\n" for o in [
        {"operation": "upsert_participant", "program_id": "shop", "idempotency_key": "p1",
         "timestamp": "2026-01-01T00:00:00Z", "external_id": "u1", "params": {}},
        {"operation": "upsert_participant", "program_id": "shop", "idempotency_key": "p2",
         "timestamp": "2026-01-01T00:00:00Z", "external_id": "u2", "params": {}},
        op("a", "u1", "2026-01-01T00:00:01Z", key="k", value="42", reset_after="720h"),
        op("b", "u1", "2026-01-02T00:00:00Z", key="k", value="43"),             # omitted: still 720h
        op("c", "u2", "2026-01-01T00:00:01Z", key="k", value="42", reset_after="720h"),
        op("d", "u2", "2026-01-02T00:00:00Z", key="k", value="43", reset_after="")]))  # "": no auto-reset
    db = tmp_path / "w.duckdb"
    res = cli("run", "--programs", str(write_program(tmp_path / "p.yaml", prog)), "--operations", str(ops),
              "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert query(db, "SELECT external_id, number_value, reset_after_us FROM participant_state "
                     "WHERE key = 'k' ORDER BY external_id") == [("u1", 43, 720 * 3600 * 10**6), ("u2", 43, None)]
    # 720h after the set of 01-02 (an explicit set restarts the timer) u1's counter is 0 again, u2's is not
    assert cli("maintain", "--as-of", "2026-02-02T00:00:00Z", "--db", str(db)).returncode == 0
    assert query(db, "SELECT external_id, number_value FROM participant_state WHERE key = 'k' "
                     "ORDER BY external_id") == [("u1", 0), ("u2", 43)]


# Scrip's asset object has `status` (ACTIVE | ARCHIVED; scrip-reference.md 3): a pasted asset with
# status ACTIVE was "unknown field" (exit 2). ACTIVE now restates the default; ARCHIVED (permanent,
# no new entries of the asset) is not built and says so.
def test_an_asset_body_with_its_status_loads_and_archived_says_it_is_not_built(tmp_path):
    plain, plain_db = _run(tmp_path / "plain", _quickstart())
    active, active_db = _run(tmp_path / "active", _quickstart({"status": "ACTIVE"}))
    assert plain.returncode == 0 and active.returncode == 0, active.stderr
    assert _ledger(active_db) == _ledger(plain_db)
    archived, archived_db = _run(tmp_path / "archived", _quickstart({"status": "ARCHIVED"}))
    assert archived.returncode == 2, archived.stdout + archived.stderr
    assert "p.yaml" in archived.stderr and "assets[0] (PTS).status" in archived.stderr, archived.stderr
    assert "not built" in archived.stderr, archived.stderr
    assert not archived_db.exists()
