"""Block data (块数据): incident counts per territory unit and time bucket, answered by SQL aggregation.

Every figure here is one ``GROUP BY`` in the database (PostgreSQL in production, SQLite in the
embedded default) over the incident codes copied at intake (``district_code`` … ``block_code``) and
``reported_at``; Python only maps the few category and grade ids of the result to their codes. Time
buckets are cut in ``settings.TIME_ZONE`` (a day is a local calendar day, a week starts on Monday).

Who sees what: the command centre (operator, commander) and the administrator see every incident; a
department sees the incidents it holds orders for (``incidents.selectors.incidents_visible_to``);
grid workers get nothing here (the API refuses them). Merged incidents (duplicates folded into
another) are left out unless the ``status`` filter asks for them, so a merged report is never
counted twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Case, Count, DateField, F, Q, QuerySet, Value, When
from django.db.models.functions import Cast, TruncDay, TruncHour, TruncMonth, TruncWeek
from django.utils import timezone

from command.constants import Role
from gis.models import Layer, TerritoryUnit
from incidents.models import Category, Family, Grade, Incident, Status
from incidents.selectors import incidents_visible_to

# The incident column holding each layer's code (copied at intake, so history never moves).
LAYER_FIELDS: Final[dict[str, str]] = {
    Layer.DISTRICT: "district_code",
    Layer.STREET: "street_code",
    Layer.COMMUNITY: "community_code",
    Layer.GRID: "grid_code",
    Layer.BLOCK: "block_code",
}
BUCKETS: Final = {"hour": TruncHour, "day": TruncDay, "week": TruncWeek, "month": TruncMonth}
DIMENSIONS: Final = ("category", "family", "grade", "status")
# The longest period each bucket may span, so one request cannot ask for millions of rows.
MAX_SPAN: Final[dict[str | None, dt.timedelta]] = {
    "hour": dt.timedelta(days=31),
    "day": dt.timedelta(days=400),
    "week": dt.timedelta(days=3 * 366),
    "month": dt.timedelta(days=20 * 366),
    None: dt.timedelta(days=20 * 366),
}
DEFAULT_DAYS: Final = 30
CENTRE_ROLES: Final = frozenset({Role.OPERATOR, Role.COMMANDER, Role.ADMIN})
STATS_ROLES: Final = CENTRE_ROLES | {Role.DEPARTMENT}
OPEN_STATUSES: Final = (
    Status.REPORTED,
    Status.ACCEPTED,
    Status.REGISTERED,
    Status.DISPATCHED,
    Status.IN_PROGRESS,
    Status.HANDLED,
)
DONE_STATUSES: Final = (Status.VERIFIED, Status.CLOSED, Status.EVALUATED)


class StatsQueryError(ValueError):
    """A bad query parameter; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class StatsFilter:
    """Which incidents a figure counts: reported in [start, end), plus optional narrowing filters."""

    start: dt.datetime
    end: dt.datetime
    category: str | None = None
    grade: str | None = None
    status: tuple[str, ...] = ()
    area: str | None = None
    overdue: bool | None = None

    @property
    def span(self) -> dt.timedelta:
        """The length of the period."""
        return self.end - self.start

    def previous(self) -> StatsFilter:
        """The same filter over the period of equal length just before this one."""
        return StatsFilter(
            start=self.start - self.span,
            end=self.start,
            category=self.category,
            grade=self.grade,
            status=self.status,
            area=self.area,
            overdue=self.overdue,
        )


def local_zone() -> ZoneInfo:
    """The zone buckets are cut in (settings.TIME_ZONE)."""
    return ZoneInfo(settings.TIME_ZONE)


def parse_moment(name: str, raw: str) -> dt.datetime:
    """An ISO 8601 date (local midnight) or datetime (local time when it carries no offset)."""
    raw = raw.strip()
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            return dt.datetime.combine(day, dt.time(), tzinfo=local_zone())
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise StatsQueryError(name, f"not an ISO 8601 date or datetime: {raw[:40]!r}") from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=local_zone())
    return moment


def parse_bool(name: str, raw: str | None) -> bool | None:
    """true/false (1/0, yes/no); None when absent."""
    if raw in (None, ""):
        return None
    value = str(raw).lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise StatsQueryError(name, "use true or false")


