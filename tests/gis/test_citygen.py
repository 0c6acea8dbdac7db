"""Properties of the generated demo city: counts, nested codes, exact tiling, validity, determinism, I/O."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import geopandas
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon

from gis.citygen import LAYERS, City, Unit, _partition, generate_city, write_layers

REL_TOL = 1e-9
# Shenzhen, with a little slack for the seeded coastline wiggle.
LON_RANGE = (113.83, 114.28)
LAT_RANGE = (22.48, 22.72)
REAL_DISTRICTS = {
    "440303": "罗湖区",
    "440304": "福田区",
    "440305": "南山区",
    "440306": "宝安区",
    "440307": "龙岗区",
    "440308": "盐田区",
    "440309": "龙华区",
}
PARENT_LAYER: dict[str, str | None] = {
    "district": None,
    "street": "district",
    "community": "street",
    "grid": "community",
    "block": "community",
}
CODE_SUFFIX = {
    "street": re.compile(r"\d{3}"),
    "community": re.compile(r"\d{3}"),
    "grid": re.compile(r"\d{4}"),
    "block": re.compile(r"B\d{3,}"),
}


@pytest.fixture(scope="module")
def city() -> City:
    return generate_city()


def _geoms(units: list[Unit]) -> np.ndarray:
    return np.array([u.geometry for u in units], dtype=object)


def _fingerprint(city: City) -> list[tuple[str, str, str, str | None, bytes]]:
    return [(u.layer, u.code, u.name, u.parent_code, shapely.to_wkb(u.geometry)) for u in city.units]


def assert_structure(city: City, grids: int, blocks: int) -> None:
    """Counts, ordering, unique nested codes and parents that exist in the layer above."""
    counts = Counter(u.layer for u in city.units)
    assert counts["district"] >= 4
    assert counts["street"] >= 12
    assert counts["community"] >= 60
    assert counts["grid"] == grids
    assert counts["block"] == blocks
    assert set(counts) == set(LAYERS)

    rank = {layer: i for i, layer in enumerate(LAYERS)}
    keys = [(rank[u.layer], u.code) for u in city.units]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)

    by_code = {(u.layer, u.code): u for u in city.units}
    for unit in city.units:
        parent_layer = PARENT_LAYER[unit.layer]
        if parent_layer is None:
            assert unit.parent_code is None
            assert REAL_DISTRICTS[unit.code] == unit.name
            continue
        assert unit.parent_code is not None
        assert (parent_layer, unit.parent_code) in by_code
        assert unit.code.startswith(unit.parent_code)
        assert CODE_SUFFIX[unit.layer].fullmatch(unit.code[len(unit.parent_code) :])

    # Sortable codes: every block code in the city has one width.
    assert len({len(u.code) for u in city.layer("block")}) == 1


def assert_geometry(city: City) -> None:
    """Valid, non-empty, polygonal, inside Shenzhen, and each has an interior representative point."""
    geoms = _geoms(list(city.units))
    assert shapely.is_valid(geoms).all()
    assert not shapely.is_empty(geoms).any()
    assert all(isinstance(g, Polygon | MultiPolygon) for g in geoms)
    assert (shapely.area(geoms) > 0).all()
    assert shapely.contains_properly(geoms, shapely.point_on_surface(geoms)).all()
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    assert LON_RANGE[0] < minx < maxx < LON_RANGE[1]
    assert LAT_RANGE[0] < miny < maxy < LAT_RANGE[1]


def assert_no_overlaps(units: list[Unit]) -> None:
    """No two units of one layer overlap by more than rounding noise."""
    geoms = _geoms(units)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    overlap = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    smaller = np.minimum(shapely.area(geoms[left]), shapely.area(geoms[right]))
    assert (overlap <= REL_TOL * smaller).all()


def assert_tiles(city: City, layer: str) -> None:
    """Each child lies in its parent, and the children of each parent cover it with no gaps or overlaps."""
    parent_layer = PARENT_LAYER[layer]
    assert parent_layer is not None
    parents = {u.code: u.geometry for u in city.layer(parent_layer)}
    children = city.layer(layer)
    child_geoms = _geoms(children)
    parent_geoms = np.array([parents[u.parent_code] for u in children if u.parent_code], dtype=object)
    outside = shapely.area(shapely.difference(child_geoms, parent_geoms))
    assert (outside <= REL_TOL * shapely.area(child_geoms)).all()

    siblings: dict[str, list[Polygon | MultiPolygon]] = defaultdict(list)
    for unit in children:
        assert unit.parent_code is not None
        siblings[unit.parent_code].append(unit.geometry)
    assert set(siblings) == set(parents), "every parent has children"
    for code, parts in siblings.items():
        parent = parents[code]
        union = shapely.union_all(parts)
        assert abs(union.area - parent.area) <= REL_TOL * parent.area
        assert abs(sum(p.area for p in parts) - parent.area) <= REL_TOL * parent.area
        assert shapely.symmetric_difference(union, parent).area <= REL_TOL * parent.area
    assert_no_overlaps(children)


def assert_all_tiling(city: City) -> None:
    districts = city.layer("district")
    assert_no_overlaps(districts)
    outline = shapely.union_all(_geoms(districts))
    assert isinstance(outline, Polygon)
    # Not a rectangle: a coastline and a bay leave much of the bounding box empty.
    assert outline.area < 0.9 * outline.envelope.area
    assert len(outline.exterior.coords) > 100
    for layer in LAYERS[1:]:
        assert_tiles(city, layer)


def test_default_counts_and_codes(city: City) -> None:
    assert city.seed == 2026
    assert_structure(city, grids=2000, blocks=500)


def test_default_names(city: City) -> None:
    by_code = {u.code: u for u in city.units}
    streets = city.layer("street")
    communities = city.layer("community")
    assert all(u.name.endswith("街道") for u in streets)
    assert all(u.name.endswith("社区") for u in communities)
    assert len({u.name for u in streets}) == len(streets)
    assert len({u.name for u in communities}) == len(communities)
    for grid in city.layer("grid"):
        assert grid.parent_code is not None
        assert grid.name == f"{by_code[grid.parent_code].name}第{int(grid.code[-4:])}网格"
    for block in city.layer("block"):
        assert block.parent_code is not None
        number = int(block.code.rsplit("B", 1)[1])
        assert block.name == f"{by_code[block.parent_code].name}{number}号街区"


def test_default_geometry(city: City) -> None:
    assert_geometry(city)
    polygons = sum(isinstance(u.geometry, Polygon) for u in city.units)
    assert polygons >= 0.99 * len(city.units)


def test_default_tiling(city: City) -> None:
    assert_all_tiling(city)


def test_grids_cover_the_city(city: City) -> None:
    districts = shapely.union_all(_geoms(city.layer("district")))
    for layer in ("grid", "block"):
        area = shapely.area(_geoms(city.layer(layer))).sum()
        assert abs(area - districts.area) <= REL_TOL * districts.area


def test_layer_and_geodataframe(city: City) -> None:
    gdf = city.to_geodataframe("community")
    assert list(gdf.columns) == ["code", "name", "parent_code", "geometry"]
    assert gdf.crs is not None and gdf.crs.to_epsg() == 4326
    assert list(gdf["code"]) == [u.code for u in city.layer("community")]
    assert city.to_geodataframe("district")["parent_code"].isna().all()
    with pytest.raises(ValueError):
        city.layer("province")


def test_deterministic_and_seed_dependent(city: City, tmp_path: Path) -> None:
    again = generate_city(seed=2026)
    assert _fingerprint(again) == _fingerprint(city)
    first = write_layers(city, tmp_path / "a")
    second = write_layers(again, tmp_path / "b")
    assert list(first) == list(LAYERS)
    for layer in LAYERS:
        assert first[layer].read_bytes() == second[layer].read_bytes()

    other = generate_city(seed=2027)
    assert _fingerprint(other) != _fingerprint(city)
    # Differences reach the geometry of every layer, not just names.
    for layer in LAYERS:
        a = [shapely.to_wkb(u.geometry) for u in city.layer(layer)]
        b = [shapely.to_wkb(u.geometry) for u in other.layer(layer)]
        assert a != b


def test_write_layers_round_trip(city: City, tmp_path: Path) -> None:
    paths = write_layers(city, tmp_path)
    # Writing again over existing files still works and gives the same bytes.
    before = {layer: path.read_bytes() for layer, path in paths.items()}
    assert write_layers(city, tmp_path) == paths
    assert {layer: path.read_bytes() for layer, path in paths.items()} == before

    for layer, path in paths.items():
        assert path.exists() and path.parent == tmp_path
        gdf = geopandas.read_file(path)
        units = city.layer(layer)
        assert gdf.crs is not None and gdf.crs.to_epsg() == 4326
        assert {"code", "name", "parent_code"} <= set(gdf.columns)
        assert list(gdf["code"]) == [u.code for u in units]
        assert list(gdf["name"]) == [u.name for u in units]
        if layer == "district":
            assert gdf["parent_code"].isna().all()
        else:
            assert list(gdf["parent_code"]) == [u.parent_code for u in units]
        read = gdf.geometry.to_numpy()
        assert shapely.equals_exact(read, _geoms(units), tolerance=1e-12).all()


def test_many_grids_scale_communities() -> None:
    city = generate_city(seed=5, grids=20_000)
    communities = city.layer("community")
    assert len(communities) >= 150
    per_community = Counter(u.parent_code for u in city.layer("grid"))
    assert sum(per_community.values()) == 20_000
    assert max(per_community.values()) <= 200
    assert len(city.layer("block")) == 5000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grids": 59},
        {"grids": 10_000_000},
        {"seed": -1},
        {"grids": 200, "blocks": 10},
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate_city(**kwargs)


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    grids=st.integers(min_value=60, max_value=400),
    blocks=st.none() | st.integers(min_value=60, max_value=1500),
)
def test_invariants_hold_for_any_seed(seed: int, grids: int, blocks: int | None) -> None:
    city = generate_city(seed=seed, grids=grids, blocks=blocks)
    assert_structure(city, grids=grids, blocks=500 if blocks is None else blocks)
    assert_geometry(city)
    assert_all_tiling(city)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), n=st.integers(min_value=2, max_value=80))
def test_partition_of_a_concave_parent_tiles_it(seed: int, n: int) -> None:
    # A U shape makes clipped Voronoi cells split across the gap, exercising the fragment hand-over.
    parent = shapely.difference(shapely.box(0, 0, 1000, 1000), shapely.box(100, 100, 900, 1000))
    cells = _partition(parent, n, np.random.default_rng(seed), 2)
    assert len(cells) == n
    geoms = np.array(cells, dtype=object)
    assert shapely.is_valid(geoms).all()
    assert (shapely.area(geoms) > 0).all()
    assert abs(shapely.area(geoms).sum() - parent.area) <= REL_TOL * parent.area
    assert shapely.symmetric_difference(shapely.union_all(geoms), parent).area <= REL_TOL * parent.area
    assert all(isinstance(g, Polygon) for g in cells)
