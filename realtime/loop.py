"""Run the channel layer's coroutines from synchronous code without a new event loop each time.

Inside daphne a request's thread hands its coroutine to the server's own event loop (asgiref's
`async_to_sync` knows that loop), and the channel layer's Redis connections live there. Anywhere else —
the background worker, a management command, a service called from a script or a test — `async_to_sync`
starts a thread and a fresh event loop for every call, and the pub/sub channel layer opens a new Redis
connection for each loop: several milliseconds and a connection per after-commit push. Those callers get
one long-lived loop per process instead, on a daemon thread, where the layer keeps its connections.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import SyncToAsync, async_to_sync

T = TypeVar("T")

# Long enough for a slow Redis, short enough that a hung one does not hold a request for ever; the
# caller treats a timeout as a failed push (the events stay in the outbox for the relay).
TIMEOUT_S = 10.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the server whose `sync_to_async` thread we are on, if any (asgiref sets it)."""
    local = SyncToAsync.threadlocal
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid() or loop.is_closed():
        return None
    return loop


def pusher_loop() -> asyncio.AbstractEventLoop:
    """This process's own loop for channel-layer calls (started on first use, again after a fork)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="realtime-pusher", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine `make()` to completion from synchronous code and return its result.

    On a server's request thread it runs on the server's loop (as `async_to_sync` would); elsewhere on
    this process's pusher loop. Raises TimeoutError after TIMEOUT_S (the coroutine is cancelled).
    Must not be called from a thread that is running an event loop.
    """
    if _server_loop() is not None:

        async def call() -> T:
            return await asyncio.wait_for(make(), TIMEOUT_S)

        return async_to_sync(call)()

    async def wrapped() -> T:
        return await make()

    future = asyncio.run_coroutine_threadsafe(wrapped(), pusher_loop())
    try:
        return future.result(timeout=TIMEOUT_S)
    except TimeoutError:
        future.cancel()
        raise
