"""Reading and validating one territory layer from a file (geopandas/pyogrio/shapely, no Django).

`read_source` reads a file into a frame with the columns ``code``, ``name``, ``parent_code`` and the
geometry, indexed by the GDAL feature id. `validate_layer` checks it and returns every problem at once
together with the cleaned units (WGS-84, valid, 2D) ready to be stored. `check_children_fit` tells
which existing children would stick out of re-imported parents. The rules and their tolerances are
described in docs/data-formats.md; this module is that document's reference implementation.

Everything measured (areas outside a parent, overlaps, gaps) is measured in square metres in one
equal-area projection of the layer and its parents (see `metric_crs`), vectorised: an STRtree finds
the candidate pairs and shapely's array functions do the geometry, so 100,000 grids validate in
seconds.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import geopandas
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from gis.citygen import LAYERS, PARENT_LAYER
from gis.datums import canonical_crs, to_wgs84_many
from gis.geometry import local_equal_area_crs

__all__ = [
    "ERROR",
    "MUST_TILE",
    "WARNING",
    "LayerData",
    "Limits",
    "Problem",
    "SourceError",
    "UnitSet",
    "check_children_fit",
    "metric_crs",
    "read_source",
    "validate_layer",
]

ERROR: Final = "error"
WARNING: Final = "warning"

# Layers whose units must cover their parents completely; blocks (地块) may leave roads, water and other
# land without a block, and districts have no parent to cover.
MUST_TILE: Final = frozenset({"street", "community", "grid"})

MAX_CODE_LENGTH: Final = 32
MAX_NAME_LENGTH: Final = 128

# Data spanning more than this many degrees is measured in a global equal-area projection instead of a
# Lambert azimuthal one centred on it: LAEA is equal-area everywhere in theory, but far from its centre
# long straight edges bend and near the antipode it breaks down (Natural Earth's Pacific islands came
# out 10 % wrong).
_LOCAL_SPAN_DEG: Final = 30.0
_GLOBAL_EQUAL_AREA: Final = "EPSG:6933"
# Natural Earth has a vertex at 180.00000000000006: allow for rounding at the edge of the world.
_RANGE_SLACK_DEG: Final = 1e-9
_GEOGRAPHIC_WGS84: Final = CRS.from_epsg(4326)
# Datums that shift lon/lat on the WGS-84 ellipsoid (see gis.datums); pyproj knows nothing of them.
_SHIFTED_DATUMS: Final = frozenset({"gcj02", "bd09"})


class SourceError(ValueError):
    """The file, its fields or an option cannot be used at all (a usage error, not a data problem)."""


@dataclass(frozen=True)
class Limits:
    """Size limits and tolerances; a measure is a problem only when above both of its tolerances."""

    max_vertices: int = 100_000
    max_bytes: int = 5_000_000
    # Area outside the parent, as a share of the child's area.
    outside_share: float = 0.01
    # Area shared by two units of the layer, as a share of the smaller one.
    overlap_share: float = 0.01
    # Area of a parent covered by none of its children, as a share of the parent.
    gap_share: float = 0.01
    # Absolute tolerance for the three measures above; the smaller of share and absolute wins, so large
    # units are held to the absolute figure and small ones to the share.
    tolerance_m2: float = 10_000.0

    def allowed(self, share: float, reference_m2: NDArray[np.float64]) -> NDArray[np.float64]:
        """The tolerated area for each reference area under one share tolerance."""
        return np.minimum(share * reference_m2, self.tolerance_m2)


@dataclass(frozen=True)
class Problem:
    """One validation finding, about one feature, one existing unit or the whole file."""

    rule: str
    message: str
    fid: int | None = None
    code: str | None = None
    severity: str = ERROR
    # Who the problem is about when it is not a feature of the file (e.g. "community 440304001001").
    subject: str | None = None

    @property
    def is_error(self) -> bool:
        """True when the problem refuses the import."""
        return self.severity == ERROR

    def __str__(self) -> str:
        if self.fid is not None:
            where = f"feature {self.fid}" + (f" (code {self.code})" if self.code else "")
        else:
            where = self.subject or (f"code {self.code}" if self.code else "file")
        return f"{where}: {'warning: ' if self.severity == WARNING else ''}{self.message}"


@dataclass(frozen=True)
class UnitSet:
    """Units already known (e.g. the parent layer in the database), geometry in WGS-84."""

    layer: str
    codes: Sequence[str]
    names: Sequence[str]
    geometries: NDArray[np.object_]
    parent_codes: Sequence[str | None] = ()

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def empty(cls, layer: str) -> UnitSet:
        """A unit set with no units."""
        return cls(layer, [], [], np.empty(0, dtype=object))


@dataclass
class LayerData:
    """The outcome of validating a layer: problems, and the cleaned units when there is no error."""

    layer: str
    source_crs: str
    fids: NDArray[np.int64]
    codes: list[str]
    names: list[str]
    parent_codes: list[str | None]
    geometries: NDArray[np.object_]
    wkbs: NDArray[np.object_]
    areas_m2: NDArray[np.float64]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """The problems that refuse the import."""
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        """The problems that are reported but do not refuse the import."""
        return [p for p in self.problems if p.severity == WARNING]

    def __len__(self) -> int:
        return len(self.codes)


# --------------------------------------------------------------------------------------------- reading


def _match_field(wanted: str, fields: Sequence[str], option: str) -> str:
    if wanted in fields:
        return wanted
    # DBF and some exports upper-case field names; accept a case-insensitive match when it is unique.
    folded = [f for f in fields if f.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    # Shapefiles (DBF) cut field names to 10 characters: parent_code becomes parent_cod.
    cut = [f for f in fields if len(wanted) > 10 and f.lower() == wanted[:10].lower()]
    if len(cut) == 1:
        return cut[0]
    available = ", ".join(fields) if fields else "(none)"
    raise SourceError(f"no field {wanted!r} ({option}); the fields are: {available}")


def read_source(
    path: str | os.PathLike[str],
    *,
    layer: str,
    code_field: str = "code",
    name_field: str = "name",
    parent_field: str = "parent_code",
    source_layer: str | None = None,
) -> geopandas.GeoDataFrame:
    """Read a file's features as code, name, parent_code and geometry, indexed by GDAL feature id."""
    if layer not in LAYERS:
        raise SourceError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    path = Path(path)
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    try:
        listed = pyogrio.list_layers(path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    names = [str(row[0]) for row in listed]
    if source_layer is not None:
        if source_layer not in names:
            raise SourceError(f"no layer {source_layer!r} in {path}; its layers are: {', '.join(names)}")
        chosen = source_layer
    elif len(names) == 1:
        chosen = names[0]
    elif layer in names:
        chosen = layer
    else:
        raise SourceError(
            f"{path} has {len(names)} layers ({', '.join(names) or 'none'}); choose one with --source-layer"
        )
    try:
        info = pyogrio.read_info(path, layer=chosen)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    fields = [str(f) for f in info["fields"]]
    columns = {
        "code": _match_field(code_field, fields, "--code-field"),
        "name": _match_field(name_field, fields, "--name-field"),
    }
    # Districts have no parent, so their files need no parent field (one present is ignored).
    if PARENT_LAYER[layer] is not None:
        columns["parent_code"] = _match_field(parent_field, fields, "--parent-field")
    if info.get("geometry_type") in (None, "None") and not info.get("geometry_name"):
        raise SourceError(f"{path} (layer {chosen}) has no geometry column")
    try:
        frame = pyogrio.read_dataframe(
            path, layer=chosen, columns=sorted(set(columns.values())), fid_as_index=True, use_arrow=True
        )
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    data = {key: frame[column] for key, column in columns.items()}
    if "parent_code" not in data:
        data["parent_code"] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return geopandas.GeoDataFrame(data, geometry=frame.geometry, crs=frame.crs)


# ------------------------------------------------------------------------------------------------- CRS


def _parse_crs(value: str) -> tuple[CRS | None, str | None]:
    """The pyproj CRS, or the shifted datum name (gcj02, bd09), that a --crs value means."""
    try:
        name = canonical_crs(value)
    except ValueError:
        name = None
    if name in _SHIFTED_DATUMS:
        return None, name
    if name == "wgs84":
        return CRS.from_epsg(4326), None
    if name == "cgcs2000":
        return CRS.from_epsg(4490), None
    try:
        return CRS.from_user_input(value), None
    except CRSError as exc:
        raise SourceError(
            f"--crs {value!r} is not a CRS pyproj knows (e.g. EPSG:4326, EPSG:3857): {exc}"
        ) from exc


def _same_crs(a: CRS, b: CRS) -> bool:
    if a.equals(b, ignore_axis_order=True):
        return True
    epsg_a, epsg_b = a.to_epsg(min_confidence=70), b.to_epsg(min_confidence=70)
    return epsg_a is not None and epsg_a == epsg_b


def _is_wgs84_lonlat(crs: CRS) -> bool:
    return _same_crs(crs, _GEOGRAPHIC_WGS84) or _same_crs(crs, CRS.from_epsg(4490))


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg}" if epsg else (crs.name or crs.to_string())


