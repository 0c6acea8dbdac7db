"""Benchmark of incidents on PostgreSQL: report intake, duplicate keys under a retry storm, and listing.

Run: ``.venv/bin/python -m bench.incidents [--incidents 1000000] [--duration 30] [--clients 20] [--keep-db]``
(``--quick`` for a smoke run of a minute or two; the default run takes 5–7 minutes). It builds its own
world: a PostgreSQL database ``bench_incidents`` on the server of ``BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/…; dropped and re-created, never the ``test`` database; ``--keep-db``
keeps it and reuses a kept one), a throwaway redis-server (channel layer, rate-limit counters), the demo
city, ``--incidents`` incidents COPYed by ``bench/stats.py``'s loader (spread over the last 365 days;
the newest 1 % then given open statuses: reported, accepted, registered, dispatched, in progress),
VACUUM ANALYZE, and two daphne processes of the product, started anew for each measured run so that
none inherits what the previous one left behind. Clients are asyncio HTTP/1.1 clients in this process,
one keep-alive connection each, spread over the two processes. Each figure is printed beside a
baseline measured in the same run, with the load average; nothing here asserts on time.

The daphne processes run with ``RATE_REPORT=1000000/min``: the product's limit of 60 reports a minute
per user would otherwise answer 429 to the 20 demo grid workers sending hundreds a second. They use
``DJANGO_SETTINGS_MODULE`` when it is set (to try a setting out), else ``config.settings.base``.

1. Intake: ``POST /api/v1/reports/`` of rubbish heaps (UM04: not auto-dispatched, not registered on
   intake) by the grid workers grid01…grid20 (bearer tokens from ``POST /api/v1/auth/token/``), each
   with a fresh ``Idempotency-Key``, at points drawn over the whole city, from ``--clients`` closed-loop
   clients for ``--duration`` seconds after a warm-up, then from 2 clients (the latency when nothing
   queues). Prints reports/s, p50/p99, every answer's status, the CPU each party used, the PostgreSQL
   sessions opened, and the exceptions the processes logged. Baselines, the same clients: ``GET
   /healthz``, and the same POST without the key (400 after authentication, the rate limit and DRF,
   before the intake itself). Also in-process: the statements of one intake, and its time on a new
   and on a kept database connection. Targets ≥ 300 reports/s with p99 ≤ 100 ms.
2. Duplicates: ``--storm-keys`` keys, each sent ``--storm-copies`` times at once (over both processes),
   then ``--storm-retries`` more times after they committed, and once with a different body (409);
   then counts reports and incidents per key in the database. Target: 0 keys with duplicates.
3. Listing: ``GET /api/v1/incidents/`` as the command centre's operator with typical filters,
   ``--list-requests`` sequential requests each over HTTP. Baseline: the SQL the API ran (captured from
   one in-process request), executed on a plain cursor the same number of times; EXPLAIN ANALYZE names
   the plan. Target p99 ≤ 50 ms.

``--profile`` adds an in-process pyinstrument profile (Django's test client, no daphne) of intake and
of the slowest listing; ``--only intake|storm|listing`` (repeatable) runs some parts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAPHNE = str(Path(sys.executable).with_name("daphne"))
DB_NAME = "bench_incidents"
# The daphne processes log in as this role, limited to max_connections − OTHERS_HEADROOM sessions: the
# server is shared, and the product opens sessions faster than it closes them (see the intake output).
APP_ROLE = "bench_incidents_app"
OTHERS_HEADROOM = 30
INTAKE_CATEGORY = "UM04"  # 垃圾堆放: neither auto-dispatched nor registered on intake
LIST_CATEGORY = "AC05"  # a category the intake does not use, so its listing reads the loaded rows only
GRID_WORKERS = [f"grid{n:02d}" for n in range(1, 21)]
DEMO_PASSWORD = "demo-pass-2026"
TARGET_INTAKE_RPS = 300.0
TARGET_INTAKE_P99_MS = 100.0
TARGET_LIST_P99_MS = 50.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _pcts(ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of milliseconds."""
    if not ms:
        return float("nan"), float("nan")
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _with_db(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def _admin_dsn() -> str:
    return _with_db(_server_url(), "postgres").replace("postgres://", "postgresql://", 1)


# ------------------------------------------------------------------------------------- CPU accounting


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children_cpu_s(pid: int) -> float:
    """CPU seconds of the children a process has reaped (the postmaster: backends that ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / CLK_TCK


@dataclass
class CpuSnapshot:
    at: float
    daphne: float
    postgres: dict[int, float]
    postmaster_children: float
    sessions: int
    redis: float
    client: float
    machine: float


# ---------------------------------------------------------------------------------------- the world


class World:
    """The database, a throwaway redis-server and two daphne processes of the product."""

    def __init__(self) -> None:
        self.redis_port = _free_port()
        self.database_url = _with_db(_server_url(), DB_NAME)
        self.env = dict(os.environ)
        self.env.update(
            {
                # The product's settings; another module may be named to try a setting out.
                "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.base"),
                "DATABASE_URL": self.database_url,
                "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "BACKGROUND_IN_PROCESS": "0",
                "LOG_LEVEL": "WARNING",
                "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
                # 20 grid workers sending hundreds of reports a second: the per-user limit (60/min) is
                # raised for the bench, and says so in the output.
                "RATE_REPORT": "1000000/min",
            }
        )
        self.daphne_env = dict(self.env)
        self.role_limit: int | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.daphnes: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.admin: Any = None  # a psycopg connection to the server's postgres database
        self.postmaster = 0
        self.logdir = Path(tempfile.gettempdir())
        self.log_offsets: dict[str, int] = {}
        self.generation = 0

    def prepare_database(self, keep: bool) -> bool:
        """Create the database (dropping an old one unless keep finds it); True when a kept one is reused."""
        import psycopg

        with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
            if exists and keep:
                return True
            if exists:
                conn.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        return False

    def drop_database(self) -> None:
        import psycopg

        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django was never set up
            pass
        with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{APP_ROLE}"')

    def limit_sessions(self) -> str:
        """Let the daphne processes log in as APP_ROLE, limited so that others keep OTHERS_HEADROOM."""
        import psycopg
        from django.db import connection

        admin = self.admin_connection()
        row = admin.execute("SHOW max_connections").fetchone()
        limit = max(10, int(row[0]) - OTHERS_HEADROOM)
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        admin.execute(f'{"ALTER" if exists else "CREATE"} ROLE "{APP_ROLE}" LOGIN CONNECTION LIMIT {limit}')
        with connection.cursor() as cursor:
            cursor.execute(f'GRANT USAGE ON SCHEMA public TO "{APP_ROLE}"')
            cursor.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{APP_ROLE}"')
            cursor.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{APP_ROLE}"')
        parts = urlsplit(self.database_url)
        url = parts._replace(netloc=f"{APP_ROLE}@{parts.hostname}:{parts.port or 5432}").geturl()
        try:
            psycopg.connect(url.replace("postgres://", "postgresql://", 1)).close()
        except psycopg.Error as exc:
            return f"the daphne processes log in as the benchmark's user ({APP_ROLE} cannot: {exc})"
        self.daphne_env["DATABASE_URL"] = url
        self.role_limit = limit
        return f"the daphne processes log in as {APP_ROLE}, limited to {limit} sessions"

    def drop_role(self) -> None:
        """Remove APP_ROLE from the server (its grants first, when the database is kept)."""
        import psycopg

        if self.role_limit is None:
            return
        dsn = self.database_url.replace("postgres://", "postgresql://", 1)
        with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{APP_ROLE}"')
        with contextlib.suppress(psycopg.Error):
            self.admin_connection().execute(f'DROP ROLE IF EXISTS "{APP_ROLE}"')

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def setup_django(self) -> None:
        os.environ.update(self.env)
        import logging

        import django

        django.setup()
        # One audit line per report would drown the figures.
        logging.getLogger("yjld.audit").setLevel(logging.WARNING)

    def start_daphnes(self, n: int = 2) -> None:
        if not self.logdir.name.startswith("bench-incidents-"):
            self.logdir = Path(tempfile.mkdtemp(prefix="bench-incidents-"))
        self.generation += 1
        for i in range(n):
            port = _free_port()
            log = (self.logdir / f"daphne{self.generation}-{i}.log").open("wb")
            self.daphnes.append(
                subprocess.Popen(
                    [DAPHNE, "-v", "0", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
                    cwd=ROOT,
                    env=self.daphne_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            self.urls.append(f"http://127.0.0.1:{port}")
        for url in self.urls:
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=2)
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise SystemExit(f"daphne at {url} did not answer")
        self.snapshot()  # opens the monitoring connection while there are free slots

    def restart_daphnes(self) -> None:
        """New daphne processes, so that a part does not inherit what the previous one left behind."""
        self.stop_daphnes()
        self.start_daphnes()

    def stop_daphnes(self) -> None:
        for process in self.daphnes:
            process.terminate()
        for process in self.daphnes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.daphnes, self.urls = [], []

    def admin_connection(self) -> Any:
        """One connection to the server's postgres database, kept for the whole run."""
        import psycopg

        if self.admin is None:
            self.admin = psycopg.connect(_admin_dsn(), autocommit=True)
            self.postmaster = int(
                Path(f"/proc/{self.admin.info.backend_pid}/stat").read_text().rpartition(")")[2].split()[1]
            )
        return self.admin

    def snapshot(self) -> CpuSnapshot:
        """CPU used so far by each party, and the sessions opened on the bench database."""

        self.admin_connection()
        pids = [
            r[0]
            for r in self.admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (DB_NAME,)
            ).fetchall()
        ]
        row = self.admin.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (DB_NAME,)
        ).fetchone()
        return CpuSnapshot(
            at=time.perf_counter(),
            daphne=sum(_cpu_s(p.pid) for p in self.daphnes),
            postgres={pid: _cpu_s(pid) for pid in pids},
            postmaster_children=_children_cpu_s(self.postmaster),
            sessions=int(row[0]) if row else 0,
            redis=_cpu_s(self.redis.pid) if self.redis else 0.0,
            client=time.process_time(),
            machine=_machine_busy_s(),
        )

    def open_sessions(self) -> int:
        """Sessions open on the bench database now (sampled during a load)."""
        row = self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (DB_NAME,)
        ).fetchone()
        return int(row[0]) if row else 0

    def errors(self) -> Counter[str]:
        """The exceptions the daphne processes logged since the last call (their last traceback line)."""
        found: Counter[str] = Counter()
        for path in sorted(self.logdir.glob("daphne*.log")):
            offset = self.log_offsets.get(path.name, 0)
            with path.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
                self.log_offsets[path.name] = f.tell()
            for line in text.splitlines():
                if re.match(r"^[\w.]+(Error|Exception|Exhausted)\b.*?: ", line):
                    found[line.strip()[:160]] += 1
        return found

    def stop(self) -> None:
        self.stop_daphnes()
        self.drop_role()
        if self.admin is not None:
            self.admin.close()
        if self.redis is not None:
            self.redis.terminate()
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
        if self.logdir.name.startswith("bench-incidents-"):
            shutil.rmtree(self.logdir, ignore_errors=True)


