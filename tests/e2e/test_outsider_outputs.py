"""Outsider round: outputs, reports and the read commands, black-box (semantics.md 12, 13, 1.2).

Each scenario is written from the contract and the docs alone (README.md, docs/tables.md,
docs/reports.md, docs/decisions.md), its expectations worked out by hand in the comments, and run
through the real CLI into a real DuckDB file, read back with SQL and with `perkflow report` /
`perkflow balances`. The tests of a divergence failed before its fix (docs/decisions.md,
"Reports and read commands").
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal as D

from tests.e2e.test_contract_audit import SIMPLE, Ledger, at, ev, on, op, program
from tests.helpers.io import cli

CASH = {"symbol": "CASH", "name": "Cash", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 2}
GIFT = {"symbol": "GIFT", "name": "Gift", "inventory_mode": "LOT", "issuance_policy": "PREFUNDED", "scale": 0}


def utc(day: int, hour: int) -> datetime:
    return datetime(2025, 3, day, hour, tzinfo=timezone.utc)


def maintain(led: Ledger, as_of: str) -> None:
    res = cli("maintain", "--as-of", as_of, "--db", str(led.db))
    assert res.returncode == 0, res.stdout + res.stderr


def balances_are_the_sum_of_postings(led: Ledger) -> None:
    """Invariant 1.2, by SQL on the file: the materialised balances equal the postings' sums."""
    differ = led.sql("""
        WITH p AS (SELECT entity_type, entity_id, asset_id, bucket, SUM(amount) AS amount FROM postings GROUP BY ALL),
             b AS (SELECT entity_type, entity_id, asset_id, bucket, amount FROM account_balances)
        (SELECT * FROM p EXCEPT SELECT * FROM b) UNION ALL (SELECT * FROM b WHERE amount <> 0 EXCEPT SELECT * FROM p)""")
    assert differ == []
    led.verify()


