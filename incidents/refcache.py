"""Reference data kept per process, re-read when its version moves.

Every intake and action looks up the deadline policies, the linkage rules, categories, grades, the
departments' jurisdictions and who receives its events. Inside a service call
(a memo scope, config/memo.py) the first lookup reads one row — the reference data version and the
territory data version together — and the process's copy is used while both are unchanged. A save or
delete of the underlying rows through the ORM bumps the version in the writer's transaction
(`reference_changed`, connected in the apps' `ready`), so every process sees the edit from the commit
on. Outside a service call nothing is kept. Rows changed behind the ORM's back (raw SQL, `bulk_*`,
`QuerySet.update`) do not bump it: code that does so calls `reference_changed()` itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.db import connections
from django.db.models import Model

from config.memo import in_scope, memoised, remember
from gis.models import TerritoryVersion
from incidents.models import ReferenceVersion

T = TypeVar("T")

_lock = threading.Lock()
_kept: dict[str, tuple[Hashable, Any]] = {}


def forget_all() -> None:
    """Drop every kept value (after a bump in this process; tests after flushing the database)."""
    with _lock:
        _kept.clear()


def versions_sql() -> str:
    """SQL for the two versions (reference, territory), for a statement that reads them on its way.

    A service's first statement (the incident's lock, the idempotency check) carries them and passes
    them to `remember_versions`, which spares the scope its own round trip for them.
    """
    ref, territory = ReferenceVersion._meta.db_table, TerritoryVersion._meta.db_table
    return f"(SELECT version FROM {ref} WHERE id = 1), (SELECT version FROM {territory} WHERE id = 1)"


def _as_versions(ref: Any, territory: Any) -> tuple[int, int] | None:
    if ref is None:
        return None  # no version row (an emptied database): keep nothing
    return int(ref), int(territory or 0)


def remember_versions(ref: Any, territory: Any) -> None:
    """The versions read by the caller's own statement, for the rest of the service call."""
    remember("reference_versions", _as_versions(ref, territory))


def _versions() -> tuple[int, int] | None:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT {versions_sql()}")
        row = cursor.fetchone()
    return None if row is None else _as_versions(row[0], row[1])


def kept(kind: str, compute: Callable[[], T]) -> T:
    """compute()'s value, kept by the process while the versions stay; afresh outside a service call."""
    if not in_scope():
        return compute()
    version = memoised("reference_versions", _versions)
    if version is None:
        return memoised(kind, compute)
    with _lock:
        hit = _kept.get(kind)
    if hit is not None and hit[0] == version:
        value: T = hit[1]
        return value
    value = compute()
    with _lock:
        _kept[kind] = (version, value)
    return value


def reference_changed(*, using: str = "default") -> None:
    """Bump the reference data version in the current transaction (signal receiver, or call it).

    Fixture loads (`loaddata`, raw saves) bump it too: a running process must not keep what they replaced.
    """
    table = ReferenceVersion._meta.db_table
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, version) VALUES (1, 1) "
            f"ON CONFLICT (id) DO UPDATE SET version = {table}.version + 1"
        )
    forget_all()


def connect(*models: type[Model], ignore_fields: frozenset[str] = frozenset()) -> None:
    """Bump the version whenever one of `models` is saved or deleted through the ORM.

    A save that names only `ignore_fields` in `update_fields` (a user's login, say) does not bump it.
    """
    from django.db.models.signals import post_delete, post_save

    def saved(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
        if ignore_fields and update_fields is not None and set(update_fields) <= ignore_fields:
            return
        _receiver(sender, **kwargs)

    for model in models:
        for name, signal, receiver in (("save", post_save, saved), ("delete", post_delete, _receiver)):
            signal.connect(
                receiver,
                sender=model,
                weak=False,
                dispatch_uid=f"reference_changed_{name}_{model._meta.label_lower}",
            )


def connect_m2m(*through_models: type[Model]) -> None:
    """Bump the version whenever rows of one of these many-to-many tables are added, removed or cleared."""
    from django.db.models.signals import m2m_changed

    for through in through_models:
        m2m_changed.connect(
            _m2m_receiver,
            sender=through,
            weak=False,
            dispatch_uid=f"reference_changed_m2m_{through._meta.label_lower}",
        )


def _m2m_receiver(sender: Any, action: str, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        reference_changed(using=kwargs.get("using") or "default")


def _receiver(sender: Any, **kwargs: Any) -> None:
    reference_changed(using=kwargs.get("using") or "default")