def _pg_cpu(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """CPU seconds of PostgreSQL backends between two snapshots.

    Those of the bench database alive at the end, plus what the postmaster reaped meanwhile (the whole
    life of each backend that ended, less what those of the bench database had used before the
    window). Backends of other databases that ended in the window count too: the machine is shared.
    """
    pg = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in after.postgres.items())
    ended = sum(cpu for pid, cpu in before.postgres.items() if pid not in after.postgres)
    return pg + after.postmaster_children - before.postmaster_children - ended


def _cpu_line(before: CpuSnapshot, after: CpuSnapshot) -> str:
    wall = after.at - before.at

    def cores(a: float, b: float) -> str:
        return f"{(b - a) / wall:.2f}"

    pg = _pg_cpu(before, after)
    return (
        f"CPU (cores busy over the window): daphne ×2 {cores(before.daphne, after.daphne)}, "
        f"PostgreSQL backends {cores(0.0, pg)}, redis {cores(before.redis, after.redis)}, "
        f"this client {cores(before.client, after.client)}; whole machine "
        f"{cores(before.machine, after.machine)} of {os.cpu_count()}; "
        f"{after.sessions - before.sessions:,} PostgreSQL sessions opened"
    )


def _print_errors(world: World) -> None:
    """What the daphne processes logged as exceptions during the part (the cause of any 500)."""
    errors = world.errors()
    if not errors:
        print("   daphne logs: no exception")
    for line, n in errors.most_common(4):
        print(f"   daphne logs: {n:,}× {line}")


