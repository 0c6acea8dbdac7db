"""A bare Channels app for baselines: each socket joins group `bare.<n>` and relays what it gets.

Run by bench/realtime.py under daphne with the same Redis; it measures what plain `group_send` costs
(one client) and what channels' naive fan-out costs (one group_send per connection).
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class BareConsumer(AsyncJsonWebsocketConsumer):
    """Joins the group named in the URL and forwards group messages as they come."""

    async def connect(self) -> None:
        self.group = f"bare.{self.scope['url_route']['kwargs']['n']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def bare_message(self, message: dict[str, Any]) -> None:
        await self.send_json(message["body"])

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)


application = ProtocolTypeRouter({"websocket": URLRouter([path("bare/<int:n>/", BareConsumer.as_asgi())])})
