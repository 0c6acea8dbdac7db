"""Early warnings: services (create, approve, issue, update, cancel, read, delivery, expiry, automatic
rules, CAP import) and selectors (visibility, coverage, CAP export).

Every state change is one function here, called alike by the REST routes, the page, the management
commands and the background loop; each writes the warning, its timeline row (WarningLogRecord) and
its realtime event (realtime.publish) in one transaction.

Recipients come from the area through gis area resolution (gis.locator.get_area_resolver): the active
users of every active department whose jurisdiction the area touches, the grid workers assigned to a
grid it touches, and the command centre (every active operator and commander). Issue, update and
cancel each make a new version: recipients are worked out again (an update or cancel reaches everyone
who had the warning plus anyone newly covered) and every receipt starts again at "not delivered, not
read" for the new version. See docs/warnings.md.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import shapely
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from audit.services import audit_record
from command import cap
from command.constants import Role
from command.hotspots import STATISTIC as HOTSPOT_STATISTIC
from command.hotspots import Hotspot, emerging_hotspots
from command.models import (
    LEVEL_NUMERAL,
    LEVEL_RANK,
    LIVE_WARNING_STATES,
    UNISSUED_WARNING_STATES,
    CapDirection,
    Department,
    EarlyWarning,
    RuleTrigger,
    User,
    WarningCapMessage,
    WarningLevel,
    WarningLogRecord,
    WarningOrigin,
    WarningReceipt,
    WarningRule,
    WarningRuleFiring,
    WarningStatus,
)
from gis.areas import MIN_SHARE, AreaResolver, circle
from gis.datums import canonical_crs, to_wgs84_many
from gis.geometry import areas_m2
from gis.locator import get_area_resolver
from incidents.models import Incident, Source, Status
from incidents.services import ActionError, retry_on_deadlock
from realtime.publish import publish

log = logging.getLogger(__name__)

CENTRE_ROLES = (Role.OPERATOR, Role.COMMANDER)
DEFAULT_APPROVAL_LEVELS = ("orange", "red")
DEFAULT_MAX_AREA_KM2 = 50_000.0
MAX_UNITS = 500
CAP_CATEGORIES = (
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
)
TEXT_KEYS = ("type", "headline", "description", "instructions")
# CAP geocode value names we read as territory units (export writes the first of each layer).
GEOCODE_LAYERS = {
    "gb2260": "district",
    "gb/t 2260": "district",
    "gb10114": "street",
    "gb/t 10114": "street",
    "yjld-district": "district",
    "yjld-street": "street",
    "yjld-community": "community",
    "yjld-grid": "grid",
    "yjld-block": "block",
}
EXPORT_GEOCODE = {
    "district": "GB2260",
    "street": "GB10114",
    "community": "YJLD-COMMUNITY",
    "grid": "YJLD-GRID",
    "block": "YJLD-BLOCK",
}
EVENT_CODE_NAME = "GB/T 35965.1"
PARENT_LAYER = {"street": "district", "community": "street", "grid": "community", "block": "community"}
DEFAULT_CAP_VALID_HOURS = 24.0


class WarningActionRefused(Exception):
    """An action this person may not take (403) or that the warning's state does not allow (409)."""

    def __init__(self, message: str, *, status: int = 409, allowed: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.allowed = list(allowed)


# ------------------------------------------------------------------------------------ levels, roles


def approval_levels() -> frozenset[str]:
    """Levels that need a commander's approval before issue (settings.WARNING_APPROVAL_LEVELS)."""
    return frozenset(getattr(settings, "WARNING_APPROVAL_LEVELS", DEFAULT_APPROVAL_LEVELS))


def needs_approval(level: str) -> bool:
    """True when a warning of this level needs a second person, a commander, before it is issued."""
    return level in approval_levels()


def _role(actor: Any) -> str:
    return str(getattr(actor, "role", "") or "") if actor is not None else "system"


def _actor_id(actor: Any) -> int | None:
    return getattr(actor, "pk", None) if actor is not None else None


# Which actions each state allows and who may take them ("system" is the background loop and imports).
ACTION_STATES: dict[str, frozenset[str]] = {
    "approve": frozenset({WarningStatus.DRAFT}),
    "issue": frozenset({WarningStatus.DRAFT, WarningStatus.APPROVED}),
    "update": frozenset({*UNISSUED_WARNING_STATES, *LIVE_WARNING_STATES}),
    "cancel": frozenset({*UNISSUED_WARNING_STATES, *LIVE_WARNING_STATES}),
    "read": frozenset({*LIVE_WARNING_STATES, WarningStatus.CANCELLED, WarningStatus.EXPIRED}),
}
ACTION_ROLES: dict[str, frozenset[str]] = {
    "approve": frozenset({Role.COMMANDER}),
    "issue": frozenset({*CENTRE_ROLES, "system"}),
    "update": frozenset({*CENTRE_ROLES, "system"}),
    "cancel": frozenset({*CENTRE_ROLES, "system"}),
    "read": frozenset(Role.values),
}


def allowed_actions(warning: EarlyWarning, user: Any) -> list[str]:
    """The actions `user` could take on `warning` now (for the API and the page)."""
    role = _role(user)
    result = []
    for action, states in ACTION_STATES.items():
        if warning.status not in states or role not in ACTION_ROLES[action]:
            continue
        if action == "approve" and _actor_id(user) in (warning.created_by_id, warning.edited_by_id):
            continue
        if action == "issue" and needs_approval(warning.level) and warning.status != WarningStatus.APPROVED:
            continue
        if (
            action == "read"
            and not WarningReceipt.objects.filter(
                warning=warning, user_id=_actor_id(user) or 0, read_at__isnull=True
            ).exists()
        ):
            continue  # only a recipient who has not read this version yet
        result.append(action)
    return result


def _check(warning: EarlyWarning, actor: Any, action: str) -> None:
    role = _role(actor)
    if role not in ACTION_ROLES[action]:
        raise WarningActionRefused(f"a {role or 'user'} may not {action} a warning", status=403)
    if warning.status not in ACTION_STATES[action]:
        raise WarningActionRefused(
            f"cannot {action} a warning that is {warning.status}", allowed=allowed_actions(warning, actor)
        )


# ---------------------------------------------------------------------------------------------- areas


@dataclass
class BuiltArea:
    """An area as stored: the normalised spec, the WGS-84 union, its size, and what it covers."""

    spec: dict[str, Any]
    geometry: Polygon | MultiPolygon
    km2: float
    resolution: dict[str, list[tuple[str, float]]]
    summary: dict[str, Any]


def max_area_km2() -> float:
    """The largest warning area accepted (settings.WARNING_MAX_AREA_KM2)."""
    return float(getattr(settings, "WARNING_MAX_AREA_KM2", DEFAULT_MAX_AREA_KM2))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ActionError(where, "a number is required")
    try:
        number = float(value)
    except ValueError:
        raise ActionError(where, f"not a number: {str(value)[:30]!r}") from None
    if not math.isfinite(number):
        raise ActionError(where, "must be a finite number")
    return number


def _ring(raw: Any, where: str, crs: str) -> list[tuple[float, float]]:
    if not isinstance(raw, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in raw):
        raise ActionError(where, "a ring is a list of [lon, lat] pairs")
    points = [(_number(p[0], f"{where}.lon"), _number(p[1], f"{where}.lat")) for p in raw]
    if points and points[0] != points[-1]:
        points.append(points[0])
    if len(points) < 4:
        raise ActionError(where, "a polygon needs at least three distinct points")
    if any(not (-180 <= x <= 180 and -90 <= y <= 90) for x, y in points):
        raise ActionError(where, "coordinates out of range (pairs are [lon, lat])")
    if crs not in ("wgs84", "cgcs2000"):
        xs, ys = to_wgs84_many(np.array([p[0] for p in points]), np.array([p[1] for p in points]), crs)
        points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    # Rounded to the stored precision (about 1 cm) before the checks, so what is stored is what was checked.
    points = [(round(x, 7), round(y, 7)) for x, y in points]
    polygon = Polygon(points)
    if not polygon.is_valid:
        raise ActionError(where, f"invalid polygon: {shapely.is_valid_reason(polygon)}")
    if polygon.area == 0.0:
        raise ActionError(where, "the polygon has no area")
    return points


def _polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon:
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon) and not g.is_empty]
    if not parts:
        raise ActionError("area", "the area has no surface")
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _swap_hint(resolver: AreaResolver, geometry: BaseGeometry) -> str:
    """A hint when the area would cover the territory with longitude and latitude swapped."""
    swapped = shapely.transform(geometry, lambda xy: xy[:, ::-1])
    try:
        if swapped.is_valid and any(resolver.resolve(swapped).values()):
            return " (it would with longitude and latitude swapped: pairs are [lon, lat])"
    except ValueError:
        pass  # swapped coordinates out of range: no hint to give
    return ""


