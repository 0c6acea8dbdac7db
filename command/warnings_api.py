"""REST views of early warnings: create, list, detail with receipts and coverage, actions, CAP in and out."""

from __future__ import annotations

from typing import Any

import shapely
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from command import cap
from command.constants import Role
from command.models import LEVEL_NUMERAL, EarlyWarning, WarningLevel, WarningReceipt, WarningStatus
from command.warnings import (
    WarningActionRefused,
    allowed_actions,
    needs_approval,
    warning_act,
    warning_area,
    warning_cap_xml,
    warning_coverage,
    warning_create,
    warning_identifier,
    warning_import_cap,
    warnings_visible_to,
)
from config.api import error_response
from incidents.models import Source
from incidents.services import ActionError

CENTRE = (Role.OPERATOR, Role.COMMANDER)


def _user(user: Any) -> dict[str, Any] | None:
    return {"id": user.pk, "username": user.username, "name": user.get_full_name()} if user else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def warning_body(warning: EarlyWarning, user: Any, *, detail: bool = False) -> dict[str, Any]:
    """The representation of a warning for its reader (detail adds area, receipts, coverage, timeline)."""
    body: dict[str, Any] = {
        "id": warning.pk,
        "level": warning.level,
        "level_numeral": LEVEL_NUMERAL[warning.level],
        "type": warning.type,
        "event_code": warning.event_code or None,
        "headline": warning.headline,
        "status": warning.status,
        "version": warning.version,
        "origin": warning.origin,
        "area_desc": warning.area_desc,
        "effective": _iso(warning.effective_at),
        "onset": _iso(warning.onset_at),
        "expires": _iso(warning.expires_at),
        "issued_at": _iso(warning.issued_at),
        "needs_approval": needs_approval(warning.level),
    }
    if not detail:
        return body
    centre = getattr(user, "role", None) in (*CENTRE, Role.ADMIN)
    body.update(
        {
            "description": warning.description,
            "instructions": warning.instructions,
            "language": warning.language,
            "translations": warning.translations,
            "cap_category": warning.cap_category,
            "area": {
                "spec": warning.area_spec,
                "description": warning.area_desc,
                "km2": round(warning.area_km2, 3),
                "summary": warning.area_summary,
                "geojson": shapely.geometry.mapping(warning_area(warning)),
            },
            "created_by": _user(warning.created_by),
            "created_at": _iso(warning.created_at),
            "edited_by": _user(warning.edited_by),
            "approved_by": _user(warning.approved_by),
            "approved_at": _iso(warning.approved_at),
            "issued_by": _user(warning.issued_by),
            "cancelled_at": _iso(warning.cancelled_at),
            "expired_at": _iso(warning.expired_at),
            "identifier": warning_identifier(warning),
            "allowed_actions": allowed_actions(warning, user),
        }
    )
    mine = WarningReceipt.objects.filter(warning=warning, user_id=getattr(user, "pk", 0) or 0).first()
    body["my_receipt"] = _receipt(mine) if mine else None
    if centre:
        body["coverage"] = warning_coverage(warning)
        body["timeline"] = [
            {
                "at": r.at.isoformat(),
                "actor": r.actor.username if r.actor else None,
                "role": r.actor_role,
                "source": r.source,
                "action": r.action,
                "from": r.from_status,
                "to": r.to_status,
                "reason": r.reason,
                "data": r.data,
            }
            for r in warning.timeline.select_related("actor")
        ]
    return body


def _receipt(receipt: WarningReceipt) -> dict[str, Any]:
    return {
        "user": receipt.user_id,
        "version": receipt.version,
        "reasons": receipt.reasons,
        "districts": receipt.districts,
        "notified_at": _iso(receipt.notified_at),
        "delivered_at": _iso(receipt.delivered_at),
        "read_at": _iso(receipt.read_at),
    }


def receipts_body(warning: EarlyWarning) -> list[dict[str, Any]]:
    """Every recipient's receipt, with who they are and their unit."""
    rows = (
        WarningReceipt.objects.filter(warning=warning)
        .select_related("user", "department")
        .order_by("user_id")
    )
    return [
        {
            **_receipt(r),
            "username": r.user.username,
            "name": r.user.get_full_name(),
            "role": r.user.role,
            "department": r.department.code if r.department else None,
        }
        for r in rows
    ]


def _first_error(errors: Any) -> tuple[str, str]:
    field = next(iter(errors))
    value = errors[field]
    while isinstance(value, dict):
        key = next(iter(value))
        field, value = f"{field}.{key}", value[key]
    message = value[0] if isinstance(value, list) and value else value
    return field, str(message)


