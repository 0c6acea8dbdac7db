"""Geocoding services: a coordinate in any supported datum → the territory hierarchy."""

from __future__ import annotations

import math
from typing import Any

from gis.datums import canonical_crs, to_wgs84
from gis.index import GeocodeError, OutsideTerritory
from gis.locator import get_index

__all__ = ["GeocodeError", "InvalidCoordinate", "OutsideTerritory", "geocode_point", "parse_coordinate"]


class InvalidCoordinate(GeocodeError):
    """A coordinate or datum that cannot be geocoded; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_coordinate(field: str, value: Any) -> float:
    """A finite float within range for "lon" or "lat", else InvalidCoordinate naming the field."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidCoordinate(field, "a number is required")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidCoordinate(field, f"not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise InvalidCoordinate(field, "must be a finite number")
    limit = 180.0 if field == "lon" else 90.0
    if not -limit <= number <= limit:
        raise InvalidCoordinate(field, f"must lie between -{limit:g} and {limit:g}")
    return number


def geocode_point(*, lon: Any, lat: Any, crs: str = "wgs84") -> dict[str, Any]:
    """Resolve one point to district, street, community, grid and block (raises GeocodeError)."""
    x = parse_coordinate("lon", lon)
    y = parse_coordinate("lat", lat)
    try:
        datum = canonical_crs(crs or "wgs84")
    except ValueError as exc:
        raise InvalidCoordinate("crs", str(exc)) from None
    if datum in ("wgs84", "cgcs2000"):
        return get_index().geocode(x, y)
    wx, wy = to_wgs84(x, y, datum)
    result = get_index().geocode(wx, wy)
    result["input"] = {"lon": x, "lat": y, "crs": datum}
    return result