def build_area(raw: Any, *, resolver: AreaResolver | None = None) -> BuiltArea:
    """Check and normalise an area {polygons, circles, units, crs, description} (ActionError names faults)."""
    if not isinstance(raw, Mapping):
        raise ActionError("area", "an object with polygons, circles and/or units is required")
    unknown = set(raw) - {"polygons", "circles", "units", "crs", "description"}
    if unknown:
        raise ActionError(f"area.{sorted(unknown)[0]}", "unknown key; use polygons, circles, units, crs")
    try:
        crs = canonical_crs(str(raw.get("crs") or "wgs84"))
    except ValueError as exc:
        raise ActionError("area.crs", str(exc)) from None
    resolver = resolver or get_area_resolver()
    polygons_raw, circles_raw, units_raw = (raw.get(k) or [] for k in ("polygons", "circles", "units"))
    for key, value in (("polygons", polygons_raw), ("circles", circles_raw), ("units", units_raw)):
        if not isinstance(value, list):
            raise ActionError(f"area.{key}", "a list is expected")
    if not (polygons_raw or circles_raw or units_raw):
        raise ActionError("area", "give at least one polygon, circle or named unit")
    vertices = sum(len(r) for r in polygons_raw if isinstance(r, list))
    if vertices > cap.max_vertices():
        raise ActionError("area.polygons", f"{vertices} points, more than the limit of {cap.max_vertices()}")
    if len(units_raw) > MAX_UNITS:
        raise ActionError("area.units", f"{len(units_raw)} units, more than the limit of {MAX_UNITS}")
    spec: dict[str, Any] = {"polygons": [], "circles": [], "units": []}
    parts: list[BaseGeometry] = []
    for i, ring in enumerate(polygons_raw):
        points = _ring(ring, f"area.polygons[{i}]", crs)
        spec["polygons"].append([list(p) for p in points])
        parts.append(Polygon(points))
    for i, item in enumerate(circles_raw):
        where = f"area.circles[{i}]"
        if not isinstance(item, Mapping):
            raise ActionError(where, "a circle is {lon, lat, radius_m}")
        lon, lat = _number(item.get("lon"), f"{where}.lon"), _number(item.get("lat"), f"{where}.lat")
        radius = _number(item.get("radius_m"), f"{where}.radius_m")
        if crs not in ("wgs84", "cgcs2000"):
            xs, ys = to_wgs84_many(np.array([lon]), np.array([lat]), crs)
            lon, lat = float(xs[0]), float(ys[0])
        try:
            parts.append(circle(lon, lat, radius))
        except ValueError as exc:
            raise ActionError(where, str(exc)) from None
        spec["circles"].append({"lon": round(lon, 7), "lat": round(lat, 7), "radius_m": radius})
    has_units = False
    for i, item in enumerate(units_raw):
        where = f"area.units[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("layer"), str):
            raise ActionError(where, "a unit is {layer, code}")
        layer, code = str(item["layer"]), str(item.get("code") or "")
        try:
            unit = resolver.unit(layer, code)
        except KeyError:
            raise ActionError(where, f"no {layer} with code {code!r} in the territory") from None
        spec["units"].append({"layer": layer, "code": code})
        parts.append(unit.geometry)
        has_units = True
    geometry = _polygonal(shapely.union_all(parts) if len(parts) > 1 else parts[0])
    tolerance = 1e-6
    # Named units can carry more vertices than a drawn area may; simplifying by a metre or so costs
    # only slivers, which area resolution ignores anyway.
    while has_units and shapely.get_num_coordinates(geometry) > resolver.max_vertices and tolerance < 1e-3:
        geometry = _polygonal(geometry.simplify(tolerance, preserve_topology=True))
        tolerance *= 10
    if shapely.get_num_coordinates(geometry) > resolver.max_vertices:
        raise ActionError("area", f"the area has more than {resolver.max_vertices} vertices; simplify it")
    if not geometry.is_valid:
        geometry = _polygonal(shapely.make_valid(geometry))
    km2 = float(areas_m2([geometry])[0]) / 1e6
    if km2 > max_area_km2():
        raise ActionError(
            "area", f"the area is {km2:,.0f} km², more than the limit of {max_area_km2():,.0f} km²"
        )
    try:
        resolution = resolver.resolve(geometry)
    except ValueError as exc:
        raise ActionError("area", str(exc)) from None
    if not any(resolution.values()):
        raise ActionError("area", f"the area covers no part of the territory{_swap_hint(resolver, geometry)}")
    spec["crs_in"] = crs
    summary = {
        "counts": {layer: len(items) for layer, items in resolution.items()},
        "districts": [code for code, _ in resolution.get("district", [])],
        "streets": [code for code, _ in resolution.get("street", [])],
    }
    return BuiltArea(spec=spec, geometry=geometry, km2=km2, resolution=resolution, summary=summary)


def warning_area(warning: EarlyWarning) -> Polygon | MultiPolygon:
    """The warning's area as a WGS-84 shapely geometry."""
    return _polygonal(shapely.from_wkb(bytes(warning.area_wkb)))


# ----------------------------------------------------------------------------------------- recipients


@dataclass
class Recipient:
    """Why one user receives a warning: their unit, the reasons, the covered districts they answer for."""

    department_id: int | None
    reasons: set[str] = field(default_factory=set)
    districts: set[str] = field(default_factory=set)


def _district_of(
    resolver: AreaResolver, layer: str, code: str, cache: dict[tuple[str, str], str | None]
) -> str | None:
    key = (layer, code)
    if key not in cache:
        found: str | None = None
        current: tuple[str, str] | None = key
        for _ in range(8):  # the hierarchy is at most five deep; the bound guards a corrupt parent loop
            if current is None:
                break
            try:
                unit = resolver.unit(*current)
            except KeyError:
                break
            if unit.layer == "district":
                found = unit.code
                break
            parent = unit.parent_code
            current = (PARENT_LAYER.get(unit.layer, ""), parent) if parent else None
        cache[key] = found
    return cache[key]


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    # SQLite caps bound parameters far below PostgreSQL's 65,535.
    size = 900 if connection.vendor == "sqlite" else 10_000
    for start in range(0, len(values), size):
        yield values[start : start + size]


