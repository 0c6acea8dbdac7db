"""The per-process bearer-token cache: one lookup per burst, and never a wrong answer within its bounds.

A valid token is remembered for TOKEN_CACHE_S. Deleting the token or saving/deleting its user forgets it
at once in this process; a change made elsewhere (another process, a bulk UPDATE that sends no signal)
is seen within TOKEN_CACHE_S; expiry is checked on every request, cached or not.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from command.tokens import _remembered

PASSWORD = "demo-pass-2026"


def _signed_in(role: str = "grid_worker") -> tuple[Any, str, APIClient]:
    from command.services import user_create

    user = user_create(username=f"tc-{uuid.uuid4().hex[:10]}", role=role, password=PASSWORD)
    key = Token.objects.create(user=user).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return user, key, client


def _token_lookups(client: APIClient, path: str = "/api/v1/categories/") -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        status = client.get(path).status_code
    sql = [q["sql"] for q in queries.captured_queries]
    return status, sum(s.startswith("SELECT") and '"authtoken_token"' in s for s in sql)


@pytest.fixture(autouse=True)
def _empty_cache() -> Any:
    _remembered.clear()
    yield
    _remembered.clear()


@pytest.mark.django_db
def test_a_burst_of_requests_looks_the_token_up_once(settings, demo_city):
    settings.TOKEN_CACHE_S = 30
    _user, _key, client = _signed_in()
    assert _token_lookups(client) == (200, 1)
    for _ in range(5):
        assert _token_lookups(client) == (200, 0)


@pytest.mark.django_db
def test_zero_turns_the_cache_off(settings, demo_city):
    settings.TOKEN_CACHE_S = 0
    _user, _key, client = _signed_in()
    for _ in range(3):
        assert _token_lookups(client) == (200, 1)


@pytest.mark.django_db
def test_a_deleted_token_is_refused_at_once(settings, demo_city):
    settings.TOKEN_CACHE_S = 30
    _user, key, client = _signed_in()
    assert client.get("/api/v1/categories/").status_code == 200
    Token.objects.get(key=key).delete()
    assert client.get("/api/v1/categories/").status_code == 401


@pytest.mark.django_db
def test_a_deactivated_user_is_refused_at_once(settings, demo_city):
    settings.TOKEN_CACHE_S = 30
    user, _key, client = _signed_in()
    assert client.get("/api/v1/categories/").status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert client.get("/api/v1/categories/").status_code == 401


@pytest.mark.django_db
def test_a_change_without_a_signal_is_seen_within_the_cache_time(settings, demo_city):
    # As when another process deactivates the user: this process hears nothing and relies on the bound.
    settings.TOKEN_CACHE_S = 0.3
    user, _key, client = _signed_in()
    assert client.get("/api/v1/categories/").status_code == 200
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    time.sleep(0.35)
    assert client.get("/api/v1/categories/").status_code == 401


@pytest.mark.django_db
def test_a_remembered_token_still_expires_on_time(settings, demo_city, monkeypatch):
    settings.TOKEN_CACHE_S = 3600
    settings.TOKEN_TTL_S = 600
    _user, key, client = _signed_in()
    assert _token_lookups(client) == (200, 1)
    later = timezone.now() + timedelta(seconds=601)
    monkeypatch.setattr(timezone, "now", lambda: later)
    status, lookups = _token_lookups(client)
    assert (status, lookups) == (401, 0)  # refused from the cache, no lookup needed
    assert not Token.objects.filter(key=key).exists()
    assert key not in _remembered


@pytest.mark.django_db
def test_each_request_gets_its_own_user_object(settings, demo_city):
    # Attributes a request sets on request.user must not leak into the next request.
    from command.tokens import ExpiringBearerTokenAuthentication

    settings.TOKEN_CACHE_S = 30
    user, key, _client = _signed_in()
    auth = ExpiringBearerTokenAuthentication()
    first, _ = auth.authenticate_credentials(key)
    first.scribble = "set by one request"
    second, token = auth.authenticate_credentials(key)
    assert second is not first and not hasattr(second, "scribble")
    assert second.pk == user.pk and second.username == user.username and token.user is second
