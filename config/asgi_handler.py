"""Django's ASGI handler, reshaped so a request costs one thread hand-off instead of about twenty.

Django's own `ASGIHandler` loads the middleware chain in async mode. Our middleware and views are
synchronous, so each hook of each middleware that supports both modes (all of `MiddlewareMixin`'s)
hopped from the event loop to a worker thread and back, each sync-only middleware hopped the other
way, the `request_started` receivers and `response.close()` hopped once more, and every request
started and joined a thread of its own (asgiref's `ThreadSensitiveContext`). On daphne that came to
about 10 ms a request, several times what Django itself spends (docs/performance.md, "The HTTP
request path").

Here the chain is loaded in sync mode, as under WSGI, and everything Django does for a request — the
`request_started` signal, building the request, the middleware and the view, and, for a response
that is not streamed, `close()` with its `request_finished` signal — runs in one call. The call runs
on a thread lent to the request for its whole life (`ThreadSensitiveContext(executor=…)`) from a
fixed set of HTTP_THREADS threads that are reused, not started per request. Django's per-thread
database connection is therefore taken from the connection pool and given back on the same thread,
and a streamed response (exports) pulls its chunks and is closed on that same thread too, where its
cursor lives. Only reading the body and sending the response happen on the event loop; a client that
disconnects during a streamed response stops it. Async views (the health check) still work: Django
runs them with `async_to_sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix


class SyncChainASGIHandler(ASGIHandler):
    """`ASGIHandler` whose whole request runs synchronously in one call on a lent, reused thread."""

    def __init__(self, threads: int | None = None) -> None:
        # Not ASGIHandler.__init__: it would load the chain in async mode.
        self.load_middleware(is_async=False)
        self.threads = threads or int(os.environ.get("HTTP_THREADS", "0") or 0) or _default_threads()
        self._idle: list[ThreadPoolExecutor] = []
        self._started = 0
        self._freed: asyncio.Condition | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one HTTP request."""
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def _borrow(self) -> ThreadPoolExecutor:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            while not self._idle and self._started >= self.threads:
                await self._freed.wait()
            if self._idle:
                return self._idle.pop()
            self._started += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"http-{self._started}")

    async def _give_back(self, executor: ThreadPoolExecutor) -> None:
        assert self._freed is not None
        async with self._freed:
            self._idle.append(executor)
            self._freed.notify()

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Read the body, compute the response in one call on a lent thread, send it, close it."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        executor = await self._borrow()
        try:
            async with ThreadSensitiveContext(executor=executor):
                response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
                if response.streaming:
                    try:
                        await self._send_streamed(response, receive, send)
                    finally:
                        await sync_to_async(response.close, thread_sensitive=True)()
                else:
                    await self.send_response(response, send)
        finally:
            await self._give_back(executor)
            body_file.close()

    async def _send_streamed(self, response: HttpResponseBase, receive: Any, send: Any) -> None:
        sender = asyncio.create_task(self.send_response(response, send))
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, sender):  # the client went away: stop pulling chunks
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                await task

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        assert response is not None
        if not response.streaming:
            response.close()  # the content is complete: request_finished returns the connection now
        return response


def _default_threads() -> int:
    from django.conf import settings

    return max(8, int(getattr(settings, "DB_POOL_MAX", 20) or 20))
