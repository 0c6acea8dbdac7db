"""One Redis connection pool per process for Django's cache, whatever the request context.

Django keeps a cache backend object per asgiref context, and each new backend builds its own
`redis.ConnectionPool`. Under our ASGI handler every request runs in a context of its own, so every
request that touched the cache (the rate limits of the API, on every call) opened a new TCP connection
to Redis and left it to the garbage collector: 101 connections for 100 reports, counted with Redis's
`total_connections_received`. `SharedConnectionPool` is given to the cache as its `pool_class`: the
backends of all contexts then draw on one thread-safe pool per server and options in each process.
`RedisCache` (the settings' backend) also keeps one `redis.Redis` client per pool instead of building
one for every cache operation.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_lock = threading.Lock()
_pools: dict[tuple[Any, ...], redis.ConnectionPool] = {}
_clients: dict[int, Any] = {}


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


class SharedClientRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, keeping one `redis.Redis` per connection pool rather than one per call.

    Django builds a new `redis.Redis` for every cache operation: 85 µs here, close to the 108 µs of the
    GET it then sends. The client holds no connection of its own (the pool does) and is thread-safe.
    """

    # Set by Django's RedisCacheClient; django-stubs does not declare them.
    _client: Callable[..., redis.Redis]
    _get_connection_pool: Callable[[bool], redis.ConnectionPool]

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        """The kept client of the pool this operation uses."""
        pool = self._get_connection_pool(write)
        if not isinstance(pool, SharedConnectionPool):  # a pool per backend: kept, it would pile up
            return super().get_client(key, write=write)
        client = _clients.get(id(pool))
        if client is None or client.connection_pool is not pool:
            with _lock:
                client = _clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    """Django's Redis cache with `SharedClientRedisCacheClient` (and, in settings, `SharedConnectionPool`)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
