"""The HTTP request path on a real daphne: pooled database connections, lent threads, streamed bodies.

Before config/asgi_handler.py and the connection pool, every request on daphne ran in a new thread and
so opened (and closed) a new PostgreSQL session; these tests count sessions on the server itself.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from incidents.models import Source
from incidents.services import ReportInput, incident_act, report_submit
from tests.support.factories import first_grid_of, point_in
from tests.support.servers import daphne
from tests.support.wsclient import api, token_for

pytestmark = [pytest.mark.django_db(transaction=True)]


def _sessions_started() -> int:
    """Sessions PostgreSQL has counted for the test database (pg_stat_database.sessions)."""
    db = connection.settings_dict
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    dsn = f"postgresql://{db.get('USER') or 'postgres'}@{host}:{port}/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (db["NAME"],)
        ).fetchone()
    return int(row[0]) if row else 0


def _get(url: str, token: str) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read(), response.headers


def test_requests_reuse_pooled_connections_and_queue_for_them(tmp_path: Path, demo_city: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.fail("this test needs PostgreSQL (the embedded run selects only tests marked embedded)")
    # Four connections for eight lent threads, token cache off: every request needs the database.
    env = {"DB_POOL_MIN": "1", "DB_POOL_MAX": "4", "HTTP_THREADS": "8", "TOKEN_CACHE_S": "0"}
    with daphne(tmp_path, env=env) as server:
        token = token_for(server.url, "operator")
        url = server.url + "/api/v1/incidents/?page_size=5"
        assert _get(url, token)[0] == 200
        before = _sessions_started()
        for _ in range(40):
            assert _get(url, token)[0] == 200
        with ThreadPoolExecutor(max_workers=24) as pool:  # more at once than threads and connections
            statuses = list(pool.map(lambda _: _get(url, token)[0], range(48)))
        after = _sessions_started()
    assert statuses == [200] * 48
    # 88 requests; new sessions are the pool's four connections, a few counted late by PostgreSQL's
    # statistics (sessions opened before `before` was read), and none per request.
    assert after - before <= 12, f"{after - before} new PostgreSQL sessions for 88 requests"


def test_streamed_export_health_and_writes_through_daphne(tmp_path: Path, demo_city: Any) -> None:
    from command.models import User

    grid_worker = User.objects.get(username="grid01")
    operator = User.objects.get(username="operator")
    lon, lat = point_in(first_grid_of("grid01"))
    for i in range(3):
        data = ReportInput(category="UM02", description=f"导出测试 {i}", lon=lon, lat=lat)
        incident = report_submit(reporter=grid_worker, data=data, idempotency_key=uuid.uuid4().hex).incident
        incident_act(incident_id=incident.pk, actor=operator, action="accept", source=Source.API)
    with daphne(tmp_path) as server:
        status, body, _headers = _get(server.url + "/healthz", "-")
        assert status == 200 and json.loads(body)["database"]["ok"] is True  # an async view
        token = token_for(server.url, "operator")
        today = timezone.localdate()
        period = f"from={today - timedelta(days=1)}&to={today + timedelta(days=1)}"
        status, body, headers = _get(server.url + f"/api/v1/exports/incidents.csv?{period}", token)
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        lines = body.decode("utf-8-sig").strip().splitlines()
        assert lines[0].startswith("id,") and len(lines) >= 4
        assert sum("导出测试" in line for line in lines) == 3
        # A write through the lent thread commits and is seen by the next request.
        status, created = api(
            server.url,
            "POST",
            "/api/v1/reports/",
            token=token_for(server.url, "grid01"),
            body={"category": "UM02", "description": "经 daphne 上报", "lon": lon, "lat": lat},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert status == 201, created
        status, body, _ = _get(server.url + f"/api/v1/incidents/{created['id']}/", token)
        assert status == 200 and json.loads(body)["id"] == created["id"]


def test_requests_share_the_caches_redis_connections(tmp_path: Path, demo_city: Any) -> None:
    """Reports are rate-limited through Redis on every request: one pool, not a connection a request."""
    import redis
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.fail("this test needs Redis (the embedded run selects only tests marked embedded)")
    client = redis.Redis.from_url(settings.REDIS_URL)
    lon, lat = point_in(first_grid_of("grid01"))

    def received() -> int:
        return int(client.info("stats")["total_connections_received"])

    def report(token: str) -> int:
        body = {"category": "UM02", "description": "限流计数", "lon": lon, "lat": lat}
        return api(
            server.url, "POST", "/api/v1/reports/", token, body, {"Idempotency-Key": uuid.uuid4().hex}
        )[0]

    with daphne(tmp_path) as server:
        token = token_for(server.url, "grid01")
        for _ in range(3):  # the process's own connections (cache, channel layer, hub) are made by now
            assert report(token) == 201
        before = received()
        for _ in range(30):
            assert report(token) == 201
        opened = received() - before
    client.close()
    # Other test workers share this Redis server: allow a few of theirs, never one per request.
    assert opened <= 10, f"{opened} new Redis connections for 30 reports"


def test_every_request_context_uses_the_same_redis_client_of_the_cache() -> None:
    """Django builds a `redis.Redis` per cache operation (85 µs); config.cache.RedisCache keeps one."""
    import threading

    from django.core.cache import caches

    from config.cache import RedisCache

    clients: list[Any] = []
    backends: list[Any] = []

    def one_context() -> None:  # each thread is a context of its own, with its own cache backend
        backend: Any = caches["default"]
        backends.append(backend)
        clients.extend([backend._cache.get_client(write=True), backend._cache.get_client("k")])

    threads = [threading.Thread(target=one_context) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(b, RedisCache) for b in backends) and len({id(b) for b in backends}) == 3
    assert len({id(c) for c in clients}) == 1, "one client for every context and call"
    assert clients[0].ping()
