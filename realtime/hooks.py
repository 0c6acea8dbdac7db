"""Registries that let domain apps plug into the stream without realtime importing them.

- ACTIONS: websocket action name (e.g. "order.sign") → a sync callable(user, message) → dict result.
- ACK_HOOKS: called with {user_id: [(event name, data), …]} for the events each user acknowledged for
  the first time, once per flush of a process's acks (command marks orders delivered, warnings mark
  receipts).
- TICKS: periodic sync callables run by the background loop (deadlines, escalation, expiry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ActionHandler = Callable[[Any, dict[str, Any]], dict[str, Any]]
AckHook = Callable[[dict[int, list[tuple[str, dict[str, Any]]]]], None]
Tick = Callable[[], object]

ACTIONS: dict[str, ActionHandler] = {}
ACK_HOOKS: list[AckHook] = []
TICKS: dict[str, Tick] = {}


class ActionFailed(Exception):
    """A websocket action that was refused; carries the HTTP-like status and details for the client."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def register_action(name: str, handler: ActionHandler) -> None:
    """Make a websocket action available (idempotent)."""
    ACTIONS[name] = handler


def register_ack_hook(hook: AckHook) -> None:
    """Be told about first acknowledgements of events (idempotent)."""
    if hook not in ACK_HOOKS:
        ACK_HOOKS.append(hook)


def register_tick(name: str, tick: Tick) -> None:
    """Run `tick` on every round of the background loop (idempotent)."""
    TICKS[name] = tick
