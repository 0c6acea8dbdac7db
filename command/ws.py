"""Order actions over the websocket, order delivery on first ack, and the escalation tick."""

from __future__ import annotations

from typing import Any

from command import rules
from command.models import DispatchOrder
from command.selectors import orders_visible_to
from command.services import order_act, order_mark_delivered, orders_tick
from incidents.models import Source
from incidents.services import ActionError
from realtime.hooks import ActionFailed, register_ack_hook, register_action, register_tick

RESERVED = {"type", "request_id", "action", "order_id"}


def _order_action(action: str) -> Any:
    def handler(user: Any, message: dict[str, Any]) -> dict[str, Any]:
        order_id = message.get("order_id")
        if isinstance(order_id, bool) or not isinstance(order_id, int):
            raise ActionFailed(400, "order_id: an order id is required", field="order_id")
        if not orders_visible_to(user).filter(pk=order_id).exists():
            raise ActionFailed(404, "no such order")
        payload = {k: v for k, v in message.items() if k not in RESERVED}
        try:
            order = order_act(
                order_id=order_id, actor=user, action=action, source=Source.WEBSOCKET, payload=payload
            )
        except rules.OrderActionRefused as exc:
            status = 400 if exc.unknown else 403 if exc.forbidden_role else 409
            raise ActionFailed(status, str(exc), allowed=exc.allowed) from None
        except ActionError as exc:
            raise ActionFailed(400, str(exc), field=exc.field) from None
        return {"order_id": order.pk, "status": order.status}

    return handler


def _warning_read(user: Any, message: dict[str, Any]) -> dict[str, Any]:
    """A recipient's read receipt for a warning ("warning.read", or the "read" shorthand message)."""
    from command.warnings import WarningActionRefused, warning_mark_read, warnings_visible_to

    warning_id = message.get("warning_id")
    if isinstance(warning_id, bool) or not isinstance(warning_id, int):
        raise ActionFailed(400, "warning_id: a warning id is required", field="warning_id")
    if not warnings_visible_to(user).filter(pk=warning_id).exists():
        raise ActionFailed(404, "no such warning")
    try:
        receipt = warning_mark_read(warning_id=warning_id, user=user, source=Source.WEBSOCKET)
    except WarningActionRefused as exc:
        raise ActionFailed(exc.status, str(exc), allowed=exc.allowed) from None
    read_at = receipt.read_at.isoformat() if receipt.read_at else None
    return {"warning_id": warning_id, "read_at": read_at}


def orders_delivered_on_ack(acks: dict[int, list[tuple[str, dict[str, Any]]]]) -> None:
    """An order counts as delivered at the first ack of its created event by its department's client."""
    from command.models import User

    wanted = {
        (user_id, data["id"])
        for user_id, events in acks.items()
        for name, data in events
        if name == "order.created" and isinstance(data.get("id"), int)
    }
    if not wanted:
        return  # most acknowledgements (a warning's 5,000): nothing to read
    users = {user_id for user_id, _order in wanted}
    department_of = dict(User.objects.filter(pk__in=users).values_list("pk", "department_id"))
    held = dict(
        DispatchOrder.objects.filter(pk__in={order for _user, order in wanted}).values_list(
            "pk", "department_id"
        )
    )
    delivered = {
        order
        for user_id, order in wanted
        if held.get(order) is not None and held[order] == department_of.get(user_id)
    }
    for order_id in sorted(delivered):
        order_mark_delivered(order_id=order_id)


def register() -> None:
    """Offer every order action as "order.<action>" and "warning.read"; mark deliveries on ack; run ticks."""
    for action in rules.ORDER_TRANSITIONS:
        register_action(f"order.{action}", _order_action(action))
    register_ack_hook(orders_delivered_on_ack)
    register_tick("order_escalation", orders_tick)
    from command.warnings import auto_warnings_tick, warnings_delivered_on_ack, warnings_tick

    register_action("warning.read", _warning_read)
    register_ack_hook(warnings_delivered_on_ack)
    register_tick("warning_expiry", warnings_tick)
    register_tick("automatic_warnings", auto_warnings_tick)
