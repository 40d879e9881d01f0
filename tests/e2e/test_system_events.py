"""SCHEDULE_EVENT and BROADCAST (semantics.md 7, 3; docs/decisions.md, "SYSTEM events"): small
ledgers with hand-computed balances, through the engine into a real DuckDB file."""

from __future__ import annotations

import pytest

from engine.errors import CatalogError
from engine.catalog import load_catalog
from engine.durations import parse_instant
from engine.maintain import maintain
from tests.helpers.io import query, write_program, program_spec
from tests.helpers.scenario import D, Scenario, asset, at, ev, on, op

PTS = asset("PTS")
OK = ("COMPLETED", None)


def schedule(name: str, delay: str, **payload) -> dict:
    return {"type": "SCHEDULE_EVENT", "event_name": name, "delay": delay, "payload": payload}


def system_rows(s: Scenario) -> list[tuple]:
    """(kind, external id, event_timestamp, type, status, error_code) of the SYSTEM events, in
    stream order."""
    return [(k.split(":")[1], who, ts.strftime("%Y-%m-%d %H:%M"), t, st, code) for k, who, ts, t, st, code in query(
        s.db, "SELECT idempotency_key, external_id, event_timestamp, event_data->>'type', status, error_code "
              "FROM events WHERE idempotency_key LIKE 'system:%' ORDER BY batch_id, event_timestamp, arrival_seq")]


def followup_rules() -> list[dict]:
    # a signup schedules a follow-up in 1h that pays 10 per purchase made before it
    return [on("signup", schedule("followup", "1h", per="event.rate * 2")),
            on("purchase", {"type": "COUNTER", "key": "purchases", "value": "1"}),
            on("followup", {"type": "CREDIT", "asset": "PTS",
                            "amount": "get(participant.counters, 'purchases', 0.0) * event.per"})]


def test_a_scheduled_event_is_processed_at_its_instant_in_the_same_batch(tmp_path):
    s = Scenario(tmp_path, "shop", followup_rules(), [PTS])
    out = s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup", rate=5),
                ev("p1", "u1", at("2025-03-01 10:30"), "purchase"),
                ev("p2", "u1", at("2025-03-01 11:30"), "purchase"))
    # the follow-up at 11:00 sees one purchase (10:30), not the one at 11:30: 1 * (5 * 2) = 10
    assert s.balance("u1", "PTS") == (D(10), D(0), D(0))
    assert system_rows(s) == [("schedule", "u1", "2025-03-01 11:00", "followup", "COMPLETED", None)]
    assert {k: v for k, v in out.items() if not k.startswith("system:")} == {"s1": OK, "p1": OK, "p2": OK}
    # its entry carries the instant it was due, and its event_data is the payload with its type
    assert query(s.db, "SELECT effective_at FROM journal_entries")[0][0] == parse_instant("2025-03-01T11:00:00Z")
    assert query(s.db, "SELECT event_data::VARCHAR FROM events WHERE idempotency_key LIKE 'system:%'") == [
        ('{"per":10.0,"type":"followup"}',)]
    assert query(s.db, "SELECT count(*) FROM scheduled_events") == [(0,)]
    # the batch's manifest counts it apart from its three input rows (semantics.md 13: counts stored)
    assert query(s.db, "SELECT rows_read, completed, system_events FROM batches") == [(3, 3, 1)]


def test_a_scheduled_event_waits_for_the_batch_that_reaches_its_instant(tmp_path):
    # the same stream cut in two: the follow-up waits in scheduled_events, then comes before p2
    s = Scenario(tmp_path, "shop", followup_rules(), [PTS])
    s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup", rate=5), ev("p1", "u1", at("2025-03-01 10:30"), "purchase"))
    assert s.balance("u1", "PTS") == (D(0), D(0), D(0))
    assert query(s.db, "SELECT event_timestamp, depth FROM scheduled_events") == [
        (parse_instant("2025-03-01T11:00:00Z"), 1)]
    s.run(ev("p2", "u1", at("2025-03-01 11:30"), "purchase"))
    assert s.balance("u1", "PTS") == (D(10), D(0), D(0))
    assert system_rows(s) == [("schedule", "u1", "2025-03-01 11:00", "followup", "COMPLETED", None)]
    assert query(s.db, "SELECT count(*) FROM scheduled_events") == [(0,)]


