"""Security at the HTTP boundary: headers, request limits, rate limits and redaction of personal numbers.

- `SecurityHeadersMiddleware`: Content-Security-Policy (same-origin assets only; a per-request nonce
  in `request.csp_nonce` for inline scripts), Permissions-Policy, Referrer-Policy, nosniff, and
  `Cache-Control: no-store` on API answers.
- `RequestLimitsMiddleware`: 413 for bodies over the limit (by Content-Length), and rate limits and
  lockout on the session login forms (429 with Retry-After).
- `ApiThrottle`: the DRF throttle for the token login, report intake and anonymous requests.
- `redact`, `redact_text`, `RedactingJSONRenderer`, `RedactingLogFilter`: mobile and resident ID
  numbers are masked (138****1234, 4403**********1234) wherever they appear in API output and log
  lines; only the audited reveal route (command/privacy_api.py) answers with clear numbers.

Counters live in Django's cache (Redis when REDIS_URL is set, so every process shares them). When the
cache is unreachable the limits fail open and say so in the log: an outage of Redis must not stop
intake (docs/realtime.md), and login is still protected by passwords.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.renderers import JSONRenderer
from rest_framework.throttling import BaseThrottle

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ redaction

# A mainland mobile number (optionally +86, optionally split 3-4-4) standing alone: not inside a longer
# run of letters or digits (tokens, hex ids) and not the fraction of a decimal number (coordinates).
PHONE_RE = re.compile(
    r"(?<![0-9A-Za-z.])(?:\+?86[- ]?)?(1[3-9][0-9])[- ]?([0-9]{4})[- ]?([0-9]{4})(?![0-9A-Za-z])"
)
# An 18-character resident ID number (17 digits and a check character) standing alone.
ID_NUMBER_RE = re.compile(r"(?<![0-9A-Za-z.])([0-9]{4})[0-9]{10}([0-9]{3}[0-9Xx])(?![0-9A-Za-z])")


# What both numbers above contain: eleven digits in a row, or split 3-4-4 (an ID number has 17 in a
# row). A text without it has nothing to mask; one search spares the two substitutions (and a walk over
# every character) for the timestamps, codes and coordinates that fill an API answer.
CANDIDATE_RE = re.compile(r"[0-9]{3}[- ]?[0-9]{4}[- ]?[0-9]{4}")


def redact_text(text: str) -> str:
    """Mask every mobile number (138****1234) and resident ID number (4403**********1234) in a text."""
    if not text or CANDIDATE_RE.search(text) is None:
        return text
    text = ID_NUMBER_RE.sub(lambda m: f"{m.group(1)}{'*' * 10}{m.group(2)}", text)
    return PHONE_RE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


def redact(value: Any) -> Any:
    """Redact every string (and phone-like integer) in a JSON-like structure, returning a new one."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and 10**10 <= abs(value) < 10**18:
        text = str(value)
        masked = redact_text(text)
        return masked if masked != text else value
    return value


class RedactingJSONRenderer(JSONRenderer):
    """The API's JSON renderer: personal numbers are masked unless the view reveals them on purpose."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        view = (renderer_context or {}).get("view")
        if data is not None and not getattr(view, "reveals_personal_data", False):
            data = redact(data)
        return super().render(data, accepted_media_type, renderer_context)


class RedactingLogFilter(logging.Filter):
    """Masks personal numbers in every log line (message and traceback) before a handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's caller's bug: leave it to the handler
            return True
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


# ---------------------------------------------------------------------------------------- rate limits

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """ "10/min" → (10, 60): a number of requests per period in seconds."""
    count, _, unit = rate.partition("/")
    period = _UNITS.get(unit.strip().lower())
    if period is None or not count.strip().isdigit():
        raise ValueError(f"bad rate {rate!r}; use N/s, N/min, N/hour or N/day")
    return int(count), period


