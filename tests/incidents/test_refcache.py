"""Deadline policies and linkage rules kept per process, re-read when the reference data version moves."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from incidents import deadlines, refcache
from incidents.models import DeadlinePolicy, DurationUnit, Incident, ReferenceVersion
from tests.support.factories import report

pytestmark = [pytest.mark.django_db]


def _policy_reads(queries: list[dict[str, str]]) -> int:
    table = DeadlinePolicy._meta.db_table
    return sum(1 for q in queries if q["sql"].startswith("SELECT") and f'FROM "{table}"' in q["sql"])


def _policy_of(incident: Incident) -> DeadlinePolicy:
    policy = deadlines.policy_for(
        stage=incident.stage, category=incident.category, grade=None, area_codes=incident.area_codes()
    )
    assert policy is not None
    return policy


def _clock_minutes(incident: Incident) -> float:
    assert incident.due_at is not None and incident.stage_started_at is not None
    return (incident.due_at - incident.stage_started_at) / timedelta(minutes=1)


def test_policies_are_read_once_then_again_after_an_edit_here_or_in_another_process(demo_city):
    refcache.forget_all()
    first = report()
    with CaptureQueriesContext(connection) as kept:
        report()
    assert _policy_reads(kept.captured_queries) == 0, "the second intake used the process's copy"

    # An edit through the ORM (the admin, in this process) bumps the version: the next intake sees it.
    policy = _policy_of(first)
    policy.unit, policy.duration = DurationUnit.MINUTES, 777
    policy.save()
    with CaptureQueriesContext(connection) as reread:
        edited = report()
    assert _policy_reads(reread.captured_queries) == 1
    assert _clock_minutes(edited) == 777

    # Another process's edit: rows and version changed in the database, nothing said to this process.
    table, ref = DeadlinePolicy._meta.db_table, ReferenceVersion._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET duration = 555 WHERE id = %s", [policy.pk])
    assert _clock_minutes(report()) == 777, "without a bump the kept copy still serves (it is a cache)"
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {ref} SET version = version + 1 WHERE id = 1")
    assert _clock_minutes(report()) == 555


def test_without_a_version_row_nothing_is_kept_across_service_calls(demo_city):
    ReferenceVersion.objects.all().delete()  # an emptied database (a test flush) has none
    refcache.forget_all()
    report()
    with CaptureQueriesContext(connection) as queries:
        report()
    assert _policy_reads(queries.captured_queries) == 1


def _user_reads(queries: list[dict[str, str]]) -> int:
    from command.models import User

    table = User._meta.db_table
    return sum(1 for q in queries if q["sql"].startswith("SELECT") and f'FROM "{table}' in q["sql"])


def _receivers(incident: Incident) -> set[int]:
    """Who got the feed entries of the incident's latest event."""
    from realtime.models import FeedEntry

    latest = FeedEntry.objects.filter(event__data__id=incident.pk).order_by("-event_id").first()
    assert latest is not None
    return set(FeedEntry.objects.filter(event_id=latest.event_id).values_list("user_id", flat=True))


def test_the_audience_is_kept_and_follows_edits_of_users_and_their_grids(demo_city):
    from django.contrib.auth.models import update_last_login

    from command.constants import Role
    from command.models import User
    from gis.models import TerritoryUnit
    from incidents.services import incident_act
    from tests.support.factories import first_grid_of

    refcache.forget_all()
    operator = User.objects.get(username="operator")
    grid = first_grid_of("grid01")
    first = report()
    with CaptureQueriesContext(connection) as kept:
        incident_act(incident_id=first.pk, actor=operator, action="accept")
    assert _user_reads(kept.captured_queries) == 0, "the action used the process's directory of users"
    centre = set(User.objects.filter(role__in=[Role.OPERATOR, Role.COMMANDER]).values_list("pk", flat=True))
    assert centre <= _receivers(first)

    # A new grid worker given the grid receives the next event; a login changes nothing kept.
    newcomer = User.objects.create_user("grid_new", password="x-Secret-123", role=Role.GRID_WORKER)
    newcomer.grids.add(TerritoryUnit.objects.get(layer="grid", code=grid))
    second = report()
    assert newcomer.pk in _receivers(second)
    version = ReferenceVersion.objects.get(pk=1).version
    update_last_login(None, newcomer)
    assert ReferenceVersion.objects.get(pk=1).version == version

    # Taken off the grid, then an operator deactivated: neither receives what follows.
    newcomer.grids.clear()
    operator_two = User.objects.get(username="commander")
    operator_two.is_active = False
    operator_two.save()
    third = report()
    assert newcomer.pk not in _receivers(third)
    assert operator_two.pk not in _receivers(third)
    assert operator.pk in _receivers(third)


def _reference_reads(queries: list[dict[str, str]]) -> list[str]:
    """SELECTs of reference tables: departments and their jurisdictions, rules, categories, grades."""
    tables = ("command_department", "command_linkagerule", "incidents_category", "incidents_grade")
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith("SELECT") and any(f'FROM "{t}' in q["sql"] for t in tables)
    ]


def _fire_registered() -> Incident:
    from command.models import User
    from incidents.services import incident_act

    operator = User.objects.get(username="operator")
    incident = report(category="AC01", description="厂房起火")
    incident_act(incident_id=incident.pk, actor=operator, action="accept")
    return incident_act(incident_id=incident.pk, actor=operator, action="register")


def test_dispatch_reads_no_reference_table_once_kept_and_sees_edits_of_many_to_many_links(demo_city):
    from command.models import Department, DispatchOrder, LinkageRule

    refcache.forget_all()
    _fire_registered()
    with CaptureQueriesContext(connection) as queries:
        incident = _fire_registered()
    assert _reference_reads(queries.captured_queries) == []
    assert DispatchOrder.objects.filter(incident=incident).count() == 3

    # Changing only a rule's assisting departments (no save of the rule) reaches the next dispatch.
    rule = LinkageRule.objects.get(category__code="AC01")
    water = Department.objects.filter(kind="water", active=True).order_by("code").first()
    assert water is not None
    rule.assist_departments.set([water])
    incident = _fire_registered()
    departments = set(
        DispatchOrder.objects.filter(incident=incident).values_list("department__kind", flat=True)
    )
    assert "water" in departments


def _directory_reads(queries: list[dict[str, str]]) -> int:
    """Reads of the directory of recipients (each reads the grid workers' grids once)."""
    return sum(
        1 for q in queries if q["sql"].startswith("SELECT") and 'FROM "command_user_grids"' in q["sql"]
    )


def test_the_clock_ticks_read_the_directory_of_recipients_once_not_per_event(demo_city):
    from command.models import DispatchOrder
    from command.services import orders_tick
    from incidents.services import deadlines_tick

    refcache.forget_all()
    incidents = [_fire_registered() for _ in range(3)]
    later = max(o.due_at for o in DispatchOrder.objects.filter(incident__in=incidents)) + timedelta(days=30)
    refcache.forget_all()
    with CaptureQueriesContext(connection) as queries:
        counts = orders_tick(now=later)
    assert counts["warned"] >= 9 and counts["overdue"] >= 9, counts
    assert _directory_reads(queries.captured_queries) <= 1, "one directory read for the whole tick"
    refcache.forget_all()
    with CaptureQueriesContext(connection) as queries:
        warned, overdue = deadlines_tick(now=later)
    assert warned + overdue >= 3
    assert _directory_reads(queries.captured_queries) <= 1