def test_a_batch_that_does_not_reach_the_instant_leaves_it_waiting(tmp_path):
    s = Scenario(tmp_path, "shop", followup_rules(), [PTS])
    s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup", rate=5))
    s.run(ev("p1", "u1", at("2025-03-01 10:59"), "purchase"))
    assert system_rows(s) == [] and query(s.db, "SELECT count(*) FROM scheduled_events") == [(1,)]
    s.run(ev("p2", "u1", at("2025-03-01 11:00"), "purchase"))
    # due at 11:00, it comes before p2 (also at 11:00): it sees one purchase
    assert s.balance("u1", "PTS") == (D(10), D(0), D(0))


def test_maintain_as_of_processes_what_is_due_with_the_stored_program_files(tmp_path):
    s = Scenario(tmp_path, "shop", followup_rules(), [PTS])
    s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup", rate=5), ev("p1", "u1", at("2025-03-01 10:05"), "purchase"),
          ev("s2", "u1", at("2025-03-01 12:00"), "signup", rate=1))
    # s1's follow-up (11:00) came within the batch; s2's (13:00) waits
    assert s.balance("u1", "PTS") == (D(10), D(0), D(0))
    # without --programs, maintain compiles the program files the runs stored (program_documents)
    early = maintain(parse_instant("2025-03-01T12:59:59Z"), s.db)
    assert early.system_events == 0 and query(s.db, "SELECT count(*) FROM scheduled_events") == [(1,)]
    report = maintain(parse_instant("2025-03-01T13:00:00Z"), s.db)
    assert report.system_events == 1
    assert query(s.db, "SELECT rows_read, system_events FROM batches ORDER BY id") == [(3, 1), (0, 1)]
    s.check()


def test_a_system_event_comes_before_rows_at_its_instant_and_after_its_emitter(tmp_path):
    rules = [on("signup", schedule("welcome", "0s"), schedule("later", "1h")),
             on("welcome", {"type": "TAG", "tag": "welcomed"}),
             on("later", {"type": "TAG", "tag": "later"}),
             {"name": "buy", "key": "buy", "condition": 'event.type == "buy"',
              "actions": [{"type": "CREDIT", "asset": "PTS",
                           "amount": "('welcomed' in participant.tags ? 1 : 0) + ('later' in participant.tags ? 10 : 0)"}]}]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup"), ev("b1", "u1", at("2025-03-01 10:00"), "buy"),
          ev("b2", "u1", at("2025-03-01 11:00"), "buy"))
    # b1 (10:00) sees the welcome (due 10:00, emitted by s1 before it): 1; b2 (11:00) sees both: 11
    assert s.entries("b1") == [("CREDIT", D(1), None)] and s.entries("b2") == [("CREDIT", D(11), None)]


