"""The running path's incremental rounds (engine/running.py, `_stale`): after the first round,
only the events whose inputs changed are evaluated again. Each case has an event whose outcome
changes in a late round through one kind of input only, so a dependency `_stale` missed would
leave that event with an early round's outcome. Each is held to the oracle (where it models the
case) and, table by table, to the kernel's ledger -- budget usage, entity state and tier history
included, which the oracle does not model and which come from what every event *did* (the final
pass re-evaluates every event's outcome, so the outcome tables alone could hide a stale event)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from tests.differential import strategies as S
from tests.differential.test_engine_vs_oracle import _row, _spec, _write, check, run_one

#: Columns that differ between any two runs (wall clock).
_CLOCK = {"committed_at"}


def _tables(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for (t,) in con.execute("SELECT table_name FROM information_schema.tables "
                                "WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall():
            cols = [c for (c, *_) in con.execute(f"DESCRIBE {t}").fetchall() if c not in _CLOCK]
            out[t] = con.execute(f"SELECT {', '.join(repr(c).replace(chr(39), chr(34)) for c in cols)} "
                                 f"FROM {t} ORDER BY ALL").fetchall()
        return out
    finally:
        con.close()


def same_as_kernel(scenario: S.Scenario, *, oracle: bool = True) -> None:
    """Every table of the ledger is the kernel's, and the running path decided every batch."""
    if oracle:
        check(scenario, row_path=False)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prog_dir, _, batches = _write(d, scenario)
        for row_path, db in ((False, d / "running.duckdb"), (True, d / "kernel.duckdb")):
            for batch in batches:
                report = run_one(prog_dir, batch, db, row_path=row_path)
                funding = isinstance(batch, tuple)  # operations: the kernel's, on either side
                assert row_path or funding or report.running_rounds > 0, "the running path declined: the case tests nothing"
        running, kernel = _tables(d / "running.duckdb"), _tables(d / "kernel.duckdb")
        assert running.keys() == kernel.keys()
        for t in kernel:
            assert running[t] == kernel[t], f"{t} differs (running path vs kernel)"


MEMBER = {"name": "Member", "key": "member", "condition": 'event.type == "visit"', "actions": [{"type": "TAG", "tag": "member"}]}
MEMBERS_BUY = '"member" in participant.tags && event.type == "buy"'


def test_a_budget_taken_late_by_one_participant_exceeds_anothers_later_claim():
    """u1's purchase qualifies once its visit's tag is known (round 2) and takes the day's budget
    (the rounds see it from round 3); u2's later purchase saw the budget free in round 2 and nothing
    of u2's changes after that: only its budget check, seeing what it now sees, turns it into
    BUDGET_EXCEEDED (and the budget's usage stays 10)."""
    same_as_kernel(S.Scenario(
        [_spec([MEMBER, {"name": "Bonus", "key": "bonus", "condition": MEMBERS_BUY,
                         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}],
                         "budgets": [{"asset": "PTS", "limit": "10", "schedule_type": "INTERVAL", "interval": "24h"}]}])],
        [[_row("a1", "u1", "2025-03-01T09:00:00Z", '{"type": "visit"}'),
          _row("b1", "u2", "2025-03-01T09:30:00Z", '{"type": "visit"}'),
          _row("a2", "u1", "2025-03-01T10:00:00Z", '{"type": "buy"}'),
          _row("b2", "u2", "2025-03-01T11:00:00Z", '{"type": "buy"}'),
          _row("b3", "u2", "2025-03-01T12:00:00Z", '{"type": "refund"}')]]))


