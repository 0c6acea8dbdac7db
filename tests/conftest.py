"""Shared fixtures: the demo city loaded once per session, and authenticated API clients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

DEMO_SEED = 2026


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long tests first (marked `slow`), so the parallel workers do not wait on one at the end.

    Runs before pytest-django's stable reordering (tests in a rolled-back transaction, then those that
    flush the database, then the rest), so the slow ones lead within each of those groups: the tests that
    rely on the session's demo city still run before any test flushes it.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Migrate once, then load the demo city once for the whole session."""
    from command.demo import demo_city_load

    with django_db_blocker.unblock():
        demo_city_load(seed=DEMO_SEED, grids=2000)


@pytest.fixture
def demo_city(db):
    """Make sure the demo city is present (transactional tests flush it away)."""
    from command.demo import demo_city_exists, demo_city_load

    if not demo_city_exists():
        demo_city_load(seed=DEMO_SEED, grids=2000)


@pytest.fixture(autouse=True)
def _fresh_process_memories():
    """Forget per-process state keyed by row ids: a flushed database hands the same ids out again.

    (`command.warnings` remembers when it last evaluated each emerging rule; the token cache remembers
    tokens; incidents.refcache keeps reference data and recipients under a version a flush resets.)
    Without this a test's new rule could inherit an earlier test's "evaluated a second ago".
    """
    from command import warnings
    from command.tokens import _remembered
    from incidents import refcache

    warnings._emerging_evaluated.clear()
    _remembered.clear()
    refcache.forget_all()
    yield


@pytest.fixture
def api_client() -> APIClient:
    """An unauthenticated DRF test client."""
    return APIClient()


@pytest.fixture
def client_for(db) -> Callable[[str], APIClient]:
    """Return a function giving an APIClient authenticated (bearer token) as a demo user."""
    from rest_framework.authtoken.models import Token

    from command.models import User

    def make(username: str) -> APIClient:
        user = User.objects.get(username=username)
        token, _ = Token.objects.get_or_create(user=user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
        return client

    return make
