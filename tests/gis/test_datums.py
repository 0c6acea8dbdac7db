"""Tests for gis.datums: published coordinate pairs, round trips, outside-China identity, crs names."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from gis import datums

GEOD = Geod(ellps="WGS84")
DEG_TOL = 1e-6  # about 0.1 m; the published values are printed to ~1e-14 degrees


def metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    return float(GEOD.inv(lon1, lat1, lon2, lat2)[2])


# WGS-84 -> GCJ-02 pairs (lon, lat) from the test suite of googollee/eviltransform
# (python/test.py: Shanghai, Shenzhen, Beijing), a widely used multi-language implementation.
EVILTRANSFORM_WGS_GCJ = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),  # Shanghai
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),  # Shenzhen
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),  # Beijing
]

# Outputs for the input (116.404, 39.915) printed in wandergis/coordtransform (README and
# test/app.js), the most widely used JavaScript implementation.
COORDTRANSFORM_IN = (116.404, 39.915)
COORDTRANSFORM_WGS_TO_GCJ = (116.41024449916938, 39.91640428150164)
COORDTRANSFORM_GCJ_TO_BD = (116.41036949371029, 39.92133699351021)
# coordtransform's bd09togcj02 is the one-step estimate; ours is iterated, so they agree to ~0.05 m.
COORDTRANSFORM_BD_TO_GCJ = (116.39762729119315, 39.90865673957631)


@pytest.mark.parametrize(("wgs", "gcj"), EVILTRANSFORM_WGS_GCJ)
def test_published_wgs84_gcj02_pairs(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    lon, lat = datums.wgs84_to_gcj02(*wgs)
    assert lon == pytest.approx(gcj[0], abs=DEG_TOL)
    assert lat == pytest.approx(gcj[1], abs=DEG_TOL)
    back = datums.gcj02_to_wgs84(*gcj)
    assert metres(*back, *wgs) < 0.5


def test_published_coordtransform_values() -> None:
    assert datums.wgs84_to_gcj02(*COORDTRANSFORM_IN) == pytest.approx(COORDTRANSFORM_WGS_TO_GCJ, abs=DEG_TOL)
    assert datums.gcj02_to_bd09(*COORDTRANSFORM_IN) == pytest.approx(COORDTRANSFORM_GCJ_TO_BD, abs=DEG_TOL)
    assert datums.bd09_to_gcj02(*COORDTRANSFORM_IN) == pytest.approx(COORDTRANSFORM_BD_TO_GCJ, abs=DEG_TOL)


def test_composed_conversions_agree() -> None:
    lon, lat = 114.0579, 22.5431  # Shenzhen Civic Centre
    via_gcj = datums.gcj02_to_bd09(*datums.wgs84_to_gcj02(lon, lat))
    assert datums.wgs84_to_bd09(lon, lat) == pytest.approx(via_gcj, abs=1e-12)
    assert datums.to_wgs84(*via_gcj, "BD09") == pytest.approx((lon, lat), abs=1e-9)


def test_inverse_beats_one_step_estimate() -> None:
    # The one-step estimate g - (f(g) - g) printed by coordtransform is metres off; ours is not.
    gcj = COORDTRANSFORM_IN
    wgs = datums.gcj02_to_wgs84(*gcj)
    assert metres(*datums.wgs84_to_gcj02(*wgs), *gcj) < 0.001


china_lon = st.floats(min_value=73.5, max_value=135.0, allow_nan=False)
china_lat = st.floats(min_value=18.0, max_value=53.5, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(lon=china_lon, lat=china_lat)
def test_round_trips_inside_china(lon: float, lat: float) -> None:
    gcj = datums.wgs84_to_gcj02(lon, lat)
    assert 1.0 < metres(lon, lat, *gcj) < 2000.0  # the offset is really applied
    assert metres(*datums.gcj02_to_wgs84(*gcj), lon, lat) < 0.5

    bd = datums.wgs84_to_bd09(lon, lat)
    assert metres(*datums.bd09_to_wgs84(*bd), lon, lat) < 0.5
    assert metres(*datums.bd09_to_gcj02(*bd), *gcj) < 0.5
    assert metres(*datums.gcj02_to_bd09(*datums.bd09_to_gcj02(lon, lat)), lon, lat) < 0.5


OUTSIDE = [
    (-0.1276, 51.5072),  # London
    (-74.006, 40.7128),  # New York
    (151.2093, -33.8688),  # Sydney
    (139.6917, 35.6895),  # Tokyo: east of the box
    (100.0, 60.0),  # Siberia: north of the box
]


@pytest.mark.parametrize(("lon", "lat"), OUTSIDE)
def test_outside_china_unchanged(lon: float, lat: float) -> None:
    for func in (
        datums.wgs84_to_gcj02,
        datums.gcj02_to_wgs84,
        datums.gcj02_to_bd09,
        datums.bd09_to_gcj02,
        datums.wgs84_to_bd09,
        datums.bd09_to_wgs84,
    ):
        assert func(lon, lat) == (lon, lat), func.__name__
    for crs in datums.SUPPORTED_CRS:
        assert datums.to_wgs84(lon, lat, crs) == (lon, lat)


def test_bounding_box_edges_are_inclusive() -> None:
    min_lon, min_lat, max_lon, max_lat = datums.CHINA_BBOX
    assert datums.in_china([min_lon, max_lon, min_lon - 1e-9], [min_lat, max_lat, min_lat]).tolist() == [
        True,
        True,
        False,
    ]


@settings(max_examples=30, deadline=None)
@given(
    lons=st.lists(st.floats(min_value=-180, max_value=180, allow_nan=False), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_vectorised_equals_scalar(lons: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    lon = np.asarray(lons)
    lat = rng.uniform(-80, 80, size=lon.size)
    # Mix in points inside China so both branches are exercised.
    lon[::2] = rng.uniform(73.5, 135, size=lon[::2].size)
    lat[::2] = rng.uniform(18, 53.5, size=lat[::2].size)
    pairs = [
        (datums.wgs84_to_gcj02_many, datums.wgs84_to_gcj02),
        (datums.gcj02_to_wgs84_many, datums.gcj02_to_wgs84),
        (datums.gcj02_to_bd09_many, datums.gcj02_to_bd09),
        (datums.bd09_to_gcj02_many, datums.bd09_to_gcj02),
        (datums.wgs84_to_bd09_many, datums.wgs84_to_bd09),
        (datums.bd09_to_wgs84_many, datums.bd09_to_wgs84),
    ]
    for many, one in pairs:
        out_lon, out_lat = many(lon, lat)
        assert out_lon.shape == lon.shape
        for i in range(lon.size):
            assert (out_lon[i], out_lat[i]) == pytest.approx(one(lon[i], lat[i]), abs=1e-12), one.__name__
    for crs in ("gcj02", "bd09", "wgs84", "cgcs2000"):
        out_lon, out_lat = datums.to_wgs84_many(lon, lat, crs)
        for i in range(lon.size):
            assert (out_lon[i], out_lat[i]) == pytest.approx(datums.to_wgs84(lon[i], lat[i], crs), abs=1e-12)


def test_vectorised_keeps_shape_and_broadcasts() -> None:
    lon = np.array([[114.0, 114.1], [114.2, 114.3]])
    out_lon, out_lat = datums.wgs84_to_gcj02_many(lon, 22.5)
    assert out_lon.shape == out_lat.shape == (2, 2)
    empty = datums.gcj02_to_wgs84_many([], [])
    assert empty[0].shape == (0,)


@pytest.mark.parametrize(
    ("crs", "expected"),
    [
        ("wgs84", "wgs84"),
        ("WGS84", "wgs84"),
        ("EPSG:4326", "wgs84"),
        ("epsg:4490", "cgcs2000"),
        ("CGCS2000", "cgcs2000"),
        (" GCJ02 ", "gcj02"),
        ("Bd09", "bd09"),
    ],
)
def test_crs_names(crs: str, expected: str) -> None:
    assert datums.canonical_crs(crs) == expected


def test_cgcs2000_and_wgs84_are_identity() -> None:
    point = (114.0579, 22.5431)
    assert datums.to_wgs84(*point, "cgcs2000") == point
    assert datums.to_wgs84(*point, "EPSG:4326") == point
    assert datums.to_wgs84(*point, "gcj02") == datums.gcj02_to_wgs84(*point)


@pytest.mark.parametrize("crs", ["utm50n", "", "EPSG:3857"])
def test_unknown_crs_is_rejected(crs: str) -> None:
    with pytest.raises(ValueError, match="unknown crs") as info:
        datums.to_wgs84(114.0, 22.5, crs)
    message = str(info.value)
    assert repr(crs) in message
    for name in datums.SUPPORTED_CRS:
        assert name in message
    with pytest.raises(ValueError, match="unknown crs"):
        datums.to_wgs84_many([114.0], [22.5], crs)
