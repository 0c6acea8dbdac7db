"""GET /api/v1/geocode/ (point and ?q= address search) and GET /api/v1/geocode/reverse/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import shapely
from pyproj import Geod
from rest_framework.test import APIClient

from gis import datums, places
from gis.gazetteer import PlaceRecord
from gis.models import TerritoryUnit
from tests.support.factories import point_in

GEOD = Geod(ellps="WGS84")
GRID = "4403040010010001"
COMMUNITY = "440304001001"
LAYERS = ("district", "street", "community", "grid", "block")

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_caches(settings: Any) -> Iterator[None]:
    """Check the territory version and the places on every call, so each test sees its own places."""
    settings.GIS_VERSION_CHECK_S = 0
    places.reset()
    yield
    places.reset()


@pytest.fixture
def operator(client_for: Callable[[str], APIClient]) -> APIClient:
    return client_for("operator")


def west_of_territory(metres: float) -> tuple[float, float, set[str]]:
    """A point due west of the territory's westmost vertex, and the grids having that vertex."""
    rows = TerritoryUnit.objects.filter(layer="grid").values_list("code", "geometry_wkb")
    codes = [code for code, _ in rows]
    geoms = shapely.from_wkb(np.array([bytes(wkb) for _, wkb in rows], dtype=object))
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    i = int(np.argmin(coords[:, 0]))
    lon, lat = coords[i]
    touching = {codes[j] for j in owner[np.flatnonzero(np.all(coords == coords[i], axis=1))]}
    x, y, _ = GEOD.fwd(lon, lat, 270.0, metres)
    return float(x), float(y), touching


# --- point geocoding ----------------------------------------------------------------------------


def test_point_result_has_the_product_shape(operator: APIClient) -> None:
    lon, lat = point_in(GRID)
    response = operator.get("/api/v1/geocode/", {"lon": lon, "lat": lat})
    assert response.status_code == 200
    body = response.json()
    assert {"lon", "lat", *LAYERS, "near_boundary", "boundary_distance_m"} <= set(body)
    for layer in ("district", "street", "community", "grid"):
        assert set(body[layer]) == {"code", "name"}
    assert body["grid"]["code"] == GRID
    assert body["community"]["code"] == COMMUNITY
    assert body["street"]["code"] == "440304001" and body["district"] == {"code": "440304", "name": "福田区"}
    assert body["near_boundary"] is False and body["boundary_distance_m"] > 30
    assert body["block"] is None or body["block"]["code"].startswith("440304")
    assert abs(body["lon"] - lon) < 1e-7 and abs(body["lat"] - lat) < 1e-7


