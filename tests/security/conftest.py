"""Fixtures of the security tests: anchors in a temporary folder, limits that stay out of the way."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.security.world import PHONE
from tests.support.factories import first_grid_of, point_in

# Generous rates for every test except those that test the limits (the rate is part of the counter's
# key, so a test with its own rate never shares counts with another run or another suite).
WIDE_RATES = {
    "login": "100000/min",
    "login_ip": "100000/min",
    "report": "100000/min",
    "anon": "100000/min",
    "reveal": "100000/min",
}


def pytest_configure(config: Any) -> None:
    """Markers of the security tests."""
    config.addinivalue_line("markers", "sqlite_ok: an audit test that also holds on SQLite")


@pytest.fixture(autouse=True)
def _security_settings(settings: Any, tmp_path: Any) -> None:
    settings.AUDIT_ANCHOR_DIR = tmp_path / "anchors"
    # The world's photos (and any a test uploads) go to a temporary folder, not var/media.
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SECURITY_RATES = dict(WIDE_RATES)


@pytest.fixture
def report_via_api(client_for: Callable[[str], APIClient]) -> Callable[..., dict[str, Any]]:
    """Submit a report through POST /api/v1/reports/ and return the incident as the reporter sees it."""

    def submit(username: str = "grid01", *, grid: str | None = None, **fields: Any) -> dict[str, Any]:
        lon, lat = point_in(grid or first_grid_of("grid01"))
        body = {
            "category": "UM02",
            "description": "井盖缺失",
            "lon": lon,
            "lat": lat,
            "reporter_name": "张三",
            "reporter_phone": PHONE,
            **fields,
        }
        response = client_for(username).post(
            "/api/v1/reports/", body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
        )
        assert response.status_code == 201, response.content
        return dict(response.json())

    return submit