# -------------------------------------------------------------------------------------------- data


def load_data(n: int, seed: int) -> None:
    """Migrate, load the demo city, COPY n incidents (bench/stats.py's loader), open the newest 1 %."""
    from django.core.management import call_command
    from django.db import connection

    from bench.stats import _fill
    from command.demo import demo_city_load
    from incidents.models import Incident

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    demo_city_load(seed=2026, grids=2000)
    print(f"   migrated and demo city loaded (2,000 grids) in {time.perf_counter() - t0:.1f} s")
    _fill(n, 0, seed)
    t0 = time.perf_counter()
    # The loader's statuses are all past registration; a live system has a queue of open incidents,
    # and those are the newest ones.
    table = Incident._meta.db_table
    newest = max(1, n // 100)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = (ARRAY['reported','accepted','registered','dispatched',"
            f"'in_progress'])[1 + mod(id, 5)] WHERE id IN (SELECT id FROM {table} "
            "ORDER BY reported_at DESC LIMIT %s)",
            [newest],
        )
        cursor.execute(f"VACUUM ANALYZE {table}")
    print(
        f"   newest {newest:,} incidents given open statuses (reported … in progress) and the table "
        f"vacuumed in {time.perf_counter() - t0:.1f} s"
    )


# --------------------------------------------------------------------------------------- HTTP client


