"""The product served by a real daphne process: login page and a healthy /healthz."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.servers import daphne


@pytest.mark.django_db(transaction=True)
@pytest.mark.embedded
def test_daphne_serves_login_and_health(tmp_path, demo_city, settings):
    with daphne(tmp_path) as server:
        with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
            body = json.loads(response.read())
            assert response.status == 200
        assert body["database"]["ok"] and body["channel_layer"]["ok"]
        assert body["database"]["vendor"] == ("postgresql" if settings.REDIS_URL else "sqlite")
        with urllib.request.urlopen(server.url + "/login/", timeout=10) as response:
            page = response.read().decode()
        assert "登录" in page
        with urllib.request.urlopen(server.url + "/static/command/base.css", timeout=10) as response:
            assert response.status == 200
