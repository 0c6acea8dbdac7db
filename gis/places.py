"""Named places (landmarks, door addresses) and the process-wide gazetteer for address search.

The gazetteer holds every territory unit (its name at a representative point, with its own and its
ancestors' codes) and every `Place` row. A place's unit codes are what the current territory index says
for its point when the point resolves, else the codes stored with it, so search results always carry a
hierarchy consistent with the live territory.

Each process builds the gazetteer on first use and rebuilds it when the territory data version or the
places change (count, last id, last edit), checking at most every ``GIS_VERSION_CHECK_S`` seconds, the
way `gis.locator` follows the index. A rebuild happens in the calling thread; other threads keep using
the previous gazetteer meanwhile.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import shapely
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max

from audit.services import audit_record
from gis.gazetteer import (
    KINDS,
    Candidate,
    Gazetteer,
    PlaceRecord,
    normalize_address,
    read_csv_records,
    read_geojson_records,
)
from gis.geocoding import InvalidCoordinate, geocode_point
from gis.index import LAYERS, TerritoryIndex
from gis.locator import UnitRecord, get_index, load_units
from gis.models import Place
from gis.selectors import territory_version

__all__ = [
    "PLACE_KINDS",
    "SEARCH_KINDS",
    "PlaceRecord",
    "PlacesImportResult",
    "address_search",
    "gazetteer_build",
    "get_gazetteer",
    "places_import",
    "read_places_file",
    "reset",
    "reverse_geocode",
]

PLACE_KINDS: Final = tuple(str(kind) for kind in Place.Kind.values)
SEARCH_KINDS: Final = KINDS
MAX_QUERY_CHARS: Final = 200
MAX_LIMIT: Final = 50
MAX_REVERSE_RADIUS_M: Final = 5000.0


# ---------------------------------------------------------------------------------------------
# Building the gazetteer
# ---------------------------------------------------------------------------------------------


def _unit_records(units: Sequence[UnitRecord]) -> list[PlaceRecord]:
    """One record per territory unit at a point inside it, with its own and its ancestors' codes."""
    if not units:
        return []
    parent_of = {u.code: (u.layer, u.parent_code) for u in units}
    points = shapely.point_on_surface(np.array([u.geometry for u in units], dtype=object))
    xy = shapely.get_coordinates(points)
    records = []
    for unit, (lon, lat) in zip(units, xy, strict=True):
        codes = {unit.layer: unit.code}
        parent = unit.parent_code
        # Bounded by the layer depth; a broken chain (missing parent) just stops early.
        while parent is not None and parent in parent_of:
            layer, next_parent = parent_of[parent]
            codes[layer] = parent
            parent = next_parent
        records.append(PlaceRecord(unit.name, unit.layer, float(lon), float(lat), codes))
    return records


def _place_codes(index: TerritoryIndex, places: Sequence[PlaceRecord]) -> list[dict[str, str] | None]:
    """The territory codes at each place's point, or None where the point resolves to no grid."""
    if not places or len(index) == 0:
        return [None] * len(places)
    lon = np.array([p.lon for p in places], dtype=np.float64)
    lat = np.array([p.lat for p in places], dtype=np.float64)
    found = index.geocode_many(lon, lat, with_block=True)
    out: list[dict[str, str] | None] = []
    for i in range(len(places)):
        if found["grid_code"][i] is None:
            out.append(None)
            continue
        codes = {layer: found[f"{layer}_code"][i] for layer in LAYERS}
        out.append({layer: code for layer, code in codes.items() if code is not None})
    return out


def gazetteer_build(
    *, units: Sequence[UnitRecord], places: Sequence[PlaceRecord], index: TerritoryIndex
) -> Gazetteer:
    """A gazetteer of the territory units and the given places (unit codes refreshed from the index)."""
    refreshed = [
        p if codes is None else PlaceRecord(p.name, p.kind, p.lon, p.lat, codes, p.aliases)
        for p, codes in zip(places, _place_codes(index, places), strict=True)
    ]
    return Gazetteer([*_unit_records(units), *refreshed])


