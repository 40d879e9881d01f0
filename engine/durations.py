"""Go duration strings ("720h", "1h30m", "1.5h", "300ms") and RFC 3339 instants, as Scrip uses them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from engine.cel.values import go_nanos

#: An RFC 3339 fraction finer than the ledger's microsecond: its first 6 digits, and the rest.
_FINER = re.compile(r"(\.\d{6})(\d+)")


def parse_duration(text: str) -> timedelta:
    """A Go duration from a program file or an operation, surrounding blanks ignored, to the
    microsecond (finer parts are dropped). Raises ValueError with a hint."""
    nanos = go_nanos(text.strip())
    if nanos is None:
        raise ValueError(f"{text!r} is not a duration; write it like Go does: 720h, 90m, 1h30m, 45s")
    micros = int(abs(nanos) / 1000)
    try:
        return timedelta(microseconds=-micros if nanos < 0 else micros)
    except OverflowError:  # (it stopped the run with exit 1)
        raise ValueError(f"{text!r} is too long a duration: at most 999999999 days") from None


def later(at: datetime, delta: timedelta) -> datetime:
    """`at + delta`, or ValueError when that is past 9999-12-31T23:59:59.999999Z, the last instant
    the ledger (Python's datetime) holds: an event near it whose rule adds a duration (a lot's
    expires_at, SCHEDULE_EVENT's delay) fails rather than crashing the run (semantics.md 13)."""
    try:
        return at + delta
    except OverflowError:
        raise ValueError(f"{at.isoformat()} + {delta} is past 9999-12-31T23:59:59.999999Z, the last instant "
                         "the ledger holds") from None


#: RFC 3339 5.6's date-time, once upper-cased and a space for 'T' made 'T' (`rfc3339_form`):
#: the one shape every instant perkflow reads has, an event's `event_timestamp`
#: (engine/io/events.py) as a program file's or a command line's. ASCII digits only. Python's
#: and Polars' own parsers take more (`+0100`, `+01`, `20250101T000000Z`, `2025-W01-1`, no
#: seconds), which RFC 3339 does not.
RFC3339_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
#: RFC 3339 5.6's NOTE allows a space for the 'T': a date so followed (replaced by `\1T`).
DATE_SPACE = r"^([0-9]{4}-[0-9]{2}-[0-9]{2}) "
#: What a text of another shape is told.
NOT_RFC3339 = "not an RFC 3339 timestamp with a time zone; write e.g. 2025-01-01T00:00:00Z or 2025-01-01T01:00:00+01:00"
_SHAPE = re.compile(RFC3339_SHAPE)


def rfc3339_form(text: str) -> str:
    """`text` as `RFC3339_SHAPE` is matched against: upper-cased ('t', 'z' are RFC 3339's too)
    and a space after the date made 'T'."""
    return re.sub(DATE_SPACE, r"\1T", text.upper())


def parse_instant(text: str) -> datetime:
    """An RFC 3339 timestamp with a time zone, surrounding blanks ignored; ValueError otherwise."""
    form = rfc3339_form(text.strip())
    if not _SHAPE.match(form):
        raise ValueError(f"{text!r} is {NOT_RFC3339}")
    # a leap second (23:59:60, which RFC 3339 allows) is the next minute's first instant, as in
    # event timestamps (docs/decisions.md "Time": the ledger's instants are POSIX time)
    leap = form[17:19] == "60"
    try:
        value = datetime.fromisoformat((form[:17] + "59" + form[19:] if leap else form).replace("Z", "+00:00"))
        return value + timedelta(seconds=1) if leap else value
    except ValueError:  # the shape, but no date (2025-02-30, 25:00): Python's text names no fix
        raise ValueError(f"{text!r} is {NOT_RFC3339}") from None


def bound_text(text):
    """A program file's instant (a window bound, a trigger), read by `parse_instant`; written
    finer than a microsecond (`12:00:00.0000005Z`), moved up to the next microsecond. The ledger's instants are
    whole microseconds (docs/decisions.md "Time"), and for such an instant `t >= b` exactly when
    `t >= ceil(b)`, so [active_from, active_to) keeps its meaning at its very edges; the parser
    dropped the finer digits, which took an event at 12:00:00Z out of a window ending at
    12:00:00.0000005Z and into one starting then."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        # (a number was read as Unix seconds)
        raise ValueError(f"{text!r} is {NOT_RFC3339}")
    if not isinstance(text, str):
        return text
    value = parse_instant(text)  # one shape for every instant (the model took `+0100` and more)
    m = _FINER.search(text)
    return value + timedelta(microseconds=1) if m is not None and int(m.group(2)) else value


def parse_when(text: str) -> timedelta | datetime:
    """expires_at / matures_at text (semantics.md 7): a Go duration (counted from `now`) or an
    RFC 3339 instant with a time zone. Raises ValueError naming both forms."""
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_instant(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a Go duration (720h) nor an RFC 3339 instant with a "
                         "time zone (2025-01-01T00:00:00Z)") from None
