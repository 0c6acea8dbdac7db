"""The outbox: committed events and each recipient's feed with its own sequence numbers."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Event(models.Model):
    """A realtime event as committed with the state change that caused it."""

    name = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField(default=1)
    at = models.DateTimeField(db_index=True)
    data = models.JSONField()
    # Set once the after-commit push went through; the relay re-publishes rows still null.
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["at"], name="event_unpublished_idx", condition=models.Q(published_at__isnull=True)
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}#{self.pk}"


class Feed(models.Model):
    """One recipient's feed head: the last sequence number used and the last one acknowledged."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE)
    last_seq = models.BigIntegerField(default=0)
    acked_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"feed of user {self.user_id} at {self.last_seq}"


class FeedEntry(models.Model):
    """Event `event` is number `seq` in `user`'s feed."""

    # Indexed by the unique (user, seq) below; no index of its own (migration 0003).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    seq = models.BigIntegerField()
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="entries")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "seq"], name="feed_entry_user_seq")]

    def __str__(self) -> str:
        return f"{self.user_id}#{self.seq}"


class WsTicket(models.Model):
    """A one-time ticket a phone trades for a websocket session (the ticket never appears in a URL)."""

    key_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"ticket of user {self.user_id}"


class Connection(models.Model):
    """A live websocket, for presence: who is online, per department and grid, across processes."""

    channel_name = models.CharField(max_length=200, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    department_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    process = models.CharField(max_length=64)
    connected_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.user_id}@{self.process}"
