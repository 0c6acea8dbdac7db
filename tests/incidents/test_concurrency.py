"""Concurrent intake on PostgreSQL: one incident per Idempotency-Key, gap-free codes per district and day."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection

from command.models import User
from incidents.models import Incident, Report
from incidents.services import ReportInput, report_submit
from tests.support.factories import first_grid_of, point_in

pytestmark = [pytest.mark.django_db(transaction=True)]


def _run_threads(n: int, work) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # collected and asserted on below
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_twenty_threads_with_the_same_key_make_one_incident(demo_city):
    if connection.vendor != "postgresql":
        pytest.fail("this test needs PostgreSQL (the suite's default)")
    user = User.objects.get(username="grid01")
    lon, lat = point_in(first_grid_of("grid01"))
    key = str(uuid.uuid4())
    data = ReportInput(category="UM02", description="井盖缺失", lon=lon, lat=lat)

    results = _run_threads(20, lambda i: report_submit(reporter=user, data=data, idempotency_key=key))
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    incident_ids = {r.incident.pk for r in results}
    assert len(incident_ids) == 1
    assert sum(1 for r in results if r.created) == 1
    assert Report.objects.filter(idempotency_key=key).count() == 1
    assert Incident.objects.filter(pk__in=incident_ids).count() == 1


def test_concurrent_intake_gets_gap_free_codes(demo_city):
    grid = first_grid_of("grid01")
    lon, lat = point_in(grid)
    users = list(User.objects.filter(role="grid_worker").order_by("username")[:5])

    def work(i: int) -> Incident:
        data = ReportInput(category="UM02", description=f"报告 {i}", lon=lon, lat=lat)
        return report_submit(reporter=users[i % len(users)], data=data, idempotency_key=f"gap-{i}").incident

    results = _run_threads(20, work)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    codes = sorted(r.code for r in results)
    prefix = codes[0].rsplit("-", 1)[0]
    assert all(c.startswith(prefix) for c in codes)
    assert [int(c.rsplit("-", 1)[1]) for c in codes] == list(range(1, 21))


def test_the_serial_the_incident_and_its_report_are_one_statement_and_codes_grow_past_four_digits(demo_city):
    """On PostgreSQL an intake numbers its incident, writes it and writes its report in one statement;
    the code reads as f"{serial:04d}" does: 0001…9999, then 10000 (not cut to four characters)."""
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from incidents.models import IncidentSerial

    if connection.vendor != "postgresql":
        pytest.fail("this test needs PostgreSQL (the suite's default)")
    user = User.objects.get(username="grid01")
    lon, lat = point_in(first_grid_of("grid01"))

    def intake(n: int) -> Incident:
        data = ReportInput(category="UM02", description=f"报告 {n}", lon=lon, lat=lat)
        return report_submit(reporter=user, data=data, idempotency_key=f"serial-{n}").incident

    with CaptureQueriesContext(connection) as queries:
        first = intake(0)
    serial_writes = [q["sql"] for q in queries.captured_queries if "incidents_incidentserial" in q["sql"]]
    assert len(serial_writes) == 1
    assert 'INSERT INTO "incidents_incident"' in serial_writes[0]
    assert 'INSERT INTO "incidents_report"' in serial_writes[0]
    assert not [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "incidents_report"')]
    day = timezone.localtime(first.reported_at).date()
    assert first.code == f"{first.district_code}-{day:%Y%m%d}-0001"
    stored = Incident.objects.get(pk=first.pk)
    assert stored.code == first.code
    assert Report.objects.get(idempotency_key="serial-0").incident_id == first.pk

    IncidentSerial.objects.filter(district_code=first.district_code, day=day).update(last=9998)
    codes = [intake(n).code.rsplit("-", 1)[1] for n in (1, 2, 3)]
    assert codes == ["9999", "10000", "10001"]
    assert Incident.objects.filter(code__endswith="-10000").count() == 1


def _locked_in_another_session(incident_id: int) -> object:
    """A raw session of its own holding the incident's row, as an action on it does first."""
    import psycopg

    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"], dbname=settings["NAME"]
    )
    other.execute("SELECT id FROM incidents_incident WHERE id = %s FOR UPDATE", [incident_id])
    return other


def test_an_intake_linking_a_duplicate_and_an_action_on_that_incident_do_not_deadlock(demo_city):
    """Lock order: the linked incident before the feeds (migration incidents 0009).

    An action locks its incident, then the feeds of its event's recipients. An intake that links that
    incident as a possible duplicate used to take its key-share lock on it only at commit, after it had
    locked the same feeds (the command centre's): each waited for the other, and PostgreSQL killed one.
    """
    import time

    from realtime.models import Feed

    grid_worker = User.objects.get(username="grid01")
    lon, lat = point_in(first_grid_of("grid01"))
    earlier = report_submit(
        reporter=grid_worker,
        data=ReportInput(category="UM03", description="违章搭建", lon=lon, lat=lat),
        idempotency_key=uuid.uuid4().hex,
    ).incident
    centre = list(User.objects.filter(role__in=["operator", "commander"]).values_list("pk", flat=True))
    assert Feed.objects.filter(user_id__in=centre).count() == len(centre)

    action = _locked_in_another_session(earlier.pk)
    outcome: dict[str, object] = {}

    def intake() -> None:
        try:
            data = ReportInput(category="UM03", description="又一处违章搭建", lon=lon, lat=lat)
            result = report_submit(reporter=grid_worker, data=data, idempotency_key=uuid.uuid4().hex)
            outcome["duplicates"] = result.duplicates
        except Exception as exc:  # asserted on below
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=intake)
    thread.start()
    time.sleep(1.0)  # the intake goes as far as it can: it waits on the incident the action holds
    try:
        # The action goes on to its event: the command centre's feeds, in user order.
        action.execute(
            "SELECT user_id FROM realtime_feed WHERE user_id = ANY(%s) ORDER BY user_id FOR UPDATE", [centre]
        )
        action.commit()
    finally:
        action.close()
    thread.join(30)
    assert "error" not in outcome, outcome
    assert outcome["duplicates"] == [earlier.pk]
