"""Unit positions: reported by the unit's own department, audited, and published live as `unit.updated`."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command

from audit.models import AuditRecord
from audit.verify import verify_chain
from command.constants import Role
from command.models import Unit, UnitStatus, User
from command.services import unit_set_position
from incidents.services import ActionError
from realtime.events import check_event
from realtime.models import Event, FeedEntry

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("demo_city")]


@pytest.fixture(autouse=True)
def _anchors_apart(settings: Any, tmp_path: Any) -> None:
    # audit_verify also checks anchors: keep those of other runs out of this test database's check.
    settings.AUDIT_ANCHOR_DIR = tmp_path / "anchors"


def _unit() -> Unit:
    unit = (
        Unit.objects.select_related("department").filter(status=UnitStatus.AVAILABLE).order_by("code").first()
    )
    assert unit is not None and unit.lon is not None
    return unit


def _where(unit: Unit) -> tuple[float, float]:
    assert unit.lon is not None and unit.lat is not None
    return unit.lon, unit.lat


def _staff(unit: Unit) -> User:
    """The demo user named after the unit's department (its staff, role `department`)."""
    return User.objects.get(username=unit.department.code, role=Role.DEPARTMENT)


def _other_department_staff(unit: Unit) -> User:
    other = (
        User.objects.filter(role=Role.DEPARTMENT, is_active=True)
        .exclude(department_id=unit.department_id)
        .order_by("pk")
        .first()
    )
    assert other is not None
    return other


def _events(unit: Unit) -> list[Event]:
    return list(Event.objects.filter(name="unit.updated", data__id=unit.pk).order_by("pk"))


def event_recipients(event: Event) -> set[int]:
    return set(FeedEntry.objects.filter(event=event).values_list("user_id", flat=True))


def _verify_command() -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue()
    return 0, out.getvalue()


def test_a_position_is_saved_audited_and_the_chain_verifies() -> None:
    unit = _unit()
    staff = _staff(unit)
    x, y = _where(unit)
    lon, lat = round(x + 0.002, 6), round(y - 0.001, 6)
    before = AuditRecord.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    unit_set_position(unit=unit, actor=staff, lon=lon, lat=lat, status=UnitStatus.BUSY)

    unit.refresh_from_db()
    assert (unit.lon, unit.lat, unit.status) == (lon, lat, UnitStatus.BUSY)
    assert unit.position_at is not None
    records = list(AuditRecord.objects.filter(seq__gt=before).order_by("seq"))
    assert len(records) == 1
    record = records[0]
    assert (record.action, record.object_type, record.object_id) == ("position", "unit", str(unit.pk))
    assert (record.actor_username, record.actor_role, record.source) == (staff.username, "department", "api")
    assert (record.from_status, record.to_status) == ("available", "busy")
    assert record.data_obj == {"department": unit.department.code, "lon": lon, "lat": lat}
    assert record.at == unit.position_at
    assert verify_chain(anchors=False).ok
    code, output = _verify_command()
    assert code == 0, output


def test_the_event_reaches_the_centre_and_the_units_department_only() -> None:
    unit = _unit()
    staff = _staff(unit)
    unit_set_position(unit=unit, actor=staff, lon=unit.lon, lat=unit.lat)

    events = _events(unit)
    assert len(events) == 1
    event = events[0]
    unit.refresh_from_db()
    check_event("unit.updated", event.data)
    assert event.data == {
        "id": unit.pk,
        "code": unit.code,
        "name": unit.name,
        "kind": unit.kind,
        "department": unit.department.code,
        "status": "available",
        "lon": unit.lon,
        "lat": unit.lat,
        "position_at": unit.position_at.isoformat() if unit.position_at else "missing",
    }
    recipients = event_recipients(event)
    centre = set(
        User.objects.filter(role__in=[Role.OPERATOR, Role.COMMANDER], is_active=True).values_list(
            "pk", flat=True
        )
    )
    own = set(
        User.objects.filter(
            department_id=unit.department_id, role=Role.DEPARTMENT, is_active=True
        ).values_list("pk", flat=True)
    )
    assert User.objects.get(username="operator").pk in recipients
    assert staff.pk in recipients
    assert recipients == centre | own
    assert _other_department_staff(unit).pk not in recipients
    # Nobody of another department, no grid worker, no administrator.
    outsiders = (
        User.objects.filter(pk__in=recipients)
        .exclude(role__in=[Role.OPERATOR, Role.COMMANDER])
        .exclude(department_id=unit.department_id)
    )
    assert not outsiders.exists()
    assert not User.objects.filter(pk__in=recipients, role__in=[Role.GRID_WORKER, Role.ADMIN]).exists()


def test_a_refused_or_failed_report_changes_nothing_and_publishes_nothing(monkeypatch: Any) -> None:
    unit = _unit()
    position = (unit.lon, unit.lat, unit.status, unit.position_at)
    audit_head = AuditRecord.objects.count()
    for actor in (User.objects.get(username="operator"), _other_department_staff(unit)):
        with pytest.raises(PermissionDenied):
            unit_set_position(unit=unit, actor=actor, lon=114.05, lat=22.54)
    with pytest.raises(ActionError) as bad_lon:
        unit_set_position(unit=unit, actor=_staff(unit), lon="east", lat=22.54)
    assert bad_lon.value.field == "lon"
    with pytest.raises(ActionError) as bad_status:
        unit_set_position(unit=unit, actor=_staff(unit), lon=114.05, lat=22.54, status="asleep")
    assert bad_status.value.field == "status"

    # The audit row is written in the position's transaction: if it fails, the position rolls back.
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("audit chain unavailable")

    monkeypatch.setattr("command.services.audit_record", broken)
    with pytest.raises(RuntimeError):
        unit_set_position(unit=unit, actor=_staff(unit), lon=114.05, lat=22.54, status=UnitStatus.BUSY)

    unit.refresh_from_db()
    assert (unit.lon, unit.lat, unit.status, unit.position_at) == position
    assert _events(unit) == []
    assert AuditRecord.objects.count() == audit_head


def test_the_route_takes_positions_from_the_units_own_department_only(client_for: Any) -> None:
    unit = _unit()
    url = f"/api/v1/units/{unit.pk}/position/"
    body = {"lon": round(_where(unit)[0] + 0.001, 6), "lat": unit.lat, "status": "busy"}

    # Another department does not see the unit; the centre sees it but may not move it; a grid worker neither.
    assert (
        client_for(_other_department_staff(unit).username).post(url, body, format="json").status_code == 404
    )
    assert client_for("operator").post(url, body, format="json").status_code == 403
    assert client_for("commander").post(url, body, format="json").status_code == 403
    assert client_for("grid01").post(url, body, format="json").status_code == 404
    assert _events(unit) == []

    own = client_for(unit.department.code)
    bad = own.post(url, {"lon": 500, "lat": unit.lat}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "lon"
    response = own.post(url, body, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["id"], answer["lon"], answer["status"]) == (unit.pk, body["lon"], "busy")
    events = _events(unit)
    assert len(events) == 1 and events[0].data["lon"] == body["lon"] and events[0].data["status"] == "busy"
    assert AuditRecord.objects.filter(object_type="unit", object_id=str(unit.pk), source="api").count() == 1
