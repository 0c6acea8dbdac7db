"""The hash chain itself: canonical serialisation and the hash of one record (no database access).

Version 1 of the serialisation is a JSON object of the record's fields with sorted keys, no spaces,
UTF-8, times in UTC with microseconds and the data as its canonical JSON text. The hash is
SHA-256(bytes of the previous hash ‖ serialisation), hex. Anyone can recompute it from a database dump
with this module alone; changing it means a new version number and verifying old rows with the old one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

CHAIN_VERSION = 1


class RecordLike(Protocol):
    """The fields of an audit record that the hash covers."""

    seq: int
    at: dt.datetime
    actor_id: int | None
    actor_username: str
    actor_role: str
    source: str
    action: str
    object_type: str
    object_id: str
    from_status: str
    to_status: str
    reason: str
    data: str
    prev_hash: str


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an audit record")


def canonical_json(value: Mapping[str, Any] | list[Any] | None) -> str:
    """Deterministic JSON text: sorted keys, no whitespace, UTF-8 characters kept, no NaN."""
    return json.dumps(
        value if value is not None else {},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def utc_text(moment: dt.datetime) -> str:
    """A time as UTC text with microseconds, the same before and after a database round trip."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def serialise(record: RecordLike) -> bytes:
    """The canonical bytes of a record (everything but its own hash and the previous hash)."""
    body = {
        "v": CHAIN_VERSION,
        "seq": int(record.seq),
        "at": utc_text(record.at),
        "actor_id": int(record.actor_id) if record.actor_id is not None else None,
        "actor_username": record.actor_username,
        "actor_role": record.actor_role,
        "source": record.source,
        "action": record.action,
        "object_type": record.object_type,
        "object_id": record.object_id,
        "from_status": record.from_status,
        "to_status": record.to_status,
        "reason": record.reason,
        "data": record.data,
    }
    return canonical_json(body).encode("utf-8")


# A stand-in for the sequence number while a record is serialised around it (see `serialise_around_seq`).
_SEQ_MARK = -918273645546372819


def serialise_around_seq(record: RecordLike) -> tuple[bytes, bytes]:
    """The canonical bytes of a record split where its sequence number goes: (before, after).

    ``before + str(seq).encode() + after == serialise(record)`` for any seq. PostgreSQL writers number
    records under the head's lock inside one statement and hash them there with this split (SHA-256 over
    the previous hash's bytes, before, the number's text, after); the result is the same hash as
    `record_hash`, and the writer checks it against this module on the way back.
    """
    saved = record.seq
    record.seq = _SEQ_MARK
    try:
        text = serialise(record)
    finally:
        record.seq = saved
    marker = f'"seq":{_SEQ_MARK}'.encode()
    if text.count(marker) != 1:  # cannot happen: inside a JSON string every quote is escaped
        raise ValueError("the sequence number's place in the serialisation is ambiguous")
    before, _marker, after = text.partition(marker)
    return before + b'"seq":', after


def hash_around_seq(prev_hash: str, before: bytes, seq: int, after: bytes) -> str:
    """`record_hash` of a record serialised by `serialise_around_seq`, numbered seq after prev_hash."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + before + str(int(seq)).encode() + after).hexdigest()


def record_hash(record: RecordLike) -> str:
    """SHA-256 over the previous record's hash and this record's canonical serialisation."""
    digest = hashlib.sha256()
    digest.update(bytes.fromhex(record.prev_hash))
    digest.update(serialise(record))
    return digest.hexdigest()
