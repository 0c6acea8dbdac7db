"""Stage clocks: which deadline policy applies, when a stage is due, and the timer engine's marks.

Policies are data (DeadlinePolicy rows). For a stage, the matching rows are those whose category is
empty, the incident's category or its family; whose grade is empty or the incident's; and whose area
is empty or one of the incident's territory units. The most specific wins, compared in this order:
more dimensions set; then an exact category over a family; then a deeper area (grid over community
over street over district); then the lowest id. Durations are calendar minutes or working minutes on
the working calendar loaded from settings.WORK_CALENDAR_FILE.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from gis.models import LAYER_ORDER
from incidents import refcache
from incidents.models import Category, DeadlinePolicy, DurationUnit, Grade
from incidents.workcal import WorkCalendar, add_minutes, extend_for_pause

AREA_DEPTH = {"district": 1, "street": 2, "community": 3, "grid": 4, "block": 4}


@dataclass(frozen=True)
class Clock:
    """A stage's clock: when it started, when it is due, and when it warns."""

    stage: str
    started_at: datetime
    due_at: datetime
    warn_at: datetime
    policy_id: int
    unit: str


@functools.lru_cache(maxsize=1)
def work_calendar() -> WorkCalendar:
    """The working calendar of this installation (loaded once per process)."""
    return WorkCalendar.from_file(settings.WORK_CALENDAR_FILE)


def _policies_by_stage() -> dict[str, list[tuple[DeadlinePolicy, str, str]]]:
    """Every policy, per stage, with its area's code and layer ("" when it has no area)."""
    by_stage: dict[str, list[tuple[DeadlinePolicy, str, str]]] = {}
    for p in DeadlinePolicy.objects.select_related("area").order_by("pk"):
        area_code, area_layer = (p.area.code, p.area.layer) if p.area else ("", "")
        by_stage.setdefault(p.stage, []).append((p, area_code, area_layer))
    return by_stage


def policy_for(
    *, stage: str, category: Category, grade: Grade | None, area_codes: dict[str, str]
) -> DeadlinePolicy | None:
    """The most specific deadline policy for a stage, or None when no row matches."""
    category_ids = [category.pk] + ([category.parent_id] if category.parent_id else [])
    codes = {c for c in area_codes.values() if c}
    best: tuple[tuple[int, int, int, int], DeadlinePolicy] | None = None
    policies = refcache.kept("deadline_policies", _policies_by_stage)
    for policy, area_code, area_layer in policies.get(stage, []):
        if policy.category_id is not None and policy.category_id not in category_ids:
            continue
        if policy.grade_id is not None and (grade is None or policy.grade_id != grade.pk):
            continue
        if policy.area_id is not None and area_code not in codes:
            continue
        dims = sum(x is not None for x in (policy.category_id, policy.grade_id, policy.area_id))
        exact = 1 if policy.category_id == category.pk else 0
        depth = AREA_DEPTH.get(area_layer, 0) if policy.area_id else 0
        key = (dims, exact, depth, -policy.pk)
        if best is None or key > best[0]:
            best = (key, policy)
    return best[1] if best else None


def clock_for(
    *, stage: str, category: Category, grade: Grade | None, area_codes: dict[str, str], start: datetime
) -> Clock | None:
    """The clock of a stage started at `start`, or None when no policy covers it."""
    policy = policy_for(stage=stage, category=category, grade=grade, area_codes=area_codes)
    if policy is None:
        return None
    calendar = work_calendar()
    due = add_minutes(start, policy.duration, policy.unit, calendar)
    warn_minutes = max(1, int(policy.duration * policy.warn_fraction))
    warn = add_minutes(start, warn_minutes, policy.unit, calendar)
    return Clock(stage, start, due, warn, policy.pk, policy.unit)


def shift_for_pause(moment: datetime, paused_from: datetime, paused_to: datetime, unit: str) -> datetime:
    """Push a due or warn time out by a paused span, measured in the clock's own unit."""
    return extend_for_pause(moment, paused_from, paused_to, unit, work_calendar())


def extended(moment: datetime, minutes: int, unit: str) -> datetime:
    """A due time extended by `minutes` of the clock's unit."""
    return add_minutes(moment, minutes, unit, work_calendar())


__all__ = ["LAYER_ORDER", "Clock", "DurationUnit", "clock_for", "extended", "policy_for", "shift_for_pause"]
