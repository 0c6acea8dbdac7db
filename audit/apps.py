"""The audit app: one append-only, hash-chained record of every state change and every reveal."""

from __future__ import annotations

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
        if getattr(settings, "AUDIT_ANCHOR_DAILY", False):
            from audit.anchors import anchor_tick
            from realtime.hooks import register_tick

            register_tick("audit_anchor", anchor_tick)


def _admin_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    from audit.services import audit_admin_log_entry

    audit_admin_log_entry(instance)
