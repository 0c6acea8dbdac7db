"""Territory units as GeoJSON for maps, rendered once per territory version, level and simplification.

A level (district, street, community, grid, block) is loaded from the database on first request and
every feature is serialised to a JSON string once; requests then only pick features (by bounding box
and ancestor) and join the strings, so even 100,000 grids serve in tens of milliseconds. Everything
is dropped when the territory data version changes (checked at most every ``GIS_VERSION_CHECK_S``).

Coordinates are WGS-84 rounded to 7 decimals (about 1 cm). Shared vertices round alike, so neighbours
stay seamless. ``simplify`` (metres) simplifies in an azimuthal equidistant frame centred on the level
with `shapely.coverage_simplify`, after `shapely.coverage_clean` has noded the level into an
edge-matched coverage, so neighbours keep one shared, simplified edge (no gaps, no slivers); a level
that cannot be made a coverage (overlaps) is simplified polygon by polygon with topology preserved.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import shapely
from django.conf import settings
from pyproj import CRS, Transformer

from gis.models import LAYER_ORDER, PARENT_LAYER, TerritoryUnit
from gis.selectors import territory_version

__all__ = [
    "LEVELS",
    "MAX_SIMPLIFY_M",
    "FeatureQuery",
    "FeatureQueryError",
    "parse_feature_query",
    "reset",
    "territory_geojson",
]

LEVELS: Final = tuple(str(layer) for layer in LAYER_ORDER)
MAX_SIMPLIFY_M: Final = 10_000.0
COORD_DECIMALS: Final = 7
# Rendered (level, tolerance) feature sets kept per process; each is a few MB to tens of MB.
_RENDERED_KEEP: Final = 12


class FeatureQueryError(ValueError):
    """A bad query parameter; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class FeatureQuery:
    """A validated request for one level's features."""

    level: str
    simplify_m: float = 0.0
    bbox: tuple[float, float, float, float] | None = None
    parent: str | None = None

    def etag(self, version: int) -> str:
        """A strong validator for the response to this query at a territory version."""
        key = f"{self.level}|{self.simplify_m}|{self.bbox}|{self.parent}".encode()
        return f'"territory-{version}-{hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16]}"'


def _ancestor_layers(level: str) -> list[str]:
    layers: list[str] = []
    parent = PARENT_LAYER.get(level)
    while parent is not None:
        layers.append(str(parent))
        parent = PARENT_LAYER.get(parent)
    return layers


def parse_feature_query(level: str, params: Mapping[str, str]) -> FeatureQuery:
    """Validate level, simplify, bbox and parent, or raise FeatureQueryError naming the parameter."""
    if level not in LEVELS:
        raise FeatureQueryError("level", f"unknown level {level[:40]!r}; expected one of {', '.join(LEVELS)}")
    simplify = 0.0
    raw = params.get("simplify")
    if raw not in (None, ""):
        try:
            simplify = float(str(raw))
        except ValueError:
            raise FeatureQueryError("simplify", f"not a number: {str(raw)[:40]!r}") from None
        if not (math.isfinite(simplify) and 0.0 <= simplify <= MAX_SIMPLIFY_M):
            raise FeatureQueryError("simplify", f"must be metres between 0 and {MAX_SIMPLIFY_M:g}")
        # Rounded so that near-identical requests share one cached rendering.
        simplify = round(simplify, 1)
    bbox = None
    raw = params.get("bbox")
    if raw not in (None, ""):
        bbox = _parse_bbox(str(raw))
    parent = params.get("parent") or None
    if parent is not None and not _ancestor_layers(level):
        raise FeatureQueryError("parent", "districts have no parent")
    return FeatureQuery(level=level, simplify_m=simplify, bbox=bbox, parent=parent)


