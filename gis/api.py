"""REST views of the gis app: point and address geocoding, reverse geocoding, territory GeoJSON."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import error_response
from gis.features import LEVELS, MAX_SIMPLIFY_M, FeatureQueryError, parse_feature_query, territory_geojson
from gis.geocoding import InvalidCoordinate, OutsideTerritory, geocode_point
from gis.places import MAX_LIMIT, MAX_REVERSE_RADIUS_M, SEARCH_KINDS, address_search, reverse_geocode


def _outside_response(exc: OutsideTerritory) -> Response:
    nearest = None
    if exc.nearest_code is not None:
        nearest = {"code": exc.nearest_code, "name": exc.nearest_name, "distance_m": exc.distance_m}
    return error_response(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc), nearest_grid=nearest)


def _missing(params: Any, fields: tuple[str, ...], hint: str = "") -> Response | None:
    for field in fields:
        if field not in params:
            return error_response(400, f"{field}: this query parameter is required{hint}", field=field)
    return None


_CRS_PARAMETER = OpenApiParameter(
    "crs",
    OpenApiTypes.STR,
    enum=["wgs84", "gcj02", "bd09", "cgcs2000"],
    description="datum of lon/lat (default wgs84); results are always WGS-84",
)
_ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad input; `field` names it"),
    422: OpenApiResponse(OpenApiTypes.OBJECT, description="outside the territory; nearest grid named"),
}


class GeocodeView(APIView):
    """Resolve a point to its district, street, community, grid and block, or search an address."""

    @extend_schema(
        parameters=[
            OpenApiParameter("lon", OpenApiTypes.DOUBLE, description="longitude (required without q)"),
            OpenApiParameter("lat", OpenApiTypes.DOUBLE, description="latitude (required without q)"),
            _CRS_PARAMETER,
            OpenApiParameter(
                "q",
                OpenApiTypes.STR,
                description="address or place name: returns ranked candidates instead (lon/lat ignored)",
            ),
            OpenApiParameter("limit", OpenApiTypes.INT, description=f"with q: 1–{MAX_LIMIT} (default 10)"),
            OpenApiParameter(
                "kind",
                OpenApiTypes.STR,
                description=f"with q: comma-separated kinds to keep ({', '.join(SEARCH_KINDS)})",
            ),
        ],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="the geocode result; with q: {query, normalized, count, candidates[]}",
            ),
            **_ERRORS,
        },
        summary="Geocode a point, or search an address",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        if "q" in params:
            return self._search(params)
        missing = _missing(params, ("lon", "lat"), " (or give q for an address search)")
        if missing is not None:
            return missing
        try:
            result = geocode_point(lon=params["lon"], lat=params["lat"], crs=params.get("crs", "wgs84"))
        except InvalidCoordinate as exc:
            return error_response(400, str(exc), field=exc.field)
        except OutsideTerritory as exc:
            return _outside_response(exc)
        return Response(result)

    @staticmethod
    def _search(params: Any) -> Response:
        try:
            limit = int(params.get("limit") or 10)
        except ValueError:
            return error_response(
                400, f"limit: not an integer: {str(params.get('limit'))[:40]!r}", field="limit"
            )
        raw_kinds = params.get("kind")
        kinds = [k.strip() for k in raw_kinds.split(",") if k.strip()] if raw_kinds is not None else None
        try:
            return Response(address_search(q=params["q"], limit=limit, kinds=kinds))
        except InvalidCoordinate as exc:
            return error_response(400, str(exc), field=exc.field)


class ReverseGeocodeView(APIView):
    """The nearest named place to a point, with the point's territory hierarchy."""

    @extend_schema(
        parameters=[
            OpenApiParameter("lon", OpenApiTypes.DOUBLE, required=True, description="longitude"),
            OpenApiParameter("lat", OpenApiTypes.DOUBLE, required=True, description="latitude"),
            _CRS_PARAMETER,
            OpenApiParameter(
                "radius",
                OpenApiTypes.DOUBLE,
                description=f"metres to look for a landmark or door address (default 500, at most "
                f"{MAX_REVERSE_RADIUS_M:g})",
            ),
        ],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="the geocode result plus `place`: {name, kind, lon, lat, distance_m} or null",
            ),
            **_ERRORS,
        },
        summary="Reverse geocode a point",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        missing = _missing(params, ("lon", "lat"))
        if missing is not None:
            return missing
        try:
            radius = float(params.get("radius") or 500.0)
        except ValueError:
            return error_response(
                400, f"radius: not a number: {params.get('radius', '')[:40]!r}", field="radius"
            )
        try:
            result = reverse_geocode(
                lon=params["lon"], lat=params["lat"], crs=params.get("crs", "wgs84"), radius_m=radius
            )
        except InvalidCoordinate as exc:
            return error_response(400, str(exc), field=exc.field)
        except OutsideTerritory as exc:
            return _outside_response(exc)
        return Response(result)


class TerritoryView(APIView):
    """Territory units of one level as a GeoJSON FeatureCollection (WGS-84)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("level", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(LEVELS)),
            OpenApiParameter(
                "simplify",
                OpenApiTypes.DOUBLE,
                description=f"simplification tolerance in metres (0–{MAX_SIMPLIFY_M:g}); "
                "neighbours stay seamless",
            ),
            OpenApiParameter(
                "bbox", OpenApiTypes.STR, description="minlon,minlat,maxlon,maxlat: units intersecting it"
            ),
            OpenApiParameter("parent", OpenApiTypes.STR, description="code of an ancestor unit"),
        ],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="FeatureCollection; properties code, name, parent_code, level",
            ),
            304: OpenApiResponse(description="unchanged since the ETag sent in If-None-Match"),
            400: _ERRORS[400],
        },
        summary="Territory units as GeoJSON",
    )
    def get(self, request: Request, level: str) -> HttpResponse | Response:
        try:
            query = parse_feature_query(level, request.query_params)
            version, body = territory_geojson(query)
        except FeatureQueryError as exc:
            return error_response(400, str(exc), field=exc.field)
        etag = query.etag(version)
        if etag in request.headers.get("If-None-Match", ""):
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(body, content_type="application/geo+json")
        response["ETag"] = etag
        # Clients may keep the body but must ask again: a new territory version changes it.
        response["Cache-Control"] = "private, no-cache"
        return response