@pytest.mark.parametrize("crs", ["gcj02", "bd09", "GCJ-02", "BD-09"])
def test_chinese_datums_are_converted(operator: APIClient, crs: str) -> None:
    lon, lat = point_in(GRID)
    convert = datums.wgs84_to_gcj02 if "gcj" in crs.lower() else datums.wgs84_to_bd09
    x, y = convert(lon, lat)
    params: dict[str, Any] = {"lon": x, "lat": y, "crs": crs}
    body = operator.get("/api/v1/geocode/", params).json()
    assert body["grid"]["code"] == GRID
    assert abs(body["lon"] - lon) < 1e-6 and abs(body["lat"] - lat) < 1e-6
    assert body["input"] == {"lon": x, "lat": y, "crs": crs.lower().replace("-", "")}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lat": "22.5"}, "lon"),
        ({"lon": "114.05"}, "lat"),
        ({"lon": "NaN", "lat": "22.5"}, "lon"),
        ({"lon": "114.05", "lat": "nan"}, "lat"),
        ({"lon": "inf", "lat": "22.5"}, "lon"),
        ({"lon": "181", "lat": "22.5"}, "lon"),
        ({"lon": "114.05", "lat": "-90.5"}, "lat"),
        ({"lon": "abc", "lat": "22.5"}, "lon"),
        ({"lon": "114.05", "lat": ""}, "lat"),
        ({"lon": "114.05", "lat": "22.5", "crs": "epsg:3857"}, "crs"),
    ],
)
def test_bad_point_input_is_400_naming_the_field(
    operator: APIClient, params: dict[str, str], field: str
) -> None:
    response = operator.get("/api/v1/geocode/", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and error["detail"].startswith(f"{field}:")


def test_point_beyond_the_tolerance_is_422_naming_the_nearest_grid(operator: APIClient) -> None:
    lon, lat, touching = west_of_territory(5000)
    response = operator.get("/api/v1/geocode/", {"lon": lon, "lat": lat})
    assert response.status_code == 422
    nearest = response.json()["error"]["nearest_grid"]
    assert nearest["code"] in touching and nearest["name"]
    assert nearest["distance_m"] == pytest.approx(5000, rel=0.005)


def test_point_within_the_tolerance_snaps_to_the_nearest_grid(operator: APIClient) -> None:
    lon, lat, touching = west_of_territory(100)
    body = operator.get("/api/v1/geocode/", {"lon": lon, "lat": lat}).json()
    assert body["snapped"] is True
    assert body["grid"]["code"] in touching
    assert body["boundary_distance_m"] == pytest.approx(100, abs=1.0)
    assert body["near_boundary"] is False
    assert body["block"] is None


def test_geocode_needs_authentication(api_client: APIClient) -> None:
    assert api_client.get("/api/v1/geocode/", {"lon": 114.05, "lat": 22.55}).status_code in (401, 403)
    assert api_client.get("/api/v1/geocode/", {"q": "福田"}).status_code in (401, 403)


# --- address search -----------------------------------------------------------------------------


def test_q_finds_a_community_by_name_with_its_hierarchy(operator: APIClient) -> None:
    community = TerritoryUnit.objects.get(layer="community", code=COMMUNITY)
    response = operator.get("/api/v1/geocode/", {"q": community.name})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == community.name and body["count"] == len(body["candidates"]) >= 1
    top = body["candidates"][0]
    assert (top["name"], top["kind"], top["score"]) == (community.name, "community", 1.0)
    assert top["community"] == {"code": COMMUNITY, "name": community.name}
    assert top["street"]["code"] == "440304001" and top["district"]["code"] == "440304"
    assert top["grid"] is None
    # The representative point lies inside the community.
    point = operator.get("/api/v1/geocode/", {"lon": top["lon"], "lat": top["lat"]}).json()
    assert point["community"]["code"] == COMMUNITY


def test_q_normalises_chinese_addresses_and_ranks_door_addresses(operator: APIClient) -> None:
    lon, lat = point_in(GRID)
    places.places_import(
        records=[
            PlaceRecord("莲花路3号", "address", lon, lat, {"grid": "stale"}),
            PlaceRecord("莲花路13号", "address", lon + 0.001, lat),
            PlaceRecord("景田大厦", "landmark", lon, lat, None, ("景田商务大厦",)),
        ]
    )
    body = operator.get("/api/v1/geocode/", {"q": "广东省深圳市福田区莲花路三號"}).json()
    assert body["normalized"] == "莲花路3号"
    top = body["candidates"][0]
    assert (top["name"], top["kind"], top["score"]) == ("莲花路3号", "address", 1.0)
    # The live territory decides the hierarchy of a place, not the codes stored with it.
    assert top["grid"]["code"] == GRID and top["community"]["code"] == COMMUNITY
    assert [c["score"] for c in body["candidates"]] == sorted(
        (c["score"] for c in body["candidates"]), reverse=True
    )

    alias = operator.get("/api/v1/geocode/", {"q": "景田商务大厦", "kind": "landmark"}).json()
    assert (
        alias["candidates"][0]["name"] == "景田大厦" and alias["candidates"][0]["matched"] == "景田商务大厦"
    )
    assert {c["kind"] for c in alias["candidates"]} == {"landmark"}
    full_width = operator.get("/api/v1/geocode/", {"q": "莲花路１３号"}).json()
    assert full_width["candidates"][0]["name"] == "莲花路13号"


def test_q_kind_and_limit_filter(operator: APIClient) -> None:
    body = operator.get("/api/v1/geocode/", {"q": "福田", "kind": "street,district", "limit": "3"}).json()
    assert 1 <= body["count"] <= 3
    assert {c["kind"] for c in body["candidates"]} <= {"street", "district"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "莲" * 201}, "q"),
        ({"q": "福田", "limit": "abc"}, "limit"),
        ({"q": "福田", "limit": "0"}, "limit"),
        ({"q": "福田", "limit": "51"}, "limit"),
        ({"q": "福田", "kind": "mall"}, "kind"),
    ],
)
def test_bad_search_input_is_400_naming_the_parameter(
    operator: APIClient, params: dict[str, str], field: str
) -> None:
    response = operator.get("/api/v1/geocode/", params)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_q_without_lon_lat_and_missing_both_message(operator: APIClient) -> None:
    assert operator.get("/api/v1/geocode/", {"q": "福田区"}).status_code == 200
    response = operator.get("/api/v1/geocode/")
    assert response.status_code == 400
    assert "or give q" in response.json()["error"]["detail"]


