"""Hardening: rate limits (429 + Retry-After), lockout, CSRF, headers, body and geometry limits, expiry,
websocket frame and message limits against a real daphne, and the pinned versions."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.factories import first_grid_of, point_in

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "demo-pass-2026"


def _new_user(role: str = "grid_worker", **extra: Any) -> Any:
    from command.models import Department
    from command.services import user_create

    department = Department.objects.get(code="command_centre") if role in ("operator", "commander") else None
    user = user_create(
        username=f"sec-{uuid.uuid4().hex[:10]}", role=role, department=department, password=PASSWORD, **extra
    )
    return user


def _report_body() -> dict[str, Any]:
    lon, lat = point_in(first_grid_of("grid01"))
    return {"category": "UM02", "description": "限流测试", "lon": lon, "lat": lat}


def _assert_429(response: Any) -> int:
    assert response.status_code == 429, (response.status_code, response.content[:300])
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    return retry_after


# ------------------------------------------------------------------------------------- rate limits


@pytest.mark.django_db
def test_token_login_is_rate_limited_per_username_and_address(settings):
    settings.SECURITY_RATES = {**settings.SECURITY_RATES, "login": "3/min"}
    client = APIClient()
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        response = client.post("/api/v1/auth/token/", {"username": name, "password": "x"}, format="json")
        assert response.status_code == 400
    response = client.post("/api/v1/auth/token/", {"username": name, "password": "x"}, format="json")
    _assert_429(response)
    assert response.json()["error"]["status"] == 429
    # Another username from the same address is not held up by this one's attempts.
    other = client.post("/api/v1/auth/token/", {"username": name + "x", "password": "x"}, format="json")
    assert other.status_code == 400


@pytest.mark.django_db
def test_report_intake_is_rate_limited_per_user(settings, demo_city):
    settings.SECURITY_RATES = {**settings.SECURITY_RATES, "report": "2/min"}
    clients = []
    for _ in range(2):
        client = APIClient()
        client.credentials(
            HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=_new_user('operator')).key}"
        )
        clients.append(client)
    for _ in range(2):
        assert clients[0].post("/api/v1/reports/", _report_body(), format="json").status_code == 201
    response = clients[0].post("/api/v1/reports/", _report_body(), format="json")
    _assert_429(response)
    assert response.json()["error"]["status"] == 429
    # The limit is per user: a colleague at the same address goes on reporting.
    assert clients[1].post("/api/v1/reports/", _report_body(), format="json").status_code == 201


@pytest.mark.django_db
def test_anonymous_requests_are_rate_limited(settings):
    settings.SECURITY_RATES = {**settings.SECURITY_RATES, "anon": "2/min"}
    client = Client(REMOTE_ADDR=f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}")
    assert client.get("/api/v1/schema/").status_code == 200
    assert client.get("/api/v1/schema/").status_code == 200
    _assert_429(client.get("/api/v1/schema/"))


# ----------------------------------------------------------------------------------------- lockout


@pytest.mark.django_db
def test_repeated_failures_lock_the_account_on_every_sign_in_form(settings):
    settings.LOCKOUT_FAILURES, settings.LOCKOUT_S = 3, 120
    user = _new_user()
    api = APIClient()
    for _ in range(3):
        wrong = api.post(
            "/api/v1/auth/token/", {"username": user.username, "password": "wrong"}, format="json"
        )
        assert wrong.status_code == 400
    # Locked: even the right password is refused, with the time to wait.
    locked = api.post("/api/v1/auth/token/", {"username": user.username, "password": PASSWORD}, format="json")
    retry = _assert_429(locked)
    assert 100 <= retry <= 120
    page = Client().post("/login/", {"username": user.username, "password": PASSWORD})
    _assert_429(page)
    admin_page = Client().post("/admin/login/", {"username": user.username, "password": PASSWORD})
    _assert_429(admin_page)
    # The lock is per address: the user can still sign in from elsewhere (see docs/security.md).
    elsewhere = APIClient(REMOTE_ADDR="10.1.2.3")
    ok = elsewhere.post(
        "/api/v1/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert ok.status_code == 200


@pytest.mark.django_db
def test_a_success_clears_the_failure_count(settings):
    settings.LOCKOUT_FAILURES = 3
    user = _new_user()
    api = APIClient()
    for _ in range(2):
        api.post("/api/v1/auth/token/", {"username": user.username, "password": "wrong"}, format="json")
    assert (
        api.post(
            "/api/v1/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
        ).status_code
        == 200
    )
    for _ in range(2):
        api.post("/api/v1/auth/token/", {"username": user.username, "password": "wrong"}, format="json")
    assert (
        api.post(
            "/api/v1/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
        ).status_code
        == 200
    )


# -------------------------------------------------------------------------------------------- CSRF


@pytest.mark.django_db
def test_session_posts_need_the_csrf_token(demo_city):
    client = Client(enforce_csrf_checks=True)
    login_page = client.get("/login/")
    token = login_page.cookies["csrftoken"].value
    assert client.post("/login/", {"username": "operator", "password": PASSWORD}).status_code == 403
    signed_in = client.post(
        "/login/", {"username": "operator", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert signed_in.status_code == 302
    # The REST API with the session cookie (pages' fetch calls) refuses a POST without the token.
    body = json.dumps(_report_body())
    refused = client.post("/api/v1/reports/", body, content_type="application/json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["detail"]
    token = client.cookies["csrftoken"].value
    accepted = client.post("/api/v1/reports/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201, accepted.content
    assert client.post("/logout/").status_code == 403
    assert client.post("/logout/", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value).status_code == 302


# ----------------------------------------------------------------------------------------- headers


@pytest.mark.django_db
def test_security_headers_on_pages_and_api(client_for):
    page = Client().get("/login/")
    csp = page["Content-Security-Policy"]
    for part in (
        "default-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ):
        assert part in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert (
        script_src is not None
        and "'unsafe-inline'" not in script_src.group(1)
        and "'nonce-" in script_src.group(1)
    )
    assert "http:" not in csp.replace("ws://", "") and "*" not in csp
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert page["X-Frame-Options"] == "DENY"
    assert (
        "geolocation=(self)" in page["Permissions-Policy"] and "microphone=()" in page["Permissions-Policy"]
    )
    api = client_for("operator").get("/api/v1/categories/")
    assert api["Cache-Control"] == "no-store" and api["X-Content-Type-Options"] == "nosniff"
    # Nonces differ per response.
    assert Client().get("/login/")["Content-Security-Policy"] != csp


def test_the_map_tile_server_is_the_one_foreign_image_origin(settings, client):
    settings.MAP_TILE_URL = "https://tiles.example.org/{z}/{x}/{y}.png"
    csp = client.get("/login/")["Content-Security-Policy"]
    assert "img-src 'self' data: blob: https://tiles.example.org;" in csp
    assert csp.count("https://") == 1


@pytest.mark.django_db
def test_session_cookie_is_http_only_same_site_and_expires(settings):
    client = Client()
    client.post("/login/", {"username": "operator", "password": PASSWORD})
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) == settings.SESSION_COOKIE_AGE <= 12 * 3600


# ------------------------------------------------------------------------------------- body limits


@pytest.mark.django_db
def test_bodies_over_the_limit_get_413_before_any_work(settings, client_for):
    settings.REQUEST_MAX_BYTES, settings.UPLOAD_MAX_BYTES = 2_000, 10_000
    client = client_for("operator")
    big = {**_report_body(), "description": "大" * 1_000}
    response = client.post("/api/v1/reports/", big, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "body" and response.json()["error"]["limit"] == 2_000
    photo = ("photo.jpg", b"\xff\xd8" + b"0" * 20_000, "image/jpeg")
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile(*photo)
    response = client.post("/api/v1/reports/", {**_report_body(), "photos": upload}, format="multipart")
    assert response.status_code == 413 and response.json()["error"]["limit"] == 10_000


@pytest.mark.django_db
def test_geometry_over_the_vertex_limit_is_refused_naming_the_field(settings, client_for):
    settings.WARNING_MAX_VERTICES = 100
    lon, lat = point_in(first_grid_of("grid01"))
    import math

    ring = [
        [lon + 0.01 * math.cos(2 * math.pi * k / 150), lat + 0.01 * math.sin(2 * math.pi * k / 150)]
        for k in range(150)
    ]
    ring.append(ring[0])
    body = {
        "level": "blue",
        "type": "暴雨",
        "headline": "顶点过多",
        "area": {"polygons": [ring]},
        "expires": (timezone.now() + timedelta(hours=2)).isoformat(),
    }
    response = client_for("operator").post("/api/v1/warnings/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"].startswith("area")


# ------------------------------------------------------------------------------------------ expiry


@pytest.mark.django_db
def test_expired_tokens_are_refused_and_a_new_sign_in_issues_a_fresh_one(settings, demo_city):
    settings.TOKEN_TTL_S = 600
    # Ageing the token by an UPDATE is invisible to the token cache until TOKEN_CACHE_S passes (it is
    # not how a token ages); test_token_cache.py checks that a remembered token expires on time.
    settings.TOKEN_CACHE_S = 0
    user = _new_user()
    client = APIClient()
    first = client.post(
        "/api/v1/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    key = first.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/categories/").status_code == 200
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(seconds=601))
    expired = client.get("/api/v1/categories/")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["detail"]
    assert not Token.objects.filter(key=key).exists()
    # An expired token left unused is retired at the next sign-in, which hands out a new one.
    Token.objects.create(user=user)
    Token.objects.filter(user=user).update(created=timezone.now() - timedelta(seconds=601))
    stale = Token.objects.get(user=user).key
    again = APIClient().post(
        "/api/v1/auth/token/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert again.status_code == 200 and again.json()["token"] != stale


# ---------------------------------------------------------------------------------------- versions


def _parse(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_pinned_versions_are_the_patched_ones():
    # daphne 4.2.2 fixed CVE-2026-44545 and CVE-2026-44546; 5.2.19 is the newest Django 5.2 patch release.
    assert _parse(version("daphne")) >= (4, 2, 2)
    assert _parse(version("django")) >= (5, 2, 19)
    lock = (ROOT / "requirements.lock").read_text()
    assert _parse(re.search(r"^daphne==(.+)$", lock, re.M).group(1)) >= (4, 2, 2)
    assert _parse(re.search(r"^django==(.+)$", lock, re.M).group(1)) >= (5, 2, 19)
    project = (ROOT / "pyproject.toml").read_text()
    assert _parse(re.search(r'"daphne>=([^,"]+)', project).group(1)) >= (4, 2, 2)
    assert _parse(re.search(r'"django>=([^,"]+)', project).group(1)) >= (5, 2, 19)


# --------------------------------------------------------------------------------------- websocket


@pytest.mark.django_db(transaction=True)
def test_websocket_frame_and_message_limits_on_real_daphne(demo_city, tmp_path):
    from websockets.exceptions import ConnectionClosed

    from tests.support.servers import daphne
    from tests.support.wsclient import StreamClient, token_for

    with daphne(tmp_path) as server:
        token = token_for(server.url, "operator")
        # A frame over WS_MAX_FRAME (64 KiB) is refused: "closing" 1009, then the socket is closed. (The
        # close frame itself carries 1011, not 1009: autobahn lets an application send only 1000 and
        # 3000-4999, see docs/security.md "Limits".)
        big = StreamClient(server.url, token)
        big.ws.send(json.dumps({"type": "ping", "pad": "x" * (64 * 1024)}))
        closing = big.recv_type("closing")
        assert closing["code"] == 1009 and "too large" in closing["reason"]
        assert big.closed_code() is not None
        # Messages beyond the token bucket (20/s, burst 40) get 429 with retry_after; a client that keeps
        # going is closed with 4429.
        fast = StreamClient(server.url, token)
        # Far more than the bucket holds, so that even a slow (loaded) server, refilling 20 tokens each
        # second while it reads, runs out of tokens.
        sent = 0
        for _ in range(600):
            try:
                fast.ws.send(json.dumps({"type": "ping"}))
            except ConnectionClosed:
                break
            sent += 1
        limited, pongs, code = [], 0, None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                message = json.loads(fast.ws.recv(timeout=5))
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                break
            except TimeoutError:
                break
            if message["type"] == "pong":
                pongs += 1
            elif message["type"] == "error" and message["status"] == 429:
                limited.append(message)
        assert 30 <= pongs < sent and limited, (pongs, sent, len(limited), code)
        assert 0 < limited[0]["retry_after"] <= 1
        assert code == 4429


def test_a_rate_limit_counts_in_one_round_trip_to_redis(monkeypatch):
    """Every rate-limited request (each report) counts in Redis: INCR and EXPIRE sent together."""
    import redis.connection
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    from config.security import rate_hit

    backend = caches["default"]
    assert isinstance(backend, RedisCache), "this suite runs with REDIS_URL (tests/services_plugin.py)"
    sends: list[int] = []
    real = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        sends.append(1)
        real(self, *args, **kwargs)

    rate_hit("report", f"user:warm-up-{uuid.uuid4().hex}", "2/min")  # the pool's connection is open
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    ident = f"user:one-trip-{uuid.uuid4().hex}"
    assert rate_hit("report", ident, "2/min") == 0
    assert len(sends) == 1, f"{len(sends)} round trips for one count"
    assert rate_hit("report", ident, "2/min") == 0
    assert rate_hit("report", ident, "2/min") > 0, "the third in the window is over the limit"
    client = backend._cache.get_client(write=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
    keys = list(client.scan_iter(match=f"*rl:report:2/60:*:{digest}"))
    assert len(keys) == 1 and 0 < client.ttl(keys[0]) <= 61, "one counter, expiring after its window"
    assert int(client.get(keys[0])) == 3
