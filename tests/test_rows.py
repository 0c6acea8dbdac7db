"""The service path's prepared row reads and writes (config/rows.py), the incident's changed-column save."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditRecord
from command.models import DispatchOrder, User
from config.rows import insert_rows, lock_row
from incidents.models import Incident, IncidentLogRecord, Source
from incidents.services import incident_act, opened_in_this_transaction
from realtime.models import Event
from tests.support.factories import report


def _columns(obj: object, model: type[Model]) -> dict[str, object]:
    return {f.attname: getattr(obj, f.attname) for f in model._meta.concrete_fields}


@pytest.mark.embedded
@pytest.mark.django_db
def test_lock_row_reads_the_row_as_the_orm_does(demo_city):
    incident = report()
    with transaction.atomic():
        locked = lock_row(Incident, incident.pk)
    assert _columns(locked, Incident) == _columns(Incident.objects.get(pk=incident.pk), Incident)
    assert isinstance(locked.geocode, dict) and locked.geocode["grid"]["code"] == incident.grid_code
    assert locked.reported_at.tzinfo is not None and not locked._state.adding
    with transaction.atomic(), pytest.raises(Incident.DoesNotExist):
        lock_row(Incident, 10**12)


@pytest.mark.django_db(transaction=True)
def test_lock_row_holds_the_row_until_commit(demo_city):
    incident = report()
    held, checked = threading.Event(), threading.Event()
    seen: list[str] = []

    def other() -> None:
        assert held.wait(10)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT 1 FROM incidents_incident WHERE id = %s FOR UPDATE NOWAIT", [incident.pk]
                )
            seen.append("got it")
        except Exception as exc:
            seen.append(type(exc).__name__)
        finally:
            connections.close_all()
            checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with transaction.atomic():
        lock_row(Incident, incident.pk)
        held.set()
        assert checked.wait(10)
    thread.join(10)
    assert seen == ["OperationalError"], "another transaction could not take the locked row"


@pytest.mark.embedded
@pytest.mark.django_db
def test_insert_rows_writes_what_the_orm_would_and_sets_the_keys(demo_city):
    incident = report()
    operator = User.objects.get(username="operator")
    now = timezone.now()
    with transaction.atomic():
        records = [
            IncidentLogRecord(
                incident=incident,
                at=now,
                actor=operator if n else None,
                actor_role="operator" if n else "system",
                source=Source.API,
                action=f"note{n}",
                data={"n": n, "text": '现场 "引号" 与 \' 撇号', "nested": [1, {"a": None}]},
            )
            for n in range(3)
        ]
        insert_rows(records)
    assert all(r.pk is not None and not r._state.adding for r in records)
    for record in records:
        assert _columns(IncidentLogRecord.objects.get(pk=record.pk), IncidentLogRecord) == _columns(
            record, IncidentLogRecord
        )
    with transaction.atomic():
        event = Event(name="incident.updated", version=1, at=now, data={"id": incident.pk})
        insert_rows([event])
    assert Event.objects.get(pk=event.pk).data == {"id": incident.pk}
    insert_rows([])  # nothing to write is fine


@pytest.mark.django_db
def test_several_rows_go_as_one_array_per_column_with_one_text_for_any_count(demo_city):
    """On PostgreSQL 2, 3 or 7 rows: the same statement, one parameter per field (psycopg caches no
    statement of over 50), the keys in the rows' order, every value as the ORM reads it back."""
    incident = report()
    now = timezone.now()
    sent: list[tuple[str, int]] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "incidents_incidentlogrecord" in sql:
            sent.append((sql, len(params)))
        return execute(sql, params, many, context)

    written: list[IncidentLogRecord] = []
    for count in (2, 3, 7):
        records = [
            IncidentLogRecord(
                incident=incident,
                at=now,
                actor=None,  # a column of nothing but NULLs
                actor_role="system",
                source=Source.SYSTEM,
                action=f"n{count}-{n}",
                to_status="x" * IncidentLogRecord._meta.get_field("to_status").max_length,
                reason="理由" * 200,
                data={"n": n, "list": [n, None]},
            )
            for n in range(count)
        ]
        with transaction.atomic(), connection.execute_wrapper(spy):
            insert_rows(records)
        written.extend(records)
    fields = len(IncidentLogRecord._meta.concrete_fields) - 1
    assert len({sql for sql, _n in sent}) == 1 and {n for _sql, n in sent} == {fields}
    assert "UNNEST" in sent[0][0]
    keys = [r.pk for r in written]
    assert keys == sorted(keys)  # the keys came back in the rows' order
    stored = {r.pk: r for r in IncidentLogRecord.objects.filter(pk__in=keys)}
    for record in written:
        assert _columns(stored[record.pk], IncidentLogRecord) == _columns(record, IncidentLogRecord)