def cli_json(led: Ledger, *args: str) -> list[dict]:
    res = cli(*args, "--json", "--db", str(led.db))
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_s12_ledger_summary_period_activity_and_balances_over_two_programs_and_two_assets(tmp_path):
    """semantics.md 12 (ledger_summary, its period variant, program_activity, balances) and 1.2.
    shop: PTS (SIMPLE) and CASH (LOT, 48 h expiry); club: PTS. By hand, March 2025:
      day 1: u1 earns 100 PTS (shop), 10.5 CASH (lot, expires 3-03 02:00); u2 earns 40 PTS (club);
             u1 holds 30, releases 10, forfeits 5 AVAILABLE and 4 HELD, spends 4.25 CASH
             -> u1 PTS 100 -> 70/30 -> 80/20 -> 75/20 -> 75 available, 16 held; CASH lot 6.25
      day 2: u2 spends 15 PTS (club); u1 transfers 20 PTS to u2 (shop); u2 redeems 10 (shop),
             4 of it reversed
      maintain --as-of 3-05: the CASH lot's 6.25 left expires at 3-03 02:00.
    u1: PTS 75 - 20 = 55 available, 16 held; CASH 0.  u2: PTS 40 - 15 + 20 - 10 + 4 = 39.
    ledger_summary: club PTS 40 issued, 15 redeemed, 25 current, 1 holder (u2);
    shop CASH 10.5 / 4.25 redeemed / 6.25 expired / 0 current / 0 holders;
    shop PTS 100 issued, 10 - 4 = 6 redeemed, 5 + 4 = 9 forfeited, 85 current (u1 71 + u2's shop
    net 14), 2 holders. Over programs PTS: 25 + 85 = 110 = u1 71 + u2 39."""
    shop = program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
                    on("cash", {"type": "CREDIT", "asset": "CASH", "amount": "event.n", "expires_at": "48h"}),
                    on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n"}),
                    on("rel", {"type": "RELEASE", "asset": "PTS", "amount": "event.n"}),
                    on("lose", {"type": "FORFEIT", "asset": "PTS", "amount": "event.n"}),
                    on("losehold", {"type": "FORFEIT", "asset": "PTS", "amount": "event.n", "bucket": "HELD"}),
                    on("spendc", {"type": "DEBIT", "asset": "CASH", "amount": "event.n"})], [SIMPLE, CASH])
    club = program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
                    on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})], key="club")
    led = Ledger(tmp_path, shop, club)
    counts = led.run(
        [ev("e1", "u1", at(1, 1), "earn", n=100), ev("e2", "u1", at(1, 2), "cash", n=10.5),
         ev("e3", "u2", at(1, 3), "earn", n=40) | {"program": "club"}, ev("e4", "u1", at(1, 4), "hold", n=30),
         ev("e5", "u1", at(1, 5), "rel", n=10), ev("e6", "u1", at(1, 6), "lose", n=5),
         ev("e7", "u1", at(1, 7), "losehold", n=4), ev("e8", "u1", at(1, 8), "spendc", n=4.25),
         ev("e9", "u2", at(2, 1), "spend", n=15) | {"program": "club"}],
        [op("transfer", "t1", "u1", at(2, 2), asset="PTS", recipients=[{"external_id": "u2", "amount": "20"}]),
         op("redeem", "r1", "u2", at(2, 3), asset="PTS", amount="10"),
         op("reverse_redemption", "rr1", "u2", at(2, 4), redemption="r1", amount="4")])
    assert (counts["read"], counts["completed"], counts["failed"], counts["rejected"]) == (12, 12, 0, 0)
    maintain(led, "2025-03-05T00:00:00Z")

    summary = [(r["program_key"], r["asset_symbol"], r["total_issued"], r["total_redeemed"], r["total_expired"],
                r["total_forfeited"], r["current_balance"], r["participant_count"]) for r in led.view("ledger_summary")]
    assert summary == [("club", "PTS", D(40), D(15), 0, 0, D(25), 1),
                       ("shop", "CASH", D("10.5"), D("4.25"), D("6.25"), 0, 0, 0),
                       ("shop", "PTS", D(100), D(6), 0, D(9), D(85), 2)]
    # the CLI prints the same numbers, as exact decimal text
    assert [(r["program_key"], r["asset_symbol"], r["total_issued"], r["total_redeemed"], r["total_expired"],
             r["total_forfeited"], r["current_balance"], r["participant_count"])
            for r in cli_json(led, "report", "ledger_summary")] == [
        ("club", "PTS", "40", "15", "0", "0", "25", 1), ("shop", "CASH", "10.5", "4.25", "6.25", "0", "0", 0),
        ("shop", "PTS", "100", "6", "0", "9", "85", 2)]

    # day 2 as a period: shop PTS opens at 100 - 9 = 91, the transfer nets 0, the redemption 10
    # gross with 4 given back; CASH has no flow that day (its expiry is on day 3); club redeems 15
    period = {(r["program_key"], r["asset_symbol"]): r for r in led.sql_dicts(
        "SELECT * FROM ledger_summary_between('2025-03-02T00:00:00Z', '2025-03-03T00:00:00Z')")}
    pick = ("opening_balance", "total_issued", "total_redeemed", "total_expired", "total_forfeited", "closing_balance",
            "participant_count", "period_redeemed", "other_adjustments_net")
    assert {k: tuple(r[c] for c in pick) for k, r in period.items()} == {
        ("shop", "PTS"): (D(91), 0, D(6), 0, 0, D(85), 2, D(10), D(4)),
        ("shop", "CASH"): (D("6.25"), 0, 0, 0, 0, D("6.25"), 0, 0, 0),
        ("club", "PTS"): (D(40), 0, D(15), 0, 0, D(25), 1, D(15), 0)}

    activity = {(r["program_key"], str(r["day"])): r for r in led.view("program_activity")}
    assert sorted(activity) == [("club", "2025-03-01"), ("club", "2025-03-02"), ("shop", "2025-03-01"),
                                ("shop", "2025-03-02"), ("shop", "2025-03-03")]
    day2 = activity[("shop", "2025-03-02")]
    assert (day2["events_completed"], day2["operations_completed"], day2["entries"], day2["transfer_entries"],
            day2["redemption_entries"], day2["redemption_reversal_entries"], day2["redeemed"]) == \
        (0, 3, 3, 1, 1, 1, {"PTS": D(6)})
    day3 = activity[("shop", "2025-03-03")]
    assert (day3["events_completed"], day3["entries"], day3["expiration_entries"], day3["expired"]) == \
        (0, 1, 1, {"CASH": D("6.25")})
    day1 = activity[("shop", "2025-03-01")]
    assert (day1["events_completed"], day1["entries"], day1["hold_entries"], day1["forfeit_entries"],
            day1["issued"], day1["forfeited"]) == \
        (7, 7, 1, 2, {"CASH": D("10.5"), "PTS": D(100)}, {"CASH": 0, "PTS": D(9)})

    # balances: one row per entity and asset, system accounts too; each asset sums to zero
    rows = {(r["entity_type"], r["external_id"], r["asset_symbol"]): (r["available"], r["held"], r["deferred"])
            for r in led.view("balances")}
    assert len(rows) == len(led.view("balances"))
    assert rows == {("PARTICIPANT", "u1", "PTS"): (D(55), D(16), 0), ("PARTICIPANT", "u1", "CASH"): (0, 0, 0),
                    ("PARTICIPANT", "u2", "PTS"): (D(39), 0, 0),
                    ("SYSTEM_ISSUANCE", None, "PTS"): (D(-125), 0, 0), ("SYSTEM_BREAKAGE", None, "PTS"): (D(9), 0, 0),
                    ("SYSTEM_REDEMPTION", None, "PTS"): (D(6), 0, 0),
                    ("SYSTEM_ISSUANCE", None, "CASH"): (D("-6.25"), 0, 0),
                    ("SYSTEM_BREAKAGE", None, "CASH"): (D("6.25"), 0, 0)}
    assert [(r["external_id"], r["asset_symbol"], r["available"], r["held"], r["deferred"])
            for r in cli_json(led, "balances")] == [("u1", "CASH", "0", "0", "0"), ("u1", "PTS", "55", "16", "0"),
                                                   ("u2", "PTS", "39", "0", "0")]
    balances_are_the_sum_of_postings(led)


