"""Settings for every environment; production differs only by environment variables (12-factor)."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("YJLD_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    """Read a float environment variable."""
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


DEBUG = env_bool("DEBUG", False)
# A fixed development key is only acceptable on the embedded default; production must set SECRET_KEY.
SECRET_KEY = os.environ.get("SECRET_KEY") or "insecure-embedded-default-key-set-SECRET_KEY-in-production"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "gis",
    "incidents",
    "command",
    "realtime",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASE_URL = os.environ.get("DATABASE_URL") or DEFAULT_SQLITE_URL
# PostgreSQL: a connection pool per process (psycopg_pool). Django's connections are per thread, and
# under daphne database work runs on several threads (the HTTP threads of config/asgi_handler.py, the
# websocket consumers' thread, the health check's): the pool bounds and shares the connections, checks
# each before handing it out (one broken by a database restart is replaced), and takes it back when
# Django closes it at the end of a request. SQLite: persistent per-thread connections.
DB_POOL_MIN = int(os.environ.get("DB_POOL_MIN", "2"))
DB_POOL_MAX = int(os.environ.get("DB_POOL_MAX", "20"))
DB_POOL_TIMEOUT_S = float(os.environ.get("DB_POOL_TIMEOUT_S", "10"))
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DB_POOL_MAX > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections; Django must not
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(DB_POOL_MIN, DB_POOL_MAX),
        "max_size": DB_POOL_MAX,
        "timeout": DB_POOL_TIMEOUT_S,
    }
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DB_PREPARED_STATEMENTS:
    # Parameters bound by the server, and a statement prepared the fifth time a connection runs it: the
    # service path's queries are then planned once per pooled connection, not on every call (report →
    # registered → 3 orders, interleaved runs: 76 → 66 ms p50, docs/performance.md). Switch it off behind
    # a pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the background loop write while daphne reads; the timeout rides out short write locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
if os.environ.get("DATABASE_TEST_NAME"):
    # The test suite names its SQLite test database as a file, so that a daphne subprocess shares it.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["DATABASE_TEST_NAME"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # The pub/sub layer sidesteps channels_redis#422 (idle sockets dropped under redis-py 8 defaults)
    # and costs less CPU per message; see docs/realtime.md. Redis pub/sub channels ignore the database
    # number, so deployments (or test runs) sharing one Redis keep apart by CHANNEL_PREFIX.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": os.environ.get("CHANNEL_PREFIX", "asgi")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_USER_MODEL = "command.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if env_bool("INSECURE_FAST_PASSWORD_HASHER_FOR_TESTS"):
    # Only the test suite sets this: PBKDF2 at Django's cost makes every test login take ~0.3 s.
    PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = os.environ.get("LANGUAGE_CODE", "zh-hans")
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# The embedded SQLite file and collected static files live under var/, which a fresh clone lacks.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve app static files straight from their folders too, so a run without collectstatic still works.
WHITENOISE_USE_FINDERS = True
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "command.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "应急联动指挥调度系统 API",
    "DESCRIPTION": "Emergency management linkage and dispatch system, REST API v1.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
}

# Geocoding: distances in metres (see gis/index.py).
GIS_NEAR_BOUNDARY_M = env_float("GIS_NEAR_BOUNDARY_M", 30.0)
GIS_SNAP_TOLERANCE_M = env_float("GIS_SNAP_TOLERANCE_M", 200.0)
# How often each process checks the territory data version (seconds).
GIS_VERSION_CHECK_S = env_float("GIS_VERSION_CHECK_S", 2.0)

# Incidents: duplicate detection, photos, the working calendar for deadlines in working time.
DUPLICATE_RADIUS_M = env_float("DUPLICATE_RADIUS_M", 100.0)
DUPLICATE_WINDOW_MIN = env_float("DUPLICATE_WINDOW_MIN", 60.0)
PHOTO_MAX_BYTES = int(env_float("PHOTO_MAX_BYTES", 10 * 1024 * 1024))
PHOTO_MAX_COUNT = int(env_float("PHOTO_MAX_COUNT", 9))
PHOTO_STRIP_LOCATION = env_bool("PHOTO_STRIP_LOCATION", True)
WORK_CALENDAR_FILE = os.environ.get("WORK_CALENDAR_FILE") or str(
    BASE_DIR / "incidents" / "data" / "calendar-sample.json"
)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Realtime: events kept for resume, unacknowledged window per socket, limits, presence.
REALTIME_RETENTION_DAYS = env_float("REALTIME_RETENTION_DAYS", 30)
WS_WINDOW = int(env_float("WS_WINDOW", 500))
WS_MAX_FRAME = int(env_float("WS_MAX_FRAME", 64 * 1024))
WS_RATE_PER_S = env_float("WS_RATE_PER_S", 20)
WS_RATE_BURST = env_float("WS_RATE_BURST", 40)
WS_AUTH_TIMEOUT_S = env_float("WS_AUTH_TIMEOUT_S", 10)
AUTH_RECHECK_S = env_float("AUTH_RECHECK_S", 2)
PRESENCE_HEARTBEAT_S = env_float("PRESENCE_HEARTBEAT_S", 20)
PRESENCE_TIMEOUT_S = env_float("PRESENCE_TIMEOUT_S", 60)
# The embedded default runs the background loop inside daphne; production runs `manage.py worker`.
BACKGROUND_IN_PROCESS = env_bool("BACKGROUND_IN_PROCESS", not REDIS_URL)

# Warnings: the issuing organisation's code in CAP identifiers (GB/T 35965.1 style); set per site.
WARNING_ISSUER_CODE = os.environ.get("WARNING_ISSUER_CODE", "44030000000000")
# Emerging-hotspot warning rules read weeks of history: each is evaluated at most this often (seconds).
WARNING_EMERGING_EVERY_S = float(os.environ.get("WARNING_EMERGING_EVERY_S", "60"))

# Maps and units: an optional base-tile URL (the map works on our own territory outlines without one),
# and an optional road network (.osm.pbf or a saved .npz) for travel-time unit recommendation.
MAP_TILE_URL = os.environ.get("MAP_TILE_URL", "")
MAP_TILE_ATTRIBUTION = os.environ.get("MAP_TILE_ATTRIBUTION", "")
ROAD_NETWORK_FILE = os.environ.get("ROAD_NETWORK_FILE") or None
STRAIGHT_LINE_SPEED_KMH = env_float("STRAIGHT_LINE_SPEED_KMH", 30)
STRAIGHT_LINE_DETOUR = env_float("STRAIGHT_LINE_DETOUR", 1.3)

DEMO_PASSWORD = "demo-pass-2026"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}


# --- Security (issue 9) ---
# Everything below is the security configuration (docs/security.md); production tunes it by environment.


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


# Server processes' garbage-collector thresholds (config/runtime.py says why they are not CPython's).
GC_THRESHOLDS = os.environ.get("GC_THRESHOLDS") or "50000,20,10"


MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "config.security.SecurityHeadersMiddleware",
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("config.security.SecurityHeadersMiddleware") + 1,
    "config.security.RequestLimitsMiddleware",
)

# Rate limits and lockout are counted in the cache, which must be shared by every process: Redis when
# REDIS_URL is set. Short socket timeouts, because the limits fail open when Redis is down.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.RedisCache",  # Django's, keeping its Redis clients (config/cache.py)
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "yjld"),
            "OPTIONS": {
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
                # One pool per process, not one per request context (config/cache.py).
                "pool_class": "config.cache.SharedConnectionPool",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# REST: expiring bearer tokens, throttles, and JSON output with personal numbers masked.
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "command.tokens.ExpiringBearerTokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["config.security.ApiThrottle"]
REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"] = ["config.security.RedactingJSONRenderer"]
SECURITY_RATES = {
    # per username and address, and per address, on the token login and the login forms
    "login": os.environ.get("RATE_LOGIN", "20/min"),
    "login_ip": os.environ.get("RATE_LOGIN_IP", "200/min"),
    # per user on POST /api/v1/reports/
    "report": os.environ.get("RATE_REPORT", "60/min"),
    # per address on routes open without authentication (token login, schema, docs)
    "anon": os.environ.get("RATE_ANON", "120/min"),
    # per user on the audited reveal of personal data
    "reveal": os.environ.get("RATE_REVEAL", "60/hour"),
}
# How many reverse proxies in front of daphne append to X-Forwarded-For (0: trust REMOTE_ADDR only).
SECURITY_TRUSTED_PROXIES = env_int("SECURITY_TRUSTED_PROXIES", 0)
LOGIN_FORM_PATHS = ("/login/", "/admin/login/")

# Lockout: this many failed sign-ins of one username from one address within the window lock that pair.
AUTHENTICATION_BACKENDS = ["command.tokens.LockoutModelBackend"]
LOCKOUT_FAILURES = env_int("LOCKOUT_FAILURES", 5)
LOCKOUT_WINDOW_S = env_int("LOCKOUT_WINDOW_S", 15 * 60)
LOCKOUT_S = env_int("LOCKOUT_S", 15 * 60)

# Sessions (pages) and bearer tokens (phones, integrations) expire.
TOKEN_TTL_S = env_int("TOKEN_TTL_S", 24 * 3600)
# A valid token is remembered per process this long (one lookup per burst); 0 looks it up every time.
TOKEN_CACHE_S = env_float("TOKEN_CACHE_S", 2)
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# Behind TLS (HTTPS=true): secure cookies, HSTS, and optionally the redirect and the proxy's scheme header.
HTTPS = env_bool("HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Request bodies: JSON and forms, and multipart uploads (every photo of a report at its largest).
REQUEST_MAX_BYTES = env_int("REQUEST_MAX_BYTES", 5 * 1024 * 1024)
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", PHOTO_MAX_COUNT * PHOTO_MAX_BYTES + 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_MAX_BYTES

# Log lines never carry personal numbers in clear.
LOGGING["filters"] = {"redact": {"()": "config.security.RedactingLogFilter"}}
_log_handlers: dict[str, dict[str, object]] = LOGGING["handlers"]  # type: ignore[assignment]
_log_handlers["console"]["filters"] = ["redact"]

# The audit chain's anchors, filed per database; the background loop writes one a day.
AUDIT_ANCHOR_DIR = Path(os.environ.get("AUDIT_ANCHOR_DIR") or VAR_DIR / "audit-anchors")
AUDIT_ANCHOR_DAILY = env_bool("AUDIT_ANCHOR_DAILY", True)
