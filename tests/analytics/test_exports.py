"""Exports round-trip through pandas and pyogrio, with reporters' numbers masked by role."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyogrio
import pytest
from asgiref.sync import async_to_sync

from tests.analytics.synthetic import PHONE, Dataset

MASKED = "138****5678"


def _period(ds: Dataset) -> dict[str, str]:
    return {"from": ds.start.isoformat(), "to": ds.end.isoformat()}


def _body(response: Any) -> bytes:
    assert response.status_code == 200, getattr(response, "content", b"")[:300]
    assert response.streaming
    return b"".join(response.streaming_content)


def _expected(ds: Dataset) -> pd.DataFrame:
    return ds.incidents[ds.incidents["status"] != "merged"].set_index("id").sort_index()


@pytest.mark.embedded
def test_csv_round_trip_revealed_for_the_centre(dataset: Dataset, client_for: Any) -> None:
    from audit.models import AuditRecord
    from command.exports import INCIDENT_COLUMNS

    params = {**_period(dataset), "reveal": "true", "reason": "回访核实报警人"}
    response = client_for("operator").get("/api/v1/exports/incidents.csv", params)
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="incidents-20250301-20250415.csv"' in response["Content-Disposition"]
    frame = pd.read_csv(
        io.BytesIO(_body(response)),
        encoding="utf-8-sig",
        dtype={"reporter_phone": str},
        keep_default_na=False,
    )
    assert list(frame.columns) == [c.name for c in INCIDENT_COLUMNS]
    frame = frame.set_index("id").sort_index()
    want = _expected(dataset)
    assert list(frame.index) == list(want.index)
    assert (frame["code"] == want["code"]).all()
    assert (frame["block_code"] == want["block_code"]).all()
    assert (frame["category"] == want["category"]).all()
    assert frame["lon"].to_numpy() == pytest.approx(want["lon"].to_numpy())
    reported = pd.to_datetime(frame["reported_at"], utc=True)
    assert (reported == pd.to_datetime(want["reported_at"], utc=True).dt.floor("ms")).all()
    assert frame["reported_at"].str.endswith("+08:00").all()
    assert (frame["overdue"] == want["overdue_at"].notna()).all()
    assert set(frame["reporter_phone"]) == {PHONE, ""}
    assert (frame["reporter_phone"] == want["reporter_phone"]).all()
    record = AuditRecord.objects.filter(action="export_reveal").latest("seq")
    assert record.actor_username == "operator" and record.reason == "回访核实报警人"
    data = json.loads(record.data) if isinstance(record.data, str) else record.data
    assert data["format"] == "csv"


@pytest.mark.embedded
@pytest.mark.parametrize("username", ["operator", "admin"])
def test_csv_masked_by_default(dataset: Dataset, client_for: Any, username: str) -> None:
    from incidents.models import Incident

    first = int(dataset.incidents["id"].iloc[0])
    Incident.objects.filter(pk=first).update(description="联系人电话 13912345678，身份证 440304199001011234")
    response = client_for(username).get("/api/v1/exports/incidents.csv", _period(dataset))
    frame = pd.read_csv(io.BytesIO(_body(response)), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert set(frame["reporter_phone"]) == {MASKED, ""}
    assert set(frame["reporter_name"]) == {"张**", ""}
    text = str(frame.set_index("id").loc[str(first), "description"])
    assert "13912345678" not in text and "139****5678" in text
    assert "440304199001011234" not in text


def test_reveal_needs_the_right_and_a_reason(dataset: Dataset, client_for: Any) -> None:
    from audit.models import AuditRecord

    before = AuditRecord.objects.filter(action="export_reveal").count()
    refused = client_for("admin").get("/api/v1/exports/incidents.csv", {"reveal": "true", "reason": "x"})
    assert refused.status_code == 403
    unexplained = client_for("commander").get("/api/v1/exports/incidents.gpkg", {"reveal": "true"})
    assert unexplained.status_code == 400 and unexplained.json()["error"]["field"] == "reason"
    assert AuditRecord.objects.filter(action="export_reveal").count() == before


def test_geojson_round_trip(dataset: Dataset, client_for: Any) -> None:
    params = {**_period(dataset), "reveal": "1", "reason": "核对"}
    response = client_for("commander").get("/api/v1/exports/incidents.geojson", params)
    assert response["Content-Type"] == "application/geo+json"
    body = _body(response)
    assert json.loads(body)["type"] == "FeatureCollection"
    frame = pyogrio.read_dataframe(io.BytesIO(body)).set_index("id").sort_index()
    want = _expected(dataset)
    assert list(frame.index) == list(want.index)
    assert frame.geometry.x.to_numpy() == pytest.approx(want["lon"].to_numpy())
    assert frame.geometry.y.to_numpy() == pytest.approx(want["lat"].to_numpy())
    assert (frame["grid_code"] == want["grid_code"]).all()
    assert set(frame["reporter_phone"].fillna("")) == {PHONE, ""}


def test_geopackage_round_trip_masked(dataset: Dataset, client_for: Any, tmp_path: Path) -> None:
    response = client_for("commander").get("/api/v1/exports/incidents.gpkg", _period(dataset))
    assert response["Content-Type"] == "application/geopackage+sqlite3"
    body = _body(response)
    assert int(response["Content-Length"]) == len(body)
    path = tmp_path / "incidents.gpkg"
    path.write_bytes(body)
    info = pyogrio.read_info(path)
    assert info["geometry_type"] == "Point" and info["crs"] == "EPSG:4326"
    frame = pyogrio.read_dataframe(path).set_index("id").sort_index()
    want = _expected(dataset)
    assert list(frame.index) == list(want.index)
    assert frame.geometry.x.to_numpy() == pytest.approx(want["lon"].to_numpy())
    got_times = pd.to_datetime(frame["reported_at"], utc=True)
    want_times = pd.to_datetime(want["reported_at"], utc=True).dt.floor("ms")
    assert (got_times.to_numpy() == want_times.to_numpy()).all()
    assert set(frame["reporter_phone"].fillna("")) == {MASKED, ""}


def test_department_exports_its_incidents_masked(dataset: Dataset, client_for: Any) -> None:
    from command.models import User

    department_id = User.objects.get(username="police_futian").department_id
    orders = dataset.orders
    mine = set(orders[orders["department_id"] == department_id]["incident_id"])
    response = client_for("police_futian").get("/api/v1/exports/incidents.csv", _period(dataset))
    frame = pd.read_csv(io.BytesIO(_body(response)), encoding="utf-8-sig", dtype=str, keep_default_na=False)
    want = _expected(dataset)
    assert {int(i) for i in frame["id"]} == set(want.index) & mine
    assert PHONE not in set(frame["reporter_phone"])


def test_grid_worker_cannot_export(demo_city: Any, client_for: Any) -> None:
    assert client_for("grid02").get("/api/v1/exports/incidents.csv").status_code == 403
    assert client_for("grid02").get("/api/v1/exports/stats.gpkg").status_code == 403


def test_unknown_format(demo_city: Any, client_for: Any) -> None:
    response = client_for("commander").get("/api/v1/exports/incidents.xlsx")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "kind"


def test_stats_exports_round_trip(dataset: Dataset, client_for: Any, tmp_path: Path) -> None:
    from gis.models import TerritoryUnit

    client = client_for("commander")
    params = {**_period(dataset), "layer": "block"}
    want = _expected(dataset).groupby("block_code").size()
    blocks = TerritoryUnit.objects.filter(layer="block").count()

    csv_frame = pd.read_csv(
        io.BytesIO(_body(client.get("/api/v1/exports/stats.csv", params))), encoding="utf-8-sig"
    ).set_index("code")
    assert len(csv_frame) == blocks
    assert (csv_frame.loc[want.index, "total"] == want).all()
    assert csv_frame["total"].sum() == want.sum()

    geo = pyogrio.read_dataframe(io.BytesIO(_body(client.get("/api/v1/exports/stats.geojson", params))))
    assert len(geo) == blocks
    assert set(geo.geometry.geom_type) <= {"Polygon", "MultiPolygon"}
    assert geo.set_index("code").loc[want.index, "total"].tolist() == want.tolist()

    path = tmp_path / "stats.gpkg"
    path.write_bytes(_body(client.get("/api/v1/exports/stats.gpkg", params)))
    assert pyogrio.list_layers(path)[0][0] == "stats_block"
    gpkg = pyogrio.read_dataframe(path).set_index("code")
    assert set(gpkg.geometry.geom_type) == {"MultiPolygon"}
    assert gpkg.loc[want.index, "total"].tolist() == want.tolist()
    assert gpkg["density_per_km2"].max() > 0


def test_streams_asynchronously_under_asgi(rf: Any) -> None:
    """Under ASGI (daphne) the body is an async iterator: Django would first collect a sync one in a list."""
    from django.core.handlers.asgi import ASGIRequest

    from command.exports import stream

    closed: list[bool] = []

    def chunks() -> Any:
        try:
            for i in range(5):
                yield f"{i}\n".encode()
        finally:
            closed.append(True)

    scope = {"type": "http", "method": "GET", "path": "/x", "query_string": b"", "headers": []}
    response = stream(ASGIRequest(scope, io.BytesIO()), chunks(), kind="csv", filename="x.csv")
    assert response.is_async

    async def read() -> bytes:
        return b"".join([part async for part in response])

    assert async_to_sync(read)() == b"0\n1\n2\n3\n4\n"
    assert closed == [True]

    # A client that goes away mid-way: closing the response closes the generator (its cursor, its file).
    early: Any = stream(ASGIRequest(scope, io.BytesIO()), chunks(), kind="csv", filename="x.csv")

    async def first_only() -> bytes:
        iterator = early.streaming_content.__aiter__()
        part = await iterator.__anext__()
        await iterator.aclose()
        return part

    assert async_to_sync(first_only)() == b"0\n"
    assert closed == [True, True]
    wsgi: Any = stream(rf.get("/x"), chunks(), kind="csv", filename="x.csv")
    assert not wsgi.is_async and b"".join(wsgi.streaming_content).startswith(b"0\n")
