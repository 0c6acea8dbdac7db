"""The cumulative ack of a feed (realtime.feeds.feed_ack): forward only, capped, first acks returned once."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from command.models import User
from realtime.feeds import feed_ack
from realtime.models import Feed
from realtime.publish import publish

pytestmark = [pytest.mark.django_db]


def _warning(n: int) -> dict[str, Any]:
    return {"id": n, "level": "blue", "type": "暴雨", "headline": f"预警 {n}", "status": "issued"}


@pytest.mark.embedded
def test_an_ack_moves_forward_only_up_to_the_last_event_and_returns_each_event_once():
    user, other = User.objects.order_by("pk").values_list("pk", flat=True)[:2]
    for n in (1, 2, 3):
        with transaction.atomic():
            publish(name="warning.issued", data=_warning(n), recipients=[user, other])
    assert feed_ack(user, 0) == []
    first = feed_ack(user, 2)
    assert [(name, data["id"]) for name, data in first] == [("warning.issued", 1), ("warning.issued", 2)]
    assert first[0][1] == _warning(1)
    assert feed_ack(user, 1) == [] and feed_ack(user, 2) == [], "never back, never twice"
    assert [data["id"] for _name, data in feed_ack(user, 99)] == [3]
    assert Feed.objects.get(user_id=user).acked_seq == 3, "capped at the last sequence number"
    assert Feed.objects.get(user_id=other).acked_seq == 0, "another user's feed is untouched"
    assert feed_ack(User.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1, 5) == []


def test_an_ack_is_one_statement_on_postgresql():
    assert connection.vendor == "postgresql"  # (not marked embedded: the ORM's transaction serves SQLite)
    user = User.objects.order_by("pk").values_list("pk", flat=True)[0]
    with transaction.atomic():
        publish(name="warning.issued", data=_warning(1), recipients=[user])
    with CaptureQueriesContext(connection) as queries:
        assert [data["id"] for _name, data in feed_ack(user, 1)] == [1]
    assert len(queries.captured_queries) == 1
