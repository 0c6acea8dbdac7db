"""Credentials: bearer tokens that expire, and lockout after repeated failed sign-ins.

- `ExpiringBearerTokenAuthentication`: a token older than TOKEN_TTL_S is refused (401) and deleted.
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
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
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


class ExpiringBearerTokenAuthentication(BearerTokenAuthentication):
    """`Authorization: Bearer <token>`, refused once the token is older than TOKEN_TTL_S."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        """The user and token for `key`; 401 (and the token deleted) when it expired."""
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            token.delete()
            raise AuthenticationFailed("the token expired; sign in again for a new one")
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
