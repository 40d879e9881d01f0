"""Lots of groups expire and mature (semantics.md 9.1, 11, 3; docs/decisions.md "Groups"), through
the engine into a real ledger: a GROUP-target CREDIT of a LOT asset with `expires_at` /
`matures_at` makes a group lot that expires to SYSTEM_BREAKAGE and matures DEFERRED -> AVAILABLE
at its instants, applied when an event's action targets the group or an operation names it, and
by `perkflow maintain --as-of`. Every expected number is computed by hand in the comments;
Scenario.run checks `perkflow verify` and ledger_summary after every batch.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal as D

from engine.maintain import maintain
from engine.plan import plan_program
from engine.catalog import load_catalog
from tests.helpers.io import query
from tests.helpers.scenario import Scenario, asset, at, ev, on, op

OK = ("COMPLETED", None)
FAMILY = {"key": "family", "name": "Family",
          "members": [{"external_id": "u1", "role": "ADMIN"}, {"external_id": "u2"}]}
GROUP = {"type": "GROUP", "id": "family"}
RULES = [
    on("pool", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "target": GROUP, "expires_at": "48h"}),
    on("defer", {"type": "CREDIT", "asset": "PTS", "amount": "event.n", "target": GROUP, "matures_at": "24h"}),
    on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n", "target": GROUP}),
    on("fine", {"type": "FORFEIT", "asset": "PTS", "amount": "event.n", "target": GROUP}),
    on("freeze", {"type": "HOLD", "asset": "PTS", "amount": "event.n", "target": GROUP}),
    on("tag", {"type": "TAG", "tag": "seen", "target": GROUP}),
    # a lot past its expiry in the very event that makes it is not spendable (semantics.md 9.1)
    on("flash", {"type": "CREDIT", "asset": "PTS", "amount": "5", "target": GROUP, "expires_at": "0s"},
       {"type": "DEBIT", "asset": "PTS", "amount": "5", "target": GROUP}),
    on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
]


def scenario(tmp_path) -> Scenario:
    return Scenario(tmp_path, "shop", RULES, [asset("PTS", mode="LOT")], groups=[FAMILY])


def timed(s: Scenario) -> list[tuple]:
    """(action_type, amount, effective_at) of the time-driven entries (they name no event), in
    ledger order."""
    rows = query(s.db, """
        SELECT j.action_type, MAX(p.amount), j.effective_at FROM journal_entries j
        JOIN postings p ON p.journal_entry_id = j.id
        WHERE j.action_type IN ('EXPIRATION', 'MATURITY') GROUP BY j.id, j.seq, j.action_type, j.effective_at
        ORDER BY j.seq""")
    return [(t, D(a), e.astimezone(timezone.utc)) for t, a, e in rows]


def group_lots(s: Scenario) -> list[tuple]:
    """(status, remaining, amount) of the group's lots, oldest first."""
    rows = query(s.db, "SELECT l.status, l.remaining, l.amount FROM lots l JOIN groups g ON g.id = l.entity_id "
                       "WHERE l.entity_type = 'GROUP' ORDER BY l.created_at, l.id")
    return [(st, D(r), D(a)) for st, r, a in rows]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def breakage(s: Scenario) -> D:
    return s.system("SYSTEM_BREAKAGE", "PTS")


def test_a_group_lot_expires_before_a_later_spend_and_not_before_an_earlier_one(tmp_path):
    s = scenario(tmp_path)
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "pool", n=10),   # lot A 10, expires 03-03 10:00
                ev("e2", "u2", at("2025-03-02 10:00"), "pool", n=5),    # lot B 5, expires 03-04 10:00
                ev("e3", "u1", at("2025-03-02 12:00"), "spend", n=4),   # before A expires: A 10 -> 6 (FIFO)
                # A expired at 03-03 10:00 with 6 (to breakage) before this event: the group has B's 5 < 6;
                # the expiry stands although the event fails
                ev("e4", "u1", at("2025-03-03 12:00"), "spend", n=6),
                ev("e5", "u2", at("2025-03-03 13:00"), "spend", n=5))   # B 5 -> 0
    assert out == {"e1": OK, "e2": OK, "e3": OK, "e4": ("FAILED", "insufficient_balance"), "e5": OK}
    assert s.group("family", "PTS") == (D(0), D(0), D(0))
    assert breakage(s) == D(6)
    assert timed(s) == [("EXPIRATION", D(6), utc("2025-03-03 10:00"))]
    assert group_lots(s) == [("EXPIRED", D(0), D(10)), ("CONSUMED", D(0), D(5))]
    # issued 15, 4 + 5 debited back, 6 expired: nothing left
    assert query(s.db, "SELECT total_issued, total_redeemed, total_expired, current_balance FROM ledger_summary") == [
        (D(15), D(9), D(6), D(0))]


