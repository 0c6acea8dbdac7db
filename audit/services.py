"""Writes of the audit log: `audit_record` appends one row to the hash chain.

Call it inside the transaction of the state change it records, after the change's realtime events
have been published (see docs/security.md, "Where the audit hook goes"): the chain head is row-locked
until that transaction commits, so audited transactions append strictly one after another, and a
rolled-back change takes its audit row with it.
"""

from __future__ import annotations

import functools
import getpass
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.chain import canonical_json, hash_around_seq, record_hash, serialise_around_seq
from audit.models import GENESIS_HASH, AuditHead, AuditRecord
from config.rows import column_arrays, execute_then, insert_rows, inserted

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


# The fields of a record given by its writer; the chain's own (seq, prev_hash, hash) are the statement's.
_CHAIN_FIELDS = ("seq", "prev_hash", "hash")


@functools.cache
def _given_fields() -> list[Any]:
    meta = AuditRecord._meta
    return [f for f in meta.concrete_fields if f is not meta.pk and f.name not in _CHAIN_FIELDS]


@functools.cache
def _chaining_sql() -> str:
    """One statement that locks the head, numbers and hashes the records after it, inserts them and moves
    the head; it returns nothing when the head row is missing.

    The hash is audit/chain.py's, computed by PostgreSQL: SHA-256 over the previous hash's bytes and
    the record's canonical bytes, which the writer sends split around the sequence number
    (`serialise_around_seq`) because only the statement knows the number. The records come as one
    array per column, so the text and its parameters are the same for any number of records: one
    prepared statement, and psycopg's query cache keeps it (it skips statements of over 50 parameters).
    """
    quote = connection.ops.quote_name
    head_table, table = quote(AuditHead._meta.db_table), quote(AuditRecord._meta.db_table)
    fields = _given_fields()
    columns = [quote(str(f.column)) for f in fields]
    arrays = ", ".join(
        ["%b::bytea[]", "%b::bytea[]", *(f"%b::{f.cast_db_type(connection)}[]" for f in fields)]
    )
    return (
        f"WITH RECURSIVE head AS (SELECT seq, hash FROM {head_table} WHERE id = 1 FOR UPDATE), "
        f"given AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY "
        f"AS g (before, after, {', '.join(columns)}, n)), "
        "chain (n, seq, prev_hash, hash) AS ("
        "SELECT 0::bigint, seq, hash::text, hash::text FROM head "
        "UNION ALL SELECT g.n, c.seq + 1, c.hash, encode(sha256(decode(c.hash, 'hex') || g.before "
        "|| convert_to((c.seq + 1)::text, 'UTF8') || g.after), 'hex') "
        "FROM chain AS c JOIN given AS g ON g.n = c.n + 1), "
        f"moved AS (UPDATE {head_table} SET seq = c.seq, hash = c.hash FROM chain AS c "
        f"WHERE {head_table}.id = 1 AND c.n = (SELECT max(n) FROM given)) "
        f"INSERT INTO {table} ({', '.join(columns)}, {', '.join(quote(name) for name in _CHAIN_FIELDS)}) "
        f"SELECT {', '.join(f'g.{column}' for column in columns)}, c.seq, c.prev_hash, c.hash "
        "FROM given AS g JOIN chain AS c ON c.n = g.n "
        "RETURNING id, seq, prev_hash, hash"
    )


def _chain_and_write_postgresql(records: list[AuditRecord]) -> None:
    """The same in one statement: lock the head, number and hash the records, insert them, move the head.

    Every audited transaction of the service path passes here (one to three times). The head stays
    locked until the transaction ends, as before; what goes is the round trip between reading the head
    and writing after it. Each hash that comes back is checked against audit/chain.py before the
    transaction can commit, so a record the verifier would reject is never written.
    """
    split = [serialise_around_seq(record) for record in records]
    params: list[Any] = [[before for before, _after in split], [after for _before, after in split]]
    params += column_arrays(records, _given_fields())

    def then(returned: list[tuple[Any, ...]]) -> None:
        rows = sorted(returned, key=lambda row: int(row[1]))
        if not rows:  # a fresh or flushed database: the ORM path creates the head (see _locked_head)
            head = _locked_head()
            head.seq, head.hash = _link(records, head.seq, head.hash)
            insert_rows(records)
            head.save(update_fields=["seq", "hash"])
            return
        for record, (before, after), (_pk, seq, prev_hash, digest) in zip(records, split, rows, strict=True):
            record.seq, record.prev_hash, record.hash = int(seq), str(prev_hash), str(digest)
            if hash_around_seq(record.prev_hash, before, record.seq, after) != record.hash:
                raise RuntimeError(
                    f"audit record {record.seq}: the hash PostgreSQL computed does not match audit/chain.py "
                    "(is the database encoding UTF8?)"
                )
        inserted(records, [row[0] for row in rows])

    # Sent with the transaction's other closing writes when a service transaction closes
    # (config.rows.pipelined_writes); the hashes are checked before the commit either way.
    execute_then(_chaining_sql(), params, then)


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