def test_s12_a_statement_row_shows_the_balances_after_its_entry_never_between_its_legs(tmp_path):
    """semantics.md 12 (participant_statement, running balance) and 8 (an entry's postings are one
    atomic change). u1 earns 100, holds 30, then at one instant releases 10 and forfeits 5 of the
    HELD bucket (ties in arrival order), then spends 20. After each entry, by hand (available,
    held, deferred, total): 100/0/0/100; 70/30/0/100; 80/20/0/100; 80/15/0/95; 60/15/0/75.
    Every row of an entry shows its entry's result: the HOLD's HELD +30 row showed a total of 130
    (or its AVAILABLE -30 row 70), a balance u1 never had, as the postings of one entry were
    summed one by one in posting-id order."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"}),
                                    on("hold", {"type": "HOLD", "asset": "PTS", "amount": "event.n"}),
                                    on("rel", {"type": "RELEASE", "asset": "PTS", "amount": "event.n"}),
                                    on("losehold", {"type": "FORFEIT", "asset": "PTS", "amount": "event.n",
                                                    "bucket": "HELD"}),
                                    on("spend", {"type": "DEBIT", "asset": "PTS", "amount": "event.n"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn", n=100), ev("e2", "u1", at(1, 2), "hold", n=30),
             ev("e3", "u1", at(1, 3), "rel", n=10), ev("e4", "u1", at(1, 3), "losehold", n=5),
             ev("e5", "u1", at(1, 4), "spend", n=20)])
    rows = led.view("participant_statement", "external_id = 'u1'")
    got = [(r["action_type"], r["bucket"], r["amount"], r["running_available"], r["running_held"],
            r["running_deferred"], r["running_balance"]) for r in rows]
    after = {"CREDIT": (D(100), 0, 0, D(100)), "HOLD": (D(70), D(30), 0, D(100)),
             "RELEASE": (D(80), D(20), 0, D(100)), "FORFEIT": (D(80), D(15), 0, D(95)),
             "DEBIT": (D(60), D(15), 0, D(75))}
    assert [g[0] for g in got] == ["CREDIT", "HOLD", "HOLD", "RELEASE", "RELEASE", "FORFEIT", "DEBIT"]
    assert sorted(g[1:3] for g in got if g[0] == "HOLD") == [("AVAILABLE", D(-30)), ("HELD", D(30))]
    assert sorted(g[1:3] for g in got if g[0] == "RELEASE") == [("AVAILABLE", D(10)), ("HELD", D(-10))]
    assert [g[3:] for g in got] == [after[g[0]] for g in got]
    # the last row is the balance (and the CLI's statement report has the same rows)
    assert led.balance("u1") == (D(60), D(15), D(0))
    printed = [r for r in cli_json(led, "report", "participant_statement") if r["external_id"] == "u1"]
    assert [(r["action_type"], D(r["running_available"]), D(r["running_held"]), D(r["running_balance"]))
            for r in printed] == [(g[0], g[3], g[4], g[6]) for g in got]
    balances_are_the_sum_of_postings(led)


def test_s12_the_expiration_schedule_holds_participants_and_groups_lots_not_the_wallets(tmp_path):
    """semantics.md 12 (expiration_schedule), 9.1, 9.2; docs/reports.md: "Outstanding LOT value ...
    Participants' and groups' lots alike". GIFT is LOT and PREFUNDED: the wallet is funded 100;
    u1 gets lot A 3 (expires 3-02 01:00) and lot B 4 (expires 3-04 02:00), the group a lot C 6
    without expiry; u1 spends 2 (FIFO: A keeps 1; the DEBIT returns the 2 to the wallet).
    Outstanding: A 1 on 3-02, B 4 on 3-04, C 6 without expiry = 11, what u1 (5) and the group (6)
    hold. The wallet's 100 - 3 - 4 - 6 + 2 = 89 is not issued to anyone: it was listed as 89 more
    "without expiry". first/last_expires_at are instants (TIMESTAMPTZ) like every other instant of
    the ledger (they were naive timestamps, printed without a zone). After `maintain --as-of
    3-03`, A's 1 has expired and left the schedule."""
    group = {"key": "fam", "name": "Fam", "members": [{"external_id": "u1", "role": "ADMIN"}]}
    led = Ledger(tmp_path, program(
        [on("gift", {"type": "CREDIT", "asset": "GIFT", "amount": "event.n", "expires_at": "event.ttl"}),
         on("pool", {"type": "CREDIT", "asset": "GIFT", "amount": "event.n", "target": {"type": "GROUP", "id": "fam"}}),
         on("spend", {"type": "DEBIT", "asset": "GIFT", "amount": "event.n"})], [GIFT], groups=[group]))
    led.run([ev("g1", "u1", at(1, 1), "gift", n=3, ttl="24h"), ev("g2", "u1", at(1, 2), "gift", n=4, ttl="72h"),
             ev("g3", "u1", at(1, 3), "pool", n=6), ev("s1", "u1", at(1, 4), "spend", n=2)],
            [op("fund", "f1", None, at(1, 0), asset="GIFT", amount="100")])
    assert set(led.status().values()) == {("COMPLETED", None)}

    def schedule(granularity: str) -> list[tuple]:
        return [(None if r["bucket_start"] is None else str(r["bucket_start"]), r["no_expiry"], r["lots"],
                 r["outstanding"], r["outstanding_available"], r["first_expires_at"], r["last_expires_at"])
                for r in led.view("expiration_schedule", f"granularity = '{granularity}'")]

    assert schedule("day") == [("2025-03-02", False, 1, D(1), D(1), utc(2, 1), utc(2, 1)),
                               ("2025-03-04", False, 1, D(4), D(4), utc(4, 2), utc(4, 2)),
                               (None, True, 1, D(6), D(6), None, None)]
    assert schedule("week") == [("2025-02-24", False, 1, D(1), D(1), utc(2, 1), utc(2, 1)),   # Sunday 3-02
                                ("2025-03-03", False, 1, D(4), D(4), utc(4, 2), utc(4, 2)),   # Tuesday 3-04
                                (None, True, 1, D(6), D(6), None, None)]
    assert schedule("month") == [("2025-03-01", False, 2, D(5), D(5), utc(2, 1), utc(4, 2)),
                                 (None, True, 1, D(6), D(6), None, None)]
    assert led.sql("SELECT DISTINCT data_type FROM information_schema.columns WHERE table_name = 'expiration_schedule' "
                   "AND column_name IN ('first_expires_at', 'last_expires_at')") == [("TIMESTAMP WITH TIME ZONE",)]
    # balances has the group's and the wallet's rows too (participant_id only for participants)
    assert {(r["entity_type"], r["participant_id"] is None, r["available"])
            for r in led.view("balances", "entity_type IN ('GROUP', 'PROGRAM_WALLET', 'PARTICIPANT')")} == \
        {("PARTICIPANT", False, D(5)), ("GROUP", True, D(6)), ("PROGRAM_WALLET", True, D(89))}

    maintain(led, "2025-03-03T00:00:00Z")
    assert schedule("day") == [("2025-03-04", False, 1, D(4), D(4), utc(4, 2), utc(4, 2)),
                               (None, True, 1, D(6), D(6), None, None)]
    for granularity in ("day", "week", "month"):  # each granularity sums to what holders hold
        assert sum(r[3] for r in schedule(granularity)) == D(10)
    assert led.sql("SELECT SUM(available + held + deferred) FROM balances WHERE asset_symbol = 'GIFT' "
                   "AND entity_type IN ('PARTICIPANT', 'GROUP')") == [(D(10),)]
    balances_are_the_sum_of_postings(led)


