"""The one way events leave the building: outbox rows in the caller's transaction, a push after commit.

`publish` writes the event and one feed entry per recipient (with that recipient's next sequence
number) inside the caller's transaction, so the state change and its events commit or vanish together.
The event is written as published (`published_at` set: this process will push it) and pushed through
the channel layer right after commit, with no further statement. If the push fails (Redis down) the
events are marked unpublished again and `relay_unpublished` pushes them later; if the process dies
between commit and push, every process's hub notices within two rounds of its feed-head check that a
connected socket is behind its feed and reads the rest from the database. Clients that missed a push
resume from their last sequence number out of the database (see docs/realtime.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from config.rows import execute_then, insert_params, insert_plan, insert_rows, inserted
from realtime.events import check_event
from realtime.groups import FANOUT_GROUP
from realtime.loop import TIMEOUT_S, run_sync
from realtime.models import Event, Feed, FeedEntry

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    name: str
    version: int
    at: datetime
    data: dict[str, Any]
    user_ids: list[int]


_batch: ContextVar[list[_Pending] | None] = ContextVar("publish_batch", default=None)


@contextmanager
def publish_batch() -> Iterator[None]:
    """Write the events published inside the block together, when it ends (inside the caller's transaction).

    A service that publishes several events in one transaction (an emergency's intake publishes seven)
    opens a batch right inside its `transaction.atomic()`: the events, feed heads and feed entries are
    then written by one set-based statement instead of two per event, still before the commit. Use it
    only where no inner savepoint that publishes is rolled back and caught inside the block (its events
    would still be written). Nested batches join the outermost one; an exception discards the batch.
    """
    if _batch.get() is not None:
        yield
        return
    pending: list[_Pending] = []
    token = _batch.set(pending)
    try:
        yield
    finally:
        _batch.reset(token)
    # Reached only when the block ended normally.
    if pending:
        _write_batch(pending)


def publish(*, name: str, data: dict[str, Any], recipients: Iterable[int]) -> int | None:
    """Record event `name` for every recipient user id in the current transaction; push after commit.

    Returns the event's id, or None when there is no recipient or the event waits in a `publish_batch`.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("publish() must run inside the transaction of the state change it reports")
    shape = check_event(name, data)
    user_ids = sorted({int(r) for r in recipients})
    if not user_ids:
        return None
    pending = _batch.get()
    if pending is not None:
        pending.append(_Pending(name, shape.version, timezone.now(), data, user_ids))
        return None
    now = timezone.now()
    event = Event.objects.create(
        name=name, version=shape.version, at=now, data=data, published_at=_claimed_at(now)
    )
    if connection.vendor == "postgresql":
        seqs = _fan_out_postgresql(event.pk, user_ids)
        _push_after_commit(event.pk, _fanout_message(event, seqs))
    else:
        sequences = _next_sequences(user_ids)
        FeedEntry.objects.bulk_create(
            [FeedEntry(user_id=u, seq=s, event=event) for u, s in sequences.items()]
        )
        _push_after_commit(event.pk)
    return event.pk


def _write_batch(pending: list[_Pending]) -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("publish_batch() must end inside the transaction of the state change it reports")
    claimed = _claimed_at(timezone.now())
    events = [
        Event(name=p.name, version=p.version, at=p.at, data=p.data, published_at=claimed) for p in pending
    ]
    if connection.vendor != "postgresql":
        # SQLite: the per-event path (bulk_create gives ids there too, but the fan-out is per event).
        insert_rows(events)
        for event, item in zip(events, pending, strict=True):
            sequences = _next_sequences(item.user_ids)
            FeedEntry.objects.bulk_create(
                [FeedEntry(user_id=u, seq=s, event=event) for u, s in sequences.items()]
            )
            _push_after_commit(event.pk)
        return
    users: list[int] = []
    ordinals: list[int] = []
    for k, item in enumerate(pending, start=1):
        users.extend(item.user_ids)
        ordinals.extend([k] * len(item.user_ids))
    insert = insert_plan(Event, len(events))

    def then(rows: list[tuple[Any, ...]]) -> None:
        inserted(events, sorted({int(row[0]) for row in rows}))
        seqs = _seqs_by_event(row for row in rows if row[1] is not None)
        for event in events:
            _push_after_commit(event.pk, _fanout_message(event, seqs.get(event.pk, [])))

    # One statement: the events inserted (their ids ascend in the order listed: the k-th id is the k-th
    # event), each recipient's feed head moved on by its number of events (`_HEADS`), each recipient's
    # events numbered consecutively in event order after its old head, the feed entries written; every
    # event comes back, with its entries. (Sent with the transaction's other closing writes when a
    # service transaction closes: config.rows.pipelined_writes.)
    execute_then(
        f"WITH ev AS ({insert.sql}), "
        "ordinal AS (SELECT id AS event_id, row_number() OVER (ORDER BY id) AS k FROM ev), "
        "pairs AS (SELECT p.user_id, ordinal.event_id "
        "FROM unnest(%s::bigint[], %s::bigint[]) AS p(user_id, k) JOIN ordinal ON ordinal.k = p.k), "
        f"{_NUMBERED} "
        "SELECT ordinal.event_id, entries.user_id, entries.seq "
        "FROM ordinal LEFT JOIN entries ON entries.event_id = ordinal.event_id",
        [*insert_params(events, insert), users, ordinals],
        then,
    )


_FEED, _ENTRY = Feed._meta.db_table, FeedEntry._meta.db_table
# The recipients' feed heads, moved on by their numbers of events (`counts`): an upsert over the
# recipients in user order, which creates a newcomer's feed (numbered from 1) and locks each existing
# head as it reaches it. Every fan-out takes its feed locks here, always in user order, so concurrent
# fan-outs to overlapping recipients cannot deadlock (tests/integration/test_batches.py); a separate
# lock first, then creating the missing feeds, took a newcomer's lock out of that order.
_HEADS = (
    f"INSERT INTO {_FEED} AS f (user_id, last_seq, acked_seq) "
    "SELECT user_id, c, 0 FROM counts ORDER BY user_id "
    "ON CONFLICT (user_id) DO UPDATE SET last_seq = f.last_seq + EXCLUDED.last_seq "
    "RETURNING f.user_id, f.last_seq"
)
# CTEs numbering `pairs` (user_id, event_id) after the heads and writing the entries.
_NUMBERED = (
    "numbered AS (SELECT user_id, event_id, "
    "row_number() OVER (PARTITION BY user_id ORDER BY event_id) AS n FROM pairs), "
    "counts AS (SELECT user_id, count(*) AS c FROM pairs GROUP BY user_id), "
    f"heads AS ({_HEADS}), "
    f"entries AS (INSERT INTO {_ENTRY} (user_id, seq, event_id) "
    "SELECT numbered.user_id, heads.last_seq - counts.c + numbered.n, numbered.event_id "
    "FROM numbered JOIN counts ON counts.user_id = numbered.user_id "
    "JOIN heads ON heads.user_id = numbered.user_id "
    "RETURNING event_id, user_id, seq)"
)


def _seqs_by_event(rows: Iterable[tuple[int, int, int]]) -> dict[int, list[list[int]]]:
    seqs: dict[int, list[list[int]]] = {}
    for event_id, user_id, seq in rows:
        seqs.setdefault(int(event_id), []).append([int(user_id), int(seq)])
    return seqs


def _fanout_message(event: Event, seqs: list[list[int]]) -> dict[str, Any]:
    """The one channel-layer message of an event: its body once, and each recipient's sequence number."""
    message = event_message(event, 0)
    del message["seq"]
    return {"type": "fanout", "message": message, "seqs": seqs}


def _claimed_at(now: datetime) -> datetime | None:
    """`published_at` of a new event: now, as this process pushes it after commit (None with no layer).

    Marking it in the INSERT spares every committed transaction an UPDATE after its push (three per
    emergency dispatched, 0.6 ms each here); a failed push takes the mark back (`push_events`).
    """
    return now if get_channel_layer() is not None else None


def _push_after_commit(event_id: int, message: dict[str, Any] | None = None) -> None:
    """Queue an event for the one after-commit flush of this transaction (registered on first use).

    `message`, when the writer already has it (PostgreSQL returns the sequence numbers it assigned),
    spares the flush reading the event and its feed entries back.
    """
    pending: list[tuple[int, dict[str, Any] | None]] | None = getattr(connection, "_realtime_pending", None)
    # Entries are (savepoint ids, callable, robust); only the callable matters here.
    registered = any(entry[1] is _flush_pending for entry in connection.run_on_commit)
    if pending is None or not registered:
        # A new transaction (or the last one rolled back): start a fresh queue and one flush for it.
        pending = []
        connection._realtime_pending = pending  # type: ignore[attr-defined]
        transaction.on_commit(_flush_pending)
    pending.append((event_id, message))


def _flush_pending() -> None:
    pending: list[tuple[int, dict[str, Any] | None]] = getattr(connection, "_realtime_pending", None) or []
    connection._realtime_pending = None  # type: ignore[attr-defined]
    if pending:
        ready = {event_id: message for event_id, message in pending if message is not None}
        push_events([event_id for event_id, _message in pending], ready=ready, claimed=True)


def _fan_out_postgresql(event_id: int, user_ids: list[int]) -> list[list[int]]:
    """Feed heads, sequence numbers and feed entries for every recipient in one statement.

    Returns [user id, sequence number] for each recipient."""
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH pairs AS (SELECT u AS user_id, %s::bigint AS event_id FROM unnest(%s::bigint[]) AS u), "
            f"{_NUMBERED} SELECT user_id, seq FROM entries",
            [event_id, user_ids],
        )
        return [[int(user_id), int(seq)] for user_id, seq in cursor.fetchall()]


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
    """Push one committed event (see push_events)."""
    return push_events([event_id]) == 1


def push_events(
    event_ids: list[int], *, ready: dict[int, dict[str, Any]] | None = None, claimed: bool = False
) -> int:
    """Push committed events to every process once each, in order; mark them published; return the count.

    One message per event crosses the channel layer, whatever the number of recipients: each process
    hands it to its local sockets. `ready` holds messages already built by the writer (after-commit
    flush); the others are read back from the database (the relay). `claimed`: the events were written
    as published (the after-commit flush), so success needs no statement and failure marks them
    unpublished again. On failure the events are left unpublished for the relay.
    """
    layer = get_channel_layer()
    if layer is None or not event_ids:
        return 0
    ready = ready or {}
    by_id = dict(ready)
    missing = [event_id for event_id in event_ids if event_id not in ready]
    if missing:
        events = {e.pk: e for e in Event.objects.filter(pk__in=missing)}
        seqs = _seqs_by_event(
            FeedEntry.objects.filter(event_id__in=list(events)).values_list("event_id", "user_id", "seq")
        )
        by_id.update({pk: _fanout_message(event, seqs.get(pk, [])) for pk, event in events.items()})
    messages = [by_id[event_id] for event_id in sorted(by_id)]

    async def send_all() -> None:
        for message in messages:
            await layer.group_send(FANOUT_GROUP, message)

    publisher = _blocking_publisher()
    try:
        if publisher is not None:
            client, channel = publisher
            with client.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.publish(channel, layer.serialize(message))
                pipe.execute()
        else:
            run_sync(send_all)
    except Exception as exc:  # the database keeps them; the relay and client resume deliver them later
        log.warning("push of events %s failed, left for the relay: %s", sorted(by_id)[:5], exc)
        if claimed:
            _mark_unpublished(list(by_id))
        return 0
    if not claimed:
        _mark_published(list(by_id))
    return len(by_id)


_PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"
_publishers: dict[tuple[int, str, str], tuple[redis.Redis, str]] = {}


def _blocking_publisher() -> tuple[redis.Redis, str] | None:
    """A blocking Redis client and the fan-out group's pub/sub channel, for channels_redis's pub/sub layer.

    That layer's group_send is one PUBLISH of the serialised message to "<prefix>__group__<group>"; doing
    it from the calling thread, all of a transaction's messages in one round trip, spares the hop onto an
    event loop and back per push (0.33 → 0.05 ms per message here). Any other layer or host form (a
    Sentinel, several shards) goes through the layer's own group_send. The process's subscribers are the
    layer's, so what arrives is exactly what group_send would have delivered (tests check it).
    """
    layers: dict[str, Any] = settings.CHANNEL_LAYERS
    config: dict[str, Any] = layers.get("default", {})
    options: dict[str, Any] = config.get("CONFIG", {})
    hosts = options.get("hosts")
    if config.get("BACKEND") != _PUBSUB_LAYER or not (
        isinstance(hosts, list | tuple) and len(hosts) == 1 and isinstance(hosts[0], str)
    ):
        return None
    url, prefix = hosts[0], str(options.get("prefix", "asgi"))
    key = (os.getpid(), url, prefix)
    found = _publishers.get(key)
    if found is None:
        # A hung Redis holds a request at most this long; the events then wait for the relay.
        client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=TIMEOUT_S)
        found = _publishers[key] = (client, f"{prefix}__group__{FANOUT_GROUP}")
    return found