class Conn:
    """One keep-alive HTTP/1.1 connection (Content-Length or chunked answers)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in range(2):
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**22)
            reader = self.reader
            self.writer.write(payload)
            status_line = await reader.readline()
            if status_line:
                break
            # The server closed the idle connection before this request: open a new one, once.
            await self.close()
            self.reconnects += 1
            if attempt:
                raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        if chunked:
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append((await reader.readexactly(size + 2))[:-2])
            data = b"".join(chunks)
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        if close:
            await self.close()
        return status, data


async def login(url: str, username: str) -> str:
    conn = Conn(url)
    body = json.dumps({"username": username, "password": DEMO_PASSWORD}).encode()
    status, data = await conn.request(
        "POST", "/api/v1/auth/token/", {"Content-Type": "application/json"}, body
    )
    await conn.close()
    if status != 200:
        raise SystemExit(f"token login of {username} answered {status}: {data[:200]!r}")
    return str(json.loads(data)["token"])


Request = tuple[str, str, dict[str, str], bytes]


@dataclass
class LoadResult:
    clients: int
    duration: float
    done: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    all_statuses: Counter[int] = field(default_factory=Counter)  # warm-up included
    max_sessions: int = 0
    cpu: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.duration


async def closed_loop(
    world: World,
    conns: list[Conn],
    make: Callable[[int], Request],
    duration: float,
    warmup: float,
    expect: int,
) -> LoadResult:
    """Every client sends its next request as soon as the previous answer is in; measured after warm-up.

    The rate and the latencies count the answers with the `expect` status; the others are counted apart.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    t0, t1 = start + warmup, start + warmup + duration
    result = LoadResult(clients=len(conns), duration=duration)
    snaps: list[CpuSnapshot] = []

    async def client(i: int, conn: Conn) -> None:
        while True:
            sent = loop.time()
            if sent >= t1:
                return
            method, path, headers, body = make(i)
            status, _ = await conn.request(method, path, headers, body)
            done = loop.time()
            result.all_statuses[status] += 1
            if sent >= t0:
                result.statuses[status] += 1
                if status == expect:
                    result.latencies_ms.append((done - sent) * 1000)
                    if done <= t1:
                        result.done += 1

    async def cpu() -> None:
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        snaps.append(await asyncio.to_thread(world.snapshot))
        while loop.time() < t1 - 0.5:
            await asyncio.sleep(0.5)
            result.max_sessions = max(result.max_sessions, await asyncio.to_thread(world.open_sessions))
        await asyncio.sleep(max(0.0, t1 - loop.time()))
        snaps.append(await asyncio.to_thread(world.snapshot))

    await asyncio.gather(cpu(), *(client(i, c) for i, c in enumerate(conns)))
    result.cpu = _cpu_line(snaps[0], snaps[1])
    result.cpu += (
        f" ({(snaps[1].sessions - snaps[0].sessions) / max(1, result.done):.2f} per request), up to "
        f"{result.max_sessions} open at once"
    )
    return result


# -------------------------------------------------------------------------------------- 1. intake


def fresh_vs_kept(world: World, call: Callable[[], Any], n: int) -> str:
    """An in-process request on a new database connection each time, and on one kept open.

    p50 milliseconds of each, and the CPU the PostgreSQL backends spent per request.
    """
    from django.db import connection

    def series(fresh: bool) -> tuple[float, float]:
        time.sleep(0.2)  # lets the postmaster reap a backend that just ended
        before = world.snapshot()
        ms = []
        for _ in range(n):
            if fresh:
                connection.close()
            t0 = time.perf_counter()
            call()
            ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)
        return _pcts(ms)[0], _pg_cpu(before, world.snapshot()) / n * 1000

    connection.close()
    for _ in range(5):  # warm-up: a new connection's backend caches, Python's
        call()
    kept, kept_pg = series(False)
    connection.close()
    fresh, fresh_pg = series(True)
    return (
        f"p50 {fresh:.1f} ms on a new PostgreSQL connection each time, {kept:.1f} ms on one kept open; "
        f"PostgreSQL CPU per request {fresh_pg:.1f} ms and {kept_pg:.1f} ms"
    )


def _report_body(lon: float, lat: float, description: str) -> bytes:
    return json.dumps(
        {"category": INTAKE_CATEGORY, "description": description, "lon": lon, "lat": lat},
        ensure_ascii=False,
    ).encode()


