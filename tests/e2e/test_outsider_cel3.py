"""An outsider's third black-box round over the CEL environment and amounts (semantics.md 6, and
the amount rules of 7), through the real CLI: program files, real Parquet, `perkflow run` in a
subprocess into a real DuckDB file, read back with SQL. Expectations are computed by hand from
the contract (docs/decisions.md where it is silent). Each scenario runs on every path a batch
can take: the default one (set-based for a program whose rules read no state, the kernel for a
small stateful batch), the running-state path (`PERKFLOW_RUNNING_MIN_EVENTS=0`) and
`--row-path`; invariant 1.4 wants the same ledger from each.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.test_contract_audit import Ledger, at, ev, program
from tests.helpers.io import cli

#: (name, flags, env) of the paths a small batch can take
PATHS = [("default", (), None), ("running", (), {"PERKFLOW_RUNNING_MIN_EVENTS": "0"}), ("row", ("--row-path",), None)]
_IDS = [p[0] for p in PATHS]

#: a rule that reads participant state and never matches: with it a program is stateful, so a
#: small batch takes the kernel (and the running path with PERKFLOW_RUNNING_MIN_EVENTS=0)
NEVER = {"name": "never", "key": "never", "order": 9990, "condition": 'get(participant.counters, "zz", 0.0) < 0.0',
         "actions": [{"type": "COUNTER", "key": "zz", "value": "1"}]}

NOON = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


def _status(led: Ledger) -> dict[str, tuple[str, str | None, str | None]]:
    return {k: (s, c, m) for k, s, c, m in
            led.sql("SELECT idempotency_key, status, error_code, error_message FROM events")}


def _struct_run(led: Ledger, payload_type: pa.DataType, rows: list[tuple[str, str, datetime, dict]],
                flags: tuple = (), env: dict | None = None) -> None:
    """One `perkflow run` of (key, external id, timestamp, payload) rows with a typed struct
    `event_data` column (Parquet field types kept: semantics.md 2.2)."""
    schema = pa.schema([("program_id", pa.string()), ("idempotency_key", pa.string()), ("external_id", pa.string()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC")), ("event_data", payload_type)])
    path = led.dir / f"events-{len(rows)}.parquet"
    pq.write_table(pa.Table.from_pylist([{"program_id": "shop", "idempotency_key": k, "external_id": who,
                                          "event_timestamp": when, "event_data": data}
                                         for k, who, when, data in rows], schema=schema), path)
    res = cli("run", "--programs", str(led.programs), "--events", str(path), "--db", str(led.db), "--json", *flags,
              env=env)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s6_min_and_max_take_an_int_and_a_uint(tmp_path, name, flags, env, stateful):
    """semantics.md 6 lists `min(a, b)` and `max(a, b)`; CEL orders int and uint values with each
    other exactly (`1 < 2u`), and cel-go's math.least / math.greatest take them mixed, giving the
    operand picked with its own type. A Parquet uint field is a CEL uint (docs/decisions.md), so
    "at most 5 points per item" over a uint32 `qty` is `min(event.qty, 5)`. Every path failed
    it with `no such overload: min(uint, int)`: the amount failed the event (expression_error)
    and the condition was SKIPPED_ERROR. By hand: qty 7 -> min 5 (the int), qty 2 -> 2u;
    max(event.n, event.qty) with n = -4 is the qty; the condition max(qty, 3) >= 4 holds for
    qty 7 only."""
    rules = [
        {"name": "capped", "key": "capped", "order": 10, "condition": 'event.type == "buy"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "min(event.qty, 5)"}]},
        {"name": "bigger", "key": "bigger", "order": 20, "condition": 'event.type == "buy"',
         "actions": [{"type": "COUNTER", "key": "best", "value": "max(event.n, event.qty)"}]},
        {"name": "many", "key": "many", "order": 30, "condition": 'max(event.qty, 3) >= 4',
         "actions": [{"type": "TAG", "tag": "many"}]},
    ] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules))
    payload = pa.struct([("type", pa.string()), ("qty", pa.uint32()), ("n", pa.int64())])
    _struct_run(led, payload, [("k1", "a", NOON, {"type": "buy", "qty": 7, "n": -4}),
                               ("k2", "b", NOON, {"type": "buy", "qty": 2, "n": -4})], flags, env)
    assert _status(led) == {"k1": ("COMPLETED", None, None), "k2": ("COMPLETED", None, None)}
    assert led.sql("SELECT COUNT(*) FROM rule_evaluations WHERE outcome <> 'MATCHED'") == [(0,)]
    assert led.balance("a") == (D(5), D(0), D(0))
    assert led.balance("b") == (D(2), D(0), D(0))
    assert led.state("a") == {("COUNTER", "best"): D(7), ("TAG", "many"): None}
    assert led.state("b") == {("COUNTER", "best"): D(2)}


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s1_4_a_nan_amount_fails_with_the_same_message_on_every_path(tmp_path, name, flags, env, stateful):
    """semantics.md 7: an amount must be a number (> 0, within the scale); NaN is none, so the
    event fails with expression_error (docs/decisions.md). Invariant 1.4: the same message on
    every path. The set-based path (a program whose rules read no state) said "got NaN" where the
    kernel and the row path said "got nan" for the same event."""
    rules = [{"name": "earn", "key": "earn", "order": 10, "condition": 'event.type == "buy"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.a / event.b"}]}] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "u", at(1), "buy", a=0.0, b=0.0), ev("e2", "u", at(2), "buy", a=-1.0, b=0.0)],
            flags=flags, env=env)
    assert _status(led) == {
        "e1": ("FAILED", "expression_error",
               "rule 'earn' action 0: amount expression failed: amount must be a finite number, got NaN"),
        "e2": ("FAILED", "expression_error",
               "rule 'earn' action 0: amount expression failed: amount must be a finite number, got -inf"),
    }
    assert led.sql("SELECT COUNT(*) FROM postings") == [(0,)]


@pytest.mark.parametrize(("payload", "field", "why"), [
    ({"pairs": "size(event.items.map(i, event.items.map(j, j)))"}, "payload.pairs", "cost cannot be bounded"),
    ({"note": 'event.sku + "' + "x" * 4100 + '"'}, "payload.note", "longer than 4096 bytes"),
    ({"deep": {"n": ["(" * 40 + "event.n" + ")" * 40]}}, "payload.deep.n[0]", "nested deeper than 32"),
    ({"ref": "event.referrer +"}, "payload.ref", "syntax error"),
], ids=["cost", "length", "depth", "syntax"])
def test_s6_a_payload_expression_over_a_limit_is_refused_at_load(tmp_path, payload, field, why):
    """semantics.md 6: an expression longer than 4 KiB, nested deeper than 32 or of unbounded cost
    "is rejected when programs are loaded, with a message that says why"; a SCHEDULE_EVENT /
    BROADCAST payload string that reads `event` is such an expression (docs/writing-rules.md),
    and CEL that does not parse is a load error (2.1; docs/decisions.md: text meant as CEL). The
    payload took each of these as literal text: the run exited 0 and the SYSTEM event carried the
    expression's own characters, where every other value field stops the load (exit 2, nothing
    written, naming the file, rule and field)."""
    for action in ({"type": "SCHEDULE_EVENT", "event_name": "later", "delay": "1h", "payload": payload},
                   {"type": "BROADCAST", "event_name": "later", "payload": payload}):
        led = Ledger(tmp_path / action["type"], program([
            {"name": "go", "key": "go", "condition": 'event.type == "go"', "actions": [action]}]))
        out = led.run([ev("e1", "u", at(1), "go", items=[1, 2], sku="a", n=1)], expect=2)
        assert f"shop.yaml: rules[0] (go): actions[0].{field}: " in out["stderr"] and why in out["stderr"], out
        assert not led.db.exists() or led.sql("SELECT COUNT(*) FROM events") == [(0,)]


def test_s7_payload_text_that_is_no_expression_stays_text(tmp_path):
    """The value-field rule for payloads is unchanged by the limits: text that reads no variable
    and calls no function is JSON text as written ("10" stays a string, a word or a sentence
    stays itself), and an expression is evaluated when the action runs."""
    payload = {"n": "10", "word": "gold", "sentence": "thanks, see you soon", "twice": "event.n * 2", "list": ["event.sku"]}
    led = Ledger(tmp_path, program([{"name": "go", "key": "go", "condition": 'event.type == "go"', "actions": [
        {"type": "SCHEDULE_EVENT", "event_name": "later", "delay": "1h", "payload": payload}]}]))
    led.run([ev("e1", "u", at(1), "go", sku="a", n=1)])
    (data,) = led.sql("SELECT event_data FROM scheduled_events")[0]
    assert json.loads(data) == {"type": "later", "n": "10", "word": "gold", "sentence": "thanks, see you soon",
                                "twice": 2.0, "list": ["a"]}


LOT = {"symbol": "PTS", "name": "Points", "inventory_mode": "LOT", "issuance_policy": "UNLIMITED", "scale": 0}


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s7_a_target_id_or_reference_written_as_digits_is_that_text(tmp_path, name, flags, env):
    """semantics.md 7: a value field holds a static value or CEL; a target names a participant by
    `external_id` (ids are text: semantics.md 2.2), and a `reference_id` correlates a hold with its
    outcome. Written as digits they were read as numbers: `external_id: "00123"` credited (and
    created) participant "123", and a CREDIT into HELD with `reference_id: "007"` stamped its lot
    "7", so the release operation naming reference "007" found nothing held. Names are kept as
    written, as a tag already was (docs/decisions.md). By hand: 00123 gets 5; the provisional 40
    is stamped 007 and released by the operation: u has 40 available, nothing held."""
    rules = [
        {"name": "gift", "key": "gift", "order": 10, "condition": 'event.type == "gift"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "5", "target": {"type": "PARTICIPANT", "external_id": "00123"}}]},
        {"name": "pend", "key": "pend", "order": 20, "condition": 'event.type == "pend"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "40", "bucket": "HELD", "reference_id": "007"}]},
    ]
    led = Ledger(tmp_path, program(rules, [LOT], program={"on_unknown_participant": "CREATE"}))
    led.run([ev("e1", "u", at(1), "gift"), ev("e2", "u", at(2), "pend")], flags=flags, env=env)
    assert sorted(led.sql("SELECT external_id FROM participants")) == [("00123",), ("u",)]
    assert led.balance("00123") == (D(5), D(0), D(0))
    assert led.sql("SELECT reference_id FROM lots WHERE reference_id IS NOT NULL") == [("007",)]
    led.run(operations=[{"op": "release", "key": "o1", "who": "u", "when": at(3),
                         "params": {"asset": "PTS", "reference_id": "007"}}])
    assert led.status()["o1"] == ("COMPLETED", None)
    assert led.balance("u") == (D(40), D(0), D(0))
    led.verify()


def test_s7_set_tier_names_a_level_written_as_digits(tmp_path):
    """semantics.md 10 / 7: SET_TIER sets tier `tier` to level `level`; a level key of digits is a
    valid key ("01"). The value-field rule read `level: "01"` as the number 1, and the file failed
    to load: "'1' is not a level of tier t (levels: 01, 02)". By hand: the event sets 01."""
    tiers = [{"key": "t", "display_name": "T", "levels": [{"key": "01", "rank": 1}, {"key": "02", "rank": 2}]}]
    led = Ledger(tmp_path, program([{"name": "up", "key": "up", "condition": 'event.type == "up"',
                                     "actions": [{"type": "SET_TIER", "tier": "t", "level": "01"}]}], tiers=tiers))
    led.run([ev("e1", "u", at(1), "up")])
    assert led.sql("SELECT p.external_id, t.level FROM participant_tiers t JOIN participants p "
                   "ON p.id = t.participant_id") == [("u", "01")]


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s6_timestamp_accessors_in_a_zone_at_the_ends_of_the_range(tmp_path, name, flags, env):
    """semantics.md 6: timestamp accessors take an optional time zone, and CEL's timestamps run
    from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z. In New York the first instant is 19:00 on
    31 December of year 0 (UTC-4:56:02, its local mean time then); in +05:30 the last is in
    year 10000 (cel-go computes both). Reading either stopped the run with an internal error
    (exit 1, OverflowError: Python's datetime holds years 1..9999 only). By hand: both
    conditions match, and the amount is 10000 - 9999 = 1."""
    rules = [
        {"name": "first", "key": "first", "order": 10, "condition":
            'event.type == "edge" && timestamp(event.first).getHours("America/New_York") == 19 && '
            'timestamp(event.first).getFullYear("America/New_York") == 0',
         "actions": [{"type": "TAG", "tag": "first"}]},
        {"name": "last", "key": "last", "order": 20, "condition":
            'event.type == "edge" && timestamp(event.last).getDate("+05:30") == 1',
         "actions": [{"type": "CREDIT", "asset": "PTS",
                      "amount": 'timestamp(event.last).getFullYear("+05:30") - 9999'}]},
    ] + [NEVER]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "u", at(1), "edge", first="0001-01-01T00:00:00Z", last="9999-12-31T23:59:59Z")],
            flags=flags, env=env)
    assert _status(led) == {"e1": ("COMPLETED", None, None)}
    assert led.state("u") == {("TAG", "first"): None}
    assert led.balance("u") == (D(1), D(0), D(0))


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s1_4_a_zone_accessor_after_2099_keeps_daylight_saving_on_every_path(tmp_path, name, flags, env):
    """semantics.md 6 / invariant 1.4: `getHours("America/New_York")` of 2100-07-01T12:30:00Z is 8
    (EDT, UTC-4: the zone's rule, second Sunday of March to first Sunday of November, as
    cel-go and Python's zoneinfo apply it for every later year). The vectorised path (Polars,
    whose zone tables end in 2099) said 7, the row path 8: a rule on a struct timestamp field
    matched or not by path. By hand: the 2100 and the 2099 event match `== 8`, the January
    one is EST (UTC-5): 7."""
    rules = [{"name": "morning", "key": "morning", "order": 10,
              "condition": 'event.at.getHours("America/New_York") == 8',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}]
    led = Ledger(tmp_path, program(rules))
    payload = pa.struct([("type", pa.string()), ("at", pa.timestamp("us", tz="UTC"))])
    _struct_run(led, payload, [
        ("k1", "a", NOON, {"type": "t", "at": datetime(2100, 7, 1, 12, 30, tzinfo=timezone.utc)}),
        ("k2", "b", NOON, {"type": "t", "at": datetime(2099, 7, 1, 12, 30, tzinfo=timezone.utc)}),
        ("k3", "c", NOON, {"type": "t", "at": datetime(2100, 1, 15, 12, 30, tzinfo=timezone.utc)}),
    ], flags, env)
    assert {k: s for k, (s, _, _) in _status(led).items()} == {"k1": "COMPLETED", "k2": "COMPLETED", "k3": "COMPLETED"}
    assert [led.balance(w)[0] for w in "abc"] == [D(1), D(1), D(0)]


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s6_round_of_an_integer_to_very_few_digits_is_zero_not_a_crash(tmp_path, name, flags, env):
    """semantics.md 6: `round(x, n)` rounds half away from zero; an int rounded to more tens than
    any int64 has digits is 0 (docs/decisions.md: integers round exactly in integer arithmetic).
    With `n` from an int64 field, -1000000 or -2^63 stopped the whole run with an internal error
    (exit 1: out of Decimal's exponent range). By hand: round(1234, -2) = 1200 credits 1200, the
    huge ones give 0 (a no-op amount, semantics.md 7) and match `== 0`."""
    rules = [{"name": "r", "key": "r", "order": 10, "condition": 'round(event.q, event.d) == 0 || event.d > -3',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "round(event.q, event.d)"}]}, NEVER]
    led = Ledger(tmp_path, program(rules))
    payload = pa.struct([("type", pa.string()), ("q", pa.int64()), ("d", pa.int64())])
    _struct_run(led, payload, [("k1", "a", NOON, {"type": "t", "q": 1234, "d": -2}),
                               ("k2", "b", NOON, {"type": "t", "q": 1234, "d": -1000000}),
                               ("k3", "c", NOON, {"type": "t", "q": 1234, "d": -2**63})], flags, env)
    assert {k: s for k, (s, _, _) in _status(led).items()} == {"k1": "COMPLETED", "k2": "COMPLETED", "k3": "COMPLETED"}
    assert sorted(led.sql("SELECT e.idempotency_key, x.outcome FROM rule_evaluations x JOIN events e "
                          "ON e.id = x.event_id")) == [("k1", "MATCHED"), ("k2", "MATCHED"), ("k3", "MATCHED")]
    assert [led.balance(w)[0] for w in "abc"] == [D(1200), D(0), D(0)]


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s1_1_a_counter_value_with_more_than_18_decimals_fails_instead_of_being_rounded(tmp_path, name, flags, env):
    """Invariant 1.1 / docs/decisions.md: counters are exact decimals, DECIMAL(38, 18), and a
    value from CEL is its shortest round-trip decimal, added exactly; `set_counter` refuses more
    than 18 decimals. The COUNTER action added 3e-19 as 0 and 0.1234567890123456789 rounded to
    18 decimals, silently (and only when the batch was written: events of the same batch read
    the unrounded sum, so cutting the batch changed what they read). Now the event fails as a
    counter past its 20 integer digits does (amount_out_of_range), and nothing of it is written.
    By hand: e1 and e2 fail, e3 adds 0.5 (the counter of u is 0.5)."""
    rules = [{"name": "count", "key": "count", "order": 10, "condition": 'event.type == "c"',
              "actions": [{"type": "COUNTER", "key": "k", "value": "event.x"}]},
             {"name": "fixed", "key": "fixed", "order": 20, "condition": 'event.type == "f"',
              "actions": [{"type": "COUNTER", "key": "k", "value": "0.1234567890123456789"}]}]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("e1", "u", at(1), "c", x=3e-19), ev("e2", "u", at(2), "f"), ev("e3", "u", at(3), "c", x=0.5)],
            flags=flags, env=env)
    assert _status(led) == {
        "e1": ("FAILED", "amount_out_of_range",
               "rule 'count' action 0: counter value 0.0000000000000000003 has more than 18 decimals; wrap it in round(x, 18)"),
        "e2": ("FAILED", "amount_out_of_range",
               "rule 'fixed' action 0: counter value 0.1234567890123456789 has more than 18 decimals; wrap it in round(x, 18)"),
        "e3": ("COMPLETED", None, None)}
    assert led.state("u") == {("COUNTER", "k"): D("0.5")}


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s7_a_float32_field_is_the_number_its_file_and_payload_show(tmp_path, name, flags, env, stateful):
    """semantics.md 7: numbers from CEL become decimals through their shortest round-trip text.
    A Parquet float32 price of 19.99 (what Spark's FloatType writes; the stored payload shows
    19.99) reached CEL widened to the double 19.989999771118164, so `amount: event.price` failed
    invalid_scale on a 2-decimal asset ("amount 19.989999771118164 has more decimals") and a
    counter took 19.989999771118164. A float32 is read as the double of its shortest text, as a
    DECIMAL field is read as a double (docs/decisions.md). By hand: 19.99 + 0.1 (a float32 in a
    list) is credited; a null nested struct stays absent (`has` is false)."""
    assets = [{"symbol": "CASH", "name": "Cash", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 2}]
    rules = [{"name": "earn", "key": "earn", "order": 10, "condition": '!has(event.extra)',
              "actions": [{"type": "CREDIT", "asset": "CASH", "amount": "event.price"},
                          {"type": "CREDIT", "asset": "CASH", "amount": "event.tips[0]"}]}] + ([NEVER] if stateful else [])
    led = Ledger(tmp_path, program(rules, assets))
    payload = pa.struct([("type", pa.string()), ("price", pa.float32()), ("tips", pa.list_(pa.float32())),
                         ("extra", pa.struct([("rate", pa.float32())]))])
    _struct_run(led, payload, [("k1", "u", NOON, {"type": "t", "price": 19.99, "tips": [0.1], "extra": None})], flags, env)
    assert _status(led) == {"k1": ("COMPLETED", None, None)}
    assert led.balance("u", "CASH") == (D("20.09"), D(0), D(0))
    assert json.loads(led.sql("SELECT event_data FROM events")[0][0]) == {
        "type": "t", "price": 19.99, "tips": [0.1], "extra": None}


@pytest.mark.parametrize(("name", "flags", "env"), PATHS, ids=_IDS)
def test_s6_a_value_of_the_wrong_type_is_named_by_its_cel_type(tmp_path, name, flags, env):
    """semantics.md 6 / 7: a value of the wrong CEL type fails the event (expression_error) or
    the condition (SKIPPED_ERROR) with a message; it named Python's types and printed Python's
    reprs into the ledger: "got datetime.datetime(2025, 3, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo(key=
    'UTC'))", "got NoneType", "got str", and a target given `participant` printed the
    participant's whole state (tags, counters, balances) into `events.error_message`. CEL's type
    names are what a rule's author wrote against (timestamp, map, null, string, double)."""
    rules = [
        {"name": "t1", "key": "t1", "order": 10, "condition": 'event.type == "a"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "1", "target": {"type": "PARTICIPANT", "external_id": "now"}}]},
        {"name": "t2", "key": "t2", "order": 20, "condition": 'event.type == "b"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "1", "target": {"type": "PARTICIPANT", "external_id": "participant"}}]},
        {"name": "t3", "key": "t3", "order": 30, "condition": 'event.type == "c"', "actions": [
            {"type": "CREDIT", "asset": "PTS", "amount": "event.s"}]},
        {"name": "t4", "key": "t4", "order": 40, "condition": 'event.type == "d" ? null : false', "actions": [
            {"type": "TAG", "tag": "x"}]},
        {"name": "t5", "key": "t5", "order": 50, "condition": 'event.type == "e"', "actions": [
            {"type": "TAG", "tag": "event.f"}]},
    ]
    led = Ledger(tmp_path, program(rules))
    led.run([ev("a", "u", at(1), "a"), ev("b", "u", at(2), "b"), ev("c", "u", at(3), "c", s="10"),
             ev("d", "u", at(4), "d"), ev("e", "u", at(5), "e", f=1.5)], flags=flags, env=env)
    assert _status(led) == {
        "a": ("FAILED", "expression_error", "rule 't1' action 0: target must be a non-empty string, got timestamp"),
        "b": ("FAILED", "expression_error", "rule 't2' action 0: target must be a non-empty string, got map"),
        "c": ("FAILED", "expression_error", "rule 't3' action 0: amount expression failed: amount must be a number, got string"),
        "d": ("COMPLETED", None, None),
        "e": ("FAILED", "expression_error", "rule 't5' action 0: tag must be a string, got double"),
    }
    assert led.sql("SELECT x.outcome, x.message FROM rule_evaluations x JOIN events e ON e.id = x.event_id "
                   "WHERE e.idempotency_key = 'd'") == [("SKIPPED_ERROR", "condition must return a bool, got null")]
