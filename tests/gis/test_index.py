"""Tests of gis.index.TerritoryIndex (pure Python: no Django, no database)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyproj
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gis.index import GeocodeError, OutsideTerritory, TerritoryIndex, UnitInfo

GEOD = pyproj.Geod(ellps="WGS84")
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Unit:
    """Stand-in for gis.citygen.Unit."""

    layer: str
    code: str
    name: str
    parent_code: str | None
    geometry: Any


def lattice_city(
    *,
    lon0: float = 114.0,
    lat0: float = 22.5,
    step: float = 0.002,
    n: int = 16,
    per_community: int = 4,
    block_size: int = 2,
    block_rows: int | None = None,
    seed: int = 7,
) -> list[Unit]:
    """A regular n x n lattice of square grids with a full hierarchy and blocks.

    Grid codes are a random permutation, so "smallest code" differs from "west-most" or "south-most".
    Neighbouring cells share exactly equal edge coordinates, so points can sit exactly on an edge.
    """
    rng = np.random.default_rng(seed)
    xs = [lon0 + i * step for i in range(n + 1)]
    ys = [lat0 + j * step for j in range(n + 1)]
    n_comm = n // per_community
    units: list[Unit] = []
    units.append(Unit("district", "D1", "West", None, shapely.box(xs[0], ys[0], xs[n // 2], ys[n])))
    units.append(Unit("district", "D2", "East", None, shapely.box(xs[n // 2], ys[0], xs[n], ys[n])))
    for s in range(2):
        for t in range(2):
            d = "D1" if s == 0 else "D2"
            x0, x1 = xs[s * n // 2], xs[(s + 1) * n // 2]
            y0, y1 = ys[t * n // 2], ys[(t + 1) * n // 2]
            units.append(Unit("street", f"S{s}{t}", f"Street {s}{t}", d, shapely.box(x0, y0, x1, y1)))
    codes = rng.permutation(n * n)
    for ci in range(n_comm):
        for cj in range(n_comm):
            street = f"S{(ci * per_community) // (n // 2)}{(cj * per_community) // (n // 2)}"
            x0, x1 = xs[ci * per_community], xs[(ci + 1) * per_community]
            y0, y1 = ys[cj * per_community], ys[(cj + 1) * per_community]
            units.append(
                Unit("community", f"C{ci}{cj}", f"Community {ci}{cj}", street, shapely.box(x0, y0, x1, y1))
            )
    for i in range(n):
        for j in range(n):
            community = f"C{i // per_community}{j // per_community}"
            box = shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1])
            units.append(Unit("grid", f"G{codes[i * n + j]:04d}", f"Grid {i},{j}", community, box))
    rows = n // block_size if block_rows is None else block_rows
    for i in range(n // block_size):
        for j in range(rows):
            community = f"C{(i * block_size) // per_community}{(j * block_size) // per_community}"
            box = shapely.box(
                xs[i * block_size], ys[j * block_size], xs[(i + 1) * block_size], ys[(j + 1) * block_size]
            )
            units.append(
                Unit("block", f"B{(i * 7 + j * 3) % 97:02d}{i:02d}{j:02d}", f"Block {i},{j}", community, box)
            )
    return units


def lattice_cell(units: list[Unit], i: int, j: int) -> Unit:
    """The grid unit at lattice position (i, j)."""
    return next(u for u in units if u.layer == "grid" and u.name == f"Grid {i},{j}")


def jagged_outline(n: int = 90, seed: int = 5) -> shapely.Polygon:
    """A star-shaped, coast-like territory outline inside the Voronoi fixture's box."""
    rng = np.random.default_rng(seed)
    angle = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radius = rng.uniform(0.6, 1.0, n)
    return shapely.Polygon(
        np.column_stack([113.96 + 0.06 * radius * np.cos(angle), 22.54 + 0.04 * radius * np.sin(angle)])
    )


