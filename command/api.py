"""REST views of the command app: tokens, departments, orders, dispatch proposals, the overdue board."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import HttpResponseBase, QueryDict
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from command import rules
from command.constants import Role
from command.models import Department, DispatchOrder, OrderPhoto, OrderProgress, OrderStatus, Unit
from command.selectors import order_photos_visible_to, orders_visible_to, overdue_board, units_visible_to
from command.services import PHOTO_ACTIONS, linkage_proposal, order_act, rule_snapshot, unit_set_position
from config.api import error_response
from gis.models import TerritoryUnit
from incidents.models import Source
from incidents.photo_api import PHOTO_RESPONSES, PhotoView, check_uploaded_photos, photo_file_response
from incidents.photos import PhotoRejected
from incidents.selectors import incidents_visible_to
from incidents.services import ActionError


class TokenView(APIView):
    """Exchange a username and password for a bearer token."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    serializer_class = AuthTokenSerializer

    @extend_schema(
        request=AuthTokenSerializer,
        responses={200: inline_serializer("TokenResponse", {"token": serializers.CharField()})},
        summary="Obtain a bearer token",
    )
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})


class DepartmentSerializer(serializers.ModelSerializer[Department]):
    jurisdiction = serializers.SlugRelatedField[TerritoryUnit](many=True, read_only=True, slug_field="code")

    class Meta:
        model = Department
        fields = ["id", "code", "name", "kind", "jurisdiction"]


class DepartmentListView(generics.ListAPIView[Department]):
    """Departments with their codes, kinds and jurisdiction (territory unit codes)."""

    serializer_class = DepartmentSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Department]:
        return Department.objects.filter(active=True).prefetch_related("jurisdiction").order_by("code")


def order_photo_body(photo: OrderPhoto) -> dict[str, Any]:
    """A progress or completion photo; `url` serves it to those who may see the order."""
    return {
        "id": photo.pk,
        "content_type": photo.content_type,
        "size": photo.size,
        "sha256": photo.sha256,
        "url": reverse("photo-order", args=[photo.pk]),
    }


# Progress notes with their authors and photos, for order_body (one query each, not one per order).
PROGRESS_PREFETCH = Prefetch(
    "progress",
    queryset=OrderProgress.objects.select_related("by").prefetch_related(
        Prefetch("photos", queryset=OrderPhoto.objects.order_by("id"))
    ),
)


def order_body(order: DispatchOrder, user: Any, *, detail: bool = False) -> dict[str, Any]:
    """The representation of an order for its reader."""
    incident = order.incident
    body: dict[str, Any] = {
        "id": order.pk,
        "incident": {
            "id": incident.pk,
            "code": incident.code,
            "status": incident.status,
            "category": {"code": incident.category.code, "name": incident.category.name},
            "grade": incident.grade.code if incident.grade else None,
            "description": incident.description,
            "address": incident.address,
            "lon": incident.lon,
            "lat": incident.lat,
            "grid_code": incident.grid_code,
        },
        "department": {"code": order.department.code, "name": order.department.name},
        "role": order.role,
        "status": order.status,
        "issued_at": order.issued_at.isoformat(),
        "delivered_at": order.delivered_at.isoformat() if order.delivered_at else None,
        "signed_at": order.signed_at.isoformat() if order.signed_at else None,
        "arrived_at": order.arrived_at.isoformat() if order.arrived_at else None,
        "completed_at": order.completed_at.isoformat() if order.completed_at else None,
        "stage": order.stage or None,
        "due_at": order.due_at.isoformat() if order.due_at else None,
        "due_soon": order.warned_at is not None,
        "overdue": order.overdue_at is not None,
        "escalations": order.escalation_count,
        "reject": {
            "reason": order.reject_reason,
            "category": order.reject_category,
            "count": order.reject_count,
        }
        if order.reject_count
        else None,
        "ruling": order.ruling or None,
        "replaced_by": order.replaced_by_id,
        "rule": order.rule_snapshot,
        "override_reason": order.override_reason or None,
        "allowed_actions": rules.order_allowed_actions(
            status=order.status,
            role=getattr(user, "role", ""),
            upheld=bool(order.ruling),
            order_role=order.role,
        )
        if getattr(user, "role", "") != Role.DEPARTMENT or user.department_id == order.department_id
        else [],
    }
    progress = list(order.progress.all())
    # Every photo of the order (progress and completion), oldest first, with the note it came with.
    body["photos"] = [{**order_photo_body(ph), "kind": p.kind} for p in progress for ph in p.photos.all()]
    if detail:
        body["progress"] = [
            {
                "at": p.at.isoformat(),
                "by": p.by.username,
                "kind": p.kind,
                "note": p.note,
                "photos": [order_photo_body(ph) for ph in p.photos.all()],
            }
            for p in progress
        ]
        body["notices"] = [
            {
                "at": n.at.isoformat(),
                "level": n.level,
                "message": n.message,
                "by": n.by.username if n.by else None,
            }
            for n in order.notices.select_related("by")
        ]
    return body