@dataclass(frozen=True)
class _SourceCrs:
    crs: CRS | None  # None: unknown (refused) or a shifted datum
    datum: str | None  # "gcj02" / "bd09", on top of WGS-84 lon/lat
    label: str
    problem: Problem | None


def _resolve_crs(file_crs: Any, option: str | None) -> _SourceCrs:
    """Decide the CRS of the coordinates: the file's, or --crs when the file has none."""
    found = CRS.from_user_input(file_crs) if file_crs is not None else None
    if option is None or not option.strip():
        if found is None:
            return _SourceCrs(
                None,
                None,
                "unknown",
                Problem(
                    "crs",
                    "the file has no CRS: give it with --crs (e.g. --crs EPSG:4326); "
                    "the checks in metres (parents, overlaps, gaps) were skipped",
                ),
            )
        return _SourceCrs(found, None, _crs_label(found), None)
    given, datum = _parse_crs(option)
    if datum is not None:
        # GCJ-02 and BD-09 files usually say EPSG:4326, since to GDAL they are plain lon/lat.
        if found is not None and not _is_wgs84_lonlat(found):
            return _SourceCrs(
                found,
                None,
                _crs_label(found),
                Problem(
                    "crs",
                    f"the file's CRS is {_crs_label(found)} but --crs {option} needs lon/lat on WGS-84; "
                    "they disagree (the file's CRS was used for the other checks)",
                ),
            )
        return _SourceCrs(None, datum, datum, None)
    assert given is not None
    if found is None:
        return _SourceCrs(given, None, _crs_label(given), None)
    if _same_crs(found, given):
        return _SourceCrs(found, None, _crs_label(found), None)
    return _SourceCrs(
        found,
        None,
        _crs_label(found),
        Problem(
            "crs",
            f"the file says its CRS is {_crs_label(found)} but --crs says {_crs_label(given)}: "
            "fix the file's CRS or leave out --crs (the file's CRS was used for the other checks)",
        ),
    )