class WarningInput(serializers.Serializer[Any]):
    level = serializers.ChoiceField(choices=WarningLevel.values)
    type = serializers.CharField(max_length=64)
    headline = serializers.CharField(max_length=256)
    description = serializers.CharField(max_length=8000, required=False, allow_blank=True)
    instructions = serializers.CharField(max_length=8000, required=False, allow_blank=True)
    event_code = serializers.CharField(max_length=16, required=False, allow_blank=True)
    cap_category = serializers.CharField(max_length=16, required=False)
    language = serializers.CharField(max_length=16, required=False)
    translations = serializers.DictField(required=False)
    area = serializers.DictField(
        help_text="{polygons: [[[lon, lat], …]], circles: [{lon, lat, radius_m}], "
        "units: [{layer, code}], crs, description}"
    )
    effective = serializers.CharField(required=False, help_text="ISO 8601; default now")
    onset = serializers.CharField(required=False)
    expires = serializers.CharField(help_text="ISO 8601")


class WarningPagination(CursorPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"
    ordering = ("-created_at", "-id")


class WarningListView(APIView):
    """Warnings visible to the caller (newest first), and drafting a new one."""

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, description="one or more statuses, comma-separated"),
            OpenApiParameter("level", OpenApiTypes.STR, description="one or more levels, comma-separated"),
            OpenApiParameter("live", OpenApiTypes.BOOL, description="only warnings in force"),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        summary="List warnings",
        operation_id="warnings_list",
    )
    def get(self, request: Request) -> Response:
        queryset = warnings_visible_to(request.user)
        params = request.query_params
        for name, values in (("status", WarningStatus.values), ("level", WarningLevel.values)):
            chosen = [v for v in params.get(name, "").split(",") if v]
            if any(v not in values for v in chosen):
                return error_response(400, f"{name}: use any of {', '.join(values)}", field=name)
            if chosen:
                queryset = queryset.filter(**{f"{name}__in": chosen})
        if params.get("live") in ("1", "true"):
            queryset = queryset.filter(status__in=[WarningStatus.ISSUED, WarningStatus.UPDATED])
        paginator = WarningPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        assert page is not None
        return paginator.get_paginated_response([warning_body(w, request.user) for w in page])

    @extend_schema(
        request=WarningInput,
        responses={
            201: OpenApiResponse(OpenApiTypes.OBJECT, description="the draft"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad input; the field is named"),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="only the command centre drafts warnings"),
        },
        summary="Draft a warning",
    )
    def post(self, request: Request) -> Response:
        if getattr(request.user, "role", None) not in CENTRE:
            return error_response(403, "only the command centre drafts warnings")
        if not isinstance(request.data, dict):
            return error_response(400, "the body must be a JSON object")
        checked = WarningInput(data=request.data)
        if not checked.is_valid():
            field, message = _first_error(checked.errors)
            return error_response(400, f"{field}: {message}", field=field)
        try:
            warning = warning_create(actor=request.user, source=Source.API, payload=dict(request.data))
        except ActionError as exc:
            return error_response(400, str(exc), field=exc.field)
        except WarningActionRefused as exc:
            return error_response(exc.status, str(exc))
        warning = warnings_visible_to(request.user).get(pk=warning.pk)
        return Response(warning_body(warning, request.user, detail=True), status=201)


class WarningDetailView(APIView):
    """One warning with its area, coverage, timeline and (for the command centre) every receipt."""

    @extend_schema(
        parameters=[
            OpenApiParameter("receipts", OpenApiTypes.BOOL, description="include receipts (default 1)")
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        summary="A warning",
    )
    def get(self, request: Request, pk: int) -> Response:
        warning = get_object_or_404(warnings_visible_to(request.user), pk=pk)
        body = warning_body(warning, request.user, detail=True)
        centre = getattr(request.user, "role", None) in (*CENTRE, Role.ADMIN)
        if centre and request.query_params.get("receipts", "1") not in ("0", "false"):
            body["receipts"] = receipts_body(warning)
        return Response(body)


class WarningActionInput(serializers.Serializer[Any]):
    action = serializers.ChoiceField(choices=["approve", "issue", "update", "cancel", "read"])
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    changes = serializers.DictField(required=False, help_text="update: the fields to change")


class WarningActionView(APIView):
    """Act on a warning: approve, issue, update (with `changes`), cancel (with a reason), read."""

    @extend_schema(
        request=WarningActionInput,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the warning after the action"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad arguments; the field is named"),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="not the caller's to do"),
            409: OpenApiResponse(
                OpenApiTypes.OBJECT, description="not in this state; `allowed` lists what is"
            ),
        },
        summary="Act on a warning",
    )
    def post(self, request: Request, pk: int) -> Response:
        warning = get_object_or_404(warnings_visible_to(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return error_response(400, "the body must be a JSON object")
        checked = WarningActionInput(data=request.data)
        if not checked.is_valid():
            field, message = _first_error(checked.errors)
            return error_response(400, f"{field}: {message}", field=field)
        payload = dict(request.data)
        action = payload.pop("action")
        if action == "update" and "changes" not in payload:
            return error_response(400, "changes: the fields to change are required", field="changes")
        try:
            warning = warning_act(
                warning_id=warning.pk, actor=request.user, action=action, source=Source.API, payload=payload
            )
        except ActionError as exc:
            return error_response(400, str(exc), field=exc.field)
        except WarningActionRefused as exc:
            return error_response(exc.status, str(exc), allowed=exc.allowed)
        warning = warnings_visible_to(request.user).get(pk=warning.pk)
        return Response(warning_body(warning, request.user, detail=True))


class CapXMLParser(BaseParser):
    """Takes the request body as raw bytes: CAP is parsed (safely) by command.cap, never by DRF."""

    media_type = "application/xml"

    # request.data stays bytes here on purpose: only command.cap, configured safely, parses CAP.
    def parse(  # type: ignore[override]
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> bytes:
        return bytes(stream.read()) if stream is not None else b""


class CapPlusXMLParser(CapXMLParser):
    media_type = "application/cap+xml"


class TextXMLParser(CapXMLParser):
    media_type = "text/xml"


class CapXMLRenderer(BaseRenderer):
    """Lets clients ask for CAP (the views return the XML bytes themselves)."""

    media_type = "application/cap+xml"
    format = "cap"
    charset = None

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return data if isinstance(data, bytes) else JSONRenderer().render(data)


class XMLRenderer(CapXMLRenderer):
    media_type = "application/xml"
    format = "xml"


class CapImportView(APIView):
    """Import one CAP 1.2 message: an Alert drafts a warning; an Update or Cancel changes its warning."""

    parser_classes = [CapXMLParser, CapPlusXMLParser, TextXMLParser]

    @extend_schema(
        request={"application/xml": OpenApiTypes.STR, "application/cap+xml": OpenApiTypes.STR},
        responses={
            201: OpenApiResponse(OpenApiTypes.OBJECT, description="a draft warning made from an Alert"),
            200: OpenApiResponse(
                OpenApiTypes.OBJECT, description="an Update or Cancel applied, or a duplicate"
            ),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="the problem is named in `field`"),
        },
        summary="Import CAP 1.2",
    )
    def post(self, request: Request) -> Response:
        if getattr(request.user, "role", None) not in CENTRE:
            return error_response(403, "only the command centre imports CAP messages")
        data = request.data
        if not data:
            return error_response(400, "body: the message is empty", field="body")
        if not isinstance(data, bytes):
            return error_response(
                400, "send the CAP XML as the body, Content-Type application/xml", field="body"
            )
        try:
            result = warning_import_cap(data=data, actor=request.user, source=Source.API)
        except cap.CapError as exc:
            return error_response(400, str(exc), field=exc.field)
        except ActionError as exc:
            return error_response(400, str(exc), field=exc.field)
        except WarningActionRefused as exc:
            return error_response(exc.status, str(exc), allowed=exc.allowed)
        warning = warnings_visible_to(request.user).get(pk=result.warning.pk)
        return Response(
            {
                "msg_type": result.msg_type,
                "created": result.created,
                "duplicate": result.duplicate,
                "warning": warning_body(warning, request.user, detail=True),
            },
            status=201 if result.created else 200,
        )


class CapExportView(APIView):
    """The warning's current version as CAP 1.2 XML (valid against the OASIS schema)."""

    renderer_classes = [JSONRenderer, CapXMLRenderer, XMLRenderer]

    @extend_schema(
        responses={
            (200, "application/cap+xml"): OpenApiTypes.STR,
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="the warning was never issued"),
        },
        summary="Export CAP 1.2",
    )
    def get(self, request: Request, pk: int) -> HttpResponse | Response:
        if getattr(request.user, "role", None) not in (*CENTRE, Role.ADMIN):
            return error_response(403, "only the command centre exports CAP messages")
        warning = get_object_or_404(warnings_visible_to(request.user), pk=pk)
        try:
            data = warning_cap_xml(warning)
        except WarningActionRefused as exc:
            return error_response(exc.status, str(exc))
        response = HttpResponse(data, content_type="application/cap+xml; charset=utf-8")
        identifier = cap.parse_identifier(warning_identifier(warning) or "")
        name = warning_identifier(warning) if identifier else f"warning-{warning.pk}"
        response["Content-Disposition"] = f'inline; filename="{name}.xml"'
        return response