@pytest.mark.embedded
@pytest.mark.django_db
def test_an_action_writes_only_the_incident_columns_it_changed(demo_city):
    incident = report()
    operator = User.objects.get(username="operator")
    # Another writer changes a column the action does not touch, after the incident was read.
    Incident.objects.filter(pk=incident.pk).update(evaluation_comment="written by someone else")
    with CaptureQueriesContext(connection) as queries:
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
    (update,) = [q["sql"] for q in queries.captured_queries if 'UPDATE "incidents_incident"' in q["sql"]]
    assigned = update.split('UPDATE "incidents_incident" SET ', 1)[1].split(" WHERE ", 1)[0]
    assert '"status"' in assigned and '"updated_at"' in assigned
    for untouched in ('"geocode"', '"description"', '"code"', '"evaluation_comment"', '"lon"'):
        assert untouched not in assigned, update
    fresh = Incident.objects.get(pk=incident.pk)
    assert fresh.status == "accepted" and fresh.evaluation_comment == "written by someone else"


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_change_made_inside_the_geocode_dict_is_saved(demo_city):
    incident = Incident.objects.get(pk=report().pk)
    incident.geocode["note"] = "changed in place"
    incident.save()
    assert Incident.objects.get(pk=incident.pk).geocode["note"] == "changed in place"
    incident.save()  # nothing changed since: updated_at only, no error
    assert Incident.objects.get(pk=incident.pk).geocode["note"] == "changed in place"
    incident.geocode["note"] = "and again"  # the snapshot taken at the save is a copy, not this dict
    incident.save()
    assert Incident.objects.get(pk=incident.pk).geocode["note"] == "and again"


@pytest.mark.embedded
@pytest.mark.django_db
def test_dispatch_through_the_prepared_rows_makes_three_orders(demo_city):
    """report → accept → register of a fire: the orders inserted in one statement carry their keys."""
    operator = User.objects.get(username="operator")
    incident = report(category="AC01", description="厂房起火")
    incident_act(incident_id=incident.pk, actor=operator, action="accept")
    incident_act(incident_id=incident.pk, actor=operator, action="register")
    orders = list(DispatchOrder.objects.filter(incident=incident).order_by("pk"))
    assert len(orders) == 3 and [o.role for o in orders].count("lead") == 1
    created = Event.objects.filter(name="order.created", data__incident_id=incident.pk)
    assert sorted(e.data["id"] for e in created) == [o.pk for o in orders]


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_partly_read_incident_saves_what_it_read_and_changed(demo_city):
    incident = report()
    partial = Incident.objects.only("id", "status", "updated_at").get(pk=incident.pk)
    partial.status = "accepted"
    partial.save()  # writes status (and updated_at), does not read or write the columns never read
    assert partial.get_deferred_fields()
    fresh = Incident.objects.get(pk=incident.pk)
    assert fresh.status == "accepted" and fresh.description == incident.description


@pytest.mark.django_db(transaction=True)
def test_the_prepared_rows_refuse_what_the_orm_refuses(demo_city):
    from django.db.transaction import TransactionManagementError

    incident = report()
    with pytest.raises(TransactionManagementError):
        lock_row(Incident, incident.pk)  # outside a transaction: a lock would hold nothing
    with pytest.raises(ValueError, match="primary keys"):
        insert_rows([Event(pk=1, name="incident.updated", version=1, at=timezone.now(), data={})])


@pytest.mark.django_db
def test_an_action_reads_its_incident_and_reporters_in_one_statement(demo_city):
    from config.rows import lock_row_with
    from incidents.models import Report

    incident = report()
    with transaction.atomic():
        locked, (reporters,) = lock_row_with(
            Incident,
            incident.pk,
            "ARRAY(SELECT reporter_id FROM incidents_report WHERE incident_id = incidents_incident.id)",
        )
    assert locked.pk == incident.pk and reporters == [Report.objects.get(incident=incident).reporter_id]
    operator = User.objects.get(username="operator")
    with CaptureQueriesContext(connection) as queries:
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
    reads = [q["sql"] for q in queries.captured_queries if "incidents_report" in q["sql"]]
    assert len(reads) == 1 and "FOR UPDATE" in reads[0], reads


@pytest.mark.django_db
def test_intake_and_actions_read_the_reference_versions_on_their_first_statement(demo_city):
    """No service call spends a round trip of its own on the versions (incidents/refcache.py)."""
    from incidents.models import ReferenceVersion

    version = ReferenceVersion._meta.db_table
    report()  # the kept maps are filled
    with CaptureQueriesContext(connection) as intake:
        incident = report(key="versions-on-the-way")
    operator = User.objects.get(username="operator")
    with CaptureQueriesContext(connection) as action:
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
    for name, queries, carrier in (("intake", intake, "idempotency_key"), ("accept", action, "FOR UPDATE")):
        reads = [q["sql"] for q in queries.captured_queries if version in q["sql"]]
        assert len(reads) == 1 and carrier in reads[0], (name, reads)
    # A replayed key still answers from the original, with the versions read on the way.
    assert report(key="versions-on-the-way").pk == incident.pk


