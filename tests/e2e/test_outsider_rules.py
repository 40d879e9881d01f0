"""An outsider's black-box round over rule evaluation, the CEL environment and actions
(semantics.md 5, 6, 7 and invariants 1.4 / 1.6), through the real CLI: program files, real
Parquet, `perkflow run` in a subprocess into a real DuckDB file, read back with SQL. Every
expectation is computed by hand from the contract (docs/decisions.md where it is silent), and
each scenario runs on the default path and with `--row-path`, which must agree byte for byte.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timezone
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.test_contract_audit import OK, Ledger, at, ev, op, program
from tests.helpers.io import cli

_LEDGER = {
    "events": "SELECT idempotency_key, status, error_code, error_message FROM events ORDER BY arrival_seq",
    "entries": "SELECT id, seq, rule_version, action_index, action_type, effective_at, entry_hash FROM journal_entries ORDER BY seq",
    "postings": "SELECT id, journal_entry_id, entity_type, entity_id, bucket, amount FROM postings ORDER BY id",
    "evaluations": "SELECT e.idempotency_key, r.key, x.rule_version, x.outcome, x.message FROM rule_evaluations x "
                   "JOIN events e ON e.id = x.event_id JOIN rules r ON r.id = x.rule_id ORDER BY 1, 2",
    "state": "SELECT entity_id, kind, key, text_value, number_value FROM entity_state ORDER BY ALL",
    "roots": "SELECT id, root_hash FROM batches ORDER BY id",
}


def _ledger(led: Ledger) -> dict[str, list[tuple]]:
    return {name: led.sql(text) for name, text in _LEDGER.items()}


def _struct_run(tmp: Path, spec: dict, payload_type: pa.DataType, rows: list[tuple[str, str, datetime, dict]],
                flags: tuple = ()) -> Ledger:
    """One `perkflow run` of (key, external id, timestamp, payload) rows with a typed struct
    `event_data` column."""
    led = Ledger(tmp, spec)
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")), ("event_data", payload_type)])
    path = tmp / "events.parquet"
    pq.write_table(pa.Table.from_pylist([{"program_id": "shop", "idempotency_key": k, "external_id": who,
                                          "event_timestamp": when, "event_data": data}
                                         for k, who, when, data in rows], schema=schema), path)
    res = cli("run", "--programs", str(led.programs), "--events", str(path), "--db", str(led.db), "--json", *flags)
    assert res.returncode == 0, res.stdout + res.stderr
    return led


def _outcomes(led: Ledger) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {(k, r): (o, m) for k, r, _, o, m in led.sql(_LEDGER["evaluations"])}


def _rules(conditions: dict[str, str], amount: str = "1") -> list[dict]:
    return [{"name": name, "key": name, "order": 10 * (i + 1), "condition": cond,
             "actions": [{"type": "CREDIT", "asset": "PTS", "amount": amount}]}
            for i, (name, cond) in enumerate(conditions.items())]


NOON = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


def test_s6_an_unsigned_parquet_field_is_a_cel_uint_on_every_path(tmp_path):
    """semantics.md 2.2 / 6: a struct `event_data` keeps its field types, and CEL has a `uint`
    type, so a Parquet uint64 field is a CEL uint: `u / 2u` is uint division, `u - 10u` below
    zero is a uint overflow (an error: SKIPPED_ERROR), `uint(u) == u`; list elements too.
    Invariant 1.4: the vectorised path read it as a uint while the per-row path read a plain int
    (`no such overload: _/_(int, uint)`), so the two paths gave different ledgers."""
    conditions = {
        "udiv": "event.u / 2u == 2u",                   # 5u / 2u = 2u
        "uunder": "event.u - 10u > 0u",                  # 5u - 10u: uint overflow -> error
        "uself": "uint(event.u) == event.u && event.u + 1u == 6u",
        "ulist": "event.l.exists(x, x == 3u) && event.l[0] + 1u == 2u",
        "umixed": "event.u == 5 && event.u > 4.5",       # heterogeneous equality, promotion to double
    }
    spec = program(_rules(conditions))
    payload = pa.struct([("type", pa.string()), ("u", pa.uint64()), ("l", pa.list_(pa.uint32()))])
    rows = [("k1", "u1", NOON, {"type": "t", "u": 5, "l": [1, 3]})]
    ledgers = [_struct_run(tmp_path / name, spec, payload, rows, flags)
               for name, flags in (("default", ()), ("row", ("--row-path",)))]
    for led in ledgers:
        outcomes = _outcomes(led)
        assert {r: o for (_, r), (o, _) in outcomes.items()} == {
            "udiv": "MATCHED", "uunder": "SKIPPED_ERROR", "uself": "MATCHED", "ulist": "MATCHED", "umixed": "MATCHED"}
        assert "overflow" in outcomes[("k1", "uunder")][1]
        assert led.balance("u1") == (D(4), D(0), D(0))
    assert _ledger(ledgers[0]) == _ledger(ledgers[1])


def test_s6_a_naive_timestamp_field_is_utc_and_compares_with_now_on_every_path(tmp_path):
    """docs/decisions.md "Time": naive Parquet timestamps are read as UTC. A naive timestamp
    *field* of a struct `event_data` is one too, so `event.at < now` compares two instants
    (semantics.md 6). It stopped the run with exit 1 (Python: can't compare offset-naive and
    offset-aware datetimes) on the per-row path, which the vectorised path hands naive columns to.
    The same inside a fixed-size list, whose DECIMAL elements are doubles as a list's are. A
    TIME field (a time of day; CEL has none) is its ISO text, as the stored payload holds it and
    as a DATE field is: every expression that read one failed ("unsupported value of Python
    type time")."""
    conditions = {"before": "event.at < now", "gap": "now - event.at == duration('30m')",
                  "hour": "event.at.getHours() == 11 && event.at.getHours('Asia/Kolkata') == 17",
                  "fixed": "event.pair[1] < now && event.cents[0] * 2.0 == 2.5",
                  "tod": "event.opens == '09:30:00.250' && event.opens < '10:00'"}
    spec = program(_rules(conditions))
    payload = pa.struct([("type", pa.string()), ("at", pa.timestamp("us")), ("pair", pa.list_(pa.timestamp("ms"), 2)),
                         ("cents", pa.list_(pa.decimal128(5, 2), 1)), ("opens", pa.time64("us"))])
    rows = [("k1", "u1", NOON, {"type": "t", "at": datetime(2025, 3, 1, 11, 30),
                                "pair": [datetime(2025, 3, 1, 13), datetime(2025, 3, 1, 11, 59)], "cents": [D("1.25")],
                                "opens": time(9, 30, 0, 250000)})]
    ledgers = [_struct_run(tmp_path / name, spec, payload, rows, flags)
               for name, flags in (("default", ()), ("row", ("--row-path",)))]
    for led in ledgers:
        assert {r: o for (_, r), (o, _) in _outcomes(led).items()} == {
            "before": "MATCHED", "gap": "MATCHED", "hour": "MATCHED", "fixed": "MATCHED", "tod": "MATCHED"}
        assert led.balance("u1") == (D(5), D(0), D(0))
        assert json.loads(led.sql("SELECT event_data FROM events")[0][0])["opens"] == "09:30:00.250"
        # the stored payload says the instant the rules saw (what replay and explain read)
        assert json.loads(led.sql("SELECT event_data FROM events")[0][0])["at"] in (
            "2025-03-01T11:30:00+00:00", "2025-03-01T11:30:00Z")
    assert _ledger(ledgers[0]) == _ledger(ledgers[1])


@pytest.mark.parametrize("flags", [(), ("--row-path",)])
def test_s7_an_empty_or_blank_tag_fails_the_event_as_the_tag_operation_refuses_it(tmp_path, flags):
    """semantics.md 7: TAG / UNTAG add / remove a lowercase tag, and "an expression that fails to
    evaluate fails the event (expression_error)". The `tag` operation refused an empty tag
    ("a tag must be non-empty text") while the TAG action stored the tag '' (and '  '), which no
    rule or operation can name again; now a blank tag fails the event whole (its CREDIT too) on
    every path, the operation refuses a blank one as well, and a static blank tag is a load error
    (docs/decisions.md "Tags")."""
    rules = [{"name": "tag", "key": "tag", "condition": 'event.type == "tag"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "5"}, {"type": "TAG", "tag": "event.t"}]},
             {"name": "see", "key": "see", "condition": '"vip" in participant.tags', "actions": [{"type": "COUNTER", "key": "seen", "value": 1}]}]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("t1", "u1", at(1, 1), "tag", t="VIP"), ev("t2", "u2", at(1, 2), "tag", t=""),
             ev("t3", "u2", at(1, 3), "tag", t="  "), ev("t4", "u2", at(1, 4), "tag", t="Vip")],
            [op("tag", "o1", "u1", at(1, 5), tag=" "), op("tag", "o2", "u1", at(1, 6), tag="Gold")], flags=flags)
    status = led.status()
    assert status["t1"] == status["t4"] == status["o2"] == OK
    assert status["t2"] == status["t3"] == ("FAILED", "expression_error")
    assert status["o1"][0] == "FAILED"
    assert led.balance("u1") == (D(5), D(0), D(0)) and led.balance("u2") == (D(5), D(0), D(0))
    assert led.state("u1") == {("TAG", "vip"): None, ("COUNTER", "seen"): D(1), ("TAG", "gold"): None}
    assert led.state("u2") == {("TAG", "vip"): None, ("COUNTER", "seen"): D(1)}

    static = Ledger(tmp_path / "static", program([{"name": "t", "key": "t", "condition": "true",
                                                       "actions": [{"type": "TAG", "tag": ""}]}]))
    res = static.run([ev("s1", "u1", at(1), "x")], expect=2)
    assert "actions[0].tag: a tag must be non-empty text" in res["stderr"]


