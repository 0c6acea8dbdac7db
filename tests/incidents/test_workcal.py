"""Tests for incidents.workcal: working-time deadlines, pauses, DST, calendar files and properties."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from incidents.workcal import (
    DEFAULT_PERIODS,
    Unit,
    WorkCalendar,
    add_minutes,
    extend_for_pause,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SAMPLE = Path(__file__).resolve().parents[2] / "incidents" / "data" / "calendar-sample.json"

# 2026-10-01 (Thu) … 10-07 (Wed) are holidays and Saturday 10-10 is a make-up working day (调休).
HOLIDAYS = {date(2026, 10, 1) + timedelta(days=i) for i in range(7)}
WORKDAYS = {date(2026, 10, 10)}
CAL = WorkCalendar("Asia/Shanghai", holidays=HOLIDAYS, workdays=WORKDAYS)


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SH)


# --- working days -------------------------------------------------------------------------------


def test_working_days() -> None:
    assert CAL.is_working_day(date(2026, 3, 2))  # Monday
    assert CAL.is_working_day(date(2026, 3, 6))  # Friday
    assert not CAL.is_working_day(date(2026, 3, 7))  # Saturday
    assert not CAL.is_working_day(date(2026, 3, 8))  # Sunday
    assert not CAL.is_working_day(date(2026, 10, 1))  # holiday on a Thursday
    assert CAL.is_working_day(date(2026, 10, 10))  # make-up Saturday
    assert not CAL.is_working_day(date(2026, 10, 11))  # the Sunday after stays a weekend day


def test_default_periods_are_a_morning_and_an_afternoon() -> None:
    assert list(DEFAULT_PERIODS) == [(time(9), time(12)), (time(13, 30), time(17, 30))]
    assert CAL.working_minutes_between(sh(2026, 3, 2), sh(2026, 3, 3)) == 420


def test_is_working_time() -> None:
    assert CAL.is_working_time(sh(2026, 3, 2, 9, 0))
    assert CAL.is_working_time(sh(2026, 3, 2, 11, 59, 59))
    assert not CAL.is_working_time(sh(2026, 3, 2, 12, 0))  # periods are half-open
    assert not CAL.is_working_time(sh(2026, 3, 7, 10, 0))
    assert CAL.is_working_time(sh(2026, 10, 10, 10, 0))


# --- adding working minutes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "minutes", "due"),
    [
        pytest.param(sh(2026, 3, 2, 11, 0), 90, sh(2026, 3, 2, 14, 0), id="crosses-lunch"),
        pytest.param(sh(2026, 3, 2, 17, 0), 60, sh(2026, 3, 3, 9, 30), id="crosses-night"),
        pytest.param(sh(2026, 3, 6, 17, 0), 60, sh(2026, 3, 9, 9, 30), id="crosses-weekend"),
        pytest.param(sh(2026, 9, 30, 17, 0), 60, sh(2026, 10, 8, 9, 30), id="crosses-public-holiday"),
        pytest.param(sh(2026, 10, 9, 17, 0), 60, sh(2026, 10, 10, 9, 30), id="make-up-saturday-counts"),
        pytest.param(sh(2026, 10, 10, 17, 0), 60, sh(2026, 10, 12, 9, 30), id="sunday-after-make-up"),
        pytest.param(sh(2026, 3, 2, 9, 0), 420, sh(2026, 3, 2, 17, 30), id="one-full-day"),
        pytest.param(sh(2026, 3, 2, 9, 0), 5 * 420, sh(2026, 3, 6, 17, 30), id="one-full-week"),
        pytest.param(sh(2026, 3, 2, 10, 0), 421, sh(2026, 3, 3, 10, 1), id="one-day-and-a-minute"),
    ],
)
def test_add_working_minutes(start: datetime, minutes: int, due: datetime) -> None:
    assert CAL.add_working_minutes(start, minutes) == due
    assert CAL.working_minutes_between(start, due) == minutes


@pytest.mark.parametrize(
    ("start", "due"),
    [
        pytest.param(sh(2026, 3, 2, 7, 0), sh(2026, 3, 2, 9, 30), id="before-work"),
        pytest.param(sh(2026, 3, 2, 12, 30), sh(2026, 3, 2, 14, 0), id="at-lunch"),
        pytest.param(sh(2026, 3, 2, 20, 0), sh(2026, 3, 3, 9, 30), id="evening"),
        pytest.param(sh(2026, 3, 7, 10, 0), sh(2026, 3, 9, 9, 30), id="saturday"),
        pytest.param(sh(2026, 10, 3, 10, 0), sh(2026, 10, 8, 9, 30), id="holiday"),
        pytest.param(sh(2026, 10, 10, 8, 0), sh(2026, 10, 10, 9, 30), id="make-up-saturday-morning"),
    ],
)
def test_start_outside_working_time_begins_at_next_period(start: datetime, due: datetime) -> None:
    assert not CAL.is_working_time(start)
    assert CAL.add_working_minutes(start, 30) == due


def test_zero_minutes_is_the_start_itself() -> None:
    assert CAL.add_working_minutes(sh(2026, 3, 2, 10, 0), 0) == sh(2026, 3, 2, 10, 0)
    # Even outside working time: nothing to wait for.
    assert CAL.add_working_minutes(sh(2026, 3, 7, 10, 0), 0) == sh(2026, 3, 7, 10, 0)
    assert add_minutes(sh(2026, 3, 7, 10, 0), 0, "working_minutes", CAL) == sh(2026, 3, 7, 10, 0)


def test_exact_boundaries() -> None:
    # A budget spent exactly at the end of a period ends there, not at the next period's start.
    assert CAL.add_working_minutes(sh(2026, 3, 2, 9, 0), 180) == sh(2026, 3, 2, 12, 0)
    assert CAL.add_working_minutes(sh(2026, 3, 2, 11, 59), 1) == sh(2026, 3, 2, 12, 0)
    assert CAL.add_working_minutes(sh(2026, 3, 2, 12, 0), 1) == sh(2026, 3, 2, 13, 31)
    assert CAL.add_working_minutes(sh(2026, 3, 2, 13, 30), 1) == sh(2026, 3, 2, 13, 31)
    assert CAL.add_working_minutes(sh(2026, 3, 2, 17, 29), 1) == sh(2026, 3, 2, 17, 30)
    assert CAL.add_working_minutes(sh(2026, 3, 2, 17, 30), 1) == sh(2026, 3, 3, 9, 1)
    assert CAL.working_minutes_between(sh(2026, 3, 2, 12, 0), sh(2026, 3, 2, 13, 30)) == 0


def test_exact_to_the_second() -> None:
    assert CAL.add_working_minutes(sh(2026, 3, 2, 10, 0, 30), 1) == sh(2026, 3, 2, 10, 1, 30)
    assert CAL.add_working_minutes(sh(2026, 3, 2, 11, 59, 30), 1) == sh(2026, 3, 2, 13, 30, 30)
    assert CAL.working_minutes_between(sh(2026, 3, 2, 11, 59, 30), sh(2026, 3, 2, 13, 30, 15)) == 0.75


def test_result_is_in_the_calendar_zone_for_any_input_zone() -> None:
    start_utc = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
    due = CAL.add_working_minutes(start_utc, 90)
    assert due == sh(2026, 3, 2, 14, 0)
    assert due.tzinfo == SH


def test_working_minutes_between_is_antisymmetric() -> None:
    a, b = sh(2026, 3, 2, 10, 0), sh(2026, 3, 9, 10, 0)
    assert CAL.working_minutes_between(a, b) == 5 * 420
    assert CAL.working_minutes_between(b, a) == -5 * 420
    assert CAL.working_minutes_between(a, a) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.add_working_minutes(datetime(2026, 3, 2, 10, 0), 10)
    with pytest.raises(ValueError, match="negative"):
        CAL.add_working_minutes(sh(2026, 3, 2, 10, 0), -1)
    with pytest.raises(TypeError, match="int"):
        CAL.add_working_minutes(sh(2026, 3, 2, 10, 0), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.working_minutes_between(datetime(2026, 3, 2), sh(2026, 3, 3))


# --- daylight saving time -----------------------------------------------------------------------


def test_working_time_across_a_dst_weekend() -> None:
    cal = WorkCalendar("America/New_York", [(time(9), time(17))])
    # Clocks spring forward on Sunday 2026-03-08; Friday 13:00 EST + 8 working hours is Monday 13:00 EDT.
    start = datetime(2026, 3, 6, 13, 0, tzinfo=NY)
    due = cal.add_working_minutes(start, 480)
    assert due == datetime(2026, 3, 9, 13, 0, tzinfo=NY)
    assert due.utcoffset() == timedelta(hours=-4)
    assert cal.working_minutes_between(start, due) == 480


def test_working_periods_that_span_a_dst_change_count_real_time() -> None:
    night = WorkCalendar("America/New_York", [(time(0), time(6))], weekend=())
    spring, fall = datetime(2026, 3, 8, tzinfo=NY), datetime(2026, 11, 1, tzinfo=NY)
    assert night.working_minutes_between(spring, spring + timedelta(days=1)) == 5 * 60
    assert night.working_minutes_between(fall, fall + timedelta(days=1)) == 7 * 60
    assert night.add_working_minutes(spring, 300) == datetime(2026, 3, 8, 6, 0, tzinfo=NY)
    # 01:30-02:30 on the spring day: 02:30 never shows, the period ends when the clock jumps to 03:00.
    short = WorkCalendar("America/New_York", [(time(1, 30), time(2, 30))], weekend=())
    assert short.working_minutes_between(spring, spring + timedelta(days=1)) == 30
    assert short.add_working_minutes(spring, 30) == datetime(2026, 3, 8, 3, 0, tzinfo=NY)


def test_calendar_minutes_are_real_minutes_across_dst() -> None:
    start = datetime(2026, 3, 8, 1, 30, tzinfo=NY)  # EST, 30 minutes before the jump
    due = add_minutes(start, 60, "minutes")
    assert due == datetime(2026, 3, 8, 3, 30, tzinfo=NY)
    # Subtracting two datetimes of the same zone is wall-clock arithmetic too: compare in UTC.
    assert due.astimezone(UTC) - start.astimezone(UTC) == timedelta(minutes=60)
    # Plain aware arithmetic would have said 02:30, a wall time that does not exist.
    assert (start + timedelta(minutes=60)).replace(tzinfo=None) == datetime(2026, 3, 8, 2, 30)


# --- add_minutes and extend_for_pause -----------------------------------------------------------


def test_add_minutes_dispatches_on_unit() -> None:
    start = sh(2026, 3, 6, 17, 0)
    assert add_minutes(start, 60, Unit.MINUTES) == sh(2026, 3, 6, 18, 0)
    assert add_minutes(start, 60, "minutes", CAL) == sh(2026, 3, 6, 18, 0)
    assert add_minutes(start, 60, Unit.WORKING_MINUTES, CAL) == sh(2026, 3, 9, 9, 30)
    assert add_minutes(start, 60, "working_minutes", CAL) == sh(2026, 3, 9, 9, 30)


def test_add_minutes_refuses_bad_unit_and_missing_calendar() -> None:
    with pytest.raises(ValueError, match="unknown deadline unit 'hours'"):
        add_minutes(sh(2026, 3, 2), 1, "hours", CAL)
    with pytest.raises(ValueError, match="need a WorkCalendar"):
        add_minutes(sh(2026, 3, 2), 1, "working_minutes")
    with pytest.raises(ValueError, match="negative"):
        add_minutes(sh(2026, 3, 2), -5, "minutes")


def test_pause_in_calendar_minutes_adds_the_whole_span() -> None:
    due = sh(2026, 3, 2, 12, 0)
    assert extend_for_pause(due, sh(2026, 3, 2, 10, 0), sh(2026, 3, 2, 10, 45), "minutes") == sh(
        2026, 3, 2, 12, 45
    )


def test_pause_in_working_minutes_adds_only_working_time() -> None:
    due = sh(2026, 3, 9, 11, 0)
    # Paused Friday 17:00 to Monday 10:00: 30 working minutes on Friday, 60 on Monday.
    extended = extend_for_pause(due, sh(2026, 3, 6, 17, 0), sh(2026, 3, 9, 10, 0), "working_minutes", CAL)
    assert extended == sh(2026, 3, 9, 14, 0)
    # A pause over the weekend only costs nothing.
    assert extend_for_pause(due, sh(2026, 3, 7, 9), sh(2026, 3, 8, 18), "working_minutes", CAL) == due
    # Zero-length pause.
    assert extend_for_pause(due, sh(2026, 3, 2, 10), sh(2026, 3, 2, 10), "working_minutes", CAL) == due


def test_pause_must_not_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        extend_for_pause(sh(2026, 3, 9), sh(2026, 3, 3), sh(2026, 3, 2), "minutes")


# --- constructing calendars ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"periods": []}, "at least one working period"),
        ({"periods": [(time(12), time(9))]}, r"periods\[0\] ends"),
        ({"periods": [(time(9), time(12)), (time(11), time(14))]}, "overlap"),
        ({"weekend": range(7)}, "no regular working day"),
        ({"weekend": {7}}, "weekday numbers"),
        ({"holidays": {date(2026, 10, 10)}, "workdays": {date(2026, 10, 10)}}, "2026-10-10"),
    ],
)
def test_constructor_refuses_bad_calendars(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"tz": "Asia/Shanghai", **kwargs}
    with pytest.raises(ValueError, match=message):
        WorkCalendar(**arguments)  # type: ignore[arg-type]


def test_period_may_end_at_midnight() -> None:
    cal = WorkCalendar("Asia/Shanghai", [(time(18), time(0))], weekend=())
    assert cal.add_working_minutes(sh(2026, 3, 2, 23, 0), 90) == sh(2026, 3, 3, 18, 30)


# --- calendar files ------------------------------------------------------------------------------


def test_sample_calendar_loads_and_says_it_is_a_sample() -> None:
    cal = WorkCalendar.from_file(SAMPLE)
    assert cal.zone.key == "Asia/Shanghai"
    assert cal.periods == DEFAULT_PERIODS
    raw = json.loads(SAMPLE.read_text(encoding="utf-8"))
    assert "not the official" in raw["note"]
    assert "国务院办公厅" in raw["note"]
    for workday in cal.workdays:
        assert workday.weekday() in (5, 6)  # the sample's make-up days are weekend days
        assert cal.is_working_day(workday)
    assert all(not cal.is_working_day(d) for d in cal.holidays)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_calendar_with_every_date_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cal.json",
        json.dumps(
            {
                "note": "test",
                "timezone": "Asia/Shanghai",
                "periods": [["08:30", "12:00"], ["14:00", "24:00"]],
                "weekend": ["sun"],
                "holidays": [
                    "2026-01-01",
                    "2026-02-16/2026-02-18",
                    {"from": "2026-10-01", "to": "2026-10-02", "name": "x"},
                    {"date": "2026-05-01"},
                ],
                "workdays": ["2026-02-15", {"date": "2026-10-11", "name": "make-up Sunday"}],
            }
        ),
    )
    cal = WorkCalendar.from_file(path)
    assert cal.periods == ((time(8, 30), time(12)), (time(14), time(0)))
    assert cal.weekend == frozenset({6})
    assert cal.holidays == {
        date(2026, 1, 1),
        date(2026, 2, 16),
        date(2026, 2, 17),
        date(2026, 2, 18),
        date(2026, 10, 1),
        date(2026, 10, 2),
        date(2026, 5, 1),
    }
    assert cal.workdays == {date(2026, 2, 15), date(2026, 10, 11)}
    assert cal.is_working_day(date(2026, 3, 7))  # Saturday is not a weekend day here


def test_json_keyword_arguments_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    path = write(tmp_path, "cal.json", '{"holidays": ["2026-10-01"]}')
    cal = WorkCalendar.from_file(path, tz="Asia/Shanghai", weekend=[6])
    assert cal.zone.key == "Asia/Shanghai"
    assert cal.weekend == frozenset({6})
    assert cal.periods == DEFAULT_PERIODS


def test_csv_calendar(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cal.csv",
        "date,kind,name\n# comment\n\n2026-10-01,holiday,National Day\n2026-10-10, WORKDAY ,make-up\n",
    )
    cal = WorkCalendar.from_file(path, tz="Asia/Shanghai")
    assert cal.holidays == {date(2026, 10, 1)}
    assert cal.workdays == {date(2026, 10, 10)}
    assert cal.periods == DEFAULT_PERIODS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"timezone": "Asia/Shanghai",\n "holidays": [}', "not valid JSON: line 2"),
        ("[]", "top level must be a JSON object"),
        ('{"timezone": "Asia/Shanghai", "holiday": []}', r"unknown key\(s\) \['holiday'\]"),
        ('{"holidays": []}', "timezone is missing"),
        ('{"timezone": "Asia/Shangai"}', "timezone: unknown time zone 'Asia/Shangai'"),
        (
            '{"timezone": "Asia/Shanghai", "holidays": ["2026-01-01", "2026-02-30"]}',
            r"holidays\[1\] is not a real",
        ),
        ('{"timezone": "Asia/Shanghai", "holidays": ["1/2/2026"]}', r"holidays\[0\] \(from\) must be a date"),
        ('{"timezone": "Asia/Shanghai", "holidays": [20260101]}', r"holidays\[0\] must be a date string"),
        (
            '{"timezone": "Asia/Shanghai", "holidays": ["2026-10-07/2026-10-01"]}',
            r"holidays\[0\]: range ends",
        ),
        ('{"timezone": "Asia/Shanghai", "holidays": ["2026-10-01/2062-10-07"]}', "longer than 366"),
        ('{"timezone": "Asia/Shanghai", "holidays": [{"from": "2026-10-01"}]}', r"holidays\[0\] needs"),
        ('{"timezone": "Asia/Shanghai", "workdays": ["2026-10-01/2026-10-02"]}', r"workdays\[0\]: ranges"),
        ('{"timezone": "Asia/Shanghai", "workdays": [{"day": "2026-10-10"}]}', r"workdays\[0\]: unknown key"),
        (
            '{"timezone": "Asia/Shanghai", "periods": [["9:00", "25:00"]]}',
            r"periods\[0\]\[1\] is not a valid",
        ),
        ('{"timezone": "Asia/Shanghai", "periods": [["9am", "5pm"]]}', r"periods\[0\]\[0\] must be a time"),
        ('{"timezone": "Asia/Shanghai", "periods": [["09:00"]]}', r"periods\[0\] must be"),
        ('{"timezone": "Asia/Shanghai", "periods": [["09:00", "12:00"], ["11:00", "13:00"]]}', "overlap"),
        ('{"timezone": "Asia/Shanghai", "weekend": ["caturday"]}', r"weekend\[0\] must be"),
        (
            '{"timezone": "Asia/Shanghai", "holidays": ["2026-10-10"], "workdays": ["2026-10-10"]}',
            "both holiday and make-up working day: 2026-10-10",
        ),
    ],
)
def test_bad_json_files_name_the_field(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "bad.json", content)
    with pytest.raises(ValueError, match=message) as info:
        WorkCalendar.from_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("date,kind\n2026-10-01,holiday\n2026-10-02,holyday\n", "line 3: kind must be holiday or workday"),
        ("2026-10-01,holiday\n2026-13-01,holiday\n", r"line 2: date is not a real date"),
        ("2026-10-01\n", "line 1: expected date,kind"),
        ("2026-10-01,holiday,a,b\n", "line 1: expected date,kind"),
        ("2026-10-01,holiday\n2026-10-01,workday\n", "line 2: 2026-10-01 is listed both"),
    ],
)
def test_bad_csv_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "bad.csv", content)
    with pytest.raises(ValueError, match=message):
        WorkCalendar.from_file(path, tz="Asia/Shanghai")


def test_csv_needs_a_timezone_and_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass tz="):
        WorkCalendar.from_file(write(tmp_path, "cal.csv", "2026-10-01,holiday\n"))
    with pytest.raises(ValueError, match=r"unknown calendar file type '\.yaml'"):
        WorkCalendar.from_file(write(tmp_path, "cal.yaml", "timezone: Asia/Shanghai\n"))


# --- properties ---------------------------------------------------------------------------------

# A Shanghai calendar with holidays and make-up days, and a Berlin one whose night period straddles
# both daylight-saving changes of 2026 (29 March 02:00 → 03:00, 25 October 03:00 → 02:00).
PROPERTY_CALENDARS = {
    "shanghai": CAL,
    "berlin": WorkCalendar(
        "Europe/Berlin",
        [(time(1), time(4)), (time(9), time(17))],
        weekend={6},
        holidays={date(2026, 3, 30)},
        workdays={date(2026, 3, 29)},
    ),
}
DST_DAYS = [datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 10, 25, tzinfo=BERLIN)]

instants = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)).map(
        lambda naive: naive.replace(tzinfo=UTC)
    ),
    # Near the DST changes, where wall-clock arithmetic would go wrong.
    st.tuples(st.sampled_from(DST_DAYS), st.integers(0, 2 * 86_400)).map(
        lambda pair: pair[0].astimezone(UTC) + timedelta(seconds=pair[1])
    ),
)
budgets = st.integers(min_value=0, max_value=6_000)
calendar_names = st.sampled_from(sorted(PROPERTY_CALENDARS))


@settings(max_examples=300, deadline=None)
@given(name=calendar_names, start=instants, minutes=budgets)
@example(name="shanghai", start=sh(2026, 3, 2, 11, 0), minutes=60)
def test_property_round_trip(name: str, start: datetime, minutes: int) -> None:
    cal = PROPERTY_CALENDARS[name]
    due = cal.add_working_minutes(start, minutes)
    assert due.astimezone(UTC) >= start.astimezone(UTC)
    assert cal.working_minutes_between(start, due) == minutes


@settings(max_examples=300, deadline=None)
@given(name=calendar_names, start=instants, minutes=budgets)
def test_property_round_trip_from_working_time(name: str, start: datetime, minutes: int) -> None:
    cal = PROPERTY_CALENDARS[name]
    # Move the start into working time: the moment one minute is spent, less that minute. From a whole
    # minute (the periods start and end on whole minutes) that minute never straddles a gap; from
    # 16:59:00.000001 it would end at 01:00:00.000001 the next period, and "less a minute" is not working.
    start = start.replace(second=0, microsecond=0)
    working_start = cal.add_working_minutes(start, 1).astimezone(UTC) - timedelta(minutes=1)
    assert cal.is_working_time(working_start)
    due = cal.add_working_minutes(working_start, minutes)
    assert cal.working_minutes_between(working_start, due) == minutes
    if minutes:
        assert cal.is_working_time(due.astimezone(UTC) - timedelta(microseconds=1))


@settings(max_examples=300, deadline=None)
@given(name=calendar_names, start=instants, m1=budgets, m2=budgets)
def test_property_monotonic(name: str, start: datetime, m1: int, m2: int) -> None:
    cal = PROPERTY_CALENDARS[name]
    low, high = sorted((m1, m2))
    # In UTC: Python compares two datetimes of one zone by wall clock, which a fall-back repeats.
    early = cal.add_working_minutes(start, low).astimezone(UTC)
    late = cal.add_working_minutes(start, high).astimezone(UTC)
    assert early <= late
    if low < high:
        assert early < late


@settings(max_examples=300, deadline=None)
@given(name=calendar_names, start=instants, m1=budgets, m2=budgets)
@example(name="shanghai", start=sh(2026, 3, 2, 9, 0), m1=180, m2=1)  # first leg ends at lunch
@example(name="shanghai", start=sh(2026, 3, 7, 10, 0), m1=0, m2=30)  # zero first leg on a Saturday
def test_property_additive(name: str, start: datetime, m1: int, m2: int) -> None:
    cal = PROPERTY_CALENDARS[name]
    direct = cal.add_working_minutes(start, m1 + m2)
    in_two_legs = cal.add_working_minutes(cal.add_working_minutes(start, m1), m2)
    assert direct.astimezone(UTC) == in_two_legs.astimezone(UTC)


@settings(max_examples=200, deadline=None)
@given(name=calendar_names, a=instants, b=instants, c=instants)
def test_property_between_is_additive_over_splits(name: str, a: datetime, b: datetime, c: datetime) -> None:
    cal = PROPERTY_CALENDARS[name]
    a, b, c = sorted((a, b, c))
    whole = cal.working_time_between(a, c)
    assert whole == cal.working_time_between(a, b) + cal.working_time_between(b, c)
    assert timedelta(0) <= whole <= c - a
