"""After-commit pushes from outside a server (worker, commands, scripts) reuse the process's Redis links."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from command.models import User
from realtime.groups import FANOUT_GROUP
from realtime.loop import pusher_loop, run_sync
from realtime.models import Event
from realtime.publish import publish
from tests.support.layers import fresh_layer

pytestmark = [pytest.mark.django_db(transaction=True)]


def _connections_received() -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


def _listener(received: list[dict[str, Any]], ready: threading.Event, stop: threading.Event) -> None:
    """A process of the fan-out group: collects what reaches it (its own loop, its own layer)."""

    async def listen() -> None:
        layer = fresh_layer()
        channel = await layer.new_channel()
        await layer.group_add(FANOUT_GROUP, channel)
        await asyncio.sleep(0.2)
        ready.set()
        while not stop.is_set():
            try:
                received.append(await asyncio.wait_for(layer.receive(channel), 0.2))
            except TimeoutError:
                continue
        await layer.flush()

    asyncio.run(listen())


def _warning(n: int) -> dict[str, Any]:
    return {"id": n, "level": "blue", "type": "暴雨", "headline": "h", "status": "issued"}


def test_twenty_pushes_outside_a_server_share_one_redis_connection_and_all_arrive(demo_city):
    users = list(User.objects.order_by("pk").values_list("pk", flat=True)[:3])
    received: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_listener, args=(received, ready, stop), daemon=True)
    thread.start()
    assert ready.wait(10)
    layer = get_channel_layer()
    # The process's pusher loop, its layer's connection and the after-commit publisher's connection exist
    # before counting (the first push makes the publisher's).
    run_sync(lambda: layer.group_send("warm-up", {"type": "noop"}))
    with transaction.atomic():
        publish(name="warning.issued", data=_warning(29_999_999), recipients=users)
    before = _connections_received()
    ids = []
    for i in range(20):
        with transaction.atomic():
            publish(
                name="order.created",
                data={
                    "id": 30_000_000 + i,
                    "incident_id": 1,
                    "incident_code": "L",
                    "department": "fire",
                    "role": "lead",
                    "status": "issued",
                    "due_at": None,
                },
                recipients=users,
            )
        ids.append(Event.objects.get(data__id=30_000_000 + i).pk)
    opened = _connections_received() - before
    try:
        for _ in range(50):
            if len([m for m in received if m.get("type") == "fanout"]) >= 21:
                break
            threading.Event().wait(0.1)
    finally:
        stop.set()
        thread.join(5)
    got = [
        m["message"]["data"]["id"]
        for m in received
        if m.get("type") == "fanout" and m["message"]["event"] == "order.created"
    ]
    assert got == [30_000_000 + i for i in range(20)], "every push arrived, once, in order"
    assert Event.objects.filter(pk__in=ids, published_at__isnull=True).count() == 0, "all marked published"
    # The publisher's connection is reused (a fresh event loop per push once opened one each time).
    assert opened <= 1, f"{opened} new Redis connections for 20 pushes"


def test_the_pusher_loop_is_one_per_process_and_runs_on_its_own_thread():
    loop = pusher_loop()
    assert pusher_loop() is loop
    names = run_sync(lambda: _thread_name())
    assert names == "realtime-pusher"


async def _thread_name() -> str:
    return threading.current_thread().name