def warning_audience(resolution: Mapping[str, Sequence[tuple[str, float]]]) -> dict[int, Recipient]:
    """Recipients (user id → Recipient) of an area already resolved to territory units."""
    resolver = get_area_resolver()
    covered = {
        (layer, code) for layer, items in resolution.items() for code, share in items if share > MIN_SHARE
    }
    cache: dict[tuple[str, str], str | None] = {}
    audience: dict[int, Recipient] = {}

    def add(user_id: int, department_id: int | None, reason: str, districts: Iterable[str | None]) -> None:
        recipient = audience.get(user_id)
        if recipient is None:
            recipient = audience[user_id] = Recipient(department_id)
        recipient.reasons.add(reason)
        recipient.districts.update(d for d in districts if d)

    departments: dict[int, set[str]] = defaultdict(set)
    through = Department.jurisdiction.through
    rows = through.objects.filter(department__active=True).values_list(
        "department_id", "territoryunit__layer", "territoryunit__code"
    )
    for department_id, layer, code in rows:
        if (layer, code) in covered:
            departments[department_id].add(_district_of(resolver, layer, code, cache) or "")
    if departments:
        members = User.objects.filter(is_active=True, department_id__in=list(departments)).values_list(
            "pk", "department_id"
        )
        for user_id, department_id in members:
            add(user_id, department_id, "department", departments[department_id])

    grid_codes = sorted(code for layer, code in covered if layer == "grid")
    assigned = User.grids.through
    for chunk in _chunks(grid_codes):
        for user_id, department_id, code in assigned.objects.filter(
            territoryunit__layer="grid",
            territoryunit__code__in=chunk,
            user__is_active=True,
            user__role=Role.GRID_WORKER,
        ).values_list("user_id", "user__department_id", "territoryunit__code"):
            add(user_id, department_id, "grid", [_district_of(resolver, "grid", code, cache)])

    for user_id, department_id in User.objects.filter(is_active=True, role__in=CENTRE_ROLES).values_list(
        "pk", "department_id"
    ):
        add(user_id, department_id, "centre", [])
    return audience


def _centre_ids() -> list[int]:
    return list(User.objects.filter(is_active=True, role__in=CENTRE_ROLES).values_list("pk", flat=True))


# ------------------------------------------------------------------------------- timeline and events


