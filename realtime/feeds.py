"""Reads and writes of feeds used by the stream: replay ranges, cumulative acks, tickets, presence rows."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from realtime.models import Connection, Event, Feed, FeedEntry, WsTicket
from realtime.publish import event_message, publish

TICKET_TTL_S = 60
# Roles that watch presence (command.constants.Role values; realtime does not import command).
PRESENCE_WATCHERS = ("operator", "commander")


@dataclass(frozen=True)
class FeedHead:
    """Where a user's feed stands: last sequence number, last acknowledged, oldest still kept."""

    last_seq: int
    acked_seq: int
    oldest_seq: int | None


def feed_head(user_id: int) -> FeedHead:
    """The head of a user's feed (zeros for a user who never received anything)."""
    feed = Feed.objects.filter(user_id=user_id).values_list("last_seq", "acked_seq").first()
    oldest = FeedEntry.objects.filter(user_id=user_id).aggregate(m=Min("seq"))["m"]
    if feed is None:
        return FeedHead(0, 0, oldest)
    return FeedHead(int(feed[0]), int(feed[1]), oldest)


def feed_range(user_id: int, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` messages of a user's feed with seq > after, in order."""
    entries = (
        FeedEntry.objects.filter(user_id=user_id, seq__gt=after)
        .select_related("event")
        .order_by("seq")[:limit]
    )
    return [event_message(e.event, e.seq) for e in entries]


_FEED, _ENTRY, _EVENT = Feed._meta.db_table, FeedEntry._meta.db_table, Event._meta.db_table
# The acks of many users in one statement (its own transaction): lock their heads in user order (so two
# batches never deadlock), move each ack forward (never past the last sequence number, never back), and
# return the events acknowledged for the first time, per user in order.
_ACK_SQL = (
    "WITH req(user_id, seq) AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[])), "
    f"head AS (SELECT f.user_id, f.acked_seq, f.last_seq, req.seq FROM {_FEED} AS f "
    "JOIN req ON req.user_id = f.user_id WHERE req.seq > f.acked_seq ORDER BY f.user_id FOR UPDATE OF f), "
    f"moved AS (UPDATE {_FEED} AS f SET acked_seq = LEAST(head.seq, head.last_seq) FROM head "
    "WHERE f.user_id = head.user_id "
    "RETURNING f.user_id, head.acked_seq AS before, f.acked_seq AS after) "
    f"SELECT moved.user_id, e.name, e.data FROM moved JOIN {_ENTRY} AS fe ON fe.user_id = moved.user_id "
    "AND fe.seq > moved.before AND fe.seq <= moved.after "
    f"JOIN {_EVENT} AS e ON e.id = fe.event_id ORDER BY moved.user_id, fe.seq"
)

Acked = dict[int, list[tuple[str, dict[str, Any]]]]


def feed_ack_many(acks: dict[int, int]) -> Acked:
    """Move the cumulative acks {user id: seq} forward; return {user id: events acknowledged first}.

    Users whose ack did not move (already there, no feed) are left out of the answer.
    """
    if not acks:
        return {}
    first: Acked = {}
    if connection.vendor == "postgresql":
        # A whole process's acks of one flush: one statement instead of a transaction of four per user.
        users = sorted(acks)
        with connection.cursor() as cursor:
            cursor.execute(_ACK_SQL, [users, [acks[u] for u in users]])
            rows = cursor.fetchall()
        # jsonb comes back as text from a plain cursor (Django's JSONField decodes it itself).
        for user_id, name, data in rows:
            first.setdefault(int(user_id), []).append(
                (name, data if isinstance(data, dict) else json.loads(data))
            )
        return first
    for user_id in sorted(acks):
        events = _feed_ack_orm(user_id, acks[user_id])
        if events:
            first[user_id] = events
    return first


def _feed_ack_orm(user_id: int, seq: int) -> list[tuple[str, dict[str, Any]]]:
    with transaction.atomic():
        feed = Feed.objects.select_for_update().filter(user_id=user_id).first()
        if feed is None or seq <= feed.acked_seq:
            return []
        seq = min(seq, feed.last_seq)
        old = feed.acked_seq
        feed.acked_seq = seq
        feed.save(update_fields=["acked_seq"])
    rows = (
        FeedEntry.objects.filter(user_id=user_id, seq__gt=old, seq__lte=seq)
        .select_related("event")
        .order_by("seq")
    )
    return [(e.event.name, e.event.data) for e in rows]


def feed_ack(user_id: int, seq: int) -> list[tuple[str, dict[str, Any]]]:
    """Move one user's cumulative ack forward; return the events acknowledged for the first time."""
    return feed_ack_many({user_id: seq}).get(user_id, [])


def ticket_issue(user: Any) -> str:
    """A fresh one-time websocket ticket for `user`, valid for TICKET_TTL_S seconds."""
    key = secrets.token_urlsafe(32)
    now = timezone.now()
    WsTicket.objects.create(
        key_hash=hashlib.sha256(key.encode()).hexdigest(),
        user=user,
        created_at=now,
        expires_at=now + timedelta(seconds=TICKET_TTL_S),
    )
    return key


def ticket_redeem(key: str) -> Any | None:
    """The active user a ticket was issued to, consuming the ticket; None if unknown, used or expired."""
    if not isinstance(key, str) or not key or len(key) > 200:
        return None
    now = timezone.now()
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    with transaction.atomic():
        # The conditional update makes the ticket single-use even when two sockets race for it.
        used = WsTicket.objects.filter(key_hash=key_hash, used_at__isnull=True, expires_at__gt=now).update(
            used_at=now
        )
        if not used:
            return None
        user_id = WsTicket.objects.filter(key_hash=key_hash).values_list("user_id", flat=True).first()
    if user_id is None:
        return None
    return get_user_model().objects.filter(pk=user_id, is_active=True).select_related("department").first()


def user_snapshot(user_id: int) -> tuple[bool, str, int | None] | None:
    """What decides a socket's rights: (is_active, role, department id); None if the user is gone."""
    row = (
        get_user_model().objects.filter(pk=user_id).values_list("is_active", "role", "department_id").first()
    )
    return (bool(row[0]), str(row[1]), row[2]) if row else None


# The hub reads these for all of its process's users every AUTH_RECHECK_S (2,500 users a process in a
# warning to 5,000): on PostgreSQL the ids go as one array, not as 2,500 parameters each prepared by the
# ORM — whose tens of thousands of short-lived objects, promoted while the query ran, set off a full
# garbage collection of the whole process (0.4–0.8 s with 2,500 sockets) every few seconds.
_HEADS_SQL = f"SELECT user_id, last_seq FROM {_FEED} WHERE user_id = ANY(%s::bigint[])"


def heads(user_ids: list[int]) -> dict[int, int]:
    """The last sequence number of each user's feed, in one query."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_HEADS_SQL, [user_ids])
            rows = cursor.fetchall()
    else:
        rows = list(Feed.objects.filter(user_id__in=user_ids).values_list("user_id", "last_seq"))
    return {int(user_id): int(last_seq) for user_id, last_seq in rows}


def snapshots(user_ids: list[int]) -> dict[int, tuple[bool, str, int | None]]:
    """user_snapshot for many users in one query."""
    users = get_user_model()
    if connection.vendor == "postgresql":
        department = users._meta.get_field("department").column
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, is_active, role, {department} FROM {users._meta.db_table} "
                "WHERE id = ANY(%s::bigint[])",
                [user_ids],
            )
            rows = cursor.fetchall()
    else:
        rows = list(
            users.objects.filter(pk__in=user_ids).values_list("pk", "is_active", "role", "department_id")
        )
    return {int(pk): (bool(active), str(role), dept) for pk, active, role, dept in rows}


def _presence_changed(user: Any, online: bool) -> None:
    watchers = (
        get_user_model()
        .objects.filter(role__in=PRESENCE_WATCHERS, is_active=True)
        .values_list("pk", flat=True)
    )
    department = getattr(getattr(user, "department", None), "code", None)
    publish(
        name="presence.changed",
        data={"department": department, "user_id": user.pk, "online": online, "username": user.username},
        recipients=list(watchers),
    )


def connection_open(*, channel_name: str, user: Any, process: str) -> None:
    """Record a live socket; announce the user online when it is their first."""
    now = timezone.now()
    with transaction.atomic():
        first = not Connection.objects.filter(user_id=user.pk, last_seen__gte=now - _stale()).exists()
        Connection.objects.update_or_create(
            channel_name=channel_name,
            defaults={
                "user_id": user.pk,
                "department_id": user.department_id,
                "process": process,
                "connected_at": now,
                "last_seen": now,
            },
        )
        if first:
            _presence_changed(user, True)


def connection_close(*, channel_name: str, user: Any) -> None:
    """Forget a socket; announce the user offline when it was their last."""
    now = timezone.now()
    with transaction.atomic():
        Connection.objects.filter(channel_name=channel_name).delete()
        if not Connection.objects.filter(user_id=user.pk, last_seen__gte=now - _stale()).exists():
            _presence_changed(user, False)


def connections_heartbeat(channel_names: list[str]) -> None:
    """Mark this process's sockets as alive."""
    if channel_names:
        Connection.objects.filter(channel_name__in=channel_names).update(last_seen=timezone.now())


def _stale() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "PRESENCE_TIMEOUT_S", 60)))


def connections_sweep() -> int:
    """Drop sockets whose process stopped beating (killed, partitioned); announce who went offline."""
    cutoff = timezone.now() - _stale()
    stale = list(Connection.objects.filter(last_seen__lt=cutoff).values_list("channel_name", "user_id"))
    if not stale:
        return 0
    User = get_user_model()
    for channel_name, user_id in stale:
        user = User.objects.select_related("department").filter(pk=user_id).first()
        if user is not None:
            connection_close(channel_name=channel_name, user=user)
        else:
            Connection.objects.filter(channel_name=channel_name).delete()
    return len(stale)


def online_summary() -> dict[str, Any]:
    """Who is online: users, and counts per department code."""
    cutoff = timezone.now() - _stale()
    rows = (
        Connection.objects.filter(last_seen__gte=cutoff)
        .values_list("user_id", "user__username", "user__department__code", "user__role")
        .distinct()
    )
    users: dict[int, dict[str, Any]] = {}
    for user_id, username, department, role in rows:
        users[user_id] = {"id": user_id, "username": username, "department": department, "role": role}
    per_department: dict[str, int] = {}
    for user in users.values():
        if user["department"]:
            per_department[user["department"]] = per_department.get(user["department"], 0) + 1
    return {"users": sorted(users.values(), key=lambda u: u["username"]), "departments": per_department}


def feeds_prune() -> int:
    """Delete events older than the retention window (their feed entries go with them)."""
    days = float(getattr(settings, "REALTIME_RETENTION_DAYS", 30))
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Event.objects.filter(at__lt=cutoff).delete()
    return deleted


def latest_seq(user_id: int) -> int:
    """The newest sequence number in a user's feed (0 if none)."""
    return int(FeedEntry.objects.filter(user_id=user_id).aggregate(m=Max("seq"))["m"] or 0)
