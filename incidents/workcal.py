"""Deadlines in calendar time or in working time on a working calendar.

A stage deadline is configured as a number of minutes in one of two units (the same strings as
``incidents.models.DurationUnit``):

* ``"minutes"``: calendar time, i.e. real elapsed time. It is added on the UTC time line, so a
  deadline that crosses a daylight-saving change is still exactly N real minutes away.
* ``"working_minutes"``: time that only runs inside the working periods of working days of a
  :class:`WorkCalendar`.

A working calendar has a time zone, the working periods of a working day (local wall-clock times,
default 09:00-12:00 and 13:30-17:30, see :data:`DEFAULT_PERIODS`), the weekend weekdays (default
Saturday and Sunday), public holidays, and make-up working days (调休: weekend days that are
worked because a holiday was moved). A date is a working day when it is a make-up working day, or
when it is neither a weekend day nor a holiday.

Working time is the real elapsed time inside the working periods: periods are wall-clock times in
the calendar's zone turned into instants each day, so a period that spans a daylight-saving change
is as long as it really is. A wall-clock time that does not exist (skipped by a spring-forward
change) is taken as the moment the clock jumps; an ambiguous one (repeated by a fall-back change)
as its first occurrence.

Results are aware datetimes in the calendar's zone. Python compares and subtracts two datetimes of
the same zone by their wall clocks, so in a zone with daylight saving, compare or subtract them in
UTC (``.astimezone(UTC)``); this module does all its own arithmetic in UTC.

The calendar is data (DESIGN rule 8). ``incidents/data/calendar-sample.json`` is only a sample:
each site loads its own calendar every year from the official holiday notice of the General Office
of the State Council (国务院办公厅关于部分节假日安排的通知), in the file format that
:meth:`WorkCalendar.from_file` documents. This module has no Django import; the caller passes the
calendar in.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_PERIODS",
    "DEFAULT_WEEKEND",
    "Unit",
    "WorkCalendar",
    "add_minutes",
    "extend_for_pause",
]

#: Working periods of a working day when none are given: a morning and an afternoon with a lunch
#: break, a common pattern for Chinese government offices (sites set their own).
DEFAULT_PERIODS: tuple[tuple[time, time], ...] = ((time(9, 0), time(12, 0)), (time(13, 30), time(17, 30)))
#: Weekend weekdays when none are given (``date.weekday()`` numbering: Monday 0 … Sunday 6).
DEFAULT_WEEKEND: frozenset[int] = frozenset({5, 6})

_ONE_DAY = timedelta(days=1)
_ONE_MINUTE = timedelta(minutes=1)
# A range longer than this in a calendar file is almost surely a typo (2062 for 2026).
_MAX_RANGE_DAYS = 366
_WEEKDAY_NAMES = {
    name: number
    for number, names in enumerate(
        [
            ("mon", "monday"),
            ("tue", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
            ("sun", "sunday"),
        ]
    )
    for name in names
}
_JSON_KEYS = frozenset({"note", "name", "timezone", "periods", "weekend", "holidays", "workdays"})
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class Unit(StrEnum):
    """The unit of a deadline duration (values match ``incidents.models.DurationUnit``)."""

    MINUTES = "minutes"
    WORKING_MINUTES = "working_minutes"


@dataclass(frozen=True, slots=True)
class _Window:
    """One working period of one date, as UTC instants."""

    start: datetime
    end: datetime


class WorkCalendar:
    """Working days and working hours in one time zone, with holidays and make-up working days.

    ``periods`` are (start, end) wall-clock times of a working day, not overlapping; an end of
    ``time(0)`` means midnight at the end of the day. ``weekend`` uses ``date.weekday()`` numbers.
    ``workdays`` are make-up working days (调休), usually weekend days; a date may not be both a
    holiday and a make-up working day.
    """

    def __init__(
        self,
        tz: str | ZoneInfo,
        periods: Iterable[tuple[time, time]] = DEFAULT_PERIODS,
        weekend: Iterable[int] = DEFAULT_WEEKEND,
        holidays: Iterable[date] = (),
        workdays: Iterable[date] = (),
    ) -> None:
        if isinstance(tz, ZoneInfo):
            self.zone = tz
        else:
            try:
                self.zone = ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {tz!r}") from exc
        self.periods: tuple[tuple[time, time], ...] = _check_periods(list(periods))
        self.weekend: frozenset[int] = frozenset(weekend)
        if not self.weekend <= set(range(7)):
            raise ValueError(f"weekend days must be weekday numbers 0 (Monday) to 6 (Sunday): {self.weekend}")
        # Without one regular working weekday the search for working time would never end.
        if len(self.weekend) == 7:
            raise ValueError("weekend covers all seven days: the calendar would have no regular working day")
        self.holidays: frozenset[date] = frozenset(holidays)
        self.workdays: frozenset[date] = frozenset(workdays)
        both = sorted(self.holidays & self.workdays)
        if both:
            raise ValueError(
                "dates both holiday and make-up working day: " + ", ".join(d.isoformat() for d in both)
            )
        self._windows: dict[date, tuple[_Window, ...]] = {}

    def __repr__(self) -> str:
        return (
            f"WorkCalendar({self.zone.key!r}, periods={len(self.periods)}, weekend={sorted(self.weekend)}, "
            f"holidays={len(self.holidays)}, workdays={len(self.workdays)})"
        )

    def is_working_day(self, d: date) -> bool:
        """Whether ``d`` is a working day: a make-up day, or neither weekend nor holiday."""
        if d in self.workdays:
            return True
        return d.weekday() not in self.weekend and d not in self.holidays

    def is_working_time(self, moment: datetime) -> bool:
        """Whether the aware datetime ``moment`` falls inside a working period."""
        _require_aware(moment, "moment")
        utc = moment.astimezone(UTC)
        local_day = utc.astimezone(self.zone).date()
        return any(w.start <= utc < w.end for w in self._day_windows(local_day))

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        """Return the moment ``minutes`` working minutes after ``start`` are spent, in the calendar's zone.

        A start outside working time begins at the next working period; a budget that runs out
        exactly at the end of a period ends there (not at the start of the next one). Zero minutes
        returns ``start`` itself: there is nothing to wait for.
        """
        _require_aware(start, "start")
        _require_minutes(minutes)
        return self.add_working_time(start, timedelta(minutes=minutes))

    def add_working_time(self, start: datetime, budget: timedelta) -> datetime:
        """Like :meth:`add_working_minutes` with the budget as an exact ``timedelta``."""
        _require_aware(start, "start")
        if budget < timedelta(0):
            raise ValueError(f"working time must not be negative: {budget}")
        if not budget:
            return start.astimezone(self.zone)
        cursor = start.astimezone(UTC)
        remaining = budget
        for window in self._windows_from(cursor):
            if window.end <= cursor:
                continue
            begin = max(window.start, cursor)
            available = window.end - begin
            if remaining <= available:
                return (begin + remaining).astimezone(self.zone)
            remaining -= available
            cursor = window.end
        raise AssertionError("unreachable: _windows_from never ends")  # pragma: no cover

    def working_minutes_between(self, a: datetime, b: datetime) -> float:
        """Working minutes from ``a`` to ``b`` (negative when ``b`` is before ``a``)."""
        return self.working_time_between(a, b) / _ONE_MINUTE

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time from ``a`` to ``b`` as an exact ``timedelta`` (negative when ``b < a``)."""
        _require_aware(a, "a")
        _require_aware(b, "b")
        lo, hi = a.astimezone(UTC), b.astimezone(UTC)
        if hi < lo:
            return -self.working_time_between(b, a)
        total = timedelta(0)
        for window in self._windows_from(lo):
            if window.start >= hi:
                break
            overlap = min(window.end, hi) - max(window.start, lo)
            if overlap > timedelta(0):
                total += overlap
        return total

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        tz: str | ZoneInfo | None = None,
        periods: Iterable[tuple[time, time]] | None = None,
        weekend: Iterable[int] | None = None,
    ) -> WorkCalendar:
        """Load a calendar from a JSON or CSV file (chosen by the ``.json``/``.csv`` suffix).

        JSON: an object with these keys (unknown keys are refused so that a typo is not ignored)::

            {
              "note": "free text, e.g. the source of the holiday dates",
              "timezone": "Asia/Shanghai",
              "periods": [["09:00", "12:00"], ["13:30", "17:30"]],   # "24:00" may end a period
              "weekend": [5, 6],                # or ["sat", "sun"]; Monday is 0
              "holidays": ["2026-01-01",        # one date
                           "2026-02-15/2026-02-23",                  # inclusive range
                           {"from": "2026-10-01", "to": "2026-10-07", "name": "…"},
                           {"date": "2026-05-01", "name": "…"}],
              "workdays": ["2026-02-14", {"date": "2026-02-28", "name": "…"}]
            }

        Only ``timezone`` is required (unless ``tz`` is given); ``periods`` and ``weekend`` default
        to :data:`DEFAULT_PERIODS` and :data:`DEFAULT_WEEKEND`. Values in the file win; the keyword
        arguments fill in what the file leaves out.

        CSV: rows ``date,kind[,name]`` with kind ``holiday`` or ``workday``; an optional header row
        ``date,kind,name``, blank lines and lines starting with ``#`` are skipped. A CSV file holds
        dates only, so ``tz`` is required and ``periods``/``weekend`` come from the arguments.

        Bad input raises ``ValueError`` naming the file and the line or field.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
        if suffix == ".json":
            return _calendar_from_json(path, text, tz=tz, periods=periods, weekend=weekend)
        if suffix == ".csv":
            if tz is None:
                raise ValueError(f"{path}: a CSV calendar holds dates only; pass tz= (e.g. 'Asia/Shanghai')")
            holidays, workdays = _dates_from_csv(path, text)
            return cls(
                tz,
                DEFAULT_PERIODS if periods is None else periods,
                DEFAULT_WEEKEND if weekend is None else weekend,
                holidays,
                workdays,
            )
        raise ValueError(f"{path}: unknown calendar file type {suffix!r}; use .json or .csv")

    def _windows_from(self, moment: datetime) -> Iterator[_Window]:
        """Yield the working windows from the local date of ``moment`` onwards, without end."""
        day = moment.astimezone(self.zone).date()
        while True:
            yield from self._day_windows(day)
            day += _ONE_DAY

    def _day_windows(self, day: date) -> tuple[_Window, ...]:
        """The working windows of ``day`` (none on a non-working day), cached per date."""
        cached = self._windows.get(day)
        if cached is not None:
            return cached
        windows: tuple[_Window, ...] = ()
        if self.is_working_day(day):
            built = []
            for start, end in self.periods:
                begin = _wall_to_utc(day, start, self.zone)
                # A period ending at 00:00 ends at midnight at the end of the day.
                finish = _wall_to_utc(day + _ONE_DAY if end == time(0) else day, end, self.zone)
                if finish > begin:
                    built.append(_Window(begin, finish))
            windows = tuple(built)
        # Bounded by the dates actually visited; a calendar serves a year or two of deadlines.
        if len(self._windows) > 20_000:
            self._windows.clear()
        self._windows[day] = windows
        return windows


def add_minutes(
    start: datetime, minutes: int, unit: Unit | str, calendar: WorkCalendar | None = None
) -> datetime:
    """Return ``start`` plus ``minutes`` in calendar minutes or working minutes (``unit``)."""
    _require_aware(start, "start")
    _require_minutes(minutes)
    return _add(start, timedelta(minutes=minutes), _unit(unit), calendar)


def extend_for_pause(
    due: datetime,
    paused_from: datetime,
    paused_to: datetime,
    unit: Unit | str,
    calendar: WorkCalendar | None = None,
) -> datetime:
    """Push ``due`` out by the paused span measured in ``unit``, so a suspended clock stops.

    Calendar minutes: by the whole span. Working minutes: by the working time inside the span, so a
    suspension over a night or a weekend costs nothing extra.
    """
    for value, name in ((due, "due"), (paused_from, "paused_from"), (paused_to, "paused_to")):
        _require_aware(value, name)
    if paused_to < paused_from:
        raise ValueError(f"pause ends ({paused_to.isoformat()}) before it starts ({paused_from.isoformat()})")
    kind = _unit(unit)
    if kind is Unit.MINUTES:
        return _add(due, paused_to - paused_from, kind, calendar)
    cal = _need_calendar(calendar)
    return cal.add_working_time(due, cal.working_time_between(paused_from, paused_to))


def _add(start: datetime, span: timedelta, unit: Unit, calendar: WorkCalendar | None) -> datetime:
    if unit is Unit.MINUTES:
        # Aware datetime + timedelta is wall-clock arithmetic in Python; go through UTC so the result
        # is exactly `span` of real time later even across a daylight-saving change.
        tzinfo = start.tzinfo
        return (start.astimezone(UTC) + span).astimezone(tzinfo)
    return _need_calendar(calendar).add_working_time(start, span)


def _unit(unit: Unit | str) -> Unit:
    try:
        return Unit(unit)
    except ValueError:
        choices = ", ".join(repr(u.value) for u in Unit)
        raise ValueError(f"unknown deadline unit {unit!r}; expected one of {choices}") from None


def _need_calendar(calendar: WorkCalendar | None) -> WorkCalendar:
    if calendar is None:
        raise ValueError("working minutes need a WorkCalendar")
    return calendar


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware: {value.isoformat()}")


def _require_minutes(minutes: int) -> None:
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise TypeError(f"minutes must be an int, not {type(minutes).__name__}")
    if minutes < 0:
        raise ValueError(f"minutes must not be negative: {minutes}")


def _wall_to_utc(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The instant the wall clock in ``zone`` first shows ``day clock``."""
    naive = datetime.combine(day, clock)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # The wall time was skipped by a spring-forward change: find the jump, the first instant whose
    # wall time is at or after it. The two folds bracket the jump; transitions are whole seconds.
    other = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(first, other), max(first, other)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi


