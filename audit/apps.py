"""The audit app: one append-only, hash-chained record of every state change and every reveal."""

from __future__ import annotations

import functools
from typing import Any

from django.apps import AppConfig
from django.conf import settings


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from django.contrib.admin.models import LogEntry
        from django.db.models.signals import post_save

        # The admin writes a LogEntry inside its own transaction for every add, change and delete; it is
        # the one hook that records configuration changes (users, roles, rules) without touching the
        # apps that own those models.
        post_save.connect(_admin_change, sender=LogEntry, dispatch_uid="audit_admin_change")
        _audit_bulk_log_entries()
        if getattr(settings, "AUDIT_ANCHOR_DAILY", False):
            from audit.anchors import anchor_tick
            from realtime.hooks import register_tick

            register_tick("audit_anchor", anchor_tick)


def _admin_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    from audit.services import audit_admin_log_entry

    audit_admin_log_entry(instance)


def _audit_bulk_log_entries() -> None:
    """Put LogEntries that the admin writes in bulk on the chain as well.

    Since Django 5.1 every admin log goes through `LogEntryManager.log_actions`, which saves a single
    entry (post_save fires) but writes several with `bulk_create`, which sends no signal: that is the
    path of the "delete selected" action of every ModelAdmin. Wrapping that one method covers every
    admin class and admin site at once; entries already recorded through post_save carry a mark and
    are not recorded twice. The entries and their audit rows commit together.
    """
    from django.contrib.admin.models import LogEntryManager
    from django.db import transaction

    original = LogEntryManager.log_actions
    if getattr(original, "audited", False):
        return

    @functools.wraps(original)
    def log_actions(self: Any, *args: Any, **kwargs: Any) -> Any:
        from audit.services import audit_admin_log_entries

        with transaction.atomic():
            result = original(self, *args, **kwargs)
            audit_admin_log_entries(result if isinstance(result, list) else [result])
        return result

    log_actions.audited = True  # type: ignore[attr-defined]
    setattr(LogEntryManager, "log_actions", log_actions)  # noqa: B010  (mypy refuses a method assignment)