# --- reverse geocoding ----------------------------------------------------------------------------


def test_reverse_returns_the_nearest_place_and_the_hierarchy(operator: APIClient) -> None:
    lon, lat = point_in(GRID)
    near_lon, near_lat, _ = GEOD.fwd(lon, lat, 90.0, 40.0)
    far_lon, far_lat, _ = GEOD.fwd(lon, lat, 0.0, 300.0)
    places.places_import(
        records=[
            PlaceRecord("莲花山公园东门", "landmark", near_lon, near_lat),
            PlaceRecord("景田路88号", "address", far_lon, far_lat),
        ]
    )
    x, y = datums.wgs84_to_gcj02(lon, lat)
    params: dict[str, Any] = {"lon": x, "lat": y, "crs": "gcj02"}
    body = operator.get("/api/v1/geocode/reverse/", params).json()
    assert body["grid"]["code"] == GRID and body["community"]["code"] == COMMUNITY
    assert body["place"]["name"] == "莲花山公园东门" and body["place"]["kind"] == "landmark"
    assert body["place"]["distance_m"] == pytest.approx(40.0, abs=0.05)
    assert body["place"]["lon"] == pytest.approx(near_lon, abs=1e-7)

    body = operator.get("/api/v1/geocode/reverse/", {"lon": lon, "lat": lat, "radius": 20}).json()
    assert body["place"] is None and body["grid"]["code"] == GRID


def test_reverse_ignores_unit_names(operator: APIClient) -> None:
    # Without landmarks or addresses there is no named place, only the hierarchy.
    lon, lat = point_in(GRID)
    body = operator.get("/api/v1/geocode/reverse/", {"lon": lon, "lat": lat, "radius": 5000}).json()
    assert body["place"] is None


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"lat": "22.5"}, 400, "lon"),
        ({"lon": "114.05", "lat": "x"}, 400, "lat"),
        ({"lon": "114.05", "lat": "22.55", "crs": "mars"}, 400, "crs"),
        ({"lon": "114.05", "lat": "22.55", "radius": "far"}, 400, "radius"),
        ({"lon": "114.05", "lat": "22.55", "radius": "99999"}, 400, "radius"),
        ({"lon": "100", "lat": "10"}, 422, None),
    ],
)
def test_reverse_bad_input(
    operator: APIClient, params: dict[str, str], status: int, field: str | None
) -> None:
    response = operator.get("/api/v1/geocode/reverse/", params)
    assert response.status_code == status
    error = response.json()["error"]
    if field is not None:
        assert error["field"] == field
    else:
        assert error["nearest_grid"]["code"]
