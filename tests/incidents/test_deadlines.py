"""Deadlines as data, working time across a weekend, a holiday and a 调休 day, and the timer's marks."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection

from command.models import User
from gis.models import TerritoryUnit
from incidents import deadlines
from incidents.models import Category, DeadlinePolicy, DurationUnit, Grade, Incident, IncidentLogRecord
from incidents.services import deadlines_tick, incident_act
from tests.support.factories import first_grid_of, report

SH = ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SH)


@pytest.fixture
def calendar_file(tmp_path, settings):
    path = tmp_path / "calendar.json"
    path.write_text(
        json.dumps(
            {
                "timezone": "Asia/Shanghai",
                "periods": [["09:00", "12:00"], ["13:30", "17:30"]],
                "weekend": [5, 6],
                "holidays": [{"date": "2026-11-30", "name": "test holiday"}],
                "workdays": [{"date": "2026-11-28", "name": "test make-up Saturday (调休)"}],
            }
        )
    )
    settings.WORK_CALENDAR_FILE = str(path)
    deadlines.work_calendar.cache_clear()
    yield path
    deadlines.work_calendar.cache_clear()


@pytest.mark.django_db
def test_working_time_deadline_skips_weekend_and_holiday_but_counts_the_make_up_day(calendar_file):
    operator = User.objects.get(username="operator")
    # Friday 27 November 2026, 16:00: urban management is handled within 960 working minutes.
    with time_machine.travel(at("2026-11-27T16:00:00"), tick=False):
        incident = report(category="UM03", description="违章搭建")
        for action in ("accept", "register"):
            incident_act(incident_id=incident.pk, actor=operator, action=action)
        incident_act(incident_id=incident.pk, actor=operator, action="dispatch")
    incident.refresh_from_db()
    assert incident.stage == "handle" and incident.clock_unit == DurationUnit.WORKING_MINUTES
    # Fri 16:00–17:30 (90) + Sat make-up day (420) + Sun off + Mon holiday + Tue (420) = 930; Wed 09:30.
    assert incident.due_at == at("2026-12-02T09:30:00")


@pytest.mark.django_db
def test_most_specific_policy_wins():
    fire = Category.objects.get(code="AC01")
    grade_one = Grade.objects.get(code="I")
    district = TerritoryUnit.objects.get(layer="district", code=first_grid_of("grid01")[:6])
    DeadlinePolicy.objects.create(stage="accept", category=fire.parent, duration=4)
    DeadlinePolicy.objects.create(stage="accept", category=fire, duration=3)
    DeadlinePolicy.objects.create(stage="accept", category=fire, area=district, duration=2)
    codes = {"district": district.code}
    policy = deadlines.policy_for(stage="accept", category=fire, grade=None, area_codes=codes)
    assert policy is not None and policy.duration == 2
    DeadlinePolicy.objects.create(stage="accept", category=fire, grade=grade_one, area=district, duration=1)
    assert (
        deadlines.policy_for(stage="accept", category=fire, grade=grade_one, area_codes=codes).duration == 1
    )
    elsewhere = {"district": "999999"}
    assert deadlines.policy_for(stage="accept", category=fire, grade=None, area_codes=elsewhere).duration == 3
    water = Category.objects.get(code="AC05")
    assert (
        deadlines.policy_for(stage="accept", category=water, grade=None, area_codes=elsewhere).duration == 4
    )


@pytest.mark.django_db
def test_due_soon_and_overdue_fire_once_and_suspension_stops_the_clock():
    start = at("2026-11-25T10:00:00")
    with time_machine.travel(start, tick=False):
        incident = report(category="UM02")
    incident.refresh_from_db()
    assert incident.due_at == start + timedelta(minutes=5) and incident.warn_at == start + timedelta(
        minutes=3
    )
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        assert deadlines_tick() == (0, 0)
    with time_machine.travel(start + timedelta(minutes=4), tick=False):
        assert deadlines_tick()[0] >= 1
        assert deadlines_tick() == (0, 0)
    with time_machine.travel(start + timedelta(minutes=6), tick=False):
        assert deadlines_tick()[1] >= 1
        assert deadlines_tick() == (0, 0)
    marks = list(
        IncidentLogRecord.objects.filter(incident=incident, action__in=["due_soon", "overdue"]).values_list(
            "action", flat=True
        )
    )
    assert marks == ["due_soon", "overdue"]
    detail = Incident.objects.get(pk=incident.pk)
    assert detail.is_overdue

    # A commander's suspension stops the clock; resuming pushes the due time out by the pause.
    operator, commander = User.objects.get(username="operator"), User.objects.get(username="commander")
    with time_machine.travel(start + timedelta(minutes=7), tick=False):
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
    accepted = Incident.objects.get(pk=incident.pk)
    due_before = accepted.due_at
    assert due_before == start + timedelta(minutes=17)
    with time_machine.travel(start + timedelta(minutes=8), tick=False):
        incident_act(
            incident_id=incident.pk, actor=commander, action="suspend", payload={"reason": "等待气象条件"}
        )
    with time_machine.travel(start + timedelta(minutes=30), tick=False):
        assert deadlines_tick() == (0, 0)  # suspended: nothing fires although past due
        incident_act(incident_id=incident.pk, actor=operator, action="resume")
    resumed = Incident.objects.get(pk=incident.pk)
    assert resumed.due_at == due_before + timedelta(minutes=22)


@pytest.mark.django_db
def test_operator_extension_needs_a_commanders_approval():
    operator, commander = User.objects.get(username="operator"), User.objects.get(username="commander")
    incident = report(category="UM02")
    incident_act(incident_id=incident.pk, actor=operator, action="accept")
    due = Incident.objects.get(pk=incident.pk).due_at
    incident_act(
        incident_id=incident.pk,
        actor=operator,
        action="extend",
        payload={"reason": "需协调产权单位", "minutes": 60},
    )
    assert Incident.objects.get(pk=incident.pk).due_at == due  # only a request so far
    from incidents.services import ActionError

    with pytest.raises(ActionError):
        incident_act(
            incident_id=incident.pk, actor=operator, action="extend", payload={"reason": "再次", "minutes": 5}
        )
    incident_act(incident_id=incident.pk, actor=commander, action="approve")
    assert Incident.objects.get(pk=incident.pk).due_at == due + timedelta(minutes=60)
    actions = list(IncidentLogRecord.objects.filter(incident=incident).values_list("action", flat=True))
    assert actions[-2:] == ["request_extend", "extend"]


@pytest.mark.django_db(transaction=True)
def test_marks_fire_once_with_several_workers(demo_city):
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL")
    start = at("2026-11-25T10:00:00")
    with time_machine.travel(start, tick=False):
        incident = report(category="UM02")
    results: list[tuple[int, int]] = []

    def worker() -> None:
        try:
            with time_machine.travel(start + timedelta(minutes=10), tick=False):
                results.append(deadlines_tick())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r[0] for r in results) == 1 and sum(r[1] for r in results) == 1
    assert IncidentLogRecord.objects.filter(incident=incident, action="due_soon").count() == 1
    assert IncidentLogRecord.objects.filter(incident=incident, action="overdue").count() == 1
