"""How the product talks to PostgreSQL: parameters bound by the server, statements prepared and reused."""

from __future__ import annotations

import pytest
from django.db import connection

from incidents.models import Incident
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


def test_the_duplicate_search_reads_the_point_index(demo_city):
    """The intake's duplicate search asks the GiST index on (point, reported_at) for the rows near and recent.

    Without it PostgreSQL read every incident of the family reported in the window (thousands in a storm),
    or, with the point alone, every incident ever reported near the point.
    """
    from django.test.utils import CaptureQueriesContext

    with connection.cursor() as cursor:
        # Point and time in one GiST index (migration 0006, btree_gist), in place of the point-only one.
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'incidents_incident_point%'")
        assert [row[0] for row in cursor.fetchall()] == ["incidents_incident_point_time_gist"], (
            "migration 0006 needs PostgreSQL's btree_gist extension (Debian: postgresql-contrib)"
        )
    report(), report()
    with CaptureQueriesContext(connection) as queries:
        third = report()
    assert third.possible_duplicates.count() == 2
    (search,) = [q["sql"] for q in queries.captured_queries if "<@ box(" in q["sql"]]
    with connection.cursor() as cursor:
        # A test database holds a handful of rows (a sequential scan wins there): show that the search's
        # condition is one the index can answer, which a plain lat/lon range is not.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + search)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "incidents_incident_point_time_gist" in plan, plan
    # Both conditions are answered by the index: near the point and in the window.
    lines = plan.splitlines()
    scan = next(i for i, line in enumerate(lines) if "incidents_incident_point_time_gist" in line)
    condition = next(line for line in lines[scan:] if "Index Cond" in line)
    assert "<@" in condition and "reported_at" in condition, plan


def test_the_published_mark_reads_the_primary_key_only():
    """Marking pushed events published reads them by id, not through the partial index of unpublished ones.

    That index keeps an entry for every event published since the last VACUUM: the prepared (generic) plan
    of "... AND published_at IS NULL" ANDed it with the primary key and read all of them, after every
    committed state change.
    """
    from django.utils import timezone

    from realtime.models import Event
    from realtime.publish import _mark_published

    events = Event.objects.bulk_create(
        [Event(name="warning.issued", version=1, at=timezone.now(), data={}) for _ in range(3000)]
    )
    ids = [e.pk for e in events]
    for start in range(0, len(ids), 500):
        _mark_published(ids[start : start + 500])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE realtime_event")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    for _ in range(6):  # prepared on the fifth run (prepare_threshold = 5)
        _mark_published(ids[:3])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE %s", ["%SET published_at%"]
        )
        (name,) = cursor.fetchone()
        cursor.execute(f"EXPLAIN EXECUTE {name}(now(), ARRAY[{ids[0]}, {ids[1]}]::bigint[])")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "realtime_event_pkey" in plan and "event_unpublished_idx" not in plan, plan
    assert Event.objects.filter(pk__in=ids, published_at__isnull=True).count() == 0


def test_a_storm_at_one_spot_links_the_nearest_reports_read_in_index_order(demo_city):
    """Fifty open incidents near a spot: the new report links the 20 nearest, found by the index's order."""
    import uuid

    from django.test.utils import CaptureQueriesContext

    from command.models import User
    from incidents.services import ReportInput, report_submit
    from tests.support.factories import first_grid_of, point_in

    reporter = User.objects.get(username="grid01")
    lon, lat = point_in(first_grid_of("grid01"))

    def at(metres_north: float) -> Incident:
        data = ReportInput(category="UM02", description="积水", lon=lon, lat=lat + metres_north / 111_000)
        return report_submit(reporter=reporter, data=data, idempotency_key=uuid.uuid4().hex).incident

    by_distance = [at(1.5 * (n + 1)) for n in range(50)]  # 1.5 m … 75 m north, all within 100 m
    threshold = connection.connection.prepare_threshold
    with CaptureQueriesContext(connection) as queries:
        newest = at(0.0)
    assert connection.connection.prepare_threshold == threshold, "restored after the search"
    (search,) = [q["sql"] for q in queries.captured_queries if "<@ box(" in q["sql"]]
    assert "<->" in search and "LIMIT 40" in search, search
    linked = set(newest.possible_duplicates.values_list("pk", flat=True))
    assert linked == {i.pk for i in by_distance[:20]}


def test_the_written_tables_carry_no_index_that_nothing_reads():
    """Every intake and step writes incidents, feed entries and audit rows: each index is paid per write.

    Migrations incidents 0007, realtime 0003 and audit 0003 dropped Django's LIKE twins of exactly
    matched codes and the foreign-key indexes a composite index already serves (config/indexes.py).
    """

    def indexes(table: str) -> dict[str, str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
            return dict(cursor.fetchall())

    incident = indexes("incidents_incident")
    assert not [name for name, sql in incident.items() if "pattern_ops" in sql], incident
    assert len(incident) == 16, sorted(incident)
    # The category is still served, by the composite index that starts with it (migration 0008).
    assert any("(category_id, reported_at DESC, id DESC)" in sql for sql in incident.values()), incident
    assert not [sql for sql in indexes("audit_auditrecord").values() if "pattern_ops" in sql]
    entries = indexes("realtime_feedentry")
    assert sorted(entries) == sorted(
        ["realtime_feedentry_pkey", "feed_entry_user_seq", "realtime_feedentry_event_id_eded3026"]
    ), entries


def test_a_category_list_reads_its_own_index_after_a_storm_of_another_category(demo_city):
    """20,000 reports of one kind in the last hours (a storm), then the list of another category: its
    first page comes from the (category, -reported_at, -id) index in order (migration 0008), not from
    walking the storm's rows backwards in time (74 ms on the benchmark's database, 0.06 ms with it)."""
    from datetime import timedelta

    from django.utils import timezone

    from incidents.models import Category

    seed = report(category="UM04", description="垃圾堆放")
    columns = [str(f.column) for f in Incident._meta.concrete_fields if not f.primary_key]
    copied = {"code": "code || '-' || g", "reported_at": "now() - g * interval '1 second'"}
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO incidents_incident ({', '.join(columns)}) "
            f"SELECT {', '.join(copied.get(c, c) for c in columns)} "
            "FROM incidents_incident, generate_series(1, 20000) AS g WHERE id = %s",
            [seed.pk],
        )
        cursor.execute("ANALYZE incidents_incident")
    other = Category.objects.get(code="AC05")
    since = timezone.now() - timedelta(days=7)
    page = Incident.objects.filter(category=other, reported_at__gte=since).order_by("-reported_at", "-id")
    plan = page[:51].explain()
    assert "incident_category_newest" in plan and "Sort" not in plan, plan
