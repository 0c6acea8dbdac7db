"""The command app's tables, one module per area; everything is importable from command.models."""

from command.models.core import Department, LinkageRule, User
from command.models.orders import (
    CLOSED_ORDER_STATES,
    DispatchOrder,
    EscalationPolicy,
    OrderPhoto,
    OrderProgress,
    OrderRole,
    OrderStatus,
    RejectCategory,
    SupervisionNotice,
    Unit,
    UnitStatus,
)

__all__ = [
    "CLOSED_ORDER_STATES",
    "Department",
    "DispatchOrder",
    "EscalationPolicy",
    "LinkageRule",
    "OrderPhoto",
    "OrderProgress",
    "OrderRole",
    "OrderStatus",
    "RejectCategory",
    "SupervisionNotice",
    "Unit",
    "UnitStatus",
    "User",
]
