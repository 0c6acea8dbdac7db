"""One Redis connection pool per process for Django's cache, whatever the request context.

Django keeps a cache backend object per asgiref context, and each new backend builds its own
`redis.ConnectionPool`. Under our ASGI handler every request runs in a context of its own, so every
request that touched the cache (the rate limits of the API, on every call) opened a new TCP connection
to Redis and left it to the garbage collector: 101 connections for 100 reports, counted with Redis's
`total_connections_received`. `SharedConnectionPool` is given to the cache as its `pool_class`: the
backends of all contexts then draw on one thread-safe pool per server and options in each process.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

_lock = threading.Lock()
_pools: dict[tuple[Any, ...], redis.ConnectionPool] = {}


class SharedConnectionPool(redis.ConnectionPool):
    """A `redis.ConnectionPool` whose `from_url` hands out one pool per process, URL and options."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Any:
        """The process's pool for url and options (made on first use, again in a forked child)."""
        key = (os.getpid(), url, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = super().from_url(url, **kwargs)
            return pool