def test_a_group_lot_expires_before_a_forfeit_a_hold_and_a_tag_on_the_group(tmp_path):
    s = scenario(tmp_path)
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "pool", n=10),        # A 10, expires 03-03 10:00
                ev("e2", "u1", at("2025-03-02 10:00"), "earn", n=3),         # u1's own lot: not the group's
                ev("e3", "u1", at("2025-03-02 11:00"), "pool", n=4),         # B 4, expires 03-04 11:00
                ev("e4", "u1", at("2025-03-02 12:00"), "freeze", n=12),      # A 10 held whole, B 2 held (split)
                ev("e5", "u2", at("2025-03-03 11:00"), "fine", n=2),         # A (held) expires first; B's 2 forfeited
                ev("e6", "u2", at("2025-03-04 12:00"), "tag"))               # a TAG touches the group: B's held 2 expire
    assert out == {k: OK for k in ("e1", "e2", "e3", "e4", "e5", "e6")}
    # held value expires like available value (docs/decisions.md "Held lots expire")
    assert timed(s) == [("EXPIRATION", D(10), utc("2025-03-03 10:00")),
                        ("EXPIRATION", D(2), utc("2025-03-04 11:00"))]
    assert s.group("family", "PTS") == (D(0), D(0), D(0))
    assert breakage(s) == D(10) + D(2) + D(2)   # two expiries and the forfeit
    assert s.balance("u1", "PTS") == (D(3), D(0), D(0))


def test_a_lot_past_its_expiry_in_the_event_that_makes_it_is_not_spendable(tmp_path):
    s = scenario(tmp_path)
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "flash"))
    assert out == {"e1": ("FAILED", "insufficient_balance")}
    assert s.group("family", "PTS") == (D(0), D(0), D(0))


def test_a_deferred_group_lot_is_not_spendable_until_it_matures(tmp_path):
    s = scenario(tmp_path)
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "defer", n=10),   # DEFERRED 10, matures 03-02 10:00
                ev("e2", "u1", at("2025-03-01 12:00"), "spend", n=5),    # nothing available
                ev("e3", "u2", at("2025-03-02 11:00"), "spend", n=4))    # matured at 10:00: 10 - 4
    assert out == {"e1": OK, "e2": ("FAILED", "insufficient_balance"), "e3": OK}
    assert timed(s) == [("MATURITY", D(10), utc("2025-03-02 10:00"))]
    assert s.group("family", "PTS") == (D(6), D(0), D(0))
    assert group_lots(s) == [("AVAILABLE", D(6), D(10))]


def test_group_operations_touch_the_group(tmp_path):
    s = scenario(tmp_path)
    out = s.run(ev("e1", "u1", at("2025-03-01 10:00"), "pool", n=10),    # A 10, expires 03-03 10:00
                ev("e2", "u1", at("2025-03-01 10:00"), "earn", n=8),
                ev("e3", "u1", at("2025-03-01 11:00"), "defer", n=6),    # D 6, matures 03-02 11:00
                # D matured at 03-02 11:00 before the operation: 10 + 6 available; hold 12: A 10 + D 2
                op("group_hold", "o1", None, at("2025-03-02 12:00"), group="family", asset="PTS", amount="12"),
                # A (held) expired at 03-03 10:00: held 2 (D's part), available 4; adjust DEBIT 5 > 4 fails
                op("group_adjust", "o2", None, at("2025-03-03 12:00"), group="family", asset="PTS", amount="5",
                   type="DEBIT"),
                # a transfer into the group: a lot without expiry
                op("transfer", "o3", "u1", at("2025-03-03 13:00"), asset="PTS",
                   recipients=[{"group_id": "family", "amount": "3"}]),
                op("group_forfeit", "o4", None, at("2025-03-03 14:00"), group="family", asset="PTS", amount="7",
                   bucket="AVAILABLE"))
    assert out == {"e1": OK, "e2": OK, "e3": OK, "o1": OK, "o2": ("FAILED", "insufficient_balance"), "o3": OK,
                   "o4": OK}
    assert timed(s) == [("MATURITY", D(6), utc("2025-03-02 11:00")),
                        ("EXPIRATION", D(10), utc("2025-03-03 10:00"))]
    # available 4 (D) + 3 (transfer) - 7 forfeited = 0; held 2
    assert s.group("family", "PTS") == (D(0), D(2), D(0))
    assert s.balance("u1", "PTS") == (D(5), D(0), D(0))


def test_maintenance_expires_and_matures_group_lots_with_no_event(tmp_path):
    s = scenario(tmp_path)
    s.run(ev("e1", "u1", at("2025-03-01 10:00"), "pool", n=10),     # expires 03-03 10:00
          ev("e2", "u1", at("2025-03-01 11:00"), "defer", n=4),     # matures 03-02 11:00
          ev("e3", "u2", at("2025-03-01 12:00"), "spend", n=3))     # A 10 -> 7
    schedule = query(s.db, "SELECT bucket_start, lots, outstanding, outstanding_available, outstanding_deferred "
                           "FROM expiration_schedule WHERE granularity = 'day' ORDER BY bucket_start NULLS LAST")
    # the group's lots are in the schedule: A's 7 due on 03-03, D's 4 (deferred) without expiry
    assert schedule == [(date(2025, 3, 3), 1, D(7), D(7), D(0)), (None, 1, D(4), D(0), D(4))]
    assert maintain(utc("2025-03-01 23:00"), s.db).batch_id is None      # nothing due yet
    report = maintain(utc("2025-03-04 00:00"), s.db)
    assert report.batch_id is not None and report.lots_due == 2
    s.check()
    assert timed(s) == [("MATURITY", D(4), utc("2025-03-02 11:00")),
                        ("EXPIRATION", D(7), utc("2025-03-03 10:00"))]
    assert s.group("family", "PTS") == (D(4), D(0), D(0))
    assert breakage(s) == D(7)
    assert query(s.db, "SELECT bucket_start, outstanding FROM expiration_schedule WHERE granularity = 'day'") == [
        (None, D(4))]
    # a re-run writes nothing
    entries = query(s.db, "SELECT COUNT(*) FROM journal_entries")
    assert maintain(utc("2025-03-04 00:00"), s.db).batch_id is None
    assert query(s.db, "SELECT COUNT(*) FROM journal_entries") == entries


