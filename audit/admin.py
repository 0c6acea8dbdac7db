"""The audit log in the admin: read-only, personal numbers redacted in what it shows."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditRecord
from config.security import redact_text

SHOWN = (
    "seq",
    "at",
    "actor_id",
    "actor_username",
    "actor_role",
    "source",
    "action",
    "object_type",
    "object_id",
    "from_status",
    "to_status",
    "shown_reason",
    "shown_data",
    "prev_hash",
    "hash",
)


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    list_display = [
        "seq",
        "at",
        "actor_username",
        "actor_role",
        "source",
        "action",
        "object_type",
        "object_id",
    ]
    list_filter = ["source", "actor_role", "object_type"]
    search_fields = ["action", "object_id", "actor_username"]
    date_hierarchy = "at"
    actions = None
    fields = SHOWN
    readonly_fields = SHOWN

    @admin.display(description="reason")
    def shown_reason(self, obj: AuditRecord) -> str:
        return redact_text(obj.reason)

    @admin.display(description="data")
    def shown_data(self, obj: AuditRecord) -> str:
        return redact_text(obj.data)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
