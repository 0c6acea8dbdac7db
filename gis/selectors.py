"""Reads of territory data."""

from __future__ import annotations

import hashlib

from gis.models import LAYER_ORDER, TerritoryUnit, TerritoryVersion


def territory_version() -> int:
    """The current territory data version (0 when nothing was ever loaded)."""
    row = TerritoryVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(row or 0)


def territory_counts() -> dict[str, int]:
    """The number of units per layer."""
    counts: dict[str, int] = {str(layer): 0 for layer in LAYER_ORDER}
    for layer in LAYER_ORDER:
        counts[str(layer)] = TerritoryUnit.objects.filter(layer=layer).count()
    return counts


def territory_digest() -> str:
    """A SHA-256 over every unit's layer, code, name, parent code and WKB, in a fixed order."""
    digest = hashlib.sha256()
    rows = (
        TerritoryUnit.objects.order_by("layer", "code")
        .values_list("layer", "code", "name", "parent__code", "geometry_wkb")
        .iterator(chunk_size=5000)
    )
    for layer, code, name, parent_code, wkb in rows:
        digest.update(f"{layer}\x1f{code}\x1f{name}\x1f{parent_code or ''}\x1f".encode())
        digest.update(bytes(wkb))
        digest.update(b"\x1e")
    return digest.hexdigest()
