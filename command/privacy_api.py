"""The audited reveal: `POST /api/v1/incidents/{id}/reveal/` answers an incident's personal data in clear.

Everywhere else the API masks reporters' mobile and ID numbers (config.security.RedactingJSONRenderer),
for every role. The roles with a need to call reporters back (incidents.privacy.PERSONAL_DATA_ROLES:
operator and commander) reveal them here, one incident at a time, with a reason; each reveal is a row
of the audit chain written in the same transaction as the answer is prepared, so there is no clear
number without its record. Reveals are rate limited per user (SECURITY_RATES["reveal"]).
"""

from __future__ import annotations

import math
from typing import Any

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.services import audit_record
from config.security import rate_hit
from incidents.models import Incident, Source
from incidents.privacy import can_see_personal
from incidents.selectors import incidents_visible_to

REVEALED_FIELDS = ("reporter_name", "reporter_phone", "description", "address")


def personal_data_reveal(*, incident: Incident, actor: Any, reason: str, source: str) -> dict[str, Any]:
    """The clear personal data of an incident's reports, recorded on the audit chain with the reason."""
    with transaction.atomic():
        reports = list(incident.reports.order_by("received_at", "id"))
        record = audit_record(
            action="reveal",
            object_type="incident",
            object_id=incident.pk,
            actor=actor,
            source=source,
            reason=reason,
            data={"fields": list(REVEALED_FIELDS), "reports": [r.pk for r in reports], "code": incident.code},
        )
    return {
        "incident_id": incident.pk,
        "code": incident.code,
        "description": incident.description,
        "address": incident.address,
        "reports": [
            {
                "id": r.pk,
                "reporter_name": r.reporter_name,
                "reporter_phone": r.reporter_phone,
                "description": r.description,
                "address": r.address,
            }
            for r in reports
        ],
        "audit_seq": record.seq,
    }


class RevealInput(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=500, help_text="why the numbers are needed (recorded)")


class IncidentRevealView(APIView):
    """Reveal an incident's reporters' phone and ID numbers in clear, with a reason that is audited."""

    # The renderer masks personal numbers in every other answer; this one exists to show them.
    reveals_personal_data = True

    @extend_schema(
        request=RevealInput,
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT, description="the clear personal data and its audit row"
            ),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="no reason given"),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="the role has no right to personal data"),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="no such incident for the caller"),
            429: OpenApiResponse(OpenApiTypes.OBJECT, description="too many reveals; see Retry-After"),
        },
        summary="Reveal personal data (audited)",
    )
    def post(self, request: Request, pk: int) -> Response:
        if not can_see_personal(request.user):
            return _error(403, "only the command centre may reveal personal data")
        incident = get_object_or_404(incidents_visible_to(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return _error(400, "the body must be a JSON object")
        checked = RevealInput(data=request.data)
        if not checked.is_valid() or not checked.validated_data["reason"].strip():
            return _error(400, "reason: a reason for the reveal is required", field="reason")
        wait = rate_hit("reveal", f"user:{request.user.pk}")
        if wait:
            response = _error(429, "too many reveals; try again later")
            response["Retry-After"] = str(math.ceil(wait))
            return response
        body = personal_data_reveal(
            incident=incident,
            actor=request.user,
            reason=checked.validated_data["reason"].strip(),
            source=Source.API,
        )
        return Response(body)


def _error(code: int, detail: str, **extra: Any) -> Response:
    return Response({"error": {"status": code, "detail": detail, **extra}}, status=code)
