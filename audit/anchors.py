"""Anchors: the chain head (sequence, hash, time) written out of the database, at least once a day.

Whoever can write the audit table can also recompute every hash after an edit, so the chain alone
proves nothing against a rewrite. An anchor is a copy of the head kept somewhere else: verification
fails when the record an anchor names is missing or has another hash. Anchors are filed per database
(a test database never anchors the real one) under settings.AUDIT_ANCHOR_DIR; copy them off the host
(the JSON line `audit_anchor` prints is meant for that), or the protection is only as good as the
host's file permissions.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from audit.chain import utc_text
from audit.models import AuditRecord

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def database_label() -> str:
    """A file-name-safe name of the database the chain lives in (vendor, host, port, name)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        parts = ["sqlite", Path(str(db.get("NAME") or "memory")).stem]
    else:
        parts = [
            connection.vendor,
            str(db.get("HOST") or "local"),
            str(db.get("PORT") or ""),
            str(db["NAME"]),
        ]
    return _UNSAFE.sub("_", "-".join(p for p in parts if p))


def anchor_dir(base: Path | str | None = None) -> Path:
    """The folder of this database's anchors."""
    root = Path(base if base is not None else settings.AUDIT_ANCHOR_DIR)
    return root / database_label()


@dataclass(frozen=True)
class Anchor:
    """One anchor: the record `seq` had hash `hash` when it was anchored."""

    path: Path
    seq: int
    hash: str
    at: str
    anchored_at: str


def read_anchors(base: Path | str | None = None) -> list[Anchor]:
    """Every anchor of this database, oldest first; a file that cannot be read is an error, not skipped."""
    folder = anchor_dir(base)
    if not folder.is_dir():
        return []
    anchors = []
    for path in sorted(folder.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            anchors.append(
                Anchor(path, int(body["seq"]), str(body["hash"]), str(body["at"]), str(body["anchored_at"]))
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"anchor {path} is unreadable: {exc}") from None
    return sorted(anchors, key=lambda a: (a.anchored_at, a.seq))


def write_anchor(base: Path | str | None = None, *, now: datetime | None = None) -> dict[str, Any] | None:
    """Write the current head as an anchor file and return it (None when the chain is empty)."""
    last = AuditRecord.objects.order_by("-seq").first()
    if last is None:
        return None
    now = now or datetime.now(UTC)
    body = {
        "database": database_label(),
        "seq": last.seq,
        "hash": last.hash,
        "at": utc_text(last.at),
        "anchored_at": utc_text(now),
    }
    folder = anchor_dir(base)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{now.astimezone(UTC):%Y-%m-%dT%H%M%S.%f}Z-{last.seq}.json"
    # Write then rename, so a reader (or a second worker) never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".anchor-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(body, out, sort_keys=True)
        out.write("\n")
    os.replace(tmp, folder / name)
    return body


_anchored_day: str | None = None


def anchor_tick(*, now: datetime | None = None) -> bool:
    """Write today's anchor (UTC day) unless one exists; run by the background loop every round."""
    global _anchored_day
    now = now or datetime.now(UTC)
    day = f"{now.astimezone(UTC):%Y-%m-%d}"
    if _anchored_day == day:
        return False
    folder = anchor_dir()
    if folder.is_dir() and any(folder.glob(f"{day}T*.json")):
        _anchored_day = day
        return False
    if write_anchor(now=now) is None:
        return False
    _anchored_day = day
    return True
