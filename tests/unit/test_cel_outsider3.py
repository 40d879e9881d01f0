"""Pure-expression findings of the third outsider round over CEL (semantics.md 6): each case on
the row backend, the Polars backend (a null there is handed to the row path, docs/cel.md) and
the cel-python oracle (tests/oracle), with the value computed by hand."""

from datetime import datetime, timezone

import polars as pl
import pytest

from engine.cel import CelUint, PolarsContext, compile_cel
from tests.oracle.cel import compile_expr, to_cel

NOW = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize("text,expected", [
    # int and uint are ordered exactly (CEL's heterogeneous ordering); the operand picked keeps
    # its own kind, as cel-go's math.least / math.greatest give it
    ("min(1, 2u)", 1),
    ("min(2u, 1)", 1),
    ("max(-1, 2u)", CelUint(2)),
    ("max(2, 2u)", 2),  # a tie keeps the first
    ("max(18446744073709551615u, 9223372036854775807)", CelUint(18446744073709551615)),
    ("min(-9223372036854775808, 0u)", -9223372036854775808),
])
def test_min_max_of_an_int_and_a_uint(text, expected):
    got = compile_cel(text).evaluate({"now": NOW})
    assert got == expected and type(got) is type(expected)
    oracle = compile_expr(text).evaluate({}, NOW)
    assert int(oracle) == int(expected) and ("Uint" in type(oracle).__name__) == isinstance(expected, CelUint)


def test_min_max_of_an_int_and_a_uint_column_is_handed_to_the_row_path():
    """The Polars half cannot type a result whose kind depends on the row: it gives null (error
    or absent), which the engine evaluates per row; it never gives another value."""
    df = pl.DataFrame({"event": [{"q": 7, "n": -4}, {"q": 2, "n": 9}]},
                      schema={"event": pl.Struct({"q": pl.UInt32, "n": pl.Int64})})
    ctx = PolarsContext({"event": (pl.col("event"), df.schema["event"])})
    for text, rows in (("min(event.q, 5)", [5, CelUint(2)]), ("max(event.n, event.q)", [CelUint(7), 9])):
        out = df.with_columns(compile_cel(text).to_polars(ctx).alias("r"))["r"].to_list()
        assert out == [None, None]
        events = [{"q": CelUint(e["q"]), "n": e["n"]} for e in df["event"].to_list()]  # as the engine reads them
        got = [compile_cel(text).evaluate({"event": e}) for e in events]
        assert got == rows and [type(g) for g in got] == [type(r) for r in rows]
        assert [int(compile_expr(text).evaluate({"event": to_cel(e)}, NOW)) for e in events] == rows


@pytest.mark.parametrize("text,expected", [
    # CEL's doubles divide by IEEE 754 (a signed infinity, NaN for 0/0); cel-python gave +inf for
    # every one of these, so the oracle disagreed with the engine on `event.x / 0.0 < 0.0`
    ("-1.5 / 0.0", float("-inf")), ("1.5 / -0.0", float("-inf")), ("-1 / 0.0", float("-inf")),
    ("1.0 / 0.0", float("inf")), ("0.0 / 0.0", float("nan")),
    ("ceil(-0.5)", -0.0),  # the oracle's math.ceil dropped the sign of zero
])
def test_the_oracle_divides_doubles_and_rounds_zero_as_the_engine(text, expected):
    import math

    for got in (compile_cel(text).evaluate({"now": NOW}), float(compile_expr(text).evaluate({}, NOW))):
        assert (math.isnan(got) and math.isnan(expected)) or (got == expected and
                                                               math.copysign(1, got) == math.copysign(1, expected))
