"""The one way events leave the building: outbox rows in the caller's transaction, a push after commit.

`publish` writes the event and one feed entry per recipient (with that recipient's next sequence
number) inside the caller's transaction, so the state change and its events commit or vanish together.
After commit the event is pushed through the channel layer; if that fails (Redis down, process killed
before on_commit ran) the row stays unpublished and `relay_unpublished` pushes it again later. Clients
that missed a push resume from their last sequence number out of the database (see docs/realtime.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.utils import timezone

from realtime.events import check_event
from realtime.groups import FANOUT_GROUP
from realtime.models import Event, Feed, FeedEntry

log = logging.getLogger(__name__)


def publish(*, name: str, data: dict[str, Any], recipients: Iterable[int]) -> int | None:
    """Record event `name` for every recipient user id in the current transaction; push after commit."""
    if not connection.in_atomic_block:
        raise RuntimeError("publish() must run inside the transaction of the state change it reports")
    shape = check_event(name, data)
    user_ids = sorted({int(r) for r in recipients})
    if not user_ids:
        return None
    event = Event.objects.create(name=name, version=shape.version, at=timezone.now(), data=data)
    if connection.vendor == "postgresql":
        _fan_out_postgresql(event.pk, user_ids)
    else:
        sequences = _next_sequences(user_ids)
        FeedEntry.objects.bulk_create(
            [FeedEntry(user_id=u, seq=s, event=event) for u, s in sequences.items()]
        )
    transaction.on_commit(partial(push_event, event.pk))
    return event.pk


def _fan_out_postgresql(event_id: int, user_ids: list[int]) -> None:
    """Feed heads, sequence numbers and feed entries for every recipient in three set-based statements."""
    feed, entry = Feed._meta.db_table, FeedEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {feed} (user_id, last_seq, acked_seq) SELECT u, 0, 0 FROM unnest(%s::bigint[]) AS u "
            "ON CONFLICT (user_id) DO NOTHING",
            [user_ids],
        )
        # Lock the heads in one fixed order so concurrent fan-outs to overlapping users cannot deadlock.
        cursor.execute(
            f"SELECT 1 FROM {feed} WHERE user_id = ANY(%s) ORDER BY user_id FOR UPDATE", [user_ids]
        )
        cursor.execute(
            f"WITH heads AS (UPDATE {feed} SET last_seq = last_seq + 1 WHERE user_id = ANY(%s) "
            "RETURNING user_id, last_seq) "
            f"INSERT INTO {entry} (user_id, seq, event_id) SELECT user_id, last_seq, %s FROM heads",
            [user_ids, event_id],
        )


def _next_sequences(user_ids: list[int]) -> dict[int, int]:
    Feed.objects.bulk_create([Feed(user_id=u) for u in user_ids], ignore_conflicts=True)
    # Lock the feed heads in one fixed order so concurrent fan-outs to overlapping users cannot deadlock.
    list(Feed.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id").values_list("pk"))
    table = Feed._meta.db_table
    result: dict[int, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(user_ids), 900):
            chunk = user_ids[start : start + 900]
            marks = ", ".join(["%s"] * len(chunk))
            sql = (
                f"UPDATE {table} SET last_seq = last_seq + 1 "
                f"WHERE user_id IN ({marks}) RETURNING user_id, last_seq"
            )
            cursor.execute(sql, chunk)
            result.update({int(u): int(s) for u, s in cursor.fetchall()})
    return result


def event_message(event: Event, seq: int) -> dict[str, Any]:
    """The websocket message of PRODUCT.md for one feed entry."""
    return {
        "type": "event",
        "seq": seq,
        "event": event.name,
        "v": event.version,
        "at": event.at.isoformat(),
        "data": event.data,
    }


def push_event(event_id: int) -> bool:
    """Push one committed event to every process once; each process hands it to its local sockets."""
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return False
    layer = get_channel_layer()
    if layer is None:
        return False
    seqs = list(FeedEntry.objects.filter(event_id=event_id).values_list("user_id", "seq"))
    message = event_message(event, 0)
    del message["seq"]
    try:
        # One message per process instead of one per recipient: a warning to 5,000 people is one send.
        async_to_sync(layer.group_send)(
            FANOUT_GROUP, {"type": "fanout", "message": message, "seqs": [[u, s] for u, s in seqs]}
        )
    except Exception as exc:  # the database keeps it; the relay and client resume deliver it later
        log.warning("push of event %s failed, left for the relay: %s", event_id, exc)
        return False
    Event.objects.filter(pk=event_id, published_at__isnull=True).update(published_at=timezone.now())
    return True


def send_control(message: dict[str, Any]) -> bool:
    """Send a control message (e.g. close a user's sockets) to every process."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.group_send)(FANOUT_GROUP, {"type": "control", **message})
    except Exception as exc:
        log.warning("control message not sent: %s", exc)
        return False
    return True


def relay_unpublished(*, older_than: timedelta = timedelta(seconds=1), limit: int = 500) -> int:
    """Push events committed but never pushed (e.g. the process died before on_commit); return the count."""
    cutoff = timezone.now() - older_than
    ids = list(
        Event.objects.filter(published_at__isnull=True, at__lte=cutoff)
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(1 for event_id in ids if push_event(event_id))
