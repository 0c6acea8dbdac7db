"""REST views of the realtime app: websocket tickets for phones, and presence for the command centre."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.feeds import TICKET_TTL_S, online_summary, ticket_issue

# command.constants.Role values allowed to watch presence (realtime does not import command).
PRESENCE_ROLES = ("operator", "commander", "admin")


class WsTicketView(APIView):
    """A one-time ticket (valid 60 s) to open /ws/stream/ from a phone: send it as the first message."""

    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "WsTicket", {"ticket": serializers.CharField(), "expires_in": serializers.IntegerField()}
            )
        },
        summary="Get a websocket ticket",
    )
    def post(self, request: Request) -> Response:
        return Response({"ticket": ticket_issue(request.user), "expires_in": TICKET_TTL_S}, status=201)


class PresenceView(APIView):
    """Who is online now, per user and per department."""

    @extend_schema(responses={200: OpenApiResponse(OpenApiTypes.OBJECT)})
    def get(self, request: Request) -> Response:
        if getattr(request.user, "role", None) not in PRESENCE_ROLES:
            return Response(
                {"error": {"status": 403, "detail": "presence is for the command centre"}}, status=403
            )
        return Response(online_summary())
