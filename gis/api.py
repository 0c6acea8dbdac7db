"""REST views of the gis app: point geocoding."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gis.geocoding import InvalidCoordinate, OutsideTerritory, geocode_point


def error_response(code: int, detail: str, **extra: Any) -> Response:
    """The shared error shape {"error": {"status", "detail", …}}."""
    return Response({"error": {"status": code, "detail": detail, **extra}}, status=code)


class GeocodeView(APIView):
    """Resolve a point to its district, street, community, grid and block."""

    @extend_schema(
        parameters=[
            OpenApiParameter("lon", OpenApiTypes.DOUBLE, required=True, description="longitude"),
            OpenApiParameter("lat", OpenApiTypes.DOUBLE, required=True, description="latitude"),
            OpenApiParameter(
                "crs",
                OpenApiTypes.STR,
                enum=["wgs84", "gcj02", "bd09", "cgcs2000"],
                description="datum of lon/lat (default wgs84)",
            ),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the geocode result"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad input; `field` names it"),
            422: OpenApiResponse(
                OpenApiTypes.OBJECT, description="outside the territory; nearest grid named"
            ),
        },
        summary="Geocode a point",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        for field in ("lon", "lat"):
            if field not in params:
                return error_response(400, f"{field}: this query parameter is required", field=field)
        try:
            result = geocode_point(lon=params["lon"], lat=params["lat"], crs=params.get("crs", "wgs84"))
        except InvalidCoordinate as exc:
            return error_response(400, str(exc), field=exc.field)
        except OutsideTerritory as exc:
            nearest = None
            if exc.nearest_code is not None:
                nearest = {"code": exc.nearest_code, "name": exc.nearest_name, "distance_m": exc.distance_m}
            return error_response(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc), nearest_grid=nearest)
        return Response(result)
