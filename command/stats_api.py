"""REST views of block data: statistics, hotspots, evaluation figures and exports (thin views).

Who may call them: the command centre (operator, commander) and the administrator see everything; a
department sees figures of its own orders (and the incidents it holds orders for); grid workers are
refused (403): their page is the phone page, and per-unit counts over other grids are not theirs to see.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import shapely
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from command import exports
from command.evaluation import COLUMNS, GROUPINGS, evaluation, evaluation_csv_rows
from command.hotspots import HOTSPOT_LAYERS, STATISTIC, density, emerging_hotspots
from command.stats import (
    STATS_ROLES,
    StatsQueryError,
    incident_counts,
    incidents_for_stats,
    parse_bool,
    parse_bucket,
    parse_dimension,
    parse_filter,
    parse_layer,
    parse_moment,
    period_compare,
    unit_summary,
)
from config.api import error_response
from gis.models import TerritoryUnit
from incidents.models import Source
from incidents.privacy import can_see_personal


def bad_query(exc: StatsQueryError) -> Response:
    """A 400 naming the parameter at fault."""
    return error_response(400, str(exc), field=exc.field)


class StatsReaders(BasePermission):
    """The command centre, administrators and departments; not grid workers."""

    message = "statistics are for the command centre, administrators and departments"

    def has_permission(self, request: Any, view: Any) -> bool:
        return getattr(request.user, "role", None) in STATS_ROLES


class CSVRenderer(BaseRenderer):
    """Lets ?format=csv through content negotiation; the views build the CSV body themselves."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return b"" if data is None else str(data).encode()


class GeoJSONRenderer(JSONRenderer):
    """JSON under the GeoJSON media type (?format=geojson)."""

    media_type = "application/geo+json"
    format = "geojson"


class StatsView(APIView):
    """Base of the statistics views: authentication and the role check."""

    permission_classes = [IsAuthenticated, StatsReaders]
    # Answers here are aggregates by construction (codes, unit and department names, counts, rates):
    # no free text or personal field to redact, and walking tens of thousands of values through the
    # redacting renderer would cost more than the query. Exports, which do carry free text, mask it.
    renderer_classes = [JSONRenderer]


_PERIOD = [
    OpenApiParameter(
        "from", OpenApiTypes.STR, description="start (inclusive): ISO date or datetime, local time"
    ),
    OpenApiParameter(
        "to", OpenApiTypes.STR, description="end (exclusive); default: tomorrow 00:00, 30-day span"
    ),
    OpenApiParameter("category", OpenApiTypes.STR, description="category or family code"),
    OpenApiParameter("grade", OpenApiTypes.STR, description="grade code (I…IV)"),
    OpenApiParameter(
        "status", OpenApiTypes.STR, description="comma-separated statuses (default: all but merged)"
    ),
    OpenApiParameter("area", OpenApiTypes.STR, description="code of a territory unit at any level"),
    OpenApiParameter("overdue", OpenApiTypes.BOOL),
]
_LAYER = OpenApiParameter(
    "layer", OpenApiTypes.STR, enum=["district", "street", "community", "grid", "block"]
)


def _iso(value: dt.datetime | None) -> str | None:
    return timezone.localtime(value).isoformat() if value else None


class IncidentStatsView(StatsView):
    """Incident counts per territory unit, per time bucket and per category, family, grade or status."""

    @extend_schema(
        parameters=[
            _LAYER,
            OpenApiParameter("bucket", OpenApiTypes.STR, enum=["hour", "day", "week", "month"]),
            OpenApiParameter("by", OpenApiTypes.STR, enum=["category", "family", "grade", "status"]),
            *_PERIOD,
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="rows of unit, bucket, key, count")},
        summary="Incident counts per unit and time bucket",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        try:
            layer = parse_layer(params.get("layer"))
            bucket = parse_bucket(params.get("bucket"))
            by = parse_dimension(params.get("by"))
            query = parse_filter(params, bucket=bucket)
        except StatsQueryError as exc:
            return bad_query(exc)
        rows = incident_counts(request.user, query=query, layer=layer, bucket=bucket, by=by)
        return Response(
            {
                "layer": layer,
                "bucket": bucket,
                "by": by,
                "from": _iso(query.start),
                "to": _iso(query.end),
                "time_zone": str(timezone.get_default_timezone()),
                "total": sum(r["count"] for r in rows),
                "rows": _rows_out(rows),
            }
        )


