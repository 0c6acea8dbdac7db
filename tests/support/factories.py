"""Helpers that make test data through the product's own services."""

from __future__ import annotations

import uuid
from typing import Any

import shapely

from command.models import User
from gis.models import TerritoryUnit
from incidents.models import Incident
from incidents.services import ReportInput, report_submit


def point_in(code: str, layer: str = "grid") -> tuple[float, float]:
    """A point well inside a territory unit."""
    unit = TerritoryUnit.objects.get(layer=layer, code=code)
    geom = shapely.from_wkb(bytes(unit.geometry_wkb))
    # The centre of the largest inscribed circle is far from every edge (no near-boundary surprises).
    centre = shapely.maximum_inscribed_circle(geom).coords[0]
    return float(centre[0]), float(centre[1])


def first_grid_of(username: str) -> str:
    """The first grid (by code) assigned to a grid worker."""
    return User.objects.get(username=username).grids.order_by("code").values_list("code", flat=True)[0]


def report(
    username: str = "grid01",
    *,
    category: str = "UM02",
    grid: str | None = None,
    description: str = "井盖缺失，有行人跌落风险",
    key: str | None = None,
    **extra: Any,
) -> Incident:
    """Submit a report through the intake service and return its incident."""
    user = User.objects.get(username=username)
    lon, lat = point_in(grid or first_grid_of("grid01"))
    data = ReportInput(category=category, description=description, lon=lon, lat=lat, **extra)
    result = report_submit(reporter=user, data=data, idempotency_key=key or uuid.uuid4().hex)
    return result.incident
