"""The process-wide territory index, built from the database and rebuilt when the data version changes.

Each process keeps one `TerritoryIndex` (and, on first use, an `AreaResolver`) in memory. At most every
`GIS_VERSION_CHECK_S` seconds a caller reads the one-row territory version; when another process has
imported new data the index is rebuilt in the calling thread while the others keep using the old one,
then swapped in. So every process notices a new version within seconds and no request waits on a lock
held during a rebuild except the one doing it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from django.conf import settings

from gis.areas import AreaResolver
from gis.index import TerritoryIndex
from gis.models import TerritoryUnit
from gis.selectors import territory_version


@dataclass(slots=True)
class UnitRecord:
    """A territory unit as the in-memory structures take it."""

    layer: str
    code: str
    name: str
    parent_code: str | None
    geometry: Any


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.index: TerritoryIndex | None = None
        self.areas: AreaResolver | None = None
        self.areas_version = -1
        self.version = -1
        self.checked_at = 0.0
        self.units: list[UnitRecord] = []


_cache = _Cache()


def load_units() -> list[UnitRecord]:
    """Every territory unit from the database, geometry decoded in one vectorised call."""
    rows = list(
        TerritoryUnit.objects.order_by("layer", "code")
        .values_list("layer", "code", "name", "parent__code", "geometry_wkb")
        .iterator(chunk_size=10000)
    )
    if not rows:
        return []
    geoms = shapely.from_wkb(np.array([bytes(r[4]) for r in rows], dtype=object))
    return [UnitRecord(r[0], r[1], r[2], r[3], g) for r, g in zip(rows, geoms, strict=True)]


def _refresh(force: bool = False) -> None:
    now = time.monotonic()
    if not force and _cache.index is not None and now - _cache.checked_at < settings.GIS_VERSION_CHECK_S:
        return
    version = territory_version()
    _cache.checked_at = now
    if not force and _cache.index is not None and version == _cache.version:
        return
    with _cache.lock:
        if not force and _cache.index is not None and _cache.version == version:
            return
        units = load_units()
        index = TerritoryIndex.from_units(
            units,
            near_boundary_m=settings.GIS_NEAR_BOUNDARY_M,
            snap_tolerance_m=settings.GIS_SNAP_TOLERANCE_M,
            version=version,
        )
        _cache.units, _cache.index, _cache.version = units, index, version
        _cache.areas, _cache.areas_version = None, -1
    if units:
        from config.runtime import freeze_heap

        freeze_heap(f"territory index version {version} ({len(units)} units)")


def get_index() -> TerritoryIndex:
    """The current territory index of this process (built or rebuilt as needed)."""
    _refresh()
    assert _cache.index is not None
    return _cache.index


def get_area_resolver() -> AreaResolver:
    """The area resolver for the current territory version (built on first use)."""
    _refresh()
    with _cache.lock:
        if _cache.areas is None or _cache.areas_version != _cache.version:
            _cache.areas = AreaResolver.from_units(_cache.units)
            _cache.areas_version = _cache.version
        return _cache.areas


def reset() -> None:
    """Forget the cached index (tests; after a bulk change within this process)."""
    with _cache.lock:
        _cache.index, _cache.areas, _cache.version, _cache.checked_at = None, None, -1, 0.0
        _cache.units = []
