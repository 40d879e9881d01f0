"""Overdrafts on LOT assets (docs/decisions.md, "Overdrafts on LOT assets"): value that arrives in
the AVAILABLE bucket of an overdrawn participant first repays the overdraft, and the lot that
brings it keeps only the rest (CONSUMED when nothing is left).

Each scenario is checked against the oracle (tests/differential/test_ledger_vs_oracle.check:
entries, accounts, lots, `perkflow verify` clean) on the kernel (`run_batch(..., row_path=True)`)
and on the default path, which for batches of events only is the running path (conftest sets
PERKFLOW_RUNNING_MIN_EVENTS=0) or the set-based path; the two ledgers must also be identical
(entry ids, hashes, lots), so the set-wise repayment (engine/setwise_lots.py) is the kernel's.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path

import duckdb
from engine.maintain import maintain
from engine.run import run_batch
from engine.verify import verify
from tests.differential import ledger_strategies as L
from tests.differential import strategies as S
from tests.differential import test_ledger_vs_oracle as TL
from tests.differential.test_setwise_lots import running_decisions
from tests.oracle import run_oracle

D = Decimal
T = "2025-03-01T"
LP_U1 = ("PARTICIPANT", "u1", "LP", "AVAILABLE")
LP_U2 = ("PARTICIPANT", "u2", "LP", "AVAILABLE")


def _program(rules: list[dict]) -> dict:
    return {"program": {"key": S.PROGRAM, "name": "Shop"},
            "assets": [{"symbol": "PTS", "name": "Points", "scale": 0},
                       {"symbol": "LP", "name": "Lot points", "scale": 0, "inventory_mode": "LOT"}],
            "rules": rules}


def _rule(key: str, *actions: dict) -> dict:
    return {"name": key, "key": key, "condition": f'event.type == "{key}"', "actions": list(actions)}


EARN = _rule("earn", {"type": "CREDIT", "asset": "LP", "amount": "event.n", "expires_at": "1h"})
VEST = _rule("vest", {"type": "CREDIT", "asset": "LP", "amount": "event.n", "matures_at": "1h", "expires_at": "2h"})
CLAW = _rule("claw", {"type": "DEBIT", "asset": "LP", "amount": "event.n", "allow_negative": True})


def _ev(key: str, who: str, at: str, kind: str, program: str = S.PROGRAM, **data) -> S.Row:
    return S.Row(program, key, who, T + at, json.dumps({"type": kind, **data}))


def _op(key: str, operation: str, who: str | None, at: str, **params) -> L.OpRow:
    return L.OpRow(S.PROGRAM, key, operation, who, T + at, json.dumps(params))


def _overdraw(who: str, at: str, credit: str, debit: str) -> list[L.OpRow]:
    """`who` exists, gets a lot of `credit` and is overdrawn by an allow_negative debit of `debit`."""
    ops = [_op(f"new-{who}", "upsert_participant", who, at), _op(f"neg-{who}", "adjust", who, at, asset="LP",
                                                                   amount=debit, type="DEBIT", allow_negative=True)]
    if credit != "0":
        ops.insert(1, _op(f"add-{who}", "adjust", who, at, asset="LP", amount=credit, type="CREDIT"))
    return ops


def _ledger(db: Path) -> dict[str, list]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {"entries": con.execute("SELECT id, entry_hash, action_type, action_index FROM journal_entries "
                                       "ORDER BY seq").fetchall(),
                "lots": con.execute("SELECT id, amount, remaining, status FROM lots ORDER BY id").fetchall(),
                "balances": con.execute("SELECT * FROM account_balances ORDER BY ALL").fetchall()}


def check_paths(sc: L.LedgerScenario, expect_running: list[bool] | None = None) -> object:
    """The scenario equals the oracle on the kernel and on the default path, and both ledgers are
    identical. `expect_running[i]`: batch i is decided by running.run. Returns the oracle's result."""
    with running_decisions() as decided:
        TL.check(sc)
    if expect_running is not None:
        assert decided == [r for r in expect_running if r], f"running path decided {decided}"
    kernel = TL.run_batch
    TL.run_batch = partial(run_batch, row_path=True)
    try:
        TL.check(sc)
    finally:
        TL.run_batch = kernel
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prog_dir, files, runs = TL._write(d, sc)
        for path, row_path in (("default.duckdb", False), ("kernel.duckdb", True)):
            for ev_file, op_file in runs:
                run_batch(prog_dir, ev_file, d / path, operations=op_file, row_path=row_path)
        assert _ledger(d / "default.duckdb") == _ledger(d / "kernel.duckdb")
        return run_oracle(files, [[r.for_oracle() for r in b] for b in sc.batches],
                          [[o.for_oracle() for o in b] for b in sc.operations])


