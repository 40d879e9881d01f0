"""Turning CEL results into exact ledger amounts (semantics.md 7).

A number from CEL becomes a decimal through its shortest round-trip text (Python's `repr`, and
Polars' float formatting, which is the same shortest representation), never through binary
arithmetic. Both evaluation paths hand their results to the same `check` so that validation
exists once.

Ledger amounts are DECIMAL(38, 18): scale 18 is the largest asset scale, which leaves 20 integer
digits.
"""

from __future__ import annotations

import math
import operator
import re
from decimal import ROUND_FLOOR, Context, Decimal, InvalidOperation
from typing import TYPE_CHECKING

import polars as pl

from engine.cel.values import type_name

if TYPE_CHECKING:
    from engine.catalog.models import Asset

DECIMAL = pl.Decimal(38, 18)
MAX_INTEGER_DIGITS = 20
LIMIT = Decimal(10) ** MAX_INTEGER_DIGITS  # the first value DECIMAL(38, 18) cannot hold
QUANTUM = Decimal(10) ** -18  # the step between two values DECIMAL(38, 18) holds
COUNTER_SCALE = 18  # the decimals a counter (DECIMAL(38, 18)) holds
COMPARE = {">=": operator.ge, ">": operator.gt, "==": operator.eq, "<=": operator.le, "<": operator.lt}

#: failure codes of semantics.md 7, and the zero no-op
NOT_POSITIVE = "amount_not_positive"
INVALID_SCALE = "invalid_scale"
MAX_EXCEEDED = "max_transaction_amount_exceeded"
OUT_OF_RANGE = "amount_out_of_range"
EXPRESSION_ERROR = "expression_error"
ZERO = "zero"


#: a number written as text: ASCII digits, optional sign, point and exponent (JSON's numbers and
#: Scrip's decimal strings, with a leading `+` or a bare point also read)
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def compare(x: pl.Series, op: str, bound: Decimal) -> pl.Series:
    """`x op bound`, exactly, for DECIMAL(38, 18) values `x` and any finite decimal `bound` from a
    program file (a tier threshold, a budget limit). Polars cannot be handed such a bound as it
    is: it compares with a Decimal whose exponent is positive as if the exponent were 0
    (`x >= Decimal('1E+3')` is `x >= 1`, and YAML's `1e3` is the text '1e3'), and holds none of
    more than 38 digits. So a bound past what `x` can hold is always or never met, and any other
    becomes the equivalent test against the nearest value at or below it on x's 18-decimal grid."""
    if abs(bound) >= LIMIT:
        met = op in ("<", "<=") if bound > 0 else op in (">", ">=")
        return x.is_not_null() & met
    floor = bound.quantize(QUANTUM, rounding=ROUND_FLOOR, context=Context(prec=60))
    if floor != bound:  # between floor and floor + 10**-18, where no x lies
        if op == "==":
            return x.is_not_null() & False
        op = ">" if op in (">", ">=") else "<="
    return COMPARE[op](x, floor)


def decimal_text(text: str) -> Decimal:
    """The exact value of a number an input row writes as text (operation params), spaces around
    allowed. `Decimal()` alone also reads Python's digit separators and any Unicode digits, and
    NaN / Infinity: '1_00', a typo for '1.00', moved 100. Raises InvalidOperation for those."""
    if not _DECIMAL_TEXT.fullmatch(text.strip()):
        raise InvalidOperation(text)
    return Decimal(text.strip())


def python_value_text(value: object, noun: str = "amount") -> tuple[str | None, str | None]:
    """(plain decimal text, None) for a CEL number, else (None, error message naming the field
    as `noun`: a counter's or an attribute's value is no amount)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{noun} must be a number, got {type_name(value)}"
    if isinstance(value, float):
        if not math.isfinite(value):  # named as series_text's Polars text names it: NaN, inf, -inf
            return None, f"{noun} must be a finite number, got {'NaN' if math.isnan(value) else value}"
        # its shortest round-trip decimal (semantics.md 7): 300, not Python's "300.0"
        return plain(Decimal(repr(value))), None
    return str(int(value)), None


def series_text(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Vectorised `python_value_text` over a numeric Series (null = evaluation error)."""
    n = len(values)
    if values.dtype.is_integer():
        return values.cast(pl.String), pl.Series([None] * n, dtype=pl.String)
    if not values.dtype.is_float():
        return (
            pl.Series([None] * n, dtype=pl.String),
            pl.Series([f"amount must be a number, got {values.dtype}"] * n, dtype=pl.String),
        )
    finite = values.is_finite()
    text = values.cast(pl.String).zip_with(finite.fill_null(False), pl.Series([None] * n, dtype=pl.String))
    exp_idx = text.str.contains("[eE]").fill_null(False).arg_true()
    if len(exp_idx):  # exponent notation is rare (very large or tiny values): fix those in Python
        text = text.scatter(exp_idx, [_plain(t) for t in text.gather(exp_idx).to_list()])
    text = text.str.replace(r"\.0$", "")  # a whole double: 300, as python_value_text writes it
    error = (
        pl.select(
            pl.when(values.is_not_null() & ~finite)
            .then(pl.concat_str(pl.lit("amount must be a finite number, got "), values.cast(pl.String)))
            .otherwise(None)
        ).to_series()
    )
    return text, error