STREAM = [ev("e1", "u1", at("2025-03-01 10:00"), "pool", n=10),
          ev("e2", "u2", at("2025-03-01 11:00"), "defer", n=6),
          ev("e3", "u1", at("2025-03-02 09:00"), "spend", n=4),
          op("group_hold", "o1", None, at("2025-03-02 12:00"), group="family", asset="PTS", amount="3"),
          ev("e4", "u2", at("2025-03-02 13:00"), "pool", n=5),
          ev("e5", "u1", at("2025-03-03 11:00"), "spend", n=9),
          ev("e6", "u1", at("2025-03-03 11:30"), "earn", n=4),
          op("transfer", "o2", "u1", at("2025-03-03 12:00"), asset="PTS",
             recipients=[{"group_id": "family", "amount": "1"}]),
          ev("e7", "u2", at("2025-03-05 10:00"), "fine", n=1)]


def ledger(s: Scenario) -> tuple:
    """The ledger, without entry_hash (it hashes `seq`, which numbers entries within their batch)."""
    entries = query(s.db, """
        SELECT j.id, j.action_type, j.effective_at, j.description, list(p.entity_type || ':' || p.bucket || ':'
               || p.amount::VARCHAR ORDER BY p.id)
        FROM journal_entries j JOIN postings p ON p.journal_entry_id = j.id
        GROUP BY j.id, j.seq, j.action_type, j.effective_at, j.description ORDER BY j.seq""")
    lots = query(s.db, "SELECT id, entity_type, status, remaining, expires_at, matures_at FROM lots ORDER BY id")
    balances = query(s.db, "SELECT * FROM account_balances ORDER BY ALL")
    status = query(s.db, "SELECT idempotency_key, status, error_code FROM events UNION ALL "
                         "SELECT idempotency_key, status, error_code FROM operations ORDER BY 1")
    return entries, lots, balances, status


def test_the_same_stream_in_one_batch_two_or_one_row_each_writes_the_same_ledger(tmp_path):
    results = []
    for name, cuts in (("one", [len(STREAM)]), ("two", [5, len(STREAM)]), ("rows", range(1, len(STREAM) + 1))):
        s = scenario(tmp_path / name)
        start = 0
        for end in cuts:
            s.run(*STREAM[start:end])
            start = end
        results.append(ledger(s))
    assert results[0] == results[1] == results[2]
    entries, _, _, status = results[0]
    # by hand: A 10 (exp 03-03 10:00), D 6 (DEFERRED, matures 03-02 11:00); e3 spends 4 of A (A 6);
    # o1 (D matured 11:00) holds 3 of A (A 3 available + 3 held); e4: B 5 (exp 03-04 13:00);
    # e5: A expired 03-03 10:00 (3 available + 3 held = 6 to breakage), spends 9 of D 6 + B 5: D 0, B 2;
    # e6 is u1's own; o2: a group lot of 1 without expiry; e7 at 03-05: B (2) expired 03-04 13:00, then fines 1 of the transfer's lot
    assert status == [(k, "COMPLETED", None) for k in ("e1", "e2", "e3", "e4", "e5", "e6", "e7", "o1", "o2")]
    assert [(t, at_.astimezone(timezone.utc)) for _, t, at_, _, _ in entries if t in ("MATURITY", "EXPIRATION")] == [
        ("MATURITY", utc("2025-03-02 11:00")), ("EXPIRATION", utc("2025-03-03 10:00")),
        ("EXPIRATION", utc("2025-03-03 10:00")), ("EXPIRATION", utc("2025-03-04 13:00"))]
    s = scenario(tmp_path / "check")
    s.run(*STREAM)
    assert s.group("family", "PTS") == (D(0), D(0), D(0))
    assert breakage(s) == D(3) + D(3) + D(2) + D(1)
    # a re-run of the same input writes nothing
    before = ledger(s)
    s.run(*STREAM)
    assert ledger(s) == before


def test_group_credits_with_expiry_take_the_kernel(tmp_path):
    s = scenario(tmp_path)
    catalog = load_catalog(s.programs)
    plans = {p.rule: p for p in plan_program(catalog.programs["shop"])}
    assert plans["pool"].path == "vectorised" and "sequential kernel" in plans["pool"].reason