def voronoi_city(n_grids: int = 400, seed: int = 3, outline: shapely.Polygon | None = None) -> list[Unit]:
    """Irregular grids (Voronoi cells clipped to a box or an outline) grouped into communities."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = 113.90, 22.50, 114.02, 22.58
    frame = shapely.box(x0, y0, x1, y1) if outline is None else outline
    seeds = np.column_stack([rng.uniform(x0, x1, n_grids), rng.uniform(y0, y1, n_grids)])
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=frame, ordered=True)
    )
    cells = shapely.intersection(cells, frame)
    keep = ~shapely.is_empty(cells)
    cells, seeds = cells[keep], seeds[keep]
    units = [
        Unit("district", "440300", "District", None, frame),
        Unit("street", "440300001", "Street", "440300", frame),
    ]
    groups: dict[str, list[Any]] = {}
    for k, (cell, (sx, sy)) in enumerate(zip(cells, seeds, strict=True)):
        community = f"440300001{int((sx - x0) / (x1 - x0) * 3)}{int((sy - y0) / (y1 - y0) * 3)}"
        groups.setdefault(community, []).append(cell)
        units.append(Unit("grid", f"{community}{k:04d}", f"Grid {k}", community, cell))
    for community, parts in groups.items():
        units.append(
            Unit("community", community, f"Community {community}", "440300001", shapely.union_all(parts))
        )
    return units


def brute_force(units: list[Unit], layer: str, lon: np.ndarray, lat: np.ndarray) -> list[str | None]:
    """Reference answer: the smallest code among the layer's polygons covering each point."""
    members = sorted((u for u in units if u.layer == layer), key=lambda u: u.code)
    geoms = np.array([u.geometry for u in members], dtype=object)
    point, poly = shapely.STRtree(geoms).query(shapely.points(lon, lat), predicate="intersects")
    best: dict[int, int] = {}
    for p, g in zip(point.tolist(), poly.tolist(), strict=True):
        best[p] = min(g, best.get(p, g))
    return [members[best[i]].code if i in best else None for i in range(len(lon))]


def ancestors(units: list[Unit], grid_code: str) -> tuple[str, str, str]:
    """(community, street, district) codes of a grid, following parent codes."""
    by_code = {u.code: u for u in units}
    community = by_code[grid_code].parent_code
    assert community is not None
    street = by_code[community].parent_code
    assert street is not None
    district = by_code[street].parent_code
    assert district is not None
    return community, street, district


@pytest.fixture(scope="module")
def lattice() -> list[Unit]:
    return lattice_city()


@pytest.fixture(scope="module")
def lattice_index(lattice: list[Unit]) -> TerritoryIndex:
    return TerritoryIndex.from_units(lattice, version=3)


@pytest.fixture(scope="module")
def voronoi() -> list[Unit]:
    return voronoi_city()


@pytest.fixture(scope="module")
def voronoi_index(voronoi: list[Unit]) -> TerritoryIndex:
    return TerritoryIndex.from_units(voronoi)


def assert_same(single: dict[str, Any], batch: dict[str, np.ndarray], i: int) -> None:
    """geocode()'s answer equals row i of geocode_many()'s."""
    for layer in ("district", "street", "community", "grid"):
        assert batch[f"{layer}_code"][i] == single[layer]["code"]
    assert batch["block_code"][i] == (single["block"]["code"] if single["block"] else None)
    assert bool(batch["snapped"][i]) == single["snapped"]
    assert bool(batch["near_boundary"][i]) == single["near_boundary"]
    assert float(batch["boundary_distance_m"][i]) == single["boundary_distance_m"]


# --- containment ---------------------------------------------------------------------------------------


@HYPOTHESIS
@given(data=st.data())
def test_interior_points_resolve_to_their_grid_and_ancestors(
    data: st.DataObject, voronoi: list[Unit], voronoi_index: TerritoryIndex
) -> None:
    grids = [u for u in voronoi if u.layer == "grid"]
    unit = grids[data.draw(st.integers(0, len(grids) - 1), label="grid")]
    # Convex cells: any convex combination of the vertices of a slightly shrunken cell is strictly inside.
    inner = unit.geometry.buffer(-1e-7)
    vertices = shapely.get_coordinates(inner)[:-1]
    weights = np.array(
        data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(vertices), max_size=len(vertices)))
    )
    weights = weights + 1e-9
    lon, lat = (weights / weights.sum()) @ vertices
    result = voronoi_index.geocode(float(lon), float(lat))
    assert result["grid"]["code"] == unit.code
    community, street, district = ancestors(voronoi, unit.code)
    assert (result["community"]["code"], result["street"]["code"], result["district"]["code"]) == (
        community,
        street,
        district,
    )
    assert result["grid"]["name"] == unit.name
    assert result["snapped"] is False
    assert result["boundary_distance_m"] >= 0.0
    assert result["block"] is None  # this city has no blocks


@HYPOTHESIS
@given(
    points=st.lists(
        st.tuples(st.floats(113.895, 114.025), st.floats(22.495, 22.585)), min_size=1, max_size=60
    )
)
def test_geocode_many_agrees_with_geocode(
    points: list[tuple[float, float]], voronoi_index: TerritoryIndex
) -> None:
    lon = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    batch = voronoi_index.geocode_many(lon, lat)
    for i, (x, y) in enumerate(points):
        try:
            single = voronoi_index.geocode(x, y)
        except OutsideTerritory:
            assert all(
                batch[f"{layer}_code"][i] is None for layer in ("district", "street", "community", "grid")
            )
            assert batch["block_code"][i] is None
            assert not batch["snapped"][i] and not batch["near_boundary"][i]
            assert math.isnan(batch["boundary_distance_m"][i])
            continue
        assert_same(single, batch, i)