def _lot(result, kind: str, key: str, rule: str | None, index: int = 0) -> tuple:
    """(amount, remaining, status) of a lot in the oracle's result (equal to the engine's: check)."""
    lot = result.lots[(S.PROGRAM, kind, key, rule, index)]
    return lot[2], lot[3], lot[4]


def _expiries(result) -> list[tuple]:
    return [(e.source[1], e.amount, e.effective_at.strftime("%H:%M")) for e in result.ledger
            if e.action_type == "EXPIRATION"]


def test_credits_after_an_overdraft_repay_it_first():
    # u1: 10, then -15 (allow_negative): -5. Credits of 3 (partial repay: its lot keeps 0), 2 (exact:
    # 0) and 4 (more: the lot keeps 4). u2: -5 and one credit of 8: its lot keeps 3. Every credit
    # expires after 1h; at 11:00 only what the lots kept expires.
    sc = L.LedgerScenario(
        [_program([EARN])],
        [[], [_ev("k1", "u1", "09:00:00Z", "earn", n=3), _ev("k2", "u1", "09:10:00Z", "earn", n=2),
              _ev("k3", "u1", "09:20:00Z", "earn", n=4), _ev("k4", "u2", "09:30:00Z", "earn", n=8),
              _ev("k5", "u1", "11:00:00Z", "visit"), _ev("k6", "u2", "11:00:00Z", "visit")]],
        [_overdraw("u1", "08:00:00Z", "10", "15") + _overdraw("u2", "08:00:00Z", "0", "5"), []])
    result = check_paths(sc, expect_running=[False, True])
    assert _lot(result, "event", "k1", "earn") == (D(3), D(0), "CONSUMED")
    assert _lot(result, "event", "k2", "earn") == (D(2), D(0), "CONSUMED")
    assert _lot(result, "event", "k3", "earn") == (D(4), D(0), "EXPIRED")
    assert _lot(result, "event", "k4", "earn") == (D(8), D(0), "EXPIRED")
    assert sorted(_expiries(result)) == [("u1", D(4), "10:20"), ("u2", D(3), "10:30")]
    assert LP_U1 not in result.accounts and LP_U2 not in result.accounts  # 0 after the expiries
    # the credits' entries carry their whole amounts
    assert [e.amount for e in result.ledger if e.action_type == "CREDIT"] == [D(3), D(2), D(4), D(8)]


def test_the_same_credits_in_one_batch_with_the_overdraft():
    # The overdraft and the credits in one kernel batch (operations), and a rule DEBIT with
    # allow_negative instead of an adjust.
    sc = L.LedgerScenario(
        [_program([EARN, CLAW])],
        [[_ev("k0", "u1", "08:30:00Z", "claw", n=7), _ev("k1", "u1", "09:00:00Z", "earn", n=3),
          _ev("k2", "u1", "09:10:00Z", "earn", n=6), _ev("k3", "u1", "09:20:00Z", "claw", n=1),
          _ev("k4", "u1", "09:30:00Z", "earn", n=1)]],
        [[_op("new", "upsert_participant", "u1", "08:00:00Z"),
          _op("add", "adjust", "u1", "08:00:00Z", asset="LP", amount="5", type="CREDIT")]])
    result = check_paths(sc)
    # 5 - 7 = -2; +3 (lot keeps 1) = 1; +6 = 7; -1 (FIFO from k1's lot) = 6; +1 = 7
    assert _lot(result, "event", "k1", "earn") == (D(3), D(0), "CONSUMED")
    assert _lot(result, "event", "k2", "earn") == (D(6), D(6), "AVAILABLE")
    assert _lot(result, "event", "k4", "earn") == (D(1), D(1), "AVAILABLE")
    assert result.accounts[LP_U1] == D(7)


