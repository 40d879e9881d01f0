"""Amount checks (semantics.md 7): exact decimals via the shortest round-trip text; > 0; at most
the asset's scale; at most max_transaction_amount; exactly 0 is a no-op. Checked on the helpers
and through whole runs on both evaluation paths."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from engine import amounts
from engine.catalog import load_catalog
from engine.catalog.models import Asset
from engine.errors import CatalogError
from engine.run import run_batch
from tests.helpers.io import event, program_spec, query, write_events, write_program

CASH = Asset(symbol="CASH", name="Cash", scale=2, max_transaction_amount=Decimal("50"))
PTS = Asset(symbol="PTS", name="Points", scale=0)


def check_one(text: str, asset: Asset):
    code, value = amounts.check(pl.Series([text], dtype=pl.String), asset)
    return code[0], value[0]


@pytest.mark.parametrize("text,asset,code", [
    ("10", PTS, None), ("1.5", PTS, "invalid_scale"), ("1.50", CASH, None), ("1.500", CASH, None),
    ("1.505", CASH, "invalid_scale"), ("0.30000000000000004", CASH, "invalid_scale"), ("0.3", CASH, None),
    ("-1", PTS, "amount_not_positive"), ("-0.01", CASH, "amount_not_positive"),
    ("0", PTS, "zero"), ("0.00", CASH, "zero"), ("50", CASH, None), ("50.00", CASH, None),
    ("50.01", CASH, "max_transaction_amount_exceeded"), ("1000", CASH, "max_transaction_amount_exceeded"),
    ("123456789012345678", PTS, None),
])
def test_check(text, asset, code):
    got_code, value = check_one(text, asset)
    assert got_code == code
    if code is None:
        assert Decimal(value) == Decimal(text)
    else:
        assert value is None


@pytest.mark.parametrize("x", [0.1 + 0.2, 0.1, 49.99, 1e-7, 1e20, 123456789.123, 2.675, 1.005, 5.0, 1 / 3])
def test_shortest_repr_both_paths(x):
    text, err = amounts.python_value_text(x)
    assert err is None
    assert Decimal(text) == Decimal(repr(x))  # the shortest round-trip text, exactly
    assert "e" not in text.lower()
    series, errs = amounts.series_text(pl.Series([x], dtype=pl.Float64))
    assert errs[0] is None
    assert Decimal(series[0]) == Decimal(text)


def test_point_one_plus_point_two():
    text, _ = amounts.python_value_text(0.1 + 0.2)
    assert text == "0.30000000000000004"
    assert check_one(text, CASH)[0] == "invalid_scale"


@pytest.mark.parametrize("v", [float("nan"), float("inf"), "10", True, None])
def test_non_numbers_rejected(v):
    text, err = amounts.python_value_text(v)
    assert text is None and err


@pytest.mark.parametrize("row_path", [False, True])
@pytest.mark.parametrize("amount, code", [("1.5", "invalid_scale"), ("-1", "amount_not_positive"),
                                          ("100", "max_transaction_amount_exceeded")])
def test_static_amounts_fail_the_action_when_it_runs(tmp_path, amount, code, row_path):
    """semantics.md 7: an invalid amount fails the action (and so the event), static or not;
    it is not one of the load-time errors of 2.1."""
    spec = program_spec("shop", [{"name": "r", "condition": "true",
                                  "actions": [{"type": "CREDIT", "asset": "PTS", "amount": amount}]}],
                        assets=[{"symbol": "PTS", "name": "Points", "scale": 0, "max_transaction_amount": "50"}])
    programs = write_program(tmp_path / "shop.yaml", spec)
    load_catalog(programs)
    db = tmp_path / "l.duckdb"
    run_batch(programs, write_events(tmp_path / "e.parquet", [
        event("shop", "k1", "u1", "2025-01-01T00:00:00Z", {"type": "x"})]), db, row_path=row_path)
    assert query(db, "SELECT status, error_code FROM events") == [("FAILED", code)]
    assert query(db, "SELECT COUNT(*) FROM journal_entries")[0][0] == 0


@pytest.mark.parametrize("amount", ["(2 + 3)", "gold", "vip-2025"])
def test_amount_that_is_literal_text_is_a_load_error(tmp_path, amount):
    """By the value-field rule, text that reads no variable and calls no function is literal text."""
    spec = program_spec("shop", [{"name": "r", "condition": "true",
                                  "actions": [{"type": "CREDIT", "asset": "PTS", "amount": amount}]}])
    with pytest.raises(CatalogError, match="neither a number nor a CEL expression"):
        load_catalog(write_program(tmp_path / "shop.yaml", spec))


def test_static_zero_loads(tmp_path):
    spec = program_spec("shop", [{"name": "r", "condition": "true",
                                  "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "0"}]}])
    load_catalog(write_program(tmp_path / "shop.yaml", spec))


# ---------------------------------------------------------------------------------------------
# Through a run, on both paths


CASES = [
    # (amount expression, event payload, expected: Decimal credited or failure code)
    ("event.a + event.b", {"a": 0.1, "b": 0.2}, "invalid_scale"),
    ("round(event.a + event.b, 2)", {"a": 0.1, "b": 0.2}, Decimal("0.3")),
    ("round(event.x, 2)", {"x": 2.675}, Decimal("2.68")),      # half away from zero on the decimal value
    ("round(event.x, 2)", {"x": 1.005}, Decimal("1.01")),
    ("round(event.x, 0)", {"x": 0.5}, "zero_or_one"),
    ("event.x", {"x": 49.99}, Decimal("49.99")),
    ("event.x * 3", {"x": 0.1}, "invalid_scale"),              # 0.30000000000000004
    ("event.x", {"x": 50}, Decimal("50")),
    ("event.x + 0.01", {"x": 50}, "max_transaction_amount_exceeded"),
    ("event.x - 5", {"x": 2}, "amount_not_positive"),
    ("event.x - event.x", {"x": 7.25}, None),                 # exactly 0: a no-op, not a failure
    ("event.missing", {"x": 1}, "expression_error"),
    ("event.s", {"s": "12"}, "expression_error"),             # not a number
    ("event.x", {"x": 1e-7}, "invalid_scale"),
]


@pytest.mark.parametrize("row_path", [False, True], ids=["vectorised", "row"])
def test_amounts_through_a_run(tmp_path, row_path):
    rules = [{"name": f"case {i}", "key": f"c{i}", "order": 10 * (i + 1), "condition": f'event.case == "{i}"',
              "actions": [{"type": "CREDIT", "asset": "CASH", "amount": expr}]} for i, (expr, _, _) in enumerate(CASES)]
    spec = program_spec("shop", rules, assets=[{"symbol": "CASH", "name": "Cash", "scale": 2,
                                                 "max_transaction_amount": "50"}])
    progs = write_program(tmp_path / "p" / "shop.yaml", spec)
    rows = [event("shop", f"k{i}", f"user{i}", "2025-11-01T00:00:00Z", {"case": str(i), **payload})
            for i, (_, payload, _) in enumerate(CASES)]
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e" / "x.parquet", rows), db, row_path=row_path)
    status = {k: (s, c) for k, s, c in query(db, "SELECT idempotency_key, status, error_code FROM events")}
    credited = {e: Decimal(a) for e, a in query(
        db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT'")}
    for i, (expr, payload, expected) in enumerate(CASES):
        got = (status[f"k{i}"], credited.get(f"user{i}"))
        if expected == "zero_or_one":  # round(0.5, 0) is 1 (half away from zero)
            assert got == (("COMPLETED", None), Decimal(1)), expr
        elif expected is None:
            assert got == (("COMPLETED", None), None), expr
        elif isinstance(expected, Decimal):
            assert got == (("COMPLETED", None), expected), expr
        else:
            assert got == (("FAILED", expected), None), expr
    # zero amounts write no entry at all
    assert query(db, "SELECT COUNT(*) FROM journal_entries j JOIN postings p ON p.journal_entry_id = j.id "
                     "WHERE p.amount = 0") == [(0,)]


def test_failed_action_rolls_back_whole_event(tmp_path):
    """An event whose second action fails applies nothing from its first (atomic events)."""
    rules = [{"name": "good", "order": 10, "condition": "true",
              "actions": [{"type": "CREDIT", "asset": "CASH", "amount": "5"}]},
             {"name": "bad", "order": 20, "condition": "has(event.x)",
              "actions": [{"type": "CREDIT", "asset": "CASH", "amount": "event.x"}]}]
    spec = program_spec("shop", rules, assets=[{"symbol": "CASH", "name": "Cash", "scale": 2}])
    progs = write_program(tmp_path / "p" / "shop.yaml", spec)
    db = tmp_path / "l.duckdb"
    run_batch(progs, write_events(tmp_path / "e" / "x.parquet", [
        event("shop", "ok", "a", "2025-11-01T00:00:00Z", {"x": 1.25}),
        event("shop", "bad", "b", "2025-11-01T00:00:00Z", {"x": 1.255}),
    ]), db)
    assert dict(query(db, "SELECT external_id, available FROM balances WHERE entity_type = 'PARTICIPANT'")) == \
        {"a": Decimal("6.25")}
    assert dict(query(db, "SELECT idempotency_key, error_code FROM events")) == {"ok": None, "bad": "invalid_scale"}


def test_insufficient_balance_and_allow_negative(tmp_path):
    rules = [{"name": "earn", "order": 10, "condition": 'event.type == "earn"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "event.n"}]},
             {"name": "spend", "order": 20, "condition": 'event.type == "spend"',
              "actions": [{"type": "CREDIT", "asset": "PTS", "amount": "1"},
                          {"type": "DEBIT", "asset": "PTS", "amount": "event.n"}]},
             {"name": "claw", "order": 30, "condition": 'event.type == "claw"',
              "actions": [{"type": "DEBIT", "asset": "PTS", "amount": "event.n", "allow_negative": True}]}]
    progs = write_program(tmp_path / "p" / "shop.yaml", program_spec("shop", rules))
    rows = [
        event("shop", "1", "a", "2025-11-01T01:00:00Z", {"type": "earn", "n": 10}),    # a: 10
        event("shop", "2", "a", "2025-11-01T02:00:00Z", {"type": "spend", "n": 12}),   # 10+1-12 < 0: FAILED, all rolled back
        event("shop", "3", "a", "2025-11-01T03:00:00Z", {"type": "spend", "n": 11}),   # 10+1-11 = 0: ok
        event("shop", "4", "a", "2025-11-01T04:00:00Z", {"type": "claw", "n": 4}),     # -4 allowed
        event("shop", "5", "a", "2025-11-01T05:00:00Z", {"type": "spend", "n": 1}),    # -4+1-1 < 0: FAILED
    ]
    for row_path in (False, True):
        db = tmp_path / f"l{row_path}.duckdb"
        run_batch(progs, write_events(tmp_path / "e" / "x.parquet", rows), db, row_path=row_path)
        assert dict(query(db, "SELECT idempotency_key, error_code FROM events")) == {
            "1": None, "2": "insufficient_balance", "3": None, "4": None, "5": "insufficient_balance"}
        assert query(db, "SELECT available FROM balances WHERE external_id = 'a'") == [(Decimal(-4),)]