def test_a_balance_earned_late_lets_a_debit_through():
    """The purchase earns once the visit's tag is known (round 2); the refunds' condition reads no
    state, and only their balance check sees the points (round 3): the first goes through."""
    same_as_kernel(S.Scenario(
        [_spec([MEMBER, {"name": "Earn", "key": "earn", "condition": MEMBERS_BUY,
                         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
                {"name": "Refund", "key": "refund", "condition": 'event.type == "refund"',
                 "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "10"}]}])],
        [[_row("a1", "u1", "2025-03-01T09:00:00Z", '{"type": "visit"}'),
          _row("a2", "u1", "2025-03-01T10:00:00Z", '{"type": "buy"}'),
          _row("a3", "u1", "2025-03-01T11:00:00Z", '{"type": "refund"}'),
          _row("a4", "u1", "2025-03-01T12:00:00Z", '{"type": "refund"}')]]))


def test_a_tag_set_late_gates_an_earlier_rule_and_a_counter_resets():
    """A rule before the tagging one reads the tag; the tag follows a counter that counts only
    members' purchases and resets daily: each event's outcome settles a round after the one before."""
    same_as_kernel(S.Scenario(
        [_spec([{"name": "Vip bonus", "key": "vip_bonus", "condition": '"vip" in participant.tags',
                 "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}]},
                MEMBER,
                {"name": "Count", "key": "count", "condition": MEMBERS_BUY,
                 "actions": [{"type": "COUNTER", "key": "buys", "value": "1", "reset_after": "24h"}]},
                {"name": "Vip", "key": "vip", "condition": '"buys" in participant.counters && participant.counters.buys == 2.0',
                 "actions": [{"type": "TAG", "tag": "vip"}, {"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
                {"name": "Unvip", "key": "unvip", "condition": '"vip" in participant.tags && event.type == "visit"',
                 "actions": [{"type": "UNTAG", "tag": "vip"}]}])],
        [[_row("a1", "u1", "2025-03-01T09:00:00Z", '{"type": "visit"}'),
          _row("a2", "u1", "2025-03-01T10:00:00Z", '{"type": "buy"}'),
          _row("a3", "u1", "2025-03-01T11:00:00Z", '{"type": "buy"}'),
          _row("a4", "u1", "2025-03-01T12:00:00Z", '{"type": "buy"}'),
          _row("a5", "u1", "2025-03-02T10:00:00Z", '{"type": "visit"}'),
          _row("a6", "u1", "2025-03-02T11:00:00Z", '{"type": "buy"}'),
          _row("a7", "u1", "2025-03-02T12:00:00Z", '{"type": "buy"}'),
          _row("a8", "u1", "2025-03-02T13:00:00Z", '{"type": "buy"}')]]))


def test_an_upgrade_found_late_is_not_recorded_twice():
    """The second purchase reaches gold only in round 3 (members' purchases count from round 2);
    the visit after it, re-evaluated in round 3 for its counter, qualifies against the level it
    saw then (none) -- and only auto-qualification's read of the level, changed in round 4, keeps
    it from recording a second upgrade."""
    spec = _spec([MEMBER, {"name": "Count", "key": "count", "condition": MEMBERS_BUY,
                           "actions": [{"type": "COUNTER", "key": "buys", "value": "1"}]}])
    spec["tiers"] = [{"key": "status", "name": "Status", "levels": [
        {"key": "gold", "rank": 1, "qualification": {"mode": "ALL", "criteria": [
            {"counter": "buys", "operator": ">=", "threshold": 2}]}}]}]
    same_as_kernel(S.Scenario(
        [spec],
        [[_row("a1", "u1", "2025-03-01T09:00:00Z", '{"type": "visit"}'),
          _row("a2", "u1", "2025-03-01T10:00:00Z", '{"type": "buy"}'),
          _row("a3", "u1", "2025-03-01T11:00:00Z", '{"type": "buy"}'),
          _row("a4", "u1", "2025-03-01T12:00:00Z", '{"type": "visit"}')]]), oracle=False)



def test_a_wallet_drawn_late_fails_a_later_credit_and_a_debit_pays_it_back():
    """The wallet holds 10. Both members' purchases qualify once their visits' tags are known
    (round 2), each seeing the wallet full; u1's credit draws it (the rounds see it from round 3),
    so only its wallet check, seeing 0, fails u2's purchase (insufficient_wallet). u1's refund
    then pays 4 back, and u2's later purchase of 4 fits (and a purchase of 5 after it does not)."""
    gift = {"symbol": "GIFT", "name": "Gift", "inventory_mode": "SIMPLE", "issuance_policy": "PREFUNDED", "scale": 0}
    spec = _spec([MEMBER, {"name": "Cashback", "key": "cashback", "condition": MEMBERS_BUY,
                           "actions": [{"type": "CREDIT", "asset": "GIFT", "amount": "event.n"}]},
                  {"name": "Refund", "key": "refund", "condition": 'event.type == "refund"',
                   "actions": [{"type": "DEBIT", "asset": "GIFT", "amount": "event.n"}]}])
    spec["assets"].append(gift)
    same_as_kernel(S.Scenario(
        [spec],
        [[_row("a1", "u1", "2025-03-01T09:00:00Z", '{"type": "visit"}'),
          _row("b1", "u2", "2025-03-01T09:30:00Z", '{"type": "visit"}'),
          _row("a2", "u1", "2025-03-01T10:00:00Z", '{"type": "buy", "n": 10}'),
          _row("b2", "u2", "2025-03-01T11:00:00Z", '{"type": "buy", "n": 10}'),
          _row("a3", "u1", "2025-03-01T12:00:00Z", '{"type": "refund", "n": 4}'),
          _row("b3", "u2", "2025-03-01T13:00:00Z", '{"type": "buy", "n": 4}'),
          _row("b4", "u2", "2025-03-01T14:00:00Z", '{"type": "buy", "n": 5}')]],
        funds=[(S.PROGRAM, "GIFT", "10")]))