def _rows_out(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Tens of thousands of rows share a few dozen buckets: format each bucket once.
    texts: dict[Any, str | None] = {None: None}
    out = []
    for row in rows:
        moment = row["bucket"]
        if moment not in texts:
            texts[moment] = _iso(moment)
        out.append({"unit": row["unit"], "bucket": texts[moment], "key": row["key"], "count": row["count"]})
    return out


class UnitStatsView(StatsView):
    """Per-unit totals of a layer (every unit, zeros included): by family, grade, state, and density."""

    @extend_schema(
        parameters=[_LAYER, *_PERIOD],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="units: one row per unit")},
        summary="Statistics per territory unit",
    )
    def get(self, request: Request) -> Response:
        try:
            layer = parse_layer(request.query_params.get("layer"), default="block")
            query = parse_filter(request.query_params)
        except StatsQueryError as exc:
            return bad_query(exc)
        assert layer is not None
        units = unit_summary(request.user, query=query, layer=layer)
        return Response({"layer": layer, "from": _iso(query.start), "to": _iso(query.end), "units": units})


class CompareStatsView(StatsView):
    """This period against the one of equal length before it (period comparison)."""

    @extend_schema(
        parameters=_PERIOD,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="current, previous, change")},
        summary="Period comparison",
    )
    def get(self, request: Request) -> Response:
        try:
            query = parse_filter(request.query_params)
        except StatsQueryError as exc:
            return bad_query(exc)
        return Response(period_compare(request.user, query=query))


class DepartmentStatsView(StatsView):
    """Times per stage and on-time rates per department (the evaluation figures by department)."""

    @extend_schema(
        parameters=_PERIOD,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="departments: evaluation rows")},
        summary="Stage times and on-time rates per department",
    )
    def get(self, request: Request) -> Response:
        try:
            query = parse_filter(request.query_params)
        except StatsQueryError as exc:
            return bad_query(exc)
        rows = evaluation(request.user, query=query, by="department")
        return Response({"from": _iso(query.start), "to": _iso(query.end), "departments": rows})


def _positive(params: Any, name: str, default: float, *, upper: float) -> float:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StatsQueryError(name, f"not a number: {str(raw)[:32]!r}") from None
    if not 0 < value <= upper:
        raise StatsQueryError(name, f"must be above 0 and at most {upper:g}")
    return value