def _headers(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def _print_load(label: str, r: LoadResult, base: LoadResult | None = None) -> None:
    p50, p99 = _pcts(r.latencies_ms)
    codes = ", ".join(f"{code}×{n:,}" for code, n in sorted(r.statuses.items()))
    ratio = ""
    if base is not None:
        b50, b99 = _pcts(base.latencies_ms)
        ratio = (
            f"  (÷ last baseline: rate {r.rate / base.rate:.2f}×, p50 {p50 / b50:.1f}×, p99 {p99 / b99:.1f}×)"
        )
    print(f"   {label:<58}{r.rate:>9.1f}/s{p50:>9.1f}{p99:>9.1f}   {codes}{ratio}")
    print(f"      {r.cpu}")


def bench_intake(world: World, args: argparse.Namespace, tokens: dict[str, str]) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from bench.stats import _points
    from incidents.models import Incident

    print(
        f"\n== 1. intake: POST /api/v1/reports/ ({INTAKE_CATEGORY}, no photo, a fresh Idempotency-Key "
        f"each) by {len(GRID_WORKERS)} grid workers; {args.clients} closed-loop clients, one keep-alive "
        f"connection each over the 2 daphne processes (new ones for each run); {args.duration:.0f} s after "
        f"{args.warmup:.0f} s of warm-up; RATE_REPORT raised to 1000000/min for the bench"
    )
    print(f"   {_load()}")
    pts = _points(50_000 if not args.quick else 5_000, seed=7)
    npts = len(pts["lon"])
    districts = Counter(str(c) for c in pts["district_code"])
    print(f"   {npts:,} points drawn over the city ({len(districts)} districts), used in turn")
    marker = f"bench-intake-{uuid.uuid4().hex[:8]}"
    counter = iter(range(10**9))

    def report(i: int) -> Request:
        k = next(counter)
        token = tokens[GRID_WORKERS[i % len(GRID_WORKERS)]]
        body = _report_body(float(pts["lon"][k % npts]), float(pts["lat"][k % npts]), f"垃圾堆放 {marker}")
        return "POST", "/api/v1/reports/", _headers(token, uuid.uuid4().hex), body

    def no_key(i: int) -> Request:
        token = tokens[GRID_WORKERS[i % len(GRID_WORKERS)]]
        return "POST", "/api/v1/reports/", _headers(token), _report_body(114.0, 22.6, "no key")

    def health(i: int) -> Request:
        return "GET", "/healthz", {}, b""

    def phase(clients: int, make: Callable[[int], Request], duration: float, expect: int) -> LoadResult:
        # New daphne processes for each run, so that none inherits the sessions the last one left open.
        world.restart_daphnes()

        async def run() -> LoadResult:
            conns = [Conn(world.urls[i % 2]) for i in range(clients)]
            result = await closed_loop(world, conns, make, duration, args.warmup, expect)
            for conn in conns:
                await conn.close()
            return result

        return asyncio.run(run())

    intake = phase(args.clients, report, args.duration, 201)
    light = phase(2, report, args.baseline_duration, 201)
    bare = phase(args.clients, health, args.baseline_duration, 200)
    keyless = phase(args.clients, no_key, args.baseline_duration, 400)
    print("   (rate and latencies: the expected answers only, 201 / 200 / 400; all answers on the right)")
    print(f"   {'':<58}{'rate':>11}{'p50 ms':>9}{'p99 ms':>9}   answers")
    _print_load(f"intake, {args.clients} clients", intake, keyless)
    _print_load("intake, 2 clients (one per process; the latency floor)", light, keyless)
    _print_load(f"baseline: GET /healthz, {args.clients} clients", bare)
    _print_load(f"baseline: the same POST without the key (400), {args.clients} clients", keyless)
    _print_errors(world)
    made = Incident.objects.filter(description=f"垃圾堆放 {marker}").count()
    answers = intake.all_statuses + light.all_statuses
    print(
        f"   201 answers of both intake runs, warm-ups included: {answers[201]:,}; incidents they made in "
        f"the database: {made:,}; other answers: {answers.total() - answers[201]}"
    )
    _, p99 = _pcts(intake.latencies_ms)
    failed = intake.statuses.total() - intake.statuses[201]
    print(
        f"   intake {intake.rate:.0f} reports/s (201 answers), target ≥ {TARGET_INTAKE_RPS:.0f}: "
        f"{_verdict(intake.rate >= TARGET_INTAKE_RPS)}; p99 {p99:.0f} ms at that rate, target ≤ "
        f"{TARGET_INTAKE_P99_MS:.0f} ms: {_verdict(p99 <= TARGET_INTAKE_P99_MS)}; "
        f"{failed:,} other answers in the window"
    )
    # What one intake asks of the database (in-process, Django's test client, same request).
    client = APIClient()
    token = tokens[GRID_WORKERS[0]]
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/api/v1/reports/",
            _report_body(float(pts["lon"][0]), float(pts["lat"][0]), f"垃圾堆放 {marker}").decode(),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        )
    writes = sum(
        1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE"))
    )
    print(
        f"   one intake (in-process, status {response.status_code}) issues {len(queries)} SQL statements "
        f"({writes} INSERT/UPDATE)"
    )
    k = iter(range(1, 10**6))

    def one() -> None:
        i = next(k) % npts
        client.post(
            "/api/v1/reports/",
            _report_body(float(pts["lon"][i]), float(pts["lat"][i]), f"垃圾堆放 {marker}").decode(),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        )

    print(f"   in-process intake: {fresh_vs_kept(world, one, 10 if args.quick else 40)}")


# ----------------------------------------------------------------------------------- 2. duplicates