def _transform(geoms: NDArray[np.object_], func: Callable[[NDArray[Any]], NDArray[Any]]) -> NDArray[Any]:
    return np.asarray(shapely.transform(geoms, func), dtype=object)


def _to_wgs84(geoms: NDArray[np.object_], source: _SourceCrs) -> NDArray[np.object_]:
    if source.datum is not None:
        datum = source.datum

        def shift(xy: NDArray[Any]) -> NDArray[Any]:
            lon, lat = to_wgs84_many(xy[:, 0], xy[:, 1], datum)
            return np.column_stack([lon, lat])

        return _transform(geoms, shift)
    if source.crs is None or _same_crs(source.crs, _GEOGRAPHIC_WGS84):
        return geoms
    transformer = Transformer.from_crs(source.crs, _GEOGRAPHIC_WGS84, always_xy=True)

    def reproject(xy: NDArray[Any]) -> NDArray[Any]:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return _transform(geoms, reproject)


def metric_crs(bounds: NDArray[np.float64]) -> CRS:
    """The equal-area CRS to measure in: LAEA centred on the data, or EPSG:6933 for continent-wide data."""
    finite = bounds[np.isfinite(bounds).all(axis=1)] if len(bounds) else bounds
    if len(finite) == 0:
        return local_equal_area_crs(0.0, 0.0)
    minx, miny = finite[:, 0].min(), finite[:, 1].min()
    maxx, maxy = finite[:, 2].max(), finite[:, 3].max()
    if maxx - minx > _LOCAL_SPAN_DEG or maxy - miny > _LOCAL_SPAN_DEG:
        return CRS.from_user_input(_GLOBAL_EQUAL_AREA)
    return local_equal_area_crs(float((minx + maxx) / 2), float((miny + maxy) / 2))