class OrderPagination(CursorPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "page_size"
    ordering = ("-issued_at", "-id")


class OrderListView(generics.ListAPIView[DispatchOrder]):
    """Dispatch orders visible to the caller (a department sees its own), newest first."""

    pagination_class = OrderPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, description="one or more statuses, comma-separated"),
            OpenApiParameter("open", OpenApiTypes.BOOL, description="only orders still to be acted on"),
            OpenApiParameter("incident", OpenApiTypes.INT),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[DispatchOrder]:
        params = self.request.query_params
        queryset = orders_visible_to(self.request.user).prefetch_related(PROGRESS_PREFETCH)
        statuses = [s for s in params.get("status", "").split(",") if s]
        if any(s not in OrderStatus.values for s in statuses):
            raise serializers.ValidationError({"status": f"use any of {', '.join(OrderStatus.values)}"})
        if statuses:
            queryset = queryset.filter(status__in=statuses)
        if params.get("open") in ("1", "true"):
            queryset = queryset.exclude(status__in=["completed", "reassigned", "released"])
        if params.get("incident"):
            if not params["incident"].isdigit():
                raise serializers.ValidationError({"incident": "an incident id is expected"})
            queryset = queryset.filter(incident_id=int(params["incident"]))
        return queryset

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None
        return self.get_paginated_response([order_body(o, request.user) for o in page])


class OrderDetailView(APIView):
    """One dispatch order with its progress notes and supervision notices."""

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT)})
    def get(self, request: Request, pk: int) -> Response:
        order = get_object_or_404(orders_visible_to(request.user).prefetch_related(PROGRESS_PREFETCH), pk=pk)
        return Response(order_body(order, request.user, detail=True))


class OrderActionInput(serializers.Serializer[Any]):
    action = serializers.CharField(max_length=32)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class OrderActionFields(OrderActionInput):
    """The fields of every action, for the schema (each action reads those it needs)."""

    note = serializers.CharField(required=False, allow_blank=True, help_text="progress, complete")
    category = serializers.CharField(required=False, help_text="reject: the reason category")
    lon = serializers.FloatField(required=False, help_text="arrive")
    lat = serializers.FloatField(required=False, help_text="arrive")
    ruling = serializers.CharField(required=False, help_text="arbitrate: uphold or reassign")
    department = serializers.CharField(required=False, help_text="arbitrate (reassign): a department code")


@extend_schema_field(OpenApiTypes.BINARY)
class PhotoFileField(serializers.FileField):
    """A photo file part of a form (for the schema: binary, not a URL)."""


class OrderActionMultipart(OrderActionFields):
    """The same fields as a form, with photos (progress and complete only)."""

    photos = serializers.ListField(
        child=PhotoFileField(),
        required=False,
        help_text="JPEG, PNG or WebP, checked by content; location metadata is removed",
    )


