"""A process writes its sockets' acks together (realtime/acks.py, realtime.feeds.feed_ack_many)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from command.models import User
from realtime import acks, feeds
from realtime.models import Feed
from realtime.publish import publish
from tests.support.wsclient import open_stream

pytestmark = [pytest.mark.django_db(transaction=True)]


def _warning(n: int) -> dict[str, Any]:
    return {"id": n, "level": "blue", "type": "暴雨", "headline": f"预警 {n}", "status": "issued"}


def _stream_acks(users: list[User], events: int) -> list[dict]:
    """Each user's socket receives `events` warnings and acks each one; returns what they received."""
    tickets = [feeds.ticket_issue(u) for u in users]

    async def session() -> list[dict]:
        clients = []
        for ticket in tickets:
            client, _welcome = await open_stream(ticket)
            clients.append(client)
        await asyncio.to_thread(_publish, [u.pk for u in users], events)
        received = []
        for client in clients:
            warnings = 0
            while warnings < events:
                message = await client.receive_json_from(timeout=10)
                received.append(message)
                warnings += message["event"] == "warning.issued"
                await client.send_to(text_data=json.dumps({"type": "ack", "seq": message["seq"]}))
        # Stay connected past a flush: the acks are written by the process's batcher, not at close.
        for _ in range(100):
            if not acks.batcher.pending and acks.batcher.task is not None and acks.batcher.task.done():
                break
            await asyncio.sleep(0.05)
        for client in clients:
            await client.disconnect()
        return received

    return async_to_sync(session)()


def _publish(user_ids: list[int], events: int) -> None:
    for n in range(1, events + 1):
        with transaction.atomic():
            publish(name="warning.issued", data=_warning(n), recipients=user_ids)
    connection.close()


def test_the_acks_of_many_sockets_are_written_in_one_flush(demo_city, monkeypatch):
    users = list(User.objects.filter(is_active=True, role="grid_worker").order_by("pk")[:6])
    monkeypatch.setattr(
        acks, "ACK_FLUSH_S", 1.0
    )  # a window the 18 acks surely fall in, on a slow machine too
    batches: list[dict[int, int]] = []
    written = feeds.feed_ack_many

    def spy(batch: dict[int, int]) -> feeds.Acked:  # the real write, its batches noted
        batches.append(dict(batch))
        return written(batch)

    monkeypatch.setattr(feeds, "feed_ack_many", spy)
    received = _stream_acks(users, events=3)
    assert len(received) == 18 and {m["event"] for m in received} == {"warning.issued"}
    heads = dict(Feed.objects.filter(user__in=users).values_list("user_id", "last_seq"))
    acked = dict(Feed.objects.filter(user__in=users).values_list("user_id", "acked_seq"))
    assert acked == heads and len(heads) == 6, "every socket's last ack was written"
    # 18 acks of 6 sockets: at most a couple of flushes, each with the highest seq of several users.
    assert 1 <= len(batches) <= 2, batches
    assert set().union(*batches) == {u.pk for u in users}
    assert max(len(b) for b in batches) >= 3


def test_acks_that_could_not_be_written_are_written_at_the_next_flush(demo_city, monkeypatch):
    users = list(User.objects.filter(is_active=True, role="grid_worker").order_by("pk")[:3])
    monkeypatch.setattr(acks, "RETRY_S", 0.05)
    calls: list[dict[int, int]] = []
    written = feeds.feed_ack_many

    def database_away_once(batch: dict[int, int]) -> feeds.Acked:
        calls.append(dict(batch))
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return written(batch)

    monkeypatch.setattr(feeds, "feed_ack_many", database_away_once)
    _stream_acks(users, events=2)
    assert len(calls) >= 2, "tried again"
    acked = dict(Feed.objects.filter(user__in=users).values_list("user_id", "acked_seq"))
    assert acked == {u.pk: 2 for u in users}, "nothing lost to the failed write"


@pytest.mark.embedded
def test_the_acks_of_several_users_are_one_statement_each_with_its_first_events(demo_city):
    user, other, third = User.objects.order_by("pk").values_list("pk", flat=True)[:3]
    for n in (1, 2, 3):
        with transaction.atomic():
            publish(name="warning.issued", data=_warning(n), recipients=[user, other])
    nobody = User.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1
    with CaptureQueriesContext(connection) as queries:
        first = feeds.feed_ack_many({other: 1, user: 2, third: 5, nobody: 4})
    if connection.vendor == "postgresql":
        assert len(queries.captured_queries) == 1
    assert {u: [d["id"] for _n, d in events] for u, events in first.items()} == {user: [1, 2], other: [1]}
    again = feeds.feed_ack_many({user: 1, other: 3})
    assert {u: [d["id"] for _n, d in events] for u, events in again.items()} == {other: [2, 3]}
    acked = dict(Feed.objects.filter(user__in=[user, other]).values_list("user_id", "acked_seq"))
    assert acked == {user: 2, other: 3}, "forward only, capped at the last event"
    assert feeds.feed_ack_many({}) == {}
