"""Exports of incidents and of per-unit statistics as CSV, GeoJSON and GeoPackage, in constant memory.

Rows come from a server-side cursor in batches (``QuerySet.iterator``) and leave as they come: CSV and
GeoJSON are generated chunk by chunk into a streaming response; a GeoPackage (a SQLite file, which
cannot be written to a socket) is written by GDAL through ``pyogrio.write_arrow`` from an Arrow stream
of 10,000-row batches into a temporary file, which is then streamed and deleted.

Personal data is masked in every export by default, as everywhere else in the API: reporters' phone
numbers (``138****1234``), names (first character), and mobile or ID numbers written into the free
texts (``config.security.redact_text``). The roles of ``incidents.privacy.PERSONAL_DATA_ROLES`` (the
command centre) may export in clear on purpose, with ``reveal=true`` and a reason; that export is a
row of the audit chain (``audit.services.audit_record``) written before the first byte leaves.

Daphne serves Django through ASGI, where ``StreamingHttpResponse`` first *collects* a synchronous
iterator into a list. :func:`stream` therefore hands ASGI an asynchronous iterator that pulls one
chunk at a time from the synchronous generator (in the request's thread, where its cursor lives),
and WSGI the synchronous generator itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, transaction
from django.db.models import BigIntegerField, BooleanField, ExpressionWrapper, Func, Q, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from command.stats import Reference, StatsFilter, apply_filter, incidents_for_stats, local_zone, unit_summary
from config.security import redact_text
from gis.models import TerritoryUnit
from incidents.models import Report
from incidents.privacy import can_see_personal, mask_phone

audit = logging.getLogger("yjld.audit")

BATCH_ROWS: Final = 10_000
CSV_CHUNK_ROWS: Final = 2_000
FILE_CHUNK_BYTES: Final = 256 * 1024
FORMATS: Final = ("csv", "geojson", "gpkg")
CONTENT_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
}


@dataclass(frozen=True)
class Column:
    """One exported column: its name and Arrow type (CSV and GeoJSON write the same values as text/JSON)."""

    name: str
    kind: str  # "str", "int", "float", "bool", "time"


INCIDENT_COLUMNS: Final = [
    Column("id", "int"),
    Column("code", "str"),
    Column("status", "str"),
    Column("category", "str"),
    Column("category_name", "str"),
    Column("family", "str"),
    Column("grade", "str"),
    Column("description", "str"),
    Column("address", "str"),
    Column("lon", "float"),
    Column("lat", "float"),
    Column("district_code", "str"),
    Column("street_code", "str"),
    Column("community_code", "str"),
    Column("grid_code", "str"),
    Column("block_code", "str"),
    Column("occurred_at", "time"),
    Column("reported_at", "time"),
    Column("due_at", "time"),
    Column("overdue", "bool"),
    Column("rework_count", "int"),
    Column("reporter_name", "str"),
    Column("reporter_phone", "str"),
]
_ARROW_TYPES: Final = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    # GeoPackage stores date-times as UTC text ending in Z; readers convert to local time as they wish.
    "time": pa.timestamp("ms", tz="UTC"),
}


def mask_name(value: str) -> str:
    """张** for 张三丰: the first character and one star per other character."""
    value = (value or "").strip()
    return value[:1] + "*" * (len(value) - 1) if value else ""


class EpochMicros(Func):
    """A datetime column as integer microseconds since 1970-01-01 UTC: exact, and loaded at C speed.

    Django converts each fetched datetime to an aware one in Python; for 100,000 rows and four time
    columns that cost more than the rest of an export, and the writers want plain numbers anyway.
    """

    output_field = BigIntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Stored as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]': whole seconds by julianday (rounded, so its
        # float error never shows), the fraction from the text.
        template = (
            "(CAST(ROUND((julianday(substr(%(expressions)s, 1, 19)) - 2440587.5) * 86400) AS INTEGER)"
            " * 1000000 + CAST(substr(%(expressions)s || '.000000', 21, 6) AS INTEGER))"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HAS_DIGIT: Final = re.compile(r"[0-9]")


def raw_rows(queryset: QuerySet) -> Iterator[tuple[Any, ...]]:
    """A values_list queryset's rows straight from a server-side cursor, without Django's per-row converters.

    Only for columns whose database value is already what the caller wants (text, numbers, epoch
    integers); booleans come back as 0/1 on SQLite.
    """
    sql, params = queryset.query.sql_with_params()
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(BATCH_ROWS):
            yield from rows


def _first_reports(incidents: QuerySet) -> Iterator[tuple[Any, ...]]:
    """(reported_us, incident_id, name, phone) of the incidents' reports, in the incidents' export order.

    Streamed beside the incidents and merged by that order: no subquery per row, no list of ids.
    """
    return raw_rows(
        Report.objects.filter(incident_id__in=incidents.order_by().values("pk"))
        .annotate(at_us=EpochMicros("incident__reported_at"))
        .order_by("incident__reported_at", "incident_id", "received_at", "pk")
        .values_list("at_us", "incident_id", "reporter_name", "reporter_phone")
    )


def incident_batches(
    user: Any, *, query: StatsFilter, reveal: bool = False
) -> Iterator[list[tuple[Any, ...]]]:
    """Incidents the user may see matching the filter, oldest first, in batches of tuples (INCIDENT_COLUMNS).

    Times are integer microseconds since the epoch (UTC) or None. Personal data is masked unless
    `reveal` is asked by a role with the right to it (see export_reveal).
    """
    ref = _NamedReference.load()
    clear = reveal and can_see_personal(user)

    def text(value: str | None) -> str:
        value = value or ""
        # Most texts hold no digit at all; only those can hold a number to mask.
        return value if clear or not _HAS_DIGIT.search(value) else redact_text(value)

    incidents = apply_filter(incidents_for_stats(user), query)
    queryset: QuerySet = (
        incidents.annotate(
            occurred_us=EpochMicros("occurred_at"),
            reported_us=EpochMicros("reported_at"),
            due_us=EpochMicros("due_at"),
            late=ExpressionWrapper(Q(overdue_at__isnull=False), output_field=BooleanField()),
        )
        .order_by("reported_at", "pk")
        .values_list(
            "pk",
            "code",
            "status",
            "category_id",
            "grade_id",
            "description",
            "address",
            "lon",
            "lat",
            "district_code",
            "street_code",
            "community_code",
            "grid_code",
            "block_code",
            "occurred_us",
            "reported_us",
            "due_us",
            "late",
            "rework_count",
        )
    )
    reports = _first_reports(incidents)
    report = next(reports, None)
    batch: list[tuple[Any, ...]] = []
    for (
        pk,
        code,
        status,
        cat,
        grade,
        desc,
        addr,
        lon,
        lat,
        d,
        s,
        c,
        g,
        b,
        occ,
        rep,
        due,
        late,
        rework,
    ) in raw_rows(queryset):
        # Skip the reports of earlier incidents; the next one, if it is this incident's, is its first.
        while report is not None and (report[0], report[1]) < (rep, pk):
            report = next(reports, None)
        name, phone = (
            (report[2] or "", report[3] or "") if report is not None and report[1] == pk else ("", "")
        )
        batch.append(
            (
                pk,
                code,
                status,
                ref.category_code.get(cat, ""),
                ref.category_name.get(cat, ""),
                ref.category_family.get(cat, ""),
                ref.grade_code.get(grade, "") if grade is not None else "",
                text(desc),
                text(addr),
                lon,
                lat,
                d,
                s,
                c,
                g,
                b,
                occ,
                rep,
                due,
                bool(late),
                rework,
                name if clear else mask_name(name),
                phone if clear else mask_phone(phone),
            )
        )
        if len(batch) >= BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def local_iso(micros: int | None) -> str | None:
    """Epoch microseconds as local ISO 8601 time with milliseconds (2025-03-17T10:56:38.508+08:00)."""
    if micros is None:
        return None
    moment = _EPOCH + dt.timedelta(microseconds=micros)
    return moment.astimezone(local_zone()).isoformat(timespec="milliseconds")


def incident_rows(user: Any, *, query: StatsFilter, reveal: bool = False) -> Iterator[tuple[Any, ...]]:
    """The rows of incident_batches one by one, times as local ISO 8601 text (for CSV and GeoJSON)."""
    times = [i for i, c in enumerate(INCIDENT_COLUMNS) if c.kind == "time"]
    for batch in incident_batches(user, query=query, reveal=reveal):
        for row in batch:
            values = list(row)
            for i in times:
                values[i] = local_iso(values[i])
            yield tuple(values)


@dataclass(frozen=True)
class _NamedReference(Reference):
    category_name: dict[int, str]

    @classmethod
    def load(cls) -> _NamedReference:
        from incidents.models import Category

        base = Reference.load()
        return cls(
            category_code=base.category_code,
            category_family=base.category_family,
            grade_code=base.grade_code,
            category_name=dict(Category.objects.values_list("pk", "name")),
        )


def _text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # Milliseconds throughout, as a GeoPackage keeps them, so every format carries the same instant.
        return timezone.localtime(value, local_zone()).isoformat(timespec="milliseconds")
    return value


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """UTF-8 CSV with a byte-order mark (so spreadsheet programs read Chinese right), in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    buffer.write("\ufeff")
    writer.writerow(header)
    for count, row in enumerate(rows, start=1):
        writer.writerow(["" if v is None else _text(v) for v in row])
        if count % CSV_CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def incident_geojson_chunks(rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """A GeoJSON FeatureCollection of points (WGS-84), one feature per incident, in chunks."""
    names = [c.name for c in INCIDENT_COLUMNS]
    lon_at, lat_at = names.index("lon"), names.index("lat")
    yield b'{"type":"FeatureCollection","features":['
    parts: list[str] = []
    first = True
    for row in rows:
        feature = {
            "type": "Feature",
            "id": row[0],
            "geometry": {"type": "Point", "coordinates": [row[lon_at], row[lat_at]]},
            "properties": {n: _text(v) for n, v in zip(names, row, strict=True)},
        }
        parts.append(("" if first else ",") + json.dumps(feature, ensure_ascii=False))
        first = False
        if len(parts) >= CSV_CHUNK_ROWS:
            yield "".join(parts).encode()
            parts.clear()
    parts.append("]}")
    yield "".join(parts).encode()


def _arrow_batch(
    columns: Sequence[Column],
    batch: Sequence[Sequence[Any]],
    geometry: Callable[[Sequence[Sequence[Any]]], np.ndarray],
    schema: pa.Schema,
) -> pa.RecordBatch:
    arrays = []
    # Rows may carry more than the columns (the stats layer's WKB rides at the end for `geometry`).
    transposed = list(zip(*batch, strict=True))[: len(columns)]
    for column, values in zip(columns, transposed, strict=True):
        if column.kind == "time":
            # Integer microseconds since the epoch → milliseconds, GeoPackage's precision.
            micros = pa.array(values, type=pa.int64())
            arrays.append(pc.divide(micros, 1000).cast(_ARROW_TYPES["time"]))
        else:
            arrays.append(pa.array(values, type=_ARROW_TYPES[column.kind]))
    arrays.append(pa.array(geometry(batch), type=pa.binary()))
    return pa.record_batch(arrays, schema=schema)


def write_geopackage(
    path: str,
    *,
    layer: str,
    columns: Sequence[Column],
    batches: Iterable[Sequence[Sequence[Any]]],
    geometry: Callable[[Sequence[Sequence[Any]]], np.ndarray],
    geometry_type: str,
) -> None:
    """Write batches of rows to a new GeoPackage layer from an Arrow stream, one batch in memory at a time.

    Time columns hold integer microseconds since the epoch (UTC), or None.
    """
    import pyogrio

    fields = [pa.field(c.name, _ARROW_TYPES[c.kind]) for c in columns]
    schema = pa.schema([*fields, pa.field("geometry", pa.binary())])
    arrow = (_arrow_batch(columns, batch, geometry, schema) for batch in batches if batch)
    reader = pa.RecordBatchReader.from_batches(schema, arrow)
    pyogrio.write_arrow(
        reader,
        path,
        layer=layer,
        driver="GPKG",
        geometry_name="geometry",
        geometry_type=geometry_type,
        crs="EPSG:4326",
    )


def _points(chunk: Sequence[Sequence[Any]]) -> np.ndarray:
    names = [c.name for c in INCIDENT_COLUMNS]
    lon_at, lat_at = names.index("lon"), names.index("lat")
    lon = np.fromiter((r[lon_at] for r in chunk), dtype=float, count=len(chunk))
    lat = np.fromiter((r[lat_at] for r in chunk), dtype=float, count=len(chunk))
    return np.asarray(shapely.to_wkb(shapely.points(lon, lat)), dtype=object)


def file_chunks(folder: str, path: str) -> Iterator[bytes]:
    """Read a file in chunks, then delete its folder (also when the client goes away mid-way)."""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(FILE_CHUNK_BYTES):
                yield chunk
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def incident_geopackage(
    user: Any, *, query: StatsFilter, reveal: bool = False
) -> tuple[Iterator[bytes], int]:
    """Write the incidents to a temporary GeoPackage; return its chunks (deleting it at the end) and size."""
    folder = tempfile.mkdtemp(prefix="yjld-export-")
    path = os.path.join(folder, "incidents.gpkg")
    try:
        write_geopackage(
            path,
            layer="incidents",
            columns=INCIDENT_COLUMNS,
            batches=incident_batches(user, query=query, reveal=reveal),
            geometry=_points,
            geometry_type="Point",
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return file_chunks(folder, path), os.path.getsize(path)


# ---------------------------------------------------------------------------------------- statistics


def _summary_columns(rows: list[dict[str, Any]]) -> list[Column]:
    kinds = {"code": "str", "name": "str", "layer": "str", "area_km2": "float"}
    names = list(rows[0]) if rows else ["code", "name", "layer", "area_km2", "total"]
    result = []
    for name in names:
        if name in kinds:
            result.append(Column(name, kinds[name]))
        elif name in ("density_per_km2", "per_km2_per_day"):
            result.append(Column(name, "float"))
        else:
            result.append(Column(name, "int"))
    return result


def stats_table(user: Any, *, query: StatsFilter, layer: str) -> tuple[list[Column], list[dict[str, Any]]]:
    """Per-unit statistics rows (one per unit of the layer) and their columns."""
    rows = unit_summary(user, query=query, layer=layer)
    return _summary_columns(rows), rows


def _unit_geometries(layer: str, codes: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    wanted = list(codes)
    for start in range(0, len(wanted), BATCH_ROWS):
        part = wanted[start : start + BATCH_ROWS]
        for code, wkb in (
            TerritoryUnit.objects.filter(layer=layer, code__in=part)
            .values_list("code", "geometry_wkb")
            .iterator()
        ):
            yield code, bytes(wkb)


def stats_geojson_chunks(
    layer: str, columns: Sequence[Column], rows: list[dict[str, Any]]
) -> Iterator[bytes]:
    """Per-unit statistics as a GeoJSON FeatureCollection of the units' polygons."""
    by_code = {r["code"]: r for r in rows}
    yield b'{"type":"FeatureCollection","features":['
    first = True
    for code, wkb in _unit_geometries(layer, by_code):
        geometry = json.loads(shapely.to_geojson(shapely.from_wkb(wkb)))
        properties = {c.name: by_code[code].get(c.name) for c in columns}
        feature = {"type": "Feature", "id": code, "geometry": geometry, "properties": properties}
        yield (("" if first else ",") + json.dumps(feature, ensure_ascii=False)).encode()
        first = False
    yield b"]}"


def stats_geopackage(
    layer: str, columns: Sequence[Column], rows: list[dict[str, Any]]
) -> tuple[Iterator[bytes], int]:
    """Per-unit statistics as a GeoPackage layer of multipolygons in a temporary file."""
    by_code = {r["code"]: r for r in rows}
    folder = tempfile.mkdtemp(prefix="yjld-export-")
    path = os.path.join(folder, "stats.gpkg")
    names = [c.name for c in columns]

    def table() -> Iterator[list[Sequence[Any]]]:
        batch: list[Sequence[Any]] = []
        for code, wkb in _unit_geometries(layer, by_code):
            batch.append((*(by_code[code].get(n) for n in names), wkb))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        yield batch

    def polygons(chunk: Sequence[Sequence[Any]]) -> np.ndarray:
        geoms = shapely.from_wkb([r[-1] for r in chunk])
        # One geometry type per layer: polygons are promoted to multipolygons.
        multi = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geoms]
        return np.asarray(shapely.to_wkb(multi), dtype=object)

    try:
        write_geopackage(
            path,
            layer=f"stats_{layer}",
            columns=columns,
            batches=table(),
            geometry=polygons,
            geometry_type="MultiPolygon",
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return file_chunks(folder, path), os.path.getsize(path)


def stats_csv_rows(columns: Sequence[Column], rows: list[dict[str, Any]]) -> Iterator[list[Any]]:
    """Per-unit statistics rows as lists, in column order."""
    names = [c.name for c in columns]
    for row in rows:
        yield [row.get(n) for n in names]


# ------------------------------------------------------------------------------------------ responses


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # thread_sensitive: the generator's database cursor belongs to the request's thread.
    sentinel: Any = object()
    step = sync_to_async(lambda: next(chunks, sentinel), thread_sensitive=True)
    try:
        while True:
            chunk = await step()
            if chunk is sentinel:
                break
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()


def stream(
    request: Any, chunks: Iterator[bytes], *, kind: str, filename: str, length: int | None = None
) -> StreamingHttpResponse:
    """A download streamed chunk by chunk under both ASGI (daphne) and WSGI."""
    raw_request = getattr(request, "_request", request)
    content: Any = _async_chunks(chunks) if isinstance(raw_request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=CONTENT_TYPES[kind])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    if length is not None:
        response["Content-Length"] = str(length)
    return response


def note_export(user: Any, *, what: str, kind: str, query: StatsFilter) -> None:
    """Log who exported what (masked exports; a clear one is recorded by export_reveal)."""
    audit.info(
        "export %s.%s by %s (%s) from %s to %s",
        what,
        kind,
        getattr(user, "username", "?"),
        getattr(user, "role", "?"),
        query.start.isoformat(),
        query.end.isoformat(),
    )


def export_reveal(user: Any, *, kind: str, query: StatsFilter, reason: str, source: str) -> int:
    """Record a clear export of incidents on the audit chain; returns the record's sequence number."""
    from audit.services import audit_record

    with transaction.atomic():
        record = audit_record(
            action="export_reveal",
            object_type="incident_export",
            actor=user,
            source=source,
            reason=reason,
            data={
                "format": kind,
                "from": query.start.isoformat(),
                "to": query.end.isoformat(),
                "category": query.category,
                "grade": query.grade,
                "status": list(query.status),
                "area": query.area,
                "overdue": query.overdue,
                "fields": ["reporter_name", "reporter_phone", "description", "address"],
            },
        )
    return int(record.seq)
