"""Automations (semantics.md 11; docs/decisions.md, "Automations"): SYSTEM events fired by
`perkflow maintain --as-of` through the rules, with balances computed by hand.

Each scenario: a program whose rules react to the automation's `event_name`, a batch of events
that enrols participants, then one or more maintenance runs.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest

from engine.catalog import load_catalog
from engine.cli import main
from engine.errors import CatalogError
from engine.ids import participant_id
from engine.maintain import maintain
from tests.helpers.io import program_spec, query, write_program
from tests.helpers.scenario import Scenario, asset, at, ev, on, op
from tests.reliability.harness import diff, ledger_view

JOIN = on("join", {"type": "TAG", "tag": "member"})
BONUS = on("bonus", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})


def monthly(**extra) -> dict:
    return {"name": "Monthly bonus", "event_name": "bonus", "scope": "participants",
            "trigger": {"type": "cron", "cron_expression": "0 0 1 * *"}, "payload": {"n": 3}, **extra}


def project(tmp, automations: list[dict], rules: list[dict] | None = None, assets: list[dict] | None = None,
            **program) -> Scenario:
    s = Scenario(tmp, "shop", [], [asset("PTS")])
    spec = program_spec("shop", rules or [JOIN, BONUS], assets=assets or [asset("PTS")], **program)
    write_program(s.programs / "shop.yaml", spec | {"automations": automations})
    return s


def run_maintain(s: Scenario, as_of: str):
    report = maintain(datetime.fromisoformat(as_of).replace(tzinfo=timezone.utc), s.db)
    s.check()
    return report


def system_events(s: Scenario) -> list[tuple[str, str, str, dict]]:
    """(idempotency key, external id, status, event_data) of the SYSTEM events, in stream order."""
    rows = query(s.db, "SELECT idempotency_key, external_id, status, event_data FROM events "
                       "WHERE idempotency_key LIKE 'system:%' ORDER BY event_timestamp, arrival_seq")
    return [(k, e, st, json.loads(d)) for k, e, st, d in rows]


def key(auto: str, who: str, instant: str) -> str:
    return f"system:automation:{auto}:{participant_id(who) if who != 'program' else 'program'}:{instant}"


def test_a_monthly_cron_credits_every_enrolled_participant_at_each_firing(tmp_path):
    s = project(tmp_path, [monthly()])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-15 10:00"), "join"))
    report = run_maintain(s, "2025-05-15")
    # firings on 1 April and 1 May (1 March 00:00 is before the program's first event): 3 + 3 each
    assert s.balance("u1", "PTS") == s.balance("u2", "PTS") == (D(6), D(0), D(0))
    assert report.fired == 4 and report.batch_id == 2
    events = system_events(s)
    assert sorted((k, e, st) for k, e, st, _ in events) == sorted(
        (key("monthly_bonus", w, f"2025-0{m}-01T00:00:00Z"), w, "COMPLETED") for w in ("u1", "u2") for m in (4, 5))
    assert all(d == {"type": "bonus", "n": 3} for *_, d in events)
    when = query(s.db, "SELECT DISTINCT event_timestamp FROM events WHERE idempotency_key LIKE 'system:%' ORDER BY 1")
    assert [w for (w,) in when] == [datetime(2025, 4, 1, tzinfo=timezone.utc), datetime(2025, 5, 1, tzinfo=timezone.utc)]
    # the entries carry the firing instant
    assert s.entries(key("monthly_bonus", "u1", "2025-04-01T00:00:00Z")) == [("CREDIT", D(3), None)]


def test_a_second_maintain_of_the_same_instant_writes_nothing(tmp_path):
    s = project(tmp_path, [monthly()])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    run_maintain(s, "2025-05-15")
    before = query(s.db, "SELECT COUNT(*) FROM batches")[0][0], query(s.db, "SELECT COUNT(*) FROM events")[0][0]
    again = run_maintain(s, "2025-05-15")
    earlier = run_maintain(s, "2025-04-20")
    assert again.batch_id is None and earlier.batch_id is None and again.fired == 0
    assert (query(s.db, "SELECT COUNT(*) FROM batches")[0][0], query(s.db, "SELECT COUNT(*) FROM events")[0][0]) == before
    assert s.balance("u1", "PTS") == (D(6), D(0), D(0))


def test_two_maintains_give_the_ledger_of_one(tmp_path):
    ledgers = []
    for name, cuts in (("one", ["2025-06-10"]), ("three", ["2025-04-01", "2025-04-20", "2025-06-10"])):
        d = tmp_path / name
        d.mkdir()
        s = project(d, [monthly()], rules=[JOIN, BONUS, on("bonus", {"type": "COUNTER", "key": "bonuses", "value": "1"},
                                                          order=100) | {"key": "count", "name": "count"}])
        s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-15 10:00"), "join"))
        for cut in cuts:
            run_maintain(s, cut)
        ledgers.append(ledger_view(s.db))
        assert s.balance("u1", "PTS") == (D(9), D(0), D(0))  # April, May, June
        assert s.state("u2")[("COUNTER", "bonuses")] == D(3)
    assert diff(*ledgers) == ""


def test_one_time_fires_once_at_trigger_at_for_participants_or_one_named_participant(tmp_path):
    autos = [{"name": "Spring gift", "event_name": "bonus", "scope": "participants", "payload": {"n": 5},
              "trigger": {"type": "one_time", "trigger_at": "2025-04-10T12:00:00Z"}},
             {"name": "Apology", "event_name": "bonus", "scope": "program", "participant_id": "u2",
              "payload": {"n": 7}, "trigger": {"type": "one_time", "trigger_at": "2025-04-11T00:00:00Z"}}]
    s = project(tmp_path, autos)
    # u3 enrols after the spring gift: it gets nothing
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-02 01:00"), "join"),
          ev("j3", "u3", "2025-04-10T12:00:01Z", "join"))
    run_maintain(s, "2025-04-10T23:00:00")  # the spring gift only
    assert [s.balance(w, "PTS")[0] for w in ("u1", "u2", "u3")] == [D(5), D(5), D(0)]
    run_maintain(s, "2025-12-31")
    assert [s.balance(w, "PTS")[0] for w in ("u1", "u2", "u3")] == [D(5), D(12), D(0)]
    assert [k for k, *_ in system_events(s)][-1] == key("apology", "program", "2025-04-11T00:00:00Z")


def test_immediate_fires_once_at_the_first_maintenance_as_of(tmp_path):
    autos = [{"name": "Welcome", "event_name": "bonus", "scope": "participants", "payload": {"n": 2},
              "trigger": {"type": "immediate"}}]
    s = project(tmp_path, autos)
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-02 01:00"), "join"))
    run_maintain(s, "2025-03-05")
    s.run(ev("j3", "u3", at("2025-03-06 01:00"), "join"))
    run_maintain(s, "2025-04-01")
    assert [s.balance(w, "PTS")[0] for w in ("u1", "u2", "u3")] == [D(2), D(2), D(0)]
    assert {k for k, *_ in system_events(s)} == {key("welcome", w, "2025-03-05T00:00:00Z") for w in ("u1", "u2")}


def test_a_filter_and_a_guard_choose_participants_with_the_state_at_each_firing(tmp_path):
    # filter: members tagged vip; guard: fewer than 2 bonuses so far (the counter the bonus rule
    # increments), so the third month fires for nobody: the guard sees what earlier firings did
    rules = [JOIN, on("vip", {"type": "TAG", "tag": "vip"}), BONUS,
             on("bonus", {"type": "COUNTER", "key": "bonuses", "value": "1"}, order=100) | {"key": "c", "name": "c"}]
    s = project(tmp_path, [monthly(participant_filter='"vip" in participant.tags',
                                   guard_condition='get(participant.counters, "bonuses", 0.0) < 2.0')], rules=rules)
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-01 02:00"), "join"),
          ev("v1", "u1", at("2025-03-01 03:00"), "vip"))
    run_maintain(s, "2025-06-15")  # April, May, June
    assert s.balance("u1", "PTS") == (D(6), D(0), D(0))
    assert s.balance("u2", "PTS") == (D(0), D(0), D(0))
    assert [k for k, *_ in system_events(s)] == [key("monthly_bonus", "u1", f"2025-0{m}-01T00:00:00Z") for m in (4, 5)]


def test_suspended_participants_are_left_out(tmp_path):
    s = project(tmp_path, [monthly()])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-01 02:00"), "join"),
          op("set_participant_status", "s2", "u2", at("2025-03-02 00:00"), status="SUSPENDED"))
    run_maintain(s, "2025-04-15")
    assert s.balance("u1", "PTS")[0] == D(3) and s.balance("u2", "PTS")[0] == D(0)


def test_a_late_firing_reaches_who_was_active_at_its_instant(tmp_path):
    # maintenance runs the 1 April and 1 May firings only on 15 May, after the statuses changed:
    # u1 SUSPENDED on 10 April (ACTIVE on 1 April: reached then, not on 1 May), u2 SUSPENDED on
    # 2 March and ACTIVE again on 20 April (reached on 1 May only), u3 suspended 2 March for
    # good. Each firing's event is processed now, against the state as it is: u1's of 1 April
    # fails (participant_inactive), as a late event of a suspended participant does.
    for auto in (monthly(), monthly(name="Monthly days", trigger={
            "type": "participant_state", "schedule_type": "CRON", "schedule_config": {"cron_expression": "0 0 1 * *"}})):
        d = tmp_path / auto["name"].replace(" ", "_")
        d.mkdir()
        s = project(d, [auto])
        s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-01 02:00"), "join"),
              ev("j3", "u3", at("2025-03-01 03:00"), "join"),
              op("set_participant_status", "s2", "u2", at("2025-03-02 00:00"), status="SUSPENDED"),
              op("set_participant_status", "s3", "u3", at("2025-03-02 00:00"), status="SUSPENDED"),
              op("set_participant_status", "s1", "u1", at("2025-04-10 00:00"), status="SUSPENDED"),
              op("upsert_participant", "s4", "u2", at("2025-04-20 00:00"), status="ACTIVE"))
        run_maintain(s, "2025-05-15")
        name = auto["name"].lower().replace(" ", "_")
        got = query(s.db, "SELECT idempotency_key, external_id, status, error_code FROM events "
                          "WHERE idempotency_key LIKE 'system:%'")
        assert sorted(got) == sorted([
            (key(name, "u1", "2025-04-01T00:00:00Z"), "u1", "FAILED", "participant_inactive"),
            (key(name, "u2", "2025-05-01T00:00:00Z"), "u2", "COMPLETED", None)])
        assert [s.balance(u, "PTS")[0] for u in ("u1", "u2", "u3")] == [D(0), D(3), D(0)]


def test_a_paused_automation_does_not_fire_and_does_not_make_up_later(tmp_path):
    s = project(tmp_path, [monthly(status="paused")])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    assert run_maintain(s, "2025-05-15").batch_id is None
    assert s.balance("u1", "PTS")[0] == D(0)
    # resumed: only the firings after the last planning (1 June), not April and May
    spec = program_spec("shop", [JOIN, BONUS], assets=[asset("PTS")]) | {"automations": [monthly()]}
    write_program(s.programs / "shop.yaml", spec)
    s.run(ev("j9", "u9", at("2025-05-20 00:00"), "join"))
    run_maintain(s, "2025-06-15")
    assert s.balance("u1", "PTS")[0] == D(3) and s.balance("u9", "PTS")[0] == D(3)


def test_an_automation_added_later_starts_where_the_ledger_was(tmp_path):
    s = project(tmp_path, [])
    s.run(ev("j1", "u1", at("2025-01-05 01:00"), "join"), ev("j2", "u1", at("2025-03-20 01:00"), "buy"))
    spec = program_spec("shop", [JOIN, BONUS], assets=[asset("PTS")]) | {"automations": [monthly()]}
    write_program(s.programs / "shop.yaml", spec)
    s.run(ev("j3", "u2", at("2025-03-25 01:00"), "join"))  # introduced at 20 March 01:00, the clock before this batch
    run_maintain(s, "2025-05-15")
    # April and May only: not February and March, before it was introduced
    assert s.balance("u1", "PTS")[0] == D(6) and s.balance("u2", "PTS")[0] == D(6)


def test_cron_reads_its_fields_in_the_trigger_time_zone(tmp_path):
    # Mondays 09:00 in Chicago: 15:00Z in CST, 14:00Z from 9 March 2025 (CDT)
    auto = monthly(trigger={"type": "cron", "cron_expression": "0 9 * * 1", "timezone": "America/Chicago"},
                   name="Weekly", event_name="bonus", payload={"n": 1})
    s = project(tmp_path, [auto])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    run_maintain(s, "2025-03-12")
    assert [k for k, *_ in system_events(s)] == [key("weekly", "u1", "2025-03-03T15:00:00Z"),
                                                 key("weekly", "u1", "2025-03-10T14:00:00Z")]
    assert s.balance("u1", "PTS")[0] == D(2)


def test_due_lot_expiries_come_before_a_firing_and_the_rest_after(tmp_path):
    lot = asset("PTS", mode="LOT")
    rules = [on("join", {"type": "CREDIT", "asset": "PTS", "amount": "10", "expires_at": "720h"}),
             on("bonus", {"type": "DEBIT", "asset": "PTS", "amount": "event.n", "allow_negative": True})]
    s = project(tmp_path, [monthly(payload={"n": 4})], rules=rules, assets=[lot])
    # u1's lot (1 March) expires on 31 March, before the April firing: the firing's debit
    # overdraws 4 twice; u2's lot (20 March) expires on 19 April, after the April firing
    # debited 4 of it, so 6 expire, and May overdraws 4
    s.run(ev("j1", "u1", at("2025-03-01 00:30"), "join"), ev("j2", "u2", at("2025-03-20 00:00"), "join"))
    run_maintain(s, "2025-05-15")
    assert s.balance("u1", "PTS")[0] == D(-8)
    assert s.balance("u2", "PTS")[0] == D(-4)
    expired = query(s.db, "SELECT p.external_id, j.effective_at, -SUM(po.amount) FROM journal_entries j "
                          "JOIN postings po ON po.journal_entry_id = j.id AND po.entity_type = 'PARTICIPANT' "
                          "JOIN participants p ON p.id = po.entity_id WHERE j.action_type = 'EXPIRATION' "
                          "GROUP BY ALL ORDER BY 1")
    assert [(e, w.date().isoformat(), D(a)) for e, w, a in expired] == [("u1", "2025-03-31", D(10)),
                                                                         ("u2", "2025-04-19", D(6))]


def test_birthdays_fire_yearly_on_the_date_attribute_in_the_trigger_time_zone(tmp_path):
    # 09:00 New York: 13:00Z in EDT (April), 14:00Z in EST (February). u2 was born on 29 February:
    # 28 February in 2026; u3's attribute is not a date; u4 has none.
    auto = {"name": "Birthday", "event_name": "bonus", "scope": "participants", "payload": {"n": 10},
            "trigger": {"type": "participant_state", "schedule_type": "ATTRIBUTE_DATE", "timezone": "America/New_York",
                        "schedule_config": {"attribute": "birthday", "time": "09:00"}}}
    profile = on("profile", {"type": "SET_ATTRIBUTE", "key": "birthday", "value": "event.birthday"})
    s = project(tmp_path, [auto], rules=[JOIN, profile, BONUS])
    s.run(*[ev(f"p{i}", w, at("2025-03-01 01:00"), "profile", birthday=b)
            for i, (w, b) in enumerate([("u1", "1990-04-15"), ("u2", "2000-02-29"), ("u3", "soon")])],
          ev("j4", "u4", at("2025-03-01 01:00"), "join"))
    run_maintain(s, "2026-01-01")
    run_maintain(s, "2026-04-20")
    assert [s.balance(w, "PTS")[0] for w in ("u1", "u2", "u3", "u4")] == [D(20), D(10), D(0), D(0)]
    assert sorted(k for k, *_ in system_events(s)) == sorted([
        key("birthday", "u1", "2025-04-15T13:00:00Z"), key("birthday", "u1", "2026-04-15T13:00:00Z"),
        key("birthday", "u2", "2026-02-28T14:00:00Z")])


def test_an_interval_fires_every_period_from_each_participants_enrolment(tmp_path):
    # every 240h (10 days) from enrolment: u1 (1 March 01:00) on 11, 21, 31 March; u2 (5 March)
    # on 15 and 25 March; two maintenance runs give what one would
    auto = {"name": "Every ten days", "event_name": "bonus", "scope": "participants", "payload": {"n": 4},
            "trigger": {"type": "participant_state", "schedule_type": "INTERVAL",
                        "schedule_config": {"interval": "240h"}}}
    s = project(tmp_path, [auto])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-05 00:00"), "join"))
    run_maintain(s, "2025-03-20")
    run_maintain(s, "2025-04-01")
    assert s.balance("u1", "PTS")[0] == D(12) and s.balance("u2", "PTS")[0] == D(8)
    assert sorted(k for k, *_ in system_events(s)) == sorted(
        [key("every_ten_days", "u1", f"2025-03-{d}T01:00:00Z") for d in (11, 21, 31)]
        + [key("every_ten_days", "u2", f"2025-03-{d}T00:00:00Z") for d in (15, 25)])


def test_a_per_participant_cron_fires_from_each_enrolment_in_the_trigger_time_zone(tmp_path):
    # Mondays 09:00 New York: 3 March is still EST (14:00Z); DST starts 9 March, so 10 and 17
    # March are EDT (13:00Z). u1 enrols Saturday 1 March, u2 Tuesday 11 March: u1 gets all three
    # Mondays (2 points each), u2 only the 17th. Two maintenance runs give what one would.
    auto = {"name": "Monday", "event_name": "bonus", "scope": "participants", "payload": {"n": 2},
            "trigger": {"type": "participant_state", "schedule_type": "CRON", "timezone": "America/New_York",
                        "schedule_config": {"cron_expression": "0 9 * * 1"}}}
    s = project(tmp_path, [auto])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-11 00:00"), "join"))
    run_maintain(s, "2025-03-12")
    run_maintain(s, "2025-03-20")
    assert s.balance("u1", "PTS")[0] == D(6) and s.balance("u2", "PTS")[0] == D(2)
    assert sorted(k for k, *_ in system_events(s)) == sorted(
        [key("monday", "u1", t) for t in ("2025-03-03T14:00:00Z", "2025-03-10T13:00:00Z", "2025-03-17T13:00:00Z")]
        + [key("monday", "u2", "2025-03-17T13:00:00Z")])
    # the same expression as a `cron` trigger with scope participants fires the same (decisions.md)
    twin = {k: v for k, v in auto.items() if k != "trigger"} | {
        "trigger": {"type": "cron", "cron_expression": "0 9 * * 1", "timezone": "America/New_York"}}
    t = project(tmp_path / "twin", [twin])
    t.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-11 00:00"), "join"))
    run_maintain(t, "2025-03-20")
    assert sorted(k for k, *_ in system_events(t)) == sorted(k for k, *_ in system_events(s))


SPEND = on("spend", {"type": "COUNTER", "key": "spent", "value": "event.amount"})


def threshold(counter: str = "spent", operator: str = ">=", value=500, **extra) -> dict:
    return {"name": "Big spender", "event_name": "bonus", "scope": "participants", "payload": {"n": 50},
            "trigger": {"type": "participant_state", "schedule_type": "THRESHOLD",
                        "schedule_config": {"counter": counter, "operator": operator, "threshold": value}}, **extra}


def test_a_threshold_fires_once_per_participant_at_the_maintenance_that_first_sees_it_crossed(tmp_path):
    s = project(tmp_path, [threshold()], rules=[JOIN, SPEND, BONUS])
    # u1: 300 + 250 = 550 by 5 March; u2: 400; u3 never spends (its counter counts as 0)
    s.run(ev("s1", "u1", at("2025-03-01 01:00"), "spend", amount=300), ev("s2", "u2", at("2025-03-02 00:00"), "spend", amount=400),
          ev("s3", "u1", at("2025-03-05 00:00"), "spend", amount=250), ev("j3", "u3", at("2025-03-05 00:00"), "join"))
    run_maintain(s, "2025-03-10")
    assert sorted(k for k, *_ in system_events(s)) == [key("big_spender", "u1", "2025-03-10T00:00:00Z")]
    # u2 crosses (400 + 200 = 600); u1 dips to 450 and crosses again (650): no second firing
    s.run(ev("s4", "u2", at("2025-03-12 00:00"), "spend", amount=200), ev("s5", "u1", at("2025-03-12 00:00"), "spend", amount=-100),
          ev("s6", "u1", at("2025-03-13 00:00"), "spend", amount=200))
    run_maintain(s, "2025-03-15")
    batches = query(s.db, "SELECT COUNT(*) FROM batches")[0][0]
    run_maintain(s, "2025-03-15")  # the same as-of again: nothing
    run_maintain(s, "2025-03-20")  # later: everyone who passes has fired
    assert sorted(k for k, *_ in system_events(s)) == sorted([key("big_spender", "u1", "2025-03-10T00:00:00Z"),
                                                              key("big_spender", "u2", "2025-03-15T00:00:00Z")])
    assert [s.balance(w, "PTS")[0] for w in ("u1", "u2", "u3")] == [D(50), D(50), D(0)]
    assert query(s.db, "SELECT COUNT(*) FROM batches")[0][0] == batches  # the last two wrote nothing


def test_a_threshold_on_a_counter_that_resets_fires_again_in_each_new_period(tmp_path):
    # `month` resets 240h after its creation: u1's (1 March 01:00) and u2's (1 March 02:00) reset
    # on 11 March. Both pass 500 by 5 March and fire then. In u1's second period it spends 700
    # (12 March): a new firing; u2's counter is 0 after the reset: nothing, until set_counter.
    monthly_spend = on("spend", {"type": "COUNTER", "key": "month", "value": "event.amount", "reset_after": "240h"})
    s = project(tmp_path, [threshold("month", ">", 499.5)], rules=[monthly_spend, BONUS])
    s.run(ev("s1", "u1", at("2025-03-01 01:00"), "spend", amount=600), ev("s2", "u2", at("2025-03-01 02:00"), "spend", amount=500))
    run_maintain(s, "2025-03-05")
    run_maintain(s, "2025-03-08")  # same period: nothing more
    s.run(ev("s3", "u1", at("2025-03-12 00:00"), "spend", amount=700))
    run_maintain(s, "2025-03-13")
    # an explicit set_counter restarts u2's counter (a new period) above the threshold: again
    s.run(op("set_counter", "o1", "u2", at("2025-03-14 00:00"), key="month", value="900"))
    run_maintain(s, "2025-03-15")
    assert sorted(k for k, *_ in system_events(s)) == sorted([
        key("big_spender", "u1", "2025-03-05T00:00:00Z"), key("big_spender", "u2", "2025-03-05T00:00:00Z"),
        key("big_spender", "u1", "2025-03-13T00:00:00Z"), key("big_spender", "u2", "2025-03-15T00:00:00Z")])
    assert [s.balance(w, "PTS")[0] for w in ("u1", "u2")] == [D(100), D(100)]


def test_a_threshold_below_a_value_and_its_filter_are_judged_at_the_firing(tmp_path):
    # `< 1` holds for a counter never written (0): u2 and u3 have none; the filter keeps only
    # members (u1 spent, so fails the test; u3 has no tag). One firing: u2.
    s = project(tmp_path, [threshold("spent", "<", 1, participant_filter='"member" in participant.tags')],
                rules=[JOIN, SPEND, BONUS])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("s1", "u1", at("2025-03-01 02:00"), "spend", amount=5),
          ev("j2", "u2", at("2025-03-01 03:00"), "join"), ev("s3", "u3", at("2025-03-01 04:00"), "spend", amount=0))
    run_maintain(s, "2025-03-02")
    assert [k for k, *_ in system_events(s)] == [key("big_spender", "u2", "2025-03-02T00:00:00Z")]


def test_threshold_firings_do_not_depend_on_how_the_stream_is_cut(tmp_path):
    # maintenance at 3 and 7 March, each after the events before it were loaded (one batch, or
    # one per event): u2 (600 on 1 March) fires on the 3rd, u1 (200 + 200 + 200 by the 4th) on
    # the 7th; u2 dips to 300 and comes back to 600 on the 6th: nothing more
    stream = [ev(f"s{i}", w, at(f"2025-03-0{d} 00:00"), "spend", amount=a)
              for i, (w, d, a) in enumerate([("u1", 1, 200), ("u2", 1, 600), ("u1", 2, 200), ("u1", 4, 200),
                                              ("u2", 4, -300), ("u2", 6, 300)])]
    ledgers = []
    for name, cut in (("whole", lambda part: [part]), ("single", lambda part: [[e] for e in part])):
        s = project(tmp_path / name, [threshold()], rules=[SPEND, BONUS])
        for part, as_of in ((stream[:3], "2025-03-03"), (stream[3:], "2025-03-07")):
            for batch in cut(part):
                s.run(*batch)
            run_maintain(s, as_of)
        ledgers.append((sorted(k for k, *_ in system_events(s)), s.balance("u1", "PTS"), s.balance("u2", "PTS")))
    assert ledgers[0] == ledgers[1] == (sorted([key("big_spender", "u2", "2025-03-03T00:00:00Z"),
                                                key("big_spender", "u1", "2025-03-07T00:00:00Z")]),
                                        (D(50), D(0), D(0)), (D(50), D(0), D(0)))


# ---- scope program without participant_id: one program event per firing (docs/decisions.md) ----

WEEKLY = {"name": "Weekly points", "event_name": "weekly", "scope": "program",
          "trigger": {"type": "cron", "cron_expression": "0 0 * * 1"}}  # Mondays 00:00 UTC
ANNOUNCE = on("weekly", {"type": "BROADCAST", "event_name": "bonus", "payload": {"n": 1}})


def program_events(s: Scenario) -> list[tuple[str, str | None, str, str | None]]:
    """(key, participant id, status, error code) of the scope program firings, in stream order."""
    return query(s.db, "SELECT idempotency_key, participant_id::VARCHAR, status, error_code FROM events "
                       "WHERE idempotency_key LIKE 'system:automation:%:program:%' ORDER BY event_timestamp")


def test_a_weekly_program_cron_broadcasts_a_point_to_every_enrolled_participant(tmp_path):
    s = project(tmp_path, [WEEKLY], rules=[JOIN, BONUS, ANNOUNCE])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-01 02:00"), "join"))
    report = run_maintain(s, "2025-03-20")
    # Mondays 3, 10 and 17 March: one program event each, which broadcasts `bonus` (n = 1) to u1 and u2
    assert s.balance("u1", "PTS") == s.balance("u2", "PTS") == (D(3), D(0), D(0))
    mondays = [f"2025-03-{d:02d}T00:00:00Z" for d in (3, 10, 17)]
    assert program_events(s) == [(key("weekly_points", "program", m), None, "COMPLETED", None) for m in mondays]
    assert report.fired == 3 and report.system_events == 6
    # the program event is stored with no participant, evaluated and recorded like any event
    rows = query(s.db, "SELECT e.external_id, e.recipient_id, r.outcome FROM events e JOIN rule_evaluations r "
                       "ON r.event_id = e.id WHERE e.idempotency_key = ?", [key("weekly_points", "program", mondays[0])])
    assert rows == [(None, None, "MATCHED")]
    broadcast = query(s.db, "SELECT COUNT(*), COUNT(DISTINCT participant_id) FROM events WHERE idempotency_key "
                            "LIKE 'system:broadcast:%' AND status = 'COMPLETED'")
    assert broadcast == [(6, 2)]
    # maintenance again over the same instants writes nothing
    before = ledger_view(s.db)
    again = run_maintain(s, "2025-03-20")
    assert again.batch_id is None and again.fired == 0 and diff(before, ledger_view(s.db)) == ""


def test_program_events_give_the_same_ledger_from_one_maintain_or_three(tmp_path):
    ledgers = []
    for name, cuts in (("one", ["2025-03-31"]), ("three", ["2025-03-05", "2025-03-17", "2025-03-31"])):
        d = tmp_path / name
        d.mkdir()
        s = project(d, [WEEKLY], rules=[JOIN, BONUS, ANNOUNCE])
        s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"), ev("j2", "u2", at("2025-03-01 02:00"), "join"))
        for cut in cuts:
            run_maintain(s, cut)
        assert s.balance("u1", "PTS") == (D(5), D(0), D(0))  # Mondays 3, 10, 17, 24 and 31 March
        ledgers.append(ledger_view(s.db))
    assert diff(*ledgers) == ""


def test_a_program_event_reads_an_empty_participant_and_credits_the_program_wallet(tmp_path):
    wallet = asset("WP", policy="PREFUNDED")
    rules = [JOIN, BONUS,
             # the empty participant: no tags, no id (has() is false), no counters
             on("weekly", {"type": "CREDIT", "asset": "WP", "amount": "5", "target": {"type": "PROGRAM"}},
                {"type": "COUNTER", "key": "weeks", "value": "1", "target": {"type": "PROGRAM"}}) | {
                 "condition": 'event.type == "weekly" && size(participant.tags) == 0 && !has(participant.id) '
                              '&& get(participant.counters, "visits", 0.0) == 0.0'}]
    s = project(tmp_path, [WEEKLY], rules=rules, assets=[asset("PTS"), wallet])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    run_maintain(s, "2025-03-12")
    assert [st for _, _, st, _ in program_events(s)] == ["COMPLETED", "COMPLETED"]
    assert s.wallet("WP") == D(10)
    assert query(s.db, "SELECT number_value FROM program_state WHERE key = 'weeks'") == [(D(2),)]


def test_an_action_for_the_program_events_participant_fails_the_event_atomically(tmp_path):
    wallet = asset("WP", policy="PREFUNDED")
    # the rule credits the program wallet, then (no target) the event's participant, which it has not
    rules = [JOIN, BONUS, on("weekly", {"type": "CREDIT", "asset": "WP", "amount": "5", "target": {"type": "PROGRAM"}},
                             {"type": "CREDIT", "asset": "PTS", "amount": "2"})]
    s = project(tmp_path, [WEEKLY, {"name": "Gift day", "event_name": "weekly", "scope": "program",
                                    "trigger": {"type": "one_time", "trigger_at": "2025-03-05T12:00:00Z"}}],
                rules=rules, assets=[asset("PTS"), wallet])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    report = run_maintain(s, "2025-03-12")
    got = program_events(s)
    assert [(k, p, st, c) for k, p, st, c in got] == [
        (key("weekly_points", "program", "2025-03-03T00:00:00Z"), None, "FAILED", "no_participant"),
        (key("gift_day", "program", "2025-03-05T12:00:00Z"), None, "FAILED", "no_participant"),
        (key("weekly_points", "program", "2025-03-10T00:00:00Z"), None, "FAILED", "no_participant")]
    message = query(s.db, "SELECT error_message FROM events WHERE idempotency_key = ?", [got[0][0]])[0][0]
    assert "action 1" in message and "has none" in message
    # nothing of the failed events stays: not the wallet credit before the failing action
    assert s.wallet("WP") == D(0) and s.balance("u1", "PTS") == (D(0), D(0), D(0))
    assert query(s.db, "SELECT COUNT(*) FROM journal_entries WHERE event_id IN (SELECT id FROM events "
                       "WHERE idempotency_key LIKE 'system:%')") == [(0,)]
    assert report.fired == 3 and report.system_event_entries == 0
    # the CLI reads the ledger with its participant-less events
    db = str(s.db)
    assert main(["verify", "--db", db]) == 0
    assert main(["balances", "--db", db, "--json"]) == 0
    for name in ("ledger_summary", "balances", "program_activity", "participant_statement", "expiration_schedule",
                 "transfers", "reward_status"):
        assert main(["report", name, "--db", db, "--json"]) == 0, name
    assert main(["explain", got[0][0], "--db", db]) == 0
    activity = query(s.db, "SELECT day, events_completed, events_failed FROM program_activity ORDER BY day")
    assert [(str(d), c, f) for d, c, f in activity] == [
        ("2025-03-01", 1, 0), ("2025-03-03", 0, 1), ("2025-03-05", 0, 1), ("2025-03-10", 0, 1)]


def test_a_program_automation_guard_sees_the_program_state(tmp_path):
    # the guard stops the weekly event once the program counter reached 2
    rules = [JOIN, BONUS, on("weekly", {"type": "COUNTER", "key": "weeks", "value": "1", "target": {"type": "PROGRAM"}},
                             {"type": "BROADCAST", "event_name": "bonus", "payload": {"n": 1}})]
    s = project(tmp_path, [WEEKLY | {"guard_condition": 'get(program.counters, "weeks", 0.0) < 2.0 '
                                                        '&& size(participant.tags) == 0'}], rules=rules)
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    run_maintain(s, "2025-03-31")
    assert len(program_events(s)) == 2 and s.balance("u1", "PTS") == (D(2), D(0), D(0))


def test_a_program_event_goes_through_the_kernel_when_its_rules_are_set_based(tmp_path):
    # only CREDIT rules reading `event`: a batch of participants would be vectorised; the
    # program event has no participant, so its CREDIT fails (no_participant) and nothing is written
    s = project(tmp_path, [{"name": "Weekly bonus", "event_name": "bonus", "scope": "program", "payload": {"n": 4},
                            "trigger": {"type": "cron", "cron_expression": "0 0 * * 1"}}], rules=[BONUS])
    s.run(ev("b1", "u1", at("2025-03-01 01:00"), "bonus", n=1))
    run_maintain(s, "2025-03-05")
    assert [(st, c) for _, _, st, c in program_events(s)] == [("FAILED", "no_participant")]
    assert s.balance("u1", "PTS") == (D(1), D(0), D(0))


@pytest.mark.parametrize("automation, message", [
    ({"trigger": {"type": "immediate"}, "scope": "program", "participant_id": "u1"},
     "automations[0] (A).scope: a immediate automation takes scope participants only"),
    ({"trigger": {"type": "cron"}}, "automations[0] (A).trigger.cron_expression: required"),
    ({"trigger": {"type": "cron", "cron_expression": "CRON_TZ=UTC 0 0 * * *"}}, "inline CRON_TZ="),
    ({"trigger": {"type": "cron", "cron_expression": "0 0 * * *", "timezone": "Mars/Olympus"}},
     "automations[0] (A).trigger.timezone: 'Mars/Olympus' is not an IANA time zone"),
    ({"trigger": {"type": "one_time"}}, "automations[0] (A).trigger.trigger_at: required"),
    ({"trigger": {"type": "cron", "cron_expression": "0 0 * * *"}, "participant_filter": "event.n > 1"},
     "automations[0] (A).participant_filter: reads event"),
    ({"trigger": {"type": "cron", "cron_expression": "0 0 * * *"}, "guard_condition": "participant.tags +"},
     "automations[0] (A).guard_condition"),
    ({"trigger": {"type": "cron", "cron_expression": "0 0 * * *"}, "participant_id": "u1"},
     "automations[0] (A).participant_id: only for a one_time automation with scope program"),
    ({"trigger": {"type": "participant_state"}},
     "automations[0] (A).trigger.schedule_type: required for a participant_state trigger"),
    ({"trigger": {"type": "participant_state", "schedule_type": "THRESHOLD"}},
     "automations[0] (A).trigger.schedule_config.counter: Field required"),
    ({"trigger": {"type": "participant_state", "schedule_type": "THRESHOLD",
                  "schedule_config": {"counter": "spent", "operator": "=>", "threshold": 5}}},
     "automations[0] (A).trigger.schedule_config.operator: Input should be"),
    ({"trigger": {"type": "participant_state", "schedule_type": "THRESHOLD",
                  "schedule_config": {"counter": "spent", "operator": ">=", "threshold": "lots"}}},
     "automations[0] (A).trigger.schedule_config.threshold:"),
    ({"trigger": {"type": "participant_state", "schedule_type": "THRESHOLD",
                  "schedule_config": {"counter": "spent", "operator": ">=", "threshold": 5, "once": True}}},
     "automations[0] (A).trigger.schedule_config: unknown field(s) once"),
    ({"trigger": {"type": "participant_state", "schedule_type": "CRON"}},
     "automations[0] (A).trigger.schedule_config.cron_expression: required for CRON"),
    ({"trigger": {"type": "participant_state", "schedule_type": "CRON", "schedule_config": {"cron_expression": "0 9 * *"}}},
     "automations[0] (A).trigger.schedule_config.cron_expression: '0 9 * *': a cron expression has 5 fields"),
    ({"trigger": {"type": "participant_state", "schedule_type": "CRON", "cron_expression": "0 9 * * 1"}},
     "automations[0] (A).trigger.cron_expression: applies to cron triggers only (this one is participant_state); "
     "a participant_state CRON takes it in schedule_config.cron_expression"),
    ({"trigger": {"type": "participant_state", "schedule_type": "INTERVAL", "schedule_config": {"interval": "1 day"}}},
     "automations[0] (A).trigger.schedule_config.interval: required for INTERVAL, a Go duration"),
    ({"trigger": {"type": "participant_state", "schedule_type": "INTERVAL", "schedule_config": {"interval": "30s"}}},
     "automations[0] (A).trigger.schedule_config.interval: must be at least 1m"),
    ({"trigger": {"type": "participant_state", "schedule_type": "ATTRIBUTE_DATE"}},
     "automations[0] (A).trigger.schedule_config.attribute: required"),
    ({"trigger": {"type": "participant_state", "schedule_type": "ATTRIBUTE_DATE",
                  "schedule_config": {"attribute": "birthday", "time": "25:00"}}},
     "automations[0] (A).trigger.schedule_config.time: '25:00' is not a wall-clock time"),
    ({"trigger": {"type": "participant_state", "schedule_type": "ATTRIBUTE_DATE",
                  "schedule_config": {"attribute": "birthday", "day": 3}}},
     "automations[0] (A).trigger.schedule_config: unknown field(s) day"),
    ({"trigger": {"type": "participant_state", "schedule_type": "ATTRIBUTE_DATE",
                  "schedule_config": {"attribute": "birthday"}}, "scope": "program", "participant_id": "u1"},
     "automations[0] (A).scope: a participant_state automation takes scope participants only"),
    ({"trigger": {"type": "cron", "cron_expression": "0 0 * * *"}, "status": "off"},
     "automations[0] (A).status"),
    ({"trigger": {"type": "cron", "cron_expression": "0 0 * * *"}, "payload": {"type": "x"}},
     "automations[0] (A).payload: `type` is set by event_name"),
])
def test_bad_automations_are_rejected_at_load_naming_file_automation_and_field(tmp_path, automation, message):
    auto = {"name": "A", "event_name": "bonus", "scope": "participants"} | automation
    path = write_program(tmp_path / "shop.yaml",
                         program_spec("shop", [BONUS], assets=[asset("PTS")]) | {"automations": [auto]})
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_explain_names_the_automation_that_fired_an_event(tmp_path):
    from engine.explain import explain
    from engine.ledger import db

    s = project(tmp_path, [monthly()])
    s.run(ev("j1", "u1", at("2025-03-01 01:00"), "join"))
    run_maintain(s, "2025-04-02")
    con = db.connect(s.db, read_only=True)
    try:
        fired = explain(con, load_catalog(s.programs), key("monthly_bonus", "u1", "2025-04-01T00:00:00Z"))
        joined = explain(con, load_catalog(s.programs), "j1")
    finally:
        con.close()
    assert fired["emitted_by"] == "automation:shop/monthly_bonus" and fired["status"] == "COMPLETED"
    assert fired["entries"] == [{"rule": "bonus", "type": "CREDIT", "amount": "3"}]
    assert joined["emitted_by"] is None
