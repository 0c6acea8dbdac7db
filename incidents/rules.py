"""The incident state machine as data: which action moves which state, for which roles, needing what.

Pure decision functions, no Django models: the services consult them and the hypothesis state-machine
test drives them. Roles are the strings of command.constants.Role (incidents must not import command).
"""

from __future__ import annotations

from dataclasses import dataclass

from incidents.models import Stage, Status

OPERATOR, COMMANDER, GRID_WORKER, DEPARTMENT, ADMIN = (
    "operator",
    "commander",
    "grid_worker",
    "department",
    "admin",
)
CENTRE = frozenset({OPERATOR, COMMANDER})

ACTIVE = frozenset(
    {
        Status.REPORTED,
        Status.ACCEPTED,
        Status.REGISTERED,
        Status.DISPATCHED,
        Status.IN_PROGRESS,
        Status.HANDLED,
    }
)
TERMINAL = frozenset({Status.CANCELLED, Status.EVALUATED, Status.MERGED})


@dataclass(frozen=True)
class Transition:
    """One action: the states it may start from, the state it leads to (None: unchanged), who may do it."""

    action: str
    sources: frozenset[str]
    target: str | None
    roles: frozenset[str]
    needs_reason: bool = False
    allowed_while_suspended: bool = False


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in [
        Transition("accept", frozenset({Status.REPORTED}), Status.ACCEPTED, CENTRE),
        Transition("register", frozenset({Status.ACCEPTED}), Status.REGISTERED, CENTRE),
        Transition(
            "cancel",
            frozenset({Status.REPORTED, Status.ACCEPTED, Status.REGISTERED}),
            Status.CANCELLED,
            CENTRE,
            needs_reason=True,
        ),
        Transition("dispatch", frozenset({Status.REGISTERED, Status.DISPATCHED}), Status.DISPATCHED, CENTRE),
        Transition("verify", frozenset({Status.HANDLED}), Status.VERIFIED, CENTRE | {GRID_WORKER}),
        Transition(
            "reject_verification",
            frozenset({Status.HANDLED}),
            Status.IN_PROGRESS,
            CENTRE | {GRID_WORKER},
            needs_reason=True,
        ),
        Transition("close", frozenset({Status.VERIFIED}), Status.CLOSED, CENTRE),
        Transition("evaluate", frozenset({Status.CLOSED}), Status.EVALUATED, CENTRE | {GRID_WORKER}),
        Transition(
            "merge", frozenset({Status.REPORTED, Status.ACCEPTED, Status.REGISTERED}), Status.MERGED, CENTRE
        ),
        Transition("split", ACTIVE - {Status.HANDLED}, None, CENTRE, needs_reason=True),
        Transition(
            "suspend",
            frozenset({Status.ACCEPTED, Status.REGISTERED, Status.DISPATCHED, Status.IN_PROGRESS}),
            None,
            CENTRE,
            needs_reason=True,
        ),
        Transition("resume", ACTIVE, None, CENTRE, allowed_while_suspended=True),
        Transition("extend", ACTIVE, None, CENTRE, needs_reason=True, allowed_while_suspended=True),
        Transition("approve", ACTIVE, None, frozenset({COMMANDER}), allowed_while_suspended=True),
        Transition(
            "decline", ACTIVE, None, frozenset({COMMANDER}), needs_reason=True, allowed_while_suspended=True
        ),
    ]
}

# Internal transitions driven by the orders of the command app, not by a person's action.
SYSTEM_TRANSITIONS: dict[str, Transition] = {
    "start_work": Transition("start_work", frozenset({Status.DISPATCHED}), Status.IN_PROGRESS, frozenset()),
    "mark_handled": Transition(
        "mark_handled", frozenset({Status.DISPATCHED, Status.IN_PROGRESS}), Status.HANDLED, frozenset()
    ),
}

# The clock that runs in each state (PRODUCT.md's stages); none in the others.
STAGE_OF_STATUS: dict[str, str] = {
    Status.REPORTED: Stage.ACCEPT,
    Status.ACCEPTED: Stage.DISPATCH,
    Status.REGISTERED: Stage.DISPATCH,
    Status.DISPATCHED: Stage.HANDLE,
    Status.IN_PROGRESS: Stage.HANDLE,
    Status.HANDLED: Stage.VERIFY,
}


def allowed_actions(*, status: str, role: str, suspended: bool) -> list[str]:
    """The actions a role may take on an incident in this state, in a stable order."""
    return [
        name
        for name, t in TRANSITIONS.items()
        if status in t.sources
        and role in t.roles
        and (not suspended or t.allowed_while_suspended)
        and not (name == "resume" and not suspended)
        and not (name == "suspend" and suspended)
    ]


def check(*, action: str, status: str, role: str, suspended: bool) -> Transition:
    """The transition for `action`, or ActionRefused saying why and what is allowed instead."""
    transition = TRANSITIONS.get(action)
    allowed = allowed_actions(status=status, role=role, suspended=suspended)
    if transition is None:
        raise ActionRefused(f"unknown action {action!r}", allowed, unknown=True)
    if role not in transition.roles:
        raise ActionRefused(f"the role {role!r} may not {action}", allowed, forbidden_role=True)
    if action not in allowed:
        state = f"{status}{' (suspended)' if suspended else ''}"
        raise ActionRefused(f"cannot {action} an incident that is {state}", allowed)
    return transition


class ActionRefused(Exception):
    """An action that the state machine does not allow here; `allowed` lists what is."""

    def __init__(
        self, message: str, allowed: list[str], *, unknown: bool = False, forbidden_role: bool = False
    ):
        super().__init__(message)
        self.allowed = allowed
        self.unknown = unknown
        self.forbidden_role = forbidden_role