def test_broadcast_reaches_every_active_enrolled_participant(tmp_path):
    rules = [on("join", {"type": "TAG", "tag": "member"}),
             on("announce", {"type": "BROADCAST", "event_name": "promo", "payload": {"amount": 3}}),
             on("promo", {"type": "CREDIT", "asset": "PTS", "amount": "event.amount"})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    other = program_spec("other", [on("join", {"type": "TAG", "tag": "other"})], assets=[PTS])
    write_program(s.programs / "other.yaml", other)
    s.run(ev("j1", "u1", at("2025-03-01 10:00"), "join"), ev("j2", "u2", at("2025-03-01 10:01"), "join"),
          ev("j3", "u3", at("2025-03-01 10:02"), "join"),
          op("set_participant_status", "o1", "u3", at("2025-03-01 10:03"), status="SUSPENDED"))
    s.run(ev("x1", "u4", at("2025-03-01 10:04"), "join") | {"program": "other"},
          ev("a1", "u1", at("2025-03-01 11:00"), "announce"), ev("j5", "u5", at("2025-03-01 11:01"), "join"))
    # u1 (the emitter) and u2: active and enrolled; u3 suspended; u4 only in `other`; u5 joins later
    assert [s.balance(u, "PTS")[0] for u in ("u1", "u2", "u3", "u4", "u5")] == [D(3), D(3), D(0), D(0), D(0)]
    assert [(k, who, t) for k, who, _, t, _, _ in system_rows(s)] == sorted(
        [("broadcast", "u1", "promo"), ("broadcast", "u2", "promo")], key=lambda r: query(
            s.db, "SELECT id::VARCHAR FROM participants WHERE external_id = ?", [r[1]])[0][0])


def test_a_failed_emitter_emits_nothing(tmp_path):
    rules = [on("signup", schedule("followup", "0s"), {"type": "DEBIT", "asset": "PTS", "amount": "5"}),
             on("followup", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    out = s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup"))
    assert out == {"s1": ("FAILED", "insufficient_balance")}
    assert query(s.db, "SELECT count(*) FROM scheduled_events") == [(0,)]


def test_a_suspended_participant_schedules_and_its_follow_up_runs_its_allowed_actions(tmp_path):
    rules = [on("ping", schedule("pong", "1h")),
             on("pong", {"type": "TAG", "tag": "ponged"}),
             on("pong2", {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    rules[1]["actions"].append({"type": "CREDIT", "asset": "PTS", "amount": "1"})
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("j1", "u1", at("2025-03-01 09:00"), "hello"),
          op("set_participant_status", "o1", "u1", at("2025-03-01 09:30"), status="SUSPENDED"),
          ev("p1", "u1", at("2025-03-01 10:00"), "ping"), ev("z", "u1", at("2025-03-01 12:00"), "hello"))
    # SCHEDULE_EVENT is allowed for a SUSPENDED participant; the follow-up's CREDIT is not
    assert [r[4:] for r in system_rows(s)] == [("FAILED", "participant_inactive")]
    assert s.state("u1") == {}


def test_a_chain_of_system_events_stops_at_its_depth_limit(tmp_path):
    rules = [on("ping", schedule("ping", "0s"), {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("p", "u1", at("2025-03-01 10:00"), "ping"))
    rows = system_rows(s)
    # the input and SYSTEM events 1..15 complete; the 16th would emit a 17th and fails
    assert len(rows) == 16 and [r[4] for r in rows[:15]] == ["COMPLETED"] * 15
    assert rows[15][4:] == ("FAILED", "emission_depth_exceeded")
    assert s.balance("u1", "PTS") == (D(16), D(0), D(0))


def test_a_broadcast_event_cannot_broadcast_again(tmp_path):
    rules = [on("go", {"type": "BROADCAST", "event_name": "go", "payload": {}})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("j", "u2", at("2025-03-01 09:00"), "hello"), ev("g", "u1", at("2025-03-01 10:00"), "go"))
    assert sorted(r[4:] for r in system_rows(s)) == [("FAILED", "broadcast_loop")] * 2


def test_input_rows_cannot_take_a_system_key(tmp_path):
    s = Scenario(tmp_path, "shop", [on("x", {"type": "TAG", "tag": "x"})], [PTS])
    s.run(ev("system:schedule:forged", "u1", at("2025-03-01 10:00"), "x"), ev("ok", "u1", at("2025-03-01 10:00"), "x"),
          op("tag", "system:op", "u1", at("2025-03-01 10:00"), tag="y"))
    assert query(s.db, "SELECT reason FROM rejected_rows ORDER BY row_number") == [
        ("reserved_idempotency_key",), ("reserved_idempotency_key",)]
    assert query(s.db, "SELECT idempotency_key FROM events") == [("ok",)]


@pytest.mark.parametrize("action, message", [
    ({"type": "BROADCAST", "event_name": "x", "delay": "1h"}, "delay: BROADCAST emits at the event's `now`"),
    ({"type": "BROADCAST", "event_name": "x", "target": {"type": "PROGRAM"}}, "BROADCAST reaches every ACTIVE"),
    ({"type": "SCHEDULE_EVENT", "event_name": "x", "delay": "1h", "target": {"type": "GROUP", "id": "family"}},
     "target: a SYSTEM event is for a participant or for the program"),
    ({"type": "SCHEDULE_EVENT", "delay": "1h"}, "`event_name` is required"),
    ({"type": "SCHEDULE_EVENT", "event_name": "x"}, "`delay` is required"),
    ({"type": "SCHEDULE_EVENT", "event_name": "x", "delay": "tomorrow"}, "neither a Go duration"),
    ({"type": "SCHEDULE_EVENT", "event_name": "x", "delay": "-1h"}, "must not be negative"),
])
def test_bad_emitting_actions_are_load_errors(tmp_path, action, message):
    family = {"key": "family", "name": "Family", "members": [{"external_id": "u1", "role": "ADMIN"}]}
    write_program(tmp_path / "p.yaml", program_spec("shop", [on("x", action)], assets=[PTS]) | {"groups": [family]})
    with pytest.raises(CatalogError, match=message) as err:
        load_catalog(tmp_path)
    assert "p.yaml" in str(err.value) and "actions[0]" in str(err.value)


def test_explain_names_the_emitter_and_what_an_event_emitted(tmp_path):
    from engine.explain import explain
    from engine.ledger import db

    s = Scenario(tmp_path, "shop", followup_rules(), [PTS])
    s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup", rate=5), ev("s2", "u1", at("2025-03-01 10:30"), "signup",
                                                                          rate=1))
    con = db.connect(s.db, read_only=True)
    try:
        catalog = load_catalog(s.programs)
        first = explain(con, catalog, "s1")
        assert [(e["event_name"], e["status"]) for e in first["emitted"]] == [("followup", "SCHEDULED")]
        later = explain(con, catalog, "s2")
        assert later["emitted"][0]["due"].startswith("2025-03-01T11:30")
    finally:
        con.close()
    s.run(ev("z", "u1", at("2025-03-01 12:00"), "noop"))
    con = db.connect(s.db, read_only=True)
    try:
        first = explain(con, load_catalog(s.programs), "s1")
        assert [e["status"] for e in first["emitted"]] == ["COMPLETED"]
        system = explain(con, load_catalog(s.programs), first["emitted"][0]["idempotency_key"])
        assert system["emitted_by"] == "s1" and system["status"] == "COMPLETED"
    finally:
        con.close()


def test_the_maintain_command_asks_for_the_program_files_only_when_none_are_stored(tmp_path):
    import json

    import duckdb

    from tests.helpers.io import cli

    s = Scenario(tmp_path, "shop", followup_rules(), [PTS])
    s.run(ev("s1", "u1", at("2025-03-01 10:00"), "signup", rate=5), ev("p1", "u1", at("2025-03-01 10:05"), "purchase"))
    # a ledger written before runs stored their program files: SYSTEM events due need --programs
    con = duckdb.connect(str(s.db))
    con.execute("DELETE FROM program_documents")
    con.close()
    res = cli("maintain", "--as-of", "2025-03-02T00:00:00Z", "--db", str(s.db))
    assert res.returncode == 2 and "--programs" in res.stderr + res.stdout
    res = cli("maintain", "--as-of", "2025-03-02T00:00:00Z", "--db", str(s.db), "--programs", str(s.programs), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["system_events"] == 1
    assert s.balance("u1", "PTS") == (D(10), D(0), D(0))


def test_a_system_event_schedules_at_most_one_more(tmp_path):
    # two 0s SCHEDULE_EVENTs of the rule's own type: the input event schedules both; each SYSTEM
    # event's second one fails it (without the limit: 2 + 4 + ... + 2^16 events)
    rules = [on("ping", schedule("ping", "0s"), schedule("ping", "0s"),
                {"type": "CREDIT", "asset": "PTS", "amount": "1"})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("p", "u1", at("2025-03-01 10:00"), "ping"))
    assert [r[4:] for r in system_rows(s)] == [("FAILED", "emission_fanout_exceeded")] * 2
    assert s.balance("u1", "PTS") == (D(1), D(0), D(0))


# ---- SCHEDULE_EVENT of the program: a SYSTEM event with no participant (docs/decisions.md) ----

WEEKLY = {"name": "Weekly", "event_name": "weekly", "scope": "program",
          "trigger": {"type": "cron", "cron_expression": "0 0 * * 1"}}  # Mondays 00:00 UTC
JOIN = on("join", {"type": "TAG", "tag": "member"})
BONUS = on("bonus", {"type": "CREDIT", "asset": "PTS", "amount": "event.n"})
# a program event's rule: count on the program, then give every enrolled participant `bonus`
PAYDAY = on("payday", {"type": "COUNTER", "key": "paydays", "value": "1", "target": {"type": "PROGRAM"}},
            {"type": "BROADCAST", "event_name": "bonus", "payload": {"n": "event.n"}})


def program_system_rows(s: Scenario) -> list[tuple]:
    """(participant id, event_timestamp, type, status, error_code) of the SYSTEM events that
    SCHEDULE_EVENT emitted, in stream order."""
    return query(s.db, "SELECT participant_id::VARCHAR, event_timestamp, event_data->>'type', status, error_code "
                       "FROM events WHERE idempotency_key LIKE 'system:schedule:%' ORDER BY event_timestamp, arrival_seq")


def maintain_cli(s: Scenario, as_of: str) -> dict:
    import json

    from tests.helpers.io import cli

    res = cli("maintain", "--as-of", as_of, "--db", str(s.db), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    s.check()
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_program_event_schedules_a_program_event_that_maintain_fires_at_its_instant(tmp_path):
    # the weekly program event (Monday 3 March 00:00) schedules `payday` 36h later, with no target:
    # the program event's own SYSTEM event, due Tuesday 12:00, for no participant
    rules = [JOIN, BONUS, on("weekly", schedule("payday", "36h", n=2)), PAYDAY]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    write_program(s.programs / "shop.yaml", program_spec("shop", rules, assets=[PTS]) | {"automations": [WEEKLY]})
    s.run(ev("j1", "u1", at("2025-03-01 10:00"), "join"), ev("j2", "u2", at("2025-03-01 11:00"), "join"))
    maintain_cli(s, "2025-03-04T00:00:00Z")
    # the weekly event completed; its payday waits, with no participant
    assert query(s.db, "SELECT participant_id, event_timestamp, event_data::VARCHAR FROM scheduled_events") == [
        (None, parse_instant("2025-03-04T12:00:00Z"), '{"n":2,"type":"payday"}')]
    assert query(s.db, "SELECT status, error_code FROM events WHERE idempotency_key LIKE 'system:automation:%'") == [
        ("COMPLETED", None)]
    report = maintain_cli(s, "2025-03-04T11:59:59Z")
    assert report["system_events"] == 0 and program_system_rows(s) == []
    report = maintain_cli(s, "2025-03-04T12:00:00Z")  # due at exactly the as-of: processed
    assert report["system_events"] == 3  # payday, and the bonus it broadcast to u1 and u2
    assert program_system_rows(s) == [(None, parse_instant("2025-03-04T12:00:00Z"), "payday", "COMPLETED", None)]
    assert s.balance("u1", "PTS") == s.balance("u2", "PTS") == (D(2), D(0), D(0))
    assert query(s.db, "SELECT number_value FROM program_state WHERE key = 'paydays'") == [(D(1),)]
    assert query(s.db, "SELECT count(*) FROM scheduled_events") == [(0,)]
    # the broadcast's entries carry the instant the program event was due
    assert {t for (t,) in query(s.db, "SELECT DISTINCT effective_at FROM journal_entries")} == {
        parse_instant("2025-03-04T12:00:00Z")}
    # a participant-less SYSTEM event is enrolled nowhere; the ledger verifies and explains it
    assert query(s.db, "SELECT count(*) FROM enrollments") == [(2,)]
    from tests.helpers.io import cli
    key = query(s.db, "SELECT idempotency_key FROM events WHERE idempotency_key LIKE 'system:schedule:%'")[0][0]
    assert cli("verify", "--db", str(s.db)).returncode == 0
    res = cli("explain", key, "--db", str(s.db), "--programs", str(s.programs))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "payday" in res.stdout and "emitted by system:automation:weekly:program:2025-03-03" in res.stdout


def test_a_program_target_schedules_a_program_event_from_a_participant_event_whatever_the_cut(tmp_path):
    from tests.reliability.harness import diff, ledger_view

    # a launch (by u2, at 10:30) schedules the program's `payday` at 11:30 (target PROGRAM): it
    # comes before j3 at 11:30 (SYSTEM events first at their instant), so u3 is not enrolled yet
    rules = [JOIN, BONUS, on("launch", schedule("payday", "1h", n=5) | {"target": {"type": "PROGRAM"}}), PAYDAY]
    stream = [ev("j1", "u1", at("2025-03-01 10:00"), "join"), ev("l1", "u2", at("2025-03-01 10:30"), "launch"),
              ev("j3", "u3", at("2025-03-01 11:30"), "join")]
    ledgers = []
    for name, batches in (("whole", [stream]), ("cut", [stream[:2], stream[2:]])):
        (tmp_path / name).mkdir()
        s = Scenario(tmp_path / name, "shop", rules, [PTS])
        for i, batch in enumerate(batches):
            out = s.run(*batch)
            if name == "cut" and i == 0:  # the payday waits for the batch that reaches 11:30
                assert query(s.db, "SELECT participant_id, event_timestamp FROM scheduled_events") == [
                    (None, parse_instant("2025-03-01T11:30:00Z"))]
        assert {k: v for k, v in out.items() if not k.startswith("system:")} == {"j1": OK, "l1": OK, "j3": OK}
        assert program_system_rows(s) == [(None, parse_instant("2025-03-01T11:30:00Z"), "payday", "COMPLETED", None)]
        assert [s.balance(u, "PTS")[0] for u in ("u1", "u2", "u3")] == [D(5), D(5), D(0)]
        ledgers.append(ledger_view(s.db))
    assert diff(*ledgers) == ""


def test_a_ledger_made_before_program_scheduled_events_takes_them(tmp_path):
    import duckdb

    # a ledger of the previous schema: scheduled_events.participant_id NOT NULL, and another
    # schema hash, so the next run brings its schema up to date
    rules = [JOIN, BONUS, on("launch", schedule("payday", "1h", n=5) | {"target": {"type": "PROGRAM"}}), PAYDAY]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("j1", "u1", at("2025-03-01 10:00"), "join"))
    con = duckdb.connect(str(s.db))
    con.execute("ALTER TABLE scheduled_events ALTER COLUMN participant_id SET NOT NULL")
    con.execute("UPDATE schema_version SET hash = 'a previous version'")
    con.close()
    s.run(ev("l1", "u1", at("2025-03-01 10:30"), "launch"))
    assert query(s.db, "SELECT participant_id, event_timestamp FROM scheduled_events") == [
        (None, parse_instant("2025-03-01T11:30:00Z"))]
    s.run(ev("j2", "u2", at("2025-03-01 12:00"), "join"))
    assert program_system_rows(s) == [(None, parse_instant("2025-03-01T11:30:00Z"), "payday", "COMPLETED", None)]
    assert s.balance("u1", "PTS") == (D(5), D(0), D(0))


def test_a_program_event_without_a_target_still_fails_its_other_participant_actions(tmp_path):
    # SCHEDULE_EVENT of a program event goes to the program; a TAG without a target has no one
    rules = [JOIN, on("weekly", schedule("payday", "1h", n=1), {"type": "TAG", "tag": "x"}), PAYDAY, BONUS]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    write_program(s.programs / "shop.yaml", program_spec("shop", rules, assets=[PTS]) | {"automations": [WEEKLY]})
    s.run(ev("j1", "u1", at("2025-03-01 10:00"), "join"))
    maintain_cli(s, "2025-03-04T00:00:00Z")
    assert query(s.db, "SELECT status, error_code FROM events WHERE idempotency_key LIKE 'system:automation:%'") == [
        ("FAILED", "no_participant")]
    assert query(s.db, "SELECT count(*) FROM scheduled_events") == [(0,)]  # a failed event emits nothing


# ---- BROADCAST reaches who was enrolled and ACTIVE at its instant (docs/decisions.md) ----------

def test_a_late_broadcast_reaches_who_was_enrolled_and_active_at_its_instant(tmp_path):
    # the weekly program event of Monday 3 March 00:00 broadcasts; maintenance runs it only on
    # the 6th, after the runs that enrolled u3 (5 March), suspended u4 (4 March) and reactivated
    # u2 (suspended 2 March, ACTIVE again 4 March). At the firing instant u1 and u4 were enrolled
    # and ACTIVE, u2 enrolled but SUSPENDED, u3 not enrolled: the broadcast reaches u1 and u4.
    # Each broadcast event is then processed now, against the state as it is (semantics.md 3,
    # a late event): u4 is SUSPENDED now, so its CREDIT fails.
    rules = [JOIN, BONUS, on("weekly", {"type": "BROADCAST", "event_name": "bonus", "payload": {"n": 1}})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    write_program(s.programs / "shop.yaml", program_spec("shop", rules, assets=[PTS]) | {"automations": [WEEKLY]})
    s.run(ev("j1", "u1", at("2025-03-01 10:00"), "join"), ev("j2", "u2", at("2025-03-01 11:00"), "join"),
          ev("j4", "u4", at("2025-03-01 12:00"), "join"),
          op("set_participant_status", "o1", "u2", at("2025-03-02 09:00"), status="SUSPENDED"))
    s.run(op("set_participant_status", "o2", "u4", at("2025-03-04 09:00"), status="SUSPENDED"),
          op("upsert_participant", "o3", "u2", at("2025-03-04 10:00"), status="ACTIVE"),
          ev("j3", "u3", at("2025-03-05 10:00"), "join"))
    report = maintain_cli(s, "2025-03-06T00:00:00Z")
    assert report["system_events"] == 2
    assert sorted(query(s.db, "SELECT external_id, event_timestamp, status, error_code FROM events "
                              "WHERE idempotency_key LIKE 'system:broadcast:%'")) == [
        ("u1", parse_instant("2025-03-03T00:00:00Z"), "COMPLETED", None),
        ("u4", parse_instant("2025-03-03T00:00:00Z"), "FAILED", "participant_inactive")]
    assert [s.balance(u, "PTS")[0] for u in ("u1", "u2", "u3", "u4")] == [D(1), D(0), D(0), D(0)]


def test_a_late_input_event_broadcasts_to_who_was_enrolled_and_active_at_its_timestamp(tmp_path):
    rules = [JOIN, BONUS, on("announce", {"type": "BROADCAST", "event_name": "bonus", "payload": {"n": 2}})]
    s = Scenario(tmp_path, "shop", rules, [PTS])
    s.run(ev("j1", "u1", at("2025-03-01 09:00"), "join"), ev("j2", "u2", at("2025-03-01 11:00"), "join"),
          op("set_participant_status", "o1", "u1", at("2025-03-01 12:00"), status="CLOSED"))
    # arrives after them, timestamped 10:00: u1 was enrolled and ACTIVE then, u2 not enrolled yet
    s.run(ev("a1", "u1", at("2025-03-01 10:00"), "announce"))
    assert query(s.db, "SELECT external_id, status, error_code FROM events WHERE idempotency_key LIKE "
                       "'system:broadcast:%'") == [("u1", "FAILED", "participant_inactive")]
    assert [s.balance(u, "PTS")[0] for u in ("u1", "u2")] == [D(0), D(0)]
    # in time order (one batch, or cut before it) the same broadcast reaches the same participants
    for name, batches in (("whole", [[0, 1, 2, 3]]), ("cut", [[0], [1, 2, 3]])):
        (tmp_path / name).mkdir()
        t = Scenario(tmp_path / name, "shop", rules, [PTS])
        rows = [ev("j1", "u1", at("2025-03-01 09:00"), "join"), ev("a1", "u1", at("2025-03-01 10:00"), "announce"),
                ev("j2", "u2", at("2025-03-01 11:00"), "join"),
                op("set_participant_status", "o1", "u1", at("2025-03-01 12:00"), status="CLOSED")]
        for batch in batches:
            t.run(*[rows[i] for i in batch])
        assert query(t.db, "SELECT external_id, status FROM events WHERE idempotency_key LIKE 'system:broadcast:%'") == [
            ("u1", "COMPLETED")]
        assert [t.balance(u, "PTS")[0] for u in ("u1", "u2")] == [D(2), D(0)]
