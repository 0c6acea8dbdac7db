from django.contrib import admin

from incidents.models import Category, DeadlinePolicy, Grade


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "family", "parent", "auto_dispatch", "active"]
    list_filter = ["family", "auto_dispatch", "active"]
    search_fields = ["code", "name"]


@admin.register(Grade)
class GradeAdmin(admin.ModelAdmin):
    list_display = ["level", "code", "name", "color"]


@admin.register(DeadlinePolicy)
class DeadlinePolicyAdmin(admin.ModelAdmin):
    list_display = ["stage", "category", "grade", "area", "duration", "unit", "warn_fraction"]
    list_filter = ["stage", "unit"]
    raw_id_fields = ["area"]