def bench_storm(world: World, args: argparse.Namespace, tokens: dict[str, str]) -> None:
    from django.db.models import Count

    from bench.stats import _points
    from incidents.models import Incident, Report

    keys = [f"storm-{uuid.uuid4().hex}" for _ in range(args.storm_keys)]
    reporter = {k: GRID_WORKERS[i % len(GRID_WORKERS)] for i, k in enumerate(keys)}
    pts = _points(len(keys), seed=11)
    body = {
        k: _report_body(float(pts["lon"][i]), float(pts["lat"][i]), f"重复提交 {k}")
        for i, k in enumerate(keys)
    }
    wave = max(1, args.storm_wave)
    print(
        f"\n== 2. duplicates: {len(keys)} Idempotency-Keys, each sent {args.storm_copies}× at once over both "
        f"processes ({wave} keys at a time), then {args.storm_retries} retries of each after it committed, "
        "then once with a different body"
    )
    print(f"   {_load()}")
    first: Counter[int] = Counter()
    retried: Counter[int] = Counter()
    reused: Counter[int] = Counter()
    created_per_key: Counter[str] = Counter()

    async def run() -> float:
        conns = [Conn(world.urls[i % 2]) for i in range(wave * args.storm_copies)]
        t0 = time.perf_counter()

        async def send(conn: Conn, key: str, data: bytes) -> int:
            status, _ = await conn.request(
                "POST", "/api/v1/reports/", _headers(tokens[reporter[key]], key), data
            )
            return status

        for start in range(0, len(keys), wave):
            batch = keys[start : start + wave]
            jobs = [
                (conns[j * args.storm_copies + c], k)
                for j, k in enumerate(batch)
                for c in range(args.storm_copies)
            ]
            statuses = await asyncio.gather(*(send(conn, k, body[k]) for conn, k in jobs))
            for (_, k), status in zip(jobs, statuses, strict=True):
                first[status] += 1
                if status == 201:
                    created_per_key[k] += 1
        for _ in range(args.storm_retries):
            for start in range(0, len(keys), len(conns)):
                batch = keys[start : start + len(conns)]
                statuses = await asyncio.gather(
                    *(send(c, k, body[k]) for c, k in zip(conns, batch, strict=False))
                )
                retried.update(statuses)
                created_per_key.update(k for k, st in zip(batch, statuses, strict=False) if st == 201)
        for start in range(0, len(keys), len(conns)):
            batch = keys[start : start + len(conns)]
            statuses = await asyncio.gather(
                *(
                    send(c, k, body[k].replace("重复提交".encode(), "改过的".encode()))
                    for c, k in zip(conns, batch, strict=False)
                )
            )
            reused.update(statuses)
            created_per_key.update(k for k, st in zip(batch, statuses, strict=False) if st == 201)
        took = time.perf_counter() - t0
        for conn in conns:
            await conn.close()
        return took

    took = asyncio.run(run())
    reports = dict(
        Report.objects.filter(idempotency_key__in=keys)
        .values_list("idempotency_key")
        .annotate(n=Count("id"))
        .values_list("idempotency_key", "n")
    )
    made = list(
        Incident.objects.filter(
            description__in=[f"{word} {k}" for k in keys for word in ("重复提交", "改过的")]
        ).values_list("description", flat=True)
    )
    incidents = Counter(d.split(" ", 1)[1] for d in made)
    changed = sum(1 for d in made if d.startswith("改过的"))
    dup_keys = sum(
        1 for k in keys if reports.get(k, 0) > 1 or incidents.get(k, 0) > 1 or created_per_key[k] > 1
    )
    missing = sum(1 for k in keys if reports.get(k, 0) == 0)

    def codes(c: Counter[int]) -> str:
        return ", ".join(f"{code}×{n:,}" for code, n in sorted(c.items()))

    print(
        f"   {sum(first.values()) + sum(retried.values()) + sum(reused.values()):,} requests in {took:.1f} s"
    )
    print(f"   concurrent copies answered: {codes(first)} (expected {len(keys)}×201, the rest 200)")
    print(f"   retries after commit answered: {codes(retried)} (expected all 200)")
    print(f"   the same keys with a different body answered: {codes(reused)} (expected all 409)")
    print(
        f"   keys answered 201 more than once: {sum(1 for k in keys if created_per_key[k] > 1)}, "
        f"never: {sum(1 for k in keys if created_per_key[k] == 0)}"
    )
    print(
        f"   in the database: reports per key {dict(Counter(reports.get(k, 0) for k in keys))}, incidents "
        f"per key {dict(Counter(incidents.get(k, 0) for k in keys))}, of which made by the changed body "
        f"{changed} (right only for a key none of whose earlier requests was stored)"
    )
    _print_errors(world)
    print(
        f"   keys with duplicates: {dup_keys} (target 0: {_verdict(dup_keys == 0)}); "
        f"keys never stored (every request failed): {missing}"
    )


# -------------------------------------------------------------------------------------- 3. listing


