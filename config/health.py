"""/healthz: the state of the database and the channel layer."""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_S = 3.0


def _check_database() -> dict[str, object]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        return {"ok": False, "vendor": connection.vendor, "error": str(exc).splitlines()[0][:200]}
    finally:
        connection.close()


async def _check_channel_layer() -> dict[str, object]:
    layer = get_channel_layer()
    backend = f"{type(layer).__module__}.{type(layer).__name__}"
    try:
        assert layer is not None
        # A round trip through the layer proves both send and receive work.
        channel = await layer.new_channel(prefix="healthz")
        token = uuid.uuid4().hex
        await asyncio.wait_for(layer.send(channel, {"type": "healthz", "token": token}), CHECK_TIMEOUT_S)
        message = await asyncio.wait_for(layer.receive(channel), CHECK_TIMEOUT_S)
        if message.get("token") != token:
            return {"ok": False, "backend": backend, "error": "round trip returned another message"}
        return {"ok": True, "backend": backend}
    except Exception as exc:
        return {"ok": False, "backend": backend, "error": (str(exc) or type(exc).__name__)[:200]}


async def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database and the channel layer both work, else 503 naming what failed."""
    database = await sync_to_async(_check_database, thread_sensitive=False)()
    channel_layer = await _check_channel_layer()
    failing = [
        name for name, state in (("database", database), ("channel_layer", channel_layer)) if not state["ok"]
    ]
    body = {
        "status": "ok" if not failing else "degraded",
        "failing": failing,
        "database": database,
        "channel_layer": channel_layer,
    }
    return JsonResponse(body, status=200 if not failing else 503)
