"""Order clocks: warning at a fraction, overdue notice at the deadline, repeats until acted on; and
concurrent dispatches of one incident to one department make one order (PostgreSQL row locks)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection

from command.models import DispatchOrder, SupervisionNotice, User
from command.services import order_act, orders_tick
from incidents.services import incident_act
from realtime.models import FeedEntry
from tests.support.factories import report

SH = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 25, 10, 0, tzinfo=SH)


@pytest.mark.django_db
def test_overdue_order_escalates_to_commander_and_head_and_repeats_until_signed():
    operator = User.objects.get(username="operator")
    with time_machine.travel(START, tick=False):
        incident = report(category="UM03", description="违章搭建")
        for action in ("accept", "register", "dispatch"):
            incident_act(incident_id=incident.pk, actor=operator, action=action)
    order = DispatchOrder.objects.get(incident=incident, role="lead")
    # Sign-for: 5 minutes by default, warning at 75 % (3 minutes).
    assert order.stage == "sign" and order.due_at == START + timedelta(minutes=5)
    head = order.department.head
    assert head is not None

    def tick_at(minutes: float) -> dict[str, int]:
        with time_machine.travel(START + timedelta(minutes=minutes), tick=False):
            return orders_tick()

    assert tick_at(2) == {"warned": 0, "overdue": 0, "repeated": 0}
    assert tick_at(4)["warned"] >= 1
    assert tick_at(4.5)["warned"] == 0
    assert tick_at(6)["overdue"] >= 1
    notices = SupervisionNotice.objects.filter(order=order)
    assert [n.level for n in notices] == [1]
    got = set(
        FeedEntry.objects.filter(event__name="order.overdue", event__data__id=order.pk).values_list(
            "user__username", flat=True
        )
    )
    assert "commander" in got and head.username in got and "operator" not in got
    assert tick_at(10)["repeated"] == 0  # repeats every 15 minutes (the demo's escalation policy)
    # Both open orders (lead and assisting) repeat their notice; each exactly once per interval.
    assert tick_at(21.5)["repeated"] == 2
    assert tick_at(21.6)["repeated"] == 0
    assert tick_at(37)["repeated"] == 2
    assert [n.level for n in SupervisionNotice.objects.filter(order=order)] == [1, 2, 3]
    # Acting on the order stops the ladder: signing starts the arrival clock afresh.
    staff = User.objects.get(username=order.department.code)
    with time_machine.travel(START + timedelta(minutes=38), tick=False):
        order_act(order_id=order.pk, actor=staff, action="sign")
    order.refresh_from_db()
    assert order.stage == "arrive" and order.overdue_at is None and order.escalation_count == 0
    tick_at(60)  # the assisting order, still unsigned, goes on escalating; the lead's ladder stopped
    assert [n.level for n in SupervisionNotice.objects.filter(order=order)] == [1, 2, 3]
    timeline = list(
        incident.timeline.filter(action__startswith="order_", data__order_id=order.pk).values_list(
            "action", flat=True
        )
    )
    # One warning per clock: sign-for (minute 3) and, after signing at 38, arrival (38 + 22 = 60).
    assert timeline.count("order_due_soon") == 2
    assert timeline.count("order_overdue") == 1 and timeline.count("order_escalated") == 2


@pytest.mark.django_db(transaction=True)
def test_two_operators_dispatching_at_once_make_one_order_per_department(demo_city):
    if connection.vendor != "postgresql":
        pytest.fail("needs PostgreSQL")
    operator, commander = User.objects.get(username="operator"), User.objects.get(username="commander")
    incident = report(category="UM03", description="违章搭建")
    for action in ("accept", "register"):
        incident_act(incident_id=incident.pk, actor=operator, action=action)
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def dispatch(user: User) -> None:
        try:
            barrier.wait()
            incident_act(
                incident_id=incident.pk,
                actor=user,
                action="dispatch",
                payload={"lead": "water_group", "assist": ["power_supply"], "reason": "地下管线"},
            )
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatch, args=(u,)) for u in (operator, commander)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    codes = sorted(DispatchOrder.objects.filter(incident=incident).values_list("department__code", flat=True))
    assert codes == ["power_supply", "water_group"]