def _place_rows() -> list[PlaceRecord]:
    rows = Place.objects.order_by("id").values_list("name", "kind", "lon", "lat", "unit_codes", "aliases")
    records = []
    for name, kind, lon, lat, codes, aliases in rows.iterator(chunk_size=10000):
        # A row edited outside the import (shell, SQL) must not take address search down for everyone.
        if kind not in PLACE_KINDS or not name.strip() or not (abs(lon) <= 180.0 and abs(lat) <= 90.0):
            continue
        records.append(
            PlaceRecord(
                name,
                kind,
                lon,
                lat,
                {str(k): str(v) for k, v in codes.items()} if isinstance(codes, dict) else None,
                tuple(str(a) for a in aliases) if isinstance(aliases, list) else (),
            )
        )
    return records


def places_signature() -> tuple[int, int, str]:
    """Changes whenever a place is added, removed or edited: (count, last id, last edit)."""
    row = Place.objects.aggregate(n=Count("id"), last_id=Max("id"), last_edit=Max("updated_at"))
    return int(row["n"] or 0), int(row["last_id"] or 0), str(row["last_edit"] or "")


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gazetteer: Gazetteer | None = None
        self.key: tuple[Any, ...] | None = None
        self.checked_at = 0.0


_cache = _Cache()


def get_gazetteer() -> Gazetteer:
    """The gazetteer for the current territory version and places (built or rebuilt as needed)."""
    now = time.monotonic()
    current = _cache.gazetteer
    if current is not None and now - _cache.checked_at < settings.GIS_VERSION_CHECK_S:
        return current
    key = (territory_version(), places_signature())
    _cache.checked_at = now
    if current is not None and key == _cache.key:
        return current
    with _cache.lock:
        if _cache.gazetteer is not None and _cache.key == key:
            return _cache.gazetteer
        gazetteer = gazetteer_build(units=load_units(), places=_place_rows(), index=get_index())
        _cache.gazetteer, _cache.key = gazetteer, key
        return gazetteer


def reset() -> None:
    """Forget the cached gazetteer (tests; after a bulk change within this process)."""
    with _cache.lock:
        _cache.gazetteer, _cache.key, _cache.checked_at = None, None, 0.0


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlacesImportResult:
    """What a places import did."""

    created: int
    skipped: int
    deleted: int


