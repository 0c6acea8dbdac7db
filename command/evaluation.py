"""Evaluation figures (绩效评价) of dispatch orders per department, grid and grid worker over a period.

The population is the dispatch orders *issued* in [start, end). For each group, one SQL aggregation
gives counts and sums; rates and means are divided out afterwards, so groups can be summed exactly
(a grid worker's figures are the sums over the grids assigned to them).

Definitions (docs/analytics.md has the long form):

- A stage (sign → arrive → handle) is **late** when the timer engine marked the order overdue in that
  stage (the ``order_overdue`` record on the incident's timeline, with ``data.stage``), or when it is
  the order's current stage and its deadline has passed. The order row keeps only the current stage's
  ``due_at``, so the timeline is where a finished stage's lateness survives; a stage finished after
  its deadline but before the next tick of the background loop (seconds) is therefore counted on time.
- **On-time sign-for rate** = orders signed and not late in the sign stage / orders signed or late in
  it (an order rejected or reassigned before its deadline has no sign-for result and is left out).
  On-time arrival and completion rates are the same for the arrive and handle stages.
- **Rejection rate** = orders rejected at least once (``reject_count > 0``) / orders issued.
- **Rework rate** = completed lead orders whose incident then failed verification (a
  ``reject_verification`` record at or after the order's completion) / completed lead orders.
- **Mean time per stage**, in minutes: sign = signed − issued, arrive = arrived − signed,
  handle = completed − arrived, total = completed − issued, each over the orders that have both times.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from command.constants import Role
from command.models import Department, DispatchOrder, OrderRole, User
from command.selectors import orders_visible_to
from command.stats import StatsFilter, category_ids
from gis.models import TerritoryUnit
from incidents.models import IncidentLogRecord

GROUPINGS: Final = ("department", "grid", "grid_worker")
STAGES: Final = ("sign", "arrive", "handle")
# The moment each stage ends (its result), by stage name.
STAGE_END: Final = {"sign": "signed_at", "arrive": "arrived_at", "handle": "completed_at"}
# Mean times: name → (end field, start field).
INTERVALS: Final = {
    "sign": ("signed_at", "issued_at"),
    "arrive": ("arrived_at", "signed_at"),
    "handle": ("completed_at", "arrived_at"),
    "total": ("completed_at", "issued_at"),
}
COLUMNS: Final = [
    "key",
    "name",
    "orders",
    "incidents",
    "signed",
    "sign_due",
    "sign_on_time",
    "sign_on_time_rate",
    "arrived",
    "arrive_due",
    "arrive_on_time",
    "arrive_on_time_rate",
    "completed",
    "complete_due",
    "complete_on_time",
    "complete_on_time_rate",
    "rejected",
    "rejection_rate",
    "lead_completed",
    "reworked",
    "rework_rate",
    "mean_sign_min",
    "mean_arrive_min",
    "mean_handle_min",
    "mean_total_min",
]
_STAGE_LABEL: Final = {"sign": "sign", "arrive": "arrive", "handle": "complete"}


def late_in(stage: str, *, now: dt.datetime) -> Q:
    """Orders late in `stage`: marked overdue in it on the timeline, or in it now and past the deadline."""
    marked = (
        IncidentLogRecord.objects.filter(
            incident_id=OuterRef("incident_id"), action="order_overdue", data__stage=stage
        )
        .annotate(order_ref=Cast(KeyTextTransform("order_id", "data"), IntegerField()))
        .filter(order_ref=OuterRef("pk"))
    )
    current = Q(stage=stage) & (Q(overdue_at__isnull=False) | Q(due_at__lt=now))
    return Q(Exists(marked)) | current


def _reworked() -> Exists:
    return Exists(
        IncidentLogRecord.objects.filter(
            incident_id=OuterRef("incident_id"),
            action="reject_verification",
            at__gte=OuterRef("completed_at"),
        )
    )


def _interval(end: str, start: str) -> ExpressionWrapper:
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def orders_for_evaluation(user: Any, *, query: StatsFilter, department: str | None = None) -> QuerySet:
    """Orders issued in the period that the user may evaluate, narrowed by department, area and category."""
    role = getattr(user, "role", None)
    if role not in (Role.OPERATOR, Role.COMMANDER, Role.ADMIN, Role.DEPARTMENT):
        return DispatchOrder.objects.none()
    queryset = orders_visible_to(user).filter(issued_at__gte=query.start, issued_at__lt=query.end)
    if department:
        queryset = queryset.filter(department__code=department)
    if query.area:
        area = query.area
        queryset = queryset.filter(
            Q(incident__district_code=area)
            | Q(incident__street_code=area)
            | Q(incident__community_code=area)
            | Q(incident__grid_code=area)
            | Q(incident__block_code=area)
        )
    if query.category:
        queryset = queryset.filter(incident__category_id__in=category_ids(query.category))
    if query.grade:
        queryset = queryset.filter(incident__grade__code=query.grade)
    return queryset.order_by()


def _aggregates(now: dt.datetime) -> dict[str, Any]:
    aggregates: dict[str, Any] = {
        "orders": Count("pk"),
        "incidents": Count("incident_id", distinct=True),
        "signed": Count("pk", filter=Q(signed_at__isnull=False)),
        "arrived": Count("pk", filter=Q(arrived_at__isnull=False)),
        "completed": Count("pk", filter=Q(completed_at__isnull=False)),
        "rejected": Count("pk", filter=Q(reject_count__gt=0)),
        "lead_completed": Count("pk", filter=Q(role=OrderRole.LEAD, completed_at__isnull=False)),
        "reworked": Count("pk", filter=Q(role=OrderRole.LEAD, completed_at__isnull=False) & Q(_reworked())),
    }
    for stage in STAGES:
        end = STAGE_END[stage]
        label = _STAGE_LABEL[stage]
        late = late_in(stage, now=now)
        done = Q(**{f"{end}__isnull": False})
        aggregates[f"{label}_due"] = Count("pk", filter=done | late)
        aggregates[f"{label}_on_time"] = Count("pk", filter=done & ~late)
    for name, (end, start) in INTERVALS.items():
        both = Q(**{f"{end}__isnull": False, f"{start}__isnull": False})
        aggregates[f"n_{name}"] = Count("pk", filter=both)
        aggregates[f"sum_{name}"] = Sum(_interval(end, start), filter=both)
    return aggregates


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    # Some backends hand back microseconds for a sum of durations.
    return float(value) / 1e6


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _finish(key: str, name: str, raw: Mapping[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": key, "name": name}
    row["orders"] = int(raw.get("orders", 0))
    row["incidents"] = int(raw.get("incidents", 0))
    row["signed"] = int(raw.get("signed", 0))
    row["arrived"] = int(raw.get("arrived", 0))
    row["completed"] = int(raw.get("completed", 0))
    for label in ("sign", "arrive", "complete"):
        due, on_time = int(raw.get(f"{label}_due", 0)), int(raw.get(f"{label}_on_time", 0))
        row[f"{label}_due"] = due
        row[f"{label}_on_time"] = on_time
        row[f"{label}_on_time_rate"] = _ratio(on_time, due)
    row["rejected"] = int(raw.get("rejected", 0))
    row["rejection_rate"] = _ratio(row["rejected"], row["orders"])
    row["lead_completed"] = int(raw.get("lead_completed", 0))
    row["reworked"] = int(raw.get("reworked", 0))
    row["rework_rate"] = _ratio(row["reworked"], row["lead_completed"])
    for name in INTERVALS:
        n = raw.get(f"n_{name}", 0)
        row[f"mean_{name}_min"] = raw.get(f"sum_{name}", 0.0) / n / 60.0 if n else None
    return {column: row.get(column) for column in COLUMNS}


def evaluation(
    user: Any,
    *,
    query: StatsFilter,
    by: str = "department",
    department: str | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Evaluation rows (see COLUMNS) per department, grid or grid worker for orders issued in the period."""
    now = now or timezone.now()
    queryset = orders_for_evaluation(user, query=query, department=department)
    if by == "department":
        raw = _grouped(queryset, "department_id", now)
        departments = {
            pk: (code, name)
            for pk, code, name in Department.objects.filter(pk__in=list(raw)).values_list(
                "pk", "code", "name"
            )
        }
        rows = [_finish(*departments[pk], figures) for pk, figures in raw.items()]
    elif by == "grid":
        raw = _grouped(queryset, "incident__grid_code", now)
        grids = TerritoryUnit.objects.filter(layer="grid", code__in=list(raw)).values_list("code", "name")
        grid_names = dict(grids)
        rows = [_finish(code, grid_names.get(code, ""), figures) for code, figures in raw.items()]
    elif by == "grid_worker":
        per_grid = _grouped(queryset, "incident__grid_code", now)
        rows = [_finish(key, name, figures) for key, name, figures in _per_worker(per_grid)]
    else:
        raise ValueError(f"unknown grouping {by!r}")
    rows.sort(key=lambda r: r["key"])
    return rows


