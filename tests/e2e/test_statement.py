"""`perkflow statement` (scrip-reference.md 4, participant statement): one participant's postings of
one asset in ledger order with running balances, an opening balance from every entry effective
before --from and a closing one from every entry effective before --to. Run as a subprocess on a
real ledger; every number below is worked out by hand from the events."""

from __future__ import annotations

import json
from decimal import Decimal as D

from tests.helpers.io import cli
from tests.helpers.scenario import Scenario, asset, at, ev, on

RULES = [
    on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
    on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n"}),
]


def t(hour: int) -> str:
    return at(f"2025-03-01 {hour:02d}:00")


def statement(s: Scenario, *args: str) -> dict:
    r = cli("statement", "--db", str(s.db), "--external-id", "a", "--asset", "PTS", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rows(st: dict) -> list[tuple]:
    return [(r["action_type"], r["bucket"], D(r["amount"]), D(r["running_balance"])) for r in st["rows"]]


def ledger(tmp_path) -> Scenario:
    s = Scenario(tmp_path, "shop", RULES, [asset("PTS")])
    s.run(ev("e1", "a", t(10), "earn", n=10),
          ev("e2", "a", t(12), "earn", n=5),
          ev("e3", "a", t(14), "hold", n=4),
          ev("e4", "a", t(16), "earn", n=7),
          ev("x1", "b", t(11), "earn", n=100))          # another participant: never on a's statement
    s.run(ev("e5", "a", t(9), "earn", n=3))             # late: effective 09:00, booked after the rest
    return s


def test_whole_history_in_ledger_order_with_a_hold_shown_after_its_entry(tmp_path):
    st = statement(ledger(tmp_path))
    assert (D(st["opening_balance"]), D(st["closing_balance"])) == (0, 25)  # 10 + 5 + 7 + 3
    got = rows(st)
    # the HOLD moves 4 from AVAILABLE to HELD: both its postings show the total after the entry (15)
    assert got[:2] == [("CREDIT", "AVAILABLE", 10, 10), ("CREDIT", "AVAILABLE", 5, 15)]
    assert sorted(got[2:4]) == [("HOLD", "AVAILABLE", -4, 15), ("HOLD", "HELD", 4, 15)]
    assert got[4:] == [("CREDIT", "AVAILABLE", 7, 22), ("CREDIT", "AVAILABLE", 3, 25)]  # the late one last


def test_a_period_opens_with_everything_effective_before_it_including_a_late_entry(tmp_path):
    s = ledger(tmp_path)
    st = statement(s, "--from", t(11), "--to", t(15))
    # before 11:00: e1 (10) and the late e5 (3, effective 09:00); in [11:00, 15:00): e2 and the hold
    assert D(st["opening_balance"]) == 13
    assert sorted(rows(st)) == sorted([("CREDIT", "AVAILABLE", 5, 18), ("HOLD", "AVAILABLE", -4, 18),
                                       ("HOLD", "HELD", 4, 18)])
    assert D(st["closing_balance"]) == 18
    available = statement(s, "--from", t(11), "--to", t(15), "--bucket", "AVAILABLE")
    assert (D(available["opening_balance"]), D(available["closing_balance"])) == (13, 14)
    assert sorted(rows(available)) == [("CREDIT", "AVAILABLE", 5, 18), ("HOLD", "AVAILABLE", -4, 14)]
    held = statement(s, "--bucket", "HELD")
    assert rows(held) == [("HOLD", "HELD", 4, 4)] and D(held["closing_balance"]) == 4


def test_an_entry_at_the_to_instant_belongs_to_the_next_period(tmp_path):
    s = ledger(tmp_path)
    before = statement(s, "--to", t(12))
    after = statement(s, "--from", t(12))
    assert [r[2] for r in rows(before)] == [10, 3] and D(before["closing_balance"]) == 13
    assert D(after["opening_balance"]) == 13 and rows(after)[0] == ("CREDIT", "AVAILABLE", 5, 18)
    assert D(after["closing_balance"]) == 25


def test_unknown_participant_asset_or_reversed_period_is_exit_2_naming_it(tmp_path):
    s = ledger(tmp_path)
    base = ("statement", "--db", str(s.db))
    r = cli(*base, "--external-id", "nobody", "--asset", "PTS")
    assert r.returncode == 2 and "nobody" in r.stderr
    r = cli(*base, "--external-id", "a", "--asset", "GEMS")
    assert r.returncode == 2 and "GEMS" in r.stderr and "PTS" in r.stderr
    r = cli(*base, "--external-id", "a", "--asset", "PTS", "--from", t(12), "--to", t(10))
    assert r.returncode == 2 and "--to" in r.stderr
    r = cli(*base, "--external-id", "a", "--asset", "PTS", "--from", "yesterday")
    assert r.returncode == 2 and "--from" in r.stderr and "RFC 3339" in r.stderr and "2025-01-01T00:00:00Z" in r.stderr
    r = cli("maintain", "--db", str(s.db), "--as-of", "10000-01-01T00:00:00Z")  # past Python's years
    assert r.returncode == 2 and "--as-of" in r.stderr and "RFC 3339" in r.stderr and "isoformat" not in r.stderr
    table = cli(*base, "--external-id", "a", "--asset", "PTS")
    assert table.returncode == 0 and "opening balance 0" in table.stdout and "closing balance 25" in table.stdout
