"""REST views of the command app: token login and the department list."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from command.models import Department
from gis.models import TerritoryUnit


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
