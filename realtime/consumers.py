"""The /ws/stream/ consumer: authenticate, replay from the database, then live events in seq order.

Protocol (docs/realtime.md): browsers are authenticated by their session (with an Origin the
AllowedHosts check accepted); clients without an Origin header (phones) must send
{"type": "auth", "ticket": …} first. Then {"type": "hello", "resume_from": N} starts the stream: missed
events come from the database in order, then live events with no gap or duplicate at the seam. Every
socket has one sender task, so events leave in seq order; a live event that does not follow the last
one sent (a dropped or late push) makes the sender read the gap from the database instead. At most
WS_WINDOW events may be unacknowledged per socket; beyond that the socket waits for acks and then
catches up from the database, so a slow client costs bounded memory and still gets every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from realtime import feeds
from realtime.acks import batcher
from realtime.hooks import ACTIONS, ActionFailed
from realtime.hub import PROCESS_ID, hub

log = logging.getLogger(__name__)


def db(func: Any) -> Any:
    """Run database work in the thread pool, not on the one thread Channels serialises by default."""
    return database_sync_to_async(func, thread_sensitive=False)


CLOSE_UNAUTHENTICATED = 4401
CLOSE_REVOKED = 4403
CLOSE_TOO_MANY = 4429
CLOSE_TOO_BIG = 1009
CLOSE_UNSUPPORTED = 1003


class TokenBucket:
    """A per-socket message rate limit."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def take(self) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class StreamConsumer(AsyncJsonWebsocketConsumer):
    """One client's stream of its feed, plus its actions and acknowledgements."""

    user: Any
    user_id: int
    snapshot: tuple[bool, str, int | None] | None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `aclose_old_connections()` before every message.

        Channels 4.2+ hops to the one thread-sensitive sync thread for each message a consumer gets,
        every ack and every frame of every socket, to close stale database connections there, as a
        request's end does. This consumer never touches the database on that thread: its database work
        runs through `db()` (channels' `database_sync_to_async`), which closes stale connections itself
        around each call. During a warning to 5,000 sockets their 5,000 acks each paid that hop on the
        event loop that was sending the warning (py-spy: a third of the loop's time).
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.user, self.user_id, self.snapshot = None, 0, None
        self.last_sent = 0
        self.last_acked = 0
        self.behind = False
        self.hello_received = False
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.sender: asyncio.Task[None] | None = None
        self.closing = False
        self.revoking: asyncio.Future[None] | None = None
        self.violations = 0
        self.window = int(getattr(settings, "WS_WINDOW", 500))
        self.bucket = TokenBucket(
            float(getattr(settings, "WS_RATE_PER_S", 20)), float(getattr(settings, "WS_RATE_BURST", 40))
        )
        headers = dict(self.scope.get("headers", []))
        self.has_origin = b"origin" in headers
        await self.accept()
        user = self.scope.get("user")
        if self.has_origin and user is not None and user.is_authenticated and user.is_active:
            await self._authenticated(user)
        else:
            timeout = float(getattr(settings, "WS_AUTH_TIMEOUT_S", 10))
            self.auth_timer = asyncio.get_running_loop().call_later(
                timeout,
                lambda: asyncio.ensure_future(self._close(CLOSE_UNAUTHENTICATED, "authentication timeout")),
            )

    # -------------------------------------------------------------------------------- incoming

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            await self._close(CLOSE_UNSUPPORTED, "text frames only")
            return
        if len(text_data) > int(getattr(settings, "WS_MAX_FRAME", 64 * 1024)):
            await self._close(CLOSE_TOO_BIG, "frame too large")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            content = None
        # Acks cost nothing until they are flushed (coalesced), so only other messages are rate limited.
        if not (isinstance(content, dict) and content.get("type") == "ack"):
            wait = self.bucket.take()
            if wait:
                self.violations += 1
                # Rounded up to the next hundredth: a refused message never says "retry after 0".
                await self._error(429, "too many messages", retry_after=math.ceil(wait * 100) / 100)
                if self.violations > 50:
                    await self._close(CLOSE_TOO_MANY, "too many messages")
                return
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self._error(400, "a JSON object with a string `type` is expected")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content["type"]
        if self.user is None:
            if kind != "auth":
                await self._close(CLOSE_UNAUTHENTICATED, "authenticate first")
                return
            user = await db(feeds.ticket_redeem)(content.get("ticket"))
            if user is None:
                await self._close(CLOSE_UNAUTHENTICATED, "invalid or expired ticket")
                return
            await self._authenticated(user)
            return
        if kind == "hello":
            await self._hello(content)
        elif kind == "ack":
            await self._ack(content)
        elif kind == "action":
            await self._action(content)
        elif kind == "read":
            # Shorthand for the "warning.read" action; the request id may be left out (fire and forget).
            request_id = content.get("request_id")
            if request_id is None:
                request_id = f"read:{str(content.get('warning_id'))[:32]}"
            await self._action({**content, "action": "warning.read", "request_id": request_id})
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "auth":
            await self._error(409, "already authenticated")
        else:
            await self._error(400, f"unknown message type {kind!r}")

    async def _authenticated(self, user: Any) -> None:
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        self.user, self.user_id = user, int(user.pk)
        self.snapshot = await db(feeds.user_snapshot)(self.user_id)
        await hub.add(self)
        await db(feeds.connection_open)(channel_name=self.channel_name, user=user, process=PROCESS_ID)
        head = await db(feeds.feed_head)(self.user_id)
        department = await db(lambda: getattr(user.department, "code", None))()
        await self.send_json(
            {
                "type": "welcome",
                "user": {
                    "id": user.pk,
                    "username": user.username,
                    "role": user.role,
                    "department": department,
                },
                "head": head.last_seq,
                "acked": head.acked_seq,
            }
        )

    async def _hello(self, content: dict[str, Any]) -> None:
        resume_from = content.get("resume_from", 0)
        if isinstance(resume_from, bool) or not isinstance(resume_from, int) or resume_from < 0:
            await self._error(400, "resume_from: a whole number ≥ 0 is expected")
            return
        if self.hello_received:
            await self._error(409, "hello was already sent on this connection")
            return
        self.hello_received = True
        self.queue.put_nowait(("hello", resume_from))
        self.sender = asyncio.ensure_future(self._send_loop())

    async def _ack(self, content: dict[str, Any]) -> None:
        seq = content.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            await self._error(400, "seq: a whole number ≥ 0 is expected")
            return
        # Acks are cumulative and cannot run ahead of what this socket sent.
        seq = min(seq, self.last_sent)
        if seq <= self.last_acked:
            return
        self.last_acked = seq
        # Acks are coalesced: clients may ack every event; the process writes all its sockets' acks
        # in one statement per flush (realtime/acks.py).
        batcher.add(self.user_id, seq)
        if self.behind:
            self.request_catch_up()

    async def _action(self, content: dict[str, Any]) -> None:
        request_id = content.get("request_id")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
            await self._error(400, "request_id: a string of 1 to 64 characters is required")
            return
        name = content.get("action")
        handler = ACTIONS.get(name) if isinstance(name, str) else None
        if handler is None:
            await self.send_json(
                {
                    "type": "result",
                    "request_id": request_id,
                    "ok": False,
                    "status": 400,
                    "error": f"unknown action {name!r}",
                    "actions": sorted(ACTIONS),
                }
            )
            return
        try:
            result = await db(handler)(self.user, content)
        except ActionFailed as exc:
            await self.send_json(
                {
                    "type": "result",
                    "request_id": request_id,
                    "ok": False,
                    "status": exc.status,
                    "error": exc.detail,
                    **exc.extra,
                }
            )
            return
        except Exception:
            log.exception("websocket action %s failed", name)
            await self.send_json(
                {
                    "type": "result",
                    "request_id": request_id,
                    "ok": False,
                    "status": 500,
                    "error": "internal error",
                }
            )
            return
        await self.send_json({"type": "result", "request_id": request_id, "ok": True, **result})

    # -------------------------------------------------------------------------------- outgoing

    def offer(self, seq: int, body: dict[str, Any]) -> None:
        """A live event from the hub (before hello it is ignored: the replay reads it from the database)."""
        if self.hello_received and not self.closing:
            self.queue.put_nowait(("live", seq, body))

    def request_catch_up(self) -> None:
        """Ask the sender to read whatever is missing from the database."""
        if self.hello_received and not self.closing:
            self.queue.put_nowait(("catch_up",))

    def revoke(self, reason: str) -> None:
        """Close this socket because the user's rights changed."""
        if not self.closing:
            self.revoking = asyncio.ensure_future(self._close(CLOSE_REVOKED, reason))

    async def _send_loop(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                if item[0] == "hello":
                    await self._replay(int(item[1]))
                elif item[0] == "catch_up":
                    await self._catch_up()
                else:
                    await self._deliver_live(int(item[1]), item[2])
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("stream sender failed; closing so the client resumes")
            await self._close(1011, "server error")

    async def _replay(self, resume_from: int) -> None:
        head = await db(feeds.feed_head)(self.user_id)
        start = resume_from if resume_from > 0 else head.acked_seq
        too_old = (head.oldest_seq is not None and start + 1 < head.oldest_seq) or (
            head.oldest_seq is None and start < head.last_seq
        )
        if resume_from > head.last_seq or too_old:
            reason = (
                "cursor ahead of the feed" if resume_from > head.last_seq else "cursor older than retention"
            )
            await self.send_json({"type": "resync", "head": head.last_seq, "reason": reason})
            self.last_sent = self.last_acked = head.last_seq
            return
        self.last_sent = self.last_acked = start
        await self._catch_up()

    async def _catch_up(self) -> None:
        while True:
            room = self.window - (self.last_sent - self.last_acked)
            if room <= 0:
                self.behind = True
                return
            batch = min(room, 200)
            messages = await db(feeds.feed_range)(self.user_id, self.last_sent, batch)
            for message in messages:
                if message["seq"] != self.last_sent + 1:
                    break
                await self.send_json(message)
                self.last_sent = message["seq"]
            if len(messages) < batch:
                self.behind = False
                return

    async def _deliver_live(self, seq: int, body: dict[str, Any]) -> None:
        if seq <= self.last_sent:
            return
        if self.behind or seq != self.last_sent + 1:
            await self._catch_up()
            return
        if self.last_sent - self.last_acked >= self.window:
            self.behind = True
            return
        await self.send_json({**body, "seq": seq})
        self.last_sent = seq

    async def _error(self, status: int, detail: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "status": status, "detail": detail, **extra})

    async def _close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):  # the socket may already be gone
            await self.send_json({"type": "closing", "code": code, "reason": reason})
        await self.close(code)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        if self.sender is not None:
            self.sender.cancel()
        if self.user is not None and batcher.waiting(self.user_id):
            try:
                await batcher.flush()
            except Exception:
                log.exception("could not write the socket's last acknowledgement")
        if self.user is not None:
            hub.remove(self)
            try:
                await db(feeds.connection_close)(channel_name=self.channel_name, user=self.user)
            except Exception:
                log.exception("could not record the socket's end")
