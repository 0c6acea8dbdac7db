"""Credentials: bearer tokens that expire, and lockout after repeated failed sign-ins.

- `ExpiringBearerTokenAuthentication`: a token older than TOKEN_TTL_S is refused (401) and deleted.
  A token found valid is remembered by the process for TOKEN_CACHE_S (default 2 s, the same bound
  as AUTH_RECHECK_S for open websockets), so a burst of requests costs one database lookup, not one
  each. Signing out, deleting the token, or saving or deleting the user forgets it at once in the
  process that did it; other processes notice within TOKEN_CACHE_S (0 turns the cache off).
- `LockoutModelBackend`: the authentication backend of every sign-in (token login, the login page, the
  admin). After LOCKOUT_FAILURES failures of one username from one address within LOCKOUT_WINDOW_S it
  refuses that pair for LOCKOUT_S, even with the right password; a success clears the count. A
  successful sign-in also retires the user's expired token, so the token login hands out a fresh one.

Counts are kept in Django's cache (shared through Redis in production); see config/security.py for
what happens when the cache is down.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from command.authentication import BearerTokenAuthentication
from config.security import client_ip

log = logging.getLogger(__name__)


def token_ttl() -> timedelta:
    """How long a bearer token lives after it was issued."""
    return timedelta(seconds=float(getattr(settings, "TOKEN_TTL_S", 24 * 3600)))


def token_expired(token: Token) -> bool:
    """True when the token was issued longer ago than TOKEN_TTL_S."""
    return bool(token.created <= timezone.now() - token_ttl())


def token_issue(user: Any) -> Token:
    """The user's live token, or a fresh one when there is none or it expired."""
    token, created = Token.objects.get_or_create(user=user)
    if not created and token_expired(token):
        token.delete()
        token = Token.objects.create(user=user)
    return token


# key -> (monotonic time fetched, user id, the user's column values, the token's column values).
# Rows, not model instances: every request gets fresh instances, so nothing a request sets on its user
# object leaks into another request or thread.
_remembered: dict[str, tuple[float, int, tuple[Any, ...], tuple[Any, ...]]] = {}
_remembered_lock = threading.Lock()
REMEMBER_AT_MOST = 20_000


def _attnames(model: Any) -> list[str]:
    return [field.attname for field in model._meta.concrete_fields]


def _columns(instance: Any) -> tuple[Any, ...]:
    return tuple(getattr(instance, field.attname) for field in instance._meta.concrete_fields)


def _remember(key: str, user: Any, token: Token) -> None:
    with _remembered_lock:
        if len(_remembered) >= REMEMBER_AT_MOST:
            _remembered.clear()  # a crude bound; a clear costs one lookup per live token
        _remembered[key] = (time.monotonic(), int(user.pk), _columns(user), _columns(token))


def _recall(key: str) -> tuple[Any, Token] | None:
    ttl = float(getattr(settings, "TOKEN_CACHE_S", 2.0))
    entry = _remembered.get(key)
    if entry is None or ttl <= 0:
        return None
    fetched, _user_id, user_row, token_row = entry
    if time.monotonic() - fetched >= ttl:
        _remembered.pop(key, None)
        return None
    user_model = get_user_model()
    user = user_model.from_db("default", _attnames(user_model), user_row)
    token = Token.from_db("default", _attnames(Token), token_row)
    token.user = user
    return user, token


def tokens_forget(*, key: str | None = None, user_id: int | None = None) -> None:
    """Drop remembered tokens: one key, or every token of one user (called by signals, see apps)."""
    with _remembered_lock:
        if key is not None:
            _remembered.pop(key, None)
        if user_id is not None:
            for stale in [k for k, entry in _remembered.items() if entry[1] == user_id]:
                del _remembered[stale]


class ExpiringBearerTokenAuthentication(BearerTokenAuthentication):
    """`Authorization: Bearer <token>`, refused once the token is older than TOKEN_TTL_S."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        """The user and token for `key`; 401 (and the token deleted) when it expired."""
        recalled = _recall(key)
        if recalled is not None:
            user, token = recalled
        else:
            user, token = super().authenticate_credentials(key)  # 401 unknown key or inactive user
        if token_expired(token):
            tokens_forget(key=key)
            token.delete()
            raise AuthenticationFailed("the token expired; sign in again for a new one")
        if recalled is None:
            _remember(key, user, token)
        return user, token


# -------------------------------------------------------------------------------------------- lockout


def _lockout_key(kind: str, username: str, ip: str) -> str:
    ident = f"{username.strip().lower()}|{ip}".encode("utf-8", "surrogatepass")
    return f"lockout:{kind}:{hashlib.sha256(ident).hexdigest()[:32]}"


def lockout_remaining(username: str, ip: str) -> float:
    """Seconds this username stays locked out from this address (0 when not locked)."""
    try:
        until = cache.get(_lockout_key("until", username, ip))
    except Exception as exc:
        log.warning("lockout not checked, the cache is unavailable: %s", exc)
        return 0.0
    return max(0.0, float(until) - time.time()) if until else 0.0


def lockout_failure(username: str, ip: str) -> None:
    """Count a failed sign-in; lock the pair once LOCKOUT_FAILURES failures fall in LOCKOUT_WINDOW_S."""
    window = int(getattr(settings, "LOCKOUT_WINDOW_S", 900))
    try:
        key = _lockout_key("fails", username, ip)
        cache.add(key, 0, timeout=window)
        failures = int(cache.incr(key))
        if failures >= int(getattr(settings, "LOCKOUT_FAILURES", 5)):
            duration = float(getattr(settings, "LOCKOUT_S", 900))
            cache.set(_lockout_key("until", username, ip), time.time() + duration, timeout=int(duration) + 1)
            cache.delete(key)
            log.warning("sign-in locked for %.0f s after %d failures (user %r)", duration, failures, username)
    except Exception as exc:
        log.warning("failed sign-in not counted, the cache is unavailable: %s", exc)


def lockout_clear(username: str, ip: str) -> None:
    """Forget the failures of a pair after a successful sign-in."""
    try:
        cache.delete(_lockout_key("fails", username, ip))
    except Exception as exc:
        log.warning("failed sign-ins not cleared, the cache is unavailable: %s", exc)


class LockoutModelBackend(ModelBackend):
    """Django's model backend with lockout, used by every username-and-password sign-in."""

    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        """The user for these credentials, or None (always None while the pair is locked out)."""
        if username is None:
            username = kwargs.get("username")
        ip = client_ip(request) if request is not None else "-"
        if username and lockout_remaining(username, ip) > 0:
            return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if username and password is not None:
            if user is None:
                lockout_failure(username, ip)
            else:
                lockout_clear(username, ip)
                # Retire an expired token now, so the token login (get_or_create) issues a new one.
                Token.objects.filter(user=user, created__lte=timezone.now() - token_ttl()).delete()
        return user
