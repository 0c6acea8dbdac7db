"""Writes for incidents: intake of reports, the closed-loop actions, and the timer engine's marks.

Every state change goes through one function here, called alike by the REST routes, the pages and the
websocket; each writes its timeline row and its realtime event in the same transaction.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from audit.services import audit_batch, audit_record
from config.memo import forget, memo_scope
from config.rows import (
    insert_params,
    insert_plan,
    insert_rows,
    inserted,
    lock_row,
    lock_row_with,
    pipelined_writes,
    planned_per_call,
    read_row_with,
    update_row_and_insert,
)
from gis.geocoding import geocode_point
from incidents import audience, deadlines, refcache, rules
from incidents.models import (
    Category,
    Grade,
    Incident,
    IncidentLogRecord,
    IncidentRequest,
    IncidentSerial,
    Photo,
    Report,
    RequestKind,
    Source,
    Status,
)
from incidents.photos import CheckedPhoto
from realtime.publish import publish, publish_batch

User = get_user_model()
T = TypeVar("T")


class IntakeError(ValueError):
    """A report that cannot be taken; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before by this user for a different report."""


class ActionError(Exception):
    """An action with invalid arguments (a missing reason, an unknown target, …); `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ReportInput:
    """What a report says, already parsed (the API validates types and ranges)."""

    category: str
    description: str
    lon: float
    lat: float
    crs: str = "wgs84"
    occurred_at: datetime | None = None
    address: str = ""
    reporter_name: str = ""
    reporter_phone: str = ""
    channel: str = "phone"


@dataclass
class IntakeResult:
    """The incident a report landed in, and whether this call created it."""

    incident: Incident
    report: Report
    created: bool
    duplicates: list[int] = field(default_factory=list)
    photos: list[Photo] = field(default_factory=list)
    timeline: list[IncidentLogRecord] = field(default_factory=list)  # the rows this intake wrote


# The timeline rows written while an intake runs (`_record` adds them), so that its answer needs no read.
_written: ContextVar[list[IncidentLogRecord] | None] = ContextVar("intake_timeline", default=None)


@dataclass
class _Steps:
    """The steps of one incident taken in a service call, written when the call ends (`_steps_batch`)."""

    incident: Incident | None = None
    records: list[IncidentLogRecord] = field(default_factory=list)
    update: bool = False  # a step changed the incident's row (a transition), not only its timeline


_steps: ContextVar[_Steps | None] = ContextVar("incident_steps", default=None)


@contextmanager
def _steps_batch() -> Iterator[None]:
    """Hold the steps a service call takes on its incident and write them together when it ends.

    A call often takes several steps: register and dispatch, or an emergency's report, accept,
    register and dispatch on intake. Each used to be the incident's UPDATE and its timeline row in a
    statement of its own; held here, they become one statement: the UPDATE of every column the steps
    changed (`Incident.pending_update` since the row was read) and all their timeline rows, in order.
    Only the call's first incident (that instance) is held; a step on another incident is written at
    once. Open it innermost in the transaction, inside `publish_batch`, so the rows are written before
    the events and the audit records (the lock order stays: incident, feeds, audit head). An exception
    discards what was held (the transaction rolls back anyway).
    """
    if _steps.get() is not None:
        yield
        return
    steps = _Steps()
    token = _steps.set(steps)
    try:
        yield
    finally:
        _steps.reset(token)
    _write_steps(steps)


@contextmanager
def service_transaction() -> Iterator[None]:
    """The transaction of one service call, with its timeline rows, events and audit records batched.

    Each kind is written by one statement when the call ends, in the lock order incident, feeds, audit
    head (`_steps_batch`, `publish_batch`, `audit_batch`), and the three statements go to PostgreSQL in
    one round trip (`pipelined_writes`); nested in another, it joins the outer one.
    """
    with (
        transaction.atomic(),
        pipelined_writes() as writes,
        audit_batch(),
        publish_batch(),
        _steps_batch(),
        writes.from_here(),
    ):
        yield


def _write_steps(steps: _Steps) -> None:
    incident, records = steps.incident, steps.records
    if incident is None or not records:
        return
    update, steps.records, steps.update = steps.update, [], False
    if not update:
        insert_rows(records)
        return
    saving = incident.pending_update()
    if saving is None:  # not a row read from the database (cannot happen: it was locked or inserted)
        incident.save()
        insert_rows(records)
        return
    update_row_and_insert(incident, saving, records)
    incident.remember_stored(set(saving))


def _hold_step(incident: Incident, record: IncidentLogRecord, *, update: bool) -> bool:
    """Hold a step for `_steps_batch` (True), or say it must be written now (False)."""
    steps = _steps.get()
    if steps is None:
        return False
    if steps.incident is not None and steps.incident is not incident:
        if steps.incident.pk == incident.pk:
            # Another copy of the same row: what is held goes first, so the writes keep their order.
            _write_steps(steps)
        return False
    steps.incident = incident
    steps.records.append(record)
    steps.update = steps.update or update
    return True


def _utc(moment: datetime | None) -> datetime | None:
    """A time as the database gives it back (UTC), so an answer built from memory reads like a later GET."""
    return moment.astimezone(UTC) if moment is not None and moment.tzinfo is not None else moment


def _now() -> datetime:
    return timezone.now()


# ---------------------------------------------------------------------------------------------- intake


def _active_categories() -> dict[str, Category]:
    """Active categories by code, with their family (kept per process in a service call: refcache)."""

    def read() -> dict[str, Category]:
        return {c.code: c for c in Category.objects.filter(active=True).select_related("parent")}

    return refcache.kept("active_categories", read)


def _grades() -> dict[str, Grade]:
    """Grades by code (kept per process in a service call: refcache)."""
    return refcache.kept("grades", lambda: {g.code: g for g in Grade.objects.all()})


def request_fingerprint(data: ReportInput, photos: Sequence[CheckedPhoto]) -> str:
    """A hash of everything a report says, so a replayed key can be told from a reused one."""
    body = {
        "category": data.category,
        "description": data.description,
        "lon": repr(float(data.lon)),
        "lat": repr(float(data.lat)),
        "crs": data.crs,
        "occurred_at": data.occurred_at.isoformat() if data.occurred_at else None,
        "address": data.address,
        "reporter_name": data.reporter_name,
        "reporter_phone": data.reporter_phone,
        "photos": [p.sha256 for p in photos],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _replay(reporter: Any, key: str, fingerprint: str) -> Report | None:
    # Nearly every key is new: ask the small question first, load the report only for a replay. A plain
    # statement (the ORM would build it anew for every report), which also brings the reference versions
    # the intake needs next (refcache), in the same round trip.
    table = Report._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT r.id, r.request_hash, {refcache.versions_sql()} FROM (SELECT 1) AS one "
                f"LEFT JOIN {table} AS r ON r.reporter_id = %s AND r.idempotency_key = %s LIMIT 1",
                [reporter.pk, key],
            )
            found, request_hash, ref, territory = cursor.fetchone()
            refcache.remember_versions(ref, territory)
        else:
            cursor.execute(
                f"SELECT id, request_hash FROM {table} "
                "WHERE reporter_id = %s AND idempotency_key = %s LIMIT 1",
                [reporter.pk, key],
            )
            found, request_hash = cursor.fetchone() or (None, None)
    if found is None:
        return None
    if request_hash != fingerprint:
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different report")
    return Report.objects.select_related("incident").get(pk=found)


def report_submit(
    *,
    reporter: Any,
    data: ReportInput,
    photos: Sequence[CheckedPhoto] = (),
    photo_names: Sequence[str] = (),
    idempotency_key: str | None = None,
    source: str = Source.API,
) -> IntakeResult:
    """Take a report: geocode it, open an incident (or replay the original for a repeated key)."""
    with memo_scope():
        return _report_submit(reporter, data, photos, photo_names, idempotency_key, source)


def _report_submit(
    reporter: Any,
    data: ReportInput,
    photos: Sequence[CheckedPhoto],
    photo_names: Sequence[str],
    idempotency_key: str | None,
    source: str,
) -> IntakeResult:
    fingerprint = request_fingerprint(data, photos)
    if idempotency_key:
        earlier = _replay(reporter, idempotency_key, fingerprint)
        if earlier is not None:
            return IntakeResult(earlier.incident, earlier, created=False)
    category = _active_categories().get(data.category)
    if category is None:
        raise IntakeError("category", f"unknown category {data.category!r}")
    if category.parent_id is None:
        raise IntakeError("category", f"{data.category!r} is a family; choose one of its subcategories")
    if not data.description.strip():
        raise IntakeError("description", "must not be empty")
    geo = geocode_point(lon=data.lon, lat=data.lat, crs=data.crs)
    now = _now()
    saved: list[str] = []
    stored_photos: list[Photo] = []
    written: list[IncidentLogRecord] = []
    collecting = _written.set(written)
    try:
        # Events first, then the audit rows, each written once at the end (see publish_batch).
        with service_transaction():
            report = Report(
                reporter=reporter,
                idempotency_key=idempotency_key or "",
                request_hash=fingerprint,
                channel=data.channel,
                category=category,
                description=data.description,
                lon=geo["lon"],
                lat=geo["lat"],
                input_lon=data.lon,
                input_lat=data.lat,
                input_crs=data.crs,
                address=data.address,
                reporter_name=data.reporter_name,
                reporter_phone=data.reporter_phone,
                occurred_at=_utc(data.occurred_at) or now,
                received_at=now,
            )
            # The incident, numbered, and its report: one statement on PostgreSQL.
            incident = _open_incident(
                category=category, data=data, geo=geo, reporter=reporter, now=now, report=report
            )
            names = list(photo_names) + [""] * (len(photos) - len(photo_names))
            for photo, original_name in zip(photos, names, strict=True):
                name = default_storage.save(
                    f"photos/{now:%Y/%m/%d}/{photo.sha256[:16]}.{photo.extension}", ContentFile(photo.content)
                )
                saved.append(name)
                stored = Photo.objects.create(
                    report=report,
                    file=name,
                    content_type=photo.content_type,
                    size=len(photo.content),
                    width=photo.width,
                    height=photo.height,
                    sha256=photo.sha256,
                    original_name=original_name[:255],
                    location_stripped=photo.location_stripped,
                )
                stored_photos.append(stored)
            duplicates = _find_duplicates(incident)
            audience.remember_reporters(incident.pk, [reporter.pk])  # the new incident's one report
            _record(
                incident,
                actor=reporter,
                action="report",
                source=source,
                from_status="",
                to_status=incident.status,
                data={"report_id": report.pk, "photos": len(photos), "possible_duplicates": duplicates},
                event="incident.created",
            )
            if category.register_on_intake:
                _register_on_intake(incident, source=source)
        setattr(incident, _OPENED_HERE, False)  # committed: from now on others may refer to it
    except IntegrityError:
        for name in saved:
            default_storage.delete(name)
        if idempotency_key:
            # Another request with the same key committed first: answer with what it made.
            earlier = _replay(reporter, idempotency_key, fingerprint)
            if earlier is not None:
                return IntakeResult(earlier.incident, earlier, created=False)
        raise
    except Exception:
        for name in saved:
            default_storage.delete(name)
        raise
    finally:
        _written.reset(collecting)
    timeline = sorted((r for r in written if r.incident_id == incident.pk), key=lambda r: (r.at, r.pk))
    return IntakeResult(
        incident, report, created=True, duplicates=duplicates, photos=stored_photos, timeline=timeline
    )


def _register_on_intake(incident: Incident, *, source: str) -> None:
    """Accept and register an emergency as it arrives (its category says so), then run the hooks."""
    for action, target in (("accept", Status.ACCEPTED), ("register", Status.REGISTERED)):
        if action == "register" and incident.grade is None:
            incident.grade = _grades().get("IV")
        _transition(
            incident,
            to_status=target,
            actor=None,
            action=action,
            source=Source.SYSTEM,
            reason="registered on intake by category rule",
        )
        for hook in AFTER_ACTION_HOOKS:
            hook(incident=incident, action=action, actor=None, source=Source.SYSTEM)


def _next_code(district_code: str, now: datetime) -> str:
    day = timezone.localtime(now).date()
    # One upsert: creates the day's row or increments it. Its row lock serialises concurrent intake per
    # district and day until commit; a rolled-back intake rolls its increment back too, so the serials
    # have no gaps. (PostgreSQL, and SQLite ≥ 3.35 for RETURNING.)
    table = IncidentSerial._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (district_code, day, last) VALUES (%s, %s, 1) "
            f"ON CONFLICT (district_code, day) DO UPDATE SET last = {table}.last + 1 RETURNING last",
            [district_code, day],
        )
        last = int(cursor.fetchone()[0])
    return f"{district_code}-{day:%Y%m%d}-{last:04d}"


def _open_incident(
    *,
    category: Category,
    data: ReportInput,
    geo: dict[str, Any],
    reporter: Any,
    now: datetime,
    report: Report | None = None,
) -> Incident:
    """Write a new incident, numbered for its district and day, and the report that opened it (if any)."""
    codes = {
        layer: (geo.get(layer) or {}).get("code", "")
        for layer in ("district", "street", "community", "grid", "block")
    }
    incident = Incident(
        status=Status.REPORTED,
        category=category,
        description=data.description,
        address=data.address,
        lon=geo["lon"],
        lat=geo["lat"],
        district_code=codes["district"],
        street_code=codes["street"],
        community_code=codes["community"],
        grid_code=codes["grid"],
        block_code=codes["block"] or "",
        geocode=geo,
        occurred_at=_utc(data.occurred_at) or now,
        reported_at=now,
        reported_by=reporter,
    )
    _enter_stage(incident, now)  # the first stage's clock, set before the one INSERT
    if report is not None and connection.vendor == "postgresql":
        _insert_numbered_with_report(incident, report, codes["district"], now)
    else:
        incident.code = _next_code(codes["district"], now)
        insert_rows([incident])
        if report is not None:
            report.incident = incident
            insert_rows([report])
    incident.remember_stored()  # a transition in this transaction (registered on intake) writes its changes
    setattr(incident, _OPENED_HERE, True)
    return incident


_OPENED_HERE = "_opened_in_this_transaction"


def opened_in_this_transaction(incident: Incident) -> bool:
    """Whether this copy of the incident was inserted by the running service call.

    Nothing else can refer to such a row yet (a foreign key to it waits for the commit), so a caller may
    skip looking for its orders, say.
    """
    return bool(getattr(incident, _OPENED_HERE, False))


_SERIAL_TEXT = "CASE WHEN last < 10000 THEN lpad(last::text, 4, '0') ELSE last::text END"


@functools.cache
def _intake_sql() -> str:
    """The serial's upsert, the incident's INSERT (its code made from the serial) and the report's
    INSERT as one statement: an intake's three writes in one round trip (PostgreSQL)."""
    quote = connection.ops.quote_name
    serial = quote(IncidentSerial._meta.db_table)
    incident, report = insert_plan(Incident, 1), insert_plan(Report, 1)
    # "<district>-<YYYYMMDD>-" || the serial, four digits at least, as f"{last:04d}" writes it.
    incident_values = [
        f"%s || (SELECT {_SERIAL_TEXT} FROM serial)" if f.name == "code" else "%s" for f in incident.fields
    ]
    report_values = ["(SELECT id FROM opened)" if f.name == "incident" else "%s" for f in report.fields]

    def columns(fields: list[Any]) -> str:
        return ", ".join(quote(str(f.column)) for f in fields)

    return (
        f"WITH serial AS (INSERT INTO {serial} (district_code, day, last) VALUES (%s, %s, 1) "
        f"ON CONFLICT (district_code, day) DO UPDATE SET last = {serial}.last + 1 RETURNING last), "
        f"opened AS (INSERT INTO {quote(Incident._meta.db_table)} ({columns(incident.fields)}) "
        f"VALUES ({', '.join(incident_values)}) RETURNING id, code) "
        f"INSERT INTO {quote(Report._meta.db_table)} ({columns(report.fields)}) "
        f"VALUES ({', '.join(report_values)}) "
        "RETURNING id, (SELECT id FROM opened), (SELECT code FROM opened)"
    )


def _insert_numbered_with_report(
    incident: Incident, report: Report, district_code: str, now: datetime
) -> None:
    """`_next_code`, the incident's INSERT and the report's in one statement (see `_intake_sql`)."""
    day = timezone.localtime(now).date()
    incident.code = f"{district_code}-{day:%Y%m%d}-"  # the prefix; the statement appends the serial
    report_plan = insert_plan(Report, 1)
    report_params = [
        value
        for f, value in zip(report_plan.fields, insert_params([report], report_plan), strict=True)
        if f.name != "incident"
    ]
    params = [district_code, day, *insert_params([incident], insert_plan(Incident, 1)), *report_params]
    with connection.cursor() as cursor:
        cursor.execute(_intake_sql(), params)
        report_id, incident_id, code = cursor.fetchone()
    incident.code = str(code)
    inserted([incident], [incident_id])
    report.incident = incident
    inserted([report], [report_id])


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Haversine distance in metres (ample for a 100 m duplicate radius)."""
    r = 6371008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


DUPLICATES_AT_MOST = 20


def _nearby_sql() -> str:
    """The duplicate search on PostgreSQL as one kept SQL text (the ORM built it anew for each report:
    2.2 ms against 0.25 ms for the statement itself here)."""
    incident, category = Incident._meta.db_table, Category._meta.db_table
    point = "point(i.lon, i.lat)"
    # The box through the GiST index on (point(lon, lat), reported_at) (migration 0006): the rows near
    # the point in the window, not every incident of the family in the window (thousands in a storm).
    # And in the index's distance order, so that a storm of reports from one spot (hundreds in the box)
    # reads only the nearest few. The index orders by plain degrees; metres are computed in Python,
    # over twice as many rows as are kept, which absorbs the difference (a degree of longitude is
    # cos(latitude) of a degree of latitude: 0.92 at Shenzhen).
    return (
        f"SELECT i.id, i.lon, i.lat FROM {incident} AS i JOIN {category} AS c ON c.id = i.category_id "
        f"WHERE {point} <@ box(point(%s, %s), point(%s, %s)) AND c.family = %s "
        "AND i.reported_at >= %s AND i.reported_at <= %s AND i.id <> %s AND NOT (i.status = ANY(%s)) "
        f"ORDER BY {point} <-> point(%s, %s) LIMIT %s"
    )


def _find_duplicates(incident: Incident) -> list[int]:
    radius = float(settings.DUPLICATE_RADIUS_M)
    window = timedelta(minutes=float(settings.DUPLICATE_WINDOW_MIN))
    dlat = radius / 111_000
    dlon = radius / (111_000 * max(0.1, math.cos(math.radians(incident.lat))))
    family = incident.category.family
    west, east = incident.lon - dlon, incident.lon + dlon
    south, north = incident.lat - dlat, incident.lat + dlat
    since, until = incident.reported_at - window, incident.reported_at
    rows: list[tuple[int, float, float]]
    if connection.vendor == "postgresql":
        params: list[Any] = [west, south, east, north, family, since, until, incident.pk]
        params += [sorted(rules.TERMINAL), incident.lon, incident.lat, 2 * DUPLICATES_AT_MOST]
        with planned_per_call(), connection.cursor() as cursor:
            cursor.execute(_NEARBY_SQL, params)
            rows = cursor.fetchall()
    else:
        rows = list(
            Incident.objects.filter(
                lat__range=(south, north),
                lon__range=(west, east),
                category__family=family,
                reported_at__gte=since,
                reported_at__lte=until,
            )
            .exclude(pk=incident.pk)
            .exclude(status__in=rules.TERMINAL)
            .values_list("pk", "lon", "lat")
        )
    near = sorted(
        (distance, -pk)
        for pk, lon, lat in rows
        if (distance := _distance_m(incident.lon, incident.lat, lon, lat)) <= radius
    )
    # The nearest ones, newest first among equals: in a storm of reports from one spot the officer needs
    # a handful of links, not hundreds, and each link is a row written with the report.
    found = [-negated for _distance, negated in near[:DUPLICATES_AT_MOST]]
    if found:  # a new incident has no links yet: insert them, without the reads `.set()` would make
        through = Incident.possible_duplicates.through
        insert_rows([through(from_incident_id=incident.pk, to_incident_id=pk) for pk in found])
    return found


_NEARBY_SQL = _nearby_sql()


# --------------------------------------------------------------------------------------------- actions


def retry_on_deadlock(work: Callable[[], T], attempts: int = 3) -> T:
    """Run a transaction, again when PostgreSQL aborted it to break a deadlock (our transaction only)."""
    for attempt in range(attempts):
        try:
            with memo_scope():
                return work()
        except OperationalError as exc:
            # Inside someone else's transaction a retry is theirs to make; only our own is retried.
            if connection.in_atomic_block or attempt == attempts - 1 or "deadlock" not in str(exc).lower():
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


# Actions carried out by other apps (dispatch belongs to command); registered in their AppConfig.ready.
ActionHandler = Callable[..., Incident]
ACTION_HANDLERS: dict[str, ActionHandler] = {}


def register_action_handler(action: str, handler: ActionHandler) -> None:
    """Let another app carry out an incident action (e.g. command does "dispatch")."""
    ACTION_HANDLERS[action] = handler


def incident_act(
    *,
    incident_id: int,
    actor: Any,
    action: str,
    source: str = Source.API,
    payload: dict[str, Any] | None = None,
) -> Incident:
    """Carry out one action of the closed loop (raises rules.ActionRefused or ActionError)."""
    payload = payload or {}
    return retry_on_deadlock(lambda: _incident_act(incident_id, actor, action, source, payload))


def _incident_act(
    incident_id: int, actor: Any, action: str, source: str, payload: dict[str, Any]
) -> Incident:
    with service_transaction():
        incident = _locked_incident(incident_id)
        transition = rules.check(
            action=action,
            status=incident.status,
            role=actor.role,
            suspended=incident.suspended_at is not None,
        )
        reason = str(payload.get("reason") or "").strip()
        if transition.needs_reason and not reason:
            raise ActionError("reason", f"a reason is required to {action}")
        if action in ACTION_HANDLERS:
            incident = ACTION_HANDLERS[action](
                incident=incident, actor=actor, source=source, payload=payload, reason=reason
            )
        else:
            _HANDLERS[action](incident, actor=actor, source=source, payload=payload, reason=reason)
        for hook in AFTER_ACTION_HOOKS:
            hook(incident=incident, action=action, actor=actor, source=source)
        return incident


def _categories_by_id() -> dict[int, Category]:
    """Every category (active or not) by id, with its family (kept per process: refcache)."""

    def read() -> dict[int, Category]:
        return {c.pk: c for c in Category.objects.select_related("parent")}

    return refcache.kept("categories_by_id", read)


def _locked_incident(incident_id: int, *, lock: bool = True) -> Incident:
    """The incident's row, locked in this transaction, with category, family and grade from the kept maps.

    Reference rows come from refcache rather than a join, which keeps the lock a plain primary-key read.
    Steps held for the call (`_steps_batch`) are written first, so the row read is the row as it stands.
    lock=False reads the row as committed, without waiting on (or holding) its lock.
    """
    steps = _steps.get()
    if steps is not None:
        _write_steps(steps)
    if connection.vendor == "postgresql":
        # Who reported it comes with the row (its events go to them): one round trip instead of two.
        table, reports = Incident._meta.db_table, Report._meta.db_table
        # The reference versions too (refcache): the action's lookups then need no read of their own.
        reporters = f"ARRAY(SELECT reporter_id FROM {reports} WHERE incident_id = {table}.id)"
        read = lock_row_with if lock else read_row_with
        incident, (reporter_ids, ref, territory) = read(
            Incident, incident_id, f"{reporters}, {refcache.versions_sql()}"
        )
        audience.remember_reporters(incident.pk, [int(r) for r in reporter_ids])
        refcache.remember_versions(ref, territory)
    elif lock:
        incident = lock_row(Incident, incident_id)
    else:
        incident = Incident.objects.get(pk=incident_id)
    category = _categories_by_id().get(incident.category_id)
    if category is None:  # a category added a moment ago in another process
        category = Category.objects.select_related("parent").get(pk=incident.category_id)
    incident.category = category
    if incident.grade_id is not None:
        grade = next((g for g in _grades().values() if g.pk == incident.grade_id), None)
        incident.grade = grade if grade is not None else Grade.objects.get(pk=incident.grade_id)
    return incident


def _transition(
    incident: Incident,
    *,
    to_status: str,
    actor: Any,
    action: str,
    source: str,
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    from_status = incident.status
    now = _now()
    incident.status = to_status
    _enter_stage(incident, now)
    saving = incident.pending_update()
    if saving is None:
        incident.save()
    _record(  # with the incident's UPDATE in the same statement when it has one pending
        incident,
        actor=actor,
        action=action,
        source=source,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        data=data or {},
        saving=saving,
    )


def _accept(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    _transition(
        incident, to_status=Status.ACCEPTED, actor=actor, action="accept", source=source, reason=reason
    )


def _register(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    changes: dict[str, Any] = {}
    if payload.get("category"):
        category = _active_categories().get(payload["category"])
        if category is None or category.parent_id is None:
            raise ActionError("category", f"unknown subcategory {payload['category']!r}")
        if category.pk != incident.category_id:
            changes["category"] = [incident.category.code, category.code]
            incident.category = category
    grade_code = payload.get("grade") or (incident.grade.code if incident.grade else "IV")
    grade = _grades().get(grade_code)
    if grade is None:
        raise ActionError("grade", f"unknown grade {grade_code!r}; use I, II, III or IV")
    changes["grade"] = grade.code
    incident.grade = grade
    _transition(
        incident,
        to_status=Status.REGISTERED,
        actor=actor,
        action="register",
        source=source,
        reason=reason,
        data=changes,
    )


def _cancel(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    _transition(
        incident, to_status=Status.CANCELLED, actor=actor, action="cancel", source=source, reason=reason
    )


def _handler_ids(incident: Incident) -> set[int]:
    return set(incident.handled_by.values_list("pk", flat=True))


def _check_verifier(incident: Incident, actor: Any) -> None:
    if actor.pk in _handler_ids(incident):
        raise ActionError("actor", "verification must be done by someone other than the handler")
    if actor.role == rules.GRID_WORKER and not actor.grids.filter(code=incident.grid_code).exists():
        raise ActionError("actor", "a grid worker verifies incidents in their own grids only")


def _verify(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    _check_verifier(incident, actor)
    _transition(
        incident, to_status=Status.VERIFIED, actor=actor, action="verify", source=source, reason=reason
    )


def _reject_verification(
    incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str
) -> None:
    _check_verifier(incident, actor)
    incident.rework_count += 1
    _transition(
        incident,
        to_status=Status.IN_PROGRESS,
        actor=actor,
        action="reject_verification",
        source=source,
        reason=reason,
        data={"rework_count": incident.rework_count},
    )
    for hook in REWORK_HOOKS:
        hook(incident=incident, actor=actor, source=source, reason=reason)


def _close(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    _transition(incident, to_status=Status.CLOSED, actor=actor, action="close", source=source, reason=reason)


def _evaluate(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    if actor.role == rules.GRID_WORKER and incident.reported_by_id != actor.pk:
        raise ActionError("actor", "a grid worker evaluates only incidents they reported")
    try:
        score = int(payload.get("score"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ActionError("score", "a whole number from 1 to 5 is required") from None
    if not 1 <= score <= 5:
        raise ActionError("score", "must be from 1 to 5")
    incident.evaluation_score = score
    incident.evaluation_comment = str(payload.get("comment") or "")[:2000]
    incident.evaluated_at = _now()
    _transition(
        incident,
        to_status=Status.EVALUATED,
        actor=actor,
        action="evaluate",
        source=source,
        reason=reason,
        data={"score": score},
    )


def _merge(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    target_id = payload.get("into")
    if not isinstance(target_id, int) or isinstance(target_id, bool):
        raise ActionError("into", "the id of the incident to merge into is required")
    if target_id == incident.pk:
        raise ActionError("into", "an incident cannot be merged into itself")
    target = Incident.objects.select_for_update().filter(pk=target_id).first()
    if target is None:
        raise ActionError("into", f"no incident {target_id}")
    if target.status in rules.TERMINAL or target.status in (Status.CLOSED, Status.VERIFIED):
        raise ActionError("into", f"cannot merge into an incident that is {target.status}")
    moved = list(incident.reports.values_list("pk", flat=True))
    incident.reports.update(incident=target)
    forget(audience.RECIPIENTS_MEMO)
    incident.merged_into = target
    _transition(
        incident,
        to_status=Status.MERGED,
        actor=actor,
        action="merge",
        source=source,
        reason=reason,
        data={"into": target.pk, "into_code": target.code, "reports": moved},
    )
    _record(
        target,
        actor=actor,
        action="merged_in",
        source=source,
        from_status=target.status,
        to_status=target.status,
        reason=reason,
        data={"from": incident.pk, "from_code": incident.code, "reports": moved},
    )


def _split(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    ids = payload.get("report_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise ActionError("report_ids", "a non-empty list of report ids is required")
    reports = list(incident.reports.filter(pk__in=ids).select_related("category", "reporter"))
    if len(reports) != len(set(ids)):
        raise ActionError("report_ids", "every report must belong to this incident")
    if incident.reports.count() == len(reports):
        raise ActionError("report_ids", "at least one report must stay with this incident")
    first = reports[0]
    now = _now()
    geo = geocode_point(lon=first.lon, lat=first.lat)
    new = _open_incident(
        category=first.category,
        data=ReportInput(
            category=first.category.code,
            description=first.description,
            lon=first.lon,
            lat=first.lat,
            occurred_at=first.occurred_at,
            address=first.address,
        ),
        geo=geo,
        reporter=first.reporter,
        now=now,
    )
    Report.objects.filter(pk__in=ids).update(incident=new)
    forget(audience.RECIPIENTS_MEMO)
    _record(
        incident,
        actor=actor,
        action="split",
        source=source,
        from_status=incident.status,
        to_status=incident.status,
        reason=reason,
        data={"new_incident": new.pk, "new_code": new.code, "reports": ids},
    )
    _record(
        new,
        actor=actor,
        action="split_from",
        source=source,
        from_status="",
        to_status=new.status,
        reason=reason,
        data={"from": incident.pk, "from_code": incident.code, "reports": ids},
        event="incident.created",
    )


def _apply_suspend(incident: Incident, *, actor: Any, source: str, reason: str, data: dict[str, Any]) -> None:
    incident.suspended_at = _now()
    incident.save()
    _record(
        incident,
        actor=actor,
        action="suspend",
        source=source,
        from_status=incident.status,
        to_status=incident.status,
        reason=reason,
        data=data,
    )


def _apply_extend(
    incident: Incident, *, minutes: int, actor: Any, source: str, reason: str, data: dict[str, Any]
) -> None:
    if incident.due_at is None:
        raise ActionError("action", "the current stage has no deadline to extend")
    unit = incident.clock_unit or "minutes"
    old_due = incident.due_at
    incident.due_at = deadlines.extended(old_due, minutes, unit)
    if incident.overdue_at is not None and incident.due_at > _now():
        incident.overdue_at = None
    incident.save()
    _record(
        incident,
        actor=actor,
        action="extend",
        source=source,
        from_status=incident.status,
        to_status=incident.status,
        reason=reason,
        data={
            **data,
            "minutes": minutes,
            "due_at": incident.due_at.isoformat(),
            "was_due_at": old_due.isoformat(),
        },
    )


def _minutes(payload: dict[str, Any]) -> int:
    try:
        minutes = int(payload.get("minutes"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ActionError("minutes", "a whole number of minutes is required") from None
    if not 1 <= minutes <= 60 * 24 * 90:
        raise ActionError("minutes", "must be between 1 and 129600 (90 days)")
    return minutes


def _request_or_apply(
    kind: str, incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str
) -> None:
    minutes = _minutes(payload) if kind == RequestKind.EXTEND else None
    if actor.role == rules.COMMANDER:
        # A commander's own suspension or extension is its approval.
        if kind == RequestKind.SUSPEND:
            _apply_suspend(
                incident, actor=actor, source=source, reason=reason, data={"approved_by": actor.pk}
            )
        else:
            assert minutes is not None
            _apply_extend(
                incident,
                minutes=minutes,
                actor=actor,
                source=source,
                reason=reason,
                data={"approved_by": actor.pk},
            )
        return
    if incident.requests.filter(decided_at__isnull=True).exists():
        raise ActionError("action", "a request is already waiting for a commander's decision")
    request = IncidentRequest.objects.create(
        incident=incident, kind=kind, minutes=minutes, reason=reason, requested_by=actor, requested_at=_now()
    )
    _record(
        incident,
        actor=actor,
        action=f"request_{kind}",
        source=source,
        from_status=incident.status,
        to_status=incident.status,
        reason=reason,
        data={"request_id": request.pk, "minutes": minutes},
    )


def _suspend(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    _request_or_apply(
        RequestKind.SUSPEND, incident, actor=actor, source=source, payload=payload, reason=reason
    )


def _extend(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    _request_or_apply(
        RequestKind.EXTEND, incident, actor=actor, source=source, payload=payload, reason=reason
    )


def _resume(incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str) -> None:
    assert incident.suspended_at is not None
    now = _now()
    paused_from = incident.suspended_at
    unit = incident.clock_unit or "minutes"
    # The clock stood still while suspended: push due and warn times out by the paused span.
    if incident.due_at is not None:
        incident.due_at = deadlines.shift_for_pause(incident.due_at, paused_from, now, unit)
    if incident.warn_at is not None:
        incident.warn_at = deadlines.shift_for_pause(incident.warn_at, paused_from, now, unit)
    incident.suspended_at = None
    incident.save()
    _record(
        incident,
        actor=actor,
        action="resume",
        source=source,
        from_status=incident.status,
        to_status=incident.status,
        reason=reason,
        data={
            "suspended_at": paused_from.isoformat(),
            "due_at": incident.due_at.isoformat() if incident.due_at else None,
        },
    )


def _decide(
    incident: Incident, *, actor: Any, source: str, payload: dict[str, Any], reason: str, approve: bool
) -> None:
    pending = incident.requests.select_for_update().filter(decided_at__isnull=True).first()
    if pending is None:
        raise ActionError("action", "no request is waiting for a decision")
    if pending.requested_by_id == actor.pk:
        raise ActionError("actor", "a request must be decided by someone other than who asked")
    pending.decided_by, pending.decided_at, pending.approved = actor, _now(), approve
    pending.decision_reason = reason
    pending.save()
    data = {
        "request_id": pending.pk,
        "kind": pending.kind,
        "requested_by": pending.requested_by_id,
        "approved_by": actor.pk,
    }
    if not approve:
        _record(
            incident,
            actor=actor,
            action="decline",
            source=source,
            from_status=incident.status,
            to_status=incident.status,
            reason=reason,
            data=data,
        )
        return
    if pending.kind == RequestKind.SUSPEND:
        if incident.suspended_at is not None:
            raise ActionError("action", "the incident is already suspended")
        _apply_suspend(incident, actor=actor, source=source, reason=pending.reason, data=data)
    else:
        _apply_extend(
            incident,
            minutes=int(pending.minutes or 0),
            actor=actor,
            source=source,
            reason=pending.reason,
            data=data,
        )


def _approve(incident: Incident, **kwargs: Any) -> None:
    _decide(incident, approve=True, **kwargs)


def _decline(incident: Incident, **kwargs: Any) -> None:
    _decide(incident, approve=False, **kwargs)


def _dispatch_unavailable(incident: Incident, **kwargs: Any) -> None:
    raise ActionError("action", "dispatch is handled by the command app, which is not installed")


_HANDLERS: dict[str, Callable[..., None]] = {
    "accept": _accept,
    "register": _register,
    "cancel": _cancel,
    "dispatch": _dispatch_unavailable,
    "verify": _verify,
    "reject_verification": _reject_verification,
    "close": _close,
    "evaluate": _evaluate,
    "merge": _merge,
    "split": _split,
    "suspend": _suspend,
    "extend": _extend,
    "resume": _resume,
    "approve": _approve,
    "decline": _decline,
}
assert set(_HANDLERS) == set(rules.TRANSITIONS)

# Called after a failed verification sends an incident back for rework (command reopens the lead order).
REWORK_HOOKS: list[Callable[..., None]] = []
# Called after every successful action, inside its transaction (command auto-dispatches on register).
AFTER_ACTION_HOOKS: list[Callable[..., None]] = []


# -------------------------------------------------------------- transitions driven by dispatch orders


def incident_mark_dispatched(
    *, incident: Incident, actor: Any, source: str, reason: str = "", data: dict[str, Any] | None = None
) -> Incident:
    """Record a dispatch (orders were created by the command app) and start the handling clock."""
    if incident.status == Status.DISPATCHED:
        _record(
            incident,
            actor=actor,
            action="dispatch",
            source=source,
            from_status=incident.status,
            to_status=incident.status,
            reason=reason,
            data=data or {},
        )
    else:
        _transition(
            incident,
            to_status=Status.DISPATCHED,
            actor=actor,
            action="dispatch",
            source=source,
            reason=reason,
            data=data,
        )
    return incident


def incident_system_transition(
    *,
    incident_id: int,
    action: str,
    actor: Any = None,
    source: str = Source.SYSTEM,
    data: dict[str, Any] | None = None,
    handlers: Sequence[int] = (),
) -> Incident | None:
    """Move an incident as its orders progress ("start_work", "mark_handled"); a no-op when not applicable."""
    transition = rules.SYSTEM_TRANSITIONS[action]
    incident = _locked_incident(incident_id)
    if incident.status not in transition.sources or transition.target is None:
        return None
    if handlers:
        incident.handled_by.add(*handlers)
    _transition(incident, to_status=transition.target, actor=actor, action=action, source=source, data=data)
    return incident


# ------------------------------------------------------------------------------------ clocks and marks


def _enter_stage(incident: Incident, now: datetime) -> None:
    stage = rules.STAGE_OF_STATUS.get(incident.status)
    if stage is not None and stage == incident.stage and incident.due_at is not None:
        return  # the same stage goes on (e.g. dispatched → in progress keeps the handling clock)
    incident.warned_at = None
    incident.overdue_at = None
    if stage is None:
        incident.stage, incident.stage_started_at, incident.due_at, incident.warn_at = "", None, None, None
        incident.clock_unit = ""
        return
    clock = deadlines.clock_for(
        stage=stage,
        category=incident.category,
        grade=incident.grade,
        area_codes=incident.area_codes(),
        start=now,
    )
    incident.stage, incident.stage_started_at = stage, now
    incident.due_at = clock.due_at if clock else None
    incident.warn_at = clock.warn_at if clock else None
    incident.clock_unit = clock.unit if clock else ""


def deadlines_tick(*, now: datetime | None = None) -> tuple[int, int]:
    """Fire due-soon and overdue marks that have come due; each fires once even with several workers."""
    now = now or _now()
    # One memo scope for the tick: its events use the kept directory of recipients (one version read).
    with memo_scope():
        warned = _fire_marks(mark="warned_at", when="warn_at", action="due_soon", now=now)
        overdue = _fire_marks(mark="overdue_at", when="due_at", action="overdue", now=now)
    return warned, overdue


def _fire_marks(*, mark: str, when: str, action: str, now: datetime) -> int:
    """Set `mark` on active, running incidents whose `when` has passed, with a timeline row each."""
    running = {"status__in": list(rules.ACTIVE), "suspended_at__isnull": True, f"{mark}__isnull": True}
    fired = 0
    for pk, stage in Incident.objects.filter(**running, **{f"{when}__lte": now}).values_list("pk", "stage"):
        with transaction.atomic():
            # The conditional update is the once-only guard: a second worker finds the mark set.
            if Incident.objects.filter(pk=pk, stage=stage, **running).update(**{mark: now}):
                incident = Incident.objects.select_related("category", "grade").get(pk=pk)
                _record(
                    incident,
                    actor=None,
                    action=action,
                    source=Source.SYSTEM,
                    from_status=incident.status,
                    to_status=incident.status,
                    data={"stage": stage, "due_at": _iso(incident.due_at)},
                )
                fired += 1
    return fired


# ------------------------------------------------------------------------------------ timeline, events


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def incident_event_data(incident: Incident, action: str | None = None) -> dict[str, Any]:
    """The data of an incident.created / incident.updated event (no personal data)."""
    data: dict[str, Any] = {
        "id": incident.pk,
        "code": incident.code,
        "status": incident.status,
        "category": incident.category.code,
        "grade": incident.grade.code if incident.grade else None,
        "lon": incident.lon,
        "lat": incident.lat,
        "district_code": incident.district_code,
        "grid_code": incident.grid_code,
        "due_at": _iso(incident.due_at),
        "overdue": incident.overdue_at is not None,
        "suspended": incident.suspended_at is not None,
    }
    if action is not None:
        data["action"] = action
    return data


def _record(
    incident: Incident,
    *,
    actor: Any,
    action: str,
    source: str,
    from_status: str,
    to_status: str,
    reason: str = "",
    data: dict[str, Any] | None = None,
    event: str = "incident.updated",
    saving: list[str] | None = None,
) -> IncidentLogRecord:
    """Write the timeline row of a step, its realtime event and its audit record.

    `saving`: the incident's fields still to be written (`Incident.pending_update`), written by the
    same statement as the timeline row.
    """
    record = IncidentLogRecord(
        incident=incident,
        at=_now(),
        actor=actor,
        actor_role=getattr(actor, "role", "") if actor is not None else "system",
        source=source,
        action=action,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        data=data or {},
    )
    if _hold_step(incident, record, update=saving is not None):
        pass  # written with the call's other steps when it ends (`_steps_batch`)
    elif saving is None:
        insert_rows([record])
    else:
        update_row_and_insert(incident, saving, [record])
        incident.remember_stored(set(saving))
    collected = _written.get()
    if collected is not None:
        collected.append(record)
    payload = incident_event_data(incident, None if event == "incident.created" else action)
    publish(name=event, data=payload, recipients=audience.incident_recipients(incident))
    # After publish: the audit chain's lock is always taken after the feed locks (no lock-order deadlock).
    audit_record(
        action=action,
        object_type="incident",
        object_id=incident.pk,
        actor=actor,
        source=source,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        data=data or {},
        at=record.at,
    )
    return record


def incident_for_step(incident_id: int) -> Incident:
    """The incident as committed, for another app's step that records on it without changing its row.

    Category, grade and reporters come with it, as with a locked incident, but its row is not locked:
    such a step (an order's delivery) must not wait on, nor hold up, the incident's own actions.
    """
    return _locked_incident(incident_id, lock=False)


def incident_record(incident: Incident, **kwargs: Any) -> IncidentLogRecord:
    """Write a timeline row and its realtime event for a step taken by another app (e.g. an order)."""
    return _record(incident, **kwargs)


__all__ = [
    "ActionError",
    "IdempotencyConflict",
    "IntakeError",
    "IntakeResult",
    "ReportInput",
    "deadlines_tick",
    "incident_act",
    "incident_for_step",
    "incident_mark_dispatched",
    "incident_record",
    "incident_system_transition",
    "opened_in_this_transaction",
    "register_action_handler",
    "report_submit",
    "service_transaction",
]
