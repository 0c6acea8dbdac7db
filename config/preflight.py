"""Start-up checks: an unreachable database or Redis, or a malformed setting, stops a process in one line."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings


class PreflightError(RuntimeError):
    """A setting points at a service that cannot be used."""


def redact(url: str) -> str:
    """Return the URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_database() -> None:
    """Open a connection to the default database and run SELECT 1."""
    from django.db import connections

    conn = connections["default"]
    try:
        if getattr(conn, "pool", None) is not None:
            # Not through the pool: it would retry for DB_POOL_TIMEOUT_S, log each attempt, and end in
            # "couldn't get a connection" instead of the reason. One direct connection says why at once.
            import psycopg  # the pool exists only on PostgreSQL

            with psycopg.connect(**conn.get_connection_params(), connect_timeout=5) as direct:
                direct.execute("SELECT 1")
            return
        conn.ensure_connection()
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(f"DATABASE_URL: cannot use {redact(settings.DATABASE_URL)}: {reason}") from exc
    finally:
        conn.close()


def check_redis() -> None:
    """PING the Redis server named by REDIS_URL, when one is configured."""
    if not settings.REDIS_URL:
        return
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(f"REDIS_URL: cannot use {redact(settings.REDIS_URL)}: {reason}") from exc


def check_gc_thresholds() -> None:
    """GC_THRESHOLDS must be three whole numbers ≥ 1 (config/runtime.py)."""
    from config.runtime import gc_thresholds

    try:
        gc_thresholds()
    except ValueError as exc:
        raise PreflightError(f"GC_THRESHOLDS: cannot use {exc}") from exc


def check_all() -> None:
    """Run every start-up check, raising PreflightError on the first failure."""
    check_gc_thresholds()
    check_database()
    check_redis()


def check_or_exit() -> None:
    """Run the checks; on failure print one line naming the setting and exit with status 2."""
    try:
        check_all()
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