def test_a_maturity_after_an_overdraft_repays_it_first():
    # u1's lot of 8 vests at 09:00 (matures 10:00, expires 11:00); at 09:30 u1 is overdrawn by 5.
    # The maturity (found by u1's event at 10:30) repays the 5: the lot keeps 3, which expire at
    # 11:00 (found at 12:00). u2's lot of 4 (same dates) matures into an overdraft of 6 at once: it
    # keeps nothing (CONSUMED) and never expires; u2 still owes 2.
    sc = L.LedgerScenario(
        [_program([VEST])],
        [[_ev("k1", "u1", "09:00:00Z", "vest", n=8), _ev("k2", "u2", "09:00:00Z", "vest", n=4)],
         [_ev("k3", "u1", "10:30:00Z", "visit"), _ev("k4", "u2", "12:00:00Z", "visit"),
          _ev("k5", "u1", "12:00:00Z", "visit")]],
        [[_op("n1", "upsert_participant", "u1", "08:00:00Z"), _op("n2", "upsert_participant", "u2", "08:00:00Z"),
          _op("d1", "adjust", "u1", "09:30:00Z", asset="LP", amount="5", type="DEBIT", allow_negative=True),
          _op("d2", "adjust", "u2", "09:30:00Z", asset="LP", amount="6", type="DEBIT", allow_negative=True)], []])
    result = check_paths(sc, expect_running=[False, True])
    assert _lot(result, "event", "k1", "vest") == (D(8), D(0), "EXPIRED")
    assert _lot(result, "event", "k2", "vest") == (D(4), D(0), "CONSUMED")
    assert sorted(_expiries(result)) == [("u1", D(3), "11:00")]
    assert [(e.source[1], e.amount) for e in result.ledger if e.action_type == "MATURITY"] == [
        ("u1", D(8)), ("u2", D(4))]
    assert LP_U1 not in result.accounts and result.accounts[LP_U2] == D(-2)


def test_a_maturity_found_by_another_programs_event_repays_on_the_set_based_path():
    # The club's rules read only the event (the set-based path, no LOT asset of its own); its event
    # at 10:30 touches u1, whose shop lot matures there into u1's overdraft of 5.
    club = {"program": {"key": "club", "name": "Club"}, "assets": [{"symbol": "CP", "name": "Club points", "scale": 0}],
            "rules": [_rule("buy", {"type": "CREDIT", "asset": "CP", "amount": "1"})]}
    sc = L.LedgerScenario(
        [_program([VEST]), club],
        [[_ev("k1", "u1", "09:00:00Z", "vest", n=8)],
         [_ev("c1", "u1", "10:30:00Z", "buy", program="club"), _ev("c2", "u1", "12:00:00Z", "buy", program="club")]],
        [[_op("n1", "upsert_participant", "u1", "08:00:00Z"),
          _op("d1", "adjust", "u1", "09:30:00Z", asset="LP", amount="5", type="DEBIT", allow_negative=True)], []])
    result = check_paths(sc)
    assert _lot(result, "event", "k1", "vest") == (D(8), D(0), "EXPIRED")
    assert _expiries(result) == [("u1", D(3), "11:00")]


def test_a_transfer_into_an_overdraft_repays_it_first():
    # u2 is overdrawn by 5; u1 transfers 7 to u2: u2's new lot keeps 2, then 4 more: a lot of 4.
    sc = L.LedgerScenario(
        [_program([])], [[]],
        [_overdraw("u2", "08:00:00Z", "0", "5") + [
            _op("n1", "upsert_participant", "u1", "08:00:00Z"),
            _op("a1", "adjust", "u1", "08:00:00Z", asset="LP", amount="20", type="CREDIT"),
            _op("t1", "transfer", "u1", "09:00:00Z", asset="LP", recipients=[{"external_id": "u2", "amount": "7"}]),
            _op("t2", "transfer", "u1", "10:00:00Z", asset="LP", recipients=[{"external_id": "u2", "amount": "4"}])]])
    result = check_paths(sc)
    assert _lot(result, "operation", "t1", None) == (D(7), D(2), "AVAILABLE")
    assert _lot(result, "operation", "t2", None) == (D(4), D(4), "AVAILABLE")
    assert result.accounts[LP_U2] == D(6)


def test_a_reversal_into_an_overdraft_repays_it_first():
    # u1's lot of 10 gives 6 to a redemption; u1 is then overdrawn (-9 from the 4 left: -5); the
    # reversal of the 6 gives them back to the lot, which repays the 5 and keeps 1.
    sc = L.LedgerScenario(
        [_program([])], [[]],
        [[_op("n1", "upsert_participant", "u1", "08:00:00Z"),
          _op("a1", "adjust", "u1", "08:00:00Z", asset="LP", amount="10", type="CREDIT"),
          _op("r1", "redeem", "u1", "09:00:00Z", asset="LP", amount="6"),
          _op("d1", "adjust", "u1", "10:00:00Z", asset="LP", amount="9", type="DEBIT", allow_negative=True),
          _op("v1", "reverse_redemption", "u1", "11:00:00Z", redemption="r1")]])
    result = check_paths(sc)
    assert _lot(result, "operation", "a1", None) == (D(10), D(1), "AVAILABLE")
    assert result.accounts[LP_U1] == D(1)