def _to_metric(geoms: NDArray[np.object_], crs: CRS) -> NDArray[np.object_]:
    if len(geoms) == 0:
        return np.empty(0, dtype=object)
    transformer = Transformer.from_crs(_GEOGRAPHIC_WGS84, crs, always_xy=True)

    def project(xy: NDArray[Any]) -> NDArray[Any]:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    out = _transform(geoms, project)
    # A valid lon/lat polygon can come out of the projection with a self-touching ring (Natural Earth's
    # Sudan does); overlay functions would raise on it, and the repair moves no measurable area.
    bad = ~shapely.is_valid(out)
    if bad.any():
        out[bad] = shapely.make_valid(out[bad], method="structure", keep_collapsed=False)
    return out


# ---------------------------------------------------------------------------------------- attributes


def _text(values: pd.Series) -> list[str | None]:
    """Attribute values as stripped strings; None for missing or blank (floats 12.0 read as '12')."""
    out: list[str | None] = []
    for value in values.tolist():
        if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
            out.append(None)
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        out.append(text or None)
    return out


def _fmt_m2(value: float) -> str:
    return f"{value:,.0f} m²"


# ------------------------------------------------------------------------------------------ validation


class _Findings:
    """The problems found so far, and how to name a feature in them."""

    def __init__(self, fids: NDArray[np.int64], codes: list[str | None]) -> None:
        self.fids = fids
        self.codes = codes
        self.problems: list[Problem] = []

    def report(self, i: int, rule: str, message: str, severity: str = ERROR) -> None:
        """Record a problem about feature i (its position in the frame)."""
        self.problems.append(
            Problem(rule, message, fid=int(self.fids[i]), code=self.codes[i], severity=severity)
        )


def validate_layer(
    frame: geopandas.GeoDataFrame,
    *,
    layer: str,
    parents: UnitSet | None = None,
    crs: str | None = None,
    fix: bool = False,
    limits: Limits | None = None,
) -> LayerData:
    """Check a layer read by `read_source` against its parents and return every problem at once."""
    if layer not in LAYERS:
        raise SourceError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    limits = limits or Limits()
    parent_layer = PARENT_LAYER[layer]
    if parent_layer is None:
        parents = None
    elif parents is None:
        parents = UnitSet.empty(parent_layer)
    n = len(frame)
    fids = np.asarray(frame.index.to_numpy(), dtype=np.int64)
    codes = _text(frame["code"])
    names = _text(frame["name"])
    parent_codes: list[str | None] = _text(frame["parent_code"]) if parent_layer is not None else [None] * n
    found = _Findings(fids, codes)
    _check_attributes(found, names)
    parent_index = _check_parents(found, parent_codes, parents)

    source = _resolve_crs(frame.crs, crs)
    if source.problem is not None:
        found.problems.append(source.problem)
    geoms = np.asarray(frame.geometry.array, dtype=object)
    if n:
        geoms = np.asarray(shapely.force_2d(geoms), dtype=object)
    ok = _check_geometries(found, geoms, source, fix=fix, limits=limits)
    wkbs = np.empty(n, dtype=object)
    if ok.any():
        wkbs[ok] = shapely.to_wkb(geoms[ok], output_dimension=2)
        sizes = np.fromiter((len(w) if w is not None else 0 for w in wkbs), dtype=np.int64, count=n)
        for i in np.flatnonzero(sizes > limits.max_bytes).tolist():
            found.report(
                i, "bytes", f"geometry too large: {sizes[i]:,} bytes of WKB (limit {limits.max_bytes:,})"
            )
        ok &= sizes <= limits.max_bytes

    areas = np.full(n, np.nan)
    parent_geoms = parents.geometries if parents is not None else np.empty(0, dtype=object)
    # Even with no usable feature, parents left without children are gaps worth reporting.
    if (source.crs is not None or source.datum is not None) and (ok.any() or len(parent_geoms)):
        _measure(
            found,
            layer=layer,
            geoms=geoms,
            ok=ok,
            parents=parents,
            parent_index=parent_index,
            areas=areas,
            limits=limits,
        )
    return LayerData(
        layer=layer,
        source_crs=source.label,
        fids=fids,
        codes=[c or "" for c in codes],
        names=[m or "" for m in names],
        parent_codes=parent_codes,
        geometries=geoms,
        wkbs=wkbs,
        areas_m2=areas,
        problems=sorted(found.problems, key=_problem_order),
    )


