"""The per-process hub: one channel-layer subscription per process, local fan-out to its sockets.

Channels' group fan-out costs one channel-layer message per member; here each event crosses the channel layer
once per process and the hub hands it to the local sockets of its recipients. The hub also beats the
presence heartbeat for its sockets and closes the sockets of users who were deactivated or whose role
or department changed (checked every AUTH_RECHECK_S seconds in one query for the whole process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import feeds
from realtime.groups import FANOUT_GROUP

if TYPE_CHECKING:
    from realtime.consumers import StreamConsumer

log = logging.getLogger(__name__)

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Hub:
    """Local registry of sockets per user, fed by one subscription to the fan-out group."""

    def __init__(self) -> None:
        self.by_user: dict[int, set[StreamConsumer]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        self.heads_seen: dict[int, int] = {}

    def consumers(self) -> list[StreamConsumer]:
        """Every local socket."""
        return [c for group in self.by_user.values() for c in group]

    async def add(self, consumer: StreamConsumer) -> None:
        """Register a socket (starting the hub's tasks on first use in this event loop)."""
        self._ensure_running()
        self.by_user.setdefault(consumer.user_id, set()).add(consumer)
        try:
            await asyncio.wait_for(self.subscribed.wait(), 5)
        except TimeoutError:
            log.warning(
                "hub not subscribed to the channel layer yet; the socket will catch up from the database"
            )

    def remove(self, consumer: StreamConsumer) -> None:
        """Forget a socket."""
        group = self.by_user.get(consumer.user_id)
        if group is not None:
            group.discard(consumer)
            if not group:
                del self.by_user[consumer.user_id]

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is loop and all(not t.done() for t in self.tasks):
            return
        for task in self.tasks:
            task.cancel()
        # A new event loop (tests) or a crashed task: start afresh; sockets of a dead loop are gone.
        if self.loop is not loop:
            self.by_user = {}
        self.loop = loop
        self.subscribed = asyncio.Event()
        self.tasks = [loop.create_task(self._listen()), loop.create_task(self._housekeeping())]

    async def _listen(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        first = True
        while True:
            try:
                channel = await layer.new_channel(prefix="hub")
                await layer.group_add(FANOUT_GROUP, channel)
                self.subscribed.set()
                if not first:
                    # Anything pushed while we were cut off is in the database: every socket catches up.
                    for consumer in self.consumers():
                        consumer.request_catch_up()
                first = False
                while True:
                    message = await layer.receive(channel)
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("hub lost the channel layer (%s); retrying in 1 s", exc)
                await asyncio.sleep(1)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "fanout":
            body = message["message"]
            for user_id, seq in message["seqs"]:
                for consumer in list(self.by_user.get(int(user_id), ())):
                    consumer.offer(int(seq), body)
        elif kind == "control" and message.get("close_users"):
            for user_id in message["close_users"]:
                for consumer in list(self.by_user.get(int(user_id), ())):
                    consumer.revoke("account changed")

    async def _housekeeping(self) -> None:
        recheck = float(getattr(settings, "AUTH_RECHECK_S", 2.0))
        beat = float(getattr(settings, "PRESENCE_HEARTBEAT_S", 20.0))
        since_beat = 0.0
        while True:
            await asyncio.sleep(recheck)
            since_beat += recheck
            try:
                await self._recheck_users()
                await self._catch_up_stragglers()
                if since_beat >= beat:
                    since_beat = 0.0
                    names = [c.channel_name for c in self.consumers()]
                    await database_sync_to_async(feeds.connections_heartbeat)(names)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("hub housekeeping failed: %s", exc)

    async def _catch_up_stragglers(self) -> None:
        """Sockets still short of a feed head seen one round ago read the rest from the database.

        The safety net for a push the channel layer lost with nothing after it to reveal the gap: Redis
        pub/sub drops what is published while a subscriber reconnects, and channels_redis reconnects
        its subscriptions without telling the hub. One query per round for all of this process's users.
        """
        user_ids = list(self.by_user)
        if not user_ids:
            self.heads_seen = {}
            return
        for user_id, head in self.heads_seen.items():
            for consumer in list(self.by_user.get(user_id, ())):
                if consumer.last_sent < head:
                    consumer.request_catch_up()
        self.heads_seen = await database_sync_to_async(feeds.heads)(user_ids)

    async def _recheck_users(self) -> None:
        user_ids = list(self.by_user)
        if not user_ids:
            return
        current = await database_sync_to_async(feeds.snapshots)(user_ids)
        for user_id in user_ids:
            now = current.get(user_id)
            for consumer in list(self.by_user.get(user_id, ())):
                if now is None or not now[0] or now != consumer.snapshot:
                    consumer.revoke("account changed")


hub = Hub()