def warning_event_data(warning: EarlyWarning, action: str) -> dict[str, Any]:
    """The data of a warning.* realtime event."""
    return {
        "id": warning.pk,
        "level": warning.level,
        "type": warning.type,
        "headline": warning.headline,
        "status": warning.status,
        "version": warning.version,
        "action": action,
        "area_desc": warning.area_desc,
        "effective_at": _iso(warning.effective_at),
        "expires_at": _iso(warning.expires_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _log(
    warning: EarlyWarning,
    *,
    actor: Any,
    action: str,
    source: str,
    from_status: str,
    reason: str = "",
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> WarningLogRecord:
    record = WarningLogRecord.objects.create(
        warning=warning,
        at=at or timezone.now(),
        actor=actor if _actor_id(actor) else None,
        actor_role=_role(actor),
        source=source,
        action=action,
        from_status=from_status,
        to_status=warning.status,
        reason=reason,
        data=data or {},
    )
    audit_record(
        action=action,
        object_type="warning",
        object_id=warning.pk,
        actor=actor if _actor_id(actor) else None,
        source=source,
        from_status=from_status,
        to_status=warning.status,
        reason=reason,
        data=data or {},
        at=record.at,
    )
    return record


def _coverage_totals(warning: EarlyWarning) -> dict[str, int]:
    counts = WarningReceipt.objects.filter(warning=warning).aggregate(
        recipients=Count("pk"),
        delivered=Count("pk", filter=Q(delivered_at__isnull=False)),
        read=Count("pk", filter=Q(read_at__isnull=False)),
    )
    return {k: int(v or 0) for k, v in counts.items()}


def _insert_receipts(warning: EarlyWarning, fresh: dict[int, Recipient], now: datetime) -> None:
    if not fresh:
        return
    if connection.vendor != "postgresql":
        WarningReceipt.objects.bulk_create(
            [
                WarningReceipt(
                    warning=warning,
                    user_id=user_id,
                    department_id=r.department_id,
                    reasons=sorted(r.reasons),
                    districts=sorted(r.districts),
                    version=warning.version,
                    notified_at=now,
                )
                for user_id, r in fresh.items()
            ],
            batch_size=500,
        )
        return
    # One INSERT … SELECT FROM unnest(arrays) instead of thousands of model instances: building and
    # binding those was most of the time of issuing to 5,000 people (see bench/warnings.py).
    users = list(fresh)
    table = WarningReceipt._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (warning_id, user_id, department_id, reasons, districts, version, "
            "notified_at, read_source) "
            "SELECT %s, t.u, t.d, t.r::jsonb, t.ds::jsonb, %s, %s, '' "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS t(u, d, r, ds)",
            [
                warning.pk,
                warning.version,
                now,
                users,
                [fresh[u].department_id for u in users],
                [json.dumps(sorted(fresh[u].reasons)) for u in users],
                [json.dumps(sorted(fresh[u].districts)) for u in users],
            ],
        )


def _fan_out(warning: EarlyWarning, *, event: str, action: str, now: datetime) -> dict[str, Any]:
    """Work out recipients again, start every receipt afresh for this version, and publish to them all."""
    resolver = get_area_resolver()
    resolution = resolver.resolve(warning_area(warning))
    audience = warning_audience(resolution)
    existing = {
        user_id: (pk, reasons, districts)
        for pk, user_id, reasons, districts in WarningReceipt.objects.filter(warning=warning).values_list(
            "pk", "user_id", "reasons", "districts"
        )
    }
    before = _coverage_totals(warning) if existing else None
    if existing:
        WarningReceipt.objects.filter(warning=warning).update(
            version=warning.version, notified_at=now, delivered_at=None, read_at=None, read_source=""
        )
        widened = []
        for user_id, (pk, old_reasons, old_districts) in existing.items():
            recipient = audience.get(user_id)
            if recipient is None:
                continue
            reasons = sorted(set(old_reasons) | recipient.reasons)
            districts = sorted(set(old_districts) | recipient.districts)
            if reasons != sorted(old_reasons) or districts != sorted(old_districts):
                widened.append(WarningReceipt(pk=pk, reasons=reasons, districts=districts))
        WarningReceipt.objects.bulk_update(widened, ["reasons", "districts"], batch_size=1000)
    fresh = {user_id: r for user_id, r in audience.items() if user_id not in existing}
    _insert_receipts(warning, fresh, now)
    recipients = sorted(set(existing) | set(audience))
    publish(name=event, data=warning_event_data(warning, action), recipients=recipients)
    result: dict[str, Any] = {"recipients": len(recipients), "newly_covered": len(fresh)}
    if before is not None:
        result["previous_version_coverage"] = before
    return result


def _notify_centre(warning: EarlyWarning, *, event: str, action: str) -> None:
    publish(name=event, data=warning_event_data(warning, action), recipients=_centre_ids())


# ------------------------------------------------------------------------------------- input checking


def _text(payload: Mapping[str, Any], key: str, *, max_length: int, required: bool = False) -> str | None:
    if key not in payload or payload[key] is None:
        if required:
            raise ActionError(key, "is required")
        return None
    value = payload[key]
    if not isinstance(value, str):
        raise ActionError(key, "a string is expected")
    value = value.strip()
    if required and not value:
        raise ActionError(key, "must not be empty")
    if len(value) > max_length:
        raise ActionError(key, f"at most {max_length} characters")
    bad = _XML_ILLEGAL.search(value)
    if bad:
        # Such characters cannot appear in CAP XML at all, so they are refused at the door.
        raise ActionError(key, f"contains a control character (U+{ord(bad.group()):04X})")
    return value


# Characters XML 1.0 does not allow (tab, newline and carriage return are allowed).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _moment(payload: Mapping[str, Any], key: str) -> datetime | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        parsed = parse_datetime(value.strip())
        if parsed is None:
            raise ActionError(key, f"not an ISO 8601 date-time: {value[:40]!r}")
        moment = parsed
    else:
        raise ActionError(key, "an ISO 8601 date-time string is expected")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def _translations(value: Any) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ActionError("translations", "an object {language: {type, headline, description, instructions}}")
    result: dict[str, dict[str, str]] = {}
    for language, texts in value.items():
        where = f"translations.{language}"
        if not isinstance(language, str) or not 2 <= len(language) <= 16:
            raise ActionError("translations", f"{str(language)[:20]!r} is not a language tag")
        if not isinstance(texts, Mapping) or set(texts) - set(TEXT_KEYS):
            raise ActionError(where, f"an object with any of {', '.join(TEXT_KEYS)}")
        if not all(isinstance(v, str) and len(v) <= 8000 for v in texts.values()):
            raise ActionError(where, "texts are strings of at most 8000 characters")
        result[language] = {k: v.strip() for k, v in texts.items()}
    return result


WARNING_FIELDS = (
    "level",
    "type",
    "event_code",
    "cap_category",
    "headline",
    "description",
    "instructions",
    "language",
    "translations",
    "area",
    "effective",
    "onset",
    "expires",
)


def _apply_fields(
    warning: EarlyWarning, payload: Mapping[str, Any], *, creating: bool, now: datetime
) -> list[str]:
    """Check and copy the given fields onto an unsaved warning; return the names that changed."""
    unknown = [k for k in payload if k not in WARNING_FIELDS and k != "reason"]
    if unknown:
        raise ActionError(unknown[0], f"unknown field; use any of {', '.join(WARNING_FIELDS)}")
    changed: list[str] = []

    def put(name: str, value: Any) -> None:
        if getattr(warning, name) != value:
            setattr(warning, name, value)
            changed.append(name)

    if creating or "level" in payload:
        level = payload.get("level")
        if level not in WarningLevel.values:
            raise ActionError("level", f"one of {', '.join(WarningLevel.values)} is required")
        put("level", level)
    for key, model_field, limit in (
        ("type", "type", 64),
        ("headline", "headline", 256),
        ("description", "description", 8000),
        ("instructions", "instructions", 8000),
        ("event_code", "event_code", 16),
        ("language", "language", 16),
    ):
        value = _text(payload, key, max_length=limit, required=creating and key in ("type", "headline"))
        if value is not None:
            if key in ("type", "headline") and not value:
                raise ActionError(key, "must not be empty")
            put(model_field, value)
    if "cap_category" in payload:
        if payload["cap_category"] not in CAP_CATEGORIES:
            raise ActionError("cap_category", f"one of {', '.join(CAP_CATEGORIES)}")
        put("cap_category", payload["cap_category"])
    if "translations" in payload:
        put("translations", _translations(payload["translations"]))
    if creating or "effective" in payload:
        put("effective_at", _moment(payload, "effective") or warning.effective_at or now)
    if "onset" in payload or creating:
        put("onset_at", _moment(payload, "onset"))
    if "expires" in payload or creating:
        expires = _moment(payload, "expires")
        if expires is None:
            raise ActionError("expires", "an expiry time is required")
        put("expires_at", expires)
    if warning.expires_at is not None and warning.expires_at <= warning.effective_at:
        raise ActionError("expires", "must be after the warning takes effect")
    if (
        warning.expires_at is not None
        and warning.onset_at is not None
        and warning.expires_at <= warning.onset_at
    ):
        raise ActionError("expires", "must be after the onset")
    if (creating or "expires" in payload) and warning.expires_at is not None and warning.expires_at <= now:
        raise ActionError("expires", "must be in the future")
    if creating or "area" in payload:
        area_raw = payload.get("area")
        built = build_area(area_raw)
        if creating or built.spec != warning.area_spec:
            warning.area_spec = built.spec
            warning.area_wkb = shapely.to_wkb(built.geometry)
            warning.area_km2 = built.km2
            warning.area_summary = built.summary
            changed.append("area")
        description = area_raw.get("description") if isinstance(area_raw, Mapping) else None
        if description is not None:
            if not isinstance(description, str) or len(description) > 512:
                raise ActionError("area.description", "a string of at most 512 characters")
            put("area_desc", description.strip())
        elif creating and not warning.area_desc:
            warning.area_desc = _describe(built)
    return changed


def _describe(built: BuiltArea) -> str:
    resolver = get_area_resolver()
    names = []
    for layer in ("district", "street"):
        for code, share in built.resolution.get(layer, []):
            if share > 0.01:
                names.append(resolver.unit(layer, code).name)
        if names:
            break
    text = "、".join(names[:12]) + ("等" if len(names) > 12 else "")
    return text[:512]


# -------------------------------------------------------------------------------------------- services


def warning_create(
    *,
    actor: Any,
    source: str = Source.API,
    payload: Mapping[str, Any],
    origin: str = WarningOrigin.MANUAL,
    reason: str = "",
    log_data: dict[str, Any] | None = None,
) -> EarlyWarning:
    """Draft a warning (level, type, texts, area, times); ActionError names a bad field, nothing is saved."""
    role = _role(actor)
    if role not in (*CENTRE_ROLES, "system"):
        raise WarningActionRefused(f"a {role or 'user'} may not draft warnings", status=403)
    now = timezone.now()
    warning = EarlyWarning(created_at=now, origin=origin, status=WarningStatus.DRAFT)
    _apply_fields(warning, payload, creating=True, now=now)
    with transaction.atomic():
        warning.created_by = actor if _actor_id(actor) else None
        warning.save()
        action = "auto_draft" if origin == WarningOrigin.RULE else "create"
        _log(warning, actor=actor, action=action, source=source, from_status="", reason=reason, data=log_data)
        _notify_centre(warning, event="warning.updated", action=action)
    return warning


def _locked(warning_id: int) -> EarlyWarning:
    return EarlyWarning.objects.select_for_update().get(pk=warning_id)


def warning_approve(
    *, warning_id: int, actor: Any, source: str = Source.API, reason: str = ""
) -> EarlyWarning:
    """A commander who neither drafted nor last edited the warning approves it for issue."""
    with transaction.atomic():
        warning = _locked(warning_id)
        _check(warning, actor, "approve")
        if _actor_id(actor) in (warning.created_by_id, warning.edited_by_id):
            raise WarningActionRefused(
                "a commander cannot approve a warning they drafted or edited: a second person must",
                status=403,
            )
        now = timezone.now()
        warning.status = WarningStatus.APPROVED
        warning.approved_by, warning.approved_at = actor, now
        warning.save()
        _log(
            warning,
            actor=actor,
            action="approve",
            source=source,
            from_status=WarningStatus.DRAFT,
            reason=reason,
        )
        _notify_centre(warning, event="warning.updated", action="approve")
    return warning


def _new_cap_message(warning: EarlyWarning, msg_type: str, now: datetime) -> WarningCapMessage:
    """Give this version its GB/T 35965.1 identifier: the first free serial N of the second, else the next."""
    code, sender = cap.issuer_code(), cap.sender_id()
    moment = now.replace(microsecond=0)
    for _ in range(60):
        prefix = cap.make_identifier(code, moment, 0)[:-1]
        taken = set(
            WarningCapMessage.objects.filter(sender=sender, identifier__startswith=prefix).values_list(
                "identifier", flat=True
            )
        )
        for serial in range(10):
            identifier = f"{prefix}{serial}"
            if identifier in taken:
                continue
            try:
                with transaction.atomic():
                    return WarningCapMessage.objects.create(
                        warning=warning,
                        direction=CapDirection.OUT,
                        sender=sender,
                        identifier=identifier,
                        sent=moment,
                        msg_type=msg_type,
                        version=warning.version,
                        at=now,
                    )
            except IntegrityError:
                continue  # another transaction took this serial in the meantime
        moment += timedelta(seconds=1)
    raise RuntimeError("no free CAP identifier within a minute")


def warning_issue(*, warning_id: int, actor: Any, source: str = Source.API, reason: str = "") -> EarlyWarning:
    """Issue a draft (blue, yellow) or approved warning: recipients, receipts, events in one transaction."""
    with transaction.atomic():
        warning = _locked(warning_id)
        _check(warning, actor, "issue")
        if needs_approval(warning.level) and (
            warning.status != WarningStatus.APPROVED or not warning.approved_by_id
        ):
            raise WarningActionRefused(
                f"a {warning.level} warning needs a commander's approval before it is issued",
                allowed=allowed_actions(warning, actor),
            )
        now = timezone.now()
        if warning.expires_at is not None and warning.expires_at <= now:
            raise ActionError("expires", "the warning has already expired; update its expiry first")
        from_status = warning.status
        warning.status = WarningStatus.ISSUED
        warning.version += 1
        warning.issued_by = actor if _actor_id(actor) else None
        warning.issued_at = now
        warning.save()
        message = _new_cap_message(warning, "Alert", now)
        counts = _fan_out(warning, event="warning.issued", action="issue", now=now)
        _log(
            warning,
            actor=actor,
            action="issue",
            source=source,
            from_status=from_status,
            reason=reason,
            data={**counts, "version": warning.version, "identifier": message.identifier},
            at=now,
        )
    return warning


def warning_update(
    *,
    warning_id: int,
    actor: Any,
    source: str = Source.API,
    changes: Mapping[str, Any],
    reason: str = "",
    log_data: dict[str, Any] | None = None,
) -> EarlyWarning:
    """Change a warning: a draft is edited (voiding approval); a live one becomes a new version, sent out."""
    with transaction.atomic():
        warning = _locked(warning_id)
        _check(warning, actor, "update")
        now = timezone.now()
        old_level, from_status = warning.level, warning.status
        changed = _apply_fields(warning, changes, creating=False, now=now)
        if not changed:
            raise ActionError("changes", "nothing to change: give at least one field with a new value")
        data: dict[str, Any] = {"changed": changed, **(log_data or {})}
        if from_status in UNISSUED_WARNING_STATES:
            warning.status = WarningStatus.DRAFT
            warning.edited_by = actor if _actor_id(actor) else None
            if from_status == WarningStatus.APPROVED:
                warning.approved_by, warning.approved_at = None, None
                data["approval_voided"] = True
            warning.save()
            _log(
                warning,
                actor=actor,
                action="edit",
                source=source,
                from_status=from_status,
                reason=reason,
                data=data,
            )
            _notify_centre(warning, event="warning.updated", action="edit")
            return warning
        raised = LEVEL_RANK[warning.level] < LEVEL_RANK[old_level]
        if raised and needs_approval(warning.level):
            # Raising a live warning into a level that needs two people: the drafter plus a commander.
            if _role(actor) != Role.COMMANDER or _actor_id(actor) == warning.created_by_id:
                raise WarningActionRefused(
                    f"raising a warning to {warning.level} needs a commander other than its drafter",
                    status=403,
                )
            warning.approved_by, warning.approved_at = actor, now
        warning.status = WarningStatus.UPDATED
        warning.version += 1
        warning.save()
        message = _new_cap_message(warning, "Update", now)
        counts = _fan_out(warning, event="warning.updated", action="update", now=now)
        data.update(counts, version=warning.version, identifier=message.identifier)
        _log(
            warning,
            actor=actor,
            action="update",
            source=source,
            from_status=from_status,
            reason=reason,
            data=data,
            at=now,
        )
    return warning


def warning_cancel(
    *,
    warning_id: int,
    actor: Any,
    source: str = Source.API,
    reason: str,
    log_data: dict[str, Any] | None = None,
) -> EarlyWarning:
    """Cancel a warning (a reason is required); a live one reaches its recipients and anyone newly covered."""
    reason = (reason or "").strip()
    if not reason:
        raise ActionError("reason", "a reason is required to cancel a warning")
    with transaction.atomic():
        warning = _locked(warning_id)
        _check(warning, actor, "cancel")
        now = timezone.now()
        from_status = warning.status
        warning.status = WarningStatus.CANCELLED
        warning.cancelled_at = now
        data: dict[str, Any] = dict(log_data or {})
        if from_status in LIVE_WARNING_STATES:
            warning.version += 1
            warning.save()
            message = _new_cap_message(warning, "Cancel", now)
            data.update(_fan_out(warning, event="warning.cancelled", action="cancel", now=now))
            data.update(version=warning.version, identifier=message.identifier)
        else:
            warning.save()
            _notify_centre(warning, event="warning.cancelled", action="cancel")
        _log(
            warning,
            actor=actor,
            action="cancel",
            source=source,
            from_status=from_status,
            reason=reason,
            data=data,
            at=now,
        )
    return warning


def warning_mark_read(
    *, warning_id: int, user: Any, source: str = Source.API, at: datetime | None = None
) -> WarningReceipt:
    """A recipient has read the warning's current version (first read counts; it implies delivery)."""
    with transaction.atomic():
        warning = EarlyWarning.objects.get(pk=warning_id)
        _check(warning, user, "read")
        receipt = (
            WarningReceipt.objects.select_for_update()
            .filter(warning=warning, user_id=_actor_id(user) or 0)
            .first()
        )
        if receipt is None:
            raise WarningActionRefused("you are not a recipient of this warning", status=403)
        at = at or timezone.now()
        if receipt.read_at is None:
            receipt.read_at, receipt.read_source = at, source
            receipt.delivered_at = receipt.delivered_at or at
            receipt.save(update_fields=["read_at", "read_source", "delivered_at"])
    return receipt


def warning_mark_delivered(
    warning_id: int, user_id: int, at: datetime | None = None, *, version: int | None = None
) -> bool:
    """Record that the recipient's client acknowledged the warning (first ack counts); False if nothing to do.

    `version` (from the event's data) keeps a late acknowledgement of an older version from marking the
    current one delivered.
    """
    return bool(_undelivered(warning_id, [user_id], version).update(delivered_at=at or timezone.now()))


def _undelivered(warning_id: int, user_ids: list[int], version: int | None) -> QuerySet[WarningReceipt]:
    """The receipts of these users for the warning (of that version, if given) not yet delivered."""
    receipts = WarningReceipt.objects.filter(
        warning_id=warning_id, user_id__in=user_ids, delivered_at__isnull=True
    )
    return receipts if version is None else receipts.filter(version=version)


def warnings_delivered_on_ack(acks: dict[int, list[tuple[str, dict[str, Any]]]]) -> None:
    """An ack hook for realtime: each first-acknowledged warning.* event marks that receipt delivered.

    One UPDATE per warning version for all the users of a flush (a warning to 5,000 clients comes back
    as 5,000 acks within a second), not one per user.
    """
    users_of: dict[tuple[int, int | None], set[int]] = {}
    for user_id, events in acks.items():
        for name, data in events:
            if name.startswith("warning.") and isinstance(data.get("id"), int):
                version = data.get("version")
                key = (data["id"], version if isinstance(version, int) else None)
                users_of.setdefault(key, set()).add(user_id)
    now = timezone.now()
    for (warning_id, version), user_ids in users_of.items():
        receipts = _undelivered(warning_id, sorted(user_ids), version)
        # Two processes' flushes may share users (a user's tabs on both): retried if they deadlock.
        retry_on_deadlock(functools.partial(receipts.update, delivered_at=now))


def warnings_tick(*, now: datetime | None = None) -> int:
    """Expire live warnings whose expiry has passed; each expires once even with several workers."""
    now = now or timezone.now()
    due = list(
        EarlyWarning.objects.filter(status__in=LIVE_WARNING_STATES, expires_at__lte=now).values_list(
            "pk", "status"
        )
    )
    expired = 0
    for pk, from_status in due:
        with transaction.atomic():
            # The conditional update is the once-only guard: a second worker finds the status changed.
            if not EarlyWarning.objects.filter(pk=pk, status=from_status, expires_at__lte=now).update(
                status=WarningStatus.EXPIRED, expired_at=now
            ):
                continue
            warning = EarlyWarning.objects.get(pk=pk)
            recipients = list(
                WarningReceipt.objects.filter(warning=warning).values_list("user_id", flat=True)
            )
            publish(name="warning.updated", data=warning_event_data(warning, "expire"), recipients=recipients)
            _log(warning, actor=None, action="expire", source=Source.SYSTEM, from_status=from_status, at=now)
            expired += 1
    return expired


def warning_act(
    *,
    warning_id: int,
    actor: Any,
    action: str,
    source: str = Source.API,
    payload: Mapping[str, Any] | None = None,
) -> EarlyWarning:
    """Carry out one action by name (approve, issue, update, cancel, read), as the REST route does."""
    payload = dict(payload or {})
    reason = str(payload.pop("reason", "") or "").strip()
    if action == "approve":
        return warning_approve(warning_id=warning_id, actor=actor, source=source, reason=reason)
    if action == "issue":
        return warning_issue(warning_id=warning_id, actor=actor, source=source, reason=reason)
    if action == "update":
        changes = payload.get("changes", payload)
        if not isinstance(changes, Mapping):
            raise ActionError("changes", "an object of fields to change is expected")
        return warning_update(
            warning_id=warning_id, actor=actor, source=source, changes=changes, reason=reason
        )
    if action == "cancel":
        return warning_cancel(warning_id=warning_id, actor=actor, source=source, reason=reason)
    if action == "read":
        warning_mark_read(warning_id=warning_id, user=actor, source=source)
        return EarlyWarning.objects.get(pk=warning_id)
    raise ActionError("action", f"unknown action {action!r}; use any of {', '.join(ACTION_STATES)}")


# ------------------------------------------------------------------------------------ automatic rules


def _cluster_incidents(rule: WarningRule, start: datetime, now: datetime) -> QuerySet[Incident]:
    # Open or handled incidents only: cancelled reports and merged duplicates would count twice or wrongly.
    column = f"{rule.unit_layer}_code"
    return (
        Incident.objects.filter(Q(category_id=rule.category_id) | Q(category__parent_id=rule.category_id))
        .filter(reported_at__gt=start, reported_at__lte=now, merged_into__isnull=True)
        .exclude(status__in=[Status.CANCELLED, Status.MERGED])
        .exclude(**{column: ""})
    )


def _rule_candidates(
    rule: WarningRule, incidents: QuerySet[Incident], column: str, now: datetime
) -> dict[str, Hotspot | None]:
    """The units that may fire, each with its hotspot figures (None for a plain threshold rule)."""
    if rule.trigger != RuleTrigger.EMERGING:
        codes = (
            incidents.values(column)
            .annotate(n=Count("pk"))
            .filter(n__gte=rule.min_count)
            .values_list(column, flat=True)
        )
        return dict.fromkeys(codes)
    # The same population as a threshold rule counts (no cancelled reports, no merged duplicates),
    # tested against each unit's own history just before the window.
    population = (
        Incident.objects.filter(merged_into__isnull=True)
        .exclude(status__in=[Status.CANCELLED, Status.MERGED])
        .exclude(**{column: ""})
    )
    return {
        h.code: h
        for h in emerging_hotspots(
            layer=rule.unit_layer,
            now=now,
            window=timedelta(minutes=rule.window_minutes),
            history=timedelta(days=rule.history_days),
            category=rule.category.code,
            min_count=rule.min_count,
            fdr=rule.fdr,
            incidents=population,
        )
        if h.emerging
    }


def _fire_rule(rule_id: int, now: datetime) -> int:
    fired = 0
    with transaction.atomic():
        # The rule's row lock serialises workers, so a cluster is recorded once however many tick.
        rule = WarningRule.objects.select_for_update().select_related("category").get(pk=rule_id)
        if not rule.enabled:
            return 0
        start = now - timedelta(minutes=rule.window_minutes)
        column = f"{rule.unit_layer}_code"
        incidents = _cluster_incidents(rule, start, now)
        statistics = _rule_candidates(rule, incidents, column, now)
        resolver = get_area_resolver()
        for code in sorted(statistics):
            ids = list(
                incidents.filter(**{column: code}).order_by("reported_at", "pk").values_list("pk", flat=True)
            )
            # An incident counts towards one firing only; earlier firings inside the window hold theirs.
            used: set[int] = set()
            for taken in WarningRuleFiring.objects.filter(
                rule=rule, unit_layer=rule.unit_layer, unit_code=code, fired_at__gt=start
            ).values_list("incident_ids", flat=True):
                used.update(taken)
            fresh = [pk for pk in ids if pk not in used]
            if len(fresh) < rule.min_count:
                continue
            try:
                unit = resolver.unit(rule.unit_layer, code)
            except KeyError:
                log.warning("rule %s: %s %s is not in the territory any more", rule.pk, rule.unit_layer, code)
                continue
            hotspot = statistics[code]
            fields: dict[str, Any] = {
                "unit_name": unit.name,
                "unit_code": code,
                "count": len(fresh),
                "minutes": rule.window_minutes,
                "category": rule.category.name,
                "expected": f"{hotspot.expected:.1f}" if hotspot else "",
                "ratio": f"{hotspot.ratio:.1f}" if hotspot and hotspot.ratio is not None else "",
            }
            payload = {
                "level": rule.level,
                "type": rule.warning_type,
                "headline": _fill(rule.headline, fields)[:256],
                "description": _fill(rule.description, fields),
                "instructions": rule.instructions,
                "area": {"units": [{"layer": rule.unit_layer, "code": code}], "description": unit.name},
                "effective": now,
                "expires": now + timedelta(minutes=rule.valid_minutes),
            }
            firing_data = {
                "rule": rule.pk,
                "rule_name": rule.name,
                "unit": f"{rule.unit_layer}:{code}",
                "incidents": fresh,
                "trigger": rule.trigger,
            }
            if hotspot is not None:
                firing_data["hotspot"] = {
                    "count": hotspot.count,
                    "history_count": hotspot.history_count,
                    "history_days": rule.history_days,
                    "expected": hotspot.expected,
                    "p_value": hotspot.p_value,
                    "q_value": hotspot.q_value,
                    "fdr": rule.fdr,
                    "statistic": HOTSPOT_STATISTIC,
                }
            try:
                with transaction.atomic():
                    warning = warning_create(
                        actor=None,
                        source=Source.SYSTEM,
                        payload=payload,
                        origin=WarningOrigin.RULE,
                        reason=f"automatic rule: {rule.name}",
                        log_data=firing_data,
                    )
                    WarningRuleFiring.objects.create(
                        rule=rule,
                        unit_layer=rule.unit_layer,
                        unit_code=code,
                        fired_at=now,
                        window_start=start,
                        incident_ids=fresh,
                        warning=warning,
                    )
            except ActionError as exc:
                log.warning(
                    "rule %s could not draft a warning for %s %s: %s", rule.pk, rule.unit_layer, code, exc
                )
                continue
            fired += 1
    return fired


def _fill(template: str, fields: Mapping[str, Any]) -> str:
    """A rule's text with its placeholders filled; a text with stray braces is kept as written."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError):
        return template


# When this process last evaluated each emerging-hotspot rule (their test reads weeks of history, so
# they run once a minute by default, not on every one-second tick like threshold rules).
_emerging_evaluated: dict[int, datetime] = {}


def auto_warnings_tick(*, now: datetime | None = None) -> int:
    """Run every enabled automatic rule; each new cluster drafts one warning and alerts the command centre."""
    now = now or timezone.now()
    every = timedelta(seconds=float(getattr(settings, "WARNING_EMERGING_EVERY_S", 60)))
    fired = 0
    for rule_id, trigger in WarningRule.objects.filter(enabled=True).values_list("pk", "trigger"):
        if trigger == RuleTrigger.EMERGING:
            last = _emerging_evaluated.get(rule_id)
            if last is not None and timedelta(0) <= now - last < every:
                continue
            _emerging_evaluated[rule_id] = now
        fired += _fire_rule(rule_id, now)
    return fired


# ------------------------------------------------------------------------------------------ selectors


def warnings_visible_to(user: Any) -> QuerySet[EarlyWarning]:
    """Warnings the user may see: the command centre and admins all; anyone else those sent to them."""
    base = EarlyWarning.objects.select_related("created_by", "approved_by", "issued_by", "edited_by")
    role = getattr(user, "role", None)
    if role in (Role.OPERATOR, Role.COMMANDER, Role.ADMIN):
        return base
    if getattr(user, "pk", None) is None:
        return base.none()
    return base.filter(receipts__user=user)


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def warning_coverage(warning: EarlyWarning) -> dict[str, Any]:
    """Share of recipients delivered and read, overall, per covered district and per department."""
    rows = list(
        WarningReceipt.objects.filter(warning=warning).values_list(
            "department_id", "districts", "delivered_at", "read_at"
        )
    )
    totals = {"recipients": 0, "delivered": 0, "read": 0}
    by_district: dict[str, dict[str, int]] = defaultdict(lambda: {"recipients": 0, "delivered": 0, "read": 0})
    by_department: dict[int | None, dict[str, int]] = defaultdict(
        lambda: {"recipients": 0, "delivered": 0, "read": 0}
    )
    for department_id, districts, delivered_at, read_at in rows:
        buckets = [totals, by_department[department_id]] + [by_district[d] for d in districts or []]
        for bucket in buckets:
            bucket["recipients"] += 1
            bucket["delivered"] += delivered_at is not None
            bucket["read"] += read_at is not None

    def figures(counts: Mapping[str, int]) -> dict[str, Any]:
        return {
            **counts,
            "delivered_share": _share(counts["delivered"], counts["recipients"]),
            "read_share": _share(counts["read"], counts["recipients"]),
        }

    resolver = get_area_resolver()

    def district_name(code: str) -> str:
        try:
            return resolver.unit("district", code).name
        except KeyError:
            return code

    departments = {
        d.pk: d for d in Department.objects.filter(pk__in=[k for k in by_department if k is not None])
    }
    return {
        "version": warning.version,
        **figures(totals),
        "by_district": [
            {"code": code, "name": district_name(code), **figures(counts)}
            for code, counts in sorted(by_district.items())
        ],
        "by_department": [
            {
                "code": departments[k].code if k in departments else None,
                "name": departments[k].name if k in departments else "—",
                **figures(counts),
            }
            for k, counts in sorted(
                by_department.items(),
                key=lambda item: departments[item[0]].code if item[0] in departments else "",
            )
        ],
    }


def warning_identifier(warning: EarlyWarning) -> str | None:
    """The GB/T 35965.1 identifier of the warning's current version, once issued."""
    message = (
        WarningCapMessage.objects.filter(warning=warning, direction=CapDirection.OUT, version=warning.version)
        .order_by("-at", "-pk")
        .first()
    )
    return message.identifier if message else None


# ----------------------------------------------------------------------------------------- CAP export


def _export_areas(warning: EarlyWarning) -> list[cap.CapArea]:
    spec = warning.area_spec or {}
    area = cap.CapArea(desc=warning.area_desc or warning.headline)
    area.polygons = [[(float(x), float(y)) for x, y in ring] for ring in spec.get("polygons", [])]
    area.circles = [(float(c["lon"]), float(c["lat"]), float(c["radius_m"])) for c in spec.get("circles", [])]
    resolver = get_area_resolver()
    for unit_ref in spec.get("units", []):
        try:
            unit = resolver.unit(unit_ref["layer"], unit_ref["code"])
        except KeyError:
            continue
        geometry = shapely.set_precision(unit.geometry, 1e-7)
        for part in shapely.get_parts(geometry):
            area.polygons.append([(float(x), float(y)) for x, y in part.exterior.coords])
        area.geocodes.append((EXPORT_GEOCODE.get(unit.layer, unit.layer), unit.code))
    if not (area.polygons or area.circles):
        # The area as stored is the fallback: every part's outer ring.
        for part in shapely.get_parts(warning_area(warning)):
            area.polygons.append([(float(x), float(y)) for x, y in part.exterior.coords])
    return [area]


def warning_cap_alert(warning: EarlyWarning) -> cap.CapAlert:
    """The CAP message of the warning's current version (refused for warnings never issued)."""
    if warning.status in UNISSUED_WARNING_STATES or warning.version == 0:
        raise WarningActionRefused(
            f"warning {warning.pk} is {warning.status}: only issued warnings are exported"
        )
    messages = list(
        WarningCapMessage.objects.filter(warning=warning, direction=CapDirection.OUT).order_by(
            "version", "at", "pk"
        )
    )
    current = next((m for m in reversed(messages) if m.version == warning.version), None)
    if current is None:
        raise WarningActionRefused(
            f"warning {warning.pk} has no CAP identifier for version {warning.version}"
        )
    severity, urgency, certainty = cap.level_map().export[warning.level]
    areas = _export_areas(warning)
    event_codes = [(EVENT_CODE_NAME, warning.event_code)] if warning.event_code else []
    texts = {warning.language: {k: getattr(warning, k) for k in TEXT_KEYS}}
    for language, translated in (warning.translations or {}).items():
        texts.setdefault(language, {k: translated.get(k) or "" for k in TEXT_KEYS})
    infos = []
    for language, text in texts.items():
        infos.append(
            cap.CapInfo(
                language=language,
                categories=[warning.cap_category or "Other"],
                event=text["type"] or warning.type,
                urgency=urgency,
                severity=severity,
                certainty=certainty,
                event_codes=event_codes,
                effective=warning.effective_at,
                onset=warning.onset_at,
                expires=warning.expires_at,
                sender_name=cap.sender_name(),
                headline=text["headline"] or warning.headline,
                description=text["description"],
                instruction=text["instructions"],
                parameters=[("level", f"{warning.level} {LEVEL_NUMERAL[warning.level]}")],
                areas=areas,
            )
        )
    earlier = [m for m in messages if m.version < current.version]
    return cap.CapAlert(
        identifier=current.identifier,
        sender=current.sender,
        sent=current.sent,
        status="Actual",
        msg_type=current.msg_type,
        scope="Public",
        references=[(m.sender, m.identifier, cap.format_cap_time(m.sent)) for m in earlier]
        if current.msg_type in ("Update", "Cancel")
        else [],
        infos=infos,
    )


def warning_cap_xml(warning: EarlyWarning) -> bytes:
    """The warning's current version as CAP 1.2 XML, validated against the OASIS schema before it leaves."""
    data = cap.render_cap(warning_cap_alert(warning))
    cap.validate_cap(data)
    return data


# ----------------------------------------------------------------------------------------- CAP import


@dataclass
class CapImportResult:
    """What a CAP import did: the warning it landed in and how."""

    warning: EarlyWarning
    msg_type: str
    created: bool
    duplicate: bool = False


def _preferred(infos: Sequence[cap.CapInfo]) -> int:
    preferences = [p.lower() for p in getattr(settings, "CAP_LANGUAGES", ("zh-CN", "zh"))]
    for preference in preferences:
        for i, info in enumerate(infos):
            if info.language.lower() == preference or info.language.lower().startswith(preference + "-"):
                return i
    return 0


def _cap_area(infos: Sequence[cap.CapInfo], primary: int) -> dict[str, Any]:
    language = infos[primary].language.lower()
    chosen = [(i, info) for i, info in enumerate(infos) if info.language.lower() == language and info.areas]
    if not chosen:
        chosen = [(i, info) for i, info in enumerate(infos) if info.areas]
    if not chosen:
        raise cap.CapError("info", "no <area>: a warning needs an area")
    polygons: list[list[list[float]]] = []
    circles: list[dict[str, float]] = []
    units: list[dict[str, str]] = []
    descriptions: list[str] = []
    for i, info in chosen:
        for j, area in enumerate(info.areas):
            descriptions.append(area.desc)
            polygons += [[[x, y] for x, y in ring] for ring in area.polygons]
            circles += [{"lon": x, "lat": y, "radius_m": r} for x, y, r in area.circles]
            if area.polygons or area.circles:
                continue
            named = [
                {"layer": GEOCODE_LAYERS[name.strip().lower()], "code": value}
                for name, value in area.geocodes
                if name.strip().lower() in GEOCODE_LAYERS
            ]
            if not named:
                raise cap.CapError(
                    f"info[{i}].area[{j}]", "no polygon, circle or geocode known to this territory"
                )
            units += named
    described = "；".join(dict.fromkeys(d for d in descriptions if d))
    return {"polygons": polygons, "circles": circles, "units": units, "description": described[:512]}


def cap_fields(alert: cap.CapAlert) -> dict[str, Any]:
    """Warning fields from a CAP Alert or Update: the preferred language's texts, level by CAP_LEVEL_MAP."""
    if not alert.infos:
        raise cap.CapError("info", f"a CAP {alert.msg_type} needs at least one <info> block")
    primary = _preferred(alert.infos)
    info = alert.infos[primary]
    level = cap.level_map().level_for(info.severity, info.urgency, info.certainty)
    if level is None:
        raise cap.CapError(
            f"info[{primary}].severity",
            f"no level for severity={info.severity}, urgency={info.urgency}, certainty={info.certainty}; "
            "see CAP_LEVEL_MAP",
        )
    translations: dict[str, dict[str, str]] = {}
    for other in alert.infos:
        if other.language.lower() != info.language.lower() and other.language not in translations:
            translations[other.language] = {
                "type": other.event[:64],
                "headline": other.headline[:256],
                "description": other.description,
                "instructions": other.instruction,
            }
    event_code = next((v for n, v in info.event_codes if "35965" in n), "")
    return {
        "level": level,
        "type": info.event[:64],
        "event_code": event_code[:16],
        "cap_category": info.categories[0] if info.categories[0] in CAP_CATEGORIES else "Other",
        "headline": (info.headline or info.event)[:256],
        "description": info.description[:8000],
        "instructions": info.instruction[:8000],
        "language": info.language[:16],
        "translations": translations,
        "area": _cap_area(alert.infos, primary),
        "effective": info.effective or alert.sent,
        "onset": info.onset,
        "expires": info.expires,
    }


def _referenced(alert: cap.CapAlert) -> EarlyWarning:
    if not alert.references:
        raise cap.CapError("references", f"a CAP {alert.msg_type} must reference the message it changes")
    query = Q(pk__in=[])
    for sender, identifier, _sent in alert.references:
        query |= Q(sender=sender, identifier=identifier)
    message = WarningCapMessage.objects.filter(query).select_related("warning").order_by("-at", "-pk").first()
    if message is None:
        listed = " ".join(",".join(r) for r in alert.references)[:200]
        raise cap.CapError("references", f"none of the referenced messages is known here: {listed}")
    return message.warning


def warning_import_cap(*, data: bytes, actor: Any, source: str = Source.API) -> CapImportResult:
    """Take one CAP 1.2 message: an Alert drafts a warning, an Update or Cancel changes the one it references.

    Raises cap.CapError (bad message), ActionError (bad field values) or WarningActionRefused; a message
    already taken (same sender and identifier) changes nothing and is reported as a duplicate.
    """
    alert = cap.parse_cap(data)
    if alert.status != "Actual":
        raise cap.CapError("status", f"{alert.status} messages are not imported; only Actual ones are")
    if alert.msg_type not in ("Alert", "Update", "Cancel"):
        raise cap.CapError(
            "msgType", f"{alert.msg_type} messages carry no warning; only Alert, Update, Cancel"
        )
    with transaction.atomic():
        known = WarningCapMessage.objects.filter(sender=alert.sender, identifier=alert.identifier).first()
        if known is not None:
            return CapImportResult(known.warning, alert.msg_type, created=False, duplicate=True)
        source_ref: dict[str, Any] = {
            "cap": {"sender": alert.sender, "identifier": alert.identifier, "msg_type": alert.msg_type}
        }
        if alert.msg_type == "Alert":
            fields = cap_fields(alert)
            if fields["expires"] is None:
                # Our warnings always expire; CAP makes <expires> optional, so a configured validity fills in.
                hours = float(getattr(settings, "CAP_DEFAULT_VALID_HOURS", DEFAULT_CAP_VALID_HOURS))
                fields["expires"] = max(fields["effective"], timezone.now()) + timedelta(hours=hours)
                source_ref["expires_defaulted"] = True
            warning = warning_create(
                actor=actor,
                source=source,
                payload=fields,
                origin=WarningOrigin.CAP,
                reason=f"CAP Alert {alert.identifier} from {alert.sender}",
                log_data=source_ref,
            )
            created = True
        else:
            target = _referenced(alert)
            reason = alert.note or f"CAP {alert.msg_type} {alert.identifier} from {alert.sender}"
            if alert.msg_type == "Update":
                fields = cap_fields(alert)
                current = {
                    "level": target.level,
                    "type": target.type,
                    "event_code": target.event_code,
                    "cap_category": target.cap_category,
                    "headline": target.headline,
                    "description": target.description,
                    "instructions": target.instructions,
                    "language": target.language,
                    "translations": target.translations,
                    "effective": target.effective_at,
                    "onset": target.onset_at,
                    "expires": target.expires_at,
                }
                if fields["expires"] is None:
                    fields.pop("expires")  # an Update that leaves out <expires> keeps ours
                changes = {k: v for k, v in fields.items() if k == "area" or current.get(k) != v}
                try:
                    warning = warning_update(
                        warning_id=target.pk,
                        actor=actor,
                        source=source,
                        changes=changes,
                        reason=reason,
                        log_data=source_ref,
                    )
                except ActionError as exc:
                    if exc.field != "changes":
                        raise
                    warning = target  # nothing we keep has changed: the message is recorded, no new version
            else:
                warning = warning_cancel(
                    warning_id=target.pk, actor=actor, source=source, reason=reason, log_data=source_ref
                )
            created = False
        WarningCapMessage.objects.create(
            warning=warning,
            direction=CapDirection.IN,
            sender=alert.sender,
            identifier=alert.identifier,
            sent=alert.sent,
            msg_type=alert.msg_type,
            version=warning.version,
            xml=bytes(data).decode("utf-8", errors="replace"),
            at=timezone.now(),
        )
    return CapImportResult(warning, alert.msg_type, created=created)


__all__ = [
    "BuiltArea",
    "CapImportResult",
    "Recipient",
    "WarningActionRefused",
    "allowed_actions",
    "approval_levels",
    "auto_warnings_tick",
    "build_area",
    "cap_fields",
    "needs_approval",
    "warning_act",
    "warning_approve",
    "warning_audience",
    "warning_cancel",
    "warning_cap_alert",
    "warning_cap_xml",
    "warning_coverage",
    "warning_create",
    "warning_identifier",
    "warning_import_cap",
    "warning_issue",
    "warning_mark_delivered",
    "warning_mark_read",
    "warning_update",
    "warnings_delivered_on_ack",
    "warnings_tick",
    "warnings_visible_to",
]