@HYPOTHESIS
@given(
    points=st.lists(
        st.tuples(st.floats(113.999, 114.033), st.floats(22.499, 22.533)), min_size=1, max_size=40
    )
)
def test_lattice_batch_single_and_brute_force_agree(
    points: list[tuple[float, float]], lattice: list[Unit], lattice_index: TerritoryIndex
) -> None:
    lon = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    batch = lattice_index.geocode_many(lon, lat)
    inside = brute_force(lattice, "grid", lon, lat)
    blocks = brute_force(lattice, "block", lon, lat)
    for i, (x, y) in enumerate(points):
        if inside[i] is not None:
            assert batch["grid_code"][i] == inside[i]
            assert not batch["snapped"][i]
            assert batch["block_code"][i] == blocks[i]
        try:
            assert_same(lattice_index.geocode(x, y), batch, i)
        except OutsideTerritory:
            assert batch["grid_code"][i] is None


def test_dense_points_match_brute_force(voronoi: list[Unit], voronoi_index: TerritoryIndex) -> None:
    rng = np.random.default_rng(8)
    lon = rng.uniform(113.899, 114.021, 30_000)
    lat = rng.uniform(22.499, 22.581, 30_000)
    batch = voronoi_index.geocode_many(lon, lat)
    truth = brute_force(voronoi, "grid", lon, lat)
    inside = np.array([t is not None for t in truth])
    assert list(batch["grid_code"][inside]) == [t for t in truth if t is not None]
    assert not batch["snapped"][inside].any()
    assert batch["snapped"][~inside].all()  # all within 200 m of the frame


def test_jagged_territory_matches_brute_force() -> None:
    # Concave coast-like outline: many boundary vertices owned by one grid only, some cells split into
    # MultiPolygons by the clipping.
    units = voronoi_city(n_grids=300, seed=4, outline=jagged_outline())
    assert any(isinstance(u.geometry, shapely.MultiPolygon) for u in units if u.layer == "grid")
    index = TerritoryIndex.from_units(units)
    rng = np.random.default_rng(12)
    lon = rng.uniform(113.899, 114.021, 60_000)
    lat = rng.uniform(22.499, 22.581, 60_000)
    outline = shapely.get_coordinates(jagged_outline())
    lon = np.concatenate([lon, (outline[:, 0][:, None] + rng.normal(0, 2e-4, (len(outline), 50))).ravel()])
    lat = np.concatenate([lat, (outline[:, 1][:, None] + rng.normal(0, 2e-4, (len(outline), 50))).ravel()])
    batch = index.geocode_many(lon, lat)
    truth = brute_force(units, "grid", lon, lat)
    inside = np.array([t is not None for t in truth])
    assert list(batch["grid_code"][inside]) == [t for t in truth if t is not None]
    assert not batch["snapped"][inside].any()
    for i in range(0, lon.size, 101):
        try:
            assert_same(index.geocode(float(lon[i]), float(lat[i])), batch, i)
        except OutsideTerritory:
            assert batch["grid_code"][i] is None


def test_vertices_and_edge_midpoints_match_brute_force(
    voronoi: list[Unit], voronoi_index: TerritoryIndex
) -> None:
    # Vertices lie on two or three grids at once; midpoints sit on or within rounding of an edge. Both
    # exercise the exact fallback of the vectorised test, and GEOS is the referee.
    rings = shapely.get_coordinates(
        np.array([u.geometry for u in voronoi if u.layer == "grid"], dtype=object)
    )
    mids = (rings[:-1] + rings[1:]) / 2.0
    points = np.concatenate([rings, mids])
    lon, lat = points[:, 0], points[:, 1]
    batch = voronoi_index.geocode_many(lon, lat)
    assert list(batch["grid_code"]) == brute_force(voronoi, "grid", lon, lat)
    for i in range(0, len(lon), 37):
        assert_same(voronoi_index.geocode(float(lon[i]), float(lat[i])), batch, i)


def test_generated_city_matches_brute_force() -> None:
    citygen = pytest.importorskip("gis.citygen")
    units = list(citygen.generate_city(grids=2000).units)
    index = TerritoryIndex.from_units(units)
    grids = np.array([u.geometry for u in units if u.layer == "grid"], dtype=object)
    minx, miny, maxx, maxy = shapely.total_bounds(grids)
    rng = np.random.default_rng(11)
    lon = rng.uniform(minx, maxx, 40_000)
    lat = rng.uniform(miny, maxy, 40_000)
    batch = index.geocode_many(lon, lat)
    truth = brute_force(units, "grid", lon, lat)
    block_truth = brute_force(units, "block", lon, lat)
    inside = np.array([t is not None for t in truth])
    assert inside.mean() > 0.5
    assert list(batch["grid_code"][inside]) == [t for t in truth if t is not None]
    assert not batch["snapped"][inside].any()
    assert list(batch["block_code"][inside]) == [b for b, i in zip(block_truth, inside, strict=True) if i]
    for i in np.flatnonzero(inside)[:300]:
        community, street, district = ancestors(units, truth[i])
        assert (batch["community_code"][i], batch["street_code"][i], batch["district_code"][i]) == (
            community,
            street,
            district,
        )
    for i in range(0, 40_000, 97):
        try:
            assert_same(index.geocode(float(lon[i]), float(lat[i])), batch, i)
        except OutsideTerritory:
            assert batch["grid_code"][i] is None