def check(text: pl.Series, asset: Asset) -> tuple[pl.Series, pl.Series]:
    """(failure code or null, DECIMAL amount or null) for decimal texts, per asset rules."""
    frame = pl.DataFrame({"t": text})
    parts = pl.col("t").str.extract_groups(r"^(-?)0*(\d*?)(?:\.(\d*?)0*)?$")
    out = frame.with_columns(
        neg=parts.struct.field("1") == "-",
        int_digits=parts.struct.field("2").str.len_chars(),
        frac_digits=parts.struct.field("3").fill_null("").str.len_chars(),
    ).with_columns(
        zero=(pl.col("int_digits") == 0) & (pl.col("frac_digits") == 0),
    )
    value = pl.col("t").cast(DECIMAL, strict=False)
    code = (
        pl.when(pl.col("t").is_null()).then(None)
        .when(pl.col("zero")).then(pl.lit(ZERO))
        .when(pl.col("neg")).then(pl.lit(NOT_POSITIVE))
        .when(pl.col("frac_digits") > asset.scale).then(pl.lit(INVALID_SCALE))
        # past the ledger's range: above any max too (a max is a ledger amount), and semantics.md 7
        # names that failure; amount_out_of_range is for an asset without one
        .when(pl.col("int_digits") > MAX_INTEGER_DIGITS)
        .then(pl.lit(OUT_OF_RANGE if asset.max_transaction_amount is None else MAX_EXCEEDED))
    )
    if asset.max_transaction_amount is not None:
        code = code.when(value > pl.lit(asset.max_transaction_amount, dtype=DECIMAL)).then(pl.lit(MAX_EXCEEDED))
    code = code.otherwise(None)
    res = out.select(
        code=code,
        amount=pl.when(code.is_null()).then(value).otherwise(None),
    )
    return res["code"], res["amount"]


#: The longest amount text the ledger holds (20 integer digits, a point, 18 decimals): longer
#: ones are named in E notation in messages.
SHOWN_MAX = MAX_INTEGER_DIGITS + 1 + 18
#: significant digits kept when even the E notation is longer than SHOWN_MAX
_SHOWN_DIGITS = 16


def shown(text: str | None) -> str | None:
    """An amount's text for a message: as it is when the ledger could hold one that long, else in
    E notation (`1e400`, `-1e-400`), cut to its first digits and `...` when that is long too. A
    message of 450 characters for `1e400` said nothing its 5 would not (docs/decisions.md)."""
    if text is None or len(text) <= SHOWN_MAX:
        return text
    try:
        sign, digits, exponent = Decimal(text).normalize(Context(prec=max(len(text), 28))).as_tuple()
    except (InvalidOperation, TypeError):
        return text[:SHOWN_MAX] + "..."
    if not isinstance(exponent, int):  # not finite: short anyway
        return text
    mantissa = "".join(map(str, digits))
    cut = len(mantissa) > _SHOWN_DIGITS
    mantissa = mantissa[0] + ("." + mantissa[1:_SHOWN_DIGITS] if len(mantissa) > 1 else "") + ("..." if cut else "")
    return f"{'-' if sign else ''}{mantissa}e{exponent + len(digits) - 1}"


def describe(code: str, text: str | None, asset: Asset) -> str:
    """The human message for a failure code."""
    text = shown(text)
    return {
        NOT_POSITIVE: f"amount {text} must be greater than 0",
        INVALID_SCALE: f"amount {text} has more decimals than {asset.symbol}'s scale {asset.scale}; wrap it in round(x, {asset.scale})",
        MAX_EXCEEDED: f"amount {text} exceeds {asset.symbol}'s max_transaction_amount {asset.max_transaction_amount}",
        OUT_OF_RANGE: f"amount {text} is too large (at most {MAX_INTEGER_DIGITS} integer digits)",
    }.get(code, code)


def failures(errors: list, codes: list, texts: list, asset: Asset) -> tuple[list, list]:
    """(code, message) per amount, from its conversion error (`series_text`) and its check code
    (`check`): an unconvertible number is an expression error, else the check's code, worded."""
    out_codes, messages = [], []
    for e, c, t in zip(errors, codes, texts):
        if e is not None:
            out_codes.append(EXPRESSION_ERROR)
            messages.append(f"amount expression failed: {e}")
        else:
            out_codes.append(c)
            messages.append(None if c is None else describe(c, t, asset))
    return out_codes, messages


def check_text(text: str, asset: Asset) -> str | None:
    """`check` for one amount, in plain Python for the sequential kernel (a one-row frame per
    action would cost milliseconds): its failure code (or ZERO), or None when it is valid.
    tests/unit/test_amount_paths.py holds it equal to `check`."""
    value = Decimal(text)
    if value == 0:
        return ZERO
    if value < 0:
        return NOT_POSITIVE
    if fraction_digits(value) > asset.scale:
        return INVALID_SCALE
    if asset.max_transaction_amount is not None and value > asset.max_transaction_amount:
        return MAX_EXCEEDED  # (before the range, as `check`: a max is below 10^20)
    if abs(value) >= LIMIT:
        return OUT_OF_RANGE
    return None


def fraction_digits(value: Decimal) -> int:
    """Decimals after dropping trailing zeros, exactly (normalize() would round to 28 digits)."""
    _, digits, exponent = value.as_tuple()
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing)) if digits != (0,) else 0


def _plain(text: str) -> str:
    """Decimal text without exponent: '1e+20' -> '100000000000000000000'."""
    return format(Decimal(text), "f")


def plain(d: Decimal) -> str:
    """An amount as plain decimal text without trailing zeros ("2.5", "0"), whatever exponent the
    Decimal carries (one read back from a DECIMAL(38, 18) column prints "2.500000000000000000")."""
    s = format(d, "f")
    return (s.rstrip("0").rstrip(".") if "." in s else s) or "0"
