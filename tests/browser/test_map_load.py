"""The command centre with 2,000 grids and 500 live incidents: first paint printed (never asserted).

Also: the page at phone width, the English switch, and that markers and queue follow the data.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
import shapely
from django.utils import timezone

from command.models import User
from gis.geocoding import geocode_point
from gis.models import TerritoryUnit
from incidents.models import Category, Grade, Incident
from tests.browser.conftest import PHONE, screenshot, wait_until
from tests.support.servers import daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

INCIDENTS = 500
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
  .observe({ type: "longtask", buffered: true });
"""


def make_incidents(count: int) -> None:
    """`count` live incidents over random grids, geocoded, in mixed states and grades.

    Written as rows in one go: this test measures the map, not intake (the story test walks intake,
    and 500 reports through it would take half a minute of the suite's time).
    """
    rng = random.Random(7)
    grids = list(TerritoryUnit.objects.filter(layer="grid").values_list("geometry_wkb", flat=True))
    points = [shapely.from_wkb(bytes(g)).representative_point() for g in rng.sample(grids, count)]
    categories = list(Category.objects.filter(parent__isnull=False))
    grades = {g.code: g for g in Grade.objects.all()}
    reporter = User.objects.get(username="grid01")
    now = timezone.now()
    rows = []
    for n, point in enumerate(points):
        geo = geocode_point(lon=point.x, lat=point.y, crs="wgs84")
        status = rng.choice(["reported", "reported", "accepted", "registered", "dispatched", "in_progress"])
        grade = (
            None if status in ("reported", "accepted") else grades[rng.choice(["I", "II", "III", "IV", "IV"])]
        )
        moment = now - timedelta(minutes=rng.uniform(1, 600))
        rows.append(
            Incident(
                code=f"LOAD-{n:04d}",
                status=status,
                category=rng.choice(categories),
                grade=grade,
                description=f"压测事件 {n}",
                lon=point.x,
                lat=point.y,
                district_code=geo["district"]["code"],
                street_code=geo["street"]["code"],
                community_code=geo["community"]["code"],
                grid_code=geo["grid"]["code"],
                block_code=(geo.get("block") or {}).get("code", ""),
                geocode=geo,
                occurred_at=moment,
                reported_at=moment,
                reported_by=reporter,
                due_at=now + timedelta(minutes=rng.uniform(-30, 240)),
            )
        )
    Incident.objects.bulk_create(rows)


@pytest.mark.slow
def test_command_centre_with_2000_grids_and_500_incidents(tmp_path, demo_city, open_console):
    assert TerritoryUnit.objects.filter(layer="grid").count() >= 2000
    started = time.monotonic()
    make_incidents(INCIDENTS)
    print(f"\n[map] made {INCIDENTS} incidents in {time.monotonic() - started:.1f} s")
    with daphne(tmp_path) as server:
        page = open_console(server.url, "operator", "/command/")
        # Measure a fresh load of the page (the sign-in and first visit are behind us).
        page.add_init_script(LONG_TASKS)
        page.reload()
        page.wait_for_selector("#map[data-territory-ready=true]", timeout=30000)
        page.wait_for_selector("body[data-loaded=true]", timeout=30000)
        wait_until(page, f"Number(document.getElementById('map').dataset.incidents) >= {INCIDENTS}", 30)
        metrics = page.evaluate("window.yjldMetrics")
        print(
            f"[map] first paint of the territory ({', '.join(metrics['territoryLevels'])}): "
            f"{metrics['territoryFirstPaintMs']} ms after navigation; "
            f"{INCIDENTS} incidents, queue and board loaded at {metrics['stateLoadedMs']} ms"
        )
        assert page.locator("path.incident-marker").count() >= INCIDENTS
        assert int(page.inner_text("#count-pending")) + int(page.inner_text("#count-working")) >= INCIDENTS

        # Zoom in to street level and below: every level is fetched simplified for its zoom.
        for _ in range(4):
            page.click(".leaflet-control-zoom-in")
            page.wait_for_timeout(350)
        wait_until(page, "(window.yjldMetrics.zoom || 0) >= 13")
        page.wait_for_timeout(500)
        metrics = page.evaluate("window.yjldMetrics")
        long_tasks = page.evaluate("window.__longTasks")
        print(
            f"[map] zoom {metrics['zoom']}: territory re-drawn in {metrics['zoomRenderMs']} ms; "
            f"{metrics['territoryRequests']} territory requests; longest main-thread task "
            f"{max(long_tasks or [0]):.0f} ms ({len(long_tasks)} over 50 ms)"
        )
        screenshot(page, "command-centre-zoomed")

        # The same page at phone width, and in English through the language switch.
        page.set_viewport_size(PHONE)
        page.reload()
        page.wait_for_selector("body[data-loaded=true]")
        screenshot(page, "command-centre-phone")
        page.select_option("#lang-select", "en")
        page.wait_for_selector("body[data-loaded=true]")
        assert page.inner_text("h1.console-title") == "Command centre"
        assert page.locator("html").get_attribute("lang") == "en"
