"""The audit log in the admin: read-only, personal numbers redacted in what it shows."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import actions
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

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


_DELETE_DESCRIPTION = actions.delete_selected.short_description  # type: ignore[attr-defined]


@admin.action(permissions=["delete"], description=_DELETE_DESCRIPTION)
def delete_selected(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponse | None:
    """Django's "delete selected" action, in one transaction with its LogEntries and audit rows.

    Django runs list actions outside any transaction: the LogEntries (and so their audit rows) would
    commit before the deletion, and a deletion that fails would still be on the chain.
    """
    with transaction.atomic(using=router.db_for_write(modeladmin.model)):
        return actions.delete_selected(modeladmin, request, queryset)


# Replaces the site-wide action of the same name for every ModelAdmin of the site.
admin.site.add_action(delete_selected, "delete_selected")


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
