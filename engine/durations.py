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


def parse_instant(text: str) -> datetime:
    """An RFC 3339 timestamp with a time zone."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:  # Python's own text ("Invalid isoformat string") names neither the form nor a fix
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp; write e.g. 2025-01-01T00:00:00Z") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; write e.g. 2025-01-01T00:00:00Z")
    return value


def bound_text(text):
    """A window bound written finer than a microsecond (`12:00:00.0000005Z`), moved up to the
    next microsecond; other values as they are (the model parses them). The ledger's instants are
    whole microseconds (docs/decisions.md "Time"), and for such an instant `t >= b` exactly when
    `t >= ceil(b)`, so [active_from, active_to) keeps its meaning at its very edges; the parser
    dropped the finer digits, which took an event at 12:00:00Z out of a window ending at
    12:00:00.0000005Z and into one starting then."""
    m = _FINER.search(text) if isinstance(text, str) else None
    if m is None:
        return text
    try:
        value = parse_instant(text[:m.start()] + m.group(1) + text[m.end():])
        return value + timedelta(microseconds=1) if int(m.group(2)) else value
    except (ValueError, OverflowError):
        return text  # the model says what is wrong with it


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
