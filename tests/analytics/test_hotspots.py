"""Emerging hotspots and density: the statistic against an independent computation, and the API."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal, getcontext
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.analytics.synthetic import TZ

pytestmark = pytest.mark.embedded

AT = dt.datetime(2025, 6, 10, 12, 0, tzinfo=TZ)
WINDOW = dt.timedelta(hours=24)
HISTORY = dt.timedelta(days=28)


def exact_sf(count: int, lam: float) -> float:
    """P(X ≥ count), X ~ Poisson(lam), by a 60-digit sum of the upper tail (independent of the product)."""
    getcontext().prec = 60
    mu = Decimal(lam)
    term = (-mu).exp() * mu**count
    for k in range(2, count + 1):
        term /= k
    total = Decimal(0)
    k = count
    while term > total * Decimal("1e-40") or k < count + 5:
        total += term
        k += 1
        term = term * mu / k
    return float(total)


def bh(p: np.ndarray, m: int) -> np.ndarray:
    """Benjamini–Hochberg q-values over m tests (the untested ones have p = 1)."""
    full = np.concatenate([p, np.ones(m - len(p))])
    order = np.argsort(full, kind="stable")
    ranked = full[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out[: len(p)]


@pytest.fixture
def spikes(demo_city: Any) -> dict[str, Any]:
    """History of about one incident a day in 30 blocks, then a spike in one and a new cluster in another."""
    from gis.models import TerritoryUnit
    from incidents.models import Category, Incident

    rnd = random.Random(3)
    blocks = list(
        TerritoryUnit.objects.filter(layer="block").order_by("code").values_list("code", "parent__code")
    )
    chosen = blocks[:30]
    category = Category.objects.get(code="AC02")
    rows: list[dict[str, Any]] = []
    window_start = AT - WINDOW

    def add(code: str, moment: dt.datetime) -> None:
        rows.append({"block_code": code, "reported_at": moment, "status": "registered"})

    for code, _ in chosen:
        for _ in range(28):
            add(code, window_start - dt.timedelta(seconds=rnd.uniform(1, HISTORY.total_seconds())))
        for _ in range(rnd.choice([0, 1, 1, 2])):
            add(code, window_start + dt.timedelta(seconds=rnd.uniform(0, WINDOW.total_seconds() - 1)))
    spike, fresh, pair = chosen[0][0], blocks[40][0], blocks[41][0]
    for _ in range(9):
        add(spike, AT - dt.timedelta(minutes=rnd.uniform(1, 600)))
    for _ in range(4):
        add(fresh, AT - dt.timedelta(minutes=rnd.uniform(1, 600)))
    for _ in range(2):
        add(pair, AT - dt.timedelta(minutes=rnd.uniform(1, 600)))
    # Merged duplicates and incidents after the window never count.
    rows.append({"block_code": pair, "reported_at": AT - dt.timedelta(minutes=5), "status": "merged"})
    rows.append({"block_code": pair, "reported_at": AT + dt.timedelta(minutes=5), "status": "registered"})
    parents = dict(blocks)
    Incident.objects.bulk_create(
        [
            Incident(
                code=f"H-{i:05d}",
                status=r["status"],
                category=category,
                description="测试",
                lon=114.0,
                lat=22.6,
                district_code="d",
                street_code="s",
                community_code=parents[r["block_code"]] or "",
                grid_code="g",
                block_code=r["block_code"],
                occurred_at=r["reported_at"],
                reported_at=r["reported_at"],
            )
            for i, r in enumerate(rows)
        ]
    )
    return {"rows": pd.DataFrame(rows), "spike": spike, "fresh": fresh, "pair": pair}


def test_poisson_tail_matches_exact_sum() -> None:
    from command.hotspots import poisson_sf

    for count, lam in [
        (1, 0.01),
        (3, 0.02),
        (9, 1.07),
        (12, 3.5),
        (40, 5.0),
        (5, 5.0),
        (2, 9.0),
        (150, 20.0),
    ]:
        assert poisson_sf(count, lam) == pytest.approx(exact_sf(count, lam), rel=1e-9), (count, lam)
    assert poisson_sf(0, 2.0) == 1.0


def test_emerging_hotspots_against_independent_test(spikes: dict[str, Any]) -> None:
    from command.hotspots import emerging_hotspots
    from gis.models import TerritoryUnit

    result = {h.code: h for h in emerging_hotspots(layer="block", now=AT, window=WINDOW, history=HISTORY)}
    df = spikes["rows"]
    df = df[
        (df["status"] != "merged") & (df["reported_at"] < AT) & (df["reported_at"] >= AT - WINDOW - HISTORY)
    ]
    in_window = df["reported_at"] >= AT - WINDOW
    counts = pd.DataFrame(
        {"c": df[in_window].groupby("block_code").size(), "h": df[~in_window].groupby("block_code").size()}
    ).fillna(0)
    lam = (counts["h"] + 0.5) * (WINDOW / HISTORY)
    p = np.array([exact_sf(int(c), float(m)) for c, m in zip(counts["c"], lam, strict=True)])
    m = TerritoryUnit.objects.filter(layer="block").count()
    q = bh(p, m)
    assert set(result) == set(counts.index)
    for (code, row), p_i, q_i, lam_i in zip(counts.iterrows(), p, q, lam, strict=True):
        got = result[str(code)]
        assert got.count == row["c"] and got.history_count == row["h"]
        assert got.expected == pytest.approx(lam_i)
        assert got.p_value == pytest.approx(p_i, rel=1e-9)
        assert got.q_value == pytest.approx(q_i, rel=1e-9)
        assert got.emerging == (row["c"] >= 3 and q_i <= 0.05)
    ranked = list(result.values())
    emerging = [h.code for h in ranked if h.emerging]
    assert spikes["spike"] in emerging and spikes["fresh"] in emerging
    assert spikes["pair"] not in emerging  # two incidents are below min_count, however new the block
    ordered = emerging_hotspots(layer="block", now=AT, window=WINDOW, history=HISTORY)
    flags = [h.emerging for h in ordered]
    assert flags == sorted(flags, reverse=True)


def test_hotspot_api_list_and_map_layer(spikes: dict[str, Any], client_for: Any) -> None:
    client = client_for("commander")
    params = {"layer": "block", "at": AT.isoformat(), "window_hours": "24", "history_days": "28"}
    body = client.get("/api/v1/hotspots/", params).json()
    assert {h["code"] for h in body["emerging"]} >= {spikes["spike"], spikes["fresh"]}
    assert "Poisson" in body["statistic"]
    assert body["ranked"][0]["emerging"] is True
    top = body["density"][0]
    assert top["count"] > 0 and top["density_per_km2"] == pytest.approx(top["count"] / top["area_km2"])
    geo = client.get("/api/v1/hotspots/", {**params, "format": "geojson"})
    assert geo.status_code == 200
    assert geo["Content-Type"].startswith("application/geo+json")
    features = geo.json()["features"]
    assert features[0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert {f["id"] for f in features if f["properties"]["emerging"]} >= {spikes["spike"], spikes["fresh"]}


def test_category_narrows_the_test(spikes: dict[str, Any]) -> None:
    from command.hotspots import emerging_hotspots

    assert emerging_hotspots(layer="block", now=AT, category="ND") == []
    assert any(h.emerging for h in emerging_hotspots(layer="block", now=AT, category="AC"))


def test_bad_hotspot_parameters(demo_city: Any, client_for: Any) -> None:
    client = client_for("commander")
    assert client.get("/api/v1/hotspots/", {"layer": "district"}).json()["error"]["field"] == "layer"
    assert client.get("/api/v1/hotspots/", {"window_hours": "-1"}).json()["error"]["field"] == "window_hours"
    assert client.get("/api/v1/hotspots/", {"fdr": "2"}).json()["error"]["field"] == "fdr"
