"""Geometry helpers shared by import, loading and the index (no Django import)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from pyproj import CRS, Transformer


def local_equal_area_crs(lon: float, lat: float) -> CRS:
    """A Lambert azimuthal equal-area CRS centred on the data, for areas in square metres."""
    return CRS.from_proj4(f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m")


def areas_m2(geometries: Sequence[shapely.Geometry] | np.ndarray) -> np.ndarray:
    """Areas in square metres of WGS-84 polygons, through one equal-area projection of them all."""
    geoms = np.asarray(geometries, dtype=object)
    if len(geoms) == 0:
        return np.zeros(0)
    bounds = shapely.bounds(geoms)
    centre_lon = float((np.nanmin(bounds[:, 0]) + np.nanmax(bounds[:, 2])) / 2)
    centre_lat = float((np.nanmin(bounds[:, 1]) + np.nanmax(bounds[:, 3])) / 2)
    transformer = Transformer.from_crs(
        "EPSG:4326", local_equal_area_crs(centre_lon, centre_lat), always_xy=True
    )
    projected = shapely.transform(
        geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )
    return np.asarray(shapely.area(projected), dtype=float)
