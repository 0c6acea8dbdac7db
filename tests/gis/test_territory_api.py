"""GET /api/v1/territory/{level}/: territory units as GeoJSON, filtered, simplified and cached per version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import shapely
from rest_framework.test import APIClient
from shapely.geometry import shape

from gis import features
from gis.models import TerritoryUnit
from gis.services import territory_version_bump

pytestmark = pytest.mark.django_db

COMMUNITY = "440304001001"
DISTRICT = "440304"


@pytest.fixture(autouse=True)
def fresh_cache(settings: Any) -> Iterator[None]:
    """Check the territory version on every request."""
    settings.GIS_VERSION_CHECK_S = 0
    features.reset()
    yield
    features.reset()


@pytest.fixture
def client(client_for: Callable[[str], APIClient]) -> APIClient:
    return client_for("grid01")


def geometries(body: dict[str, Any]) -> np.ndarray:
    return np.array([shape(f["geometry"]) for f in body["features"]], dtype=object)


def test_districts_as_a_feature_collection(client: APIClient) -> None:
    response = client.get("/api/v1/territory/district/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/geo+json"
    body = response.json()
    assert body["type"] == "FeatureCollection" and body["level"] == "district"
    assert body["count"] == len(body["features"]) == 7
    futian = next(f for f in body["features"] if f["id"] == DISTRICT)
    assert futian["type"] == "Feature"
    assert futian["properties"] == {
        "code": DISTRICT,
        "name": "福田区",
        "parent_code": None,
        "level": "district",
    }
    assert futian["geometry"]["type"] in ("Polygon", "MultiPolygon")
    stored = shapely.from_wkb(bytes(TerritoryUnit.objects.get(layer="district", code=DISTRICT).geometry_wkb))
    served = shape(futian["geometry"])
    # Coordinates are rounded to 7 decimals (about a centimetre).
    assert shapely.hausdorff_distance(stored, served) < 1e-6


@pytest.mark.parametrize("role", ["operator", "commander", "admin", "police_futian"])
def test_every_role_may_read(client_for: Callable[[str], APIClient], role: str) -> None:
    assert client_for(role).get("/api/v1/territory/street/").status_code == 200


def test_anonymous_is_refused(api_client: APIClient) -> None:
    assert api_client.get("/api/v1/territory/grid/").status_code in (401, 403)


def test_grids_with_parent_and_ancestor_filters(client: APIClient) -> None:
    everything = client.get("/api/v1/territory/grid/").json()
    assert everything["count"] == TerritoryUnit.objects.filter(layer="grid").count()
    in_community = client.get("/api/v1/territory/grid/", {"parent": COMMUNITY}).json()
    expected = set(
        TerritoryUnit.objects.filter(layer="grid", parent__code=COMMUNITY).values_list("code", flat=True)
    )
    assert {f["id"] for f in in_community["features"]} == expected
    assert all(f["properties"]["parent_code"] == COMMUNITY for f in in_community["features"])
    in_district = client.get("/api/v1/territory/grid/", {"parent": DISTRICT}).json()
    assert (
        in_district["count"]
        == TerritoryUnit.objects.filter(layer="grid", parent__parent__parent__code=DISTRICT).count()
    )
    blocks = client.get("/api/v1/territory/block/", {"parent": COMMUNITY}).json()
    assert blocks["count"] >= 1 and all(f["id"].startswith(COMMUNITY) for f in blocks["features"])


def test_bbox_keeps_units_that_intersect_it(client: APIClient) -> None:
    community = shapely.from_wkb(
        bytes(TerritoryUnit.objects.get(layer="community", code=COMMUNITY).geometry_wkb)
    )
    centre = shapely.get_coordinates(shapely.point_on_surface(community))[0]
    box = (centre[0] - 0.003, centre[1] - 0.002, centre[0] + 0.003, centre[1] + 0.002)
    body = client.get("/api/v1/territory/grid/", {"bbox": ",".join(map(str, box))}).json()
    rows = TerritoryUnit.objects.filter(layer="grid").values_list("code", "geometry_wkb")
    expected = {
        code for code, wkb in rows if shapely.intersects(shapely.from_wkb(bytes(wkb)), shapely.box(*box))
    }
    assert {f["id"] for f in body["features"]} == expected and 1 <= len(expected) < 100
    both = client.get(
        "/api/v1/territory/grid/", {"bbox": ",".join(map(str, box)), "parent": COMMUNITY}
    ).json()
    assert {f["id"] for f in both["features"]} <= expected


def test_simplify_reduces_vertices_and_keeps_neighbours_seamless(client: APIClient) -> None:
    raw = client.get("/api/v1/territory/street/").json()
    simple = client.get("/api/v1/territory/street/", {"simplify": "150"}).json()
    assert [f["id"] for f in simple["features"]] == [f["id"] for f in raw["features"]]
    before, after = geometries(raw), geometries(simple)
    assert shapely.get_num_coordinates(after).sum() < 0.8 * shapely.get_num_coordinates(before).sum()
    assert shapely.is_valid(after).all()
    # Coverage simplification: shared edges stay shared, so no overlaps and no gaps between streets.
    assert shapely.coverage_is_valid(after)
    union_after = shapely.union_all(after)
    assert shapely.area(union_after) == pytest.approx(sum(shapely.area(after)), rel=1e-9)
    assert shapely.area(union_after) == pytest.approx(shapely.area(shapely.union_all(before)), rel=0.01)


def test_simplify_never_serves_more_vertices(client: APIClient) -> None:
    # The demo grids are few-vertex cells with T-junctions: noding them for a seamless simplification
    # adds vertices, so the original geometry is served.
    raw = client.get("/api/v1/territory/grid/", {"parent": DISTRICT}).json()
    simple = client.get("/api/v1/territory/grid/", {"parent": DISTRICT, "simplify": "20"}).json()
    assert (
        shapely.get_num_coordinates(geometries(simple)).sum()
        <= shapely.get_num_coordinates(geometries(raw)).sum()
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/territory/province/", {}, "level"),
        ("/api/v1/territory/grid/", {"bbox": "1,2,3"}, "bbox"),
        ("/api/v1/territory/grid/", {"bbox": "a,b,c,d"}, "bbox"),
        ("/api/v1/territory/grid/", {"bbox": "114.1,22.5,114.0,22.6"}, "bbox"),
        ("/api/v1/territory/grid/", {"bbox": "114,95,115,96"}, "bbox"),
        ("/api/v1/territory/grid/", {"bbox": "nan,22,114,23"}, "bbox"),
        ("/api/v1/territory/grid/", {"simplify": "-1"}, "simplify"),
        ("/api/v1/territory/grid/", {"simplify": "x"}, "simplify"),
        ("/api/v1/territory/grid/", {"simplify": "inf"}, "simplify"),
        ("/api/v1/territory/grid/", {"parent": "999"}, "parent"),
        ("/api/v1/territory/community/", {"parent": "4403040010010001"}, "parent"),
        ("/api/v1/territory/district/", {"parent": DISTRICT}, "parent"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    client: APIClient, path: str, params: dict[str, str], field: str
) -> None:
    response = client.get(path, params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and error["detail"].startswith(f"{field}:")


def test_etag_and_the_version_cache(client: APIClient) -> None:
    first = client.get("/api/v1/territory/street/")
    etag = first["ETag"]
    assert client.get("/api/v1/territory/street/", HTTP_IF_NONE_MATCH=etag).status_code == 304
    other = client.get("/api/v1/territory/street/", {"parent": DISTRICT})
    assert other["ETag"] != etag
    version = first.json()["version"]
    territory_version_bump()
    again = client.get("/api/v1/territory/street/", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 200 and again.json()["version"] == version + 1
    assert again["ETag"] != etag