@pytest.mark.parametrize("flags", [(), ("--row-path",)])
def test_s7_a_schedule_event_delay_of_0s_comes_before_the_rows_of_its_instant_and_a_negative_one_fails(tmp_path, flags):
    """semantics.md 7: SCHEDULE_EVENT emits its SYSTEM event at `now + delay`; a delay of 0s is due
    at the emitting event's own instant, so it is processed before the rows of that instant still
    to come (docs/writing-rules.md 1), which see what it did. A CEL delay below 0s would be due in
    the past: the event fails with expression_error, whose message speaks CEL (`-3600s`), not
    Python (`datetime.timedelta(days=-1, seconds=82800)`). A delay read from the event as text
    in Go's form (`"1h30m"`) is that duration, as `expires_at` takes text from CEL (it failed
    the event: "delay must be a duration", docs/decisions.md "SYSTEM events")."""
    rules = [{"name": "later", "key": "later", "order": 10, "condition": 'event.type == "later"',
              "actions": [{"type": "SCHEDULE_EVENT", "event_name": "follow", "delay": "duration(event.d)",
                           "payload": {"k": "event.d"}}]},
             {"name": "follow", "key": "follow", "order": 20, "condition": 'event.type == "follow"',
              "actions": [{"type": "SET_ATTRIBUTE", "key": "k", "value": "event.k"}]},
             {"name": "text", "key": "text", "order": 15, "condition": 'event.type == "text"',
              "actions": [{"type": "SCHEDULE_EVENT", "event_name": "follow", "delay": "event.w", "payload": {"k": "event.w"}}]},
             {"name": "check", "key": "check", "order": 30,
              "condition": 'event.type == "check" && get(participant.attributes, "k", "") == "0s"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("z", "u1", at(1, 1), "later", d="0s"), ev("c", "u1", at(1, 1), "check"),
             ev("n", "u2", at(1, 2), "later", d="-1h"), ev("t", "u3", at(1, 3), "text", w="1h30m"),
             ev("end", "u4", at(2), "other")], flags=flags)
    status = led.status()
    assert status["z"] == status["c"] == status["t"] == OK and len(status) == 7  # and the 2 SYSTEM events
    assert led.state("u3") == {("ATTRIBUTE", "k"): "1h30m"}
    assert led.sql("SELECT event_timestamp FROM events WHERE external_id = 'u3' AND idempotency_key LIKE 'system:%'") == [
        (datetime(2025, 3, 1, 4, 30, tzinfo=timezone.utc),)]
    assert led.balance("u1") == (D(1), D(0), D(0))
    assert led.state("u1") == {("ATTRIBUTE", "k"): "0s"}
    assert led.sql("SELECT error_code, error_message FROM events WHERE idempotency_key = 'n'") == [
        ("expression_error", "rule 'later' action 0: delay must be a duration of at least 0s, got -3600s")]


