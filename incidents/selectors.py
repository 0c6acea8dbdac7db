"""Reads of incidents, already filtered by what the caller may see."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from gis.models import TerritoryUnit
from incidents import rules
from incidents.models import Category, Incident, Photo, Report

# The incident column holding each territory level's code.
AREA_COLUMNS = {
    "district": "district_code",
    "street": "street_code",
    "community": "community_code",
    "grid": "grid_code",
    "block": "block_code",
}

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
        # Their own reports include those merged into (or split off as) an incident of another grid.
        query = Q(reported_by=user) | Q(pk__in=_reported_by(user)) | Q(grid_code__in=grid_codes)
    for extend in VISIBILITY_EXTENSIONS:
        extra = extend(user)
        if extra is not None:
            query |= extra
    return base.filter(query).distinct()


def photos_visible_to(user: Any) -> QuerySet[Photo]:
    """Report photos the user may see: those of the incidents the user may see."""
    return Photo.objects.filter(report__incident__in=incidents_visible_to(user).values("pk"))


def _reported_by(user: Any) -> QuerySet[Report, Any]:
    """The ids of the incidents holding a report of the user (a subquery: no duplicate rows)."""
    return Report.objects.filter(reporter=user).values("incident_id")


def incident_filter(
    queryset: QuerySet[Incident],
    *,
    reporter: Any = None,
    status: list[str] | None = None,
    category: str | None = None,
    grade: str | None = None,
    area: str | None = None,
    reported_after: datetime | None = None,
    reported_before: datetime | None = None,
    overdue: bool | None = None,
    text: str | None = None,
) -> QuerySet[Incident]:
    """Apply list filters; `category` matches a subcategory or a whole family, `area` any territory level.

    `reporter` keeps the incidents holding a report of that user (an incident may hold several: a
    retried or merged duplicate); `reported_by` alone would miss merged ones.
    """
    if reporter is not None:
        queryset = queryset.filter(pk__in=_reported_by(reporter))
    if status:
        queryset = queryset.filter(status__in=status)
    if category:
        # Ids first (a handful of rows), so PostgreSQL can walk the (category, -reported_at) index
        # instead of joining categories and filtering an OR.
        ids = list(
            Category.objects.filter(Q(code=category) | Q(parent__code=category)).values_list("pk", flat=True)
        )
        queryset = queryset.filter(category_id__in=ids)
    if grade:
        queryset = queryset.filter(grade__code=grade)
    if area:
        # Only the column of the level the code belongs to: an OR over all five made PostgreSQL walk the
        # newest incidents of the whole city for a grid's few hundred (60 ms on 1,000,000 incidents).
        layers = set(TerritoryUnit.objects.filter(code=area).values_list("layer", flat=True)) & set(
            AREA_COLUMNS
        )
        columns = [AREA_COLUMNS[layer] for layer in sorted(layers)] or list(AREA_COLUMNS.values())
        match = Q()
        for column in columns:
            match |= Q(**{column: area})
        queryset = queryset.filter(match)
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
