"""The (category, newest first) index gains the id, the listing's tie-break: its order is the whole order.

The incident list is ordered by (-reported_at, -id) (cursor pagination). With (category_id,
reported_at DESC) PostgreSQL still had to sort ties on id, and it preferred walking the time index
backwards, filtering by category: it assumes the category's rows are spread evenly over time. After a
storm of one kind (on the benchmark's database, 89,000 rubbish reports in the last hours) a list of
another category's last 7 days walked all of them first: 74 ms. With the id in the index one range scan
gives the first page in order (0.06 ms for its ids). For whole rows PostgreSQL takes it when random reads
are priced for SSD (`random_page_cost` 1.1: 44 → 1.7 ms); at the default 4 it still prefers the time
index, whose rows lie in heap order (docs/performance.md, "Listing"). Same number of indexes (the old one
goes), so an intake writes no more. Built CONCURRENTLY on PostgreSQL (the migration is not atomic).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

TABLE = "incidents_incident"
OLD = "incidents_i_categor_b10f57_idx"
NEW = "incident_category_newest"


def _swap(schema_editor: Any, create: tuple[str, str], drop: str) -> None:
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    name, columns = create
    schema_editor.execute(f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {TABLE} ({columns})")
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {drop}")


def forwards(apps: Any, schema_editor: Any) -> None:
    _swap(schema_editor, (NEW, "category_id, reported_at DESC, id DESC"), OLD)


def backwards(apps: Any, schema_editor: Any) -> None:
    _swap(schema_editor, (OLD, "category_id, reported_at DESC"), NEW)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("incidents", "0007_fewer_incident_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
            state_operations=[
                migrations.RemoveIndex(model_name="incident", name=OLD),
                migrations.AddIndex(
                    model_name="incident",
                    index=models.Index(fields=["category", "-reported_at", "-id"], name=NEW),
                ),
            ],
        )
    ]