def test_s12_a_period_that_ends_before_it_starts_is_refused(tmp_path):
    """semantics.md 12 (ledger_summary's period variant) and 13 (exit 2 for invalid input): a
    period [from, to) with to before from is the caller's mistake. It returned rows whose opening
    balance (before from) and closing balance (before to) broke the summary identity with zero
    flows between them. An empty period (from = to) is a period: no flows, opening = closing."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn", n=10), ev("e2", "u1", at(3, 1), "earn", n=5)])
    res = cli("sql", "SELECT * FROM ledger_summary_between('2025-03-04T00:00:00Z', '2025-03-02T00:00:00Z')",
              "--db", str(led.db))
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr
    said = " ".join(res.stderr.split())
    assert "to_ts 2025-03-02" in said and "before from_ts 2025-03-04" in said and "Traceback" not in said, said
    # before 3-02: 10; the empty period at 3-02 has no flow and no participant
    assert [(r["opening_balance"], r["total_issued"], r["closing_balance"], r["participant_count"]) for r in
            led.sql_dicts("SELECT * FROM ledger_summary_between('2025-03-02T00:00:00Z', '2025-03-02T00:00:00Z')")] == \
        [(D(10), 0, D(10), 0)]


def test_s12_perkflow_balances_lists_every_row_in_json_and_refuses_what_names_nothing(tmp_path):
    """README (`perkflow balances`) and semantics.md 13 (exit 2 for invalid input, 1 never for the
    user's). 60 participants with 1 PTS each, and u-tag who has only a tag:
    - `--json` is for programs: it printed the first 50 rows, silently; it prints all 60 now (the
      table shows 50 and says on stderr that there are more; `--limit` still cuts both);
    - `--external-id` of nobody and `--asset` of no asset printed an empty list (exit 0), as if
      they held nothing: exit 2 naming what is unknown; a participant without balances is [];
    - `--limit -1` was an internal error (exit 1, a trace): exit 2; a limit past SQL's BIGINT
      (also exit 1) shows every row."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"}),
                                    on("mark", {"type": "TAG", "tag": "seen"})]))
    led.run([ev(f"k{i}", f"u{i:02d}", at(1, 1), "earn") for i in range(60)] + [ev("t", "u-tag", at(1, 2), "mark")])
    rows = cli_json(led, "balances")
    assert [(r["external_id"], r["asset_symbol"], r["available"]) for r in rows] == \
        [(f"u{i:02d}", "PTS", "1") for i in range(60)]
    table = cli("balances", "--db", str(led.db))
    assert table.returncode == 0 and "u49" in table.stdout and "u50" not in table.stdout
    assert "--limit 0" in table.stderr, table.stderr
    assert len(cli_json(led, "balances", "--limit", "7")) == 7
    assert len(cli_json(led, "balances", "--limit", "99999999999999999999")) == 60  # was exit 1: past BIGINT
    assert cli_json(led, "balances", "--external-id", "u07", "--asset", "PTS")[0]["available"] == "1"
    assert cli_json(led, "balances", "--external-id", "u-tag") == []
    for args, says in ((("--external-id", "nobody"), "no participant 'nobody'"),
                       (("--asset", "NOPE"), "no asset 'NOPE' in this ledger (its assets: PTS)"),
                       (("--limit", "-1"), "--limit must be 0 (all rows) or more")):
        res = cli("balances", *args, "--json", "--db", str(led.db))
        assert (res.returncode, res.stdout) == (2, ""), (args, res.returncode, res.stdout, res.stderr)
        assert says in " ".join(res.stderr.split()) and "Traceback" not in res.stderr, res.stderr


