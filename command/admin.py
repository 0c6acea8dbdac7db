from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.translation import gettext_lazy as _

from command import admin_warnings  # noqa: F401  (registers the warning tables)
from command.models import Department, LinkageRule, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "first_name", "role", "department", "is_active"]
    list_filter = ["role", "department", "is_active"]
    fieldsets = (
        *BaseUserAdmin.fieldsets,  # type: ignore[misc]
        (_("Role and unit"), {"fields": ["role", "department", "phone", "grids"]}),
    )
    raw_id_fields = ["grids"]


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "kind", "active"]
    list_filter = ["kind", "active"]
    search_fields = ["code", "name"]
    raw_id_fields = ["jurisdiction"]


@admin.register(LinkageRule)
class LinkageRuleAdmin(admin.ModelAdmin):
    list_display = [
        "position",
        "name",
        "enabled",
        "is_default",
        "category",
        "grade",
        "lead_department",
        "lead_kind",
    ]
    list_editable = ["enabled"]
    ordering = ["position"]
    raw_id_fields = ["territory"]
    filter_horizontal = ["assist_departments"]