def test_a_lot_expired_at_creation_does_not_cover_an_overdraft():
    # semantics.md 9.1: the lot of 10 with expires_at 0s is never spendable, so the DEBIT of 15
    # overdraws all 15 (the balance shows -5 until the expiry of the 10 is written, at the next
    # event): the credit of 20 repays 15 and keeps 5, which is the balance once the 10 expired.
    sc = L.LedgerScenario(
        [_program([_rule("all", {"type": "CREDIT", "asset": "LP", "amount": "10", "expires_at": "0s"},
                         {"type": "DEBIT", "asset": "LP", "amount": "15", "allow_negative": True},
                         {"type": "CREDIT", "asset": "LP", "amount": "20"})])],
        [[_ev("k1", "u1", "09:00:00Z", "all"), _ev("k2", "u1", "10:00:00Z", "visit")]], [[]])
    result = check_paths(sc)
    assert _lot(result, "event", "k1", "all", 2) == (D(20), D(5), "AVAILABLE")
    assert result.accounts[LP_U1] == D(5)


def test_release_into_an_overdraft_repays_it_first(tmp_path):
    # Holds on LOT assets (the oracle does not model them): u1 holds its 10, is overdrawn by 5,
    # and the release of the 10 repays the 5 from the released lot, which keeps 5.
    prog_dir = tmp_path / "programs"
    TL.write_program(prog_dir / "shop.yaml", _program([]))
    ops = [_op("n1", "upsert_participant", "u1", "08:00:00Z"),
           _op("a1", "adjust", "u1", "08:00:00Z", asset="LP", amount="10", type="CREDIT"),
           _op("h1", "hold", "u1", "09:00:00Z", asset="LP", amount="10"),
           _op("d1", "adjust", "u1", "10:00:00Z", asset="LP", amount="5", type="DEBIT", allow_negative=True),
           _op("r1", "release", "u1", "11:00:00Z", asset="LP")]
    path = TL.write_events(tmp_path / "ops.parquet", [o.for_parquet() for o in ops], schema=TL.OP_SCHEMA)
    db = tmp_path / "ledger.duckdb"
    run_batch(prog_dir, None, db, operations=path)
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT status, remaining FROM lots WHERE remaining > 0").fetchall() == [("AVAILABLE", D(5))]
        assert con.execute("SELECT available, held FROM balances WHERE external_id = 'u1'").fetchall() == [(D(5), D(0))]
        assert verify(con).ok


def test_maintain_repays_like_the_next_event(tmp_path):
    # `perkflow maintain --as-of` writes the maturity into u1's overdraft (and the expiry of what
    # the lot kept) as the next event touching u1 would: the same entries (ids) either way.
    prog_dir = tmp_path / "programs"
    TL.write_program(prog_dir / "shop.yaml", _program([VEST]))
    ops = TL.write_events(tmp_path / "ops.parquet", [o.for_parquet() for o in [
        _op("n1", "upsert_participant", "u1", "08:00:00Z"),
        _op("d1", "adjust", "u1", "09:30:00Z", asset="LP", amount="5", type="DEBIT", allow_negative=True)]],
        schema=TL.OP_SCHEMA)
    first = TL.write_events(tmp_path / "e1.parquet", [_ev("k1", "u1", "09:00:00Z", "vest", n=8).for_parquet()],
                            schema=TL.SCHEMA)
    later = TL.write_events(tmp_path / "e2.parquet", [_ev("k2", "u1", "12:00:00Z", "visit").for_parquet()],
                            schema=TL.SCHEMA)
    found = []
    for maintain_first in (False, True):
        db = tmp_path / f"ledger-{maintain_first}.duckdb"
        run_batch(prog_dir, first, db, operations=ops)
        if maintain_first:
            assert maintain(datetime(2025, 3, 1, 11, 30, tzinfo=timezone.utc), db).entries == 2
        run_batch(prog_dir, later, db)
        with duckdb.connect(str(db)) as con:
            assert verify(con).ok
            found.append((con.execute("SELECT j.id, j.action_type, j.action_index, max(p.amount) FROM journal_entries j "
                                      "JOIN postings p ON p.journal_entry_id = j.id "
                                      "WHERE action_type IN ('MATURITY', 'EXPIRATION') GROUP BY j.id, j.action_type, j.action_index, j.effective_at ORDER BY j.effective_at"
                                      ).fetchall(),
                          con.execute("SELECT remaining, status FROM lots WHERE amount = 8").fetchall()))
    assert found[0] == found[1]
    entries, lot = found[0]
    # action_index 0 for both: a due change's entry is named by its lot and kind (docs/decisions.md)
    assert [(t, i, a) for _, t, i, a in entries] == [("MATURITY", 0, D(8)), ("EXPIRATION", 0, D(3))]
    assert lot == [(D(0), "EXPIRED")]
