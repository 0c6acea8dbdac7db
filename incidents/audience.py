"""Who receives an incident's realtime events."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q

from config.memo import memoised
from incidents.models import Incident, Report

# Role names are command.constants.Role values; incidents does not import command (DESIGN.md).
CENTRE_ROLES = ("operator", "commander")


RECIPIENTS_MEMO = "incident_recipients"


def incident_recipients(incident: Incident) -> list[int]:
    """The command centre, the grid workers of the incident's grid, and its reporters.

    Memoised for one service call (config.memo); a service that moves reports between incidents
    (merge, split) calls `forget(RECIPIENTS_MEMO)` after the move.
    """

    def compute() -> list[int]:
        User = get_user_model()
        query = Q(role__in=CENTRE_ROLES) | Q(role="grid_worker", grids__code=incident.grid_code)
        if incident.reported_by_id:
            query |= Q(pk=incident.reported_by_id)
        # Reporters of merged-in duplicates follow the incident that now holds their report ("my reports").
        query |= Q(pk__in=Report.objects.filter(incident_id=incident.pk).values("reporter_id"))
        return sorted(set(User.objects.filter(query, is_active=True).values_list("pk", flat=True)))

    key = (RECIPIENTS_MEMO, incident.pk, incident.grid_code, incident.reported_by_id)
    return memoised(key, compute)
