"""References to other incidents are checked (and their key-share locks taken) at once, not at commit.

Django makes every foreign key DEFERRABLE INITIALLY DEFERRED on PostgreSQL: the check, and with it a
FOR KEY SHARE lock on the referenced incident, waits until COMMIT. An intake that links an earlier
incident as a possible duplicate, and an order's delivery that records a step on an incident it did not
lock, write rows that reference an incident they hold no lock on; by their commit they hold the feeds of
their events' recipients (the command centre's). An action on that incident locks it first, then those
feeds: each waited for the other and PostgreSQL killed one (a grid worker's report failed with
"deadlock detected"; tests/incidents/test_concurrency.py). Checked at the end of each statement, the
lock comes before the feeds, in the order every transaction keeps: incidents, feeds, audit head.

Altered here: the duplicate links' two keys and the timeline's key to incidents. A later migration that
alters one of these fields makes Django re-create its key as deferred again: re-apply this there.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

TABLES = ("incidents_incident_possible_duplicates", "incidents_incidentlogrecord")


def _set(schema_editor: Any, when: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite checks foreign keys its own way (and runs one writer at a time)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'incidents_incident'::regclass "
            "AND conrelid::regclass::text = ANY(%s) ORDER BY 1, 2",
            [list(TABLES)],
        )
        keys = cursor.fetchall()
    assert {table for table, _name in keys} == set(TABLES), keys
    quote = schema_editor.connection.ops.quote_name
    for table, name in keys:
        schema_editor.execute(
            f"ALTER TABLE {quote(table)} ALTER CONSTRAINT {quote(name)} DEFERRABLE INITIALLY {when}"
        )


def forwards(apps: Any, schema_editor: Any) -> None:
    _set(schema_editor, "IMMEDIATE")


def backwards(apps: Any, schema_editor: Any) -> None:
    _set(schema_editor, "DEFERRED")


class Migration(migrations.Migration):
    dependencies = [("incidents", "0008_category_newest_index")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