def parse_filter(
    params: Mapping[str, Any], *, bucket: str | None = None, now: dt.datetime | None = None
) -> StatsFilter:
    """Validate from, to, category, grade, status, area and overdue; by default the last 30 days."""
    now = now or timezone.now()
    local_today = timezone.localtime(now, local_zone()).date()
    default_end = dt.datetime.combine(local_today + dt.timedelta(days=1), dt.time(), tzinfo=local_zone())
    end = parse_moment("to", params["to"]) if params.get("to") else default_end
    start = (
        parse_moment("from", params["from"]) if params.get("from") else end - dt.timedelta(days=DEFAULT_DAYS)
    )
    if start >= end:
        raise StatsQueryError("to", "must be after 'from' (the period is [from, to))")
    limit = MAX_SPAN[bucket]
    if end - start > limit:
        raise StatsQueryError("from", f"the period may span at most {limit.days} days with bucket={bucket}")
    category = str(params.get("category") or "").strip() or None
    if category and not Category.objects.filter(code=category).exists():
        raise StatsQueryError("category", f"unknown category {category[:40]!r}")
    grade = str(params.get("grade") or "").strip() or None
    if grade and not Grade.objects.filter(code=grade).exists():
        raise StatsQueryError("grade", f"unknown grade {grade[:16]!r}")
    raw_status = params.get("status") or ""
    status = tuple(s for s in str(raw_status).split(",") if s)
    unknown = [s for s in status if s not in Status.values]
    if unknown:
        raise StatsQueryError("status", f"unknown status {unknown[0][:32]!r}")
    area = str(params.get("area") or "").strip() or None
    return StatsFilter(
        start=start,
        end=end,
        category=category,
        grade=grade,
        status=status,
        area=area,
        overdue=parse_bool("overdue", params.get("overdue")),
    )


def parse_layer(raw: str | None, *, required: bool = False, default: str | None = None) -> str | None:
    """A territory layer name, or None for no grouping by unit."""
    value = raw or default
    if not value:
        if required:
            raise StatsQueryError("layer", f"required: one of {', '.join(LAYER_FIELDS)}")
        return None
    if value not in LAYER_FIELDS:
        raise StatsQueryError("layer", f"unknown layer {value[:32]!r}; use one of {', '.join(LAYER_FIELDS)}")
    return value


def parse_bucket(raw: str | None) -> str | None:
    """hour, day, week or month; None for no time buckets."""
    if not raw:
        return None
    if raw not in BUCKETS:
        raise StatsQueryError("bucket", f"unknown bucket {raw[:16]!r}; use one of {', '.join(BUCKETS)}")
    return raw


def parse_dimension(raw: str | None) -> str | None:
    """category, family, grade or status; None for totals only."""
    if not raw:
        return None
    if raw not in DIMENSIONS:
        raise StatsQueryError("by", f"unknown dimension {raw[:16]!r}; use one of {', '.join(DIMENSIONS)}")
    return raw


def incidents_for_stats(user: Any) -> QuerySet[Incident]:
    """The incidents whose figures the user may see, as a plain queryset ready for aggregation."""
    role = getattr(user, "role", None)
    if role in CENTRE_ROLES:
        return Incident.objects.all()
    if role == Role.DEPARTMENT:
        # A subquery, not the selector's join: joins through orders would count an incident once per order.
        return Incident.objects.filter(pk__in=incidents_visible_to(user).order_by().values("pk"))
    return Incident.objects.none()


def category_ids(code: str) -> list[int]:
    """Ids of a category and, when it is a family, of its subcategories."""
    return list(Category.objects.filter(Q(code=code) | Q(parent__code=code)).values_list("pk", flat=True))


def apply_filter(queryset: QuerySet[Incident], query: StatsFilter) -> QuerySet[Incident]:
    """Narrow incidents to the filter; ids are looked up first so the big table is never joined."""
    queryset = queryset.filter(reported_at__gte=query.start, reported_at__lt=query.end)
    if query.status:
        queryset = queryset.filter(status__in=query.status)
    else:
        queryset = queryset.exclude(status=Status.MERGED)
    if query.category:
        queryset = queryset.filter(category_id__in=category_ids(query.category))
    if query.grade:
        queryset = queryset.filter(grade_id__in=Grade.objects.filter(code=query.grade).values("pk"))
    if query.area:
        queryset = queryset.filter(
            Q(district_code=query.area)
            | Q(street_code=query.area)
            | Q(community_code=query.area)
            | Q(grid_code=query.area)
            | Q(block_code=query.area)
        )
    if query.overdue is True:
        queryset = queryset.filter(overdue_at__isnull=False)
    elif query.overdue is False:
        queryset = queryset.filter(overdue_at__isnull=True)
    return queryset


@dataclass(frozen=True)
class Reference:
    """The small reference tables, to turn grouped ids back into codes."""

    category_code: dict[int, str]
    category_family: dict[int, str]
    grade_code: dict[int, str]

    @classmethod
    def load(cls) -> Reference:
        """Read categories and grades (tens of rows)."""
        cats = list(Category.objects.values_list("pk", "code", "family"))
        return cls(
            category_code={pk: code for pk, code, _ in cats},
            category_family={pk: family for pk, _, family in cats},
            grade_code=dict(Grade.objects.values_list("pk", "code")),
        )


