"""Real services for the test suite, chosen before Django reads its settings.

Loaded with ``-p tests.services_plugin`` so that it runs before pytest-django imports the settings:
PostgreSQL and Redis come from TEST_DATABASE_URL / TEST_REDIS_URL when set, else the local default
ports, else throwaway servers started from the initdb/pg_ctl and redis-server binaries on PATH. If
none of that works the run stops with a message naming the Debian packages to install: a missing
service never turns into skipped tests. With YJLD_TEST_EMBEDDED=1 the suite runs on the embedded
default instead (SQLite and the in-memory channel layer).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/1"
_cleanups: list[tuple[str, list[str]]] = []


def _fail(message: str) -> None:
    sys.stderr.write(f"\nERROR (test services): {message}\n")
    raise SystemExit(3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_ok(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (run `make install`)"
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _redis_ok(url: str) -> str | None:
    try:
        import redis
    except ImportError:
        return "redis (redis-py) is not installed (run `make install`)"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
        return None
    except Exception as exc:
        return str(exc) or type(exc).__name__


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _start_postgres() -> str:
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        _fail(
            "PostgreSQL is not reachable and no initdb/pg_ctl binaries were found to start one. "
            "Install the Debian package 'postgresql' (or set TEST_DATABASE_URL)."
        )
    assert initdb and pg_ctl
    datadir = tempfile.mkdtemp(prefix="yjld-pg-")
    port = _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root; the postgres system user owns the throwaway cluster.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _fail("running as root and no 'postgres' user exists to own a throwaway PostgreSQL cluster")
        shutil.chown(datadir, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, initdb, "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", datadir, "-o", opts, "-w", "-l", f"{datadir}/log", "start"],
        check=True,
        capture_output=True,
    )
    _cleanups.append(("postgres", [*prefix, pg_ctl, "-D", datadir, "-m", "immediate", "stop"]))
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def _start_redis() -> str:
    binary = shutil.which("redis-server")
    if not binary:
        _fail(
            "Redis is not reachable and no redis-server binary was found to start one. "
            "Install the Debian package 'redis-server' (or set TEST_REDIS_URL)."
        )
    assert binary
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _redis_ok(url) is None:
            break
        time.sleep(0.05)
    _cleanups.append(("redis", ["kill", str(proc.pid)]))
    return url


def _choose(
    explicit_var: str, default: str, check: Callable[[str], str | None], start: Callable[[], str]
) -> str:
    explicit = os.environ.get(explicit_var)
    if explicit:
        problem = check(explicit)
        if problem:
            _fail(f"{explicit_var}={explicit} is not usable: {problem}")
        return explicit
    if check(default) is None:
        return default
    url = start()
    problem = check(url)
    if problem:
        _fail(f"started a throwaway server at {url} but cannot use it: {problem}")
    return url


@atexit.register
def _stop_servers() -> None:
    for _, command in reversed(_cleanups):
        subprocess.run(command, capture_output=True, check=False)


def _configure() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["INSECURE_FAST_PASSWORD_HASHER_FOR_TESTS"] = "1"
    if os.environ.get("YJLD_TEST_EMBEDDED") == "1":
        folder = tempfile.mkdtemp(prefix="yjld-")
        os.environ["DATABASE_URL"] = "sqlite:///" + os.path.join(folder, "db.sqlite3")
        # A file, not pytest-django's in-memory default, so a daphne subprocess sees the same data.
        os.environ["DATABASE_TEST_NAME"] = os.path.join(folder, "test.sqlite3")
        os.environ.pop("REDIS_URL", None)
        return
    # xdist workers inherit the controller's environment: the servers it chose (or started), its
    # database name (pytest-django appends the worker's id) and its Redis names (the worker's id added).
    os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"] = _choose(
        "TEST_DATABASE_URL", DEFAULT_PG, _pg_ok, _start_postgres
    )
    # One test database per run, so that concurrent runs on one machine do not drop each other's.
    os.environ.setdefault("DATABASE_TEST_NAME", f"test_yjld_{os.getpid()}")
    os.environ["REDIS_URL"] = os.environ["TEST_REDIS_URL"] = _choose(
        "TEST_REDIS_URL", DEFAULT_REDIS, _redis_ok, _start_redis
    )
    # Redis pub/sub ignores the database number: runs (and workers of a run) sharing one Redis would
    # receive each other's events, so each gets its own channel and cache names.
    run = os.environ.setdefault("YJLD_TEST_RUN", str(os.getpid()))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ["CHANNEL_PREFIX"] = f"test{run}{worker}"
    os.environ["CACHE_KEY_PREFIX"] = f"test{run}{worker}"


_configure()


def pytest_report_header() -> list[str]:
    """Say which services this run uses, so a log shows what was tested against what."""
    if os.environ.get("YJLD_TEST_EMBEDDED") == "1":
        return ["services: embedded default (SQLite + in-memory channel layer)"]
    return [f"services: DATABASE_URL={os.environ['DATABASE_URL']} REDIS_URL={os.environ['REDIS_URL']}"]
