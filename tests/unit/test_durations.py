"""Go durations: program files and operations (engine/durations.parse_duration) and CEL's
duration() (engine/cel/values.parse_duration) read one grammar (`go_nanos`); they differ only
where documented: program files ignore surrounding blanks and drop sub-microsecond parts, CEL
refuses both."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cel.errors import CelEvalError
from engine.cel.values import parse_duration as cel_duration
from engine.durations import parse_duration

UNITS = {"h": timedelta(hours=1), "m": timedelta(minutes=1), "s": timedelta(seconds=1),
         "ms": timedelta(milliseconds=1), "us": timedelta(microseconds=1), "µs": timedelta(microseconds=1)}


@given(parts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4),
       sign=st.sampled_from(["", "+", "-"]))
def test_both_readers_give_the_sum_of_the_parts(parts, sign):
    text = sign + "".join(f"{n}{u}" for n, u in parts)
    want = sum((n * UNITS[u] for n, u in parts), timedelta(0)) * (-1 if sign == "-" else 1)
    assert parse_duration(text) == want
    assert cel_duration(text) == want


@pytest.mark.parametrize("text", ["", "5", "h", "+-5h", "--5h", "1h 30m", "1d", "١h", "５s", "1.5.2h", "-"])
def test_neither_reader_takes_what_go_refuses(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
    with pytest.raises(CelEvalError, match="invalid duration"):
        cel_duration(text)


def test_where_they_differ():
    assert parse_duration(" 720h ") == timedelta(hours=720)
    assert parse_duration("1.0000005s") == timedelta(seconds=1)
    assert parse_duration("-1.0000005s") == -timedelta(seconds=1)
    with pytest.raises(CelEvalError):
        cel_duration(" 720h ")
    with pytest.raises(CelEvalError, match="nanosecond"):
        cel_duration("1.0000005s")


def test_a_duration_past_what_python_holds_is_an_input_error():
    with pytest.raises(ValueError, match="too long a duration"):
        parse_duration("99999999999999999999h")
    with pytest.raises(CelEvalError, match="out of range"):
        cel_duration("99999999999999999999h")
