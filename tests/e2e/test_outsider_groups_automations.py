"""An outsider's scenarios, round 7: groups and automations, black box. Written from README.md,
docs/ (writing-rules.md 5.10, decisions.md "Groups", "Automations", "SYSTEM events") and
semantics.md 3, 5, 7, 11 alone; expected results computed by hand in the comments; every step is
the real CLI (`perkflow run` / `maintain` in a subprocess) into a real DuckDB file, and
`perkflow verify` holds after each scenario. Earlier rounds (test_groups.py, test_group_lots.py,
test_automations.py, test_outsider_round3.py) pinned the rest.

Found and fixed here: founding members whose `participant_id` is no UUID or names one
participant twice crashed the run; a group id in capitals was `group_not_found`; a cron expression
lost the second and later wall times a DST gap skips; a birthday such as 2001-02-29 (no date) or in
non-ASCII digits fired; a one_time automation's named participant got an event dated before it
existed (and one named by id in capitals got none). Pinned: automations over a 620-event batch on
the running path fire as over kernel-sized batches.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import pytest

from tests.e2e.test_outsider_features import EVENT_COLS, OP_COLS, write_rows
from tests.helpers.io import cli, query, write_program

UTC = timezone.utc
PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 0}
BONUS = {"name": "Bonus", "key": "bonus", "condition": 'event.type == "bonus"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]}
JOIN = {"name": "Join", "key": "join", "condition": 'event.type == "join"',
        "actions": [{"type": "TAG", "tag": "member"}]}


def ok(*args: str) -> str:
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


class Ledger:
    """One program file and one ledger, driven through the CLI."""

    def __init__(self, tmp: Path, spec: dict):
        self.tmp, self.db, self.programs, self.batches = tmp, tmp / "ledger.duckdb", tmp / "programs", 0
        write_program(self.programs / "shop.yaml", spec)

    def run(self, events: list[tuple] = (), ops: list[tuple] = ()) -> dict:
        """events: (key, external id, RFC 3339, event_data); ops: (operation, key, external id,
        RFC 3339, params). Returns the run's --json report."""
        self.batches += 1
        args = ["run", "--programs", str(self.programs), "--db", str(self.db), "--json"]
        if events:
            rows = [{"program_id": "shop", "idempotency_key": k, "external_id": w, "event_timestamp": t,
                     "event_data": json.dumps(d)} for k, w, t, d in events]
            args += ["--events", str(write_rows(self.tmp / f"events-{self.batches}.parquet", rows, EVENT_COLS))]
        if ops:
            rows = [{"operation": o, "program_id": "shop", "idempotency_key": k, "external_id": w, "timestamp": t,
                     "params": json.dumps(p)} for o, k, w, t, p in ops]
            args += ["--operations", str(write_rows(self.tmp / f"ops-{self.batches}.parquet", rows, OP_COLS))]
        return json.loads(ok(*args).strip().splitlines()[-1])

    def maintain(self, as_of: str) -> None:
        ok("maintain", "--as-of", as_of, "--db", str(self.db))

    def verify(self) -> None:
        assert "ok:" in ok("verify", "--db", str(self.db))

    def firings(self, automation: str) -> list[tuple[str, str]]:
        """(external id or 'program', instant as UTC text) of an automation's SYSTEM events."""
        rows = query(self.db, "SELECT COALESCE(external_id, 'program'), event_timestamp FROM events "
                              "WHERE idempotency_key LIKE ? ORDER BY event_timestamp, external_id",
                     [f"system:automation:{automation}:%"])
        return [(w, t.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")) for w, t in rows]

    def available(self, who: str) -> D:
        rows = query(self.db, "SELECT available FROM balances WHERE external_id = ? AND asset_symbol = 'PTS'", [who])
        return D(rows[0][0]) if rows else D(0)


def shop(automations: list[dict], rules: list[dict] | None = None, **extra) -> dict:
    return {"program": {"key": "shop", "name": "Shop", "on_unknown_participant": "CREATE"}, "assets": [PTS],
            "rules": rules or [JOIN, BONUS], "automations": automations, **extra}


# ---------------------------------------------------------------------------------------------
# Groups: founding members (decisions.md "Groups")
# ---------------------------------------------------------------------------------------------

U1 = "6c5c66da-cf4a-54de-aace-e112bed6179d"  # engine.ids.participant_id("u1"), as Scrip names members
U0 = "cea3ae5e-f5f0-5779-93f2-19d7cde8413b"  # engine.ids.participant_id("u0")


@pytest.mark.parametrize("members, message", [
    # the same participant twice, its id once in capitals: "each participant once"
    ([{"participant_id": U1, "role": "ADMIN"}, {"participant_id": U1.upper()}], "is listed twice"),
    # a participant id that is no id (perkflow's ids are UUIDs)
    ([{"participant_id": "nope", "role": "ADMIN"}], "members[0].participant_id: Value error, 'nope' is not a participant id"),
])
def test_founding_members_that_cannot_be_written_are_refused_when_the_files_load(tmp_path, members, message):
    """decisions.md "Groups": founding members by `external_id` or Scrip's `participant_id`, "each
    participant once"; README: program-file errors name the file and field, exit 2, nothing
    written. Both files passed `perkflow validate` and made `perkflow run` stop with an internal
    error (exit 1: the database's key, then a failed cast to UUID) when the group was written."""
    write_program(tmp_path / "programs" / "shop.yaml",
                  shop([], groups=[{"key": "fam", "name": "Fam", "members": members}]))
    validate = cli("validate", "--programs", str(tmp_path / "programs"))
    assert validate.returncode == 2 and message in validate.stdout + validate.stderr, validate.stdout + validate.stderr
    rows = [{"program_id": "shop", "idempotency_key": "j1", "external_id": "u1",
             "event_timestamp": "2025-03-01T00:00:00Z", "event_data": '{"type": "join"}'}]
    run = cli("run", "--programs", str(tmp_path / "programs"), "--db", str(tmp_path / "ledger.duckdb"),
              "--events", str(write_rows(tmp_path / "events.parquet", rows, EVENT_COLS)))
    assert run.returncode == 2 and message in run.stdout + run.stderr, run.stdout + run.stderr
    assert not (tmp_path / "ledger.duckdb").exists() or query(tmp_path / "ledger.duckdb", "SELECT COUNT(*) FROM events") == [(0,)]


# ---------------------------------------------------------------------------------------------
# Automations: time zones and DST (decisions.md "Automations", "Time zones")
# ---------------------------------------------------------------------------------------------

def test_every_wall_time_a_spring_forward_skips_fires_once_past_the_gap(tmp_path):
    """decisions.md "Time zones": "A wall time skipped by a DST change fires at the instant it
    maps to (just after the gap)". New York skips 02:00-03:00 on 9 March 2025 (EST -5 -> EDT
    -4): "*/20 2 9 3 *" names 02:00, 02:20 and 02:40, all skipped; with zoneinfo's fold 0 they
    map to 03:00, 03:20 and 03:40 EDT = 07:00Z, 07:20Z, 07:40Z: three firings, one point each.
    perkflow fired only 07:00Z (the scan went on from 03:00 wall time and found 02:20 passed).
    In 2026 (DST began 8 March) 9 March is EDT: 06:00Z, 06:20Z, 06:40Z, no gap."""
    ledger = Ledger(tmp_path, shop([{"name": "Gap", "key": "gap", "event_name": "bonus", "scope": "participants",
                                     "payload": {"n": 1},
                                     "trigger": {"type": "cron", "cron_expression": "*/20 2 9 3 *",
                                                 "timezone": "America/New_York"}}]))
    ledger.run(events=[("j1", "u1", "2025-03-01T00:00:00Z", {"type": "join"})])
    ledger.maintain("2025-03-10T00:00:00Z")
    assert ledger.firings("gap") == [("u1", "2025-03-09T07:00Z"), ("u1", "2025-03-09T07:20Z"),
                                     ("u1", "2025-03-09T07:40Z")]
    ledger.maintain("2026-03-10T00:00:00Z")
    assert ledger.firings("gap")[3:] == [("u1", "2026-03-09T06:00Z"), ("u1", "2026-03-09T06:20Z"),
                                         ("u1", "2026-03-09T06:40Z")]
    assert ledger.available("u1") == D(6)
    ledger.verify()


def test_a_birthday_that_is_no_date_fires_nothing(tmp_path):
    """decisions.md "participant_state ATTRIBUTE_DATE": the attribute is `YYYY-MM-DD` or `MM-DD`,
    "29 February falls on 28 February in other years; text that is no such date fires nothing".
    2001 is no leap year, so "2001-02-29" is no date: nothing (perkflow read it as 29 February and
    paid it on 28 February 2026). "٠٤-١٥" is in Arabic-Indic digits, which no date or time text
    of a program takes (decisions.md "The rule language": ASCII digits only): nothing (perkflow
    read it as 04-15). Beside them, the dates that are: "2000-02-29" (a leap day) falls on
    28 February 2026, "0004-04-15" on 15 April 2025; at 00:00 UTC (no `time`, no zone); the
    maintenance window is the program's first event (1 March 2025) to 1 March 2026."""
    profile = {"name": "Profile", "key": "profile", "condition": 'event.type == "profile"',
               "actions": [{"type": "SET_ATTRIBUTE", "key": "birthday", "value": "event.b"}]}
    ledger = Ledger(tmp_path, shop([{"name": "Birthday", "key": "bd", "event_name": "bonus", "scope": "participants",
                                     "payload": {"n": 1},
                                     "trigger": {"type": "participant_state", "schedule_type": "ATTRIBUTE_DATE",
                                                 "schedule_config": {"attribute": "birthday"}}}],
                                   rules=[profile, BONUS]))
    dates = {"u1": "2001-02-29", "u2": "٠٤-١٥", "u3": "2000-02-29", "u4": "0004-04-15"}
    ledger.run(events=[(f"p-{w}", w, "2025-03-01T00:00:00Z", {"type": "profile", "b": b}) for w, b in dates.items()])
    ledger.maintain("2026-03-01T00:00:00Z")
    assert ledger.firings("bd") == [("u4", "2025-04-15T00:00Z"), ("u3", "2026-02-28T00:00Z")]
    ledger.verify()


# ---------------------------------------------------------------------------------------------
# Path independence: automations over state a large batch left (README "How it runs")
# ---------------------------------------------------------------------------------------------

def test_firings_over_a_large_batch_equal_those_over_small_batches(tmp_path):
    """semantics.md 1.4-1.6 and 11: 620 purchases in one batch (500 or more runnable events: the
    running-state path, README "How it runs") or in 7 batches under 500 (the kernel) leave the
    same counters, tags and enrolments, so maintenance fires the same events.

    u0..u9, purchase j (0..619) by u(j % 10) at 00:00 + j minutes on 1 March 2025: each buys 62
    times (1 PTS and `spent` + 1 each; 60 purchases make it `vip`), and is enrolled at minute i.
    Maintenance to 2 March 00:05: THRESHOLD spent >= 62 fires once each (+100); the daily cron
    for `vip` participants fires at 2 March 00:00 for all (+1,000), and at 1 March 00:00 (the
    program's first event, "a firing at exactly that instant counts") for u0, the one enrolled
    by then, judged late on the state the ledger holds (vip: decisions.md "Fired by maintenance,
    not by runs"); INTERVAL 12h from enrolment fires at 12:0i on 1 March for all and at 00:0i on
    2 March for u0..u5 (+10,000 each)."""
    rules = [
        {"name": "Buy", "key": "buy", "order": 1, "condition": 'event.type == "buy"',
         "actions": [{"type": "COUNTER", "key": "spent", "value": "1"},
                     {"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
        {"name": "Vip", "key": "vip", "order": 2,
         "condition": 'event.type == "buy" && get(participant.counters, "spent", 0.0) >= 60.0',
         "actions": [{"type": "TAG", "tag": "vip"}]},
        {"name": "Paid", "key": "paid", "order": 3, "condition": 'event.type == "paid"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]},
    ]

    def auto(key: str, n: int, trigger: dict, **extra) -> dict:
        return {"name": key, "key": key, "event_name": "paid", "scope": "participants", "payload": {"n": n},
                "trigger": trigger, **extra}

    automations = [
        auto("threshold", 100, {"type": "participant_state", "schedule_type": "THRESHOLD",
                                "schedule_config": {"counter": "spent", "operator": ">=", "threshold": 62}}),
        auto("daily", 1000, {"type": "cron", "cron_expression": "0 0 * * *"},
             participant_filter='"vip" in participant.tags'),
        auto("interval", 10000, {"type": "participant_state", "schedule_type": "INTERVAL",
                                 "schedule_config": {"interval": "12h"}}),
    ]
    buys = [(f"b{j}", f"u{j % 10}", f"2025-03-01T{j // 60:02d}:{j % 60:02d}:00Z", {"type": "buy"}) for j in range(620)]
    ledgers = {}
    for name, size in (("one", 620), ("seven", 90)):
        (tmp_path / name).mkdir()
        ledger = ledgers[name] = Ledger(tmp_path / name, shop(automations, rules=rules))
        reports = [ledger.run(events=buys[i:i + size]) for i in range(0, 620, size)]
        assert (reports[0]["running_rounds"] > 0) == (name == "one")  # the paths the scenario means
        ledger.maintain("2025-03-02T00:05:00Z")
        ledger.verify()
        expected = {f"u{i}": D(62 + 100 + 1000 * (2 if i == 0 else 1) + 10000 * (2 if i <= 5 else 1))
                    for i in range(10)}
        assert {w: ledger.available(w) for w in expected} == expected, name
        assert ledger.firings("interval")[-6:] == [(f"u{i}", f"2025-03-02T00:0{i}Z") for i in range(6)]
    entries = {name: query(ledger.db, "SELECT id, action_type, effective_at FROM journal_entries ORDER BY id")
               for name, ledger in ledgers.items()}
    assert entries["one"] == entries["seven"]
    assert all(ledgers["one"].firings(a) == ledgers["seven"].firings(a) for a in ("threshold", "daily", "interval"))


# ---------------------------------------------------------------------------------------------
# Automations: a one_time program automation's named participant
# ---------------------------------------------------------------------------------------------

def test_a_named_participant_created_after_the_firing_gets_no_event_however_late_maintenance_runs(tmp_path):
    """decisions.md "Automations", "Scope program": a one_time automation may name its participant
    (`participant_id`); "a named participant that does not exist at the firing makes no event".
    Firing at 13:00: `early` was created by its 13:00 event (it exists at the instant), `later`
    by its 14:00 one. Maintenance at 13:00 before the 14:00 row: one event, for `early` (+5). The
    same rows in one run, maintenance at 15:00: the same, as cutting differently changes nothing
    (semantics.md 1.5); perkflow gave `later` an event dated 13:00, an hour before it existed,
    and enrolled it at 13:00."""
    automations = [{"name": f"Gift {who}", "key": f"gift_{who}", "event_name": "bonus", "scope": "program",
                    "participant_id": who, "payload": {"n": 5},
                    "trigger": {"type": "one_time", "trigger_at": "2025-03-01T13:00:00Z"}} for who in ("early", "later")]
    # and u0 named by its participant id in capitals (a UUID in any case; perkflow made no event): +5
    automations.append(automations[0] | {"name": "Gift u0", "key": "gift_u0", "participant_id": U0.upper()})
    rows = [("j0", "u0", "2025-03-01T12:00:00Z", {"type": "join"}), ("j1", "early", "2025-03-01T13:00:00Z", {"type": "join"}),
            ("j2", "later", "2025-03-01T14:00:00Z", {"type": "join"})]
    (tmp_path / "stepwise").mkdir(), (tmp_path / "late").mkdir()
    stepwise, late = Ledger(tmp_path / "stepwise", shop(automations)), Ledger(tmp_path / "late", shop(automations))
    stepwise.run(events=rows[:2])
    stepwise.maintain("2025-03-01T13:00:00Z")
    stepwise.run(events=rows[2:])
    stepwise.maintain("2025-03-01T15:00:00Z")
    late.run(events=rows)
    late.maintain("2025-03-01T15:00:00Z")
    for ledger in (stepwise, late):
        assert ledger.firings("gift_early") == [("early", "2025-03-01T13:00Z")]
        assert ledger.firings("gift_later") == []
        assert ledger.firings("gift_u0") == [("u0", "2025-03-01T13:00Z")] and ledger.available("u0") == D(5)
        assert (ledger.available("early"), ledger.available("later")) == (D(5), D(0))
        assert query(ledger.db, "SELECT e.enrolled_at FROM enrollments e JOIN participants p ON p.id = e.participant_id "
                                "WHERE p.external_id = 'later'")[0][0].astimezone(UTC) == datetime(2025, 3, 1, 14, tzinfo=UTC)
        ledger.verify()


def test_a_group_named_by_its_id_in_capitals_is_that_group(tmp_path):
    """decisions.md "Groups": a group's id is the UUIDv5 of its key, and a GROUP target, a transfer
    recipient's `group_id` and the group operations name a group by key or id. A UUID is the same
    id in capitals (participants named by `participant_id` in capitals are found): the rule's
    CREDIT 5, the transfer of 2 from u1 (10 from its join) and `group_adjust` CREDIT 1 all reach
    `fam`: 8. perkflow failed all three `group_not_found`."""
    gid = "7249DB28-6D56-52B3-8841-A796653D0CAF"  # engine.ids.group_id("fam"), in capitals
    rules = [{"name": "Join", "key": "join", "condition": 'event.type == "join"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "10"}]},
             {"name": "Pool", "key": "pool", "condition": 'event.type == "pool"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5", "target": {"type": "GROUP", "id": "event.g"}}]}]
    ledger = Ledger(tmp_path, shop([], rules=rules, groups=[{"key": "fam", "name": "Fam",
                                                             "members": [{"external_id": "u1", "role": "ADMIN"}]}]))
    ledger.run(events=[("j1", "u1", "2025-03-01T00:00:00Z", {"type": "join"}),
                       ("p1", "u1", "2025-03-01T01:00:00Z", {"type": "pool", "g": gid})],
               ops=[("transfer", "t1", "u1", "2025-03-01T02:00:00Z",
                     {"asset": "PTS", "recipients": [{"group_id": gid, "amount": "2"}]}),
                    ("group_adjust", "g1", None, "2025-03-01T03:00:00Z",
                     {"group_id": gid, "type": "CREDIT", "asset": "PTS", "amount": "1"})])
    statuses = dict(query(ledger.db, "SELECT idempotency_key, status FROM events UNION ALL "
                                     "SELECT idempotency_key, status FROM operations"))
    assert statuses == {"j1": "COMPLETED", "p1": "COMPLETED", "t1": "COMPLETED", "g1": "COMPLETED"}
    assert query(ledger.db, "SELECT available FROM balances WHERE entity_type = 'GROUP'") == [(D(8),)]
    assert ledger.available("u1") == D(8)
    ledger.verify()


def test_a_static_group_target_written_as_its_id_in_capitals_loads(tmp_path):
    """The same id written in the program file itself (`target: {type: GROUP, id: <UUID in
    capitals>}`): the files were refused ("is not a group of this project", exit 2) though the
    run resolves that id (the test above). It loads and credits the group: 4."""
    gid = "7249DB28-6D56-52B3-8841-A796653D0CAF"  # engine.ids.group_id("fam"), in capitals
    rules = [{"name": "Pool", "key": "pool", "condition": 'event.type == "pool"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "4", "target": {"type": "GROUP", "id": gid}}]}]
    ledger = Ledger(tmp_path, shop([], rules=rules, groups=[{"key": "fam", "name": "Fam",
                                                             "members": [{"external_id": "u1", "role": "ADMIN"}]}]))
    ledger.run(events=[("p1", "u1", "2025-03-01T01:00:00Z", {"type": "pool"})])
    assert query(ledger.db, "SELECT available FROM balances WHERE entity_type = 'GROUP'") == [(D(4),)]
    ledger.verify()