def test_many_chunks_keep_input_order(lattice: list[Unit], lattice_index: TerritoryIndex) -> None:
    rng = np.random.default_rng(5)
    lon = rng.uniform(114.0, 114.032, 100_000)
    lat = rng.uniform(22.5, 22.532, 100_000)
    batch = lattice_index.geocode_many(lon, lat, with_block=False)
    assert list(batch["grid_code"][:2000]) == brute_force(lattice, "grid", lon[:2000], lat[:2000])
    assert all(b is None for b in batch["block_code"])
    tail = lattice_index.geocode_many(lon[-2000:], lat[-2000:], with_block=False)
    assert list(tail["grid_code"]) == list(batch["grid_code"][-2000:])


# --- shared edges -----------------------------------------------------------------------------------------


def test_point_on_shared_edge_goes_to_smallest_code(
    lattice: list[Unit], lattice_index: TerritoryIndex
) -> None:
    step, lon0, lat0 = 0.002, 114.0, 22.5
    cases = []
    for i, j in [(3, 5), (7, 7), (10, 2), (0, 14)]:
        west, east = lattice_cell(lattice, i, j), lattice_cell(lattice, i + 1, j)
        x_edge = lon0 + (i + 1) * step
        cases.append(((x_edge, lat0 + j * step + 0.3 * step), min(west.code, east.code)))
        south, north = lattice_cell(lattice, i, j), lattice_cell(lattice, i, j + 1)
        y_edge = lat0 + (j + 1) * step
        cases.append(((lon0 + i * step + 0.6 * step, y_edge), min(south.code, north.code)))
        corner = [lattice_cell(lattice, i + di, j + dj).code for di in (0, 1) for dj in (0, 1)]
        cases.append(((x_edge, y_edge), min(corner)))
    lon = np.array([c[0][0] for c in cases])
    lat = np.array([c[0][1] for c in cases])
    batch = lattice_index.geocode_many(lon, lat)
    for k, ((x, y), expected) in enumerate(cases):
        result = lattice_index.geocode(x, y)
        assert result["grid"]["code"] == expected
        assert result["boundary_distance_m"] == 0.0
        assert result["near_boundary"] is True
        assert_same(result, batch, k)


def test_point_on_shared_block_edge_goes_to_smallest_block_code(
    lattice: list[Unit], lattice_index: TerritoryIndex
) -> None:
    step, lon0, lat0 = 0.002, 114.0, 22.5
    x_edge = lon0 + 4 * step  # between block columns 1 and 2
    y = lat0 + 5.5 * step
    expected = brute_force(lattice, "block", np.array([x_edge]), np.array([y]))[0]
    covering = [
        u.code for u in lattice if u.layer == "block" and u.geometry.intersects(shapely.Point(x_edge, y))
    ]
    assert len(covering) == 2 and expected == min(covering)
    assert lattice_index.geocode(x_edge, y)["block"]["code"] == expected
    assert lattice_index.geocode_many(np.array([x_edge]), np.array([y]))["block_code"][0] == expected


# --- distances ------------------------------------------------------------------------------------------


def test_boundary_distance_matches_geodesic_and_sets_near_boundary(lattice_index: TerritoryIndex) -> None:
    step, lon0, lat0 = 0.002, 114.0, 22.5
    x_edge = lon0 + 6 * step
    y_mid = lat0 + 8.5 * step
    for offset_m in (5.0, 20.0, 29.0, 31.0, 45.0, 90.0):
        dlon = offset_m / (111_320.0 * math.cos(math.radians(y_mid)))
        x = x_edge - dlon
        expected = GEOD.inv(x, y_mid, x_edge, y_mid)[2]
        result = lattice_index.geocode(x, y_mid)
        assert result["boundary_distance_m"] == pytest.approx(expected, rel=1e-3, abs=0.02)
        assert result["near_boundary"] is (result["boundary_distance_m"] <= 30.0)
    y_edge = lat0 + 9 * step
    x_mid = lon0 + 2.5 * step
    y = y_edge - 12.0 / 110_700.0
    result = lattice_index.geocode(x_mid, y)
    assert result["boundary_distance_m"] == pytest.approx(
        GEOD.inv(x_mid, y, x_mid, y_edge)[2], rel=1e-3, abs=0.02
    )
    assert result["near_boundary"] is True
    cx, cy = lon0 + 4.5 * step, lat0 + 4.5 * step
    centre = lattice_index.geocode(cx, cy)
    # Square in degrees, so the east and west sides are the nearer ones.
    half_width = GEOD.inv(cx, cy, lon0 + 5 * step, cy)[2]
    assert half_width < GEOD.inv(cx, cy, cx, lat0 + 5 * step)[2]
    assert centre["boundary_distance_m"] == pytest.approx(half_width, rel=1e-3)
    assert centre["near_boundary"] is False