class HotspotView(StatsView):
    """Emerging hotspots (window against each unit's own history) and density, as a list or a map layer."""

    renderer_classes = [JSONRenderer, GeoJSONRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("layer", OpenApiTypes.STR, enum=list(HOTSPOT_LAYERS)),
            OpenApiParameter("window_hours", OpenApiTypes.DOUBLE, description="current window (default 24)"),
            OpenApiParameter(
                "history_days", OpenApiTypes.DOUBLE, description="history before it (default 28)"
            ),
            OpenApiParameter("at", OpenApiTypes.STR, description="end of the window (default now)"),
            OpenApiParameter("category", OpenApiTypes.STR),
            OpenApiParameter("min_count", OpenApiTypes.INT, description="default 3"),
            OpenApiParameter(
                "fdr", OpenApiTypes.DOUBLE, description="Benjamini–Hochberg level (default 0.05)"
            ),
            OpenApiParameter("limit", OpenApiTypes.INT, description="rows of the ranked lists (default 50)"),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "geojson"]),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="emerging, ranked, density")},
        summary="Hotspots: density and emerging hotspots",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        try:
            layer = parse_layer(params.get("layer"), default="block")
            if layer not in HOTSPOT_LAYERS:
                raise StatsQueryError("layer", "hotspots are kept per block or grid")
            assert layer is not None
            window = dt.timedelta(hours=_positive(params, "window_hours", 24, upper=24 * 31))
            history = dt.timedelta(days=_positive(params, "history_days", 28, upper=366))
            fdr = _positive(params, "fdr", 0.05, upper=1)
            min_count = int(_positive(params, "min_count", 3, upper=100000))
            limit = int(_positive(params, "limit", 50, upper=10000))
            raw_at = params.get("at")
            at = parse_moment("at", raw_at) if raw_at else timezone.now()
            period = {
                "from": (at - window).isoformat(),
                "to": at.isoformat(),
                "category": params.get("category"),
            }
            query = parse_filter(period)
        except StatsQueryError as exc:
            return bad_query(exc)
        visible = incidents_for_stats(request.user)
        spots = emerging_hotspots(
            layer=layer,
            now=at,
            window=window,
            history=history,
            category=query.category,
            min_count=min_count,
            fdr=fdr,
            incidents=visible,
        )
        if request.accepted_renderer.format == "geojson":
            return Response(_hotspot_features(layer, spots), content_type="application/geo+json")
        dense = density(visible, layer=layer, query=query, limit=limit)
        return Response(
            {
                "layer": layer,
                "window": {"from": _iso(at - window), "to": _iso(at)},
                "history": {"from": _iso(at - window - history), "to": _iso(at - window)},
                "statistic": STATISTIC,
                "min_count": min_count,
                "fdr": fdr,
                "emerging": [h.as_dict() for h in spots if h.emerging],
                "ranked": [h.as_dict() for h in spots[:limit]],
                "density": dense,
            }
        )


def _hotspot_features(layer: str, spots: list[Any]) -> dict[str, Any]:
    by_code = {h.code: h for h in spots}
    features = []
    for code, wkb in TerritoryUnit.objects.filter(layer=layer, code__in=list(by_code)).values_list(
        "code", "geometry_wkb"
    ):
        geometry = json.loads(shapely.to_geojson(shapely.from_wkb(bytes(wkb))))
        features.append(
            {"type": "Feature", "id": code, "geometry": geometry, "properties": by_code[code].as_dict()}
        )
    features.sort(key=lambda f: (not f["properties"]["emerging"], f["properties"]["p_value"]))
    return {"type": "FeatureCollection", "statistic": STATISTIC, "features": features}


class EvaluationView(StatsView):
    """Evaluation figures per department, grid or grid worker over a period; ?format=csv for a file."""

    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("by", OpenApiTypes.STR, enum=list(GROUPINGS)),
            OpenApiParameter("department", OpenApiTypes.STR, description="department code"),
            *_PERIOD,
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="columns and rows (or CSV)")},
        summary="Evaluation (绩效评价) figures",
    )
    def get(self, request: Request) -> Response | HttpResponse:
        params = request.query_params
        by = params.get("by") or "department"
        if by not in GROUPINGS:
            return bad_query(StatsQueryError("by", f"use one of {', '.join(GROUPINGS)}"))
        try:
            query = parse_filter(params)
        except StatsQueryError as exc:
            return bad_query(exc)
        rows = evaluation(request.user, query=query, by=by, department=params.get("department") or None)
        if request.accepted_renderer.format == "csv":
            body = b"".join(exports.csv_chunks(COLUMNS, list(evaluation_csv_rows(rows))[1:]))
            response = HttpResponse(body, content_type="text/csv; charset=utf-8")
            stamp = f"{timezone.localtime(query.start):%Y%m%d}-{timezone.localtime(query.end):%Y%m%d}"
            response["Content-Disposition"] = f'attachment; filename="evaluation-{by}-{stamp}.csv"'
            return response
        return Response(
            {"by": by, "from": _iso(query.start), "to": _iso(query.end), "columns": COLUMNS, "rows": rows}
        )


