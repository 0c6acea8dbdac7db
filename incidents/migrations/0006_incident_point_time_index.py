"""The duplicate search's index on point and time together (PostgreSQL with btree_gist).

The GiST index of 0005 knows only the point: in a city with a year of history PostgreSQL chose between
reading every incident ever reported near the point and every incident of the last hour city-wide, and
each intake paid 3.8 ms (at 80 reports/s, growing with the rate). A GiST index on (point, reported_at)
answers "near here and in the last hour" at once; GiST indexes a timestamp through the btree_gist
extension (contrib, trusted since PostgreSQL 13). Where the extension cannot be created the point index
stays and the search still works, only slower. Built CONCURRENTLY (the migration is not atomic).
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, migrations

INDEX = "incidents_incident_point_time_gist"
OLD = "incidents_incident_point_gist"
log = logging.getLogger(__name__)


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    except DatabaseError as exc:
        log.warning("btree_gist unavailable (%s): the duplicate search keeps the point-only index", exc)
        return
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON incidents_incident "
        "USING gist (point(lon, lat), reported_at)"
    )
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {OLD}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {OLD} ON incidents_incident USING gist (point(lon, lat))"
    )
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("incidents", "0005_incident_point_index")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
