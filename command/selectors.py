"""Reads of the command app, already filtered by what the caller may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from command.constants import Role
from command.models import CLOSED_ORDER_STATES, DispatchOrder, OrderPhoto, OrderStatus, Unit


def orders_visible_to(user: Any) -> QuerySet[DispatchOrder]:
    """Orders the user may see: the command centre all; a department its own; nobody else any."""
    base = DispatchOrder.objects.select_related(
        "department", "incident", "incident__category", "incident__grade", "signed_by", "completed_by"
    )
    role = getattr(user, "role", None)
    if role in (Role.OPERATOR, Role.COMMANDER, Role.ADMIN):
        return base
    if role == Role.DEPARTMENT and user.department_id:
        return base.filter(department_id=user.department_id)
    return base.none()


def order_photos_visible_to(user: Any) -> QuerySet[OrderPhoto]:
    """Progress and completion photos the user may see: those of the orders the user may see."""
    return OrderPhoto.objects.filter(progress__order__in=orders_visible_to(user).values("pk"))


def overdue_board(user: Any) -> list[dict[str, Any]]:
    """What is late right now: orders past their deadline and rejected orders awaiting arbitration."""
    now = timezone.now()
    late = (
        orders_visible_to(user)
        .filter(Q(overdue_at__isnull=False) | Q(status=OrderStatus.REJECTED))
        .exclude(status__in=CLOSED_ORDER_STATES)
        .order_by("due_at")
    )
    rows: list[dict[str, Any]] = []
    for order in late:
        rows.append(
            {
                "order_id": order.pk,
                "incident_id": order.incident_id,
                "incident_code": order.incident.code,
                "department": {"code": order.department.code, "name": order.department.name},
                "role": order.role,
                "status": order.status,
                "stage": order.stage or None,
                "due_at": order.due_at.isoformat() if order.due_at else None,
                "overdue_by_s": max(0.0, (now - order.due_at).total_seconds()) if order.due_at else None,
                "escalations": order.escalation_count,
                "rejections": order.reject_count,
                "awaiting_arbitration": order.status == OrderStatus.REJECTED,
            }
        )
    rows.sort(key=lambda r: -float(r["overdue_by_s"] or 0.0))
    return rows


def units_visible_to(user: Any) -> QuerySet[Unit]:
    """Units the user may see: the centre all, a department its own."""
    role = getattr(user, "role", None)
    base = Unit.objects.select_related("department")
    if role in (Role.OPERATOR, Role.COMMANDER, Role.ADMIN):
        return base
    if role == Role.DEPARTMENT and user.department_id:
        return base.filter(department_id=user.department_id)
    return base.none()