def _check_periods(periods: list[tuple[time, time]]) -> tuple[tuple[time, time], ...]:
    if not periods:
        raise ValueError("a working calendar needs at least one working period")
    checked: list[tuple[time, time]] = []
    for index, period in enumerate(periods):
        try:
            start, end = period
        except (TypeError, ValueError):
            raise ValueError(f"periods[{index}] must be a (start, end) pair of times: {period!r}") from None
        if not isinstance(start, time) or not isinstance(end, time):
            raise ValueError(f"periods[{index}] must be a (start, end) pair of times: {period!r}")
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"periods[{index}] must be wall-clock times without a time zone")
        if end != time(0) and end <= start:
            raise ValueError(f"periods[{index}] ends ({end}) at or before it starts ({start})")
        checked.append((start, end))
    checked.sort()
    for (_, end), (next_start, _) in itertools.pairwise(checked):
        if end == time(0) or end > next_start:
            raise ValueError(f"working periods overlap: one ending {end} and one starting {next_start}")
    return tuple(checked)


# --- calendar files -------------------------------------------------------------------------------


def _calendar_from_json(
    path: Path,
    text: str,
    *,
    tz: str | ZoneInfo | None,
    periods: Iterable[tuple[time, time]] | None,
    weekend: Iterable[int] | None,
) -> WorkCalendar:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a JSON object")
    unknown = sorted(set(raw) - _JSON_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(_JSON_KEYS)}")

    zone: str | ZoneInfo
    if "timezone" in raw:
        if not isinstance(raw["timezone"], str):
            raise ValueError(f"{path}: timezone must be a string such as 'Asia/Shanghai'")
        zone = raw["timezone"]
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{path}: timezone: unknown time zone {zone!r}") from None
    elif tz is not None:
        zone = tz
    else:
        raise ValueError(f'{path}: timezone is missing (e.g. "timezone": "Asia/Shanghai")')

    if "periods" in raw:
        periods = _json_periods(path, raw["periods"])
    if "weekend" in raw:
        weekend = _json_weekend(path, raw["weekend"])
    holidays = _json_dates(path, "holidays", raw.get("holidays", []), ranges=True)
    workdays = _json_dates(path, "workdays", raw.get("workdays", []), ranges=False)
    try:
        return WorkCalendar(
            zone,
            DEFAULT_PERIODS if periods is None else periods,
            DEFAULT_WEEKEND if weekend is None else weekend,
            holidays,
            workdays,
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _json_periods(path: Path, value: Any) -> list[tuple[time, time]]:
    if not isinstance(value, list) or not value:
        raise ValueError(f'{path}: periods must be a non-empty list of ["HH:MM", "HH:MM"] pairs')
    result = []
    for index, item in enumerate(value):
        field = f"periods[{index}]"
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f'{path}: {field} must be a ["HH:MM", "HH:MM"] pair, got {item!r}')
        start = _parse_clock(path, f"{field}[0]", item[0], allow_24=False)
        end = _parse_clock(path, f"{field}[1]", item[1], allow_24=True)
        result.append((start, end))
    try:
        _check_periods(result)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return result