class OrderActionView(APIView):
    """Act on a dispatch order (sign, reject, depart, arrive, progress, complete, arbitrate, …).

    JSON, or multipart/form-data with the same fields and `photos` (files) for progress and complete.
    """

    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        request={
            "application/json": OrderActionFields,
            "multipart/form-data": OrderActionMultipart,
        },
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the order after the action"),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="bad arguments; the field is named"),
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="not the caller's to do"),
            409: OpenApiResponse(
                OpenApiTypes.OBJECT, description="not allowed in this state; `allowed` lists what is"
            ),
        },
        summary="Act on an order",
    )
    def post(self, request: Request, pk: int) -> Response:
        order = get_object_or_404(orders_visible_to(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return error_response(400, "the body must be a JSON object")
        checked = OrderActionInput(data=request.data)
        if not checked.is_valid():
            first = next(iter(checked.errors))
            return error_response(400, f"{first}: {checked.errors[first][0]}", field=first)
        files = request.FILES
        payload: dict[str, Any]
        if isinstance(request.data, QueryDict):
            # A form: one value per field, the files apart.
            payload = {key: request.data.get(key) for key in request.data if key not in files}
        else:
            payload = dict(request.data)
            if "photos" in payload:
                return error_response(
                    400, "photos: send photos as files in a multipart/form-data body", field="photos"
                )
        action = payload.pop("action")
        unexpected = sorted(key for key in files if key != "photos")
        if unexpected:
            return error_response(400, f"{unexpected[0]}: files go in the field photos", field=unexpected[0])
        uploads = files.getlist("photos")
        if uploads and action not in PHOTO_ACTIONS:
            return error_response(
                400, f"photos: photos go with {' or '.join(PHOTO_ACTIONS)}, not with {action}", field="photos"
            )
        try:
            photos = check_uploaded_photos(uploads)
        except PhotoRejected as exc:
            return error_response(
                400, f"photos: {exc}", field="photos", reason=exc.reason, file=exc.filename or None
            )
        try:
            updated = order_act(
                order_id=order.pk,
                actor=request.user,
                action=action,
                source=Source.API,
                payload=payload,
                photos=photos,
            )
        except rules.OrderActionRefused as exc:
            code = 400 if exc.unknown else 403 if exc.forbidden_role else 409
            return error_response(code, str(exc), allowed=exc.allowed, field="action")
        except ActionError as exc:
            return error_response(400, str(exc), field=exc.field)
        fresh = orders_visible_to(request.user).prefetch_related(PROGRESS_PREFETCH).get(pk=updated.pk)
        return Response(order_body(fresh, request.user, detail=True))


class OrderPhotoView(PhotoView):
    """A progress or completion photo of an order, for those who may see the order."""

    @extend_schema(responses=PHOTO_RESPONSES, summary="Download an order's photo")
    def get(self, request: Request, pk: int) -> HttpResponseBase:
        photo = get_object_or_404(order_photos_visible_to(request.user), pk=pk)
        return photo_file_response(
            photo.file, content_type=photo.content_type, stem=f"order-photo-{photo.pk}"
        )


class DispatchProposalView(APIView):
    """What the linkage rules propose for an incident (for the dispatch dialog)."""

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT)})
    def get(self, request: Request, pk: int) -> Response:
        if getattr(request.user, "role", None) not in (Role.OPERATOR, Role.COMMANDER):
            return error_response(403, "only the command centre dispatches")
        incident = get_object_or_404(incidents_visible_to(request.user), pk=pk)
        proposal = linkage_proposal(incident)

        def dept(d: Department | None) -> dict[str, str] | None:
            return {"code": d.code, "name": d.name, "kind": d.kind} if d else None

        return Response(
            {
                "rule": rule_snapshot(proposal["rule"]),
                "lead": dept(proposal["lead"]),
                "assist": [dept(d) for d in proposal["assists"]],
                "unresolved_kinds": proposal["unresolved_kinds"],
            }
        )


class OverdueBoardView(APIView):
    """What is late, by how much, and who holds it."""

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT)})
    def get(self, request: Request) -> Response:
        return Response({"orders": overdue_board(request.user)})


def unit_body(unit: Unit) -> dict[str, Any]:
    """The representation of a unit."""
    return {
        "id": unit.pk,
        "code": unit.code,
        "name": unit.name,
        "kind": unit.kind,
        "department": unit.department.code,
        "status": unit.status,
        "lon": unit.lon,
        "lat": unit.lat,
        "position_at": unit.position_at.isoformat() if unit.position_at else None,
    }


class UnitListView(APIView):
    """Units (vehicles, teams) visible to the caller."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "Unit",
                {
                    "id": serializers.IntegerField(),
                    "code": serializers.CharField(),
                    "name": serializers.CharField(),
                    "kind": serializers.CharField(),
                    "department": serializers.CharField(),
                    "status": serializers.CharField(),
                    "lon": serializers.FloatField(allow_null=True),
                    "lat": serializers.FloatField(allow_null=True),
                    "position_at": serializers.DateTimeField(allow_null=True),
                },
                many=True,
            )
        }
    )
    def get(self, request: Request) -> Response:
        return Response([unit_body(u) for u in units_visible_to(request.user)])


class UnitPositionView(APIView):
    """A department reports a unit's position (and status)."""

    @extend_schema(
        request=inline_serializer(
            "UnitPosition",
            {
                "lon": serializers.FloatField(),
                "lat": serializers.FloatField(),
                "status": serializers.CharField(required=False),
            },
        ),
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
    )
    def post(self, request: Request, pk: int) -> Response:
        unit = get_object_or_404(units_visible_to(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return error_response(400, "the body must be a JSON object")
        try:
            unit = unit_set_position(
                unit=unit,
                actor=request.user,
                lon=request.data.get("lon"),
                lat=request.data.get("lat"),
                status=request.data.get("status"),
            )
        except ActionError as exc:
            return error_response(400, str(exc), field=exc.field)
        return Response(unit_body(unit))
