"""Writes for territory data: loading units and bumping the data version."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import shapely
from django.db import transaction
from django.db.models import F

from audit.services import audit_record
from gis.geometry import areas_m2
from gis.models import LAYER_ORDER, TerritoryUnit, TerritoryVersion


class UnitLike(Protocol):
    """Anything with the attributes of a territory unit record (e.g. gis.citygen.Unit)."""

    @property
    def layer(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def parent_code(self) -> str | None: ...
    @property
    def geometry(self) -> shapely.Geometry: ...


def territory_version_bump() -> int:
    """Increase the territory data version by one and return the new value (row-locked).

    Not audited itself: each caller records the change that bumped the version on the audit chain.
    """
    row, _ = TerritoryVersion.objects.select_for_update().get_or_create(pk=1)
    TerritoryVersion.objects.filter(pk=row.pk).update(version=F("version") + 1)
    row.refresh_from_db()
    return row.version


@transaction.atomic
def territory_replace(
    *,
    units: Iterable[UnitLike],
    batch_size: int = 2000,
    actor: Any = None,
    source: str = "system",
    origin: str = "",
    os_user: str = "",
) -> int:
    """Replace the whole territory with the given units (all layers), bump the version, audit it.

    `origin` names where the units came from (a file, a generator and its seed) on the audit row.
    """
    by_layer: dict[str, list[UnitLike]] = {layer: [] for layer in LAYER_ORDER}
    for unit in units:
        if unit.layer not in by_layer:
            raise ValueError(f"unknown layer {unit.layer!r}")
        by_layer[unit.layer].append(unit)
    # Children first: parents are protected while anything refers to them.
    for layer in reversed(LAYER_ORDER):
        TerritoryUnit.objects.filter(layer=layer).delete()
    version = territory_version_bump()
    for layer in LAYER_ORDER:
        _insert_layer(layer, by_layer[layer], version=version, batch_size=batch_size)
    audit_record(
        action="territory_replace",
        object_type="territory",
        actor=actor,
        source=source,
        data={
            "origin": origin,
            "features": sum(len(layer_units) for layer_units in by_layer.values()),
            "layers": {str(layer): len(layer_units) for layer, layer_units in by_layer.items()},
            "version": version,
            **({"os_user": os_user} if os_user else {}),
        },
    )
    return version


def _insert_layer(layer: str, units: Sequence[UnitLike], *, version: int, batch_size: int) -> None:
    if not units:
        return
    parent_codes = {u.parent_code for u in units if u.parent_code}
    parent_ids: dict[str, int] = {}
    if parent_codes:
        parent_layer = {
            "street": "district",
            "community": "street",
            "grid": "community",
            "block": "community",
        }[layer]
        parent_ids = dict(
            TerritoryUnit.objects.filter(layer=parent_layer, code__in=parent_codes).values_list("code", "id")
        )
        missing = sorted(parent_codes - set(parent_ids))
        if missing:
            raise ValueError(f"{layer}: unknown parent codes {', '.join(missing[:10])}")
    geoms = np.array([u.geometry for u in units], dtype=object)
    wkbs = shapely.to_wkb(geoms, output_dimension=2)
    bounds = shapely.bounds(geoms)
    areas = areas_m2(geoms)
    rows = [
        TerritoryUnit(
            layer=layer,
            code=u.code,
            name=u.name,
            parent_id=parent_ids[u.parent_code] if u.parent_code else None,
            geometry_wkb=bytes(wkbs[i]),
            min_lon=float(bounds[i, 0]),
            min_lat=float(bounds[i, 1]),
            max_lon=float(bounds[i, 2]),
            max_lat=float(bounds[i, 3]),
            area_m2=float(areas[i]),
            version=version,
        )
        for i, u in enumerate(units)
    ]
    TerritoryUnit.objects.bulk_create(rows, batch_size=batch_size)
