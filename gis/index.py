"""In-memory territory index and point geocoder (pure Python + numpy/shapely/pyproj, no Django).

The index answers "which grid (and so which community, street and district) and which block is this
WGS-84 point in, and how far is it from its grid's boundary" for one point (`TerritoryIndex.geocode`,
a few microseconds) or for arrays of points (`TerritoryIndex.geocode_many`, vectorised, chunked).

Rules
-----
* Containment is planar in WGS-84 lon/lat, the frame the polygons are stored in, and exact: a polygon
  holds a point when it *covers* it (interior or boundary). Doubtful cases are settled by GEOS's robust
  predicates; the vectorised test trusts a float sign only when it is provably right.
* Ties: a point covered by several grids (on a shared edge or vertex, or where bad data overlaps) belongs
  to the grid with the smallest code (plain ``str`` order). Blocks follow the same rule.
* Ancestors (community, street, district) come from the grid's parent codes, never from polygon queries.
* Distances are metres on a transverse Mercator centred on the territory (WGS-84 ellipsoid, via pyproj),
  evaluated by a polynomial fitted at build time (residual ≤ 1 mm against pyproj, checked at build) and
  divided by the projection's point scale; over a 200 km territory they agree with ``pyproj.Geod`` to
  better than 0.01 %. Far outside that box (only for `OutsideTerritory` and `nearest_grid`) the nearest
  grid is found in degrees and its distance is the geodesic one to that grid's closest point.
* ``boundary_distance_m`` is the distance from the point to its grid's boundary (0 on an edge); for a
  snapped point it is the distance to the grid it snapped to. ``near_boundary`` is
  ``boundary_distance_m <= near_boundary_m`` on the rounded value.
* A point covered by no grid snaps to the nearest grid (ties: smallest code) when that grid is at most
  ``snap_tolerance_m`` away (``snapped: True``); farther, `geocode` raises `OutsideTerritory` naming the
  nearest grid, and `geocode_many` leaves every code of that point missing.
* Blocks never snap: the block is the one covering the raw point (ties: smallest code) or None, also for
  snapped points. Unresolved points in `geocode_many` get no block either.
* Rounding: ``lon``/``lat`` to 7 decimals, distances to 0.01 m (half up), identically in both APIs.
* `geocode_many` returns object arrays of codes with ``None`` for missing, and ``boundary_distance_m`` is
  NaN where the point is unresolved. `locate_many` returns the same answer with int32 grid and block
  positions instead of codes (-1 = missing), for callers that map them through `code_table` themselves
  (the batch geocoder does so in Arrow, without a Python object per code).
* Non-numeric, non-finite or out-of-range coordinates raise `GeocodeError` naming the field (and, for
  arrays, the first bad index).

How it is fast
--------------
Grids and blocks each get a uniform lon/lat raster (~24 cells per polygon). A cell that no edge comes
near is "pure" and stores its polygon: a point there is answered by one array lookup. A cell crossed by
a single segment (no vertex) stores which polygon lies on each side: one orientation test. Other cells
list the polygons whose edges touch them; points there get an even-odd test (numpy, edges packed in
rows of 8). Float signs are trusted only beyond Shewchuk's error bound; anything closer (points on or
within rounding of an edge) goes to GEOS. Boundary distances use each grid's projected edges in the
same row layout. The scalar path does the same float operations as the vectorised one, so `geocode`
and `geocode_many` agree exactly.
"""

from __future__ import annotations

import gc
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
import pyproj
import shapely

__all__ = [
    "LAYERS",
    "GeocodeError",
    "OutsideTerritory",
    "TerritoryIndex",
    "UnitInfo",
    "UnitLike",
]

LAYERS: tuple[str, ...] = ("district", "street", "community", "grid", "block")
_PARENT_LAYER: dict[str, str | None] = {
    "district": None,
    "street": "district",
    "community": "street",
    "grid": "community",
    "block": "community",
}

# Points per vectorised chunk: big enough to amortise numpy call overhead, small enough that the
# per-chunk temporaries stay in cache and memory stays bounded whatever the input size.
_CHUNK = 32_768
# Raster cells per polygon: finer rasters resolve more points by pure lookup but cost memory and build.
_CELLS_PER_GRID = 24.0
_CELLS_PER_BLOCK = 24.0
_MAX_CELLS = 12_000_000
# Edges per batch when rasterising them, which bounds the build's temporary memory.
_BUILD_BATCH = 65_536
# Safety margin (in cell widths) around every edge when deciding that a cell is crossed by no edge;
# it dwarfs the ~1e-13 rounding of cell coordinates, so a point never lands in a "pure" cell it is
# not strictly inside of.
_CELL_EPS = 1e-7
# Far above Shewchuk's 3.3e-16 bound for a 2x2 orientation determinant (see _pip_rows): signs
# of smaller determinants are left to GEOS.
_ORIENT_EPS = 1e-15
_FIT_TOLERANCE_M = 1e-3
# Snap candidates this close to the nearest distance count as tied (then the smallest code wins): a
# shared vertex reached through two grids' edges differs by rounding only.
_TIE_M = 1e-3
_PAD_FAR = 1e12
_INT_MAX = np.iinfo(np.int32).max
_UNIT_FIELDS = attrgetter("layer", "code", "name", "parent_code", "geometry")


class GeocodeError(ValueError):
    """A point could not be geocoded (bad input, or outside the territory)."""


class OutsideTerritory(GeocodeError):
    """The point is farther than the snap tolerance from every grid."""

    def __init__(
        self,
        message: str,
        *,
        nearest_code: str | None = None,
        nearest_name: str | None = None,
        distance_m: float | None = None,
    ) -> None:
        super().__init__(message)
        self.nearest_code = nearest_code
        self.nearest_name = nearest_name
        self.distance_m = distance_m


