"""Area resolution for warnings: which administrative/grid units an area covers, and how much of each.

Everything enters and leaves in WGS-84 lon/lat. Areas are measured in a Lambert azimuthal
equal-area projection (WGS-84 ellipsoid) centred on the units' bounding box: equal-area means every
area, and therefore every share, is preserved whatever the distance from the centre.

Polygon edges are straight in lon/lat, as GeoJSON defines them: both units and areas are densified
to :data:`DENSIFY_DEG` (~100 m) pieces before projection so that this holds in the metric frame to
well under a millimetre.

A share is the fraction of a unit's own area that the warning area covers (0 < share <= 1). Shares
at or below :data:`MIN_SHARE` (1e-6, i.e. 0.25 m² of a 500 m x 500 m grid) are slivers left by
edges that the area and a unit share (the remaining sub-millimetre projection and floating-point
differences) and are left out; likewise a share within MIN_SHARE of 1 is reported as exactly 1.

Speed (a district of the generated city against its 100,000 grids measured 25-80 ms on a 2-core
machine): the units are projected once into a
shapely STRtree, with a point inside each unit. A query projects and prepares the area and takes the
units whose envelopes meet it. Only units that the area's boundary crosses (found by querying the
tree with the boundary cut into short segments, predicate "intersects") and multipolygon units get
an exact, vectorised ``intersection``/``area``. Every other candidate is a connected unit that the
boundary misses, so it lies wholly inside the area (share 1, no intersection computed) or wholly
outside it; a vectorised point-in-polygon test of its inner point against the prepared area
decides. This replaces a prepared ``contains`` test per candidate, which measured about ten times
slower than the point test (32 ms against 2.4 ms for 25,000 candidates).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = [
    "DEFAULT_MAX_VERTICES",
    "MAX_CIRCLE_RADIUS_M",
    "MIN_SHARE",
    "UNIT_LAYERS",
    "AreaResolver",
    "Unit",
    "circle",
    "validate_area",
]

UNIT_LAYERS: Final = ("district", "street", "community", "grid", "block")
DEFAULT_MAX_VERTICES: Final = 10_000
MIN_SHARE: Final = 1e-6
# Edges are straight lines in lon/lat (as GeoJSON defines them) but would become straight lines in the
# metric frame if only their end points were projected; densifying to ~100 m first keeps the two within
# a fraction of a millimetre, so units sharing an edge with the area do not gain or lose slivers.
DENSIFY_DEG: Final = 0.001
MAX_CIRCLE_RADIUS_M: Final = 1_000_000.0

Area: TypeAlias = Polygon | MultiPolygon
Resolution: TypeAlias = dict[str, list[tuple[str, float]]]


def _aeqd(lon: float, lat: float) -> CRS:
    return CRS.from_proj4(
        f"+proj=aeqd +lat_0={float(lat):.10f} +lon_0={float(lon):.10f} +datum=WGS84 +units=m +no_defs"
    )


def _laea(lon: float, lat: float) -> CRS:
    return CRS.from_proj4(
        f"+proj=laea +lat_0={float(lat):.10f} +lon_0={float(lon):.10f} +datum=WGS84 +units=m +no_defs"
    )


def _project(geoms: Any, transformer: Transformer) -> Any:
    """Apply a pyproj transformer to shapely geometries (one or an array) in a single vectorised call."""
    return shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def circle(lon: float, lat: float, radius_m: float, *, quad_segs: int = 32) -> Polygon:
    """A circle of ``radius_m`` metres around a WGS-84 point, as a lon/lat polygon of 4*quad_segs sides."""
    if not (math.isfinite(lon) and math.isfinite(lat) and -180.0 <= lon <= 180.0 and -90.0 < lat < 90.0):
        raise ValueError(f"circle centre out of range: lon={lon}, lat={lat}")
    if not (math.isfinite(radius_m) and 0.0 < radius_m <= MAX_CIRCLE_RADIUS_M):
        raise ValueError(f"circle radius must be > 0 and <= {MAX_CIRCLE_RADIUS_M:.0f} m, got {radius_m}")
    # In an azimuthal equidistant frame centred on the point, distances from the centre are true
    # geodesic distances, so a planar circle there is the geodesic circle (its vertices exactly so).
    to_lonlat = Transformer.from_crs(_aeqd(lon, lat), "EPSG:4326", always_xy=True)
    local = Point(0.0, 0.0).buffer(radius_m, quad_segs=quad_segs)
    result = _project(local, to_lonlat)
    if not isinstance(result, Polygon) or not result.is_valid:
        # Happens when the circle crosses the antimeridian or a pole, where lon/lat polygons break.
        raise ValueError(f"a circle of {radius_m} m around ({lon}, {lat}) is not a valid lon/lat polygon")
    return result


def validate_area(area: object, *, max_vertices: int = DEFAULT_MAX_VERTICES) -> Area:
    """Check that ``area`` is a valid, non-empty lon/lat (Multi)Polygon within the vertex limit."""
    if not isinstance(area, Polygon | MultiPolygon):
        kind = area.geom_type if isinstance(area, BaseGeometry) else type(area).__name__
        raise ValueError(f"area must be a Polygon or MultiPolygon, got {kind}")
    if area.is_empty:
        raise ValueError("area is empty")
    vertices = int(shapely.get_num_coordinates(area))
    if vertices > max_vertices:
        raise ValueError(
            f"area has {vertices} vertices, more than the limit of {max_vertices}; simplify it first"
        )
    min_x, min_y, max_x, max_y = area.bounds
    if not all(math.isfinite(v) for v in area.bounds):
        raise ValueError("area has non-finite coordinates")
    if min_x < -180.0 or max_x > 180.0 or min_y < -90.0 or max_y > 90.0:
        raise ValueError(f"area is not in lon/lat degrees: bounds {area.bounds}")
    if not area.is_valid:
        raise ValueError(f"area geometry is invalid: {shapely.is_valid_reason(area)}")
    return area


@dataclass(frozen=True, slots=True)
class Unit:
    """An administrative or grid unit: layer, code, name, parent code and WGS-84 (Multi)Polygon."""

    layer: str
    code: str
    name: str
    parent_code: str | None
    geometry: Polygon | MultiPolygon


def _field(unit: Any, name: str) -> Any:
    if isinstance(unit, Mapping):
        return unit.get(name)
    return getattr(unit, name, None)


def _polygonal(geom: Any, label: str) -> Polygon | MultiPolygon:
    if not isinstance(geom, Polygon | MultiPolygon) or geom.is_empty:
        kind = geom.geom_type if isinstance(geom, BaseGeometry) else type(geom).__name__
        raise ValueError(f"unit {label}: geometry must be a non-empty Polygon or MultiPolygon, got {kind}")
    if geom.is_valid:
        return geom
    # Source boundaries often carry small self-intersections; repairing beats rejecting a whole layer.
    repaired = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(repaired) if isinstance(g, Polygon) and not g.is_empty]
    if not parts:
        raise ValueError(
            f"unit {label}: invalid geometry ({shapely.is_valid_reason(geom)}) cannot be repaired"
        )
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


class AreaResolver:
    """Resolves a warning area to the units it covers, per layer, with covered shares."""

    def __init__(
        self, units: Iterable[Any], *, max_vertices: int = DEFAULT_MAX_VERTICES, min_share: float = MIN_SHARE
    ) -> None:
        self.max_vertices = max_vertices
        self.min_share = min_share
        records: list[Unit] = []
        for i, raw in enumerate(units):
            layer, code = _field(raw, "layer"), _field(raw, "code")
            if not layer or code is None or code == "":
                raise ValueError(f"unit {i}: layer and code are required, got layer={layer!r}, code={code!r}")
            label = f"{layer}/{code}"
            parent = _field(raw, "parent_code")
            records.append(
                Unit(
                    layer=str(layer),
                    code=str(code),
                    name=str(_field(raw, "name") or ""),
                    parent_code=None if parent in (None, "") else str(parent),
                    geometry=_polygonal(_field(raw, "geometry"), label),
                )
            )
        self._units: tuple[Unit, ...] = tuple(records)
        self._by_key = {(u.layer, u.code): u for u in records}
        if len(self._by_key) != len(records):
            raise ValueError("unit (layer, code) pairs must be unique")
        known = [layer for layer in UNIT_LAYERS if any(u.layer == layer for u in records)]
        self.layers: tuple[str, ...] = tuple(known + sorted({u.layer for u in records} - set(known)))

        geoms = np.asarray([u.geometry for u in records], dtype=object)
        if len(records):
            min_x, min_y, max_x, max_y = shapely.total_bounds(geoms)
            centre = ((min_x + max_x) / 2.0, (min_y + max_y) / 2.0)
        else:
            centre = (0.0, 0.0)
        self.crs: CRS = _laea(*centre)
        self._to_metric = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        metric = _project(shapely.segmentize(geoms, DENSIFY_DEG), self._to_metric) if len(records) else geoms
        broken = np.flatnonzero(~shapely.is_valid(metric)) if len(records) else np.zeros(0, dtype=np.int64)
        for i in broken.tolist():
            # Projection can fold near-coincident vertices of a valid lon/lat polygon.
            metric[i] = _polygonal(metric[i], f"{records[i].layer}/{records[i].code} (projected)")
        self._metric = metric
        self._areas: NDArray[np.float64] = np.asarray(shapely.area(metric), dtype=np.float64)
        if len(records) and np.any(self._areas <= 0.0):
            bad = records[int(np.flatnonzero(self._areas <= 0.0)[0])]
            raise ValueError(f"unit {bad.layer}/{bad.code} has zero area")
        self._tree = shapely.STRtree(metric)
        # A point strictly inside each unit decides "inside or outside" for units the area's boundary
        # misses; that only holds for connected units, so multipolygons always take the exact path.
        inner = shapely.point_on_surface(metric) if len(records) else metric
        self._inner_x = np.asarray(shapely.get_x(inner), dtype=np.float64)
        self._inner_y = np.asarray(shapely.get_y(inner), dtype=np.float64)
        self._multi = np.asarray(shapely.get_type_id(metric) == 6, dtype=bool)
        # Cutting the area's boundary into pieces about one unit across keeps each piece's envelope, and
        # so its tree query, small.
        self._piece_m = float(np.median(np.sqrt(self._areas))) if len(records) else 1.0
        layer_index = {layer: i for i, layer in enumerate(self.layers)}
        self._layer_of = np.asarray([layer_index[u.layer] for u in records], dtype=np.int64)
        self._codes = np.asarray([u.code for u in records], dtype=object)
        code_order = sorted(range(len(records)), key=lambda i: records[i].code)
        self._code_rank = np.empty(len(records), dtype=np.int64)
        self._code_rank[code_order] = np.arange(len(records))

    @classmethod
    def from_units(cls, units: Iterable[Any], **kwargs: Any) -> AreaResolver:
        """Build from records (objects or mappings) with layer, code, name, parent_code and geometry."""
        return cls(units, **kwargs)

    def __len__(self) -> int:
        return len(self._units)

    @property
    def units(self) -> Sequence[Unit]:
        """The units, in the order given."""
        return self._units

    def unit(self, layer: str, code: str) -> Unit:
        """The unit with this layer and code (KeyError if absent)."""
        return self._by_key[(layer, code)]

    def _boundary_pieces(self, metric: Area) -> NDArray[np.object_]:
        """The area's boundary (outer and inner rings) as short two-point line segments."""
        rings = shapely.segmentize(shapely.boundary(metric), self._piece_m)
        coords = shapely.get_coordinates(rings)
        parts = shapely.get_parts(rings)
        counts = shapely.get_num_coordinates(parts)
        ring_of = np.repeat(np.arange(len(parts)), counts)
        # Consecutive coordinates of the same ring form a segment; the jump between rings does not.
        same_ring = ring_of[1:] == ring_of[:-1]
        starts, ends = coords[:-1][same_ring], coords[1:][same_ring]
        return np.asarray(shapely.linestrings(np.stack([starts, ends], axis=1)), dtype=object)

    def resolve(self, area: Area) -> Resolution:
        """Units per layer covered by ``area`` as (code, share) sorted by share descending, then code."""
        validate_area(area, max_vertices=self.max_vertices)
        result: Resolution = {layer: [] for layer in self.layers}
        if not self._units:
            return result
        metric = _project(shapely.segmentize(area, DENSIFY_DEG), self._to_metric)
        if not metric.is_valid:
            # Projection can, rarely, fold near-coincident vertices; a zero-width buffer restores validity.
            metric = metric.buffer(0)
        shapely.prepare(metric)
        candidates = self._tree.query(metric)
        if len(candidates) == 0:
            return result
        # Units crossed by the boundary need an exact intersection; every other connected unit lies
        # wholly inside or wholly outside the area, which one point-in-polygon test settles.
        pieces = self._boundary_pieces(metric)
        crossed = np.unique(self._tree.query(pieces, predicate="intersects")[1])
        rest = np.setdiff1d(candidates, crossed, assume_unique=True)
        exact = np.concatenate([crossed, rest[self._multi[rest]]])
        rest = rest[~self._multi[rest]]
        inside = rest[shapely.contains_xy(metric, self._inner_x[rest], self._inner_y[rest])]
        covered = shapely.area(shapely.intersection(self._metric[exact], metric))
        exact_share = covered / self._areas[exact]
        # Units whose uncovered part is itself a sliver count as fully covered.
        exact_share[exact_share >= 1.0 - self.min_share] = 1.0
        hits = np.concatenate([inside, exact])
        shares = np.concatenate([np.ones(len(inside)), exact_share])
        keep = shares > self.min_share
        hits, shares = hits[keep], shares[keep]
        order = np.lexsort((self._code_rank[hits], -shares, self._layer_of[hits]))
        hits, shares = hits[order], shares[order]
        layers = self._layer_of[hits]
        bounds = np.searchsorted(layers, np.arange(len(self.layers) + 1))
        for i, layer in enumerate(self.layers):
            lo, hi = bounds[i], bounds[i + 1]
            result[layer] = list(zip(self._codes[hits[lo:hi]].tolist(), shares[lo:hi].tolist(), strict=True))
        return result

    def resolve_circle(self, lon: float, lat: float, radius_m: float) -> Resolution:
        """Resolve a circle of ``radius_m`` metres around a WGS-84 point."""
        return self.resolve(circle(lon, lat, radius_m))