def _parse_bbox(raw: str) -> tuple[float, float, float, float]:
    parts = raw.split(",")
    if len(parts) != 4:
        raise FeatureQueryError("bbox", "expected minlon,minlat,maxlon,maxlat (four numbers, WGS-84)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise FeatureQueryError("bbox", f"not four numbers: {raw[:80]!r}") from None
    min_lon, min_lat, max_lon, max_lat = values
    if not all(math.isfinite(v) for v in values):
        raise FeatureQueryError("bbox", "values must be finite numbers")
    if not (-180.0 <= min_lon <= max_lon <= 180.0):
        raise FeatureQueryError("bbox", "longitudes must satisfy -180 <= minlon <= maxlon <= 180")
    if not (-90.0 <= min_lat <= max_lat <= 90.0):
        raise FeatureQueryError("bbox", "latitudes must satisfy -90 <= minlat <= maxlat <= 90")
    return min_lon, min_lat, max_lon, max_lat


@dataclass(slots=True)
class _Level:
    """One level's units, in code order, with what filtering needs."""

    level: str
    codes: list[str]
    names: list[str]
    parent_codes: list[str | None]
    geoms: np.ndarray
    bounds: np.ndarray
    ancestors: dict[str, np.ndarray]
    upper_layer_of: dict[str, str]


@dataclass(slots=True)
class _Rendered:
    features: list[str]
    whole: bytes | None = None


@dataclass(slots=True)
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    version: int = -1
    checked_at: float = 0.0
    # Keyed by version too, so that work finished after a version change can never be served as new.
    levels: dict[tuple[int, str], _Level] = field(default_factory=dict)
    rendered: OrderedDict[tuple[int, str, float], _Rendered] = field(default_factory=OrderedDict)


_cache = _Cache()


def reset() -> None:
    """Forget every cached level (tests; after a bulk change within this process)."""
    with _cache.lock:
        _cache.version, _cache.checked_at = -1, 0.0
        _cache.levels.clear()
        _cache.rendered.clear()


def _current_version() -> int:
    now = time.monotonic()
    if _cache.version >= 0 and now - _cache.checked_at < settings.GIS_VERSION_CHECK_S:
        return _cache.version
    version = territory_version()
    with _cache.lock:
        _cache.checked_at = now
        if version != _cache.version:
            _cache.version = version
            _cache.levels.clear()
            _cache.rendered.clear()
    return version


def _load_level(level: str) -> _Level:
    rows = list(
        TerritoryUnit.objects.filter(layer=level)
        .order_by("code")
        .values_list("code", "name", "parent__code", "geometry_wkb")
        .iterator(chunk_size=10000)
    )
    geoms = (
        shapely.from_wkb(np.array([bytes(r[3]) for r in rows], dtype=object)) if rows else np.empty(0, object)
    )
    upper = _ancestor_layers(level)
    parent_of: dict[str, str | None] = {}
    upper_layer_of: dict[str, str] = {}
    if upper:
        for code, layer, parent in TerritoryUnit.objects.filter(layer__in=upper).values_list(
            "code", "layer", "parent__code"
        ):
            parent_of[code] = parent
            upper_layer_of[code] = layer
    ancestors: dict[str, np.ndarray] = {}
    current: list[str | None] = [r[2] for r in rows]
    for layer in upper:
        ancestors[layer] = np.array(current, dtype=object)
        current = [parent_of.get(c) if c is not None else None for c in current]
    return _Level(
        level=level,
        codes=[r[0] for r in rows],
        names=[r[1] for r in rows],
        parent_codes=[r[2] for r in rows],
        geoms=geoms,
        bounds=shapely.bounds(geoms) if rows else np.zeros((0, 4)),
        ancestors=ancestors,
        upper_layer_of=upper_layer_of,
    )


def _level(version: int, level: str) -> _Level:
    key = (version, level)
    data = _cache.levels.get(key)
    if data is None:
        with _cache.lock:
            data = _cache.levels.get(key)
            if data is None:
                data = _cache.levels[key] = _load_level(level)
    return data


def _metric_transformers(geoms: np.ndarray) -> tuple[Transformer, Transformer]:
    min_lon, min_lat, max_lon, max_lat = shapely.total_bounds(geoms)
    frame = CRS.from_proj4(
        f"+proj=aeqd +lat_0={(min_lat + max_lat) / 2:.10f} +lon_0={(min_lon + max_lon) / 2:.10f} "
        "+datum=WGS84 +units=m +no_defs"
    )
    return (
        Transformer.from_crs("EPSG:4326", frame, always_xy=True),
        Transformer.from_crs(frame, "EPSG:4326", always_xy=True),
    )


def _apply(geoms: np.ndarray, transformer: Transformer) -> np.ndarray:
    return np.asarray(
        shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    )


def _clean_coverage(metric: np.ndarray) -> np.ndarray | None:
    """The polygons as an edge-matched coverage (shared edges with identical vertices), or None."""
    if shapely.coverage_is_valid(metric):
        return metric
    try:
        # Real data (and the demo city) has T-junctions: a vertex of one polygon in the middle of its
        # neighbour's edge. Coverage simplification needs those noded, or neighbours drift apart.
        cleaned = np.asarray(shapely.coverage_clean(metric))
    except (AttributeError, shapely.errors.UnsupportedGEOSVersionError, shapely.errors.GEOSException):
        return None
    if shapely.is_empty(cleaned).any() or not shapely.coverage_is_valid(cleaned):
        return None
    return cleaned


def _simplified(data: _Level, tolerance_m: float) -> np.ndarray:
    forward, backward = _metric_transformers(data.geoms)
    metric = _apply(data.geoms, forward)
    coverage = _clean_coverage(metric)
    if coverage is not None:
        simple = np.asarray(shapely.coverage_simplify(coverage, tolerance_m))
    else:
        # Overlapping data: simplify each polygon on its own rather than invent a coverage.
        simple = np.asarray(shapely.simplify(metric, tolerance_m, preserve_topology=True))
    # Noding adds a vertex at every T-junction and the simplifier keeps them all, so a level of small,
    # plain polygons can come out heavier than it went in; then the original is the better answer.
    if shapely.get_num_coordinates(simple).sum() >= shapely.get_num_coordinates(metric).sum():
        return data.geoms
    return _apply(simple, backward)


def _render(data: _Level, tolerance_m: float) -> _Rendered:
    geoms = data.geoms
    if tolerance_m > 0 and len(geoms):
        geoms = _simplified(data, tolerance_m)
    if len(geoms):
        geoms = np.asarray(shapely.transform(geoms, lambda xy: np.round(xy, COORD_DECIMALS)))
    geometry_json = shapely.to_geojson(geoms) if len(geoms) else []
    level = json.dumps(data.level)
    features = []
    for code, name, parent, geometry in zip(
        data.codes, data.names, data.parent_codes, geometry_json, strict=True
    ):
        c = json.dumps(code, ensure_ascii=False)
        properties = (
            f'{{"code":{c},"name":{json.dumps(name, ensure_ascii=False)},'
            f'"parent_code":{json.dumps(parent, ensure_ascii=False)},"level":{level}}}'
        )
        features.append(f'{{"type":"Feature","id":{c},"geometry":{geometry},"properties":{properties}}}')
    return _Rendered(features)


def _rendered(version: int, data: _Level, tolerance_m: float) -> _Rendered:
    key = (version, data.level, tolerance_m)
    with _cache.lock:
        found = _cache.rendered.get(key)
        if found is not None:
            _cache.rendered.move_to_end(key)
            return found
    # Rendering runs outside the lock: a rare duplicate render beats stalling every other request.
    made = _render(data, tolerance_m)
    with _cache.lock:
        _cache.rendered[key] = made
        while len(_cache.rendered) > _RENDERED_KEEP:
            _cache.rendered.popitem(last=False)
    return made


def _selection(data: _Level, query: FeatureQuery) -> np.ndarray | None:
    """Indices of the units the query keeps, or None for all of them."""
    keep: np.ndarray | None = None
    if query.parent is not None:
        layer = data.upper_layer_of.get(query.parent)
        if layer is None:
            raise FeatureQueryError(
                "parent",
                f"no {' or '.join(data.ancestors) or 'parent unit'} with code {query.parent[:40]!r}",
            )
        keep = data.ancestors[layer] == query.parent
    if query.bbox is not None:
        min_lon, min_lat, max_lon, max_lat = query.bbox
        b = data.bounds
        near = (b[:, 0] <= max_lon) & (b[:, 2] >= min_lon) & (b[:, 1] <= max_lat) & (b[:, 3] >= min_lat)
        keep = near if keep is None else keep & near
        candidates = np.flatnonzero(keep)
        # Envelopes overlap more often than shapes do; the exact test keeps the answer tight.
        hits = shapely.intersects(data.geoms[candidates], shapely.box(*query.bbox))
        return candidates[np.asarray(hits, dtype=bool)]
    return None if keep is None else np.flatnonzero(keep)


def territory_geojson(query: FeatureQuery) -> tuple[int, bytes]:
    """The territory version and the FeatureCollection (UTF-8 JSON) for a validated query."""
    version = _current_version()
    data = _level(version, query.level)
    chosen = _selection(data, query)
    rendered = _rendered(version, data, query.simplify_m)
    if chosen is None and rendered.whole is not None:
        return version, rendered.whole
    features = rendered.features if chosen is None else [rendered.features[int(i)] for i in chosen]
    head = (
        f'{{"type":"FeatureCollection","level":{json.dumps(query.level)},"version":{version},'
        f'"count":{len(features)},"features":['
    )
    body = (head + ",".join(features) + "]}").encode()
    if chosen is None:
        rendered.whole = body
    return version, body
