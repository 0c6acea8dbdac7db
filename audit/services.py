"""Writes of the audit log: `audit_record` appends one row to the hash chain.

Call it inside the transaction of the state change it records, after the change's realtime events
have been published (see docs/security.md, "Where the audit hook goes"): the chain head is row-locked
until that transaction commits, so audited transactions append strictly one after another, and a
rolled-back change takes its audit row with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import canonical_json, record_hash
from audit.models import GENESIS_HASH, AuditHead, AuditRecord

SOURCES = ("web", "api", "websocket", "system", "admin", "cli")


def _locked_head() -> AuditHead:
    if not AuditHead.objects.filter(pk=1).exists():
        # The head row is missing on a fresh (or flushed) database; start it from the last record so a
        # lost head can never restart the numbering over existing rows. ON CONFLICT DO NOTHING lets
        # two first writers race safely.
        last = AuditRecord.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, head_hash = last if last else (0, GENESIS_HASH)
        AuditHead.objects.bulk_create([AuditHead(pk=1, seq=seq, hash=head_hash)], ignore_conflicts=True)
    return AuditHead.objects.select_for_update().get(pk=1)


def audit_record(
    *,
    action: str,
    object_type: str,
    object_id: Any = "",
    actor: Any = None,
    source: str = "system",
    from_status: str = "",
    to_status: str = "",
    reason: str = "",
    data: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record to the audit chain, inside the caller's transaction (RuntimeError outside one)."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record() must run inside the transaction of the change it records")
    if source not in SOURCES:
        raise ValueError(f"unknown audit source {source!r}; use one of {', '.join(SOURCES)}")
    actor_id = getattr(actor, "pk", None) if actor is not None else None
    head = _locked_head()
    record = AuditRecord(
        seq=head.seq + 1,
        at=at or timezone.now(),
        actor_id=int(actor_id) if actor_id is not None else None,
        actor_username=str(getattr(actor, "username", "") or "") if actor is not None else "",
        actor_role=(str(getattr(actor, "role", "") or "") if actor is not None else "system"),
        source=source,
        action=str(action),
        object_type=str(object_type),
        object_id="" if object_id is None else str(object_id),
        from_status=str(from_status or ""),
        to_status=str(to_status or ""),
        reason=str(reason or ""),
        data=canonical_json(dict(data or {})),
        prev_hash=head.hash,
    )
    record.hash = record_hash(record)
    record.save(force_insert=True)
    head.seq, head.hash = record.seq, record.hash
    head.save(update_fields=["seq", "hash"])
    return record


def audit_admin_log_entry(entry: Any) -> AuditRecord:
    """Record a Django admin addition, change or deletion (from its LogEntry) on the chain."""
    kinds = {1: "admin_add", 2: "admin_change", 3: "admin_delete"}
    content_type = entry.content_type
    object_type = f"{content_type.app_label}.{content_type.model}" if content_type else "unknown"
    # The admin writes its LogEntry inside the view's transaction; atomic() joins it (or, for a
    # LogEntry written outside any transaction, makes one so the append is still locked).
    with transaction.atomic():
        return audit_record(
            action=kinds.get(int(entry.action_flag), f"admin_{entry.action_flag}"),
            object_type=object_type,
            object_id=entry.object_id or "",
            actor=entry.user,
            source="admin",
            data={"repr": entry.object_repr, "change": entry.get_change_message()},
            at=entry.action_time,
        )