class ExportView(StatsView):
    """Base of the downloads: any Accept header is fine (the file's type is in the URL)."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)


class IncidentExportView(ExportView):
    """Incidents matching the filters as CSV, GeoJSON or GeoPackage; personal data masked unless revealed."""

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(exports.FORMATS)),
            *_PERIOD,
            OpenApiParameter(
                "reveal",
                OpenApiTypes.BOOL,
                description="command centre only: personal data in clear (audited)",
            ),
            OpenApiParameter("reason", OpenApiTypes.STR, description="why, required with reveal (recorded)"),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.BINARY)},
        summary="Export incidents",
    )
    def get(self, request: Request, kind: str) -> Response | StreamingHttpResponse:
        if kind not in exports.FORMATS:
            return error_response(
                404, f"unknown format {kind[:16]!r}; use csv, geojson or gpkg", field="kind"
            )
        params = request.query_params
        try:
            query = parse_filter(params)
            reveal = bool(parse_bool("reveal", params.get("reveal")))
        except StatsQueryError as exc:
            return bad_query(exc)
        if reveal:
            if not can_see_personal(request.user):
                return error_response(403, "only the command centre may export personal data in clear")
            reason = str(params.get("reason") or "").strip()[:500]
            if not reason:
                return error_response(400, "reason: a reason is required to export in clear", field="reason")
            exports.export_reveal(request.user, kind=kind, query=query, reason=reason, source=Source.API)
        else:
            exports.note_export(request.user, what="incidents", kind=kind, query=query)
        stamp = f"{timezone.localtime(query.start):%Y%m%d}-{timezone.localtime(query.end):%Y%m%d}"
        name = f"incidents-{stamp}.{kind}"
        rows = exports.incident_rows(request.user, query=query, reveal=reveal)
        if kind == "csv":
            header = [c.name for c in exports.INCIDENT_COLUMNS]
            return exports.stream(request, exports.csv_chunks(header, rows), kind=kind, filename=name)
        if kind == "geojson":
            return exports.stream(request, exports.incident_geojson_chunks(rows), kind=kind, filename=name)
        chunks, size = exports.incident_geopackage(request.user, query=query, reveal=reveal)
        return exports.stream(request, chunks, kind=kind, filename=name, length=size)


class StatsExportView(ExportView):
    """Per-unit statistics of a layer as CSV, GeoJSON (unit polygons) or GeoPackage."""

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(exports.FORMATS)),
            _LAYER,
            *_PERIOD,
        ],
        responses={200: OpenApiResponse(OpenApiTypes.BINARY)},
        summary="Export statistics per territory unit",
    )
    def get(self, request: Request, kind: str) -> Response | StreamingHttpResponse:
        if kind not in exports.FORMATS:
            return error_response(
                404, f"unknown format {kind[:16]!r}; use csv, geojson or gpkg", field="kind"
            )
        try:
            layer = parse_layer(request.query_params.get("layer"), default="block")
            query = parse_filter(request.query_params)
        except StatsQueryError as exc:
            return bad_query(exc)
        assert layer is not None
        exports.note_export(request.user, what="stats", kind=kind, query=query)
        columns, rows = exports.stats_table(request.user, query=query, layer=layer)
        stamp = f"{timezone.localtime(query.start):%Y%m%d}-{timezone.localtime(query.end):%Y%m%d}"
        name = f"stats-{layer}-{stamp}.{kind}"
        if kind == "csv":
            chunks = exports.csv_chunks([c.name for c in columns], exports.stats_csv_rows(columns, rows))
            return exports.stream(request, chunks, kind=kind, filename=name)
        if kind == "geojson":
            return exports.stream(
                request, exports.stats_geojson_chunks(layer, columns, rows), kind=kind, filename=name
            )
        chunks, size = exports.stats_geopackage(layer, columns, rows)
        return exports.stream(request, chunks, kind=kind, filename=name, length=size)
