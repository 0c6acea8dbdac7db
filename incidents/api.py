"""REST views of the incidents app: categories, report intake, incidents and their actions."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import error_response
from gis.geocoding import InvalidCoordinate, OutsideTerritory
from incidents import rules
from incidents.models import Category, Incident, Photo, Report, Source, Status
from incidents.photos import PhotoRejected, check_photos
from incidents.privacy import can_see_personal, mask_phone
from incidents.selectors import incident_filter, incidents_visible_to
from incidents.services import (
    ActionError,
    IdempotencyConflict,
    IntakeError,
    IntakeResult,
    ReportInput,
    incident_act,
    report_submit,
)


class CategorySerializer(serializers.ModelSerializer[Category]):
    parent_code = serializers.SlugRelatedField[Category](
        source="parent", read_only=True, slug_field="code", allow_null=True
    )

    class Meta:
        model = Category
        fields = ["id", "code", "name", "family", "parent_code", "auto_dispatch"]


class CategoryListView(generics.ListAPIView[Category]):
    """Active categories with their codes, families and parents."""

    serializer_class = CategorySerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Category]:
        return Category.objects.filter(active=True).select_related("parent").order_by("position", "code")


class FiniteFloatField(serializers.FloatField):
    """A float that must be finite (DRF's FloatField lets NaN and infinity through)."""

    def to_internal_value(self, data: Any) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            raise serializers.ValidationError("must be a finite number")
        return value


class ReportInputSerializer(serializers.Serializer[Any]):
    category = serializers.CharField(max_length=32)
    description = serializers.CharField(max_length=4000)
    lon = FiniteFloatField(min_value=-180, max_value=180)
    lat = FiniteFloatField(min_value=-90, max_value=90)
    crs = serializers.ChoiceField(choices=["wgs84", "gcj02", "bd09", "cgcs2000"], default="wgs84")
    occurred_at = serializers.DateTimeField(required=False)
    address = serializers.CharField(max_length=256, required=False, allow_blank=True, default="")
    reporter_name = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    reporter_phone = serializers.RegexField(
        r"^[0-9+\- ]{0,20}$", max_length=20, required=False, allow_blank=True, default=""
    )


def territory_of(incident: Incident) -> dict[str, Any]:
    """The incident's units with their names, as the geocode result gave them."""
    geo = incident.geocode or {}
    return {layer: geo.get(layer) for layer in ("district", "street", "community", "grid", "block")}


def incident_summary(incident: Incident) -> dict[str, Any]:
    """The list representation of an incident."""
    return {
        "id": incident.pk,
        "code": incident.code,
        "status": incident.status,
        "category": {
            "code": incident.category.code,
            "name": incident.category.name,
            "family": incident.category.family,
        },
        "grade": incident.grade.code if incident.grade else None,
        "description": incident.description,
        "address": incident.address,
        "lon": incident.lon,
        "lat": incident.lat,
        "territory": territory_of(incident),
        "near_boundary": bool((incident.geocode or {}).get("near_boundary")),
        "occurred_at": incident.occurred_at.isoformat(),
        "reported_at": incident.reported_at.isoformat(),
        "stage": incident.stage or None,
        "due_at": incident.due_at.isoformat() if incident.due_at else None,
        "due_soon": incident.warned_at is not None,
        "overdue": incident.overdue_at is not None,
        "suspended": incident.suspended_at is not None,
        "rework_count": incident.rework_count,
        "merged_into": incident.merged_into_id,
    }


def _report_body(report: Report, photos: Iterable[Photo], clear: bool) -> dict[str, Any]:
    return {
        "id": report.pk,
        "channel": report.channel,
        "category": report.category.code,
        "description": report.description,
        "lon": report.lon,
        "lat": report.lat,
        "input": {"lon": report.input_lon, "lat": report.input_lat, "crs": report.input_crs},
        "address": report.address,
        "reporter": report.reporter.username,
        "reporter_name": report.reporter_name,
        "reporter_phone": report.reporter_phone if clear else mask_phone(report.reporter_phone),
        "occurred_at": report.occurred_at.isoformat(),
        "received_at": report.received_at.isoformat(),
        "photos": [
            {
                "id": p.pk,
                # Served to those who may see the incident, never from MEDIA_URL (privacy).
                "url": reverse("photo-report", args=[p.pk]),
                "content_type": p.content_type,
                "width": p.width,
                "height": p.height,
                "size": p.size,
            }
            for p in photos
        ],
    }


def incident_detail(incident: Incident, user: Any, *, intake: IntakeResult | None = None) -> dict[str, Any]:
    """The detail representation: summary, reports with photos, timeline and the caller's actions.

    `intake`, the result of an intake that has just created the incident, supplies what that intake
    wrote (its one report with its photos, its duplicate links, its timeline; a new incident has no
    pending request) instead of reading it back.
    """
    clear = can_see_personal(user)
    body = incident_summary(incident)
    fresh = intake is not None and intake.created and intake.incident.pk == incident.pk
    if intake is not None and fresh:
        body["possible_duplicates"] = sorted(intake.duplicates)
        body["reports"] = [_report_body(intake.report, intake.photos, clear)]
    else:
        body["possible_duplicates"] = sorted(incident.possible_duplicates.values_list("pk", flat=True))
        body["reports"] = [
            _report_body(r, r.photos.all(), clear)
            for r in incident.reports.select_related("category", "reporter").prefetch_related("photos")
        ]
    # A new incident's timeline is what its intake wrote (its data as stored: through JSON and back).
    timeline = intake.timeline if intake is not None and fresh else incident.timeline.select_related("actor")
    body["timeline"] = [
        {
            "at": t.at.isoformat(),
            "actor": t.actor.username if t.actor else None,
            "role": t.actor_role,
            "source": t.source,
            "action": t.action,
            "from_status": t.from_status or None,
            "to_status": t.to_status or None,
            "reason": t.reason,
            "data": json.loads(json.dumps(t.data)) if fresh else t.data,
        }
        for t in timeline
    ]
    body["pending_request"] = (
        None
        if fresh
        else next(
            (
                {
                    "id": q.pk,
                    "kind": q.kind,
                    "minutes": q.minutes,
                    "reason": q.reason,
                    "requested_by": q.requested_by.username,
                    "requested_at": q.requested_at.isoformat(),
                }
                for q in incident.requests.filter(decided_at__isnull=True).select_related("requested_by")
            ),
            None,
        )
    )
    body["allowed_actions"] = rules.allowed_actions(
        status=incident.status, role=getattr(user, "role", ""), suspended=incident.suspended_at is not None
    )
    return body


class ReportCreateView(APIView):
    """Take a report from a phone or a hotline operator (JSON, or multipart with `photos`)."""

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        request=ReportInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="required from grid workers; the same key never makes two incidents",
            )
        ],
        responses={
            201: OpenApiResponse(OpenApiTypes.OBJECT, description="a new incident"),
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the incident this key already made"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad input; the field is named"),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="the key was used for a different report"),
            422: OpenApiResponse(
                OpenApiTypes.OBJECT, description="outside the territory; nearest grid named"
            ),
        },
        summary="Submit a report",
    )
    def post(self, request: Request) -> Response:
        user: Any = request.user
        if getattr(user, "role", None) not in (rules.GRID_WORKER, rules.OPERATOR, rules.COMMANDER):
            return error_response(403, "only grid workers and the command centre submit reports")
        key = request.headers.get("Idempotency-Key", "").strip() or None
        if key is not None and len(key) > 128:
            return error_response(400, "Idempotency-Key: at most 128 characters", field="Idempotency-Key")
        if key is None and user.role == rules.GRID_WORKER:
            return error_response(
                400, "Idempotency-Key: this header is required from phones", field="Idempotency-Key"
            )
        serializer = ReportInputSerializer(data=request.data)
        if not serializer.is_valid():
            first = next(iter(serializer.errors))
            return error_response(
                400, f"{first}: {serializer.errors[first][0]}", field=first, fields=serializer.errors
            )
        files = request.FILES.getlist("photos") if hasattr(request, "FILES") else []
        if len(files) > settings.PHOTO_MAX_COUNT:
            return error_response(
                400, f"photos: at most {settings.PHOTO_MAX_COUNT} per report", field="photos"
            )
        uploads = [(f.name or "", f.read(settings.PHOTO_MAX_BYTES + 1)) for f in files]
        try:
            photos = check_photos(
                uploads,
                max_count=settings.PHOTO_MAX_COUNT,
                max_bytes=settings.PHOTO_MAX_BYTES,
                strip_location=settings.PHOTO_STRIP_LOCATION,
            )
        except PhotoRejected as exc:
            return error_response(400, f"photos: {exc}", field="photos", reason=exc.reason)
        data = ReportInput(
            channel="phone" if user.role == rules.GRID_WORKER else "hotline", **serializer.validated_data
        )
        try:
            result = report_submit(
                reporter=user,
                data=data,
                photos=photos,
                photo_names=[name for name, _ in uploads],
                idempotency_key=key,
                source=Source.API,
            )
        except IdempotencyConflict as exc:
            return error_response(409, str(exc), field="Idempotency-Key")
        except IntakeError as exc:
            return error_response(400, str(exc), field=exc.field)
        except InvalidCoordinate as exc:
            return error_response(400, str(exc), field=exc.field)
        except OutsideTerritory as exc:
            nearest = {"code": exc.nearest_code, "name": exc.nearest_name, "distance_m": exc.distance_m}
            return error_response(422, str(exc), nearest_grid=nearest if exc.nearest_code else None)
        body = incident_detail(result.incident, user, intake=result)
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class IncidentCursorPagination(CursorPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"
    ordering = ("-reported_at", "-id")


def _bool_param(value: str | None, field: str) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise serializers.ValidationError({field: "use true or false"})


class IncidentListView(generics.ListAPIView[Incident]):
    """Incidents visible to the caller, newest first, with filters and cursor pagination."""

    pagination_class = IncidentCursorPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, description="one or more statuses, comma-separated"),
            OpenApiParameter("category", OpenApiTypes.STR, description="a subcategory or family code"),
            OpenApiParameter("grade", OpenApiTypes.STR, enum=["I", "II", "III", "IV"]),
            OpenApiParameter(
                "area", OpenApiTypes.STR, description="a district/street/community/grid/block code"
            ),
            OpenApiParameter("reported_after", OpenApiTypes.DATETIME),
            OpenApiParameter("reported_before", OpenApiTypes.DATETIME),
            OpenApiParameter("overdue", OpenApiTypes.BOOL),
            OpenApiParameter("q", OpenApiTypes.STR, description="text in code, description or address"),
            OpenApiParameter(
                "reporter",
                OpenApiTypes.STR,
                enum=["me"],
                description=(
                    "`me`: only incidents holding a report of the caller (each once, also when it holds "
                    "several, e.g. a retried or merged duplicate); any other value is a 400"
                ),
            ),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Incident]:
        params = self.request.query_params
        statuses = [s for s in params.get("status", "").split(",") if s]
        unknown = [s for s in statuses if s not in Status.values]
        if unknown:
            raise serializers.ValidationError({"status": f"unknown status {unknown[0]!r}"})
        times = {}
        for name in ("reported_after", "reported_before"):
            if params.get(name):
                try:
                    times[name] = serializers.DateTimeField().to_internal_value(params[name])
                except serializers.ValidationError as exc:
                    raise serializers.ValidationError({name: exc.detail}) from None
        reporter = params.get("reporter")
        if reporter is not None and reporter != "me":
            raise serializers.ValidationError({"reporter": "use reporter=me (the only value)"})
        return incident_filter(
            incidents_visible_to(self.request.user),
            reporter=self.request.user if reporter == "me" else None,
            status=statuses or None,
            category=params.get("category") or None,
            grade=params.get("grade") or None,
            area=params.get("area") or None,
            reported_after=times.get("reported_after"),
            reported_before=times.get("reported_before"),
            overdue=_bool_param(params.get("overdue"), "overdue"),
            text=(params.get("q") or "").strip()[:100] or None,
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        rows = [incident_summary(i) for i in (page if page is not None else queryset)]
        return self.get_paginated_response(rows)


class IncidentDetailView(APIView):
    """One incident with its reports, photos, timeline and the actions open to the caller."""

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT)})
    def get(self, request: Request, pk: int) -> Response:
        incident = get_object_or_404(incidents_visible_to(request.user), pk=pk)
        return Response(incident_detail(incident, request.user))