_DIMENSION_COLUMN: Final = {"category": "category_id", "family": "category_id", "grade": "grade_id"}


def _key(dimension: str, value: Any, ref: Reference | None) -> str | None:
    if dimension == "status" or ref is None:
        return str(value)
    if dimension == "category":
        return ref.category_code.get(value)
    if dimension == "family":
        return ref.category_family.get(value)
    return ref.grade_code.get(value) if value is not None else "none"


def incident_counts(
    user: Any,
    *,
    query: StatsFilter,
    layer: str | None = None,
    bucket: str | None = None,
    by: str | None = None,
) -> list[dict[str, Any]]:
    """Counts of incidents per unit of `layer`, per time `bucket` and per value of `by`, in one GROUP BY.

    Rows are {"unit", "bucket", "key", "count"}; a missing grouping is None. Buckets are aware
    datetimes at the start of the local hour, day, week (Monday) or month.
    """
    queryset = apply_filter(incidents_for_stats(user), query).order_by()
    annotations: dict[str, Any] = {}
    if layer is not None:
        annotations["unit"] = F(_field(layer))
    if bucket is not None:
        trunc = BUCKETS[bucket]("reported_at", tzinfo=local_zone())
        # Days, weeks and months come back as dates: Django would otherwise convert every row's datetime
        # to an aware one, though there are only as many distinct buckets as days.
        annotations["bucket"] = trunc if bucket == "hour" else Cast(trunc, output_field=DateField())
    if by is not None:
        annotations["key"] = F(_DIMENSION_COLUMN.get(by, "status"))
    if not annotations:
        return [{"unit": None, "bucket": None, "key": None, "count": queryset.count()}]
    names = list(annotations)
    grouped = (
        queryset.annotate(**annotations)
        .values(*names)
        .annotate(count=Count("pk"))
        .values_list(*names, "count")
    )
    ref = Reference.load() if by in _DIMENSION_COLUMN else None
    at = {name: i for i, name in enumerate(names)}
    # Families are summed from category ids here: grouped rows only, never the incidents.
    merged: dict[tuple[str, Any, str], int] = defaultdict(int)
    keys: dict[Any, str] = {}
    for row in grouped:
        unit = row[at["unit"]] or "" if layer is not None else ""
        moment = row[at["bucket"]] if bucket is not None else 0
        key = ""
        if by is not None:
            raw = row[at["key"]]
            if raw not in keys:
                keys[raw] = _key(by, raw, ref) or ""
            key = keys[raw]
        merged[(unit, moment, key)] += row[-1]
    zone = local_zone()
    starts: dict[Any, dt.datetime | None] = {0: None}
    rows: list[dict[str, Any]] = []
    for (unit, moment, key), count in sorted(merged.items()):
        if moment not in starts:
            starts[moment] = (
                moment
                if isinstance(moment, dt.datetime)
                else dt.datetime.combine(moment, dt.time(), tzinfo=zone)
            )
        rows.append(
            {
                "unit": unit or None,
                "bucket": starts[moment],
                "key": key or None if by is not None else None,
                "count": int(count),
            }
        )
    return rows


def _field(layer: str) -> str:
    return LAYER_FIELDS[layer]


