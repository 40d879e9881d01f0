"""engine.lots: moving lots between statuses (holds), narrowing by reference / provisional /
program, and expiry of held lots. Expected values are worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

from engine.lots import Lot, consume, due_changes, in_status, shift

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def lot(name: str, remaining: str, status: str = "AVAILABLE", minutes: int = 0, reference: str | None = None,
        provisional: bool = False, program: str = "p", expires_in: timedelta | None = None) -> Lot:
    created = T0 + timedelta(minutes=minutes)
    return Lot(name, "PARTICIPANT", "u", "a", D(remaining), D(remaining), status, created,
               None if expires_in is None else created + expires_in, None, program, reference, provisional)


def test_a_partial_hold_splits_the_lot_and_keeps_its_dates():
    lots = [lot("l2", "20", minutes=1, expires_in=timedelta(days=2)), lot("l1", "10")]
    moved = shift(lots, D(15), T0 + timedelta(hours=1), "AVAILABLE", "HELD", "seed", stamp="R")
    l1, l2, child = lots[1], lots[0], lots[2]
    assert moved == [("l1", D(10)), (child.id, D(15) - 10)]
    assert (l1.status, l1.remaining, l1.reference_id) == ("HELD", D(10), "R")       # whole: in place
    assert (l2.status, l2.remaining) == ("AVAILABLE", D(20) - 5)                      # the rest stays
    assert (child.status, child.remaining, child.reference_id) == ("HELD", D(5), "R")
    assert (child.created_at, child.expires_at) == (l2.created_at, l2.expires_at)
    # the same action on the same input names the same child
    again = [lot("l2", "20", minutes=1), lot("l1", "10")]
    shift(again, D(15), T0, "AVAILABLE", "HELD", "seed", stamp="R")
    assert again[2].id == child.id


def test_narrowing_takes_only_the_provisional_lots_of_one_reference_and_program():
    lots = [lot("a", "5", "HELD", 0, "R", provisional=True),
            lot("b", "7", "HELD", 1, "R", provisional=False),           # held by a HOLD
            lot("c", "3", "HELD", 2, "S", provisional=True),
            lot("d", "4", "HELD", 3, "R", provisional=True, program="q")]
    now = T0 + timedelta(hours=1)
    assert in_status(lots, "HELD", now) == D(5) + 7 + 3 + 4
    assert in_status(lots, "HELD", now, reference="R") == D(5) + 7 + 4
    assert in_status(lots, "HELD", now, reference="R", provisional=True, program="p") == D(5)
    assert consume(lots, D(5), now, "HELD", reference="R", provisional=True, program="p") == [("a", D(5))]
    assert [x.remaining for x in lots] == [D(0), D(7), D(3), D(4)]


def test_a_released_lot_stops_being_provisional_and_held_lots_expire():
    lots = [lot("a", "8", "HELD", 0, "R", provisional=True, expires_in=timedelta(hours=2))]
    shift(lots, D(3), T0 + timedelta(hours=1), "HELD", "AVAILABLE", "rel", reference="R")
    held, released = lots
    assert (held.status, held.remaining, held.provisional) == ("HELD", D(8) - 3, True)
    assert (released.status, released.remaining, released.provisional) == ("AVAILABLE", D(3), False)
    due = due_changes(lots, T0 + timedelta(hours=3))
    assert sorted((kind, x.status, x.remaining) for _, kind, x in due) == [
        ("EXPIRATION", "AVAILABLE", D(3)), ("EXPIRATION", "HELD", D(8) - 3)]
    # an expired held lot is no longer usable, even before its expiry is written
    assert in_status(lots, "HELD", T0 + timedelta(hours=3)) == D(0)
