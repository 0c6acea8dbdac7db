"""The world the matrix and masking tests walk: two incidents (own and other unit), their orders, units,
warnings and photos, made through the product's services."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from incidents.photos import CheckedPhoto, check_photo
from tests.support.factories import first_grid_of, point_in

# Personal numbers planted in every report of the world: a mobile number in the structured field, in
# the description (with an ID number) and, split 3-4-4, in the address.
PHONE = "13912345678"
ID_NUMBER = "440304199001011234"
DESCRIPTION = f"井盖缺失，联系人电话{PHONE}，身份证号{ID_NUMBER}"
ADDRESS = "福田区深南大道1号（电话 139 1234 5678）"


@dataclass
class World:
    """Two of everything: X belongs to grid01's grid and department `dept`, Y to another district."""

    incident: dict[str, int]
    order: dict[str, int]
    unit: dict[str, int]
    warning: dict[str, int]
    dept: str
    users: dict[str, str]
    # A photo of each incident's report, and one of each lead order's progress note.
    report_photo: dict[str, int]
    order_photo: dict[str, int]


def _photo(color: str) -> CheckedPhoto:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, "JPEG")
    return check_photo(out.getvalue(), filename=f"{color}.jpg")


def _progress_with_photo(order_id: int) -> int:
    """The order's department signs it and reports progress with a photo; the photo's id."""
    from command.models import DispatchOrder, OrderPhoto, User
    from command.services import order_act

    order = DispatchOrder.objects.get(pk=order_id)
    staff = User.objects.filter(department_id=order.department_id, role="department").order_by("pk").first()
    assert staff is not None
    order_act(order_id=order_id, actor=staff, action="sign")
    order_act(
        order_id=order_id,
        actor=staff,
        action="progress",
        payload={"note": "现场处置中"},
        photos=[_photo("red")],
    )
    return int(OrderPhoto.objects.get(progress__order_id=order_id).pk)


def _issue_warning(grid: str) -> int:
    from command.models import User
    from command.warnings import warning_create, warning_issue

    operator = User.objects.get(username="operator")
    warning = warning_create(
        actor=operator,
        payload={
            "level": "blue",
            "type": "暴雨",
            "headline": "矩阵测试预警",
            "description": "测试",
            "area": {"units": [{"layer": "grid", "code": grid}]},
            "expires": (timezone.now() + timedelta(hours=6)).isoformat(),
        },
    )
    warning_issue(warning_id=warning.pk, actor=operator)
    return int(warning.pk)


def build_world() -> World:
    """Incidents X and Y, each with a photo and registered (and so dispatched by rule), their lead orders
    signed and in progress with a photo, and a warning over each grid."""
    from command.models import DispatchOrder, OrderRole, Unit, User
    from gis.models import TerritoryUnit
    from incidents.models import Photo, Source
    from incidents.services import ReportInput, incident_act, report_submit

    operator = User.objects.get(username="operator")
    grid_x = first_grid_of("grid01")
    grid_y = (
        TerritoryUnit.objects.filter(layer="grid")
        .exclude(code__startswith=grid_x[:6])
        .order_by("code")
        .first()
    )
    assert grid_y is not None
    ids: dict[str, int] = {}
    for scope, grid, reporter in (("own", grid_x, "grid01"), ("other", grid_y.code, "operator")):
        lon, lat = point_in(grid)
        data = ReportInput(
            category="UM02",
            description=DESCRIPTION,
            address=ADDRESS,
            lon=lon,
            lat=lat,
            reporter_name="张三",
            reporter_phone=PHONE,
        )
        user = User.objects.get(username=reporter)
        incident = report_submit(
            reporter=user, data=data, photos=[_photo("blue")], idempotency_key=uuid.uuid4().hex
        ).incident
        for action in ("accept", "register"):
            incident_act(incident_id=incident.pk, actor=operator, action=action, source=Source.API)
        ids[scope] = incident.pk
    orders = {
        scope: DispatchOrder.objects.get(incident_id=ids[scope], role=OrderRole.LEAD)
        for scope in ("own", "other")
    }
    assert orders["own"].department_id != orders["other"].department_id
    units = {
        scope: Unit.objects.filter(department_id=orders[scope].department_id).order_by("code").first()
        for scope in ("own", "other")
    }
    assert units["own"] is not None and units["other"] is not None
    # Each department reports its unit's position, so `unit.updated` is in the feeds the tests read.
    from command.services import unit_set_position

    for unit in units.values():
        assert unit is not None and unit.lon is not None and unit.lat is not None
        staff = User.objects.filter(department_id=unit.department_id, role="department").first()
        unit_set_position(unit=unit, actor=staff, lon=unit.lon + 0.001, lat=unit.lat)
    dept = orders["own"].department.code
    return World(
        incident=ids,
        order={scope: o.pk for scope, o in orders.items()},
        unit={scope: u.pk for scope, u in units.items() if u is not None},
        warning={"own": _issue_warning(grid_x), "other": _issue_warning(grid_y.code)},
        dept=dept,
        users={
            "operator": "operator",
            "commander": "commander",
            "grid_worker": "grid01",
            "department": dept,
            "admin": "admin",
        },
        report_photo={
            scope: int(Photo.objects.get(report__incident_id=ids[scope]).pk) for scope in ("own", "other")
        },
        order_photo={scope: _progress_with_photo(o.pk) for scope, o in orders.items()},
    )