class UnitLike(Protocol):
    """Anything with the attributes of `gis.citygen.Unit` (geometry: WGS-84 Polygon/MultiPolygon)."""

    @property
    def layer(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def parent_code(self) -> str | None: ...
    @property
    def geometry(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """Identity of one territory unit, without its geometry."""

    layer: str
    code: str
    name: str
    parent_code: str | None


def _round2(value: float) -> float:
    """Round half up to 0.01, with the same float operations as `_round2_array`."""
    return math.floor(value * 100.0 + 0.5) / 100.0


def _round2_array(values: np.ndarray) -> np.ndarray:
    """Vectorised `_round2` (numpy's round uses a different rounding rule)."""
    return np.floor(values * 100.0 + 0.5) / 100.0


def _check_scalar(value: object, field: str, limit: float) -> float:
    """Return value as a float in [-limit, limit] or raise GeocodeError naming the field."""
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise GeocodeError(f"{field} must be a number, got {type(value).__name__}")
        value = float(value)
    if not -limit <= value <= limit:  # also rejects NaN
        raise GeocodeError(f"{field} must be a finite number in [-{limit:g}, {limit:g}], got {value!r}")
    return value


def _check_array(values: Any, field: str, limit: float) -> np.ndarray:
    """Return values as a 1-D float64 array in [-limit, limit] or raise GeocodeError naming the field."""
    raw = np.asarray(values)
    numeric_objects = raw.dtype.kind == "O" and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in raw.flat
    )
    if raw.dtype.kind not in "iuf" and not numeric_objects:
        raise GeocodeError(f"{field} must be an array of numbers, got dtype {raw.dtype}")
    if raw.ndim != 1:
        raise GeocodeError(f"{field} must be one-dimensional, got shape {raw.shape}")
    arr = raw.astype(np.float64, copy=False)
    bad = ~((arr >= -limit) & (arr <= limit))
    if bad.any():
        i = int(np.argmax(bad))
        raise GeocodeError(f"{field}[{i}] must be a finite number in [-{limit:g}, {limit:g}], got {arr[i]!r}")
    return arr


def _check_geometries(layer: str, codes: list[str], geoms: np.ndarray) -> None:
    """Raise ValueError unless every geometry is a non-empty Polygon or MultiPolygon."""
    try:
        ok = np.isin(shapely.get_type_id(geoms), (3, 6)) & ~shapely.is_empty(geoms)
    except TypeError:
        ok = np.array([isinstance(g, shapely.Polygon | shapely.MultiPolygon) for g in geoms], dtype=bool)
        ok[ok] = ~shapely.is_empty(geoms[ok])
    if not ok.all():
        bad = int(np.argmin(ok))
        raise ValueError(f"{layer} {codes[bad]!r}: geometry must be a non-empty Polygon or MultiPolygon")


def _compile_poly(degree: int, terms: list[tuple[int, int]], coefs: np.ndarray) -> Callable[[Any, Any], Any]:
    """Compile sum(c_ij u^i v^j) as one nested Horner expression.

    A single compiled expression runs without an interpreter loop on floats (the scalar path) and, as
    is, on numpy arrays, with the same float operations in the same order, so both paths agree bit
    for bit.
    """
    table = dict(zip(terms, (float(c) for c in coefs), strict=True))
    expr = ""
    for i in range(degree, -1, -1):
        inner = ""
        for j in range(degree - i, -1, -1):
            inner = repr(table[(i, j)]) if not inner else f"({inner}) * v + {table[(i, j)]!r}"
        expr = inner if not expr else f"({expr}) * u + ({inner})"
    return cast(Callable[[Any, Any], Any], eval(compile(f"lambda u, v: {expr}", "<tmerc-fit>", "eval")))


class _LocalFrame:
    """Transverse Mercator centred on the territory, evaluated by a polynomial fitted to pyproj."""

    def __init__(self, minx: float, miny: float, maxx: float, maxy: float, margin_m: float) -> None:
        self.lon0 = (minx + maxx) / 2.0
        self.lat0 = (miny + maxy) / 2.0
        lat_margin = margin_m / 110_000.0
        lon_margin = lat_margin / max(math.cos(math.radians(self.lat0)), 1e-3)
        self.half_lon = max((maxx - minx) / 2.0 + lon_margin, 1e-4)
        self.half_lat = max((maxy - miny) / 2.0 + lat_margin, 1e-4)
        self.su = 1.0 / self.half_lon
        self.sv = 1.0 / self.half_lat
        tmerc = (
            f"+proj=tmerc +lat_0={self.lat0!r} +lon_0={self.lon0!r} +k=1 +x_0=0 +y_0=0 "
            "+ellps=WGS84 +units=m +no_defs"
        )
        self._transformer = pyproj.Transformer.from_crs("EPSG:4326", tmerc, always_xy=True)
        geod = pyproj.Geod(ellps="WGS84")
        # TM point scale is 1 + x^2 / (2 rho nu) to second order; dividing by it makes short distances
        # true to ~1e-8 across the territory instead of ~1e-4 at 100 km from the central meridian.
        a, f = geod.a, geod.f
        e2 = f * (2.0 - f)
        s2 = math.sin(math.radians(self.lat0)) ** 2
        rho = a * (1.0 - e2) / (1.0 - e2 * s2) ** 1.5
        nu = a / math.sqrt(1.0 - e2 * s2)
        self.scale_c2 = 1.0 / (2.0 * rho * nu)
        self.degree = 0
        self._poly: tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any]] | None = None
        self._fit()

    def _fit(self) -> None:
        """Pick the lowest polynomial degree that reproduces pyproj within _FIT_TOLERANCE_M."""
        g = np.linspace(-1.0, 1.0, 33)
        gu, gv = (m.ravel() for m in np.meshgrid(g, g))
        # Checked on a finer grid whose nodes mostly fall between the fitting nodes.
        c = np.linspace(-1.0, 1.0, 64)
        cu, cv = (m.ravel() for m in np.meshgrid(c, c))
        fx, fy = self._transformer.transform(self.lon0 + gu / self.su, self.lat0 + gv / self.sv)
        tx, ty = self._transformer.transform(self.lon0 + cu / self.su, self.lat0 + cv / self.sv)
        if not all(np.isfinite(values).all() for values in (fx, fy, tx, ty)):
            raise ValueError(
                f"the territory spans {2 * self.half_lon:.0f}° × {2 * self.half_lat:.0f}°, too wide for one "
                "local transverse Mercator projection (the index serves a city or a region, not the globe)"
            )
        for degree in range(2, 10):
            terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
            design = np.stack([gu**i * gv**j for i, j in terms], axis=1)
            poly_x = _compile_poly(degree, terms, np.linalg.lstsq(design, fx, rcond=None)[0])
            poly_y = _compile_poly(degree, terms, np.linalg.lstsq(design, fy, rcond=None)[0])
            if max(np.abs(poly_x(cu, cv) - tx).max(), np.abs(poly_y(cu, cv) - ty).max()) <= _FIT_TOLERANCE_M:
                self.degree = degree
                self._poly = (poly_x, poly_y)
                return

    def forward(self, lon: float, lat: float) -> tuple[float, float]:
        """Project one lon/lat to local metres (the very float operations of `forward_many`)."""
        u = (lon - self.lon0) * self.su
        v = (lat - self.lat0) * self.sv
        if self._poly is None or not (-1.0 <= u <= 1.0 and -1.0 <= v <= 1.0):
            x, y = self._transformer.transform(lon, lat)
            return float(x), float(y)
        return self._poly[0](u, v), self._poly[1](u, v)

    def forward_many(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project arrays of lon/lat to local metres."""
        if self._poly is None:
            x, y = self._transformer.transform(lon, lat)
            return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        u = (lon - self.lon0) * self.su
        v = (lat - self.lat0) * self.sv
        x = self._poly[0](u, v)
        y = self._poly[1](u, v)
        far = (np.abs(u) > 1.0) | (np.abs(v) > 1.0)
        if far.any():
            fx, fy = self._transformer.transform(lon[far], lat[far])
            x[far] = fx
            y[far] = fy
        return x, y

    def inside_fit(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Whether points fall in the fitted box (the territory plus the snap margin)."""
        return (np.abs(lon - self.lon0) <= self.half_lon) & (np.abs(lat - self.lat0) <= self.half_lat)

    def inside_fit_one(self, lon: float, lat: float) -> bool:
        """Scalar `inside_fit`."""
        return abs(lon - self.lon0) <= self.half_lon and abs(lat - self.lat0) <= self.half_lat

    def true_distance(self, d: float, x: float) -> float:
        """Turn a projected distance near projected x into metres on the ellipsoid."""
        return d / (1.0 + x * x * self.scale_c2)


class _Edges(NamedTuple):
    """Polygon edges as flat columns, grouped by owning polygon in index order."""

    ax: np.ndarray
    ay: np.ndarray
    bx: np.ndarray
    by: np.ndarray
    owner: np.ndarray  # int32 polygon index


def _polygon_edges(geoms: np.ndarray) -> _Edges:
    """Every ring edge of every polygon (holes and multipolygon parts included)."""
    if len(geoms) == 0:
        empty = np.zeros(0)
        return _Edges(empty, empty, empty, empty, np.zeros(0, dtype=np.int32))
    # Hole-free Polygons are one closed ring each, so their coordinates need no per-ring objects;
    # get_parts/get_rings allocate a Python object per ring and are ten times slower.
    simple = (shapely.get_type_id(geoms) == 3) & (shapely.get_num_interior_rings(geoms) == 0)
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    if simple.all():
        chunks.append(shapely.get_coordinates(geoms, return_index=True))
    else:
        which = np.flatnonzero(simple)
        coords, coord_of = shapely.get_coordinates(geoms[which], return_index=True)
        chunks.append((coords, which[coord_of]))
        which = np.flatnonzero(~simple)
        parts, part_of = shapely.get_parts(geoms[which], return_index=True)
        rings, ring_of = shapely.get_rings(parts, return_index=True)
        coords, coord_of = shapely.get_coordinates(rings, return_index=True)
        # Ring ids must differ between rings of one polygon: offset them past every polygon index.
        chunks.append((coords, which[part_of[ring_of[coord_of]]] + len(geoms) * (coord_of + 1)))
    columns: list[list[np.ndarray]] = [[], [], [], [], []]
    for coords, ring in chunks:
        start = np.flatnonzero(ring[1:] == ring[:-1])
        xs, ys = coords[:, 0], coords[:, 1]
        for column, values in zip(
            columns,
            (xs[start], ys[start], xs[start + 1], ys[start + 1], (ring[start] % len(geoms)).astype(np.int32)),
            strict=True,
        ):
            column.append(values)
    ax, ay, bx, by, owner = (np.concatenate(c) if len(c) > 1 else c[0] for c in columns)
    keep = (ax != bx) | (ay != by)
    if not keep.all():
        ax, ay, bx, by, owner = ax[keep], ay[keep], bx[keep], by[keep], owner[keep]
    if len(chunks) > 1:
        # Two runs each sorted by owner: a stable sort merges them in linear time.
        order = np.argsort(owner, kind="stable")
        ax, ay, bx, by, owner = ax[order], ay[order], bx[order], by[order], owner[order]
    return _Edges(ax, ay, bx, by, owner)


def _expand(items: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat each item count times, with the rank 0..count-1 of each copy."""
    total = int(count.sum())
    starts = np.zeros(count.size, dtype=np.int64)
    np.cumsum(count[:-1], out=starts[1:])
    rank = np.arange(total, dtype=np.int64) - np.repeat(starts, count)
    return np.repeat(items, count), rank


def _first_true(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Position of the first True in each group [start, start + size) (every group has one)."""
    positions = np.where(mask, np.arange(mask.size), mask.size)
    return np.minimum.reduceat(positions, starts)


def _group_by_cell(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable-sort (cell << 32 | item) keys by cell (two 16-bit radix passes); split off exact repeats.

    Returns (cells, items) without adjacent duplicates.
    """
    for shift in (32, 48):
        key = key[np.argsort(((key >> shift) & 0xFFFF).astype(np.uint16), kind="stable")]
    keep = np.ones(key.size, dtype=bool)
    np.not_equal(key[1:], key[:-1], out=keep[1:])
    key = key[keep]
    return key >> 32, (key & 0xFFFFFFFF).astype(np.int32)


def _csr(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and the offsets where each one's run starts (plus the end)."""
    first = np.ones(cell.size, dtype=bool)
    np.not_equal(cell[1:], cell[:-1], out=first[1:])
    # int32 offsets: the raster holds at most _MAX_CELLS cells of a few marks each.
    return cell[first], np.append(np.flatnonzero(first), cell.size).astype(np.int32)


class _Rows:
    """Per-polygon edge attributes in rows of 8: row p is polygon p's first 8 edges, overflow rows follow.

    Each attribute is its own contiguous (rows, 8) array, so a gather yields contiguous blocks that numpy
    processes as flat arrays; a row of 8 bools is one uint64, which makes per-row any/parity one op.
    """

    WIDTH = 8

    def __init__(self, owner: np.ndarray, n_polys: int, columns: list[np.ndarray], pads: list[float]) -> None:
        w = self.WIDTH
        counts = np.bincount(owner, minlength=n_polys) if n_polys else np.zeros(0, np.int64)
        extra = np.maximum(0, -(-counts // w) - 1)
        self.n_polys = n_polys
        self.extra_count = extra
        self.extra_start = np.zeros(n_polys + 1, dtype=np.int64)
        np.cumsum(extra, out=self.extra_start[1:])
        self.any_extra = bool(self.extra_start[-1] > 0)
        edge_start = np.zeros(n_polys + 1, dtype=np.int64)
        np.cumsum(counts, out=edge_start[1:])
        pos = np.arange(owner.size, dtype=np.int64) - edge_start[owner]
        block = pos // w
        row = np.where(block == 0, owner, n_polys + self.extra_start[owner] + block - 1)
        col = pos % w
        n_rows = n_polys + int(self.extra_start[-1])
        # One (attributes, rows, 8) block: each attribute is a contiguous (rows, 8) array for the
        # vectorised gathers.
        self.data = np.empty((len(columns), n_rows, w), dtype=np.float64)
        for k, (column, pad) in enumerate(zip(columns, pads, strict=True)):
            self.data[k] = pad
            self.data[k, row, col] = column
        self.cols = list(self.data)
        self.used = np.minimum(counts, w)

    def gather(self, rows: np.ndarray) -> list[np.ndarray]:
        """Every attribute of the given rows, as contiguous (len(rows), 8) arrays."""
        return [np.take(c, rows, axis=0) for c in self.cols]

    def extra_rows(self, polys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(position in polys, overflow row) for polygons with more than 8 edges, or None."""
        if not self.any_extra:
            return None
        sel = np.flatnonzero(self.extra_count[polys])
        if sel.size == 0:
            return None
        where, rank = _expand(sel, self.extra_count[polys[sel]])
        return where, self.n_polys + self.extra_start[polys[where]] + rank


def _orient_sign(
    ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray, qx: np.ndarray, qy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whether q is left of a->b, and where that float answer cannot be trusted (Shewchuk bound)."""
    m1 = (bx - ax) * (qy - ay)
    m2 = (by - ay) * (qx - ax)
    o = m1 - m2
    return o > 0, np.abs(o) <= _ORIENT_EPS * (np.abs(m1) + np.abs(m2))


def _repeat8(values: np.ndarray) -> np.ndarray:
    """values repeated across a contiguous (n, 8) block, so later ops run on flat arrays."""
    return np.repeat(values, _Rows.WIDTH).reshape(-1, _Rows.WIDTH)


def _row_any(mask: np.ndarray) -> np.ndarray:
    """Per-row any() of a contiguous (n, 8) bool array."""
    return mask.view(np.uint64).ravel() != 0


def _row_parity(mask: np.ndarray) -> np.ndarray:
    """Per-row odd count of a contiguous (n, 8) bool array."""
    return (np.bitwise_count(mask.view(np.uint64)).ravel() & 1).astype(bool)


def _row_min(values: np.ndarray) -> np.ndarray:
    """Per-row minimum of an (n, 8) array by halving (faster than min(axis=1) on short rows)."""
    half = np.minimum(values[:, :4], values[:, 4:])
    half = np.minimum(half[:, :2], half[:, 2:])
    return np.minimum(half[:, 0], half[:, 1])


class _Raster:
    """Uniform raster over one polygon layer: pure cells answer by lookup, mixed cells by exact tests."""

    def __init__(
        self,
        geoms: np.ndarray,
        cells_per_polygon: float,
        edges: _Edges | None = None,
    ) -> None:
        self.geoms = geoms
        self.n = len(geoms)
        ax, ay, bx, by, owner = edges if edges is not None else _polygon_edges(geoms)
        self.edges = _Rows(
            owner,
            self.n,
            [ax, ay, bx, by],
            [math.nan, math.nan, math.nan, math.nan],
        )
        if self.n == 0:
            self.u0 = self.v0 = 0.0
            self.inv_du = self.inv_dv = 1.0
            self.nu = self.nv = 1
            self.state = np.full(1, -1, dtype=np.int32)
            self.mix_start = np.zeros(1, dtype=np.int64)
            self.mix_poly = np.zeros(0, dtype=np.int32)
            self.simple = np.zeros((0, 3), dtype=np.int32)
            self.seg = np.zeros((0, 4))
            return
        # Every vertex starts some edge of its closed ring.
        minx, maxx = float(ax.min()), float(ax.max())
        miny, maxy = float(ay.min()), float(ay.max())
        cos0 = max(math.cos(math.radians((miny + maxy) / 2.0)), 1e-3)
        area = float(shapely.area(geoms).sum())
        cell_area = max(area / (cells_per_polygon * self.n), 1e-18)
        # Square cells in metres keep the number of cells an edge crosses independent of its bearing.
        dv = math.sqrt(cell_area * cos0)
        du = dv / cos0
        while (math.ceil((maxx - minx) / du) + 3) * (math.ceil((maxy - miny) / dv) + 3) > _MAX_CELLS:
            du *= 1.1
            dv *= 1.1
        self.u0 = minx - du
        self.v0 = miny - dv
        self.inv_du = 1.0 / du
        self.inv_dv = 1.0 / dv
        self.nu = math.ceil((maxx - self.u0) * self.inv_du) + 1
        self.nv = math.ceil((maxy - self.v0) * self.inv_dv) + 1
        # Cell coordinates of the edges, computed exactly as for query points.
        u1 = (ax - self.u0) * self.inv_du
        v1 = (ay - self.v0) * self.inv_dv
        u2 = (bx - self.u0) * self.inv_du
        v2 = (by - self.v0) * self.inv_dv
        label = self._scanline_labels(u1, v1, u2, v2, owner)
        mark_cell, mark_edge = self._mixed_cells(u1, v1, u2, v2, owner)
        mixed_cells, mark_start = _csr(mark_cell)
        self._simple_cells(
            mixed_cells, mark_start, mark_edge, label, (ax, ay, bx, by), (u1, v1, u2, v2), owner
        )
        # Candidates: the polygons owning the marked edges; marks are in edge order within a cell, so
        # repeats of a polygon are adjacent.
        cell, poly = mark_cell, owner[mark_edge]
        keep = np.ones(cell.size, dtype=bool)
        keep[1:] = (cell[1:] != cell[:-1]) | (poly[1:] != poly[:-1])
        cell, poly = cell[keep], poly[keep]
        self.mix_start = _csr(cell)[1]
        # A polygon that holds a whole mixed cell has no edge there, so it is not yet a candidate; in a
        # valid partition that cannot happen, with overlapping polygons it can: add the centre's owner.
        centre = label[mixed_cells]
        holds = np.logical_or.reduceat(
            poly == np.repeat(centre, np.diff(self.mix_start)), self.mix_start[:-1]
        )
        missing = np.flatnonzero(~holds & (centre >= 0))
        if missing.size:
            extra = (mixed_cells[missing] << 32) | centre[missing].astype(np.int64)
            cell, poly = _group_by_cell(np.concatenate([(cell << 32) | poly.astype(np.int64), extra]))
            self.mix_start = _csr(cell)[1]
            self.simple[missing, 0] = -1
        self.mix_poly = poly
        label[mixed_cells] = -2 - np.arange(mixed_cells.size, dtype=np.int32)
        self.state = label

    def _simple_cells(
        self,
        mixed_cells: np.ndarray,
        mark_start: np.ndarray,
        mark_edge: np.ndarray,
        label: np.ndarray,
        lonlat: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        cellxy: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        owner: np.ndarray,
    ) -> None:
        """Find mixed cells crossed by a single segment, answered later by one orientation test.

        Such a cell holds no vertex and no other edge (not even within _CELL_EPS), so each side of the
        segment lies in one polygon or none: the side of the cell centre belongs to the centre's owner,
        the other side to the segment's other owner (its twin edge in the neighbour) or to nobody.
        """
        ax, ay, bx, by = lonlat
        u1, v1, u2, v2 = cellxy
        n_mixed = mixed_cells.size
        # Per mixed cell: (edge, polygon left of it, polygon right of it), edge -1 when not simple; one
        # row is one cache line for the scalar path.
        self.simple = np.full((n_mixed, 3), -1, dtype=np.int32)
        # Marks list the edges entering a cell, not those leaving a vertex inside it: cells within eps
        # of a vertex are never simple.
        fu, fv = np.floor(u1), np.floor(v1)
        vertex_cell = np.zeros(self.nu * self.nv, dtype=bool)
        vertex_cell[(fv * self.nu + fu).astype(np.int64)] = True
        near = (u1 - fu < 2 * _CELL_EPS) | (u1 - fu > 1 - 2 * _CELL_EPS)
        near |= (v1 - fv < 2 * _CELL_EPS) | (v1 - fv > 1 - 2 * _CELL_EPS)
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                cu, cv = fu[near] + i, fv[near] + j
                ok = (cu >= 0) & (cu < self.nu) & (cv >= 0) & (cv < self.nv)
                vertex_cell[(cv[ok] * self.nu + cu[ok]).astype(np.int64)] = True
        size = np.diff(mark_start)
        todo = np.flatnonzero((size <= 2) & ~vertex_cell[mixed_cells])
        del vertex_cell
        # Batches keep the temporaries (a dozen arrays per cell) small.
        for lo in range(0, todo.size, _BUILD_BATCH * 4):
            m = todo[lo : lo + _BUILD_BATCH * 4]
            e1 = mark_edge[mark_start[m]]
            pair = size[m] == 2
            e2 = e1.copy()
            e2[pair] = mark_edge[mark_start[m[pair]] + 1]
            # Two marks must be one segment seen from both sides (reversed twin edges of two polygons).
            ok = ~pair | (
                (ax[e1] == bx[e2])
                & (ay[e1] == by[e2])
                & (bx[e1] == ax[e2])
                & (by[e1] == ay[e2])
                & (owner[e1] != owner[e2])
            )
            m, e1, e2, pair = m[ok], e1[ok], e2[ok], pair[ok]
            # Which side the centre is on, in cell units (an orientation-preserving affine map of
            # lon/lat); centres closer than 1e-6 cell to the line are left out, far beyond any rounding
            # of the labels.
            cell = mixed_cells[m]
            cu = (cell % self.nu).astype(np.float64) + 0.5
            cv = (cell // self.nu).astype(np.float64) + 0.5
            du, dv = u2[e1] - u1[e1], v2[e1] - v1[e1]
            o = du * (cv - v1[e1]) - dv * (cu - u1[e1])
            centre = label[cell]
            one = owner[e1]
            two = np.where(pair, owner[e2], -1)
            other = np.where(centre == one, two, np.where(centre == two, one, -2))
            ok = (o * o > 1e-12 * (du * du + dv * dv)) & (other != -2) & (centre != other)
            m, o, centre, other = m[ok], o[ok], centre[ok], other[ok]
            self.simple[m, 0] = e1[ok]
            self.simple[m, 1] = np.where(o > 0, centre, other)
            self.simple[m, 2] = np.where(o > 0, other, centre)
        self.seg = np.column_stack([ax, ay, bx, by])

    def _spans(
        self, u1: np.ndarray, v1: np.ndarray, u2: np.ndarray, v2: np.ndarray, owner: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Runs of cells whose centres lie inside each polygon: first cell, end cell (exclusive), polygon."""
        nu, nv = self.nu, self.nv
        # Rows whose centre r + 0.5 lies in [lo, hi): a vertex's side depends on its own V only, so
        # every ring crosses every scanline an even number of times.
        r0 = np.ceil(np.minimum(v1, v2) - 0.5)
        count = (np.ceil(np.maximum(v1, v2) - 0.5) - r0).astype(np.int64)
        sel = np.flatnonzero(count > 0)
        count = count[sel]
        u1s, v1s, r0s = u1[sel], v1[sel], r0[sel]
        slope = (u2[sel] - u1s) / (v2[sel] - v1s)
        starts = np.zeros(count.size, dtype=np.int64)
        np.cumsum(count[:-1], out=starts[1:])
        row = np.arange(int(count.sum()), dtype=np.int64) + np.repeat(r0s.astype(np.int64) - starts, count)
        ux = np.repeat(u1s, count) + (row + 0.5 - np.repeat(v1s, count)) * np.repeat(slope, count)
        # Edges come grouped by polygon, so this stable sort only merges short runs of rows.
        key = np.repeat(owner[sel].astype(np.int64) * nv, count) + row
        order = np.argsort(key, kind="stable")
        key = key[order]
        ux = ux[order]
        if key.size % 2 or (key[0::2] != key[1::2]).any():
            raise RuntimeError("scanline crossings do not pair up; polygon rings are not closed")
        new_group = np.ones(key.size, dtype=bool)
        np.not_equal(key[1:], key[:-1], out=new_group[1:])
        group_start = np.flatnonzero(new_group)
        group_size = np.diff(np.append(group_start, key.size))
        if (group_size > 2).any():
            # Concave or multi-part polygons cross a scanline 4+ times; only those need a real sort.
            big = np.repeat(group_size > 2, group_size)
            sub = np.flatnonzero(big)
            ux[sub] = ux[sub][np.lexsort((ux[sub], key[sub]))]
        start = np.minimum(ux[0::2], ux[1::2])
        stop = np.maximum(ux[0::2], ux[1::2])
        span_row = key[0::2] % nv
        span_poly = (key[0::2] // nv).astype(np.int32)
        c0 = np.clip(np.ceil(start - 0.5), 0, nu).astype(np.int64)
        c1 = np.clip(np.ceil(stop - 0.5), 0, nu).astype(np.int64)
        ok = c1 > c0
        base = span_row[ok] * nu
        return base + c0[ok], base + c1[ok], span_poly[ok]

    def _scanline_labels(
        self, u1: np.ndarray, v1: np.ndarray, u2: np.ndarray, v2: np.ndarray, owner: np.ndarray
    ) -> np.ndarray:
        """Label each cell with the polygon holding its centre (even-odd scanlines); -1 for none."""
        nu, nv = self.nu, self.nv
        firsts: list[np.ndarray] = []
        lasts: list[np.ndarray] = []
        span_polys: list[np.ndarray] = []
        # Batches of whole polygons (edges are grouped by polygon) bound the temporary memory.
        polys_per_batch = max(1, self.n * _BUILD_BATCH // max(1, owner.size))
        cuts = np.append(np.searchsorted(owner, np.arange(0, self.n, polys_per_batch)), owner.size)
        for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            if hi > lo:
                first, last, span_poly = self._spans(u1[lo:hi], v1[lo:hi], u2[lo:hi], v2[lo:hi], owner[lo:hi])
                firsts.append(first)
                lasts.append(last)
                span_polys.append(span_poly)
        first = np.concatenate(firsts)
        last = np.concatenate(lasts)
        span_poly = np.concatenate(span_polys)
        width = last - first
        # Spans of a valid partition never overlap: mark starts (poly + 1) and ends (-1), then carry the
        # last mark forward. Ends go first so a span starting where its neighbour ends wins the cell.
        size = nu * nv
        mark = np.zeros(size + 1, dtype=np.int32)
        mark[last] = -1
        mark[first] = span_poly + 1
        carry = np.arange(size + 1, dtype=np.int32)
        carry[mark == 0] = 0
        np.maximum.accumulate(carry, out=carry)
        label = mark[carry[:size]]
        label -= 1
        np.maximum(label, -1, out=label)
        if int(np.count_nonzero(label >= 0)) != int(width.sum()):
            # Overlapping polygons (invalid data): the smallest index (code) wins, as on shared edges.
            cell_of, rank = _expand(first, width)
            label = np.full(size, _INT_MAX, dtype=np.int32)
            np.minimum.at(label, cell_of + rank, np.repeat(span_poly, width))
            label[label == _INT_MAX] = -1
        return label

    def _mixed_cells(
        self, u1: np.ndarray, v1: np.ndarray, u2: np.ndarray, v2: np.ndarray, owner: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cell, edge) for every cell within _CELL_EPS of an edge, sorted by cell then edge."""
        nu, nv = self.nu, self.nv
        keys: list[np.ndarray] = []

        def add(cu: np.ndarray, cv: np.ndarray, p: np.ndarray) -> None:
            ok = (cu >= 0) & (cu < nu) & (cv >= 0) & (cv < nv)
            if not ok.all():
                cu, cv, p = cu[ok], cv[ok], p[ok]
            # (cell << 32) | edge: one int64 per mark halves the memory of the sort below.
            key = cv.astype(np.int64)
            key *= nu
            key += cu.astype(np.int64)
            key <<= 32
            key |= p
            keys.append(key)

        def add_block(cu: np.ndarray, cv: np.ndarray, p: np.ndarray, du: range, dv: range) -> None:
            for i in du:
                for j in dv:
                    add(cu + i, cv + j, p)

        # A ring's cells are the cells it enters at each crossing of a cell side, plus the cell of any
        # edge that crosses no side. Rounding can only misplace a crossing or a vertex lying within
        # ~1e-13 cells of a side; those get every neighbouring cell instead (2 * eps margin covers an
        # edge passing by a cell corner, which always has an endpoint that close to the corner).
        # Edges go in batches so the per-crossing temporaries stay small.
        for lo in range(0, u1.size, _BUILD_BATCH):
            hi = min(lo + _BUILD_BATCH, u1.size)
            bu1, bv1, bu2, bv2 = u1[lo:hi], v1[lo:hi], u2[lo:hi], v2[lo:hi]
            bowner = np.arange(lo, hi, dtype=np.int64)  # marks carry the edge id
            first_key = len(keys)
            crossings = np.zeros(hi - lo, dtype=np.int64)
            for axis in (0, 1):
                p1, q1, p2, q2 = (bu1, bv1, bu2, bv2) if axis == 0 else (bv1, bu1, bv2, bu2)
                flo = np.floor(np.minimum(p1, p2))
                count = (np.floor(np.maximum(p1, p2)) - flo).astype(np.int64)
                crossings += count
                sel = np.flatnonzero(count)
                if sel.size == 0:
                    continue
                count = count[sel]
                p1s, q1s = p1[sel], q1[sel]
                slope = (q2[sel] - q1s) / (p2[sel] - p1s)
                starts = np.zeros(sel.size, dtype=np.int64)
                np.cumsum(count[:-1], out=starts[1:])
                line = np.arange(int(count.sum()), dtype=np.float64)
                line += np.repeat(flo[sel] + 1.0 - starts, count)
                at = line - np.repeat(p1s, count)
                at *= np.repeat(slope, count)
                at += np.repeat(q1s, count)
                across = np.floor(at)
                # The cell entered is past the crossed side in the direction of travel.
                along = line - np.repeat((p2[sel] < p1s).astype(np.float64), count)
                line_edge = np.repeat(bowner[sel], count)
                if axis == 0:
                    add(along, across, line_edge)
                else:
                    add(across, along, line_edge)
                at -= across
                near = (at < _CELL_EPS) | (at > 1 - _CELL_EPS)
                if near.any():
                    ln, ac, ow = line[near], across[near], line_edge[near]
                    if axis == 0:
                        add_block(ln, ac, ow, range(-1, 1), range(-1, 2))
                    else:
                        add_block(ac, ln, ow, range(-1, 2), range(-1, 1))
            fu = np.floor(bu1)
            fv = np.floor(bv1)
            lone = crossings == 0
            add(fu[lone], fv[lone], bowner[lone])
            near = (bu1 - fu < 2 * _CELL_EPS) | (bu1 - fu > 1 - 2 * _CELL_EPS)
            near |= (bv1 - fv < 2 * _CELL_EPS) | (bv1 - fv > 1 - 2 * _CELL_EPS)
            if near.any():
                add_block(fu[near], fv[near], bowner[near], range(-1, 2), range(-1, 2))
            # Put the batch's marks in edge order (a merge of a few sorted runs), so that after the
            # stable sort by cell the marks of each cell come in edge, hence polygon, order.
            batch = np.concatenate(keys[first_key:])
            del keys[first_key:]
            keys.append(batch[np.argsort(batch & 0xFFFFFFFF, kind="stable")])

        key = np.concatenate(keys)
        keys.clear()
        return _group_by_cell(key)

    def locate(self, lon: float, lat: float) -> int:
        """Index of the polygon covering one point (smallest index on ties), or -1."""
        u = (lon - self.u0) * self.inv_du
        v = (lat - self.v0) * self.inv_dv
        if not (0.0 <= u < self.nu and 0.0 <= v < self.nv):
            return -1
        s = self.state.item(int(v) * self.nu + int(u))
        if s >= -1:
            return int(s)
        m = -2 - s
        e, left, right = self.simple[m].tolist()
        if e >= 0:
            # The same float operations as _orient_sign.
            ax, ay, bx, by = self.seg[e].tolist()
            m1 = (bx - ax) * (lat - ay)
            m2 = (by - ay) * (lon - ax)
            o = m1 - m2
            if not abs(o) <= _ORIENT_EPS * (abs(m1) + abs(m2)):
                return left if o > 0 else right
        lo, hi = self.mix_start.item(m), self.mix_start.item(m + 1)
        cands = self.mix_poly[lo:hi]
        hits = shapely.intersects_xy(self.geoms[cands], lon, lat).tolist()
        if True not in hits:
            return -1
        return min(p for p, hit in zip(cands.tolist(), hits, strict=True) if hit)

    def locate_many(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Vectorised `locate` (int32 polygon indices, -1 for none)."""
        u = (lon - self.u0) * self.inv_du
        v = (lat - self.v0) * self.inv_dv
        inside = (u >= 0.0) & (u < self.nu) & (v >= 0.0) & (v < self.nv)
        cell = v.astype(np.int64) * self.nu + u.astype(np.int64)
        if inside.all():
            state = self.state[cell]
        else:
            state = np.full(lon.size, -1, dtype=np.int32)
            state[inside] = self.state[cell[inside]]
        result = np.maximum(state, -1)
        mixed = np.flatnonzero(state <= -2)
        if mixed.size:
            m = -2 - state[mixed]
            edge = self.simple[m, 0]
            at = np.flatnonzero(edge >= 0)
            if at.size:
                ms, pts = m[at], mixed[at]
                seg = np.take(self.seg, edge[at], axis=0)
                left, doubt = _orient_sign(seg[:, 0], seg[:, 1], seg[:, 2], seg[:, 3], lon[pts], lat[pts])
                result[pts] = np.where(left, self.simple[ms, 1], self.simple[ms, 2])
                if doubt.any():
                    edge[at[doubt]] = -1
                keep = edge < 0
                mixed, m = mixed[keep], m[keep]
            if mixed.size:
                result[mixed] = self._resolve_mixed(m, lon[mixed], lat[mixed])
        return result

    def _resolve_mixed(self, m: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Exact point-in-polygon against each mixed cell's candidates; smallest covering index wins."""
        first = self.mix_start[m]
        count = self.mix_start[m + 1] - first
        offsets = np.zeros(m.size, dtype=np.int64)
        np.cumsum(count[:-1], out=offsets[1:])
        total = int(count.sum())
        pair_point = np.repeat(np.arange(m.size), count)
        pair_poly = self.mix_poly[np.repeat(first - offsets, count) + np.arange(total, dtype=np.int64)]
        px = qx[pair_point]
        py = qy[pair_point]
        inside, doubtful = self.pip(pair_poly, px, py)
        if doubtful.any():
            idx = np.flatnonzero(doubtful)
            inside[idx] = shapely.intersects_xy(self.geoms[pair_poly[idx]], px[idx], py[idx])
        best = np.minimum.reduceat(np.where(inside, pair_poly, _INT_MAX), offsets)
        return np.where(best == _INT_MAX, -1, best).astype(np.int32)

    def pip(self, polys: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Even-odd containment of (qx, qy) in polys, and where a float sign could not be trusted."""
        parity, doubtful = _pip_rows(self.edges.gather(polys), qx, qy)
        extra = self.edges.extra_rows(polys)
        if extra is not None:
            where, rows = extra
            more, unsure = _pip_rows(self.edges.gather(rows), qx[where], qy[where])
            np.logical_xor.at(parity, where, more)
            np.logical_or.at(doubtful, where, unsure)
        return parity, doubtful


def _pip_rows(cols: list[np.ndarray], qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crossing parity of a +x ray from each point over one row of 8 edges, and doubtful rows."""
    ax, ay, bx, by = cols
    px = _repeat8(qx)
    py = _repeat8(qy)
    above_a = ay > py
    above_b = by > py
    m1 = bx - ax
    m1 *= py - ay
    o = by - ay
    o *= px - ax
    np.subtract(m1, o, out=o)
    # The ray crosses an edge straddling the scanline with the point on its left (upward edge) or its
    # right (downward edge). NaN padding never straddles.
    cross = above_a != above_b
    cross &= (o > 0) == above_b
    parity = _row_parity(cross)
    # Shewchuk: only |o| <= 3.3e-16 (|m1| + |m2|) can carry a wrong sign, and then |m1| ~ |m2|, so
    # 1e-15 |m1| is a safe superset; a point on an edge (o = 0 exactly) always lands here.
    np.abs(o, out=o)
    np.abs(m1, out=m1)
    m1 *= _ORIENT_EPS
    near_line = o <= m1
    if not near_line.any():
        return parity, np.zeros(parity.size, dtype=bool)
    # Only edges whose closed y-range holds the point matter (the others can't hold it either).
    near_line &= ~(above_a & above_b) & ((ay >= py) | (by >= py))
    return parity, _row_any(near_line)


class _GridDistances:
    """Projected grid edges for exact point-to-boundary distances in metres."""

    def __init__(
        self, ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray, owner: np.ndarray, n: int
    ) -> None:
        dx = bx - ax
        dy = by - ay
        len2 = dx * dx + dy * dy
        inv = np.divide(1.0, len2, out=np.zeros_like(len2), where=len2 > 0)
        self.rows = _Rows(
            owner,
            n,
            [ax, ay, dx, dy, inv],
            [_PAD_FAR, _PAD_FAR, 0.0, 0.0, 0.0],
        )
        # The scalar path reads one row: keep it as 5 x 8 contiguous floats (5 adjacent cache lines,
        # instead of 5 scattered ones in the per-attribute layout the vectorised gathers need).
        self.flat = np.ascontiguousarray(self.rows.data.transpose(1, 0, 2)).reshape(
            self.rows.data.shape[1], -1
        )

    def _scalar_rows(self, poly: int) -> list[list[list[float]]]:
        """The rows of one grid as [attribute][edge] lists, without padding."""
        rows = self.rows
        w = rows.WIDTH
        n = rows.used.item(poly)
        flat = self.flat[poly].tolist()
        out = [[flat[k * w : k * w + n] for k in range(5)]]
        if rows.any_extra and rows.extra_count.item(poly):
            lo, hi = rows.extra_start.item(poly), rows.extra_start.item(poly + 1)
            for r in range(rows.n_polys + lo, rows.n_polys + hi):
                flat = self.flat[r].tolist()
                out.append([flat[k * w : (k + 1) * w] for k in range(5)])
        return out

    def distance(self, poly: int, x: float, y: float) -> float:
        """Projected distance from (x, y) to the boundary of one grid (same float ops as `many`)."""
        best = math.inf
        for ax_r, ay_r, dx_r, dy_r, inv_r in self._scalar_rows(poly):
            for ax, ay, dx, dy, inv in zip(ax_r, ay_r, dx_r, dy_r, inv_r, strict=True):
                wx = x - ax
                wy = y - ay
                t = wx * dx
                t += wy * dy
                t *= inv
                if t < 0.0:
                    t = 0.0
                elif t > 1.0:
                    t = 1.0
                ex = wx - t * dx
                ey = wy - t * dy
                d2 = ex * ex + ey * ey
                if d2 < best:
                    best = d2
        return math.sqrt(best)

    def many(self, polys: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Vectorised `distance`."""
        d2 = _dist2_rows(self.rows.gather(polys), x, y)
        extra = self.rows.extra_rows(polys)
        if extra is not None:
            where, rows = extra
            np.minimum.at(d2, where, _dist2_rows(self.rows.gather(rows), x[where], y[where]))
        return np.sqrt(d2)


def _dist2_rows(cols: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared distance from each point to the nearest of one row of 8 segments."""
    ax, ay, dx, dy, inv = cols
    wx = _repeat8(x)
    wx -= ax
    wy = _repeat8(y)
    wy -= ay
    t = wx * dx
    t += wy * dy
    t *= inv
    np.clip(t, 0.0, 1.0, out=t)
    dx *= t
    wx -= dx
    dy *= t
    wy -= dy
    wx *= wx
    wy *= wy
    wx += wy
    return _row_min(wx)


@dataclass(slots=True)
class _Layer:
    """Codes, names and parent indices of one layer, ordered by code."""

    codes: list[str]
    names: list[str]
    parent_codes: list[str | None]
    parents: np.ndarray  # index into the parent layer, -1 for districts
    geoms: np.ndarray
    position: dict[str, int]  # code -> index


class TerritoryIndex:
    """Immutable in-memory index of the territory layers with a point geocoder."""

    version: int

    def __init__(
        self,
        layers: dict[str, _Layer],
        *,
        near_boundary_m: float,
        snap_tolerance_m: float,
        version: int,
    ) -> None:
        self.version = version
        self.near_boundary_m = float(near_boundary_m)
        self.snap_tolerance_m = float(snap_tolerance_m)
        self._layers = layers
        grid = layers["grid"]
        community = layers["community"]
        street = layers["street"]
        # Ancestor indices per grid, straight from the parent codes.
        self._grid_community = grid.parents
        self._grid_street = community.parents[grid.parents] if grid.parents.size else grid.parents
        self._grid_district = street.parents[self._grid_street] if grid.parents.size else grid.parents
        grid_edges = _polygon_edges(grid.geoms)
        self._grids = _Raster(grid.geoms, _CELLS_PER_GRID, grid_edges)
        self._blocks = _Raster(layers["block"].geoms, _CELLS_PER_BLOCK)
        self._n_grids = len(grid.codes)
        if self._n_grids:
            bounds = shapely.total_bounds(grid.geoms)
            minx, miny, maxx, maxy = (float(b) for b in bounds)
            self._frame: _LocalFrame | None = _LocalFrame(
                minx, miny, maxx, maxy, margin_m=max(2_000.0, 2.0 * self.snap_tolerance_m)
            )
            pax, pay = self._frame.forward_many(grid_edges.ax, grid_edges.ay)
            pbx, pby = self._frame.forward_many(grid_edges.bx, grid_edges.by)
            self._dist: _GridDistances | None = _GridDistances(
                pax, pay, pbx, pby, grid_edges.owner, self._n_grids
            )
            # The tree stays in lon/lat (no projected copy of every polygon); metric answers come from
            # boxes that surely hold every grid within the search radius, then exact metric distances.
            self._tree: shapely.STRtree | None = shapely.STRtree(grid.geoms)
            lat_extreme = min(89.0, max(abs(bounds[1]), abs(bounds[3])) + self._frame.half_lat)
            self._deg_lat_per_m = 1.0 / 110_000.0
            self._deg_lon_per_m = 1.0 / (111_000.0 * math.cos(math.radians(lat_extreme)))
            self._snap_search_m = self.snap_tolerance_m * 1.01 + 1.0
        else:
            self._frame = None
            self._dist = None
            self._tree = None
            self._deg_lat_per_m = self._deg_lon_per_m = 0.0
            self._snap_search_m = 0.0
        self._geod = pyproj.Geod(ellps="WGS84")
        # Per-layer code and name lists in LAYERS order, for the scalar path.
        self._codes = [layers[layer].codes for layer in LAYERS]
        self._names = [layers[layer].names for layer in LAYERS]
        # Object arrays with a trailing None, so index -1 means "missing" in the vectorised output.
        self._grid_code_arr = np.array([*grid.codes, None], dtype=object)
        self._community_code_arr = np.array([*community.codes, None], dtype=object)[
            np.append(self._grid_community, -1)
        ]
        self._street_code_arr = np.array([*street.codes, None], dtype=object)[
            np.append(self._grid_street, -1)
        ]
        self._district_code_arr = np.array([*layers["district"].codes, None], dtype=object)[
            np.append(self._grid_district, -1)
        ]
        self._block_code_arr = np.array([*layers["block"].codes, None], dtype=object)

    @classmethod
    def from_units(
        cls,
        units: Iterable[UnitLike],
        *,
        near_boundary_m: float = 30.0,
        snap_tolerance_m: float = 200.0,
        version: int = 0,
    ) -> TerritoryIndex:
        """Build the index from unit records; raise ValueError on inconsistent data."""
        for name, value in (("near_boundary_m", near_boundary_m), ("snap_tolerance_m", snap_tolerance_m)):
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        # The build makes a few hundred thousand small containers and no reference cycles; letting the
        # cyclic collector rescan the whole heap meanwhile costs a third of the build time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            layers = cls._layers_from_units(units)
            return cls(
                layers,
                near_boundary_m=near_boundary_m,
                snap_tolerance_m=snap_tolerance_m,
                version=version,
            )
        finally:
            if gc_was_enabled:
                gc.enable()

    @staticmethod
    def _layers_from_units(units: Iterable[UnitLike]) -> dict[str, _Layer]:
        """Validate the records and index them per layer, by code, with parent links."""
        records = list(map(_UNIT_FIELDS, units))
        codes_all = [r[1] for r in records]
        if not set(map(type, codes_all)) <= {str} or "" in codes_all:
            wrong = next(c for c in codes_all if not isinstance(c, str) or not c)
            raise ValueError(f"unit codes must be non-empty strings, got {wrong!r}")
        if len(set(codes_all)) != len(codes_all):
            seen: set[str] = set()
            for code in codes_all:
                if code in seen:
                    raise ValueError(f"duplicate unit code {code!r}")
                seen.add(code)
        records.sort(key=itemgetter(1))
        by_layer: dict[str, list[tuple[Any, ...]]] = {layer: [] for layer in LAYERS}
        for record in records:
            bucket = by_layer.get(record[0])
            if bucket is None:
                raise ValueError(f"unit {record[1]!r}: unknown layer {record[0]!r}; expected one of {LAYERS}")
            bucket.append(record)
        layers: dict[str, _Layer] = {}
        for layer in LAYERS:
            items = by_layer[layer]
            codes = [r[1] for r in items]
            names = [r[2] if type(r[2]) is str else str(r[2]) for r in items]
            parent_codes = [r[3] for r in items]
            geoms = np.empty(len(items), dtype=object)
            geoms[:] = [r[4] for r in items]
            _check_geometries(layer, codes, geoms)
            parent_layer = _PARENT_LAYER[layer]
            if parent_layer is None:
                bad = next((i for i, p in enumerate(parent_codes) if p is not None), None)
                if bad is not None:
                    raise ValueError(
                        f"district {codes[bad]!r} must have no parent, got {parent_codes[bad]!r}"
                    )
                parents = np.full(len(items), -1, dtype=np.int32)
            else:
                lookup = layers[parent_layer].position
                found = [lookup.get(p, -1) if type(p) is str else -1 for p in parent_codes]
                parents = np.array(found, dtype=np.int32)
                if (parents < 0).any():
                    bad = int(np.argmin(parents))
                    raise ValueError(
                        f"{layer} {codes[bad]!r}: parent {parent_codes[bad]!r} is not a known {parent_layer}"
                    )
            position = {code: i for i, code in enumerate(codes)}
            layers[layer] = _Layer(codes, names, parent_codes, parents, geoms, position)
        return layers

    def __len__(self) -> int:
        """Number of grids."""
        return self._n_grids

    def unit(self, code: str) -> UnitInfo | None:
        """Identity of any unit by code, or None."""
        for layer, data in self._layers.items():
            i = data.position.get(code)
            if i is not None:
                return UnitInfo(layer, code, data.names[i], data.parent_codes[i])
        return None

    def _closest(self, cands: np.ndarray, x: float, y: float) -> tuple[int, float]:
        """Candidate grid nearest to projected (x, y) and its projected distance (ties: smallest index)."""
        assert self._dist is not None
        cands = np.sort(cands)
        if cands.size <= 8:
            dists = [self._dist.distance(int(c), x, y) for c in cands.tolist()]
        else:
            dists = self._dist.many(cands, np.full(cands.size, x), np.full(cands.size, y)).tolist()
        limit = min(dists) + _TIE_M
        i = next(k for k, d in enumerate(dists) if d <= limit)
        return int(cands[i]), dists[i]

    def _nearest_within(
        self, lon: float, lat: float, x: float, y: float, radius_m: float
    ) -> tuple[int, float] | None:
        """Nearest grid within radius_m (projected distance), or None."""
        assert self._tree is not None
        dlon = radius_m * self._deg_lon_per_m
        dlat = radius_m * self._deg_lat_per_m
        cands = self._tree.query(shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat))
        return self._closest(cands, x, y) if cands.size else None

    def _nearest_any(self, lon: float, lat: float) -> tuple[int, float]:
        """Nearest grid at any distance and its distance in metres (geodesic estimate far away)."""
        assert self._tree is not None and self._frame is not None
        point = shapely.Point(lon, lat)
        first = int(self._tree.query_nearest(point)[0])
        if self._frame.inside_fit_one(lon, lat):
            x, y = self._frame.forward(lon, lat)
            assert self._dist is not None
            reach = self._frame.true_distance(self._dist.distance(first, x, y), x) * 1.01 + 1.0
            hit = self._nearest_within(lon, lat, x, y, reach)
            assert hit is not None
            return hit[0], self._frame.true_distance(hit[1], x)
        # Far from the territory the local projection is meaningless: nearest in degrees, then the
        # geodesic length to that grid's closest point.
        target = shapely.get_coordinates(shapely.shortest_line(point, self._layers["grid"].geoms[first]))[1]
        return first, float(self._geod.inv(lon, lat, float(target[0]), float(target[1]))[2])

    def nearest_grid(self, lon: float, lat: float) -> tuple[str, float] | None:
        """Code of the grid nearest to a point and its distance in metres (0 inside); None if empty."""
        lon = _check_scalar(lon, "lon", 180.0)
        lat = _check_scalar(lat, "lat", 90.0)
        if self._frame is None:
            return None
        g = self._grids.locate(lon, lat)
        if g >= 0:
            return self._layers["grid"].codes[g], 0.0
        best, distance = self._nearest_any(lon, lat)
        return self._layers["grid"].codes[best], _round2(distance)

    def geocode(self, lon: float, lat: float) -> dict[str, Any]:
        """Geocode one WGS-84 point to its grid, ancestors, block and boundary distance."""
        lon = _check_scalar(lon, "lon", 180.0)
        lat = _check_scalar(lat, "lat", 90.0)
        frame = self._frame
        if frame is None:
            raise OutsideTerritory(f"point ({lon}, {lat}) cannot be geocoded: the territory index is empty")
        x, y = frame.forward(lon, lat)
        g = self._grids.locate(lon, lat)
        if g >= 0:
            assert self._dist is not None  # built together with the frame
            distance = _round2(frame.true_distance(self._dist.distance(g, x, y), x))
            snapped = False
        else:
            hit = None
            if frame.inside_fit_one(lon, lat):
                hit = self._nearest_within(lon, lat, x, y, self._snap_search_m)
            distance = math.inf if hit is None else _round2(frame.true_distance(hit[1], x))
            if hit is None or distance > self.snap_tolerance_m:
                far, far_distance = self._nearest_any(lon, lat)
                far_m = _round2(far_distance)
                grid = self._layers["grid"]
                raise OutsideTerritory(
                    f"point ({lon}, {lat}) is {far_m:.2f} m from the nearest grid {grid.codes[far]} "
                    f"({grid.names[far]}), beyond the snap tolerance of {self.snap_tolerance_m:g} m",
                    nearest_code=grid.codes[far],
                    nearest_name=grid.names[far],
                    distance_m=far_m,
                )
            g = hit[0]
            snapped = True
        block = self._blocks.locate(lon, lat)
        district = self._grid_district.item(g)
        street = self._grid_street.item(g)
        community = self._grid_community.item(g)
        codes, names = self._codes, self._names
        return {
            "lon": round(lon, 7),
            "lat": round(lat, 7),
            "district": {"code": codes[0][district], "name": names[0][district]},
            "street": {"code": codes[1][street], "name": names[1][street]},
            "community": {"code": codes[2][community], "name": names[2][community]},
            "grid": {"code": codes[3][g], "name": names[3][g]},
            "block": {"code": codes[4][block], "name": names[4][block]} if block >= 0 else None,
            "near_boundary": distance <= self.near_boundary_m,
            "boundary_distance_m": distance,
            "snapped": snapped,
        }

    def geocode_many(self, lon: Any, lat: Any, *, with_block: bool = True) -> dict[str, np.ndarray]:
        """Vectorised `geocode`: code arrays (object, None = missing) plus boundary flags and distances."""
        found = self.locate_many(lon, lat, with_block=with_block)
        grid, block = found.pop("grid"), found.pop("block")
        return {
            "district_code": self._district_code_arr[grid],
            "street_code": self._street_code_arr[grid],
            "community_code": self._community_code_arr[grid],
            "grid_code": self._grid_code_arr[grid],
            "block_code": self._block_code_arr[block],
            **found,
        }

    def code_table(self, column: str) -> np.ndarray:
        """The codes of one `geocode_many` code column by position, as `locate_many` gives positions.

        An object array whose last item is None: index it with ``locate_many(...)["block"]`` for
        ``block_code`` and with ``["grid"]`` for the others (position -1 gives None). Read-only use.
        """
        tables = {
            "district_code": self._district_code_arr,
            "street_code": self._street_code_arr,
            "community_code": self._community_code_arr,
            "grid_code": self._grid_code_arr,
            "block_code": self._block_code_arr,
        }
        if column not in tables:
            raise KeyError(f"unknown code column {column!r}; expected one of {', '.join(tables)}")
        return tables[column]

    def locate_many(self, lon: Any, lat: Any, *, with_block: bool = True) -> dict[str, np.ndarray]:
        """`geocode_many` with positions instead of codes: ``grid`` and ``block`` (int32, -1 = none).

        The other keys (``near_boundary``, ``snapped``, ``boundary_distance_m``) are `geocode_many`'s;
        `code_table` turns positions into codes. Almost all of the work is numpy on large arrays, which
        releases the GIL, so threads calling this on different points run in parallel.
        """
        lon_a = _check_array(lon, "lon", 180.0)
        lat_a = _check_array(lat, "lat", 90.0)
        if lon_a.shape != lat_a.shape:
            raise GeocodeError(f"lon and lat must have the same shape, got {lon_a.shape} and {lat_a.shape}")
        n = lon_a.size
        grid = np.full(n, -1, dtype=np.int32)
        block = np.full(n, -1, dtype=np.int32)
        distance = np.full(n, np.nan)
        snapped = np.zeros(n, dtype=bool)
        if self._frame is not None:
            for start in range(0, n, _CHUNK):
                end = min(start + _CHUNK, n)
                self._chunk(
                    lon_a[start:end],
                    lat_a[start:end],
                    with_block,
                    grid[start:end],
                    block[start:end],
                    distance[start:end],
                    snapped[start:end],
                )
        return {
            "grid": grid,
            "block": block,
            "near_boundary": distance <= self.near_boundary_m,
            "snapped": snapped,
            "boundary_distance_m": distance,
        }

    def _chunk(
        self,
        lon: np.ndarray,
        lat: np.ndarray,
        with_block: bool,
        grid_out: np.ndarray,
        block_out: np.ndarray,
        distance_out: np.ndarray,
        snapped_out: np.ndarray,
    ) -> None:
        """Resolve one chunk of points in place into the output slices."""
        frame = self._frame
        assert frame is not None
        g = self._grids.locate_many(lon, lat)
        x, y = frame.forward_many(lon, lat)
        scale = 1.0 + x * x * frame.scale_c2
        found = np.flatnonzero(g >= 0)
        d = np.full(lon.size, np.nan)
        assert self._dist is not None
        d[found] = self._dist.many(g[found], x[found], y[found])
        lost = np.flatnonzero(g < 0)
        if lost.size:
            lost = lost[frame.inside_fit(lon[lost], lat[lost])]
        if lost.size:
            assert self._tree is not None and self._dist is not None
            dlon = self._snap_search_m * self._deg_lon_per_m
            dlat = self._snap_search_m * self._deg_lat_per_m
            lo, la = lon[lost], lat[lost]
            which, cand = self._tree.query(shapely.box(lo - dlon, la - dlat, lo + dlon, la + dlat))
            if which.size:
                pt = lost[which]
                dist = self._dist.many(cand, x[pt], y[pt])
                # Per point: the smallest grid index among those within _TIE_M of the nearest.
                order = np.lexsort((cand, which))
                which, cand, dist = which[order], cand[order], dist[order]
                first = np.ones(which.size, dtype=bool)
                np.not_equal(which[1:], which[:-1], out=first[1:])
                starts = np.flatnonzero(first)
                sizes = np.diff(np.append(starts, which.size))
                near = dist <= np.repeat(np.minimum.reduceat(dist, starts) + _TIE_M, sizes)
                pick = _first_true(near, starts)
                pt = lost[which[pick]]
                dist = dist[pick]
                ok = _round2_array(dist / scale[pt]) <= self.snap_tolerance_m
                pt = pt[ok]
                g[pt] = cand[pick][ok]
                d[pt] = dist[ok]
                snapped_out[pt] = True
        resolved = g >= 0
        grid_out[:] = g
        distance_out[:] = _round2_array(d / scale)
        if with_block:
            b = self._blocks.locate_many(lon, lat)
            block_out[:] = np.where(resolved, b, -1)
