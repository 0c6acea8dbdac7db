"""REST view of unit recommendation: GET /api/v1/incidents/{id}/recommended-units/."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from command.api import error_response, unit_body
from command.constants import Role
from command.models import Department
from command.recommend import MAX_K, Recommendation, incident_recommend_units
from incidents.selectors import incidents_visible_to


def recommendation_body(incident: Any, found: Recommendation, k: int) -> dict[str, Any]:
    """The representation of a recommendation for the dispatch dialog."""
    return {
        "incident": {"id": incident.pk, "code": incident.code, "lon": incident.lon, "lat": incident.lat},
        "k": k,
        "method": found.method,
        "note": found.note or None,
        "network": found.network,
        "speed_kmh": found.speed_kmh,
        "detour_factor": found.detour_factor,
        "considered": found.considered,
        "units": [
            {
                "unit": unit_body(r.unit),
                "department": {"code": r.department.code, "name": r.department.name},
                "distance_m": round(r.distance_m, 1),
                "eta_s": round(r.eta_s, 1),
                "method": r.method,
            }
            for r in found.units
        ],
    }


class RecommendedUnitsView(APIView):
    """The top-k available units for an incident, by road travel time when a network is loaded."""

    @extend_schema(
        parameters=[
            OpenApiParameter("k", OpenApiTypes.INT, description=f"how many units, 1–{MAX_K} (default 5)"),
            OpenApiParameter("kind", OpenApiTypes.STR, description="only units of this kind"),
            OpenApiParameter("department", OpenApiTypes.STR, description="only this department's units"),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="`method` says road or straight_line"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad parameter; the field is named"),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="only the command centre"),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="no such incident"),
        },
        summary="Recommend units for an incident",
    )
    def get(self, request: Request, pk: int) -> Response:
        if getattr(request.user, "role", None) not in (Role.OPERATOR, Role.COMMANDER):
            return error_response(403, "only the command centre dispatches units")
        incident = get_object_or_404(incidents_visible_to(request.user), pk=pk)
        params = request.query_params
        raw_k = params.get("k", "5").strip()
        if not raw_k.isdigit() or not 1 <= int(raw_k) <= MAX_K:
            return error_response(400, f"k: a whole number from 1 to {MAX_K} is expected", field="k")
        k = int(raw_k)
        kind = params.get("kind", "").strip() or None
        if kind is not None and len(kind) > 32:
            return error_response(400, "kind: at most 32 characters", field="kind")
        department = None
        if params.get("department"):
            department = Department.objects.filter(code=params["department"], active=True).first()
            if department is None:
                return error_response(
                    400, f"department: unknown department {params['department']!r}", field="department"
                )
        found = incident_recommend_units(incident=incident, k=k, kind=kind, department=department)
        return Response(recommendation_body(incident, found, k))
