"""Migrations that drop indexes the service path pays for on every write and no query uses.

Each INSERT into a table, and each UPDATE that changes an indexed column (an incident's status does at
every step), writes one entry into every index of the table. Django adds some that nothing reads: the
`varchar_pattern_ops` twin of every indexed code on PostgreSQL (for LIKE 'prefix%', which no query of
ours does: codes are matched exactly, text search is `icontains`), and a foreign key's own index where a
composite index already starts with that column. `drop_indexes` drops them CONCURRENTLY on PostgreSQL
(the migration must be `atomic = False`), plainly elsewhere, and builds them again when reversed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import migrations


def drop_indexes(table: str, indexes: Sequence[tuple[str, str]]) -> migrations.RunPython:
    """An operation dropping `indexes` of `table`, each (name, column list as in CREATE INDEX)."""

    def forwards(apps: Any, schema_editor: Any) -> None:
        concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
        for name, _columns in indexes:
            schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {name}")

    def backwards(apps: Any, schema_editor: Any) -> None:
        postgresql = schema_editor.connection.vendor == "postgresql"
        for name, columns in indexes:
            if "_pattern_ops" in columns and not postgresql:
                continue  # the LIKE twins exist on PostgreSQL only
            concurrently = "CONCURRENTLY " if postgresql else ""
            schema_editor.execute(f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {table} ({columns})")

    return migrations.RunPython(forwards, backwards, elidable=False)