def test_s13_an_ad_hoc_query_without_a_statement_is_the_users_mistake(tmp_path):
    """semantics.md 13 (exit 2 for invalid input, exit 1 only for internal errors): `perkflow sql`
    with an empty query, blanks or only a comment was an internal error (exit 1, "please report
    this trace": DuckDB gives no result for text without a statement). It is exit 2, saying so."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn")])
    for text in ("", "   ", "-- only a comment"):
        res = cli("sql", text, "--db", str(led.db))
        assert (res.returncode, res.stdout) == (2, ""), (text, res.returncode, res.stdout, res.stderr)
        assert "no statement" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert cli_json(led, "sql", "SELECT available FROM balances WHERE external_id = 'u1'") == [{"available": "1"}]


def test_s13_a_db_that_names_a_parquet_or_csv_file_is_refused_not_run_in_memory(tmp_path):
    """semantics.md 12 (the ledger is the DuckDB file `--db` names) and 13 (exit 2 for invalid
    configuration, nothing written). DuckDB opens an existing Parquet, CSV or JSON file as an
    in-memory database over it: `perkflow run --db events.parquet` (the arguments mixed up)
    printed its counts and exited 0, and the batch was gone with the process; `balances` and
    `verify` on it were internal errors (exit 1), `report` said a run would create the views.
    Every command now stops with exit 2 naming the file, which is left as it was."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn")])
    events = tmp_path / "events-1.parquet"
    export = tmp_path / "balances.csv"
    export.write_text("external_id,available\nu1,1\n", encoding="utf-8")
    for target in (events, export):
        before = target.read_bytes()
        for argv in (("run", "--programs", str(led.programs), "--events", str(events)), ("balances",), ("verify",),
                     ("report", "ledger_summary"), ("sql", "SELECT 1")):
            res = cli(*argv, "--db", str(target))
            said = "".join(res.stderr.split())
            assert res.returncode == 2 and res.stdout == "", (target.name, argv, res.returncode, res.stdout, res.stderr)
            assert f"{target}:notaDuckDBdatabase" in said and "Traceback" not in said, res.stderr
        assert target.read_bytes() == before
    assert led.balance("u1") == (D(1), D(0), D(0))