def test_distances_stay_metric_across_a_200_km_territory() -> None:
    # 20 x 20 grids of 0.1 degree: about 205 km east-west and 222 km north-south at 30 N.
    units = lattice_city(lon0=119.0, lat0=29.0, step=0.1, n=20, per_community=5, block_size=20)
    index = TerritoryIndex.from_units(units)
    rng = np.random.default_rng(2)
    for _ in range(60):
        i, j = (int(v) for v in rng.integers(0, 20, 2))
        x_edge = 119.0 + (i + 1) * 0.1
        y = 29.0 + (j + rng.uniform(0.3, 0.7)) * 0.1
        x = x_edge - rng.uniform(0.0005, 0.02)
        expected = GEOD.inv(x, y, x_edge, y)[2]
        assert index.geocode(x, y)["boundary_distance_m"] == pytest.approx(expected, rel=5e-4, abs=0.02)
    # The local projection itself reproduces pyproj's transverse Mercator to a millimetre.
    frame = index._frame
    assert frame is not None
    lon = rng.uniform(119.0, 121.0, 2000)
    lat = rng.uniform(29.0, 31.0, 2000)
    tm = pyproj.Transformer.from_crs(
        "EPSG:4326",
        f"+proj=tmerc +lat_0={frame.lat0!r} +lon_0={frame.lon0!r} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m",
        always_xy=True,
    )
    ex, ey = tm.transform(lon, lat)
    px, py = frame.forward_many(lon, lat)
    assert np.abs(px - ex).max() < 1e-3 and np.abs(py - ey).max() < 1e-3


# --- outside the territory -------------------------------------------------------------------------------


def test_snap_within_tolerance_and_outside_beyond(lattice: list[Unit], lattice_index: TerritoryIndex) -> None:
    step, lon0, lat0 = 0.002, 114.0, 22.5
    y = lat0 + 6.5 * step
    m_per_deg = 111_320.0 * math.cos(math.radians(y))
    near_x = lon0 - 120.0 / m_per_deg
    west_cell = lattice_cell(lattice, 0, 6)
    snapped = lattice_index.geocode(near_x, y)
    assert snapped["snapped"] is True
    assert snapped["grid"]["code"] == west_cell.code
    assert snapped["community"]["code"] == west_cell.parent_code
    assert snapped["boundary_distance_m"] == pytest.approx(GEOD.inv(near_x, y, lon0, y)[2], rel=1e-3)
    assert snapped["near_boundary"] is False
    assert snapped["block"] is None  # blocks never snap

    far_x = lon0 - 350.0 / m_per_deg
    with pytest.raises(OutsideTerritory) as info:
        lattice_index.geocode(far_x, y)
    assert info.value.nearest_code == west_cell.code
    assert info.value.nearest_name == west_cell.name
    assert info.value.distance_m == pytest.approx(GEOD.inv(far_x, y, lon0, y)[2], rel=1e-3)
    assert isinstance(info.value, GeocodeError)

    batch = lattice_index.geocode_many(np.array([near_x, far_x]), np.array([y, y]))
    assert_same(snapped, batch, 0)
    assert batch["grid_code"][1] is None and batch["district_code"][1] is None
    assert not batch["snapped"][1] and math.isnan(batch["boundary_distance_m"][1])
    assert lattice_index.nearest_grid(far_x, y) == (west_cell.code, info.value.distance_m)
    assert lattice_index.nearest_grid(lon0 + 0.5 * step, y) == (west_cell.code, 0.0)


def test_snap_tie_goes_to_smallest_code(lattice: list[Unit], lattice_index: TerritoryIndex) -> None:
    step, lon0, lat0 = 0.002, 114.0, 22.5
    y_vertex = lat0 + 9 * step  # west of the vertex shared by cells (0, 8) and (0, 9)
    x = lon0 - 50.0 / (111_320.0 * math.cos(math.radians(y_vertex)))
    expected = min(lattice_cell(lattice, 0, 8).code, lattice_cell(lattice, 0, 9).code)
    assert lattice_index.geocode(x, y_vertex)["grid"]["code"] == expected
    assert lattice_index.geocode_many(np.array([x]), np.array([y_vertex]))["grid_code"][0] == expected


