"""Who receives an incident's realtime events."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q

from incidents.models import Incident

# Role names are command.constants.Role values; incidents does not import command (DESIGN.md).
CENTRE_ROLES = ("operator", "commander")


def incident_recipients(incident: Incident) -> list[int]:
    """The command centre, the grid workers of the incident's grid, and its reporter."""
    User = get_user_model()
    query = Q(role__in=CENTRE_ROLES) | Q(role="grid_worker", grids__code=incident.grid_code)
    if incident.reported_by_id:
        query |= Q(pk=incident.reported_by_id)
    return sorted(set(User.objects.filter(query, is_active=True).values_list("pk", flat=True)))
