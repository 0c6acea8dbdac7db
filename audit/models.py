"""The audit log: one append-only table, each row hash-chained to the one before it.

A row's `hash` is SHA-256 over the previous row's hash and a canonical serialisation of the row (see
audit/chain.py). `AuditHead` holds the sequence number and hash of the last row; its row lock is what
makes concurrent writers append one after another. On PostgreSQL a trigger refuses UPDATE and DELETE
of audit rows (migration 0002); `manage.py audit_verify` finds any edit, deletion, insertion or
reordering that got past it, and the daily anchors (audit/anchors.py) catch a rewrite of the whole chain.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

GENESIS_HASH = "0" * 64


class AuditHead(models.Model):
    """The chain head: one row (pk 1) with the last record's sequence number and hash."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        verbose_name = _("audit chain head")

    def __str__(self) -> str:
        return f"head {self.seq} {self.hash[:12]}"


class AuditRecord(models.Model):
    """One audited step: who (id, username and role at the time), from where, what, on which object, why."""

    seq = models.BigIntegerField(_("sequence"), unique=True)
    at = models.DateTimeField(_("at"), db_index=True)
    # The actor is copied, not a foreign key: the record must stand alone after users change or go.
    actor_id = models.BigIntegerField(_("actor id"), null=True, blank=True)
    actor_username = models.CharField(_("actor"), max_length=150, blank=True)
    actor_role = models.CharField(_("role"), max_length=32, blank=True)
    source = models.CharField(_("source"), max_length=16)
    action = models.CharField(_("action"), max_length=64)
    object_type = models.CharField(_("object type"), max_length=64)
    object_id = models.CharField(_("object id"), max_length=64, blank=True)
    from_status = models.CharField(_("from"), max_length=32, blank=True)
    to_status = models.CharField(_("to"), max_length=32, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    # Canonical JSON text rather than a JSON column: PostgreSQL's jsonb reorders keys and rewrites
    # numbers, which would change the bytes the hash was computed over.
    data = models.TextField(_("data (JSON)"), default="{}")
    prev_hash = models.CharField(_("previous hash"), max_length=64)
    hash = models.CharField(_("hash"), max_length=64, unique=True)

    class Meta:
        verbose_name = _("audit record")
        verbose_name_plural = _("audit records")
        ordering = ["seq"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_type} {self.object_id}"

    @property
    def data_obj(self) -> Any:
        """The data as a Python object (the column holds canonical JSON text)."""
        return json.loads(self.data or "{}")
