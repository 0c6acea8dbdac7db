from django.contrib import admin

from gis.models import TerritoryUnit, TerritoryVersion


@admin.register(TerritoryUnit)
class TerritoryUnitAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "layer", "parent", "area_m2", "version"]
    list_filter = ["layer"]
    search_fields = ["code", "name"]
    raw_id_fields = ["parent"]
    exclude = ["geometry_wkb"]
    readonly_fields = ["min_lon", "min_lat", "max_lon", "max_lat", "area_m2", "version"]


@admin.register(TerritoryVersion)
class TerritoryVersionAdmin(admin.ModelAdmin):
    list_display = ["version", "updated_at"]
