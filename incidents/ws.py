"""Incident actions over the websocket: the same services as the REST routes, source "websocket"."""

from __future__ import annotations

from typing import Any

from gis.geocoding import InvalidCoordinate
from incidents import rules
from incidents.models import Source
from incidents.selectors import incidents_visible_to
from incidents.services import ActionError, incident_act
from realtime.hooks import ActionFailed, register_action, register_tick

RESERVED = {"type", "request_id", "action", "incident_id"}


def _incident_action(action: str) -> Any:
    def handler(user: Any, message: dict[str, Any]) -> dict[str, Any]:
        incident_id = message.get("incident_id")
        if isinstance(incident_id, bool) or not isinstance(incident_id, int):
            raise ActionFailed(400, "incident_id: an incident id is required", field="incident_id")
        if not incidents_visible_to(user).filter(pk=incident_id).exists():
            raise ActionFailed(404, "no such incident")
        payload = {k: v for k, v in message.items() if k not in RESERVED}
        try:
            incident = incident_act(
                incident_id=incident_id, actor=user, action=action, source=Source.WEBSOCKET, payload=payload
            )
        except rules.ActionRefused as exc:
            status = 400 if exc.unknown else 403 if exc.forbidden_role else 409
            raise ActionFailed(status, str(exc), allowed=exc.allowed) from None
        except (ActionError, InvalidCoordinate) as exc:
            raise ActionFailed(400, str(exc), field=exc.field) from None
        return {"incident_id": incident.pk, "status": incident.status}

    return handler


def register() -> None:
    """Offer every incident action on the websocket as "incident.<action>", and the timer tick."""
    for action in rules.TRANSITIONS:
        register_action(f"incident.{action}", _incident_action(action))
    from incidents.services import deadlines_tick

    register_tick("incident_deadlines", deadlines_tick)
