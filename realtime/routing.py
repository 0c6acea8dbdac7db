"""The ASGI protocol router: HTTP to Django, websockets to the stream consumer."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import URLPattern

# Filled by the stream consumer (issue 6); the router is here so that daphne serves both protocols.
websocket_urlpatterns: list[URLPattern] = []


def build_application(django_asgi_app: Any) -> ProtocolTypeRouter:
    """Return the ASGI application serving HTTP and websockets."""
    return ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