def _mark_published(event_ids: list[int]) -> None:
    if connection.vendor != "postgresql":
        Event.objects.filter(pk__in=event_ids, published_at__isnull=True).update(published_at=timezone.now())
        return
    # After every committed state change: one prepared statement, whatever the number of events. The
    # first push's time is kept by COALESCE rather than "AND published_at IS NULL": with that condition the
    # prepared (generic) plan ANDed the primary key with the partial index of unpublished events, whose
    # entries for rows published since the last VACUUM are all still there (0.7 ms at 14,000 events, and
    # growing), where the primary key alone reads the few rows (0.04 ms).
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Event._meta.db_table} SET published_at = COALESCE(published_at, %s) "
            "WHERE id = ANY(%s::bigint[])",
            [timezone.now(), event_ids],
        )


def _mark_unpublished(event_ids: list[int]) -> None:
    """Take back the mark of events written as published whose push failed: the relay pushes them."""
    try:
        Event.objects.filter(pk__in=event_ids).update(published_at=None)
    except Exception as exc:  # the hubs' feed-head check still finds them for connected sockets
        log.warning("events %s left marked published after a failed push: %s", sorted(event_ids)[:5], exc)


def send_control(message: dict[str, Any]) -> bool:
    """Send a control message (e.g. close a user's sockets) to every process."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        run_sync(lambda: layer.group_send(FANOUT_GROUP, {"type": "control", **message}))
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
    return push_events(ids)