def _check_attributes(found: _Findings, names: list[str | None]) -> None:
    """Codes and names present and short enough; codes unique."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, (code, name) in enumerate(zip(found.codes, names, strict=True)):
        if code is None:
            found.report(i, "code", "missing code")
        elif len(code) > MAX_CODE_LENGTH:
            found.report(i, "code", f"code longer than {MAX_CODE_LENGTH} characters")
        else:
            positions[code].append(i)
        if name is None:
            found.report(i, "name", "missing name")
        elif len(name) > MAX_NAME_LENGTH:
            found.report(i, "name", f"name longer than {MAX_NAME_LENGTH} characters")
    for rows in positions.values():
        if len(rows) < 2:
            continue
        for i in rows:
            others = [str(found.fids[j]) for j in rows if j != i]
            # A file with one code everywhere would otherwise print a quadratic report.
            listed = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
            found.report(i, "duplicate", f"duplicate code (also feature {listed})")


def _check_parents(
    found: _Findings, parent_codes: list[str | None], parents: UnitSet | None
) -> NDArray[np.int64]:
    """Each feature's position in parents (-1 when missing or unknown, or for districts)."""
    parent_index = np.full(len(parent_codes), -1, dtype=np.int64)
    if parents is None:
        return parent_index
    lookup = {code: k for k, code in enumerate(parents.codes)}
    for i, pcode in enumerate(parent_codes):
        if pcode is None:
            found.report(i, "parent", f"missing parent code (the {parents.layer} it belongs to)")
        elif pcode not in lookup:
            found.report(i, "parent", f"unknown parent: no {parents.layer} with code {pcode} in the database")
        else:
            parent_index[i] = lookup[pcode]
    return parent_index


def _repair(
    found: _Findings, i: int, geom: shapely.Geometry, reason: str, when: str
) -> shapely.Geometry | None:
    """The polygonal part of make_valid(geom), reported as a warning; None (an error) if nothing is left."""
    repaired = _polygonal_part(shapely.make_valid(geom, method="structure", keep_collapsed=False))
    if repaired is None:
        found.report(i, "invalid", f"invalid geometry{when}: {reason}; the repair left no polygon")
        return None
    parts = shapely.get_num_geometries(repaired)
    found.report(
        i,
        "repaired",
        f"repaired invalid geometry{when} ({reason}) with make_valid, kept its polygonal parts "
        f"({parts} polygon{'s' if parts != 1 else ''})",
        WARNING,
    )
    return repaired


def _check_geometries(
    found: _Findings, geoms: NDArray[np.object_], source: _SourceCrs, *, fix: bool, limits: Limits
) -> NDArray[np.bool_]:
    """Check (and with fix, repair) geometries, convert them to WGS-84 in place; return which are usable."""
    n = len(geoms)
    if n == 0:
        return np.zeros(0, dtype=bool)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    for i in np.flatnonzero(empty).tolist():
        found.report(i, "empty", "empty geometry")
    ok = ~empty
    polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))
    for i in np.flatnonzero(ok & ~polygonal).tolist():
        found.report(i, "type", f"not a polygon: {geoms[i].geom_type}")
    ok &= polygonal
    vertices = shapely.get_num_coordinates(geoms)
    for i in np.flatnonzero(ok & (vertices > limits.max_vertices)).tolist():
        found.report(i, "vertices", f"too many vertices: {vertices[i]:,} (limit {limits.max_vertices:,})")
    ok &= vertices <= limits.max_vertices

    # Validity first in the file's own coordinates, so that reported locations can be found in the file.
    invalid = np.zeros(n, dtype=bool)
    invalid[ok] = ~shapely.is_valid(geoms[ok])
    for i in np.flatnonzero(invalid).tolist():
        reason = shapely.is_valid_reason(geoms[i])
        if not fix:
            found.report(i, "invalid", f"invalid geometry: {reason}")
            ok[i] = False
            continue
        geoms[i] = _repair(found, i, geoms[i], reason, "")
        ok[i] = geoms[i] is not None

    if (source.crs is None and source.datum is None) or not ok.any():
        return ok
    geoms[ok] = _to_wgs84(geoms[ok], source)
    bounds = shapely.bounds(geoms[ok])
    bad_range = (
        ~np.isfinite(bounds).all(axis=1)
        | (bounds[:, 0] < -180 - _RANGE_SLACK_DEG)
        | (bounds[:, 2] > 180 + _RANGE_SLACK_DEG)
        | (bounds[:, 1] < -90 - _RANGE_SLACK_DEG)
        | (bounds[:, 3] > 90 + _RANGE_SLACK_DEG)
    )
    for i in np.flatnonzero(ok)[bad_range].tolist():
        found.report(
            i,
            "range",
            f"coordinates outside lon/lat range after conversion from {source.label}: is the CRS right?",
        )
        ok[i] = False
    # A reprojection can fold a valid ring onto itself; that is held to the same rule as the file's own.
    still = np.flatnonzero(ok)
    for i in still[~shapely.is_valid(geoms[still])].tolist():
        reason = shapely.is_valid_reason(geoms[i])
        if not fix:
            found.report(i, "invalid", f"invalid geometry after conversion to WGS-84: {reason}")
            ok[i] = False
            continue
        geoms[i] = _repair(found, i, geoms[i], reason, " after conversion to WGS-84")
        ok[i] = geoms[i] is not None
    return ok


