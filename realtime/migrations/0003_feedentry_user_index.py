"""A feed entry's user is indexed by the unique (user, seq) already: its own index is dropped.

Every event writes one entry per recipient (config/indexes.py)."""

from __future__ import annotations

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from config.indexes import drop_indexes


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("realtime", "0002_connection_wsticket"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="feedentry",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                )
            ],
            database_operations=[
                drop_indexes("realtime_feedentry", [("realtime_feedentry_user_id_17bc8ca6", "user_id")])
            ],
        )
    ]
