"""Statistics API figures against an independent pandas computation on the same records."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from tests.analytics.synthetic import TZ, Dataset

pytestmark = pytest.mark.embedded

LOCAL = "Asia/Shanghai"


def _visible(df: pd.DataFrame, status: list[str] | None = None) -> pd.DataFrame:
    """What the API counts by default: every incident but merged ones."""
    if status:
        return df[df["status"].isin(status)]
    return df[df["status"] != "merged"]


def _buckets(df: pd.DataFrame, bucket: str) -> pd.Series:
    local = pd.to_datetime(df["reported_at"], utc=True).dt.tz_convert(LOCAL)
    if bucket == "hour":
        return local.dt.floor("h")
    if bucket == "day":
        return local.dt.floor("D")
    if bucket == "week":
        # ISO weeks start on Monday, as PostgreSQL's date_trunc('week') and SQLite's Django function do.
        return local.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time.dt.tz_localize(LOCAL)
    return local.dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.tz_localize(LOCAL)


def _api_frame(body: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(body["rows"], columns=["unit", "bucket", "key", "count"])
    if body["bucket"]:
        frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True).dt.tz_convert(LOCAL)
    return frame


def _expected(df: pd.DataFrame, *, layer: str | None, bucket: str | None, by: str | None) -> pd.DataFrame:
    df = df.copy()
    keys = []
    if layer:
        df["unit"] = df[f"{layer}_code"]
        keys.append("unit")
    if bucket:
        df["bucket"] = _buckets(df, bucket)
        keys.append("bucket")
    if by:
        df["key"] = df[by].fillna("none") if by == "grade" else df[by]
        keys.append("key")
    return df.groupby(keys).size().rename("count").reset_index()


def _compare(got: pd.DataFrame, want: pd.DataFrame, keys: list[str]) -> None:
    got = got[[*keys, "count"]].sort_values(keys).reset_index(drop=True)
    want = want[[*keys, "count"]].sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def _period(ds: Dataset) -> dict[str, str]:
    return {"from": ds.start.isoformat(), "to": ds.end.isoformat()}


@pytest.mark.parametrize(
    ("layer", "bucket", "by"),
    [
        ("block", "day", None),
        ("grid", "day", "family"),
        ("street", "week", "category"),
        ("district", "month", "grade"),
        ("community", None, "status"),
        (None, "hour", None),
    ],
)
def test_counts_match_pandas(
    dataset: Dataset, client_for: Any, layer: str | None, bucket: str | None, by: str | None
) -> None:
    params = {**_period(dataset), **({"layer": layer} if layer else {}), **({"by": by} if by else {})}
    if bucket == "hour":
        # Hour buckets are limited to a month; take one with a local-midnight edge inside.
        params.update({"from": "2025-03-10", "to": "2025-03-20"})
    if bucket:
        params["bucket"] = bucket
    response = client_for("commander").get("/api/v1/stats/incidents/", params)
    assert response.status_code == 200, response.content
    body = response.json()
    df = _visible(dataset.incidents)
    if bucket == "hour":
        start, end = dt.datetime(2025, 3, 10, tzinfo=TZ), dt.datetime(2025, 3, 20, tzinfo=TZ)
        df = df[(df["reported_at"] >= start) & (df["reported_at"] < end)]
    keys = [k for k, v in (("unit", layer), ("bucket", bucket), ("key", by)) if v]
    _compare(_api_frame(body), _expected(df, layer=layer, bucket=bucket, by=by), keys)
    assert body["total"] == len(df)


def test_local_midnight_buckets(dataset: Dataset, client_for: Any) -> None:
    """An incident at 23:55 local time counts on that local day, not on the UTC one."""
    params = {**_period(dataset), "bucket": "day"}
    body = client_for("operator").get("/api/v1/stats/incidents/", params).json()
    got = {pd.Timestamp(r["bucket"]).tz_convert(LOCAL).date(): r["count"] for r in body["rows"]}
    local = pd.to_datetime(_visible(dataset.incidents)["reported_at"], utc=True).dt.tz_convert(LOCAL)
    want = local.dt.date.value_counts().to_dict()
    assert got == want
    assert all(pd.Timestamp(r["bucket"]).utcoffset() == dt.timedelta(hours=8) for r in body["rows"])


def test_filters(dataset: Dataset, client_for: Any) -> None:
    df = dataset.incidents
    client = client_for("commander")
    some = df.iloc[0]
    cases: list[tuple[dict[str, str], pd.DataFrame]] = [
        ({"category": "AC"}, _visible(df[df["family_code"] == "AC"])),
        ({"category": str(some["category"])}, _visible(df[df["category"] == some["category"]])),
        ({"grade": "II"}, _visible(df[df["grade"] == "II"])),
        ({"status": "merged,closed"}, df[df["status"].isin(["merged", "closed"])]),
        ({"overdue": "true"}, _visible(df[df["overdue_at"].notna()])),
        ({"area": str(some["street_code"])}, _visible(df[df["street_code"] == some["street_code"]])),
        ({"area": str(some["block_code"])}, _visible(df[df["block_code"] == some["block_code"]])),
    ]
    for extra, want in cases:
        body = client.get("/api/v1/stats/incidents/", {**_period(dataset), **extra}).json()
        assert body["total"] == len(want), extra


def test_unit_summary_matches_pandas(dataset: Dataset, client_for: Any) -> None:
    from gis.models import TerritoryUnit

    response = client_for("admin").get("/api/v1/stats/units/", {**_period(dataset), "layer": "block"})
    assert response.status_code == 200
    units: Any = pd.DataFrame(response.json()["units"]).set_index("code")
    assert len(units) == TerritoryUnit.objects.filter(layer="block").count()
    df = _visible(dataset.incidents)
    totals = df.groupby("block_code").size()
    assert units["total"].sum() == len(df)
    for code, count in totals.items():
        assert units.loc[code, "total"] == count
    fam = df[df["family"] == "accident"].groupby("block_code").size()
    for code, count in fam.items():
        assert units.loc[code, "family_accident"] == count
    overdue = df[df["overdue_at"].notna()].groupby("block_code").size()
    assert int(units["overdue"].sum()) == int(overdue.sum())
    areas = dict(TerritoryUnit.objects.filter(layer="block").values_list("code", "area_m2"))
    code = str(totals.idxmax())
    assert units.loc[code, "density_per_km2"] == pytest.approx(totals.max() / (areas[code] / 1e6))


def test_period_comparison(dataset: Dataset, client_for: Any) -> None:
    params = {"from": "2025-03-24", "to": "2025-04-07"}
    body = client_for("commander").get("/api/v1/stats/compare/", params).json()
    df = _visible(dataset.incidents)
    local: Any = pd.to_datetime(df["reported_at"], utc=True).dt.tz_convert(LOCAL)
    current = df[(local >= "2025-03-24") & (local < "2025-04-07")]
    previous = df[(local >= "2025-03-10") & (local < "2025-03-24")]
    assert body["current"]["total"] == len(current)
    assert body["previous"]["total"] == len(previous)
    assert body["change"]["total"] == pytest.approx((len(current) - len(previous)) / len(previous))
    assert body["current"]["by_family"] == {
        f: int((current["family"] == f).sum())
        for f in ["natural_disaster", "accident", "public_health", "social_security", "urban_management"]
    }
    assert body["current"]["overdue"] == int(current["overdue_at"].notna().sum())
    assert body["previous"]["done"] == int(previous["status"].isin(["verified", "closed", "evaluated"]).sum())
    grades = current["grade"].fillna("none").value_counts().to_dict()
    assert {k: v for k, v in body["current"]["by_grade"].items() if v} == grades
    daily = local[(local >= "2025-03-24") & (local < "2025-04-07")].dt.strftime("%Y-%m-%d").value_counts()
    assert {d["day"]: d["count"] for d in body["current"]["daily"] if d["count"]} == daily.to_dict()
    assert len(body["current"]["daily"]) == 14
    assert sum(d["count"] for d in body["previous"]["daily"]) == len(previous)


def test_department_sees_its_own_incidents_only(dataset: Dataset, client_for: Any) -> None:
    from command.models import User

    user = User.objects.get(username="fire_futian")
    orders = dataset.orders
    mine = set(orders[orders["department_id"] == user.department_id]["incident_id"])
    want = _visible(dataset.incidents[dataset.incidents["id"].isin(mine)])
    body = client_for("fire_futian").get("/api/v1/stats/incidents/", _period(dataset)).json()
    assert body["total"] == len(want)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/stats/incidents/", "/api/v1/stats/units/", "/api/v1/hotspots/", "/api/v1/evaluation/"],
)
def test_grid_workers_are_refused(demo_city: Any, client_for: Any, path: str) -> None:
    response = client_for("grid01").get(path)
    assert response.status_code == 403
    assert response.json()["error"]["status"] == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"layer": "planet"}, "layer"),
        ({"bucket": "decade"}, "bucket"),
        ({"by": "colour"}, "by"),
        ({"bucket": "hour", "from": "2025-01-01", "to": "2025-06-01"}, "from"),
        ({"from": "2025-02-01", "to": "2025-01-01"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"category": "XX99"}, "category"),
        ({"status": "lost"}, "status"),
        ({"overdue": "maybe"}, "overdue"),
    ],
)
def test_bad_parameters_are_named(
    demo_city: Any, client_for: Any, params: dict[str, str], field: str
) -> None:
    response = client_for("commander").get("/api/v1/stats/incidents/", params)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