def _explain(sql: str) -> tuple[list[str], float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        plan = [r[0] for r in cursor.fetchall()]
    took = next((float(x.split(":")[1].split()[0]) for x in plan if x.startswith("Execution Time")), 0.0)
    return plan, took


def bench_listing(world: World, args: argparse.Namespace) -> None:
    from django.db import connection
    from django.db.models import Count
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from rest_framework.test import APIClient

    from incidents.models import Incident

    # What autovacuum would do after the intake's inserts (the loader's rows were vacuumed already).
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Incident._meta.db_table}")
    total = Incident.objects.count()
    token = asyncio.run(login(world.urls[0], "operator"))
    district = Incident.objects.values_list("district_code").annotate(n=Count("id")).order_by("-n")[0][0]
    grids = list(
        Incident.objects.filter(reported_at__lt=timezone.now() - dt.timedelta(days=1))
        .values_list("grid_code")
        .annotate(n=Count("id"))
        .order_by("n")
        .values_list("grid_code", "n")
    )
    grid, grid_n = grids[len(grids) // 2]  # a grid with the median number of incidents
    week = (timezone.now() - dt.timedelta(days=7)).replace(microsecond=0).isoformat()
    combos: list[tuple[str, dict[str, str]]] = [
        ("newest 50, no filter", {}),
        (f"status=reported, one district ({district})", {"status": "reported", "area": district}),
        (f"category={LIST_CATEGORY}, last 7 days", {"category": LIST_CATEGORY, "reported_after": week}),
        (f"one grid ({grid}, {grid_n:,} incidents)", {"area": grid}),
        (
            "family UM, registered/dispatched/in progress",
            {"category": "UM", "status": "registered,dispatched,in_progress"},
        ),
        (f"category={LIST_CATEGORY} in one grid (rare)", {"category": LIST_CATEGORY, "area": grid}),
    ]
    print(
        f"\n== 3. listing: GET /api/v1/incidents/ as the operator, {total:,} incidents, page size 50; "
        f"{args.list_requests} sequential requests each over HTTP (alternating the 2 daphne processes)"
    )
    print(f"   {_load()}")
    print(
        f"   {'filter':<50}{'rows':>5}{'API p50':>9}{'p99':>8}{'SQL p50':>9}{'p99':>7}"
        f"{'ratio p50':>10}{'EXPLAIN':>9}{'busy':>6}   p99 ≤ {TARGET_LIST_P99_MS:.0f} ms"
    )
    print(
        "   (ratio: API p50 / SQL p50; EXPLAIN: its execution time in ms; busy: cores of the machine busy "
        "while the API was timed)"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    plans: dict[str, list[str]] = {}
    paths = [(label, "/api/v1/incidents/" + ("?" + urlencode(q) if q else "")) for label, q in combos]

    async def fetch(path: str) -> tuple[int, bytes]:
        conn = Conn(world.urls[0])
        result = await conn.request("GET", path, {"Authorization": f"Bearer {token}"})
        await conn.close()
        return result

    _, page = asyncio.run(fetch(paths[0][1]))
    nxt = json.loads(page).get("next")
    if nxt:
        parts = urlsplit(nxt)
        paths.insert(1, ("newest, second page (its cursor)", f"{parts.path}?{parts.query}"))
    worst: tuple[float, str] = (0.0, paths[0][1])
    for label, path in paths:

        async def timed(path: str = path) -> tuple[list[float], int, Counter[int], float]:
            conns = [Conn(u) for u in world.urls]
            headers = {"Authorization": f"Bearer {token}"}
            rows = -1
            for i in range(10):  # warm-up
                status, data = await conns[i % 2].request("GET", path, headers)
                if status == 200:
                    rows = len(json.loads(data)["results"])
            ms, failed = [], Counter[int]()
            busy0, wall0 = _machine_busy_s(), time.perf_counter()
            for i in range(args.list_requests):
                t0 = time.perf_counter()
                status, data = await conns[i % 2].request("GET", path, headers)
                ms.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    failed[status] += 1
            busy = (_machine_busy_s() - busy0) / (time.perf_counter() - wall0)
            for c in conns:
                await c.close()
            return ms, rows, failed, busy

        api_ms, rows, failed, busy = asyncio.run(timed())
        with CaptureQueriesContext(connection) as queries:
            response: Any = client.get(path)
        assert response.status_code == 200, response.content[:300]
        sql = next(
            q["sql"]
            for q in queries.captured_queries
            if 'FROM "incidents_incident"' in q["sql"] and "LIMIT" in q["sql"]
        )
        raw = connection.connection
        assert raw is not None
        sql_ms = []
        with raw.cursor() as cur:
            for _ in range(10):
                cur.execute(sql.encode())
                cur.fetchall()
            for _ in range(args.list_requests):
                t0 = time.perf_counter()
                cur.execute(sql.encode())
                cur.fetchall()
                sql_ms.append((time.perf_counter() - t0) * 1000)
        raw.commit()
        plan, explain_ms = _explain(sql)
        plans[label] = plan
        a50, a99 = _pcts(api_ms)
        s50, s99 = _pcts(sql_ms)
        worst = max(worst, (a99, path))
        print(
            f"   {label:<50}{rows:>5}{a50:>9.1f}{a99:>8.1f}{s50:>9.2f}{s99:>7.2f}{a50 / s50:>9.1f}×"
            f"{explain_ms:>8.2f}{busy:>6.2f}   {_verdict(a99 <= TARGET_LIST_P99_MS and not failed)}"
            + "".join(f"  ({n}× answered {code})" for code, n in sorted(failed.items()))
        )
    _print_errors(world)
    newest = fresh_vs_kept(world, lambda: client.get(paths[0][1]), 10 if args.quick else 40)
    print(f"   in-process, newest 50: {newest}")
    print("   plans (EXPLAIN ANALYZE of the SQL the API ran; scans and sorts):")
    for label, plan in plans.items():
        nodes = [
            re.sub(r" on incidents_incident\b", "", p.strip().lstrip("-> ").split("  (")[0])
            for i, p in enumerate(plan)
            if (i == 0 or p.strip().startswith("->"))
            and ("Sort" in p or ("Scan" in p and "incidents_incident" in p))
        ]
        print(f"     {label}: {'; '.join(nodes)}")
    args.worst_listing = worst[1]


# ------------------------------------------------------------------------------------------ profile


def profile(args: argparse.Namespace, tokens: dict[str, str]) -> None:
    """pyinstrument of intake and of the slowest listing, in-process through Django's test client."""
    from pyinstrument import Profiler
    from rest_framework.test import APIClient

    from bench.stats import _points

    pts = _points(200, seed=13)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[GRID_WORKERS[0]]}")
    n = 100 if not args.quick else 20
    profiler = Profiler(interval=0.0005)
    t0 = time.perf_counter()
    with profiler:
        for i in range(n):
            client.post(
                "/api/v1/reports/",
                _report_body(float(pts["lon"][i]), float(pts["lat"][i]), "profile").decode(),
                content_type="application/json",
                HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
            )
    print(f"\n== profile: {n} intakes in-process, {(time.perf_counter() - t0) / n * 1000:.1f} ms each")
    print(profiler.output_text(color=False, processor_options={"filter_threshold": 0.02}))
    worst = getattr(args, "worst_listing", None)
    if worst:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['operator']}")
        profiler = Profiler(interval=0.0005)
        t0 = time.perf_counter()
        with profiler:
            for _ in range(n):
                client.get(worst)
        print(f"\n== profile: {n}× {worst} in-process, {(time.perf_counter() - t0) / n * 1000:.1f} ms each")
        print(profiler.output_text(color=False, processor_options={"filter_threshold": 0.02}))


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    """Parse arguments, build the world, run the three parts and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured intake")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--baseline-duration", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--storm-keys", type=int, default=200)
    parser.add_argument("--storm-copies", type=int, default=8)
    parser.add_argument("--storm-wave", type=int, default=5, help="keys stormed at the same time")
    parser.add_argument("--storm-retries", type=int, default=2)
    parser.add_argument("--list-requests", type=int, default=250)
    parser.add_argument("--only", choices=["intake", "storm", "listing"], action="append")
    parser.add_argument("--profile", action="store_true", help="add in-process pyinstrument profiles")
    parser.add_argument("--keep-db", action="store_true", help=f"keep {DB_NAME} (and reuse a kept one)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.incidents = min(args.incidents, 20_000)
        args.duration, args.warmup, args.baseline_duration = 5.0, 1.0, 3.0
        args.clients = min(args.clients, 8)
        args.storm_keys, args.storm_copies, args.storm_retries = 20, 4, 1
        args.list_requests = 30
    parts = set(args.only or ["intake", "storm", "listing"])
    # A terminated run still stops its processes and drops its database and role (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    world = World()
    print(f"bench/incidents.py — {os.cpu_count()} CPUs; {_load()} at the start")
    kept = world.prepare_database(args.keep_db)
    try:
        world.start_redis()
        world.setup_django()
        from incidents.models import Incident

        if kept:
            have = Incident.objects.filter(code__startswith="B").count()
            if have < args.incidents:
                raise SystemExit(f"{DB_NAME} holds {have:,} loaded incidents, fewer than {args.incidents:,}")
            print(f"== database {DB_NAME} kept from an earlier run: {Incident.objects.count():,} incidents")
        else:
            print(f"== database {DB_NAME} created; loading {args.incidents:,} incidents")
            load_data(args.incidents, seed=2026)
        print(f"   {world.limit_sessions()} (others keep {OTHERS_HEADROOM} on this shared server)")
        world.start_daphnes()
        max_conn = world.admin_connection().execute("SHOW max_connections").fetchone()[0]
        print(
            f"   2 daphne processes at {', '.join(world.urls)} "
            f"(settings {world.env['DJANGO_SETTINGS_MODULE']}); redis-server on port {world.redis_port}; "
            f"PostgreSQL max_connections {max_conn}"
        )

        async def tokens_all() -> dict[str, str]:
            names = [*GRID_WORKERS, "operator"]
            keys = await asyncio.gather(*(login(world.urls[i % 2], n) for i, n in enumerate(names)))
            return dict(zip(names, keys, strict=True))

        tokens = asyncio.run(tokens_all())
        if "intake" in parts:
            bench_intake(world, args, tokens)
        if "storm" in parts:
            world.restart_daphnes()
            bench_storm(world, args, tokens)
        if "listing" in parts:
            world.restart_daphnes()
            bench_listing(world, args)
        if args.profile:
            profile(args, tokens)
    finally:
        world.stop()
        if not args.keep_db:
            world.drop_database()
    print(f"\n== done; {_load()}{'; database kept' if args.keep_db else ''}")


if __name__ == "__main__":
    main()
