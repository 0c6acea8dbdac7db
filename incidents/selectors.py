"""Reads of incidents, already filtered by what the caller may see."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from incidents import rules
from incidents.models import Incident

# Other apps widen what a role sees (command: a department sees incidents it holds orders for).
VISIBILITY_EXTENSIONS: list[Callable[[Any], Q | None]] = []


def incidents_visible_to(user: Any) -> QuerySet[Incident]:
    """Incidents the user may see: the centre all, grid workers their reports and grids, others via orders."""
    base = Incident.objects.select_related("category", "category__parent", "grade")
    role = getattr(user, "role", None)
    if role in (rules.OPERATOR, rules.COMMANDER, rules.ADMIN):
        return base
    query = Q(pk__in=[])
    if role == rules.GRID_WORKER:
        grid_codes = list(user.grids.values_list("code", flat=True))
        query = Q(reported_by=user) | Q(grid_code__in=grid_codes)
    for extend in VISIBILITY_EXTENSIONS:
        extra = extend(user)
        if extra is not None:
            query |= extra
    return base.filter(query).distinct()


def incident_filter(
    queryset: QuerySet[Incident],
    *,
    status: list[str] | None = None,
    category: str | None = None,
    grade: str | None = None,
    area: str | None = None,
    reported_after: datetime | None = None,
    reported_before: datetime | None = None,
    overdue: bool | None = None,
    text: str | None = None,
) -> QuerySet[Incident]:
    """Apply list filters; `category` matches a subcategory or a whole family, `area` any territory level."""
    if status:
        queryset = queryset.filter(status__in=status)
    if category:
        queryset = queryset.filter(Q(category__code=category) | Q(category__parent__code=category))
    if grade:
        queryset = queryset.filter(grade__code=grade)
    if area:
        queryset = queryset.filter(
            Q(district_code=area)
            | Q(street_code=area)
            | Q(community_code=area)
            | Q(grid_code=area)
            | Q(block_code=area)
        )
    if reported_after:
        queryset = queryset.filter(reported_at__gte=reported_after)
    if reported_before:
        queryset = queryset.filter(reported_at__lt=reported_before)
    if overdue is True:
        queryset = queryset.filter(overdue_at__isnull=False)
    elif overdue is False:
        queryset = queryset.filter(overdue_at__isnull=True)
    if text:
        queryset = queryset.filter(
            Q(code__icontains=text) | Q(description__icontains=text) | Q(address__icontains=text)
        )
    return queryset
