"""/healthz reports the database and the channel layer, and says which one fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.test import override_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.django_db
@pytest.mark.embedded
def test_healthz_ok_with_real_services(client, settings):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["database"]["ok"] is True
    assert body["channel_layer"]["ok"] is True
    expected = "RedisPubSubChannelLayer" if settings.REDIS_URL else "InMemoryChannelLayer"
    assert body["channel_layer"]["backend"].endswith(expected)


@pytest.mark.django_db
def test_healthz_503_names_a_dead_channel_layer(client):
    dead = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    with override_settings(CHANNEL_LAYERS=dead):
        channel_layers.backends.clear()
        try:
            response = client.get("/healthz")
        finally:
            channel_layers.backends.clear()
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["channel_layer"]
    assert body["database"]["ok"] is True
    assert body["channel_layer"]["ok"] is False and body["channel_layer"]["error"]


@pytest.mark.embedded
def test_healthz_503_names_a_dead_database(tmp_path):
    # A SQLite path inside a missing directory cannot be opened: the database check must fail alone.
    script = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/healthz', HTTP_HOST='localhost');"
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/db.sqlite3",
            "YJLD_SKIP_PREFLIGHT": "1",
        }
    )
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 503
    assert result["body"]["failing"] == ["database"]
    assert result["body"]["channel_layer"]["ok"] is True


@pytest.mark.django_db(transaction=True)
def test_healthz_on_daphne_keeps_one_probe_channel_however_often_it_is_asked(tmp_path, settings):
    """Each check used to subscribe a new channel that channels_redis never unsubscribed: a leak a probe."""
    import urllib.request
    import uuid

    import redis

    from tests.support.servers import daphne

    assert settings.REDIS_URL, "this test needs the Redis channel layer"
    prefix = f"hz{uuid.uuid4().hex[:8]}"
    with daphne(tmp_path, env={"CHANNEL_PREFIX": prefix}) as server:
        statuses = []
        for _ in range(30):
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as response:
                statuses.append(response.status)
        probes = redis.Redis.from_url(settings.REDIS_URL).pubsub_channels(f"{prefix}*healthz*")
    assert statuses == [200] * 30
    assert len(probes) <= 1, f"{len(probes)} probe channels still subscribed after 30 checks"