def _parse_clock(path: Path, field: str, value: Any, *, allow_24: bool) -> time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{path}: {field} must be a time "HH:MM", got {value!r}')
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if allow_24 and (hour, minute, second) == (24, 0, 0):
        return time(0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{path}: {field} is not a valid time: {value!r}")
    return time(hour, minute, second)


def _json_weekend(path: Path, value: Any) -> frozenset[int]:
    if not isinstance(value, list):
        raise ValueError(f'{path}: weekend must be a list of weekdays (0 = Monday … 6 = Sunday, or "sat")')
    days = set()
    for index, item in enumerate(value):
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
        elif isinstance(item, str) and item.strip().lower() in _WEEKDAY_NAMES:
            days.add(_WEEKDAY_NAMES[item.strip().lower()])
        else:
            raise ValueError(
                f"{path}: weekend[{index}] must be 0 (Monday) to 6 (Sunday) or a day name, got {item!r}"
            )
    return frozenset(days)


def _json_dates(path: Path, key: str, value: Any, *, ranges: bool) -> set[date]:
    if not isinstance(value, list):
        raise ValueError(f"{path}: {key} must be a list")
    result: set[date] = set()
    for index, item in enumerate(value):
        field = f"{key}[{index}]"
        if isinstance(item, str):
            if "/" in item:
                if not ranges:
                    raise ValueError(f"{path}: {field}: ranges are allowed in holidays only, got {item!r}")
                first, _, last = item.partition("/")
                result.update(_date_range(path, field, first, last))
            else:
                result.add(_parse_date(path, field, item))
        elif isinstance(item, dict):
            allowed = {"date", "name", "note"} | ({"from", "to"} if ranges else set())
            extra = sorted(set(item) - allowed)
            if extra:
                raise ValueError(f"{path}: {field}: unknown key(s) {extra}; allowed: {sorted(allowed)}")
            if "date" in item and not ({"from", "to"} & set(item)):
                result.add(_parse_date(path, f"{field}.date", item["date"]))
            elif ranges and "from" in item and "to" in item and "date" not in item:
                result.update(_date_range(path, field, item["from"], item["to"]))
            else:
                wanted = '"date" or "from" and "to"' if ranges else '"date"'
                raise ValueError(f"{path}: {field} needs {wanted}")
        else:
            raise ValueError(f'{path}: {field} must be a date string "YYYY-MM-DD" or an object, got {item!r}')
    return result


def _parse_date(path: Path, field: str, value: Any) -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise ValueError(f'{path}: {field} must be a date "YYYY-MM-DD", got {value!r}')
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{path}: {field} is not a real date: {value!r}") from None


def _date_range(path: Path, field: str, first: Any, last: Any) -> list[date]:
    start = _parse_date(path, f"{field} (from)", first)
    end = _parse_date(path, f"{field} (to)", last)
    if end < start:
        raise ValueError(f"{path}: {field}: range ends ({end}) before it starts ({start})")
    days = (end - start).days + 1
    if days > _MAX_RANGE_DAYS:
        raise ValueError(f"{path}: {field}: range of {days} days is longer than {_MAX_RANGE_DAYS}")
    return [start + timedelta(days=i) for i in range(days)]


def _dates_from_csv(path: Path, text: str) -> tuple[set[date], set[date]]:
    holidays: set[date] = set()
    workdays: set[date] = set()
    seen_data = False
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if not seen_data and [c.lower() for c in cells[:2]] == ["date", "kind"]:
            seen_data = True
            continue
        seen_data = True
        if len(cells) < 2 or len(cells) > 3:
            raise ValueError(f"{path}: line {line_no}: expected date,kind[,name], got {len(cells)} column(s)")
        day = _parse_date(path, f"line {line_no}: date", cells[0])
        kind = cells[1].lower()
        if kind == "holiday":
            holidays.add(day)
        elif kind == "workday":
            workdays.add(day)
        else:
            raise ValueError(f"{path}: line {line_no}: kind must be holiday or workday, got {cells[1]!r}")
        if day in holidays and day in workdays:
            raise ValueError(f"{path}: line {line_no}: {day} is listed both as holiday and as workday")
    return holidays, workdays
