"""Pure decisions of the command app: linkage-rule matching and the order lifecycle table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from command.models import OrderStatus

DEPARTMENT, OPERATOR, COMMANDER = "department", "operator", "commander"


@dataclass(frozen=True)
class RuleFacts:
    """What a linkage rule may test about an incident."""

    category_code: str
    family_code: str | None
    grade_code: str | None
    area_codes: frozenset[str]
    local_time: time


def in_window(moment: time, start: time | None, end: time | None) -> bool:
    """True when `moment` lies in [start, end); a window may wrap past midnight (22:00–06:00)."""
    if start is None or end is None:
        return True
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end


def rule_matches(
    *,
    category_code: str | None,
    grade_code: str | None,
    territory_code: str | None,
    time_from: time | None,
    time_to: time | None,
    facts: RuleFacts,
) -> bool:
    """True when every condition the rule sets holds (an unset condition always holds)."""
    if category_code and category_code not in (facts.category_code, facts.family_code):
        return False
    if grade_code and grade_code != facts.grade_code:
        return False
    if territory_code and territory_code not in facts.area_codes:
        return False
    return in_window(facts.local_time, time_from, time_to)


@dataclass(frozen=True)
class OrderTransition:
    """One order action: the states it may start from, where it leads (None: unchanged), who may."""

    action: str
    sources: frozenset[str]
    target: str | None
    roles: frozenset[str]
    needs_reason: bool = False


_WORKING = frozenset({OrderStatus.SIGNED, OrderStatus.EN_ROUTE, OrderStatus.ON_SCENE})
_OPEN = frozenset({OrderStatus.ISSUED, OrderStatus.DELIVERED})

ORDER_TRANSITIONS: dict[str, OrderTransition] = {
    t.action: t
    for t in [
        OrderTransition("sign", _OPEN, OrderStatus.SIGNED, frozenset({DEPARTMENT})),
        OrderTransition("reject", _OPEN, OrderStatus.REJECTED, frozenset({DEPARTMENT}), needs_reason=True),
        OrderTransition(
            "depart", frozenset({OrderStatus.SIGNED}), OrderStatus.EN_ROUTE, frozenset({DEPARTMENT})
        ),
        OrderTransition(
            "arrive",
            frozenset({OrderStatus.SIGNED, OrderStatus.EN_ROUTE}),
            OrderStatus.ON_SCENE,
            frozenset({DEPARTMENT}),
        ),
        OrderTransition("progress", _WORKING, None, frozenset({DEPARTMENT})),
        OrderTransition("complete", _WORKING, OrderStatus.COMPLETED, frozenset({DEPARTMENT})),
        OrderTransition(
            "arbitrate", frozenset({OrderStatus.REJECTED}), None, frozenset({COMMANDER}), needs_reason=True
        ),
        OrderTransition(
            "release",
            _OPEN | _WORKING | {OrderStatus.REJECTED},
            OrderStatus.RELEASED,
            frozenset({OPERATOR, COMMANDER}),
            needs_reason=True,
        ),
        OrderTransition(
            "supervise",
            _OPEN | _WORKING | {OrderStatus.REJECTED},
            None,
            frozenset({COMMANDER}),
            needs_reason=True,
        ),
    ]
}

# The clock that runs in each order state.
ORDER_STAGE: dict[str, str] = {
    OrderStatus.ISSUED: "sign",
    OrderStatus.DELIVERED: "sign",
    OrderStatus.SIGNED: "arrive",
    OrderStatus.EN_ROUTE: "arrive",
    OrderStatus.ON_SCENE: "handle",
}


def order_allowed_actions(*, status: str, role: str, upheld: bool, order_role: str = "assist") -> list[str]:
    """The order actions open to a role in this state.

    A rejection upheld by a ruling cannot recur, and a lead order is never released (it is reassigned
    by arbitration instead).
    """
    return [
        name
        for name, t in ORDER_TRANSITIONS.items()
        if status in t.sources
        and role in t.roles
        and not (name == "reject" and upheld)
        and not (name == "release" and order_role == "lead")
    ]


class OrderActionRefused(Exception):
    """An order action the lifecycle does not allow here; `allowed` lists what is."""

    def __init__(
        self, message: str, allowed: list[str], *, unknown: bool = False, forbidden_role: bool = False
    ):
        super().__init__(message)
        self.allowed = allowed
        self.unknown = unknown
        self.forbidden_role = forbidden_role


def order_check(
    *, action: str, status: str, role: str, upheld: bool, order_role: str = "assist"
) -> OrderTransition:
    """The transition for `action`, or OrderActionRefused saying why and what is allowed."""
    allowed = order_allowed_actions(status=status, role=role, upheld=upheld, order_role=order_role)
    transition = ORDER_TRANSITIONS.get(action)
    if transition is None:
        raise OrderActionRefused(f"unknown action {action!r}", allowed, unknown=True)
    if role not in transition.roles:
        raise OrderActionRefused(f"the role {role!r} may not {action} an order", allowed, forbidden_role=True)
    if action not in allowed:
        why = " (a ruling upheld this order)" if action == "reject" and upheld else ""
        raise OrderActionRefused(f"cannot {action} an order that is {status}{why}", allowed)
    return transition
