"""An order's delivery (its department's first ack): what it records, and what it costs per ack.

Every first ack of an ``order.created`` event runs this on the websocket's path, so it must stay a
handful of statements and never read the users table (the command centre's staff come from the kept
directory, incidents/audience.py): with thousands of users, one read per ack was most of a daphne
process's work under a stream of reports (docs/performance.md, "Realtime").
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditRecord
from command.models import DispatchOrder, User
from command.services import order_mark_delivered
from command.ws import orders_delivered_on_ack
from incidents.models import IncidentLogRecord
from incidents.services import incident_act
from realtime.models import FeedEntry
from tests.support.factories import report

pytestmark = pytest.mark.django_db


def _issued_orders(n: int) -> list[DispatchOrder]:
    operator = User.objects.get(username="operator")
    orders = []
    for _ in range(n):
        incident = report(category="AC01", description="仓库起火")
        for action in ("accept", "register"):
            incident_act(incident_id=incident.pk, actor=operator, action=action)
        orders.append(DispatchOrder.objects.get(incident=incident, role="lead"))
    return orders


def _user_reads(queries: list[dict[str, str]]) -> list[str]:
    table = User._meta.db_table
    return [q["sql"] for q in queries if f'"{table}"' in q["sql"] or f" {table} " in q["sql"]]


def test_delivery_records_the_step_for_the_centre_without_reading_users(demo_city):
    first, second = _issued_orders(2)
    assert order_mark_delivered(order_id=first.pk)  # the process keeps the directory from here on
    with CaptureQueriesContext(connection) as queries:
        assert order_mark_delivered(order_id=second.pk)
    assert _user_reads(queries.captured_queries) == []
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT"))
    ]
    if connection.vendor == "postgresql":
        # The conditional UPDATE, the order, its incident (with reporters and versions), then one
        # statement each for the timeline row, the event with its feeds, and the audit records.
        assert len(statements) <= 6, "\n".join(s[:90] for s in statements)

    second.refresh_from_db()
    assert second.status == "delivered" and second.delivered_at is not None
    step = IncidentLogRecord.objects.filter(incident_id=second.incident_id, action="order_delivered").get()
    assert step.data["order_id"] == second.pk and step.data["order_to"] == "delivered"
    assert AuditRecord.objects.filter(object_id=second.incident_id, action="order_delivered").count() == 1
    # The event goes to the active command centre staff, and to them only.
    centre = set(
        User.objects.filter(role__in=["operator", "commander"], is_active=True).values_list("pk", flat=True)
    )
    entries = FeedEntry.objects.filter(event__name="order.updated", event__data__id=second.pk)
    receivers = set(entries.filter(event__data__action="delivered").values_list("user_id", flat=True))
    assert receivers == centre and centre

    # Once only: a second ack of the same order changes nothing.
    with CaptureQueriesContext(connection) as again:
        assert not order_mark_delivered(order_id=second.pk)
    assert (
        IncidentLogRecord.objects.filter(incident_id=second.incident_id, action="order_delivered").count()
        == 1
    )
    assert [q for q in again.captured_queries if q["sql"].startswith(("INSERT", "WITH"))] == []


def test_an_ack_of_other_events_reads_nothing_and_one_of_orders_reads_once(demo_city):
    (order,) = _issued_orders(1)
    staff = User.objects.filter(department_id=order.department_id, is_active=True).first()
    assert staff is not None
    with CaptureQueriesContext(connection) as queries:
        orders_delivered_on_ack({staff.pk: [("incident.updated", {"id": order.incident_id})]})
    assert queries.captured_queries == []

    outsider = User.objects.exclude(department_id=order.department_id).filter(role="department").first()
    assert outsider is not None
    orders_delivered_on_ack({outsider.pk: [("order.created", {"id": order.pk})]})
    order.refresh_from_db()
    assert order.status == "issued", "another department's ack delivers nothing"

    orders_delivered_on_ack({staff.pk: [("order.created", {"id": order.pk})]})
    order.refresh_from_db()
    assert order.status == "delivered"


def test_one_flush_of_several_departments_acks_delivers_each_order_to_its_own(demo_city):
    first, second = _issued_orders(2)
    staff = {
        order.pk: User.objects.filter(department_id=order.department_id, is_active=True).first()
        for order in (first, second)
    }
    outsider = (
        User.objects.exclude(department_id__in=[first.department_id, second.department_id])
        .filter(role="department")
        .first()
    )
    assert outsider is not None and all(staff.values())
    created = "order.created"
    acks = {
        staff[first.pk].pk: [(created, {"id": first.pk}), ("incident.updated", {"id": first.incident_id})],
        outsider.pk: [(created, {"id": second.pk})],
    }
    if staff[second.pk].pk in acks:  # one department holds both: its user acks both
        acks[staff[second.pk].pk].append((created, {"id": second.pk}))
    else:
        acks[staff[second.pk].pk] = [(created, {"id": second.pk})]
    orders_delivered_on_ack(acks)
    for order in (first, second):
        order.refresh_from_db()
        assert order.status == "delivered" and order.delivered_at is not None
    steps = IncidentLogRecord.objects.filter(
        action="order_delivered", incident_id__in=[first.incident_id, second.incident_id]
    )
    assert steps.count() == 2, "one step each, the outsider's ack counted for nothing"
