"""Every realtime event: its name, schema version and the shape of its data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventShape:
    """The required keys (with their types) of one event's data."""

    name: str
    version: int
    required: dict[str, type | tuple[type, ...]]


_NULLABLE_STR = (str, type(None))
_NUMBER = (int, float)

INCIDENT_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "code": str,
    "status": str,
    "category": str,
    "grade": _NULLABLE_STR,
    "lon": _NUMBER,
    "lat": _NUMBER,
    "district_code": str,
    "grid_code": str,
    "due_at": _NULLABLE_STR,
    "overdue": bool,
}
ORDER_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "incident_id": int,
    "incident_code": str,
    "department": str,
    "role": str,
    "status": str,
    "due_at": _NULLABLE_STR,
}
WARNING_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "level": str,
    "type": str,
    "headline": str,
    "status": str,
}
UNIT_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "code": str,
    "name": str,
    "department": str,
    "status": str,
    "lon": (*_NUMBER, type(None)),
    "lat": (*_NUMBER, type(None)),
    "position_at": _NULLABLE_STR,
}

SHAPES: dict[str, EventShape] = {
    shape.name: shape
    for shape in [
        EventShape("incident.created", 1, INCIDENT_KEYS),
        EventShape("incident.updated", 1, {**INCIDENT_KEYS, "action": str}),
        EventShape("order.created", 1, ORDER_KEYS),
        EventShape("order.updated", 1, {**ORDER_KEYS, "action": str}),
        EventShape("order.overdue", 1, {**ORDER_KEYS, "overdue_by_s": _NUMBER}),
        EventShape("warning.issued", 1, WARNING_KEYS),
        EventShape("warning.updated", 1, WARNING_KEYS),
        EventShape("warning.cancelled", 1, WARNING_KEYS),
        EventShape("presence.changed", 1, {"department": _NULLABLE_STR, "user_id": int, "online": bool}),
        EventShape("unit.updated", 1, UNIT_KEYS),
    ]
}


class EventShapeError(ValueError):
    """An event's data does not match its declared shape."""


def check_event(name: str, data: dict[str, Any]) -> EventShape:
    """Raise EventShapeError unless `data` has every required key of event `name` with the right type."""
    shape = SHAPES.get(name)
    if shape is None:
        raise EventShapeError(f"unknown event {name!r}")
    problems = []
    for key, kind in shape.required.items():
        if key not in data:
            problems.append(f"missing {key!r}")
        elif not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            problems.append(f"{key!r} is {type(data[key]).__name__}")
    if problems:
        raise EventShapeError(f"{name}: " + ", ".join(problems))
    return shape
