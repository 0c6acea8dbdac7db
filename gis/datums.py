"""Conversions between the coordinate systems used by Chinese map data: WGS-84, GCJ-02 and BD-09.

* WGS-84 (EPSG:4326) is what GNSS receivers report and what the rest of this project stores.
* CGCS2000 (EPSG:4490), China's official geodetic datum, differs from WGS-84 by well under a
  metre, far below the accuracy of addresses and of the obfuscations below, so it is treated as
  WGS-84 and converted as the identity.
* GCJ-02 ("Mars coordinates", used by AMap/Gaode, Tencent and Google's China map tiles) is WGS-84
  plus a deliberate, nonlinear offset of a few hundred metres.
* BD-09 (Baidu) is GCJ-02 with a further polar-coordinate offset.

The forward formulas (WGS-84 -> GCJ-02, GCJ-02 <-> BD-09) are the widely published ones (e.g.
eviltransform, coordtransform, PRCoords), with the Krasovsky 1940 semi-major axis 6378245 m. There
is no closed-form inverse: the inverses here refine the usual one-step estimate with fixed-point
iterations of the forward transform (``x <- x - (f(x) - target)``), which converges to well under a
millimetre in a few steps; the one-step estimate alone is off by up to a few metres.

Outside China the obfuscation is not applied, and points are returned unchanged. Like the common
implementations this uses the rough bounding box 72.004 <= lon <= 137.8347 and
0.8293 <= lat <= 55.8271 (inclusive), tested on the *input* point of each conversion. The box also
covers parts of neighbouring countries (e.g. Seoul, Hanoi), which are then shifted too; points
within about a kilometre of the box edge may not round-trip exactly. Unlike some implementations
(coordtransform), the BD-09 step is skipped outside the box as well, so every conversion here is the
identity for points outside it.

Dependency decision: the PyPI package ``prcoords`` (1.0.2, the latest, released 2019-08) was
evaluated. It implements the same formulas correctly, but it is scalar only, takes and returns
(lat, lon) named tuples, emits a ``warnings.warn`` for every point outside China and has had no
release since 2019. Because dispatch needs numpy-vectorised conversion of whole columns, this small
module implements the formulas directly on numpy arrays instead of depending on it.

Every function takes longitude first. The ``*_many`` variants take array-likes (broadcast against
each other) and return float64 arrays; the scalar variants return a ``(lon, lat)`` tuple of floats
and share the array code, so both always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CHINA_BBOX",
    "SUPPORTED_CRS",
    "bd09_to_gcj02",
    "bd09_to_gcj02_many",
    "bd09_to_wgs84",
    "bd09_to_wgs84_many",
    "canonical_crs",
    "gcj02_to_bd09",
    "gcj02_to_bd09_many",
    "gcj02_to_wgs84",
    "gcj02_to_wgs84_many",
    "in_china",
    "to_wgs84",
    "to_wgs84_many",
    "wgs84_to_bd09",
    "wgs84_to_bd09_many",
    "wgs84_to_gcj02",
    "wgs84_to_gcj02_many",
]

FloatArray = NDArray[np.float64]
_Pair = tuple[FloatArray, FloatArray]

# Krasovsky 1940 semi-major axis and first eccentricity squared, as in the published GCJ-02 code.
_GCJ_A: Final = 6378245.0
_GCJ_EE: Final = 0.00669342162296594323
# Baidu's constant offsets and its angular factor (pi * 3000 / 180).
_BD_DLON: Final = 0.0065
_BD_DLAT: Final = 0.006
_X_PI: Final = np.pi * 3000.0 / 180.0

CHINA_BBOX: Final = (72.004, 0.8293, 137.8347, 55.8271)
"""(min_lon, min_lat, max_lon, max_lat) of the rough "inside China" test of the common implementations."""

# Eight fixed-point steps reach ~1e-13 degrees; the loop stops earlier once nothing moves.
_MAX_ITER: Final = 8
_TOL_DEG: Final = 1e-12


def _as_arrays(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    lon_a, lat_a = np.broadcast_arrays(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return lon_a, lat_a


def in_china(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """Whether points fall in the rough bounding box inside which the Chinese offsets apply."""
    lon_a, lat_a = _as_arrays(lon, lat)
    min_lon, min_lat, max_lon, max_lat = CHINA_BBOX
    return (lon_a >= min_lon) & (lon_a <= max_lon) & (lat_a >= min_lat) & (lat_a <= max_lat)


def _gcj_offset(lon: FloatArray, lat: FloatArray) -> _Pair:
    """The GCJ-02 offset in degrees at a WGS-84 point, without the China test."""
    x = lon - 105.0
    y = lat - 35.0
    x_pi = x * np.pi
    y_pi = y * np.pi
    common = 20.0 * np.sin(6.0 * x_pi) + 20.0 * np.sin(2.0 * x_pi)
    sqrt_abs_x = np.sqrt(np.abs(x))
    d_lat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * sqrt_abs_x
        + (
            common
            + 20.0 * np.sin(y_pi)
            + 40.0 * np.sin(y_pi / 3.0)
            + 160.0 * np.sin(y_pi / 12.0)
            + 320.0 * np.sin(y_pi / 30.0)
        )
        * 2.0
        / 3.0
    )
    d_lon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * sqrt_abs_x
        + (
            common
            + 20.0 * np.sin(x_pi)
            + 40.0 * np.sin(x_pi / 3.0)
            + 150.0 * np.sin(x_pi / 12.0)
            + 300.0 * np.sin(x_pi / 30.0)
        )
        * 2.0
        / 3.0
    )
    # The offsets above are in metres; convert them to degrees on the Krasovsky ellipsoid.
    rad_lat = np.radians(lat)
    magic = 1.0 - _GCJ_EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat_deg = (d_lat * 180.0) / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sqrt_magic) * np.pi)
    d_lon_deg = (d_lon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    return d_lon_deg, d_lat_deg


def _wgs_to_gcj_raw(lon: FloatArray, lat: FloatArray) -> _Pair:
    d_lon, d_lat = _gcj_offset(lon, lat)
    return lon + d_lon, lat + d_lat


def _gcj_to_bd_raw(lon: FloatArray, lat: FloatArray) -> _Pair:
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + _BD_DLON, z * np.sin(theta) + _BD_DLAT


def _bd_to_gcj_estimate(lon: FloatArray, lat: FloatArray) -> _Pair:
    x = lon - _BD_DLON
    y = lat - _BD_DLAT
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _wgs_to_bd_raw(lon: FloatArray, lat: FloatArray) -> _Pair:
    return _gcj_to_bd_raw(*_wgs_to_gcj_raw(lon, lat))


def _invert(
    forward: Callable[[FloatArray, FloatArray], _Pair],
    target_lon: FloatArray,
    target_lat: FloatArray,
    lon: FloatArray,
    lat: FloatArray,
) -> _Pair:
    """Refine (lon, lat) so that forward(lon, lat) == target, by fixed-point iteration."""
    for _ in range(_MAX_ITER):
        f_lon, f_lat = forward(lon, lat)
        err_lon = f_lon - target_lon
        err_lat = f_lat - target_lat
        lon = lon - err_lon
        lat = lat - err_lat
        # NaN > tol is False, so NaN inputs cannot keep the loop going.
        if not (np.any(np.abs(err_lon) > _TOL_DEG) or np.any(np.abs(err_lat) > _TOL_DEG)):
            break
    return lon, lat


def _masked(lon: FloatArray, lat: FloatArray, converted: _Pair) -> _Pair:
    """Keep points outside China unchanged, as the standard algorithm does."""
    inside = in_china(lon, lat)
    return np.where(inside, converted[0], lon), np.where(inside, converted[1], lat)


def wgs84_to_gcj02_many(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    """WGS-84 -> GCJ-02 for arrays of points."""
    lon_a, lat_a = _as_arrays(lon, lat)
    return _masked(lon_a, lat_a, _wgs_to_gcj_raw(lon_a, lat_a))


def gcj02_to_wgs84_many(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    """GCJ-02 -> WGS-84 for arrays of points, iterated to sub-millimetre accuracy."""
    lon_a, lat_a = _as_arrays(lon, lat)
    d_lon, d_lat = _gcj_offset(lon_a, lat_a)
    start_lon, start_lat = lon_a - d_lon, lat_a - d_lat
    return _masked(lon_a, lat_a, _invert(_wgs_to_gcj_raw, lon_a, lat_a, start_lon, start_lat))


def gcj02_to_bd09_many(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    """GCJ-02 -> BD-09 for arrays of points."""
    lon_a, lat_a = _as_arrays(lon, lat)
    return _masked(lon_a, lat_a, _gcj_to_bd_raw(lon_a, lat_a))


def bd09_to_gcj02_many(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    """BD-09 -> GCJ-02 for arrays of points, iterated to sub-millimetre accuracy."""
    lon_a, lat_a = _as_arrays(lon, lat)
    start = _bd_to_gcj_estimate(lon_a, lat_a)
    return _masked(lon_a, lat_a, _invert(_gcj_to_bd_raw, lon_a, lat_a, *start))


def wgs84_to_bd09_many(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    """WGS-84 -> BD-09 for arrays of points."""
    lon_a, lat_a = _as_arrays(lon, lat)
    return _masked(lon_a, lat_a, _wgs_to_bd_raw(lon_a, lat_a))


def bd09_to_wgs84_many(lon: ArrayLike, lat: ArrayLike) -> _Pair:
    """BD-09 -> WGS-84 for arrays of points, iterated to sub-millimetre accuracy."""
    lon_a, lat_a = _as_arrays(lon, lat)
    gcj_lon, gcj_lat = _bd_to_gcj_estimate(lon_a, lat_a)
    d_lon, d_lat = _gcj_offset(gcj_lon, gcj_lat)
    # Invert the composed transform directly, so the error does not accumulate over two inversions.
    converted = _invert(_wgs_to_bd_raw, lon_a, lat_a, gcj_lon - d_lon, gcj_lat - d_lat)
    return _masked(lon_a, lat_a, converted)


def _scalar(func: Callable[[ArrayLike, ArrayLike], _Pair], lon: float, lat: float) -> tuple[float, float]:
    out_lon, out_lat = func(lon, lat)
    return float(out_lon), float(out_lat)


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """WGS-84 -> GCJ-02 for one point."""
    return _scalar(wgs84_to_gcj02_many, lon, lat)


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 -> WGS-84 for one point, iterated to sub-millimetre accuracy."""
    return _scalar(gcj02_to_wgs84_many, lon, lat)


def gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 -> BD-09 for one point."""
    return _scalar(gcj02_to_bd09_many, lon, lat)


def bd09_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """BD-09 -> GCJ-02 for one point, iterated to sub-millimetre accuracy."""
    return _scalar(bd09_to_gcj02_many, lon, lat)


def wgs84_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    """WGS-84 -> BD-09 for one point."""
    return _scalar(wgs84_to_bd09_many, lon, lat)


def bd09_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """BD-09 -> WGS-84 for one point, iterated to sub-millimetre accuracy."""
    return _scalar(bd09_to_wgs84_many, lon, lat)


SUPPORTED_CRS: Final = ("wgs84", "gcj02", "bd09", "cgcs2000")
"""Canonical names accepted by :func:`to_wgs84`; "EPSG:4326" and "EPSG:4490" are accepted too."""

_CRS_ALIASES: Final = {
    "wgs84": "wgs84",
    "wgs-84": "wgs84",
    "epsg:4326": "wgs84",
    "cgcs2000": "cgcs2000",
    "epsg:4490": "cgcs2000",
    "gcj02": "gcj02",
    "gcj-02": "gcj02",
    "bd09": "bd09",
    "bd-09": "bd09",
}


def canonical_crs(crs: str) -> str:
    """The canonical name ("wgs84", "gcj02", "bd09" or "cgcs2000") for a case-insensitive crs name."""
    key = crs.strip().lower() if isinstance(crs, str) else None
    if key is None or key not in _CRS_ALIASES:
        raise ValueError(
            f"unknown crs {crs!r}; accepted values (case-insensitive): "
            f"{', '.join(SUPPORTED_CRS)}, EPSG:4326 (= wgs84), EPSG:4490 (= cgcs2000)"
        )
    return _CRS_ALIASES[key]


def to_wgs84_many(lon: ArrayLike, lat: ArrayLike, crs: str) -> _Pair:
    """Convert arrays of points from ``crs`` to WGS-84 (CGCS2000 is taken as WGS-84)."""
    name = canonical_crs(crs)
    if name == "gcj02":
        return gcj02_to_wgs84_many(lon, lat)
    if name == "bd09":
        return bd09_to_wgs84_many(lon, lat)
    lon_a, lat_a = _as_arrays(lon, lat)
    return lon_a.copy(), lat_a.copy()


def to_wgs84(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """Convert one point from ``crs`` to WGS-84 (CGCS2000 is taken as WGS-84)."""
    out_lon, out_lat = to_wgs84_many(lon, lat, crs)
    return float(out_lon), float(out_lat)
