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
        'now.getHours("+05:30") == 17', 'now.getHours("+23:59") == 11',
    ]) + [{"name": "amt", "key": "amt", "order": 100, "condition": 'event.kind == "amount"',
           "actions": [{"type": "CREDIT", "asset": "PTS", "amount": 'now.getHours("+24:00")'}]}])
    res, db = _run(tmp_path, spec, [{"kind": "cond"}, {"kind": "amount"}])
    assert res.returncode == 0, res.stdout + res.stderr
    got = _outcomes(db)
    for rule, offset in (("c0", "+25:00"), ("c1", "-05:75")):
        outcome, message = got[("k0", rule)]
        assert outcome == "SKIPPED_ERROR" and offset in message, (rule, outcome, message)
    assert got[("k0", "c2")][0] == got[("k0", "c3")][0] == "MATCHED"
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
    ]
    texts = ["abc\n", "abc", "١٢٣٤٥٦", "123456", "Éa", "x"]
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
    rules = [
        {"name": "r", "key": "r", "order": 10, "condition": 'event.kind == "round"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "round(event.n, -2)"}]},
        {"name": "f", "key": "f", "order": 20, "condition": 'event.kind == "floor"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "floor(event.n)"}]},
        {"name": "c", "key": "c", "order": 30, "condition": 'event.kind == "ceil"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "ceil(event.n)"}]},
        {"name": "one", "key": "one", "order": 40, "condition": 'event.kind == "one"',
         "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "round(event.d)"}]},
        {"name": "neg", "key": "neg", "order": 50, "condition": 'event.kind == "one" && round(-event.d) == -3.0',
         "actions": [{"type": "TAG", "tag": "neg"}]},
        {"name": "int", "key": "int", "order": 60, "condition": 'event.kind == "round" && round(event.n, 0) / 100 == event.n / 100',
         "actions": [{"type": "TAG", "tag": "int"}]},
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