@pytest.mark.django_db
def test_a_step_writes_the_incident_and_its_timeline_row_in_one_statement(demo_city):
    from config.rows import update_row_and_insert

    incident = report()
    operator = User.objects.get(username="operator")
    with CaptureQueriesContext(connection) as queries:
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
    writes = [q["sql"] for q in queries.captured_queries if 'UPDATE "incidents_incident"' in q["sql"]]
    assert len(writes) == 1 and 'INSERT INTO "incidents_incidentlogrecord"' in writes[0], writes
    assert not [
        q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "incidents_incidentlog')
    ]
    fresh = Incident.objects.get(pk=incident.pk)
    assert fresh.status == "accepted" and fresh.timeline.order_by("-pk").first().action == "accept"
    # A row that is not there: nothing inserted either.
    with transaction.atomic():
        gone = Incident.objects.get(pk=incident.pk)
        gone.pk = 10**12
        gone._state.adding = False
        record = IncidentLogRecord(
            incident_id=incident.pk, at=timezone.now(), actor_role="system", source=Source.SYSTEM, action="x"
        )
        before = IncidentLogRecord.objects.count()
        with pytest.raises(Incident.DoesNotExist):  # caught inside the transaction: nothing is left
            update_row_and_insert(gone, ["status", "updated_at"], [record])
        assert IncidentLogRecord.objects.count() == before


def _incident_writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if 'UPDATE "incidents_incident"' in q["sql"]
        or 'INSERT INTO "incidents_incidentlogrecord"' in q["sql"]
    ]


def _steps_of(incident: Incident) -> list[tuple[str, str, str]]:
    return [(r.action, r.from_status, r.to_status) for r in incident.timeline.order_by("at", "pk")]


@pytest.mark.embedded
@pytest.mark.django_db
def test_register_and_its_automatic_dispatch_write_the_incident_once(demo_city):
    """Register, then dispatch by rule in the same call: one UPDATE with both steps' columns and both
    timeline rows, in order (PostgreSQL: one statement; SQLite: the UPDATE, then the rows)."""
    incident = report(category="AC01", description="厂房起火")
    operator = User.objects.get(username="operator")
    incident_act(incident_id=incident.pk, actor=operator, action="accept")
    with CaptureQueriesContext(connection) as queries:
        incident_act(incident_id=incident.pk, actor=operator, action="register", payload={"grade": "II"})
    updates = [q for q in _incident_writes(queries) if 'UPDATE "incidents_incident"' in q]
    assert len(updates) == 1, _incident_writes(queries)
    if connection.vendor == "postgresql":
        assert len(_incident_writes(queries)) == 1
    fresh = Incident.objects.get(pk=incident.pk)
    assert fresh.status == "dispatched" and fresh.grade is not None and fresh.grade.code == "II"
    assert fresh.stage == "handle" and fresh.due_at is not None
    assert _steps_of(fresh)[-2:] == [
        ("register", "accepted", "registered"),
        ("dispatch", "registered", "dispatched"),
    ]
    assert DispatchOrder.objects.filter(incident=fresh).count() == 3