def client_ip(request: Any) -> str:
    """The caller's address: REMOTE_ADDR, or the address the trusted proxies put in X-Forwarded-For."""
    meta = getattr(request, "META", {}) or {}
    hops = int(getattr(settings, "SECURITY_TRUSTED_PROXIES", 0))
    if hops > 0:
        forwarded = [p.strip() for p in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",") if p.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return str(meta.get("REMOTE_ADDR") or "unknown")


def rate_hit(scope: str, ident: str, rate: str | None = None) -> float:
    """Count one request of `ident` in `scope`; 0 when allowed, else the seconds until it may retry.

    Fixed windows (at most twice the rate across a window boundary), counted with the cache's atomic
    add/incr. The rate is part of the key, so changing a rate starts fresh counts.
    """
    rate = rate or getattr(settings, "SECURITY_RATES", {}).get(scope)
    if not rate:
        return 0.0
    limit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    key = f"rl:{scope}:{limit}/{period}:{window}:{digest}"
    try:
        count = _count(key, ttl=period + 1)
    except Exception as exc:  # fail open: see the module docstring
        log.warning("rate limit %s not applied, the cache is unavailable: %s", scope, exc)
        return 0.0
    if count <= limit:
        return 0.0
    return max(1.0, (window + 1) * period - now)


def _count(key: str, *, ttl: int) -> int:
    """Add one to the counter `key` (kept ttl seconds) and return it.

    On Redis one round trip, INCR and EXPIRE in a MULTI: the cache's own add + incr take three (incr
    asks EXISTS first), on every rate-limited request. Elsewhere (the embedded default's local memory)
    the cache's add + incr.
    """
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        full = backend.make_and_validate_key(key)
        client = backend._cache.get_client(full, write=True)
        with client.pipeline(transaction=True) as pipe:
            pipe.incr(full)
            pipe.expire(full, ttl)  # the window is in the key: renewing the expiry only delays its end
            count, _renewed = pipe.execute()
        return int(count)
    backend.add(key, 0, timeout=ttl)
    return int(backend.incr(key))


def _login_wait(username: str, ip: str) -> float:
    """Seconds before this username may try to sign in from this address (lockout, then rate limits)."""
    from command.tokens import lockout_remaining

    locked = lockout_remaining(username, ip)
    if locked > 0:
        return locked
    return rate_hit("login", f"{ip}|{username.strip().lower()}") or rate_hit("login_ip", ip)


class ApiThrottle(BaseThrottle):
    """Rate limits of the REST API: token login (and its lockout), report intake, anonymous callers."""

    def __init__(self) -> None:
        self.wait_s = 0.0

    def allow_request(self, request: Any, view: Any) -> bool:
        """False (→ 429 with Retry-After) when the caller is over a limit or locked out."""
        match = getattr(request, "resolver_match", None)
        name = getattr(match, "url_name", None)
        ip = client_ip(request)
        if name == "auth-token" and request.method == "POST":
            data = request.data if hasattr(request.data, "get") else {}
            self.wait_s = _login_wait(str(data.get("username") or ""), ip)
        elif name == "report-create" and request.method == "POST":
            self.wait_s = rate_hit("report", f"user:{getattr(request.user, 'pk', '')}")
        elif not getattr(request.user, "is_authenticated", False):
            self.wait_s = rate_hit("anon", ip)
        else:
            self.wait_s = 0.0
        return self.wait_s <= 0

    def wait(self) -> float | None:
        """Seconds until the caller may try again (DRF puts it in Retry-After)."""
        return self.wait_s or None


# ----------------------------------------------------------------------------------------- middleware