def test_far_away_point_names_nearest_grid(lattice_index: TerritoryIndex) -> None:
    with pytest.raises(OutsideTerritory) as info:
        lattice_index.geocode(10.0, 50.0)
    assert info.value.nearest_code is not None
    assert info.value.distance_m is not None and info.value.distance_m > 8_000_000
    batch = lattice_index.geocode_many(np.array([10.0, -179.9]), np.array([50.0, -89.0]))
    assert list(batch["grid_code"]) == [None, None]


# --- input validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "field"),
    [
        (math.nan, 22.51, "lon"),
        (114.01, math.nan, "lat"),
        (math.inf, 22.51, "lon"),
        (114.01, -math.inf, "lat"),
        (200.0, 22.51, "lon"),
        (-180.5, 22.51, "lon"),
        (114.01, -91.0, "lat"),
        (114.01, 90.5, "lat"),
        ("114.01", 22.51, "lon"),
        (114.01, "22.51", "lat"),
        (None, 22.51, "lon"),
        (114.01, True, "lat"),
    ],
)
def test_bad_input_names_the_field(lattice_index: TerritoryIndex, lon: Any, lat: Any, field: str) -> None:
    with pytest.raises(GeocodeError, match=rf"\b{field}\b"):
        lattice_index.geocode(lon, lat)
    with pytest.raises(GeocodeError, match=rf"\b{field}\b"):
        lattice_index.nearest_grid(lon, lat)
    with pytest.raises(GeocodeError, match=rf"\b{field}\b"):
        lattice_index.geocode_many(
            np.array([114.01, lon], dtype=object), np.array([22.51, lat], dtype=object)
        )


def test_bad_batch_shapes(lattice_index: TerritoryIndex) -> None:
    with pytest.raises(GeocodeError, match="same shape"):
        lattice_index.geocode_many(np.zeros(3) + 114.01, np.zeros(2) + 22.51)
    with pytest.raises(GeocodeError, match="lon"):
        lattice_index.geocode_many(np.full((2, 2), 114.01), np.full((2, 2), 22.51))
    with pytest.raises(GeocodeError, match="lat"):
        lattice_index.geocode_many(np.array([114.01]), np.array(["north"]))
    with pytest.raises(GeocodeError, match=r"lat\[1\]"):
        lattice_index.geocode_many([114.01, 114.02], [22.51, math.nan])


def test_numeric_types_are_accepted(lattice_index: TerritoryIndex) -> None:
    reference = lattice_index.geocode(114.011, 22.511)
    assert (
        lattice_index.geocode(cast(Any, np.float32(114.011)), np.float64(22.511))["grid"]
        == lattice_index.geocode(float(np.float32(114.011)), 22.511)["grid"]
    )
    assert lattice_index.geocode_many([114.011], [22.511])["grid_code"][0] == reference["grid"]["code"]
    integers = lattice_index.geocode_many(np.array([114], dtype=np.int64), np.array([22], dtype=np.int32))
    assert integers["grid_code"][0] is None


def test_result_shape_and_rounding(lattice_index: TerritoryIndex) -> None:
    result = lattice_index.geocode(114.0123456789, 22.5123456789)
    assert list(result) == [
        "lon",
        "lat",
        "district",
        "street",
        "community",
        "grid",
        "block",
        "near_boundary",
        "boundary_distance_m",
        "snapped",
    ]
    assert result["lon"] == 114.0123457 and result["lat"] == 22.5123457
    assert result["boundary_distance_m"] == round(result["boundary_distance_m"], 2)
    for layer in ("district", "street", "community", "grid", "block"):
        assert set(result[layer]) == {"code", "name"}
    assert lattice_index.version == 3
    assert len(lattice_index) == 256
    batch = lattice_index.geocode_many(np.array([114.0123456789]), np.array([22.5123456789]))
    assert set(batch) == {
        "district_code",
        "street_code",
        "community_code",
        "grid_code",
        "block_code",
        "near_boundary",
        "snapped",
        "boundary_distance_m",
    }
    assert batch["near_boundary"].dtype == bool and batch["snapped"].dtype == bool
    assert batch["boundary_distance_m"].dtype == np.float64
    assert batch["grid_code"].dtype == object


def test_points_without_a_block() -> None:
    units = lattice_city(block_rows=2)  # blocks cover the southern quarter only
    index = TerritoryIndex.from_units(units)
    assert index.geocode(114.011, 22.501)["block"] is not None
    assert index.geocode(114.011, 22.525)["block"] is None
    batch = index.geocode_many(np.array([114.011, 114.011]), np.array([22.501, 22.525]))
    assert batch["block_code"][0] is not None and batch["block_code"][1] is None
    assert batch["grid_code"][1] is not None


