"""How the product talks to PostgreSQL: parameters bound by the server, statements prepared and reused."""

from __future__ import annotations

import pytest
from django.db import connection

from incidents.services import incident_act
from tests.support.factories import report

pytestmark = [pytest.mark.django_db]


def _prepared() -> list[str]:
    """The statements PostgreSQL holds prepared for this test's session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_service_path_runs_on_prepared_statements(demo_city):
    from command.models import User

    assert connection.settings_dict["OPTIONS"].get("prepare_threshold") == 5
    operator = User.objects.get(username="operator")
    before = len(_prepared())
    # psycopg prepares a statement the fifth time one connection runs it (prepare_threshold = 5).
    for _ in range(6):
        incident = report()
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
    statements = _prepared()
    assert len(statements) > before
    # The intake's and the action's own statements are among them, with server-side parameters ($1 …).
    assert any('INSERT INTO "incidents_incident"' in s and "$1" in s for s in statements), statements
    assert any('FROM "incidents_incident"' in s and "FOR UPDATE" in s for s in statements), statements
