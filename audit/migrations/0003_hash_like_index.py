"""The audit hash is unique (and so indexed); its LIKE twin is read by nothing (config/indexes.py)."""

from __future__ import annotations

from django.db import migrations

from config.indexes import drop_indexes


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("audit", "0002_append_only_trigger")]

    operations = [
        drop_indexes("audit_auditrecord", [("audit_auditrecord_hash_87b6f64b_like", "hash varchar_pattern_ops")])
    ]
