"""Importing one territory layer from a file: validate everything first, then write in one transaction.

A layer is matched to the database by code: units whose code is already there are updated in place
(same row, so departments' jurisdictions, grid workers' assignments and child units keep pointing at
them), new codes are inserted, and codes that disappeared are deleted only when nothing refers to them.
See docs/data-formats.md for the rules.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from django.conf import settings
from django.db import connection, models, transaction

from audit.services import audit_record
from gis.models import LAYER_ORDER, PARENT_LAYER, TerritoryUnit, TerritoryVersion
from gis.services import territory_version_bump
from gis.validate import (
    ERROR,
    WARNING,
    LayerData,
    Limits,
    Problem,
    SourceError,
    UnitSet,
    check_children_fit,
    read_source,
    validate_layer,
)

__all__ = ["ImportReport", "SourceError", "import_limits", "territory_import_layer"]

_BATCH = 2000
_CHILD_LAYERS: dict[str, list[str]] = {
    str(layer): [str(child) for child in LAYER_ORDER if PARENT_LAYER[child] == layer] for layer in LAYER_ORDER
}


@dataclass
class ImportReport:
    """What an import found and did (or, for a dry run or a refusal, would have done)."""

    path: str
    layer: str
    source_crs: str
    features: int
    dry_run: bool
    problems: list[Problem] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    removed: int = 0
    version: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        """The problems that refuse the import."""
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        """The problems reported without refusing the import."""
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def refused(self) -> bool:
        """True when at least one problem refuses the import (then nothing was written)."""
        return any(p.severity == ERROR for p in self.problems)

    @property
    def written(self) -> bool:
        """True when the layer was written and the data version bumped."""
        return self.version is not None


def import_limits() -> Limits:
    """Limits and tolerances from the settings (GIS_IMPORT_*), with the documented defaults."""
    default = Limits()
    return Limits(
        max_vertices=int(getattr(settings, "GIS_IMPORT_MAX_VERTICES", default.max_vertices)),
        max_bytes=int(getattr(settings, "GIS_IMPORT_MAX_BYTES", default.max_bytes)),
        outside_share=float(getattr(settings, "GIS_IMPORT_OUTSIDE_SHARE", default.outside_share)),
        overlap_share=float(getattr(settings, "GIS_IMPORT_OVERLAP_SHARE", default.overlap_share)),
        gap_share=float(getattr(settings, "GIS_IMPORT_GAP_SHARE", default.gap_share)),
        tolerance_m2=float(getattr(settings, "GIS_IMPORT_TOLERANCE_M2", default.tolerance_m2)),
    )


def territory_import_layer(
    *,
    path: str | os.PathLike[str],
    layer: str,
    code_field: str = "code",
    name_field: str = "name",
    parent_field: str = "parent_code",
    crs: str | None = None,
    fix: bool = False,
    dry_run: bool = False,
    source_layer: str | None = None,
    limits: Limits | None = None,
    actor: Any = None,
    source: str = "system",
    os_user: str = "",
) -> ImportReport:
    """Validate a layer file and, when nothing refuses it (and not a dry run), replace that layer.

    A written layer is recorded on the audit chain (`territory_import`) in the same transaction, with
    the actor (a user, or None), `source` (`cli` from gis_import) and, from the command line, the OS user.
    """
    if layer not in _CHILD_LAYERS:
        raise SourceError(f"unknown layer {layer!r}; expected one of {', '.join(_CHILD_LAYERS)}")
    limits = limits or import_limits()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    frame = read_source(
        path,
        layer=layer,
        code_field=code_field,
        name_field=name_field,
        parent_field=parent_field,
        source_layer=source_layer,
    )
    timings["read"] = time.perf_counter() - started
    with transaction.atomic():
        if not dry_run:
            # Serialise imports: the parents and codes validated below must not change before the write.
            TerritoryVersion.objects.select_for_update().get_or_create(pk=1)
        parent_layer = PARENT_LAYER[layer]
        parents, parent_ids = _load_units(parent_layer) if parent_layer else (None, {})
        mark = time.perf_counter()
        data = validate_layer(frame, layer=layer, parents=parents, crs=crs, fix=fix, limits=limits)
        timings["validate"] = time.perf_counter() - mark
        existing = dict(TerritoryUnit.objects.filter(layer=layer).values_list("code", "id"))
        incoming = set(data.codes)
        gone = {code: pk for code, pk in existing.items() if code not in incoming}
        report = ImportReport(
            path=str(path),
            layer=layer,
            source_crs=data.source_crs,
            features=len(data),
            dry_run=dry_run,
            problems=list(data.problems),
            created=len(incoming - set(existing)),
            updated=len(incoming & set(existing)),
            removed=len(gone),
            timings=timings,
        )
        report.problems.extend(_removal_problems(layer, gone))
        if not report.refused:
            mark = time.perf_counter()
            report.problems.extend(_children_warnings(layer, data, limits))
            timings["children"] = time.perf_counter() - mark
        if report.refused or dry_run:
            return report
        mark = time.perf_counter()
        report.version = territory_version_bump()
        _write(layer, data, existing=existing, gone=gone, parent_ids=parent_ids, version=report.version)
        timings["write"] = time.perf_counter() - mark
        audit_record(
            action="territory_import",
            object_type="territory_layer",
            object_id=layer,
            actor=actor,
            source=source,
            data={
                "layer": layer,
                "file": os.path.basename(os.fspath(path)),
                "source_layer": source_layer or "",
                "source_crs": data.source_crs,
                "features": report.features,
                "created": report.created,
                "updated": report.updated,
                "removed": report.removed,
                "warnings": len(report.warnings),
                "fix": fix,
                "version": report.version,
                **({"os_user": os_user} if os_user else {}),
            },
        )
    return report


def _load_units(layer: str, *, parent_codes: bool = False) -> tuple[UnitSet, dict[str, int]]:
    """One layer from the database as a UnitSet, with the row id of each code."""
    rows = list(
        TerritoryUnit.objects.filter(layer=layer)
        .order_by("code")
        .values_list("id", "code", "name", "parent__code", "geometry_wkb")
        .iterator(chunk_size=10_000)
    )
    geoms = np.empty(len(rows), dtype=object)
    if rows:
        geoms[:] = shapely.from_wkb(np.array([bytes(r[4]) for r in rows], dtype=object))
    units = UnitSet(
        layer,
        [r[1] for r in rows],
        [r[2] for r in rows],
        geoms,
        [r[3] for r in rows] if parent_codes else [],
    )
    return units, {r[1]: r[0] for r in rows}


def _references(ids: list[int]) -> dict[int, Counter[str]]:
    """For each unit id, how many rows of each relation refer to it (all relations, hidden ones too)."""
    found: dict[int, Counter[str]] = defaultdict(Counter)
    if not ids:
        return found
    for rel in TerritoryUnit._meta.get_fields(include_hidden=True):
        if not (rel.is_relation and rel.auto_created and not rel.concrete):
            continue
        assert isinstance(rel, models.ForeignObjectRel)
        model = rel.related_model
        assert model is not None and not isinstance(model, str)
        label = f"{model._meta.model_name}.{rel.field.name}"
        if isinstance(rel, models.ManyToManyRel):
            through = rel.through
            assert through is not None and not isinstance(through, str)
            column = rel.field.m2m_reverse_field_name()
            refs = through._base_manager.filter(**{f"{column}__in": ids}).values_list(column, flat=True)
        else:
            column = rel.field.name
            refs = model._base_manager.filter(**{f"{column}__in": ids}).values_list(column, flat=True)
        for ref in refs:
            found[int(ref)][label] += 1
    return found


def _removal_problems(layer: str, gone: dict[str, int]) -> list[Problem]:
    """Errors for codes missing from the file that something in the database still refers to."""
    refs = _references(sorted(gone.values()))
    if not refs:
        return []
    names = dict(TerritoryUnit.objects.filter(id__in=refs).values_list("id", "name"))
    problems = []
    for code, pk in sorted(gone.items()):
        if pk not in refs:
            continue
        counts = ", ".join(f"{label} ×{n}" for label, n in sorted(refs[pk].items()))
        problems.append(
            Problem(
                "in-use",
                f"is not in the file but cannot be removed: still referenced by {counts}; "
                "keep it in the file, or move those references first",
                code=code,
                subject=f"existing {layer} {code} ({names.get(pk, '')})",
            )
        )
    return problems


def _children_warnings(layer: str, data: LayerData, limits: Limits) -> list[Problem]:
    """Warnings for existing units of the layers below that would stick out of the new geometries."""
    children_layers = _CHILD_LAYERS[layer]
    if not children_layers or not len(data):
        return []
    new = UnitSet(layer, data.codes, data.names, data.geometries)
    problems: list[Problem] = []
    for child_layer in children_layers:
        children, _ids = _load_units(child_layer, parent_codes=True)
        if len(children):
            problems.extend(check_children_fit(children, new, limits=limits))
    return problems


def _write(
    layer: str,
    data: LayerData,
    *,
    existing: dict[str, int],
    gone: dict[str, int],
    parent_ids: dict[str, int],
    version: int,
) -> None:
    """Delete the codes that disappeared, update the ones kept in place, insert the new ones."""
    if gone:
        TerritoryUnit.objects.filter(id__in=list(gone.values())).delete()
    bounds = shapely.bounds(data.geometries).tolist() if len(data) else []
    updates: list[dict[str, Any]] = []
    creates: list[dict[str, Any]] = []
    for i, code in enumerate(data.codes):
        parent_code = data.parent_codes[i]
        row: dict[str, Any] = {
            "id": existing.get(code),
            "layer": layer,
            "code": code,
            "name": data.names[i],
            "parent_id": parent_ids[parent_code] if parent_code else None,
            "geometry_wkb": bytes(data.wkbs[i]),
            "min_lon": bounds[i][0],
            "min_lat": bounds[i][1],
            "max_lon": bounds[i][2],
            "max_lat": bounds[i][3],
            "area_m2": float(data.areas_m2[i]),
            "version": version,
        }
        (updates if row["id"] is not None else creates).append(row)
    # Plain prepared statements run over all rows: bulk_update builds a CASE per field and row (minutes
    # for 100,000 grids) and bulk_create spends most of its time composing one huge statement.
    meta = TerritoryUnit._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    kept = [str(f.column) for f in meta.concrete_fields if f.column not in ("id", "layer", "code")]
    fresh = [str(f.column) for f in meta.concrete_fields if f.column != "id"]
    _execute_many(
        f"UPDATE {table} SET {', '.join(f'{quote(c)} = %s' for c in kept)} WHERE id = %s",
        [[row[c] for c in kept] + [row["id"]] for row in updates],
    )
    placeholders = ", ".join(["%s"] * len(fresh))
    _execute_many(
        f"INSERT INTO {table} ({', '.join(quote(c) for c in fresh)}) VALUES ({placeholders})",
        [[row[c] for c in fresh] for row in creates],
    )


def _execute_many(sql: str, rows: list[list[Any]]) -> None:
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _BATCH):
            cursor.executemany(sql, rows[start : start + _BATCH])
