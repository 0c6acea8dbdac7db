from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    verbose_name = "Incidents"

    def ready(self) -> None:
        from gis.models import TerritoryUnit
        from incidents import audience, refcache, ws
        from incidents.models import Category, DeadlinePolicy, Grade

        # Kept per process by incidents/refcache.py: edits bump the reference data version.
        refcache.connect(DeadlinePolicy, Category, Grade, TerritoryUnit)
        audience.connect_users()

        ws.register()