# --- special geometries and data ------------------------------------------------------------------------


def test_multipolygon_and_hole_units() -> None:
    outer = shapely.box(114.0, 22.5, 114.03, 22.53)
    hole = shapely.box(114.01, 22.51, 114.02, 22.52)
    far_a = shapely.box(114.03, 22.5, 114.04, 22.51)
    far_b = shapely.box(114.03, 22.52, 114.04, 22.53)
    middle = shapely.box(114.03, 22.51, 114.04, 22.52)
    territory = shapely.box(114.0, 22.5, 114.04, 22.53)
    units = [
        Unit("district", "D", "D", None, territory),
        Unit("street", "S", "S", "D", territory),
        Unit("community", "C", "C", "S", territory),
        Unit("grid", "G2-ring", "ring", "C", outer.difference(hole)),
        Unit("grid", "G1-island", "island", "C", hole),
        Unit("grid", "G3-split", "split", "C", shapely.MultiPolygon([far_a, far_b])),
        Unit("grid", "G0-middle", "middle", "C", middle),
    ]
    index = TerritoryIndex.from_units(units)
    expectations = [
        ((114.005, 22.505), "G2-ring"),
        ((114.015, 22.515), "G1-island"),
        ((114.035, 22.505), "G3-split"),
        ((114.035, 22.525), "G3-split"),
        ((114.035, 22.515), "G0-middle"),
        ((114.01, 22.515), "G1-island"),  # on the hole's edge: smallest code
        ((114.03, 22.505), "G2-ring"),  # between ring and split
        ((114.035, 22.51), "G0-middle"),  # between middle and split
    ]
    lon = np.array([p[0] for p, _ in expectations])
    lat = np.array([p[1] for p, _ in expectations])
    batch = index.geocode_many(lon, lat)
    for k, ((x, y), code) in enumerate(expectations):
        result = index.geocode(x, y)
        assert result["grid"]["code"] == code, (x, y)
        assert_same(result, batch, k)
    island = index.geocode(114.0125, 22.515)
    expected = GEOD.inv(114.0125, 22.515, 114.01, 22.515)[2]
    assert island["boundary_distance_m"] == pytest.approx(expected, rel=1e-3)
    ring = index.geocode(114.0095, 22.515)  # inside the ring, 0.0005 deg west of the hole
    assert ring["boundary_distance_m"] == pytest.approx(
        GEOD.inv(114.0095, 22.515, 114.01, 22.515)[2], rel=1e-3
    )


def test_overlapping_grids_resolve_to_smallest_code() -> None:
    # Invalid data, handled by the same rule as shared edges: big "A" swallows small "Z", "B" overlaps "A".
    big = shapely.box(114.0, 22.5, 114.02, 22.52)
    small = shapely.box(114.005, 22.505, 114.0071, 22.5071)
    right = shapely.box(114.015, 22.5, 114.03, 22.52)
    territory = shapely.box(114.0, 22.5, 114.03, 22.52)
    units = [
        Unit("district", "D", "D", None, territory),
        Unit("street", "S", "S", "D", territory),
        Unit("community", "C", "C", "S", territory),
        Unit("grid", "A", "big", "C", big),
        Unit("grid", "Z", "small", "C", small),
        Unit("grid", "B", "right", "C", right),
    ]
    index = TerritoryIndex.from_units(units)
    rng = np.random.default_rng(9)
    lon = rng.uniform(114.0, 114.03, 5000)
    lat = rng.uniform(22.5, 22.52, 5000)
    batch = index.geocode_many(lon, lat)
    assert list(batch["grid_code"]) == brute_force(units, "grid", lon, lat)
    assert "Z" not in set(batch["grid_code"])
    assert index.geocode(114.006, 22.506)["grid"]["code"] == "A"
    assert index.geocode(114.025, 22.51)["grid"]["code"] == "B"


def test_grid_with_many_edges() -> None:
    circle = shapely.Point(114.0, 22.5).buffer(0.01, quad_segs=16)  # 64 edges: several rows of 8
    square = shapely.box(113.98, 22.48, 114.02, 22.52)
    units = [
        Unit("district", "D", "D", None, square),
        Unit("street", "S", "S", "D", square),
        Unit("community", "C", "C", "S", square),
        Unit("grid", "A", "circle", "C", circle),
        Unit("grid", "B", "rest", "C", square.difference(circle)),
    ]
    index = TerritoryIndex.from_units(units)
    rng = np.random.default_rng(4)
    lon = rng.uniform(113.98, 114.02, 3000)
    lat = rng.uniform(22.48, 22.52, 3000)
    batch = index.geocode_many(lon, lat)
    assert list(batch["grid_code"]) == brute_force(units, "grid", lon, lat)
    for i in range(0, 3000, 150):
        assert_same(index.geocode(float(lon[i]), float(lat[i])), batch, i)
    centre = index.geocode(114.0, 22.5)
    radius = GEOD.inv(114.0, 22.5, 114.01, 22.5)[2]
    # The polygon's chords sit a little inside the circle.
    assert radius * 0.99 < centre["boundary_distance_m"] < radius


