"""Seven fewer indexes on incidents: every intake INSERTs a row and every step UPDATEs its status.

The table had 23 indexes. Dropped: the LIKE twins (`varchar_pattern_ops`) of the incident code and the
five territory codes, which only a LIKE 'prefix%' would read (the code is matched exactly, the areas by
equality, text search with `icontains`), and the category's own index, which the (category,
-reported_at) index serves. See config/indexes.py.
"""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

from config.indexes import drop_indexes

TABLE = "incidents_incident"
LIKE_TWINS = [
    ("incidents_incident_code_e0c5565e_like", "code varchar_pattern_ops"),
    ("incidents_incident_district_code_e0fc8623_like", "district_code varchar_pattern_ops"),
    ("incidents_incident_street_code_ac34688d_like", "street_code varchar_pattern_ops"),
    ("incidents_incident_community_code_3d8ee624_like", "community_code varchar_pattern_ops"),
    ("incidents_incident_grid_code_16fa34e1_like", "grid_code varchar_pattern_ops"),
    ("incidents_incident_block_code_f21af24b_like", "block_code varchar_pattern_ops"),
]
CATEGORY = [("incidents_incident_category_id_adb8aa70", "category_id")]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("incidents", "0006_incident_point_time_index")]

    operations = [
        drop_indexes(TABLE, LIKE_TWINS),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="incident",
                    name="category",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        to="incidents.category",
                        verbose_name="category",
                    ),
                )
            ],
            database_operations=[drop_indexes(TABLE, CATEGORY)],
        ),
    ]
