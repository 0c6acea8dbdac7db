"""Memoise reference data for the length of one service call (a "memo scope").

One intake of an emergency looks up the same deadline policies, linkage rules, departments and
recipient lists several times (report, accept, register, three orders). Inside a scope those lookups
are made once; outside any scope nothing is memoised. A scope covers one service call, in which no
reference data is edited, so it can never serve a stale value to a later request or test step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_store: ContextVar[dict[Hashable, Any] | None] = ContextVar("memo_scope", default=None)


@contextmanager
def memo_scope() -> Iterator[None]:
    """Open a scope (nested scopes share the outermost one's values)."""
    if _store.get() is not None:
        yield
        return
    token = _store.set({})
    try:
        yield
    finally:
        _store.reset(token)


def in_scope() -> bool:
    """Whether a memo scope is open (a service call is running)."""
    return _store.get() is not None


def memoised(key: Hashable, compute: Callable[[], T]) -> T:
    """compute() once per scope for `key`; every call outside a scope computes afresh."""
    store = _store.get()
    if store is None:
        return compute()
    if key not in store:
        store[key] = compute()
    value: T = store[key]
    return value


def remember(key: Hashable, value: Any) -> None:
    """Give `key` its value for the rest of the scope (the caller read it already); no-op outside one."""
    store = _store.get()
    if store is not None:
        store[key] = value


def forget(kind: str) -> None:
    """Drop every value of a kind (keys `kind` or `(kind, …)`) after the service changed what it came from."""
    store = _store.get()
    if store is not None:
        for key in [k for k in store if k == kind or (isinstance(k, tuple) and k and k[0] == kind)]:
            del store[key]
