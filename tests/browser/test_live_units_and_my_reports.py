"""Two live gaps closed, in a real browser: units move on the command centre's map as their department
reports positions (`unit.updated`), and the phone's "My reports" lists what the worker reported from
another device (`GET /api/v1/incidents/?reporter=me`), merged with the outbox.
"""

from __future__ import annotations

import uuid

import pytest

from command.models import Unit, UnitStatus, User
from command.services import unit_set_position
from incidents.services import ReportInput, report_submit
from tests.browser.conftest import off_loop, wait_until
from tests.support.factories import first_grid_of, point_in
from tests.support.servers import daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

LIVE = 20000  # ms


def move_unit(unit_id: int, lon: float, lat: float, status: str) -> None:
    """The unit's department reports a new position and status (as its vehicle's terminal would)."""
    unit = Unit.objects.select_related("department").get(pk=unit_id)
    staff = User.objects.get(username=unit.department.code)
    unit_set_position(unit=unit, actor=staff, lon=lon, lat=lat, status=status)


def report_elsewhere(description: str) -> int:
    """grid01 reports from another device (nothing of it is in this phone's outbox)."""
    lon, lat = point_in(first_grid_of("grid01"))
    data = ReportInput(category="UM02", description=description, lon=lon, lat=lat)
    user = User.objects.get(username="grid01")
    return int(report_submit(reporter=user, data=data, idempotency_key=uuid.uuid4().hex).incident.pk)


def test_a_unit_marker_moves_and_restyles_live(tmp_path, demo_city, open_console):
    unit = Unit.objects.filter(status=UnitStatus.AVAILABLE, lon__isnull=False).order_by("code").first()
    assert unit is not None and unit.lon is not None and unit.lat is not None
    marker = f"path.unit-{unit.pk}"
    with daphne(tmp_path) as server:
        centre = open_console(server.url, "operator", "/command/")
        centre.evaluate("window.__sameDocument = true")
        centre.wait_for_selector(f'{marker}[data-status="available"]', state="attached")
        assert float(centre.get_attribute(marker, "data-lon") or "nan") == pytest.approx(unit.lon)
        assert centre.get_attribute(marker, "fill") == "#00695c"

        lon, lat = round(unit.lon + 0.01, 6), round(unit.lat + 0.005, 6)
        off_loop(move_unit, unit.pk, lon, lat, UnitStatus.BUSY)

        centre.wait_for_selector(f'{marker}[data-status="busy"]', state="attached", timeout=LIVE)
        wait_until(centre, f"document.querySelector('{marker}').dataset.lon === '{lon}'")
        assert float(centre.get_attribute(marker, "data-lat") or "nan") == pytest.approx(lat)
        assert centre.get_attribute(marker, "fill") == "#8d6e63"
        assert "unit-status-busy" in (centre.get_attribute(marker, "class") or "")
        assert centre.locator(marker).count() == 1  # moved, not drawn twice
        assert centre.evaluate("window.__sameDocument") is True  # no reload


def test_my_reports_lists_reports_from_another_device_live(tmp_path, demo_city, open_console):
    before = off_loop(report_elsewhere, "另一部手机上报：路灯不亮")
    with daphne(tmp_path) as server:
        phone = open_console(server.url, "grid01", "/m/", phone=True)
        phone.evaluate("window.__sameDocument = true")
        item = f'#mine-list li[data-source="server"][data-incident="{before}"]'
        phone.wait_for_selector(item, state="attached")
        assert "路灯不亮" in phone.inner_text(item)

        # Reported on the other device while this page is open: it appears without a reload.
        later = off_loop(report_elsewhere, "另一部手机上报：井盖缺失")
        phone.wait_for_selector(
            f'#mine-list li[data-source="server"][data-incident="{later}"]', state="attached", timeout=LIVE
        )
        assert phone.locator("#mine-list li[data-incident]").count() == 2
        assert phone.inner_text("#count-mine") == "2"
        assert phone.evaluate("window.__sameDocument") is True
