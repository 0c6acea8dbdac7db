"""Writes of the audit log: `audit_record` appends one row to the hash chain.

Call it inside the transaction of the state change it records, after the change's realtime events
have been published (see docs/security.md, "Where the audit hook goes"): the chain head is row-locked
until that transaction commits, so audited transactions append strictly one after another, and a
rolled-back change takes its audit row with it.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import canonical_json, record_hash
from audit.models import GENESIS_HASH, AuditHead, AuditRecord
from config.rows import insert_params, insert_plan, inserted

SOURCES = ("web", "api", "websocket", "system", "admin", "cli")

# Set on an admin LogEntry once it is on the chain, so no path records it twice (see audit/apps.py).
AUDITED_MARK = "_audit_seq"


def _locked_head() -> AuditHead:
    head = AuditHead.objects.select_for_update().filter(pk=1).first()
    if head is not None:
        return head
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
    record = AuditRecord(
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
    )
    deferred = _deferred.get()
    if deferred is not None:
        # Chained and written when the audit_batch ends (seq and hash are set then).
        deferred.append(record)
        return record
    _chain_and_write([record])
    return record


def _link(records: list[AuditRecord], seq: int, head_hash: str) -> tuple[int, str]:
    """Number and hash records in order after the head (seq, hash); return the new head."""
    for record in records:
        record.seq, record.prev_hash = seq + 1, head_hash
        record.hash = record_hash(record)
        seq, head_hash = record.seq, record.hash
    return seq, head_hash


def _chain_and_write(records: list[AuditRecord]) -> None:
    """Link records onto the locked head in order, insert them, move the head."""
    if connection.vendor == "postgresql":
        _chain_and_write_postgresql(records)
        return
    head = _locked_head()
    head.seq, head.hash = _link(records, head.seq, head.hash)
    if len(records) == 1:
        records[0].save(force_insert=True)
    else:
        AuditRecord.objects.bulk_create(records)
    head.save(update_fields=["seq", "hash"])


def _chain_and_write_postgresql(records: list[AuditRecord]) -> None:
    """The same in two statements: lock and read the head; insert the records and move the head at once.

    Every audited transaction of the service path passes here (one to three times), so it is written in
    SQL rather than through three ORM statements.
    """
    head_table = connection.ops.quote_name(AuditHead._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT seq, hash FROM {head_table} WHERE id = 1 FOR UPDATE")
        row = cursor.fetchone()
    if row is None:  # a fresh or flushed database: the ORM path creates the head (see _locked_head)
        head = _locked_head()
        seq, head_hash = head.seq, head.hash
    else:
        seq, head_hash = int(row[0]), str(row[1])
    seq, head_hash = _link(records, seq, head_hash)
    insert, fields = insert_plan(AuditRecord, len(records))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH moved AS (UPDATE {head_table} SET seq = %s, hash = %s WHERE id = 1) {insert}",
            [seq, head_hash, *insert_params(records, fields)],
        )
        inserted(records, [int(r[0]) for r in cursor.fetchall()])


_deferred: ContextVar[list[AuditRecord] | None] = ContextVar("audit_batch", default=None)


@contextmanager
def audit_batch() -> Iterator[None]:
    """Chain the records made inside the block when it ends, under one lock of the head.

    For a service that records several steps in one transaction. Open it right inside the
    transaction and *outside* `realtime.publish.publish_batch`, so the events (feed locks) are written
    before the audit rows (the head lock), the lock order every transaction keeps. Nested batches join
    the outermost; an exception discards the records (the transaction rolls back anyway).
    """
    if _deferred.get() is not None:
        yield
        return
    records: list[AuditRecord] = []
    token = _deferred.set(records)
    try:
        yield
    finally:
        _deferred.reset(token)
    if records:
        if not connection.in_atomic_block:
            raise RuntimeError("audit_batch() must end inside the transaction of the changes it records")
        _chain_and_write(records)


def audit_admin_log_entry(entry: Any) -> AuditRecord:
    """Record a Django admin addition, change or deletion (from its LogEntry) on the chain."""
    from django.contrib.contenttypes.models import ContentType

    kinds = {1: "admin_add", 2: "admin_change", 3: "admin_delete"}
    content_type = ContentType.objects.get_for_id(entry.content_type_id) if entry.content_type_id else None
    object_type = f"{content_type.app_label}.{content_type.model}" if content_type else "unknown"
    # The admin writes its LogEntry inside the view's transaction; atomic() joins it (or, for a
    # LogEntry written outside any transaction, makes one so the append is still locked).
    with transaction.atomic():
        record = audit_record(
            action=kinds.get(int(entry.action_flag), f"admin_{entry.action_flag}"),
            object_type=object_type,
            object_id=entry.object_id or "",
            actor=entry.user,
            source="admin",
            data={"repr": entry.object_repr, "change": entry.get_change_message()},
            at=entry.action_time,
        )
    setattr(entry, AUDITED_MARK, record.seq)
    return record


def audit_admin_log_entries(entries: Iterable[Any]) -> list[AuditRecord]:
    """Record the admin LogEntries not on the chain yet (those written in bulk, which send no post_save)."""
    pending = [entry for entry in entries if getattr(entry, AUDITED_MARK, None) is None]
    users: dict[Any, Any] = {}
    for entry in pending:
        # One query for the actor of a whole bulk deletion rather than one per deleted object.
        if entry.user_id in users:
            entry.user = users[entry.user_id]
        else:
            users[entry.user_id] = entry.user
    with transaction.atomic():
        return [audit_admin_log_entry(entry) for entry in pending]


def os_user() -> str:
    """The operating-system user running this process (for audit rows of command-line changes), or ""."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return ""
