"""Tests for gis.areas: circles, area validation and unit shares against a geopandas overlay."""

from __future__ import annotations

import math
from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from gis.areas import MIN_SHARE, AreaResolver, Unit, circle, validate_area

GEOD = Geod(ellps="WGS84")
# An equal-area CRS independent of the resolver's own (a LAEA centred on the data): Albers for China.
CHINA_ALBERS = "+proj=aea +lat_1=25 +lat_2=47 +lat_0=0 +lon_0=105 +datum=WGS84 +units=m +no_defs"

LON0, LAT0 = 114.0, 22.5
CELL = 0.005  # degrees, about 500 m
N = 12  # grids per side
BLOCK = 4  # grids per community side


def _grid_units() -> list[Unit]:
    """A 12x12 grid layer, 3x3 communities of 4x4 grids each, and one district over all of them."""
    units: list[Unit] = []
    for i in range(N):
        for j in range(N):
            community = f"C{i // BLOCK}{j // BLOCK}"
            cell = box(LON0 + i * CELL, LAT0 + j * CELL, LON0 + (i + 1) * CELL, LAT0 + (j + 1) * CELL)
            units.append(Unit("grid", f"G{i:02d}{j:02d}", f"网格{i}-{j}", community, cell))
    for ci in range(N // BLOCK):
        for cj in range(N // BLOCK):
            x0, y0 = LON0 + ci * BLOCK * CELL, LAT0 + cj * BLOCK * CELL
            geom = box(x0, y0, x0 + BLOCK * CELL, y0 + BLOCK * CELL)
            units.append(Unit("community", f"C{ci}{cj}", f"社区{ci}{cj}", "D1", geom))
    units.append(Unit("district", "D1", "测试区", None, box(LON0, LAT0, LON0 + N * CELL, LAT0 + N * CELL)))
    return units


@pytest.fixture(scope="module")
def units() -> list[Unit]:
    return _grid_units()


@pytest.fixture(scope="module")
def resolver(units: list[Unit]) -> AreaResolver:
    return AreaResolver.from_units(units)


def overlay_shares(units: list[Unit], area: Polygon | MultiPolygon) -> dict[tuple[str, str], float]:
    """Shares computed independently with geopandas.overlay in a different equal-area CRS."""
    # Densify (finer than the resolver does) so that edges stay straight in lon/lat after projection.
    gdf = gpd.GeoDataFrame(
        {"layer": [u.layer for u in units], "code": [u.code for u in units]},
        geometry=shapely.segmentize([u.geometry for u in units], 0.0002),
        crs="EPSG:4326",
    ).to_crs(CHINA_ALBERS)
    gdf["unit_area"] = gdf.geometry.area
    area_gdf = gpd.GeoDataFrame(
        {"warning": [1]}, geometry=[shapely.segmentize(area, 0.0002)], crs="EPSG:4326"
    ).to_crs(CHINA_ALBERS)
    pieces = gpd.overlay(gdf, area_gdf, how="intersection", keep_geom_type=True)
    pieces["share"] = pieces.geometry.area / pieces["unit_area"]
    grouped = pieces.groupby(["layer", "code"])["share"].sum()
    return {key: min(float(v), 1.0) for key, v in grouped.items() if v > MIN_SHARE}


def flatten(result: dict[str, list[tuple[str, float]]]) -> dict[tuple[str, str], float]:
    return {(layer, code): share for layer, entries in result.items() for code, share in entries}


def test_layers_are_reported_in_standard_order(resolver: AreaResolver) -> None:
    assert resolver.layers == ("district", "community", "grid")
    result = resolver.resolve(box(0.0, 0.0, 0.001, 0.001))  # far away
    assert result == {"district": [], "community": [], "grid": []}


def irregular_areas() -> Iterator[Polygon | MultiPolygon]:
    yield circle(LON0 + 0.023, LAT0 + 0.031, 1200.0)
    yield affinity.rotate(box(LON0 + 0.01, LAT0 + 0.01, LON0 + 0.045, LAT0 + 0.03), 23.0)
    yield Polygon(  # concave, with a hole
        [
            (LON0 - 0.01, LAT0 - 0.01),
            (LON0 + 0.05, LAT0 + 0.002),
            (LON0 + 0.03, LAT0 + 0.07),
            (LON0 + 0.004, LAT0 + 0.02),
        ],
        [[(LON0 + 0.01, LAT0 + 0.01), (LON0 + 0.02, LAT0 + 0.012), (LON0 + 0.015, LAT0 + 0.02)]],
    )
    yield MultiPolygon([circle(LON0 + 0.01, LAT0 + 0.01, 600.0), circle(LON0 + 0.05, LAT0 + 0.045, 800.0)])


@pytest.mark.parametrize(
    "area", list(irregular_areas()), ids=["circle", "rotated-box", "concave-hole", "multi"]
)
def test_shares_match_geopandas_overlay(
    resolver: AreaResolver, units: list[Unit], area: Polygon | MultiPolygon
) -> None:
    ours = flatten(resolver.resolve(area))
    theirs = overlay_shares(units, area)
    assert set(ours) == set(theirs)
    for key, share in ours.items():
        assert 0.0 < share <= 1.0
        assert share == pytest.approx(theirs[key], abs=1e-6), key


def test_contained_units_have_share_one_and_neighbours_are_absent(resolver: AreaResolver) -> None:
    # Exactly grids (2..5, 3..6): boundaries run along grid edges, so neighbours only touch.
    area = box(LON0 + 2 * CELL, LAT0 + 3 * CELL, LON0 + 6 * CELL, LAT0 + 7 * CELL)
    result = resolver.resolve(area)
    grids = dict(result["grid"])
    expected = {f"G{i:02d}{j:02d}" for i in range(2, 6) for j in range(3, 7)}
    assert set(grids) == expected
    assert all(share == 1.0 for share in grids.values())
    assert [code for code, _ in result["district"]] == ["D1"]
    # Cells shrink northwards, so the district share is an area ratio rather than 16/144.
    covered = sum(
        abs(GEOD.geometry_area_perimeter(resolver.unit("grid", code).geometry)[0]) for code in expected
    )
    whole = abs(GEOD.geometry_area_perimeter(resolver.unit("district", "D1").geometry)[0])
    assert result["district"][0][1] == pytest.approx(covered / whole, rel=1e-6)
    assert result["district"][0][1] != pytest.approx(16 / 144, rel=1e-5)


def test_multipolygon_area(resolver: AreaResolver, units: list[Unit]) -> None:
    first = box(LON0 + 0.5 * CELL, LAT0 + 0.5 * CELL, LON0 + 1.5 * CELL, LAT0 + 1.5 * CELL)
    second = box(LON0 + 9 * CELL, LAT0 + 9 * CELL, LON0 + 11 * CELL, LAT0 + 11 * CELL)
    area = MultiPolygon([first, second])
    result = flatten(resolver.resolve(area))
    assert result[("grid", "G0000")] == pytest.approx(0.25, rel=1e-4)
    assert result[("grid", "G0909")] == 1.0
    assert result[("community", "C22")] == pytest.approx(4 / 16, rel=1e-4)
    assert ("community", "C11") not in result
    assert set(result) == set(overlay_shares(units, area))


def test_multipolygon_unit_takes_the_exact_path() -> None:
    # One unit in two parts; the area covers one part entirely and never touches the other.
    left = box(114.0, 22.5, 114.01, 22.51)
    right = box(114.05, 22.5, 114.06, 22.51)
    resolver = AreaResolver.from_units([Unit("community", "C1", "两块", None, MultiPolygon([left, right]))])
    share = dict(resolver.resolve(box(113.99, 22.49, 114.02, 22.52))["community"])["C1"]
    assert share == pytest.approx(0.5, rel=1e-4)


def test_area_inside_a_single_unit(resolver: AreaResolver) -> None:
    small = circle(LON0 + 5.5 * CELL, LAT0 + 5.5 * CELL, 50.0)
    result = resolver.resolve(small)
    assert [code for code, _ in result["grid"]] == ["G0505"]
    share = result["grid"][0][1]
    grid_area = abs(GEOD.geometry_area_perimeter(resolver.unit("grid", "G0505").geometry)[0])
    assert share == pytest.approx(math.pi * 50.0**2 / grid_area, rel=2e-3)


def test_results_are_sorted_by_share_then_code(resolver: AreaResolver) -> None:
    result = resolver.resolve(circle(LON0 + 0.03, LAT0 + 0.03, 900.0))
    for entries in result.values():
        keys = [(-share, code) for code, share in entries]
        assert keys == sorted(keys)


@settings(max_examples=25, deadline=None)
@given(
    dx=st.floats(min_value=0.0, max_value=N * CELL),
    dy=st.floats(min_value=0.0, max_value=N * CELL),
    radius=st.floats(min_value=30.0, max_value=3000.0),
)
def test_area_weighted_shares_agree_across_layers(dx: float, dy: float, radius: float) -> None:
    # Grids tile each community, so the covered area summed over grids equals that over communities.
    resolver = _RESOLVER
    result = resolver.resolve(circle(LON0 + dx, LAT0 + dy, radius))

    def covered(layer: str) -> float:
        return sum(
            share * abs(GEOD.geometry_area_perimeter(resolver.unit(layer, code).geometry)[0])
            for code, share in result[layer]
        )

    grid_area, community_area = covered("grid"), covered("community")
    assert grid_area == pytest.approx(community_area, rel=1e-6, abs=1.0)
    for entries in result.values():
        assert all(0.0 < share <= 1.0 for _, share in entries)


_RESOLVER = AreaResolver.from_units(_grid_units())


# --- circle --------------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [50.0, 1_000.0, 25_000.0, 200_000.0])
@pytest.mark.parametrize(("lon", "lat"), [(114.05, 22.55), (87.6, 43.8), (126.6, 45.75)])
def test_circle_area_and_radius(lon: float, lat: float, radius: float) -> None:
    poly = circle(lon, lat, radius)
    assert poly.is_valid
    area = abs(GEOD.geometry_area_perimeter(poly)[0])
    # 128 chords lose 0.04% of the disc; the rest is the Earth's curvature at 200 km (~0.01%).
    assert area == pytest.approx(math.pi * radius**2, rel=1e-3)
    xs, ys = np.asarray(poly.exterior.coords).T
    distances = GEOD.inv(np.full(xs.size, lon), np.full(ys.size, lat), xs, ys)[2]
    np.testing.assert_allclose(distances, radius, rtol=1e-9)


def test_circle_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="radius"):
        circle(114.0, 22.5, 0.0)
    with pytest.raises(ValueError, match="radius"):
        circle(114.0, 22.5, float("nan"))
    with pytest.raises(ValueError, match="centre"):
        circle(200.0, 22.5, 100.0)
    with pytest.raises(ValueError, match="not a valid lon/lat polygon"):
        circle(179.99, 0.0, 10_000.0)  # crosses the antimeridian


# --- validation ----------------------------------------------------------------------------------


def test_self_intersecting_area_is_rejected(resolver: AreaResolver) -> None:
    bowtie = Polygon([(114.0, 22.5), (114.02, 22.52), (114.02, 22.5), (114.0, 22.52)])
    with pytest.raises(ValueError, match="invalid") as info:
        resolver.resolve(bowtie)
    assert shapely.is_valid_reason(bowtie) in str(info.value)
    assert "Self-intersection" in str(info.value)


def test_too_many_vertices_are_rejected(resolver: AreaResolver) -> None:
    dense = circle(114.03, 22.53, 2000.0, quad_segs=2600)  # 10,401 coordinates
    with pytest.raises(ValueError, match="limit of 10000"):
        resolver.resolve(dense)
    strict = AreaResolver.from_units(_grid_units()[:5], max_vertices=100)
    with pytest.raises(ValueError, match="limit of 100;"):
        strict.resolve(circle(114.0, 22.5, 500.0))  # 129 coordinates


@pytest.mark.parametrize(
    ("area", "message"),
    [
        (Point(114.0, 22.5), "Polygon or MultiPolygon, got Point"),
        (LineString([(114.0, 22.5), (114.1, 22.6)]), "Polygon or MultiPolygon, got LineString"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0))", "Polygon or MultiPolygon, got str"),
        (Polygon(), "empty"),
        (box(500_000.0, 2_400_000.0, 501_000.0, 2_401_000.0), "lon/lat"),
    ],
)
def test_other_bad_areas_are_rejected(area: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_area(area)


def test_bad_units_are_rejected() -> None:
    with pytest.raises(ValueError, match="layer and code"):
        AreaResolver.from_units([Unit("grid", "", "x", None, box(114, 22, 114.1, 22.1))])
    with pytest.raises(ValueError, match="Polygon or MultiPolygon"):
        AreaResolver.from_units([Unit("grid", "G1", "x", None, Point(114, 22))])
    with pytest.raises(ValueError, match="unique"):
        AreaResolver.from_units([Unit("grid", "G1", "x", None, box(114, 22, 114.1, 22.1))] * 2)


def test_units_may_be_mappings_and_invalid_units_are_repaired() -> None:
    bowtie = Polygon([(114.0, 22.5), (114.02, 22.52), (114.02, 22.5), (114.0, 22.52)])
    resolver = AreaResolver.from_units(
        [{"layer": "grid", "code": "G1", "name": "蝴蝶", "parent_code": "", "geometry": bowtie}]
    )
    assert resolver.unit("grid", "G1").geometry.is_valid
    assert resolver.unit("grid", "G1").parent_code is None
    assert dict(resolver.resolve(box(113.9, 22.4, 114.1, 22.6))["grid"])["G1"] == pytest.approx(1.0)
