"""A daphne restart: the department's inbox reconnects by itself (jittered backoff) and resumes.

The department's inbox is open and live; daphne stops; while it is down an emergency is reported and
dispatched to that department (its events wait in the database); daphne starts again on the same
address. The page notices the lost socket, reconnects on its own, resumes from its last sequence
number and shows the new order — without a reload.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import off_loop, wait_until
from tests.support.factories import first_grid_of, point_in
from tests.support.servers import daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

LIVE = 30_000


def _emergency(lon: float, lat: float, text: str) -> dict[str, int | str]:
    """A traffic accident, registered and dispatched on intake: its lead order's id and department."""
    from command.models import DispatchOrder, OrderRole, User
    from incidents.services import ReportInput, report_submit

    reporter = User.objects.get(username="grid01")
    incident = report_submit(
        reporter=reporter, data=ReportInput(category="AC02", description=text, lon=lon, lat=lat)
    ).incident
    lead = DispatchOrder.objects.select_related("department").get(incident=incident, role=OrderRole.LEAD)
    return {"order": lead.pk, "department": lead.department.code}


@pytest.mark.slow
def test_inbox_reconnects_after_a_daphne_restart_and_resumes(tmp_path: Any, demo_city: Any, open_console):
    lon, lat = point_in(first_grid_of("grid01"))
    first = off_loop(_emergency, lon, lat, "两车追尾，无人受伤")
    department = str(first["department"])
    with daphne(tmp_path) as server:
        port, base = server.port, server.url
        inbox = open_console(base, department, "/dept/")
        inbox.wait_for_selector(f'li[data-order="{first["order"]}"]', timeout=LIVE)
        inbox.evaluate("window.__sameDocument = true")
    # daphne is gone: the page sees its socket close and keeps trying.
    wait_until(inbox, "document.querySelector('#conn').dataset.state !== 'live'", timeout=30)
    second = off_loop(_emergency, lon, lat, "货车侧翻，路口拥堵")
    assert second["department"] == department
    with daphne(tmp_path, port=port):
        inbox.wait_for_selector(f'li[data-order="{second["order"]}"]', timeout=LIVE)
        wait_until(inbox, "document.querySelector('#conn').dataset.state === 'live'", timeout=30)
        assert inbox.evaluate("window.__sameDocument") is True, "no reload: the stream resumed"
        assert inbox.locator(f'li[data-order="{first["order"]}"]').count() == 1, "nothing twice"
