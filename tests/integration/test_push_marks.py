"""Events are written as published and pushed after commit; a failed push hands them to the relay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from command.models import User
from realtime.models import Event
from realtime.publish import publish, relay_unpublished
from tests.support.servers import free_port

pytestmark = [pytest.mark.django_db(transaction=True)]


def _warning(n: int) -> dict[str, Any]:
    return {"id": n, "level": "blue", "type": "暴雨", "headline": f"预警 {n}", "status": "issued"}


def _publish_one(n: int) -> Event:
    users = list(User.objects.order_by("pk").values_list("pk", flat=True)[:3])
    with transaction.atomic():
        publish(name="warning.issued", data=_warning(n), recipients=users)
    return Event.objects.get(data__id=n)


def test_a_committed_event_needs_no_statement_after_its_push(demo_city):
    _publish_one(40_000_000)  # the process's publisher (or pusher loop) exists before counting
    with CaptureQueriesContext(connection) as queries:
        event = _publish_one(40_000_001)
    marks = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE realtime_event")]
    assert marks == [], marks
    assert event.published_at is not None and event.published_at == event.at, "written as published"
    assert relay_unpublished(older_than=timedelta(0)) == 0, "nothing left for the relay"


def test_a_push_that_fails_leaves_its_events_to_the_relay(demo_city):
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: the push is refused
    down = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [unreachable], "prefix": "push-marks"},
        }
    }
    with override_settings(CHANNEL_LAYERS=down):
        event = _publish_one(40_000_002)
        assert event.published_at is None, "the mark of a failed push is taken back"
        assert relay_unpublished(older_than=timedelta(0)) == 0, "Redis still down: still unpublished"
        event.refresh_from_db()
        assert event.published_at is None
    # Redis is back (the suite's own layer): the relay pushes it and marks it.
    assert relay_unpublished(older_than=timedelta(0)) == 1
    event.refresh_from_db()
    assert event.published_at is not None