def read_places_file(
    path: str | Path, *, crs: str = "wgs84", default_kind: str | None = None
) -> list[PlaceRecord]:
    """Places from a CSV or GeoJSON file, in WGS-84; ValueError with a one-line message on bad input."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"file not found: {file}")
    suffix = file.suffix.lower()
    if suffix == ".csv":
        try:
            records = read_csv_records(file, crs=crs)
        except csv.Error as exc:
            raise ValueError(f"{file}: not a readable CSV file ({exc})") from None
    elif suffix in (".geojson", ".json"):
        try:
            records = read_geojson_records(file, crs=crs, default_kind=default_kind)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{file}: not a valid GeoJSON file ({type(exc).__name__}: {exc})") from None
    else:
        raise ValueError(f"{file}: unknown file extension {suffix or '(none)'!r}; expected .csv or .geojson")
    for number, record in enumerate(records, start=1):
        if record.kind not in PLACE_KINDS:
            raise ValueError(
                f"{file}: place {number} ({record.name!r}) has kind {record.kind!r}; a place is one of "
                f"{', '.join(PLACE_KINDS)} (territory units come from gis_import)"
            )
    return records


@transaction.atomic
def places_import(
    *,
    records: Iterable[PlaceRecord],
    replace: bool = False,
    actor: Any = None,
    source: str = "system",
    origin: str = "",
    os_user: str = "",
) -> PlacesImportResult:
    """Store places: replace all existing ones, or append skipping exact duplicates (name, kind, point).

    Recorded on the audit chain (`places_import`) in the same transaction; `origin` names the file.
    """
    items = list(records)
    for record in items:
        if record.kind not in PLACE_KINDS:
            raise ValueError(
                f"place {record.name!r}: kind {record.kind!r} is not one of {', '.join(PLACE_KINDS)}"
            )
    deleted = Place.objects.all().delete()[0] if replace else 0

    def key(name: str, kind: str, lon: float, lat: float) -> tuple[str, str, float, float]:
        return name, kind, round(lon, 7), round(lat, 7)

    seen = (
        set() if replace else {key(*row) for row in Place.objects.values_list("name", "kind", "lon", "lat")}
    )
    new: list[Place] = []
    for record in items:
        k = key(record.name, record.kind, record.lon, record.lat)
        if k in seen:
            continue
        seen.add(k)
        new.append(
            Place(
                name=record.name,
                kind=record.kind,
                lon=record.lon,
                lat=record.lat,
                aliases=list(record.aliases),
                unit_codes=dict(record.unit_codes or {}),
            )
        )
    Place.objects.bulk_create(new, batch_size=2000)
    result = PlacesImportResult(created=len(new), skipped=len(items) - len(new), deleted=deleted)
    audit_record(
        action="places_import",
        object_type="place",
        actor=actor,
        source=source,
        data={
            "file": origin,
            "mode": "replace" if replace else "append",
            "records": len(items),
            "created": result.created,
            "skipped": result.skipped,
            "deleted": result.deleted,
            **({"os_user": os_user} if os_user else {}),
        },
    )
    return result


# ---------------------------------------------------------------------------------------------
# Search and reverse geocoding
# ---------------------------------------------------------------------------------------------


def _hierarchy(index: TerritoryIndex, codes: dict[str, str]) -> dict[str, dict[str, str | None] | None]:
    out: dict[str, dict[str, str | None] | None] = {}
    for layer in LAYERS:
        code = codes.get(layer)
        if code is None:
            out[layer] = None
            continue
        unit = index.unit(code)
        out[layer] = {"code": code, "name": unit.name if unit is not None else None}
    return out


def _candidate_dict(index: TerritoryIndex, candidate: Candidate) -> dict[str, Any]:
    return {
        "name": candidate.name,
        "kind": candidate.kind,
        "lon": round(candidate.lon, 7),
        "lat": round(candidate.lat, 7),
        "score": candidate.score,
        "matched": candidate.matched,
        **_hierarchy(index, candidate.unit_codes),
    }


def address_search(*, q: str, limit: int = 10, kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """Ranked candidates (WGS-84) for a free-text address; InvalidCoordinate names a bad parameter."""
    if not q.strip():
        raise InvalidCoordinate("q", "must not be empty")
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidCoordinate("q", f"at most {MAX_QUERY_CHARS} characters")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidCoordinate("limit", f"must lie between 1 and {MAX_LIMIT}")
    if kinds is not None:
        unknown = [k for k in kinds if k not in SEARCH_KINDS]
        if unknown or not kinds:
            raise InvalidCoordinate(
                "kind", f"unknown kind {unknown[0] if unknown else ''!r}; expected {', '.join(SEARCH_KINDS)}"
            )
    found = get_gazetteer().search(q, limit=limit, kinds=kinds)
    index = get_index()
    return {
        "query": q,
        "normalized": normalize_address(q),
        "count": len(found),
        "candidates": [_candidate_dict(index, c) for c in found],
    }


def reverse_geocode(*, lon: Any, lat: Any, crs: str = "wgs84", radius_m: float = 500.0) -> dict[str, Any]:
    """The point's geocode result plus the nearest landmark or door address within radius_m, or None."""
    if not (0.0 <= radius_m <= MAX_REVERSE_RADIUS_M):
        raise InvalidCoordinate("radius", f"must lie between 0 and {MAX_REVERSE_RADIUS_M:g} metres")
    result = geocode_point(lon=lon, lat=lat, crs=crs)
    nearest = get_gazetteer().reverse(
        result["lon"], result["lat"], max_distance_m=radius_m, kinds=PLACE_KINDS
    )
    place = None
    if nearest is not None:
        place = {
            "name": nearest.name,
            "kind": nearest.kind,
            "lon": round(nearest.lon, 7),
            "lat": round(nearest.lat, 7),
            "distance_m": round(float(nearest.distance_m or 0.0), 2),
        }
    result["place"] = place
    return result