WINDOWS_YAML = """
program: {key: shop, name: Shop}
assets: [{symbol: PTS, name: Points, scale: 0}]
rules:
  - {name: to, key: to, order: 10, condition: 'event.type == "go"', active_to: %(to)s,
     actions: [{type: TAG, tag: to}]}
  - {name: from, key: from, order: 20, condition: 'event.type == "go"', active_from: %(from)s,
     actions: [{type: TAG, tag: from}]}
"""


@pytest.mark.parametrize("quote", ['"', ""])
@pytest.mark.parametrize("flags", [(), ("--row-path",)])
def test_s5_a_window_bound_finer_than_a_microsecond_keeps_its_exact_edge(tmp_path, flags, quote):
    """semantics.md 5: a rule outside [active_from, active_to) is skipped. RFC 3339 allows more
    than 6 fractional digits; the ledger's instants are whole microseconds (docs/decisions.md
    "Time"). An event at 12:00:00Z is before active_to 12:00:00.0000005Z (inside the window) and
    before active_from 12:00:00.0000005Z (outside it); one at 12:00:00.000001Z is after both.
    The loader dropped the digits past the sixth, which moved both edges half a microsecond into
    the past: the event at 12:00:00Z fell out of the first window and into the second. The same
    written quoted or as a bare YAML timestamp."""
    bound = f"{quote}2025-03-01T12:00:00.0000005Z{quote}"
    led = Ledger(tmp_path)
    led.programs.mkdir(parents=True)
    (led.programs / "shop.yaml").write_text(WINDOWS_YAML % {"to": bound, "from": bound}, encoding="utf-8")
    led.run([ev("e1", "u1", "2025-03-01T12:00:00Z", "go"), ev("e2", "u2", "2025-03-01T12:00:00.000001Z", "go")],
            flags=flags)
    assert led.state("u1") == {("TAG", "to"): None}
    assert led.state("u2") == {("TAG", "from"): None}


