"""Five-field cron expressions, evaluated in UTC: the periods of CRON budgets.

A CRON budget resets at each firing, so its period is "the latest firing at or before now"
(docs/decisions.md). Fields: minute hour day-of-month month day-of-week, each `*`, a number, a
range `a-b`, a step `*/n` / `a-b/n` / `a/n`, or a comma list of those; months and weekdays also
by name (JAN..DEC, SUN..SAT; 0 and 7 are both Sunday). As in POSIX cron, when both day fields are
restricted (are not `*`) a day matches if either does, otherwise if both do. The macros @yearly/@annually, @monthly, @weekly, @daily
/@midnight and @hourly are accepted.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date, datetime, time, timedelta, timezone, tzinfo

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
#: (name, low, high, names) per field, in order.
FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
          ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS))
#: Far enough back to find the previous firing of any satisfiable expression (29 February
#: can be 8 years away across a skipped leap year such as 2100).
SEARCH_DAYS = 366 * 9
#: More than any DST change moves a wall clock (1 hour; 2 in double summer time): around `at`,
#: the wall times whose instants may come first (Cron.next_after).
DST_REACH = timedelta(hours=3)


class CronError(ValueError):
    pass


@dataclass(eq=False)  # identity: it memoises its last span
class Cron:
    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]   # 0 = Sunday
    any_day: bool              # day-of-month is `*`
    any_weekday: bool          # day-of-week is `*`
    _span: tuple[datetime, datetime] | None = field(default=None, repr=False, compare=False)

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def previous(self, now: datetime) -> datetime:
        """The latest firing at or before `now` (UTC)."""
        span = self._span
        if span is not None and span[0] <= now < span[1]:
            return span[0]  # events arrive in time order: the last answer is usually still right
        fire = self._scan(now, -1)
        self._span = (fire, self._scan(fire + timedelta(minutes=1), +1))
        return fire

    def next_after(self, at: datetime, tz: tzinfo = timezone.utc) -> datetime:
        """The first firing strictly after `at`, with the fields read as wall-clock time in `tz`
        (automations: engine/automations.py). A wall time that a DST change skips fires at the
        instant it maps to (zoneinfo, fold 0: as far past the gap as it lies in it, 02:20 -> 03:20);
        one it repeats fires once, at its first occurrence."""
        fire = self._first_mapped_after(at, tz, at.astimezone(tz).replace(tzinfo=timezone.utc))
        if fire.year == datetime.max.year:
            return fire
        gap = _offset(fire + DST_REACH, tz) - _offset(at - DST_REACH, tz)
        if gap <= timedelta(0):  # no clock jumped forward: wall order is time order (fold 0)
            return fire
        # Near a gap wall order is not time order: the skipped 02:20 maps to 03:20, after 03:00.
        # Scanning on from the wall time of `at` would lose the skipped times after the first one
        # that fired, so take the earliest instant of the wall times that may map between.
        best, wall = fire, (at - gap).astimezone(tz).replace(tzinfo=timezone.utc)
        limit = fire.astimezone(tz).replace(tzinfo=timezone.utc) + gap
        while (wall := self._scan(wall + timedelta(minutes=1), +1)) <= limit:
            mapped = wall.replace(tzinfo=tz).astimezone(timezone.utc)
            if at < mapped < best:
                best = mapped
        return best

    def _first_mapped_after(self, at: datetime, tz: tzinfo, local: datetime) -> datetime:
        """The first wall time after `local` (wall clock scanned as if UTC) whose instant is after `at`."""
        while True:
            wall = self._scan(local + timedelta(minutes=1), +1)
            if wall.year == datetime.max.year:
                return wall
            fire = wall.replace(tzinfo=tz).astimezone(timezone.utc)
            if fire > at:
                return fire
            local = wall

    @cached_property
    def _times(self) -> tuple[time, ...]:
        """The times of day the expression names, in order (a scan bisects them)."""
        return tuple(sorted(time(h, m) for h in self.hours for m in self.minutes))

    def _scan(self, at: datetime, step: int) -> datetime:
        at = at.astimezone(timezone.utc).replace(second=0, microsecond=0) if step > 0 else at.astimezone(timezone.utc)
        day = at.date()
        for _ in range(SEARCH_DAYS):
            if self.day_matches(day):
                times = self._times
                if day == at.date():  # only the part of the first day on the right side of `at`
                    i = bisect_right(times, at.time()) if step < 0 else bisect_left(times, at.time())
                    times = times[:i] if step < 0 else times[i:]
                if times:
                    chosen = times[-1] if step < 0 else times[0]
                    return datetime.combine(day, chosen, tzinfo=timezone.utc)
            day += timedelta(days=step)
        return datetime.max.replace(tzinfo=timezone.utc) if step > 0 else datetime.min.replace(tzinfo=timezone.utc)


def parse(text: str) -> Cron:
    """A Cron, or CronError saying which field is wrong and why."""
    expr = MACROS.get(text.strip().lower(), text.strip())
    parts = expr.split()
    if len(parts) != 5:
        raise CronError(f"{text!r}: a cron expression has 5 fields (minute hour day-of-month month "
                        f"day-of-week), got {len(parts)}")
    values = [_field(p, *spec, text) for p, spec in zip(parts, FIELDS)]
    weekdays = frozenset(d % 7 for d in values[4])
    cron = Cron(text, tuple(sorted(values[0])), tuple(sorted(values[1])), frozenset(values[2]),
                frozenset(values[3]), weekdays, parts[2] == "*", parts[4] == "*")
    if cron._scan(datetime(2400, 1, 1, tzinfo=timezone.utc), -1).year < 2300:
        raise CronError(f"{text!r}: never fires (no such day)")
    return cron


def _field(part: str, name: str, low: int, high: int, names: dict, text: str) -> set[int]:
    out: set[int] = set()
    for item in part.split(","):
        rng, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if step < 1:
                raise ValueError
            if rng == "*":
                a, b = low, high
            else:
                a_text, dash, b_text = rng.partition("-")
                a = _number(a_text, names)
                b = _number(b_text, names) if dash else (high if step_text else a)
        except ValueError:
            raise CronError(f"{text!r}: {name} field {part!r} is not a number, range, step or list") from None
        if not (low <= a <= high and low <= b <= high) or a > b:
            raise CronError(f"{text!r}: {name} field {part!r} is outside {low}-{high}")
        out.update(range(a, b + 1, step))
    return out


def _number(token: str, names: dict) -> int:
    upper = token.upper()
    return names[upper] if upper in names else int(token)


def _offset(instant: datetime, tz: tzinfo) -> timedelta | None:
    return instant.astimezone(tz).utcoffset()