def _documented_columns() -> dict[str, set[str]]:
    """{table or view: the columns its section of docs/tables.md or docs/reports.md lists}: the
    rows of each `| column | meaning |` table under a heading or a line that names one table
    (`## \\`batches\\``, `` `programs`: ``), and the tier tables' one-table list."""
    import re

    from tests.helpers.io import ROOT
    found: dict[str, set[str]] = {}
    for doc in ("tables.md", "reports.md"):
        current = None
        for line in (ROOT / "docs" / doc).read_text(encoding="utf-8").splitlines():
            names = re.findall(r"`(\w+)(?:\([^`]*\))?`", line)
            if line.startswith("#"):
                current = names[0] if len(names) == 1 else None  # a heading naming several: no table
            elif line.startswith("`") and names:
                current = names[0]
            elif line.startswith("| `") and current is None:  # "| `tiers` | one row per | `id`, ... |"
                cells = [c.strip() for c in line.strip("|").split("|")]
                columns = re.sub(r"\([^()]*\)", "", cells[-1])  # not the names in its notes
                found.setdefault(names[0], set()).update(re.findall(r"`(\w+)`", columns))
            elif line.startswith("| ") and current and not line.startswith(("| column", "|---")):
                cell = line.split("|")[1]
                found.setdefault(current, set()).update(
                    c.strip().strip("`") for c in cell.split(",") if re.fullmatch(r"\s*`?[a-z_]+`?\s*", c))
    return found