BARE_YAML = """
program: {key: shop, name: Shop}
assets: [{symbol: PTS, name: Points, scale: 0, inventory_mode: LOT}]
rules:
  - name: join
    key: join
    condition: 'event.type == "join"'
    active_from: 2025-03-01T00:00:00Z
    actions:
      - {type: SET_ATTRIBUTE, key: birthday, value: 1990-04-15}
      - {type: SET_ATTRIBUTE, key: joined, value: 2025-03-01T09:00:00Z}
      - {type: CREDIT, asset: PTS, amount: 10, expires_at: 2025-03-05T00:00:00Z}
"""


def test_s7_bare_yaml_dates_and_instants_in_value_fields_are_their_text(tmp_path):
    """semantics.md 7: a value field holding neither a number nor CEL is a literal string, and a
    CREDIT's `expires_at` may be an RFC 3339 instant. Written bare in YAML (`value: 1990-04-15`,
    `expires_at: 2025-03-05T00:00:00Z`), YAML makes them dates and the files were refused
    ("Input should be a valid string"); they are their text: the attributes hold what was
    written (a birthday for an ATTRIBUTE_DATE automation) and the lot expires at that instant
    (docs/decisions.md "Time")."""
    led = Ledger(tmp_path)
    led.programs.mkdir(parents=True)
    (led.programs / "shop.yaml").write_text(BARE_YAML, encoding="utf-8")
    led.run([ev("j1", "u1", at(1, 9), "join"), ev("x1", "u1", at(5), "other")])
    assert led.state("u1") == {("ATTRIBUTE", "birthday"): "1990-04-15", ("ATTRIBUTE", "joined"): "2025-03-01T09:00:00Z"}
    assert led.balance("u1") == (D(0), D(0), D(0))  # expired at 2025-03-05T00:00:00Z, before x1 (12:00)
    assert [t for t, _ in led.entries("j1")] == ["CREDIT"]
    assert led.sql("SELECT expires_at FROM lots")[0][0] == datetime(2025, 3, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("flags", [(), ("--row-path",)])
def test_s6_a_null_inside_a_list_is_cel_null_on_every_path(tmp_path, flags):
    """semantics.md 6 and invariant 1.4. A null *field* is absent (2.2), but a null element of a
    list cannot be: `[1, null, 3][1]` is CEL null, so `== 1` is false and `!= 1` true
    (heterogeneous equality, no error), as the per-row path says. The vectorised conditions and
    amounts (set-based, and the running-state path over participant state) read the column's
    null as an error: SKIPPED_ERROR with no message, and a failed amount."""
    flat = program([
        {"name": "ne", "key": "ne", "order": 10, "condition": "event.l[1] != 1 && event.s[1] != 'a'",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]},
        {"name": "eq", "key": "eq", "order": 20, "condition": "event.l[1] == 1",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "100"}]},
        {"name": "amt", "key": "amt", "order": 30, "condition": "size(event.l) == 3",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.l[1] != 1 ? 5 : 7"}]}])
    state = program([
        {"name": "count", "key": "count", "order": 10,
         "condition": "event.l[1] != 1 && participant.balances.PTS.available == 0.0",
         "actions": [{"type": "COUNTER", "key": "n", "value": 1},
                     {"type": "CREDIT", "asset": "PTS",
                      "amount": "participant.balances.PTS.available == 0.0 && event.l[1] != 1 ? 10 : 20"}]},
        {"name": "pay", "key": "pay", "order": 20, "condition": "participant.counters.n >= 1.0",
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.l[1] != 1 ? 10 : 20"}]}], key="state")
    led = Ledger(tmp_path, flat, state)
    led.run([ev("k1", "u1", at(1, 1), "t", l=[1, None, 3], s=["a", None]),
             ev("k2", "u2", at(1, 2), "t", l=[1, None, 3]) | {"program": "state"}], flags=flags,
            env={"PERKFLOW_RUNNING_MIN_EVENTS": "0"})  # the running-state path also for a small batch
    assert led.status() == {"k1": OK, "k2": OK}
    assert {(k, r): o for (k, r), (o, _) in _outcomes(led).items()} == {
        ("k1", "ne"): "MATCHED", ("k1", "amt"): "MATCHED", ("k2", "count"): "MATCHED", ("k2", "pay"): "MATCHED"}
    assert led.balance("u1") == (D(6), D(0), D(0))
    assert led.balance("u2") == (D(20), D(0), D(0))


def test_s1_4_a_failed_amount_says_the_same_on_the_running_state_path_and_per_row(tmp_path):
    """Invariant 1.4: the same ledger whichever path evaluated a rule, the events' error
    messages included. In a program that reads state (the running-state path), an amount that
    reads only the event and fails to evaluate failed the event `expression_error` with
    "amount expression failed: no such key: 'nope'", and per row (the kernel) with "expression
    failed: no such key: 'nope'". The counter read by `more` makes the program stateful."""
    rules = [{"name": "count", "key": "count", "order": 10, "condition": 'event.type == "buy"',
              "actions": [{"type": "COUNTER", "key": "n", "value": 1}]},
             {"name": "more", "key": "more", "order": 20, "condition": "participant.counters.n >= 2.0",
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"},
                          {"type": "CREDIT", "asset": "PTS", "amount": "event.nope"}]}]
    ledgers = []
    for name, flags in (("running", ()), ("row", ("--row-path",))):
        led = Ledger(tmp_path / name, program(rules))
        led.run([ev("b1", "u1", at(1, 1), "buy"), ev("b2", "u1", at(1, 2), "buy"), ev("b3", "u2", at(1, 3), "buy")],
                flags=flags, env={"PERKFLOW_RUNNING_MIN_EVENTS": "0"})
        assert led.sql("SELECT idempotency_key, status, error_code, error_message FROM events ORDER BY 1") == [
            ("b1", "COMPLETED", None, None),
            ("b2", "FAILED", "expression_error", "rule 'more' action 1: expression failed: no such key: 'nope'"),
            ("b3", "COMPLETED", None, None)]
        assert led.state("u1") == {("COUNTER", "n"): D(1)} and led.balance("u1") == (D(0), D(0), D(0))
        ledgers.append(led)
    assert _ledger(ledgers[0]) == _ledger(ledgers[1])
