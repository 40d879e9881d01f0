"""The amount checks exist twice — vectorised (`amounts.check`, over a column) and scalar
(`amounts.check_text`, in the sequential kernel) — and must agree on every amount."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import amounts

texts = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None,
                min_value=Decimal("-1e22"), max_value=Decimal("1e22")).map(lambda d: format(d, "f")),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(lambda x: amounts.python_value_text(x)[0]),
    st.integers(-10**22, 10**22).map(str),
    st.sampled_from(["0", "-0.0", "0.000", "10.0", "10.50", "99999999999999999999", "100000000000000000000",
                     "0.000000000000000001", "1000.00", "1000.01"]),
)
assets = st.builds(
    lambda scale, cap: SimpleNamespace(symbol="X", scale=scale, max_transaction_amount=cap),
    st.integers(0, 18), st.one_of(st.none(), st.sampled_from([Decimal("1000"), Decimal("0.5"), Decimal("50.00")])))


@settings(max_examples=400, deadline=None)
@given(st.lists(texts, min_size=1, max_size=20), assets)
def test_scalar_check_equals_vectorised_check(values, asset):
    codes, _ = amounts.check(pl.Series(values, dtype=pl.String), asset)
    assert codes.to_list() == [amounts.check_text(v, asset) for v in values]