def _measure(
    found: _Findings,
    *,
    layer: str,
    geoms: NDArray[np.object_],
    ok: NDArray[np.bool_],
    parents: UnitSet | None,
    parent_index: NDArray[np.int64],
    areas: NDArray[np.float64],
    limits: Limits,
) -> None:
    """Areas (into areas), then sticking out, overlaps and gaps, all in square metres."""
    parent_geoms = parents.geometries if parents is not None else np.empty(0, dtype=object)
    frame_crs = metric_crs(
        np.vstack([shapely.bounds(geoms[ok]).reshape(-1, 4), shapely.bounds(parent_geoms).reshape(-1, 4)])
    )
    idx = np.flatnonzero(ok)
    metric = _to_metric(geoms[idx], frame_crs)
    areas[idx] = shapely.area(metric)
    parent_metric = _to_metric(parent_geoms, frame_crs)
    inside = areas[idx].copy()
    has_parent = np.flatnonzero(parent_index[idx] >= 0)
    if parents is not None and len(has_parent):
        outside, inside[has_parent] = _outside(
            metric[has_parent], parent_metric, parent_index[idx][has_parent]
        )
        allowed = limits.allowed(limits.outside_share, areas[idx][has_parent])
        for k in np.flatnonzero(outside > allowed).tolist():
            i = int(idx[has_parent[k]])
            found.report(
                i,
                "outside",
                f"sticks out of its parent {parents.layer} {parents.codes[parent_index[i]]} by "
                f"{_fmt_m2(outside[k])} ({outside[k] / areas[i]:.1%} of its area)",
            )
    left, right, shared = _overlaps(metric)
    allowed = limits.allowed(limits.overlap_share, np.minimum(areas[idx][left], areas[idx][right]))
    for a, b, s in zip(
        left[shared > allowed], right[shared > allowed], shared[shared > allowed], strict=True
    ):
        i, j = int(idx[a]), int(idx[b])
        found.report(
            i,
            "overlap",
            f"overlaps feature {found.fids[j]} (code {found.codes[j]}) by {_fmt_m2(s)} "
            f"({s / min(areas[i], areas[j]):.1%} of the smaller)",
        )
    if layer in MUST_TILE and parents is not None and len(parents):
        found.problems.extend(
            _gaps(
                layer=layer,
                parents=parents,
                parent_metric=parent_metric,
                child_parent=parent_index[idx],
                inside=inside,
                pairs=(left, right, shared),
                skipped=set(parent_index[(parent_index >= 0) & ~ok].tolist()),
                limits=limits,
            )
        )


def _problem_order(problem: Problem) -> tuple[int, int]:
    """File-wide problems first, then features by id, then problems about parents."""
    if problem.fid is not None:
        return 1, problem.fid
    return (0, 0) if problem.subject is None and problem.code is None else (2, 0)


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry | None:
    """The polygonal parts of a geometry (collections flattened), or None when there are none."""
    parts = shapely.get_parts(geom)
    polys = [p for p in parts if shapely.get_type_id(p) in (3, 6) and not p.is_empty]
    if not polys:
        return None
    merged = shapely.union_all(polys) if len(polys) > 1 else polys[0]
    return merged if shapely.get_type_id(merged) in (3, 6) else None


