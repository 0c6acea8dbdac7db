"""/healthz: the state of the database and the channel layer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_S = 3.0
RESEND_S = 0.5


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


class _Probe:
    """This process's one channel for the layer's round trip, reused by every check.

    A channel per check was never given back: channels_redis's pub/sub layer unsubscribes a channel
    only when a receive on it is cancelled, so each /healthz left a Redis subscription and a queue
    behind (200 checks, 200 subscriptions). Checks take turns on the one channel, each with its own
    token; a late answer to an earlier check is skipped, and the probe is sent again every
    RESEND_S while unanswered (a message published before Redis has taken the subscription is lost).
    """

    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.layer, self.loop = layer, loop
        self.channel: str | None = None
        self.lock = asyncio.Lock()

    async def round_trip(self) -> None:
        async with self.lock:
            deadline = self.loop.time() + CHECK_TIMEOUT_S

            def left() -> float:
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"no answer through the channel layer within {CHECK_TIMEOUT_S:.0f} s")
                return remaining

            if self.channel is None:
                self.channel = await asyncio.wait_for(self.layer.new_channel(prefix="healthz"), left())
            token = uuid.uuid4().hex
            while True:
                await asyncio.wait_for(
                    self.layer.send(self.channel, {"type": "healthz", "token": token}), left()
                )
                try:
                    while True:
                        message = await asyncio.wait_for(
                            self.layer.receive(self.channel), min(RESEND_S, left())
                        )
                        if message.get("token") == token:
                            return
                except TimeoutError:
                    left()  # past the deadline: fail; else send the probe again


_probe: _Probe | None = None


async def _check_channel_layer() -> dict[str, object]:
    global _probe
    layer = get_channel_layer()
    backend = f"{type(layer).__module__}.{type(layer).__name__}"
    try:
        assert layer is not None
        loop = asyncio.get_running_loop()
        if _probe is None or _probe.layer is not layer or _probe.loop is not loop:
            _probe = _Probe(layer, loop)
        # A round trip through the layer proves both send and receive work.
        await _probe.round_trip()
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
