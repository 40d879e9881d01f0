"""An outsider's scenario tests, round 4: the rule language itself, black box. Expectations come
from semantics.md sections 5-7 and the CEL specification (and its conformance files) alone, not
from engine/cel, tests/oracle or tests/differential; every test runs the real CLI on Parquet
events with a struct `event_data` (so integers stay integers) into a real DuckDB file.

- Timestamp accessors with a fixed-offset time zone that no clock shows (`"+25:00"`): an
  evaluation error of that expression (condition false, SKIPPED_ERROR; an amount fails the event
  with `expression_error`), not a crashed run.
- `matches` is RE2 (CEL spec, "Everything else follows the CEL specification", semantics.md 6):
  `\\d` and `\\w` are ASCII, `$` is the end of the text, `\\p{L}` works, look-aheads are an error,
  whichever path (vectorised or row) evaluates the rule.
- `round(x, n)` "half away from zero, on the decimal value", `floor`, `ceil` on integers: exact
  (no trip through a 53-bit float), so an amount computed from a large integer is credited to the
  unit; `round(x)` is `round(x, 0)`.
- Numbers written as text in a program file (`max_transaction_amount`, budget `limit`, `unit_cost`,
  tier thresholds, static amounts; whole numbers such as `scale`, `order`, `max_total`): ASCII
  decimal text only, as operation params (semantics.md
  2.1 and 13: a program file that does not validate stops the run, nothing written). `"5_000"`
  was read as 5000 and `"١٢"` as 12.
- CEL `timestamp()` / `duration()` text and Go durations in program files take ASCII digits
  (RFC 3339, Go): `duration("١h")` was one hour, `reset_after: "٢h"` two.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.helpers.io import cli, query, write_program

T0 = "2025-03-01T12:00:00Z"
PTS = {"symbol": "PTS", "name": "Points", "inventory_mode": "SIMPLE", "issuance_policy": "UNLIMITED", "scale": 2}


def _program(rules: list[dict], assets: list[dict] | None = None, **extra) -> dict:
    return {"program": {"key": "p", "name": "P", "on_unknown_participant": "CREATE", "status": "ACTIVE"},
            "assets": assets or [PTS], "rules": rules, **extra}


def _events(path: Path, rows: list[dict]) -> Path:
    """One event per payload, a struct `event_data` (Parquet ints stay CEL ints), each from its own
    participant u<i>."""
    pq.write_table(pa.Table.from_pylist([
        {"program_id": "p", "idempotency_key": f"k{i}", "external_id": f"u{i}", "event_timestamp": T0,
         "event_data": data} for i, data in enumerate(rows)]), path)
    return path


def _run(tmp: Path, spec: dict, rows: list[dict]):
    db = tmp / "w.duckdb"
    res = cli("run", "--programs", str(write_program(tmp / "prog" / "p.yaml", spec)),
              "--events", str(_events(tmp / "e.parquet", rows)), "--db", str(db))
    return res, db


def _outcomes(db: Path) -> dict[tuple[str, str], tuple[str, str | None]]:
    """{(event key, rule key): (outcome, message)} from rule_evaluations (rules that did not match
    have no row, semantics.md 5)."""
    return {(k, r): (o, m) for k, r, o, m in query(db, """
        SELECT e.idempotency_key, r.key, re.outcome, re.message FROM rule_evaluations re
        JOIN events e ON e.id = re.event_id JOIN rules r ON r.id = re.rule_id""")}


def _statuses(db: Path) -> dict[str, tuple[str, str | None, str | None]]:
    return {k: (s, c, m) for k, s, c, m in query(
        db, "SELECT idempotency_key, status, error_code, error_message FROM events")}


def _tag_rules(conditions: list[str]) -> list[dict]:
    return [{"name": f"c{i}", "key": f"c{i}", "order": 10 + i, "condition": c,
             "actions": [{"type": "TAG", "tag": f"t{i}"}]} for i, c in enumerate(conditions)]


# ---------------------------------------------------------------------------------------------
# Timestamp accessors: a fixed offset out of range
# ---------------------------------------------------------------------------------------------

def test_time_zone_offset_no_clock_shows_is_an_evaluation_error_not_a_crash(tmp_path):
    # CEL's fixed time zones are +-HH:MM; "+25:00" and "-05:75" are bad arguments of the call: the
    # condition is false and recorded (semantics.md 5), an amount fails its event
    # (expression_error, semantics.md 7). Valid offsets around them still work (12:00Z at +05:30
    # is 17h, at +23:59 it is 11h the next day). The run used to stop with exit 1.
    spec = _program(_tag_rules([
        'now.getHours("+25:00") >= 0', 'now.getHours("-05:75") >= 0',
        'now.getHours("+05:30") == 17', 'now.getHours("+23:59") == 11', 'now.getHours("+٠٥:٣٠") >= 0',
    ]) + [{"name": "amt", "key": "amt", "order": 100, "condition": 'event.kind == "amount"',
           "actions": [{"type": "CREDIT", "asset": "PTS", "amount": 'now.getHours("+24:00")'}]}])
    res, db = _run(tmp_path, spec, [{"kind": "cond"}, {"kind": "amount"}])
    assert res.returncode == 0, res.stdout + res.stderr
    got = _outcomes(db)
    for rule, offset in (("c0", "+25:00"), ("c1", "-05:75")):
        outcome, message = got[("k0", rule)]
        assert outcome == "SKIPPED_ERROR" and offset in message, (rule, outcome, message)
    assert got[("k0", "c2")][0] == got[("k0", "c3")][0] == "MATCHED"
    assert got[("k0", "c4")][0] == "SKIPPED_ERROR"  # FixedTZ digits are ASCII ones (no Arabic-Indic)
    status = _statuses(db)
    assert status["k0"] == ("COMPLETED", None, None)
    assert status["k1"][:2] == ("FAILED", "expression_error") and "+24:00" in status["k1"][2]
    assert query(db, "SELECT count(*) FROM journal_entries")[0][0] == 0


# ---------------------------------------------------------------------------------------------
# matches: RE2, on every path
# ---------------------------------------------------------------------------------------------

def test_matches_is_re2_on_every_path(tmp_path):
    # The CEL spec's `matches` is RE2, searching anywhere in the text (partial match). In RE2
    # `\d` is [0-9] and `\w` [0-9A-Za-z_] (Arabic-Indic digits and accented letters are neither),
    # `$` without (?m) is the end of the text only (not before a final newline), `\p{L}` is any
    # letter, and look-aheads do not exist (an invalid pattern: the condition errors). c0 reads
    # only `event` and takes the vectorised path; c1 asks the same through `get`, which only the
    # row path evaluates: both must agree (semantics.md 1.4). Before, the row path (Python's `re`)
    # matched "abc\n" and "١٢٣٤٥٦" and "Éa", and rejected `\p{L}`.
    conds = [
        r'event.s.matches("^abc$")', r'get(event, "s", "").matches("^abc$")',
        r'event.s.matches("^\\d{6}$")', r'get(event, "s", "").matches("^\\d{6}$")',
        r'event.s.matches("^\\w")', r'event.s.matches("^\\p{L}")', r'event.s.matches("bc")',
        r'event.s.matches("a(?=b)")',
        r'event.s.matches("^a(?s)+$")', r'get(event, "s", "").matches("^a(?s)+$")',
    ]
    texts = ["abc\n", "abc", "١٢٣٤٥٦", "123456", "Éa", "x", "aa"]
    res, db = _run(tmp_path, _program(_tag_rules(conds)), [{"s": t} for t in texts])
    assert res.returncode == 0, res.stdout + res.stderr
    got = _outcomes(db)
    matched = {(k, r) for (k, r), (o, _) in got.items() if o == "MATCHED"}
    expected = {
        ("k1", "c0"), ("k1", "c1"),                    # "abc" only
        ("k3", "c2"), ("k3", "c3"),                    # ASCII digits only
        ("k0", "c4"), ("k1", "c4"), ("k3", "c4"), ("k5", "c4"),  # \w: a, a, 1, x (not É, not ١)
        ("k4", "c5"), ("k0", "c5"), ("k1", "c5"), ("k5", "c5"),  # \p{L}: letters of any script
        ("k0", "c6"), ("k1", "c6"),                    # partial match
    }
    # "^a(?s)+$" is valid RE2 (the flag group is no atom: a+), which Rust's regex refuses: the
    # vectorised path must hand it to the row path, not stop the run (exit 1)
    expected |= {("k6", "c4"), ("k6", "c5"), ("k6", "c8"), ("k6", "c9")}
    assert matched == expected, (sorted(matched - expected), sorted(expected - matched))
    for i in range(len(texts)):
        outcome, message = got[(f"k{i}", "c7")]
        assert outcome == "SKIPPED_ERROR" and "invalid regular expression" in message, (outcome, message)
    assert "re2.cc" not in res.stderr  # a bad pattern is reported per event, not logged per row


# ---------------------------------------------------------------------------------------------
# round / floor / ceil on integers: exact
# ---------------------------------------------------------------------------------------------

def test_round_floor_ceil_of_an_integer_are_exact_and_round_takes_one_argument(tmp_path):
    # semantics.md 6: round is "on the decimal value"; semantics.md 1.1: amounts are exact from
    # the moment an action's amount is decided. An integer from a Parquet int64 field is exact in
    # CEL, so rounding it must not go through a double (53 bits): 123456789012345678 to hundreds is
    # 123456789012345700 (it was 123456789012345680), floor/ceil of 9007199254740993 are itself
    # (they were ...992). round(x) without n rounds to a whole number, half away from zero (it was
    # "no such overload": every event failed); decided in docs/decisions.md, as the integer's type.
    big = 123456789012345678
    odd = 2 ** 53 + 1
    def rule(key: str, order: int, condition: str, action: dict) -> dict:
        return {"name": key, "key": key, "order": order, "condition": condition, "actions": [action]}

    credit = lambda amount: {"type": "CREDIT", "asset": "PTS", "amount": amount}  # noqa: E731
    rules = [rule(k, 10 * i, f'event.kind == "{kind}"', credit(amount)) for i, (k, kind, amount) in enumerate(
        [("r", "round", "round(event.n, -2)"), ("f", "floor", "floor(event.n)"), ("c", "ceil", "ceil(event.n)"),
         ("one", "one", "round(event.d)")], start=1)] + [
        rule("neg", 50, 'event.kind == "one" && round(-event.d) == -3.0', {"type": "TAG", "tag": "neg"}),
        rule("int", 60, 'event.kind == "round" && round(event.n, 0) / 100 == event.n / 100', {"type": "TAG", "tag": "int"}),
    ]
    res, db = _run(tmp_path, _program(rules), [
        {"kind": "round", "n": big, "d": 0.0}, {"kind": "floor", "n": odd, "d": 0.0},
        {"kind": "ceil", "n": odd, "d": 0.0}, {"kind": "one", "n": 0, "d": 2.5}])
    assert res.returncode == 0, res.stdout + res.stderr
    status = _statuses(db)
    assert all(s == ("COMPLETED", None, None) for s in status.values()), status
    got = {e: Decimal(a) for e, a in query(db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT'")}
    assert got == {"u0": Decimal(123456789012345700), "u1": Decimal(odd), "u2": Decimal(odd), "u3": Decimal(3)}
    assert {(k, r) for (k, r), (o, _) in _outcomes(db).items() if o == "MATCHED" and r in ("neg", "int")} == {
        ("k3", "neg"), ("k0", "int")}


# ---------------------------------------------------------------------------------------------
# Numbers written as text in a program file
# ---------------------------------------------------------------------------------------------

TIER = {"key": "club", "name": "Club", "levels": [
    {"key": "silver", "rank": 1, "qualification": {"mode": "ALL", "criteria": [
        {"counter": "n", "operator": ">=", "threshold": "3"}]}}]}
CREDIT_ONE = {"name": "r", "key": "r", "condition": "true", "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"}]}


def _with(field: str, text: str) -> tuple[dict, str]:
    """The program with `text` written in `field`, and the words the load error must say."""
    if field == "max_transaction_amount":
        return _program([CREDIT_ONE], [{**PTS, "max_transaction_amount": text}]), "max_transaction_amount"
    if field == "limit":
        return _program([{**CREDIT_ONE, "budgets": [{"asset": "PTS", "limit": text}]}]), "budgets[0].limit"
    if field == "scale":
        return _program([CREDIT_ONE], [{**PTS, "scale": text}]), "scale"
    if field == "order":
        return _program([{**CREDIT_ONE, "order": text}]), "order"
    if field == "max_total":
        return _program([CREDIT_ONE], rewards=[{"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED",
                                                "asset": "PTS", "unit_cost": "2", "max_total": text}]), "max_total"
    if field == "amount":
        return _program([{**CREDIT_ONE, "actions": [{"type": "CREDIT", "asset": "PTS", "amount": text}]}]), "amount"
    if field == "unit_cost":
        return _program([CREDIT_ONE], rewards=[{"key": "mug", "name": "Mug", "redemption_type": "UNIT_BASED",
                                                "asset": "PTS", "unit_cost": text}]), "unit_cost"
    tier = json.loads(json.dumps(TIER))
    tier["levels"][0]["qualification"]["criteria"][0]["threshold"] = text
    return _program([CREDIT_ONE], tiers=[tier]), "threshold"


def test_program_file_numbers_are_ascii_decimal_text(tmp_path):
    # A financial-grade user expects a limit, cost or amount to be the number the file shows, and a
    # typo to be refused, not read as another number: Python's Decimal() takes digit separators
    # ("5_000", a typo of "5.000" in many locales) and any Unicode digits ("١٢", "５"). Operation
    # params already refuse them (docs/decisions.md "Numbers in operation params"); the program
    # file is held to the same text: exit 2, naming the field, nothing written (semantics.md 13).
    # Sign, point and exponent are still numbers where operations take them.
    for i, (field, text) in enumerate([("max_transaction_amount", "5_000"), ("max_transaction_amount", "５"),
                                       ("limit", "١٢"), ("limit", "1_0"), ("amount", "١٢"),
                                       ("unit_cost", "1_5"), ("threshold", "٣"), ("scale", "٢"),
                                       ("order", "1_0"), ("max_total", "1_000")]):
        spec, where = _with(field, text)
        tmp = tmp_path / f"bad{i}"
        res, db = _run(tmp, spec, [{"kind": "x"}])
        assert res.returncode == 2, (field, text, res.stdout, res.stderr)
        assert where in res.stderr and text in res.stderr, (field, text, res.stderr)
        assert not db.exists(), (field, text)
    for i, (field, text, want) in enumerate([("max_transaction_amount", " 1e3 ", "1000"), ("limit", "+5", None),
                                             ("unit_cost", "2.50", None), ("threshold", "3", None),
                                             ("scale", " 2 ", None), ("order", "+7", None), ("max_total", "10", None)]):
        spec, _ = _with(field, text)
        res, db = _run(tmp_path / f"good{i}", spec, [{"kind": "x"}])
        assert res.returncode == 0, (field, text, res.stdout, res.stderr)
        if want:
            assert query(db, "SELECT max_transaction_amount FROM assets")[0][0] == Decimal(want)


def test_timestamps_and_durations_are_written_in_ascii_digits(tmp_path):
    # RFC 3339 and Go durations are ASCII text; CEL's timestamp() and duration() of other digits
    # fail (the condition errors, semantics.md 5), as the oracle's CEL does. They used to read
    # "١h" as 1h and "٢٠٢٥-..." as 2025. A program file's Go duration is held to the same text.
    conds = ['duration(event.d) == duration("1h")', 'timestamp(event.t) == now']
    res, db = _run(tmp_path / "cel", _program(_tag_rules(conds)), [
        {"d": "1h", "t": T0}, {"d": "١h", "t": "٢٠٢٥-03-01T12:00:00Z"}])
    assert res.returncode == 0, res.stdout + res.stderr
    got = _outcomes(db)
    assert got[("k0", "c0")][0] == got[("k0", "c1")][0] == "MATCHED"
    assert got[("k1", "c0")] == ("SKIPPED_ERROR", "invalid duration '١h'")
    assert got[("k1", "c1")][0] == "SKIPPED_ERROR" and "invalid timestamp" in got[("k1", "c1")][1]
    counter = {"type": "COUNTER", "key": "visits", "value": "1", "reset_after": "٢h"}
    res, db = _run(tmp_path / "file", _program([{**CREDIT_ONE, "actions": [counter]}]), [{"kind": "x"}])
    assert res.returncode == 2 and "reset_after" in res.stderr and "٢h" in res.stderr, res.stdout + res.stderr
    assert not db.exists()
