"""Who receives an incident's (and an order's) realtime events.

The people side of the answer — the active command centre staff, each grid's grid workers, each
department's staff — is a directory kept per process by incidents/refcache.py, like the linkage rules:
every intake and action asks it several times, and it changes when an administrator edits a user. A
save or delete of a user through the ORM (other than a login's `last_login`), and a change of a user's
grids, bumps the reference data version in the writer's transaction, so every process re-reads the
directory from the commit on. Code that edits users behind the ORM's back calls
`refcache.reference_changed()` itself (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connection

from config.memo import memoised, remember
from incidents import refcache
from incidents.models import Incident, Report

# Role names are command.constants.Role values; incidents does not import command (DESIGN.md).
CENTRE_ROLES = ("operator", "commander")
GRID_WORKER = "grid_worker"
DEPARTMENT_STAFF = "department"

RECIPIENTS_MEMO = "incident_recipients"
# A user saved with only these fields changed (a login) does not change who receives what.
IRRELEVANT_USER_FIELDS = frozenset({"last_login", "password"})


@dataclass(frozen=True)
class Directory:
    """The active users who receive events, by what makes them receive them."""

    active: frozenset[int]
    centre: tuple[int, ...]
    by_grid: dict[str, tuple[int, ...]] = field(default_factory=dict)
    by_department: dict[int, tuple[int, ...]] = field(default_factory=dict)


def _read_directory() -> Directory:
    User = get_user_model()
    active: set[int] = set()
    centre: list[int] = []
    by_department: dict[int, list[int]] = {}
    for pk, role, department_id in User.objects.filter(is_active=True).values_list(
        "pk", "role", "department_id"
    ):
        active.add(pk)
        if role in CENTRE_ROLES:
            centre.append(pk)
        elif role == DEPARTMENT_STAFF and department_id is not None:
            by_department.setdefault(department_id, []).append(pk)
    by_grid: dict[str, list[int]] = {}
    through = User.grids.through
    for user_id, code in through.objects.filter(user__is_active=True, user__role=GRID_WORKER).values_list(
        "user_id", "territoryunit__code"
    ):
        by_grid.setdefault(code, []).append(user_id)
    return Directory(
        active=frozenset(active),
        centre=tuple(sorted(centre)),
        by_grid={code: tuple(sorted(ids)) for code, ids in by_grid.items()},
        by_department={dep: tuple(sorted(ids)) for dep, ids in by_department.items()},
    )


def directory() -> Directory:
    """The directory (kept per process inside a service call; read afresh outside one)."""
    return refcache.kept("audience_directory", _read_directory)


def incident_recipients(incident: Incident) -> list[int]:
    """The command centre, the grid workers of the incident's grid, and its reporters.

    Memoised for one service call (config.memo); a service that moves reports between incidents
    (merge, split) calls `forget(RECIPIENTS_MEMO)` after the move.
    """

    def compute() -> list[int]:
        people = directory()
        ids = set(people.centre)
        ids.update(people.by_grid.get(incident.grid_code, ()))
        # Reporters of merged-in duplicates follow the incident that now holds their report ("my reports").
        reporters = set(
            memoised(
                (RECIPIENTS_MEMO, "reporters", incident.pk),
                lambda: _reporters(incident.pk),
            )
        )
        if incident.reported_by_id:
            reporters.add(incident.reported_by_id)
        ids.update(reporters & people.active)
        return sorted(ids)

    key = (RECIPIENTS_MEMO, incident.pk, incident.grid_code, incident.reported_by_id)
    return memoised(key, compute)


def _reporters(incident_id: int) -> list[int]:
    # Read at every action of the closed loop: one plain statement, not an ORM query built each time.
    with connection.cursor() as cursor:
        table = Report._meta.db_table
        cursor.execute(f"SELECT reporter_id FROM {table} WHERE incident_id = %s", [incident_id])
        return [int(row[0]) for row in cursor.fetchall()]


def remember_reporters(incident_id: int, reporter_ids: list[int]) -> None:
    """The users whose reports the incident holds, as the caller just read or wrote them (spares the read).

    For this service call only: the intake that made the incident's one report, or the action that read
    them with the incident's locked row (a merge or split forgets them again with RECIPIENTS_MEMO).
    """
    remember((RECIPIENTS_MEMO, "reporters", incident_id), list(reporter_ids))


def department_recipients(department_id: int) -> list[int]:
    """A department's active staff and the command centre (the audience of its orders)."""
    people = directory()
    return sorted({*people.centre, *people.by_department.get(department_id, ())})


def connect_users() -> None:
    """Bump the reference data version when a user, or a user's grids, change (called in `ready`)."""
    User = get_user_model()
    refcache.connect(User, ignore_fields=IRRELEVANT_USER_FIELDS)
    refcache.connect_m2m(User.grids.through)