def test_empty_index() -> None:
    index = TerritoryIndex.from_units([])
    assert len(index) == 0
    with pytest.raises(OutsideTerritory) as info:
        index.geocode(114.0, 22.5)
    assert info.value.nearest_code is None and info.value.distance_m is None
    batch = index.geocode_many(np.array([114.0, 114.1]), np.array([22.5, 22.6]))
    assert list(batch["grid_code"]) == [None, None]
    assert list(batch["snapped"]) == [False, False]
    assert index.nearest_grid(114.0, 22.5) is None
    assert index.unit("anything") is None
    empty = index.geocode_many(np.zeros(0), np.zeros(0))
    assert all(len(v) == 0 for v in empty.values())
    with pytest.raises(GeocodeError, match="lat"):
        index.geocode(114.0, 95.0)


def test_unit_lookup(lattice: list[Unit], lattice_index: TerritoryIndex) -> None:
    for unit in lattice[:: max(1, len(lattice) // 40)]:
        assert lattice_index.unit(unit.code) == UnitInfo(unit.layer, unit.code, unit.name, unit.parent_code)
    assert lattice_index.unit("nope") is None


def test_invalid_units_are_rejected(lattice: list[Unit]) -> None:
    grid = next(u for u in lattice if u.layer == "grid")
    with pytest.raises(ValueError, match="duplicate"):
        TerritoryIndex.from_units([*lattice, grid])
    with pytest.raises(ValueError, match="parent"):
        TerritoryIndex.from_units([*lattice, Unit("grid", "GX", "x", "C99", grid.geometry)])
    with pytest.raises(ValueError, match="layer"):
        TerritoryIndex.from_units([*lattice, Unit("parish", "PX", "x", None, grid.geometry)])
    with pytest.raises(ValueError, match="geometry"):
        TerritoryIndex.from_units([*lattice, Unit("grid", "GX", "x", grid.parent_code, shapely.Point(0, 0))])
    with pytest.raises(ValueError, match="geometry"):
        TerritoryIndex.from_units([*lattice, Unit("grid", "GX", "x", grid.parent_code, None)])
    with pytest.raises(ValueError, match="snap_tolerance_m"):
        TerritoryIndex.from_units(lattice, snap_tolerance_m=-1.0)


def test_locate_many_gives_geocode_many_as_positions(lattice_index: TerritoryIndex) -> None:
    rng = np.random.default_rng(11)
    # Inside, snapped just outside, far outside (unresolved), and outside every block.
    lon = np.concatenate([rng.uniform(114.0, 114.032, 500), [113.9995, 113.0, 114.016]])
    lat = np.concatenate([rng.uniform(22.5, 22.532, 500), [22.51, 22.0, 22.5321]])
    codes = lattice_index.geocode_many(lon, lat)
    found = lattice_index.locate_many(lon, lat)
    assert found["grid"].dtype == found["block"].dtype == np.int32
    for column in ("district_code", "street_code", "community_code", "grid_code", "block_code"):
        table = lattice_index.code_table(column)
        assert table[-1] is None
        positions = found["block" if column == "block_code" else "grid"]
        assert list(table[positions]) == list(codes[column])
    for key in ("near_boundary", "snapped"):
        assert np.array_equal(found[key], codes[key])
    assert np.array_equal(found["boundary_distance_m"], codes["boundary_distance_m"], equal_nan=True)
    assert (found["grid"] < 0).sum() == np.isnan(codes["boundary_distance_m"]).sum() >= 1
    assert codes["snapped"].any()
    without = lattice_index.locate_many(lon, lat, with_block=False)
    assert (without["block"] == -1).all() and np.array_equal(without["grid"], found["grid"])
    with pytest.raises(KeyError, match="unknown code column"):
        lattice_index.code_table("name")


def test_a_territory_spanning_the_globe_is_refused_with_a_clear_error() -> None:
    # Two grids half a world apart: no single local transverse Mercator can hold them.
    chain = [("district", "D", None), ("street", "S", "D"), ("community", "C", "S")]
    units = [
        Unit(layer, code, code, parent, shapely.box(-170, -10, 170, 10)) for layer, code, parent in chain
    ]
    units += [
        Unit("grid", "G1", "G1", "C", shapely.box(-170, -10, -160, 10)),
        Unit("grid", "G2", "G2", "C", shapely.box(160, -10, 170, 10)),
    ]
    with pytest.raises(ValueError, match=r"too wide for one local transverse Mercator"):
        TerritoryIndex.from_units(units)
