"""The statistics dashboard in headless Chromium against daphne: charts, choropleth, hotspots, evaluation.

Two months of synthetic incidents and orders up to now, plus a fresh cluster in three blocks, are
committed; the commander opens /command/dashboard/ (Chinese by default), the page loads its figures from
the REST API and draws them; the key figure is checked against a pandas count of the same records, and
the page is saved to docs/screenshots/dashboard.png. A grid worker is refused.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pandas as pd
import pytest

from tests.analytics.synthetic import build_dataset
from tests.browser.conftest import DESKTOP, screenshot, sign_in
from tests.support.servers import daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

LOCAL = "Asia/Shanghai"


def _fresh_cluster(blocks: list[tuple[str, dict[str, Any]]], now: dt.datetime) -> int:
    """Eight incidents in each of the given blocks within the last twelve hours."""
    from incidents.models import Category, Incident

    rnd = random.Random(11)
    category = Category.objects.get(code="AC05")
    rows: list[Any] = []
    for code, codes in blocks:
        for _ in range(8):
            moment = now - dt.timedelta(minutes=rnd.uniform(5, 720))
            rows.append(
                Incident(
                    code=f"DASH-C-{code}-{len(rows)}",
                    status="dispatched",
                    category=category,
                    description="供水管道爆裂",
                    lon=codes["lon"],
                    lat=codes["lat"],
                    district_code=codes["district_code"],
                    street_code=codes["street_code"],
                    community_code=codes["community_code"],
                    grid_code=codes["grid_code"],
                    block_code=code,
                    occurred_at=moment,
                    reported_at=moment,
                )
            )
    Incident.objects.bulk_create(rows)
    return len(rows)


@pytest.mark.slow
def test_dashboard(tmp_path: Any, demo_city: Any, browser: Any) -> None:
    from gis.models import TerritoryUnit

    now = dt.datetime.now(dt.UTC)
    today = pd.Timestamp(now).tz_convert(LOCAL).normalize()
    start = (today - pd.Timedelta(days=59)).to_pydatetime()
    ds = build_dataset(n=1800, seed=5, start=start, end=now - dt.timedelta(minutes=1), code_prefix="DASH")
    busiest = ds.incidents.groupby("block_code").size().sort_values(ascending=False).index[:3]
    firsts = ds.incidents.drop_duplicates("block_code").set_index("block_code")
    cluster = [(str(code), firsts.loc[code].to_dict()) for code in busiest]
    added = _fresh_cluster(cluster, now)

    # What the page's default period (the last 30 days, today included) must show.
    local = pd.to_datetime(ds.incidents["reported_at"], utc=True).dt.tz_convert(LOCAL)
    in_period = (local >= today - pd.Timedelta(days=29)) & (ds.incidents["status"] != "merged")
    expected_total = int(in_period.sum()) + added

    with daphne(tmp_path) as server:
        context = browser.new_context(viewport={**DESKTOP, "height": 1000}, locale="zh-CN")
        errors: list[str] = []
        try:
            sign_in(context, server.url, "commander")
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server.url + "/command/dashboard/")
            page.wait_for_selector("#dashboard[data-state=ready]", timeout=30000)
            assert errors == []
            assert page.inner_text("h1") == "统计分析驾驶舱"
            assert page.inner_text("#kpi-total") == str(expected_total)
            # Every chart has been drawn by Chart.js.
            for canvas in ("chart-daily", "chart-family", "chart-grade", "chart-status", "chart-evaluation"):
                assert page.evaluate(f"!!Chart.getChart(document.getElementById('{canvas}'))"), canvas
            blocks = TerritoryUnit.objects.filter(layer="block").count()
            shapes = page.locator("#choropleth path").count()
            assert shapes >= blocks
            # The script's own strings come translated from the view, like the template's.
            assert "较上期" in page.inner_text("#kpi-total-change")
            assert page.locator("#hotspots .flag").first.inner_text() == "新发"
            flagged = page.locator("#hotspots .flag").count()
            assert flagged >= 1
            assert int(page.inner_text("#kpi-hotspots")) >= flagged
            departments = ds.orders[ds.orders["issued_at"] >= (today - pd.Timedelta(days=29))][
                "department"
            ].nunique()
            assert page.locator("#evaluation tbody tr").count() == departments
            assert "%" in page.inner_text("#evaluation tbody tr:first-child td:nth-child(3)")
            screenshot(page, "dashboard", full_page=True)

            # A grid worker is not shown the dashboard.
            worker = browser.new_context(viewport=DESKTOP, locale="zh-CN")
            try:
                sign_in(worker, server.url, "grid01")
                refused = worker.new_page().goto(server.url + "/command/dashboard/")
                assert refused is not None and refused.status == 403
            finally:
                worker.close()
        finally:
            context.close()