@pytest.mark.embedded
@pytest.mark.django_db
def test_an_emergency_registered_on_intake_is_written_by_one_statement(demo_city):
    """A traffic accident (AC02) is reported, accepted, registered and dispatched in one call: after
    the incident's INSERT, its four timeline rows and its last state are one statement (PostgreSQL)."""
    with CaptureQueriesContext(connection) as queries:
        incident = report(category="AC02", description="两车相撞，有人受伤")
    writes = _incident_writes(queries)
    assert len([q for q in writes if 'UPDATE "incidents_incident"' in q]) == 1, writes
    if connection.vendor == "postgresql":
        assert len(writes) == 1, writes
    # An incident opened by the call has no orders yet: nobody asks (a later dispatch does, below).
    assert not [q for q in queries.captured_queries if "FROM command_dispatchorder" in q["sql"]]
    assert not opened_in_this_transaction(incident)  # committed: the mark does not outlive the call
    fresh = Incident.objects.get(pk=incident.pk)
    assert fresh.status == "dispatched" and fresh.grade is not None
    assert _steps_of(fresh) == [
        ("report", "", "reported"),
        ("accept", "reported", "accepted"),
        ("register", "accepted", "registered"),
        ("dispatch", "registered", "dispatched"),
    ]
    assert {f.attname: getattr(fresh, f.attname) for f in Incident._meta.concrete_fields} == {
        f.attname: getattr(incident, f.attname) for f in Incident._meta.concrete_fields
    }
    operator = User.objects.get(username="commander")
    with CaptureQueriesContext(connection) as queries:
        incident_act(
            incident_id=incident.pk,
            actor=operator,
            action="dispatch",
            payload={
                "lead": DispatchOrder.objects.filter(incident=fresh).first().department.code,
                "reason": "再次派遣",
            },
        )
    assert [q for q in queries.captured_queries if "FROM command_dispatchorder" in q["sql"]]
    assert DispatchOrder.objects.filter(incident=fresh).count() == 3  # the open order was found


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_held_step_is_written_before_another_copy_of_its_incident_changes(demo_city):
    """Steps held for the end of a call belong to one copy of the incident; when another copy of the same
    row takes a step, the held one is written first, so the later change is the one that stays."""
    from incidents import services

    incident = report()
    with transaction.atomic(), services._steps_batch():
        first = services._locked_incident(incident.pk)
        services._transition(first, to_status="accepted", actor=None, action="accept", source=Source.SYSTEM)
        assert Incident.objects.get(pk=incident.pk).status == "reported"  # held, not written yet
        second = services._locked_incident(incident.pk)  # a re-read writes what is held first
        assert second.status == "accepted"
        services._transition(
            second, to_status="registered", actor=None, action="register", source=Source.SYSTEM
        )
        third = Incident.objects.get(pk=incident.pk)  # a copy read without the lock helper
        services._transition(first, to_status="cancelled", actor=None, action="cancel", source=Source.SYSTEM)
        services._transition(third, to_status="merged", actor=None, action="merge", source=Source.SYSTEM)
    fresh = Incident.objects.get(pk=incident.pk)
    assert [a for a, _f, _t in _steps_of(fresh)] == ["report", "accept", "register", "cancel", "merge"]
    assert fresh.status == "merged"


def _exchanges(trace: str) -> list[list[str]]:
    """The frontend's messages of a libpq protocol trace, cut into round trips (each ends with a Sync)."""
    trips: list[list[str]] = [[]]
    for line in trace.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0] != "F":
            continue
        trips[-1].append(parts[2])
        if parts[2] == "Sync":
            trips.append([])
    return [trip for trip in trips if "Execute" in trip]


@pytest.mark.django_db
def test_a_service_transaction_sends_its_closing_writes_in_one_round_trip(demo_city, tmp_path):
    """Timeline rows, events and audit records: three statements, one round trip (pipelined_writes)."""
    import psycopg

    operator = User.objects.get(username="operator")
    incident = report(category="UM03", description="违章搭建")  # warms the kept reference data
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    path = tmp_path / "libpq.trace"
    with path.open("w") as out:
        pgconn.trace(out.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            incident_act(incident_id=incident.pk, actor=operator, action="accept")
        finally:
            pgconn.untrace()
    trips = _exchanges(path.read_text())
    # The lock of the incident (with its reporters and versions), then the incident's UPDATE with its
    # timeline row, the event with its feeds and the audit record, sent together.
    assert [trip.count("Execute") for trip in trips] == [1, 3], trips
    # What the three wrote, each caller having had its rows back (keys, hashes checked) before commit.
    assert Incident.objects.get(pk=incident.pk).status == "accepted"
    assert IncidentLogRecord.objects.filter(incident=incident, action="accept").exists()
    assert Event.objects.filter(name="incident.updated", data__id=incident.pk, data__action="accept").exists()
    assert AuditRecord.objects.filter(object_id=incident.pk, action="accept").exists()


@pytest.mark.django_db
def test_an_error_among_the_pipelined_writes_is_raised_as_the_orm_raises_it_and_nothing_stays():
    from django.db.utils import DataError

    from config.rows import execute_then, pipelined_writes

    seen: list[str] = []
    before = Event.objects.count()
    # The closing writes are made by hand here, after `from_here()` ends as a service's body would.
    insert = (
        "INSERT INTO realtime_event (name, version, at, data) VALUES ('x.y', 1, now(), '{}') RETURNING id"
    )
    with (
        pytest.raises(DataError, match="division by zero"),
        transaction.atomic(),
        pipelined_writes() as writes,
    ):
        with writes.from_here():
            execute_then("SELECT 1", [], lambda rows: seen.append(f"body {rows}"))
        assert seen == ["body [(1,)]"], "a statement of the body runs at once"
        execute_then(insert, [], lambda rows: seen.append("insert"))
        execute_then("SELECT 1 / %s", [0], lambda rows: seen.append("division"))
        execute_then("SELECT 2", [], lambda rows: seen.append("after"))
        assert seen == ["body [(1,)]"], "collected, not yet sent"
    assert seen == ["body [(1,)]"], "no caller had rows from a failed round trip"
    assert Event.objects.count() == before
