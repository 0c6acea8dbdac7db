"""Frames from a client cost the stream's event loop no trip to the sync thread (realtime/consumers.py)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync

from command.models import User
from realtime.feeds import ticket_issue
from tests.support.wsclient import open_stream

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_acks_and_other_frames_take_no_trip_to_the_sync_thread(demo_city, monkeypatch):
    import channels.consumer

    trips: list[int] = []
    close_old = channels.consumer.aclose_old_connections

    async def counted() -> None:  # channels' own, counted
        trips.append(1)
        await close_old()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    ticket = ticket_issue(User.objects.get(username="operator"))

    async def session() -> dict:
        client, welcome = await open_stream(ticket)
        for _ in range(5):
            await client.send_to(text_data=json.dumps({"type": "ack", "seq": welcome["head"]}))
        await client.send_to(text_data=json.dumps({"type": "nonsense"}))
        answer = await client.receive_json_from(timeout=10)
        await client.disconnect()
        return {"welcome": welcome, "answer": answer}

    seen = async_to_sync(session)()
    assert seen["welcome"]["type"] == "welcome"
    assert seen["answer"]["type"] == "error" and seen["answer"]["status"] == 400, seen["answer"]
    assert trips == [], f"{len(trips)} trips to the sync thread for the socket's frames"
