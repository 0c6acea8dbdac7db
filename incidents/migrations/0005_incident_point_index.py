"""A GiST index on each incident's point (PostgreSQL), for the duplicate search of every intake.

Without it the search read every incident of the category family reported in the last hour and
filtered them by distance: in a storm of thousands of reports an hour each intake read thousands of rows.
Built CONCURRENTLY (the migration is not atomic) so a live table keeps taking reports meanwhile.
SQLite has no GiST: the embedded database keeps the plain range filter.
"""

from __future__ import annotations

from django.db import migrations

INDEX = "incidents_incident_point_gist"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON incidents_incident USING gist (point(lon, lat))"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("incidents", "0004_reference_version")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