def _outside(
    children: NDArray[np.object_], parents: NDArray[np.object_], parent_of: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per child: the area outside its parent, and the area inside it (metric geometries)."""
    shapely.prepare(parents)
    child_area = shapely.area(children)
    inside = child_area.copy()
    # Most children lie wholly inside; the prepared covers() test spares them the overlay.
    crossing = np.flatnonzero(~shapely.covers(parents[parent_of], children))
    if len(crossing):
        inside[crossing] = shapely.area(
            shapely.intersection(children[crossing], parents[parent_of[crossing]])
        )
    return np.maximum(child_area - inside, 0.0), inside


def _overlaps(
    geoms: NDArray[np.object_],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Pairs (i < j) of geometries whose interiors meet, with the area they share."""
    if len(geoms) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    # Neighbours in a tiling touch along edges; only an interior meeting needs an overlay.
    interior = shapely.relate_pattern(geoms[left], geoms[right], "T********")
    left, right = left[interior], right[interior]
    shared = shapely.area(shapely.intersection(geoms[left], geoms[right])) if len(left) else np.zeros(0)
    return left.astype(np.int64), right.astype(np.int64), np.asarray(shared, dtype=float)


def _gaps(
    *,
    layer: str,
    parents: UnitSet,
    parent_metric: NDArray[np.object_],
    child_parent: NDArray[np.int64],
    inside: NDArray[np.float64],
    pairs: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]],
    skipped: set[int],
    limits: Limits,
) -> list[Problem]:
    """Parents whose children leave more of them uncovered than tolerated."""
    count = len(parents)
    parent_area = shapely.area(parent_metric)
    known = child_parent >= 0
    covered = np.bincount(child_parent[known], weights=inside[known], minlength=count)
    children = np.bincount(child_parent[known], minlength=count)
    # Inclusion-exclusion to the second order: overlaps beyond tolerance refuse the import anyway, so
    # what is left is small and triple overlaps are negligible.
    left, right, shared = pairs
    same = (child_parent[left] == child_parent[right]) & (child_parent[left] >= 0)
    covered -= np.bincount(child_parent[left][same], weights=shared[same], minlength=count)
    uncovered = np.maximum(parent_area - covered, 0.0)
    allowed = limits.allowed(limits.gap_share, parent_area)
    out: list[Problem] = []
    for p in np.flatnonzero(uncovered > allowed).tolist():
        if int(p) in skipped:
            continue  # a child with a refused geometry would show up as a gap: already reported
        subject = f"{parents.layer} {parents.codes[p]} ({parents.names[p]})"
        if children[p] == 0:
            message = f"has no {layer} at all ({layer} units must cover their {parents.layer} completely)"
        else:
            message = (
                f"{uncovered[p] / parent_area[p]:.1%} ({_fmt_m2(uncovered[p])}) of it is covered by "
                f"none of its {children[p]} {layer} units"
            )
        out.append(Problem("gap", message, subject=subject, code=parents.codes[p]))
    return out


def check_children_fit(children: UnitSet, parents: UnitSet, *, limits: Limits | None = None) -> list[Problem]:
    """Warnings for existing children that stick out of their (re-imported) parents beyond tolerance."""
    limits = limits or Limits()
    lookup = {code: k for k, code in enumerate(parents.codes)}
    parent_of = np.array([lookup.get(p or "", -1) for p in children.parent_codes], dtype=np.int64)
    keep = np.flatnonzero(parent_of >= 0)
    if len(keep) == 0:
        return []
    crs = metric_crs(
        np.vstack([shapely.bounds(children.geometries[keep]), shapely.bounds(parents.geometries)])
    )
    child_metric = _to_metric(children.geometries[keep], crs)
    outside, _inside = _outside(child_metric, _to_metric(parents.geometries, crs), parent_of[keep])
    area = shapely.area(child_metric)
    allowed = limits.allowed(limits.outside_share, area)
    return [
        Problem(
            "children",
            f"would stick out of the new {parents.layer} {children.parent_codes[keep[k]]} by "
            f"{_fmt_m2(outside[k])} ({outside[k] / area[k]:.1%} of its area): re-import the {children.layer} "
            "layer",
            code=children.codes[keep[k]],
            subject=f"existing {children.layer} {children.codes[keep[k]]} ({children.names[keep[k]]})",
            severity=WARNING,
        )
        for k in np.flatnonzero(outside > allowed).tolist()
    ]