def test_s12_the_docs_and_the_ledger_list_the_same_columns_both_ways(tmp_path):
    """semantics.md 12: "Stable, documented tables and views for ad-hoc SQL (the project's docs
    list every column)". Both ways, section by section: each column a table's or view's section
    lists exists in it, and each column it has is in its section (test_contract_audit checks only
    that a column's name appears somewhere in the docs). balances is listed in semantics.md 12
    itself; the three state views share one section."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn")])
    real: dict[str, set[str]] = {}
    for table, column in led.sql("SELECT table_name, column_name FROM information_schema.columns"):
        real.setdefault(table, set()).add(column)
    real["ledger_summary_between"] = set(led.sql_dicts("SELECT * FROM ledger_summary_between(NULL, NULL)")[0])
    docs = _documented_columns()
    real["balances"], docs["balances"] = set(real["balances"]), {
        "entity_type", "entity_id", "participant_id", "external_id", "asset_id", "asset_symbol", "available", "held",
        "deferred"}  # semantics.md 12
    shared = {"participant_state", "program_state", "group_state"}
    assert sorted(set(real) - set(docs) - shared) == []          # every table and view has its section
    assert sorted(set(docs) - set(real)) == []                   # every section is a table or view
    mismatched = {t: (sorted(docs[t] - real[t]), sorted(real[t] - docs[t])) for t in docs if docs[t] != real[t]}
    assert mismatched == {}                                      # (documented, not there), (there, undocumented)


def test_s13_a_chunk_size_that_is_no_count_of_rows_is_the_flags_mistake(tmp_path):
    """semantics.md 13 (exit 2 "with one clear message", exit 1 never for user input):
    `--chunk-rows -5` stopped the run blaming the event file ("cannot be read as Parquet:
    batch_size must be greater than zero"), and PERKFLOW_CHUNK_ROWS=abc was an internal error
    (exit 1). Both name the setting; nothing is written; a valid size runs."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    for flags, env, says in ((("--chunk-rows", "-5"), None, "--chunk-rows must be 1 or more, got -5"),
                             ((), {"PERKFLOW_CHUNK_ROWS": "abc"}, "PERKFLOW_CHUNK_ROWS='abc': must be a whole number of rows")):
        err = led.run([ev("e1", "u1", at(1, 1), "earn")], flags=flags, env=env, expect=2)["stderr"]
        assert says in " ".join(err.split()) and "Parquet" not in err and "Traceback" not in err, err
        assert not led.db.exists()
    led.run([ev("e1", "u1", at(1, 1), "earn"), ev("e2", "u2", at(1, 2), "earn")], flags=("--chunk-rows", "1"))
    assert (led.balance("u1"), led.balance("u2")) == ((D(1), D(0), D(0)), (D(1), D(0), D(0)))


def test_s12_json_output_is_json_even_for_a_double_that_is_no_number(tmp_path):
    """README (`--json` output) and semantics.md 12 (tables for ad-hoc SQL): `perkflow sql --json`
    printed bare NaN and Infinity for a double that is no number (`sqrt(-1.0)`), which is not
    JSON (a strict parser, jq, JSON.parse refuse the whole answer). They are the texts "NaN",
    "Infinity", "-Infinity", at any depth; finite doubles stay numbers, amounts decimal text."""
    led = Ledger(tmp_path, program([on("earn", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]))
    led.run([ev("e1", "u1", at(1, 1), "earn")])
    res = cli("sql", "SELECT sqrt(-1.0) AS a, 'inf'::DOUBLE AS b, ['-inf'::DOUBLE, 2.5] AS c, {'x': 'nan'::FLOAT} AS s, "
              "(SELECT available FROM balances WHERE external_id = 'u1') AS amount", "--json", "--db", str(led.db))
    assert res.returncode == 0, res.stderr

    def strict(constant: str):
        raise AssertionError(f"not JSON: {constant}")

    assert json.loads(res.stdout, parse_constant=strict) == [
        {"a": "NaN", "b": "Infinity", "c": ["-Infinity", 2.5], "s": {"x": "NaN"}, "amount": "1"}]