def _grouped(queryset: QuerySet, column: str, now: dt.datetime) -> dict[Any, dict[str, float]]:
    result: dict[Any, dict[str, float]] = {}
    for row in queryset.values(column).annotate(**_aggregates(now)):
        key = row.pop(column)
        result[key] = {k: _seconds(v) if k.startswith("sum_") else float(v or 0) for k, v in row.items()}
    return result


def _per_worker(per_grid: Mapping[str, Mapping[str, float]]) -> Iterator[tuple[str, str, dict[str, float]]]:
    """Sum per-grid figures over each grid worker's assigned grids (every figure is additive)."""
    through = User.grids.through
    assigned: dict[int, list[str]] = defaultdict(list)
    for user_id, code in through.objects.filter(
        user__role=Role.GRID_WORKER, territoryunit__code__in=list(per_grid)
    ).values_list("user_id", "territoryunit__code"):
        assigned[user_id].append(code)
    people = User.objects.filter(pk__in=list(assigned)).values_list(
        "pk", "username", "first_name", "last_name"
    )
    for pk, username, first, last in people:
        total: dict[str, float] = defaultdict(float)
        for code in assigned[pk]:
            for name, value in per_grid[code].items():
                total[name] += value
        yield username, f"{last}{first}".strip() or username, dict(total)


def evaluation_csv_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[list[Any]]:
    """The header and then one list per evaluation row, rates and minutes rounded for people to read."""
    yield list(COLUMNS)
    for row in rows:
        out: list[Any] = []
        for column in COLUMNS:
            value = row.get(column)
            if isinstance(value, float):
                value = round(value, 4) if column.endswith("_rate") else round(value, 2)
            out.append("" if value is None else value)
        yield out