# The one inline handler the pages use (config/templates/base.html: the language switch), allowed by
# its hash rather than by 'unsafe-inline' until it moves to a static file.
_INLINE_HANDLERS = ("this.form.submit()",)
_HANDLER_HASHES = " ".join(
    f"'sha256-{base64.b64encode(hashlib.sha256(h.encode()).digest()).decode()}'" for h in _INLINE_HANDLERS
)
# The API docs pages (drf-spectacular) load Swagger UI and ReDoc from a CDN with an inline bootstrap.
DOCS_PATHS = ("/api/v1/docs/", "/api/v1/redoc/")
DOCS_SOURCES = "https://cdn.jsdelivr.net"
PERMISSIONS_POLICY = (
    "geolocation=(self), camera=(self), microphone=(), payment=(), usb=(), serial=(), bluetooth=(), "
    "midi=(), magnetometer=(), gyroscope=(), accelerometer=(), display-capture=(), interest-cohort=()"
)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL template such as a map tile server's ("" when there is none)."""
    match = re.match(r"^(https?://[^/{}]+)", url or "")
    return match.group(1) if match else ""


def content_security_policy(request: HttpRequest, nonce: str) -> str:
    """The CSP of a page: same-origin everything, scripts only from files or with this request's nonce."""
    try:
        host = request.get_host()
        sockets = f" ws://{host} wss://{host}"
    except Exception:  # a Host header ALLOWED_HOSTS refuses: that response is a 400 anyway
        sockets = ""
    # The one foreign origin a page may load: the configured map tile server (images only).
    tiles = _origin(str(getattr(settings, "MAP_TILE_URL", "") or ""))
    if request.path.startswith(DOCS_PATHS):
        scripts = f"'self' 'unsafe-inline' {DOCS_SOURCES}"
        styles = f"'self' 'unsafe-inline' {DOCS_SOURCES}"
        images = f"'self' data: {DOCS_SOURCES}"
    else:
        scripts = f"'self' 'nonce-{nonce}' 'unsafe-hashes' {_HANDLER_HASHES}"
        # Inline styles are allowed: the pages use style attributes, and CSS cannot run code.
        styles = "'self' 'unsafe-inline'"
        images = f"'self' data: blob: {tiles}".rstrip()
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            f"style-src {styles}",
            f"img-src {images}",
            "font-src 'self'",
            f"connect-src 'self'{sockets}",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    """Adds the security headers to every response (Django's SecurityMiddleware does HSTS and redirects)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request, nonce)
        for header, value in (
            ("Permissions-Policy", PERMISSIONS_POLICY),
            ("Referrer-Policy", "same-origin"),
            ("X-Content-Type-Options", "nosniff"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("X-Frame-Options", "DENY"),
        ):
            if header not in response:
                response[header] = value
        # API answers carry personal and operational data: never keep them in shared or browser caches.
        if request.path.startswith("/api/") and "Cache-Control" not in response:
            response["Cache-Control"] = "no-store"
        return response


def _too_many(request: HttpRequest, wait: float) -> HttpResponse:
    seconds = math.ceil(wait)
    response = HttpResponse(
        f"Too many sign-in attempts; try again in {seconds} s.\n登录尝试过多，请 {seconds} 秒后再试。\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(seconds)
    return response


class RequestLimitsMiddleware:
    """413 for bodies over the limit; rate limit and lockout for the session login forms."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = self._check_size(request)
        if refused is not None:
            return refused
        if request.method == "POST" and request.path in getattr(settings, "LOGIN_FORM_PATHS", ()):
            username = str(request.POST.get("username") or "")
            wait = _login_wait(username, client_ip(request))
            if wait > 0:
                return _too_many(request, wait)
        return self.get_response(request)

    @staticmethod
    def _check_size(request: HttpRequest) -> HttpResponse | None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(
                {"error": {"status": 400, "detail": "Content-Length: not a number"}}, status=400
            )
        multipart = str(request.META.get("CONTENT_TYPE", "")).startswith("multipart/")
        limit = int(settings.UPLOAD_MAX_BYTES if multipart else settings.REQUEST_MAX_BYTES)
        if length <= limit:
            return None
        return JsonResponse(
            {
                "error": {
                    "status": 413,
                    "detail": f"body: {length} bytes, more than the limit of {limit}",
                    "field": "body",
                    "limit": limit,
                }
            },
            status=413,
        )