def unit_summary(user: Any, *, query: StatsFilter, layer: str) -> list[dict[str, Any]]:
    """Per unit of `layer` (every unit, zeros included): totals by family, grade and state, and density."""
    column = _field(layer)
    queryset = apply_filter(incidents_for_stats(user), query).order_by()
    families: dict[str, list[int]] = defaultdict(list)
    for pk, family in Category.objects.values_list("pk", "family"):
        families[family].append(pk)
    grades = dict(Grade.objects.values_list("code", "pk"))
    aggregates: dict[str, Any] = {
        "total": Count("pk"),
        "open": Count("pk", filter=Q(status__in=OPEN_STATUSES)),
        "done": Count("pk", filter=Q(status__in=DONE_STATUSES)),
        "cancelled": Count("pk", filter=Q(status=Status.CANCELLED)),
        "overdue": Count("pk", filter=Q(overdue_at__isnull=False)),
    }
    for family in Family.values:
        aggregates[f"family_{family}"] = Count("pk", filter=Q(category_id__in=families.get(family, [-1])))
    for code, pk in grades.items():
        aggregates[f"grade_{code}"] = Count("pk", filter=Q(grade_id=pk))
    aggregates["grade_none"] = Count("pk", filter=Q(grade_id__isnull=True))
    counted = {
        row[column]: row
        for row in queryset.values(column).annotate(**aggregates)
        if row[column] not in ("", None)
    }
    zero = {name: 0 for name in aggregates}
    units = TerritoryUnit.objects.filter(layer=layer).order_by("code").values_list("code", "name", "area_m2")
    days = max(query.span.total_seconds() / 86400.0, 1e-9)
    result: list[dict[str, Any]] = []
    for code, name, area_m2 in units:
        row = counted.pop(code, None) or zero
        figures = {k: int(row[k]) for k in aggregates}
        area_km2 = float(area_m2) / 1e6 if area_m2 else 0.0
        density = figures["total"] / area_km2 if area_km2 > 0 else None
        result.append(
            {
                "code": code,
                "name": name,
                "layer": layer,
                "area_km2": round(area_km2, 6),
                **figures,
                "density_per_km2": density,
                "per_km2_per_day": density / days if density is not None else None,
            }
        )
    # Incidents whose unit code is no longer in the territory (an edited layer) still count, by code.
    for code, row in sorted(counted.items()):
        figures = {k: int(row[k]) for k in aggregates}
        result.append(
            {
                "code": code,
                "name": "",
                "layer": layer,
                "area_km2": None,
                **figures,
                "density_per_km2": None,
                "per_km2_per_day": None,
            }
        )
    return result


def summary_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The column names of unit_summary rows, in order (for CSV and GeoPackage)."""
    for row in rows:
        return list(row)
    return ["code", "name", "layer", "area_km2", "total"]


def period_compare(user: Any, *, query: StatsFilter) -> dict[str, Any]:
    """This period against the period of equal length before it: totals, by family and grade, per day."""
    previous = query.previous()
    ref = Reference.load()
    both = StatsFilter(
        start=previous.start,
        end=query.end,
        category=query.category,
        grade=query.grade,
        status=query.status,
        area=query.area,
        overdue=query.overdue,
    )
    # One GROUP BY over both periods: (which period, local day, category, grade) with conditional counts.
    grouped = (
        apply_filter(incidents_for_stats(user), both)
        .order_by()
        .annotate(
            current=Case(When(reported_at__gte=query.start, then=Value(1)), default=Value(0)),
            day=Cast(TruncDay("reported_at", tzinfo=local_zone()), output_field=DateField()),
        )
        .values("current", "day", "category_id", "grade_id")
        .annotate(
            n=Count("pk"),
            overdue=Count("pk", filter=Q(overdue_at__isnull=False)),
            done=Count("pk", filter=Q(status__in=DONE_STATUSES)),
        )
        .values_list("current", "day", "category_id", "grade_id", "n", "overdue", "done")
    )
    figures = {flag: _empty_figures(q, ref) for flag, q in ((1, query), (0, previous))}
    daily: dict[int, dict[dt.date, int]] = {1: defaultdict(int), 0: defaultdict(int)}
    for flag, day, cat, grade, n, overdue, done in grouped:
        target = figures[flag]
        target["total"] += n
        target["overdue"] += overdue
        target["done"] += done
        family = ref.category_family.get(cat, "")
        target["by_family"][family] = target["by_family"].get(family, 0) + n
        key = ref.grade_code.get(grade, "none") if grade is not None else "none"
        target["by_grade"][key] = target["by_grade"].get(key, 0) + n
        daily[flag][day] += n
    for flag, q in ((1, query), (0, previous)):
        days = []
        cursor = timezone.localtime(q.start, local_zone()).date()
        last = timezone.localtime(q.end - dt.timedelta(microseconds=1), local_zone()).date()
        while cursor <= last:
            days.append({"day": cursor.isoformat(), "count": int(daily[flag].get(cursor, 0))})
            cursor += dt.timedelta(days=1)
        figures[flag]["daily"] = days
    current, before = figures[1], figures[0]

    def change(now_value: int, then_value: int) -> float | None:
        return None if then_value == 0 else (now_value - then_value) / then_value

    return {
        "current": current,
        "previous": before,
        "change": {
            "total": change(current["total"], before["total"]),
            "overdue": change(current["overdue"], before["overdue"]),
            "done": change(current["done"], before["done"]),
        },
    }


def _empty_figures(query: StatsFilter, ref: Reference) -> dict[str, Any]:
    by_grade: dict[str, int] = {code: 0 for code in ref.grade_code.values()}
    by_grade["none"] = 0
    return {
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "total": 0,
        "overdue": 0,
        "done": 0,
        "by_family": {f: 0 for f in Family.values},
        "by_grade": by_grade,
        "daily": [],
    }
