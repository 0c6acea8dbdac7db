"""Admin pages of early warnings: automatic rules are edited here; warnings and their records are read-only.

A warning changes state only through command/warnings.py (two-person rule, timeline, events), so the
admin shows warnings, receipts, CAP messages and firings without letting anyone edit them.
Imported from command/admin.py.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from command.models import (
    EarlyWarning,
    WarningCapMessage,
    WarningLogRecord,
    WarningReceipt,
    WarningRule,
    WarningRuleFiring,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin that lists and shows but never adds, changes or deletes."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


LOG_FIELDS = ("at", "actor", "actor_role", "source", "action", "from_status", "to_status", "reason")


class WarningLogInline(admin.TabularInline):
    model = WarningLogRecord
    fields = LOG_FIELDS
    readonly_fields = LOG_FIELDS
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EarlyWarning)
class EarlyWarningAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "level",
        "type",
        "headline",
        "status",
        "version",
        "origin",
        "effective_at",
        "expires_at",
    ]
    list_filter = ["status", "level", "origin"]
    search_fields = ["headline", "type", "area_desc"]
    date_hierarchy = "created_at"
    exclude = ["area_wkb"]
    inlines = [WarningLogInline]


@admin.register(WarningReceipt)
class WarningReceiptAdmin(ReadOnlyAdmin):
    list_display = ["warning", "user", "department", "version", "notified_at", "delivered_at", "read_at"]
    list_filter = ["department"]
    raw_id_fields = ["warning", "user"]
    search_fields = ["user__username"]


@admin.register(WarningCapMessage)
class WarningCapMessageAdmin(ReadOnlyAdmin):
    list_display = ["identifier", "sender", "msg_type", "direction", "warning", "version", "sent"]
    list_filter = ["direction", "msg_type"]
    search_fields = ["identifier", "sender"]


@admin.register(WarningRule)
class WarningRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "enabled",
        "trigger",
        "category",
        "unit_layer",
        "min_count",
        "window_minutes",
        "level",
    ]
    list_editable = ["enabled"]
    list_filter = ["enabled", "trigger", "unit_layer", "level"]


@admin.register(WarningRuleFiring)
class WarningRuleFiringAdmin(ReadOnlyAdmin):
    list_display = ["rule", "unit_layer", "unit_code", "fired_at", "warning"]
    list_filter = ["rule"]