class ActionInputSerializer(serializers.Serializer[Any]):
    action = serializers.CharField(max_length=32)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class IncidentActionView(APIView):
    """Carry out an action of the closed loop on an incident."""

    @extend_schema(
        request=ActionInputSerializer,
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the incident after the action"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad arguments; the field is named"),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="the role may not do this"),
            409: OpenApiResponse(
                OpenApiTypes.OBJECT, description="not allowed in this state; `allowed` lists what is"
            ),
        },
        summary="Act on an incident",
    )
    def post(self, request: Request, pk: int) -> Response:
        incident = get_object_or_404(incidents_visible_to(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return error_response(400, "the body must be a JSON object")
        serializer = ActionInputSerializer(data=request.data)
        if not serializer.is_valid():
            first = next(iter(serializer.errors))
            return error_response(400, f"{first}: {serializer.errors[first][0]}", field=first)
        payload = dict(request.data)
        action = payload.pop("action")
        try:
            updated = incident_act(
                incident_id=incident.pk, actor=request.user, action=action, source=Source.API, payload=payload
            )
        except rules.ActionRefused as exc:
            code = 400 if exc.unknown else 403 if exc.forbidden_role else 409
            return error_response(code, str(exc), allowed=exc.allowed, field="action")
        except ActionError as exc:
            return error_response(400, str(exc), field=exc.field)
        except InvalidCoordinate as exc:
            return error_response(400, str(exc), field=exc.field)
        updated.refresh_from_db()
        return Response(incident_detail(updated, request.user))
