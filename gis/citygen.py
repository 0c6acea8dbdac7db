"""A deterministic, generated demo city in Shenzhen: districts, streets, communities, grids and blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

if TYPE_CHECKING:
    import geopandas

LAYERS: tuple[str, ...] = ("district", "street", "community", "grid", "block")
PARENT_LAYER: dict[str, str | None] = {
    "district": None,
    "street": "district",
    "community": "street",
    "grid": "community",
    "block": "community",
}

MIN_COMMUNITIES = 60
# Aiming at ~100 grids per community leaves headroom under a ~200-grid ceiling, since community areas (and
# so their area-proportional grid counts) still differ by up to about 2x after relaxation.
GRIDS_PER_COMMUNITY = 100
# Codes carry 3 digits per community inside a street and 4 per grid inside a community; this bound keeps
# both in range with the fixed street count below.
MAX_GRIDS = 500_000
_TARGET_STREETS = 28

Polygonal: TypeAlias = Polygon | MultiPolygon

# Local equirectangular frame: an affine map, so straight edges, containment and shared edges computed in
# metres survive the conversion back to lon/lat up to rounding.
_LON0 = 114.05
_LAT0 = 22.60
_M_PER_DEG_LAT = math.pi * 6_371_008.8 / 180.0
_M_PER_DEG_LON = _M_PER_DEG_LAT * math.cos(math.radians(_LAT0))

# A hand-drawn, coarse Shenzhen outline (lon, lat): Pearl River estuary in the west, the Shekou peninsula
# and Shenzhen Bay in the south-west, the Shenzhen River border with Hong Kong, Yantian on Dapeng Bay.
_OUTLINE: tuple[tuple[float, float], ...] = (
    (113.866, 22.700),
    (113.861, 22.680),
    (113.870, 22.662),
    (113.866, 22.640),
    (113.876, 22.618),
    (113.872, 22.600),
    (113.884, 22.580),
    (113.882, 22.562),
    (113.896, 22.552),
    (113.892, 22.536),
    (113.900, 22.522),
    (113.906, 22.506),
    (113.918, 22.500),
    (113.930, 22.504),
    (113.934, 22.516),
    (113.946, 22.522),
    (113.958, 22.532),
    (113.972, 22.536),
    (113.988, 22.530),
    (114.004, 22.522),
    (114.018, 22.512),
    (114.034, 22.516),
    (114.052, 22.506),
    (114.070, 22.516),
    (114.088, 22.530),
    (114.104, 22.534),
    (114.120, 22.542),
    (114.138, 22.540),
    (114.156, 22.548),
    (114.176, 22.552),
    (114.198, 22.546),
    (114.214, 22.556),
    (114.226, 22.568),
    (114.240, 22.566),
    (114.254, 22.580),
    (114.262, 22.598),
    (114.250, 22.612),
    (114.258, 22.632),
    (114.248, 22.652),
    (114.254, 22.676),
    (114.238, 22.692),
    (114.214, 22.700),
    (114.190, 22.688),
    (114.168, 22.694),
    (114.142, 22.684),
    (114.120, 22.698),
    (114.096, 22.692),
    (114.074, 22.704),
    (114.048, 22.702),
    (114.030, 22.690),
    (114.006, 22.698),
    (113.982, 22.688),
    (113.960, 22.696),
    (113.936, 22.704),
    (113.912, 22.694),
    (113.888, 22.704),
)


@dataclass(frozen=True)
class _DistrictSpec:
    code: str
    name: str
    anchor: tuple[float, float]
    streets: tuple[str, ...]


# Real GB/T 2260 codes and names; anchors approximate each district's position; streets are real 街道 names.
_DISTRICTS: tuple[_DistrictSpec, ...] = (
    _DistrictSpec(
        "440303",
        "罗湖区",
        (114.125, 22.572),
        ("桂园", "黄贝", "东门", "翠竹", "笋岗", "南湖", "东湖", "莲塘", "东晓", "清水河"),
    ),
    _DistrictSpec(
        "440304",
        "福田区",
        (114.045, 22.548),
        ("园岭", "南园", "福田", "沙头", "香蜜湖", "梅林", "莲花", "华富", "福保", "华强北"),
    ),
    _DistrictSpec(
        "440305",
        "南山区",
        (113.945, 22.548),
        ("南头", "南山", "沙河", "蛇口", "招商", "粤海", "桃源", "西丽"),
    ),
    _DistrictSpec(
        "440306",
        "宝安区",
        (113.900, 22.640),
        ("新安", "西乡", "航城", "福永", "福海", "沙井", "新桥", "松岗", "燕罗", "石岩"),
    ),
    _DistrictSpec(
        "440307",
        "龙岗区",
        (114.175, 22.655),
        ("平湖", "坂田", "布吉", "南湾", "横岗", "龙城", "龙岗", "坪地", "吉华", "宝龙", "园山"),
    ),
    _DistrictSpec("440308", "盐田区", (114.232, 22.590), ("梅沙", "盐田", "沙头角", "海山")),
    _DistrictSpec("440309", "龙华区", (114.030, 22.655), ("观湖", "民治", "龙华", "大浪", "福城", "观澜")),
)

# Community names are two characters drawn from these lists (a third, directional one when the city needs
# more names than pairs exist), which reads like the real 景田/莲花/香蜜 style.
_NAME_FIRST = "景莲香华梅福新安宝龙翠桂松竹金银东西南北上下大长青兴和平富康泰荔桃湖海沙石岭春秀丽锦鹏滨云凤鸿"
_NAME_SECOND = "田花林园湖村岭山坑围塘湾苑庭城岗头洲峰景福华新美安宁兴丰盛源溪河桥岸口坊里坪"
_NAME_THIRD = "东西南北中新"

# Salts keep each random stream independent, so one layer's draws never shift another layer's.
_SALT_OUTLINE = 1
_SALT_DISTRICT = 2
_SALT_STREET = 3
_SALT_COMMUNITY = 4
_SALT_GRID = 5
_SALT_BLOCK = 6
_SALT_NAMES = 7

# Lloyd relaxation evens out cell sizes like real administrative units; the few large units can afford many
# rounds, the many small ones get just enough to lose the raw-Voronoi look.
_LLOYD_COARSE = 12
_LLOYD_FINE = 2

_DRIVER_SUFFIX: dict[str, str] = {
    "GeoJSON": ".geojson",
    "GeoJSONSeq": ".geojsonl",
    "GPKG": ".gpkg",
    "FlatGeobuf": ".fgb",
    "ESRI Shapefile": ".shp",
}


@dataclass(frozen=True)
class Unit:
    """One territory polygon of one layer, in WGS-84 lon/lat."""

    layer: str
    code: str
    name: str
    parent_code: str | None
    geometry: Polygonal


@dataclass(frozen=True)
class City:
    """A generated city: every unit of every layer, ordered by layer then code."""

    seed: int
    units: tuple[Unit, ...]

    def layer(self, name: str) -> list[Unit]:
        """Return the units of one layer, ordered by code."""
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; expected one of {LAYERS}")
        return [unit for unit in self.units if unit.layer == name]

    def to_geodataframe(self, layer: str) -> geopandas.GeoDataFrame:
        """Return one layer as a GeoDataFrame (code, name, parent_code, geometry) in EPSG:4326."""
        import geopandas

        units = self.layer(layer)
        return geopandas.GeoDataFrame(
            {
                "code": [u.code for u in units],
                "name": [u.name for u in units],
                "parent_code": _object_column([u.parent_code for u in units]),
            },
            geometry=[u.geometry for u in units],
            crs="EPSG:4326",
        )


def _object_column(values: list[str | None]) -> Any:
    """Return values as an object column so an all-None parent_code (districts) stays a null string field."""
    import pandas as pd

    return pd.Series(values, dtype=object)


def generate_city(*, seed: int = 2026, grids: int = 2000, blocks: int | None = None) -> City:
    """Generate the demo city deterministically from seed, with exactly `grids` grids and `blocks` blocks."""
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if blocks is None:
        blocks = max(500, grids // 4)
    n_communities = max(MIN_COMMUNITIES, math.ceil(grids / GRIDS_PER_COMMUNITY))
    if not n_communities <= grids <= MAX_GRIDS:
        raise ValueError(f"grids must be between {MIN_COMMUNITIES} and {MAX_GRIDS}")
    if blocks < n_communities:
        raise ValueError(f"blocks must be at least the number of communities ({n_communities})")

    outline = _outline(seed)
    units: list[_LocalUnit] = []

    districts = _make_districts(outline, seed)
    units.extend(districts)

    district_areas = [d.geometry.area for d in districts]
    streets_per_district = [
        min(len(spec.streets), max(2, round(_TARGET_STREETS * area / sum(district_areas))))
        for spec, area in zip(_DISTRICTS, district_areas, strict=True)
    ]
    streets: list[_LocalUnit] = []
    for d_index, (district, spec, count) in enumerate(
        zip(districts, _DISTRICTS, streets_per_district, strict=True)
    ):
        cells = _partition(district.geometry, count, _rng(seed, _SALT_STREET, d_index), _LLOYD_COARSE)
        for k, cell in enumerate(cells, start=1):
            streets.append(
                _LocalUnit(
                    "street", f"{district.code}{k:03d}", f"{spec.streets[k - 1]}街道", district.code, cell
                )
            )
    units.extend(streets)

    community_counts = _allocate(n_communities, [s.geometry.area for s in streets])
    if max(community_counts) > 999:
        raise ValueError("too many communities per street for 3-digit community codes")
    community_names = _community_names(n_communities, seed)
    communities: list[_LocalUnit] = []
    for s_index, (street, count) in enumerate(zip(streets, community_counts, strict=True)):
        cells = _partition(street.geometry, count, _rng(seed, _SALT_COMMUNITY, s_index), _LLOYD_COARSE)
        for k, cell in enumerate(cells, start=1):
            name = community_names[len(communities)]
            communities.append(_LocalUnit("community", f"{street.code}{k:03d}", name, street.code, cell))
    units.extend(communities)

    areas = [c.geometry.area for c in communities]
    grid_counts = _allocate(grids, areas)
    block_counts = _allocate(blocks, areas)
    if max(grid_counts) > 9999:
        raise ValueError("too many grids per community for 4-digit grid codes")
    block_width = max(3, len(str(max(block_counts))))
    for c_index, community in enumerate(communities):
        cells = _partition(
            community.geometry, grid_counts[c_index], _rng(seed, _SALT_GRID, c_index), _LLOYD_FINE
        )
        for k, cell in enumerate(cells, start=1):
            units.append(
                _LocalUnit(
                    "grid", f"{community.code}{k:04d}", f"{community.name}第{k}网格", community.code, cell
                )
            )
        cells = _partition(
            community.geometry, block_counts[c_index], _rng(seed, _SALT_BLOCK, c_index), _LLOYD_FINE
        )
        for k, cell in enumerate(cells, start=1):
            units.append(
                _LocalUnit(
                    "block",
                    f"{community.code}B{k:0{block_width}d}",
                    f"{community.name}{k}号街区",
                    community.code,
                    cell,
                )
            )

    return City(seed=seed, units=_to_wgs84(units))


def write_layers(city: City, directory: Path, *, driver: str = "GeoJSON") -> dict[str, Path]:
    """Write one file per layer (fields code, name, parent_code) into directory; return layer -> path."""
    import pyogrio

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = _DRIVER_SUFFIX.get(driver, f".{driver.lower()}")
    paths: dict[str, Path] = {}
    for layer in LAYERS:
        path = directory / f"{layer}{suffix}"
        # Some drivers refuse to overwrite, and a stale file would break byte-for-byte reproducibility.
        path.unlink(missing_ok=True)
        pyogrio.write_dataframe(city.to_geodataframe(layer), path, layer=layer, driver=driver)
        paths[layer] = path
    return paths


@dataclass(frozen=True)
class _LocalUnit:
    layer: str
    code: str
    name: str
    parent_code: str | None
    geometry: Polygonal  # local metres


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _outline(seed: int) -> Polygon:
    """The city outline in local metres, with a seeded fractal wiggle so coasts and borders look drawn."""
    base = _to_local_array(np.array(_OUTLINE, dtype=float))
    rng = _rng(seed, _SALT_OUTLINE)
    ring = base
    for _ in range(3):
        nxt = np.roll(ring, -1, axis=0)
        mid = (ring + nxt) / 2.0
        seg = nxt - ring
        normal = np.column_stack([-seg[:, 1], seg[:, 0]])
        # Displacing midpoints by at most a small fraction of the segment length cannot fold the ring here.
        mid = mid + normal * rng.uniform(-0.12, 0.12, size=(len(ring), 1))
        ring = np.stack([ring, mid], axis=1).reshape(-1, 2)
    poly = Polygon(ring)
    if not poly.is_valid:
        poly = Polygon(base)
    return poly


def _make_districts(outline: Polygon, seed: int) -> list[_LocalUnit]:
    rng = _rng(seed, _SALT_DISTRICT)
    base = _to_local_array(np.array([spec.anchor for spec in _DISTRICTS], dtype=float))
    # A little seeded jitter moves the district borders between seeds while keeping the real layout.
    anchors = base + rng.uniform(-800.0, 800.0, size=base.shape)
    outside = ~shapely.contains_xy(outline, anchors[:, 0], anchors[:, 1])
    anchors[outside] = base[outside]
    cells = _absorb_fragments(_clip_cells(anchors, outline), anchors)
    return [
        _LocalUnit("district", spec.code, spec.name, None, cell)
        for spec, cell in zip(_DISTRICTS, cells, strict=True)
    ]


def _partition(parent: Polygonal, n: int, rng: np.random.Generator, lloyd: int) -> list[Polygonal]:
    """Split parent into n Lloyd-relaxed Voronoi cells that tile it, ordered like reading a map."""
    if n == 1:
        return [parent]
    points = _sample_points(parent, n, rng)
    for _ in range(lloyd):
        points = _cell_centres(_clip_cells(points, parent))
    return _reading_order(_absorb_fragments(_clip_cells(points, parent), points), parent)


def _sample_points(parent: Polygonal, n: int, rng: np.random.Generator) -> np.ndarray:
    minx, miny, maxx, maxy = parent.bounds
    shapely.prepare(parent)
    chunks: list[np.ndarray] = []
    found = 0
    while found < n:
        batch = max(64, 2 * (n - found))
        xy = rng.uniform((minx, miny), (maxx, maxy), size=(batch, 2))
        # Strictly interior points make every clipped cell contain its own seed, hence never empty.
        keep = shapely.contains_properly(parent, shapely.points(xy))
        chunks.append(xy[keep])
        found += int(keep.sum())
    return np.concatenate(chunks)[:n]


def _clip_cells(points: np.ndarray, parent: Polygonal) -> np.ndarray:
    minx, miny, maxx, maxy = parent.bounds
    pad = max(maxx - minx, maxy - miny)
    frame = shapely.box(minx - pad, miny - pad, maxx + pad, maxy + pad)
    diagram = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=frame, ordered=True)
    cells = shapely.get_parts(diagram)
    if len(cells) != len(points):
        raise RuntimeError("coincident Voronoi seeds")  # practically impossible with continuous draws
    return shapely.intersection(cells, parent)


def _cell_centres(cells: np.ndarray) -> np.ndarray:
    centres = shapely.centroid(cells)
    # A clipped cell can be concave, and its centroid may fall outside it; fall back to an interior point.
    outside = ~shapely.contains_properly(cells, centres)
    if outside.any():
        centres[outside] = shapely.point_on_surface(cells[outside])
    return shapely.get_coordinates(centres)


def _absorb_fragments(cells: np.ndarray, points: np.ndarray) -> list[Polygonal]:
    """Hand detached pieces of a clipped cell to the neighbour sharing the longest border with them.

    Clipping a convex Voronoi cell to a concave parent can split it; real territory units are contiguous,
    so each stray piece joins an adjacent cell instead, which keeps the tiling exact.
    """
    seeds = shapely.points(points)
    mains: list[Polygonal] = []
    strays: list[tuple[int, Polygon]] = []
    for i, cell in enumerate(cells):
        if isinstance(cell, Polygon):
            mains.append(cell)
            continue
        parts = list(shapely.get_parts(cell))
        home = next((p for p in parts if p.intersects(seeds[i])), max(parts, key=lambda p: p.area))
        mains.append(home)
        strays.extend((i, p) for p in parts if p is not home)
    if not strays:
        return mains

    tree = shapely.STRtree(mains)
    extra: list[list[Polygon]] = [[] for _ in mains]
    for owner, piece in strays:
        best, best_len = owner, 0.0
        for j in sorted(int(j) for j in tree.query(piece, predicate="intersects")):
            if j == owner:
                continue
            shared = piece.boundary.intersection(mains[j].boundary).length
            if shared > best_len:
                best, best_len = j, shared
        extra[best].append(piece)

    result: list[Polygonal] = []
    for main, pieces in zip(mains, extra, strict=True):
        if not pieces:
            result.append(main)
            continue
        merged = shapely.union_all([main, *pieces])
        result.append(_as_polygonal(merged))
    return result


def _as_polygonal(geom: shapely.Geometry) -> Polygonal:
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    polys = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _reading_order(cells: Sequence[Polygonal], parent: Polygonal) -> list[Polygonal]:
    """Order cells north-to-south in bands, alternating direction, so consecutive numbers are neighbours."""
    anchors = shapely.get_coordinates(shapely.point_on_surface(np.asarray(cells, dtype=object)))
    band = math.sqrt(parent.area / len(cells))
    top = parent.bounds[3]
    keys = []
    for i, (x, y) in enumerate(anchors):
        row = int((top - y) // band)
        keys.append((row, x if row % 2 == 0 else -x, i))
    return [cells[i] for *_, i in sorted(keys)]


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split total into len(weights) integers ≥ 1 proportional to weights (largest remainder)."""
    k = len(weights)
    spare = total - k
    if spare < 0:
        raise ValueError(f"cannot give {k} units at least one each out of {total}")
    w = np.asarray(weights, dtype=float)
    share = spare * w / w.sum()
    counts = np.floor(share).astype(int)
    left = spare - int(counts.sum())
    # Stable tie-break by index keeps the allocation identical run to run.
    order = sorted(range(k), key=lambda i: (-(share[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return [int(c) + 1 for c in counts]


def _community_names(n: int, seed: int) -> list[str]:
    pairs = [a + b for a in _NAME_FIRST for b in _NAME_SECOND if a != b]
    if n > len(pairs):
        pairs = pairs + [p + c for c in _NAME_THIRD for p in pairs]
    if n > len(pairs):
        raise ValueError("not enough distinct community names")
    order = _rng(seed, _SALT_NAMES).permutation(len(pairs))
    return [pairs[i] + "社区" for i in order[:n]]


def _to_local_array(lonlat: np.ndarray) -> np.ndarray:
    return np.column_stack([(lonlat[:, 0] - _LON0) * _M_PER_DEG_LON, (lonlat[:, 1] - _LAT0) * _M_PER_DEG_LAT])


def _to_lonlat_array(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([xy[:, 0] / _M_PER_DEG_LON + _LON0, xy[:, 1] / _M_PER_DEG_LAT + _LAT0])


def _to_wgs84(units: list[_LocalUnit]) -> tuple[Unit, ...]:
    geoms = shapely.transform(np.array([u.geometry for u in units], dtype=object), _to_lonlat_array)
    out = [Unit(u.layer, u.code, u.name, u.parent_code, g) for u, g in zip(units, geoms, strict=True)]
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    out.sort(key=lambda u: (rank[u.layer], u.code))
    return tuple(out)
