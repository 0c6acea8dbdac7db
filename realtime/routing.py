"""The ASGI protocol router: HTTP to Django, websockets to the stream consumer."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from realtime.consumers import StreamConsumer

websocket_urlpatterns = [path("ws/stream/", StreamConsumer.as_asgi())]


class OriginOrTicketValidator(OriginValidator):
    """Browsers (which always send Origin) must come from an allowed host; clients without Origin pass.

    A client without an Origin header cannot be a cross-site page, so it is let through but gets no
    session authentication: it must present a one-time ticket (see StreamConsumer).
    """

    def __init__(self, application: Any) -> None:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        if b"origin" not in headers:
            return await self.application(scope, receive, send)
        return await super().__call__(scope, receive, send)


def build_application(django_asgi_app: Any) -> ProtocolTypeRouter:
    """Return the ASGI application serving HTTP and websockets."""
    return ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": OriginOrTicketValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
