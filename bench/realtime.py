"""Realtime benchmark: report → order.created latency, warning fan-out, idle memory per socket.

Run: `.venv/bin/python -m bench.realtime [--others 1000] [--fanout 1000,5000] [--samples 200] [--warnings 3]`.

It builds its own world — a PostgreSQL database `bench_realtime` (dropped and re-created), a
throwaway redis-server, the demo city, two daphne processes of the product and one of a bare
Channels app — and prints each figure beside the baselines measured in the same run:
  * a bare `group_send` to one websocket client (the floor of any Channels delivery);
  * channels' naive fan-out: one `group_send` per connection, to N connections.
Clients are real websocket clients (the `websockets` library) in this process, except the idle "others"
of the intake latency, held by a helper process so that the timed client does not share its interpreter
with them; the timed reports go over one kept-alive HTTP connection. Under each intake phase it prints
the CPU each party used per report over the timed window: daphne A (takes the POSTs), daphne B (holds
the lead client, whose acks mark the orders delivered), this process, and PostgreSQL (all of its
processes on the machine). Each fan-out size gets `--warnings` warnings (default 3) over the same
sockets, 2 s apart, with the last arrival and each party's CPU printed per warning, since one warning's
last arrival moves by ±50 % with whatever else the 2 cores were doing. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import http.client
import json
import operator
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))
DB_NAME = "bench_realtime"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL process on this machine (its backends come and go)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    total += cpu_s(int(entry.name))
            except OSError:
                continue
    return total


# Per timed phase: the CPU each party used per report (milliseconds), printed under its figures.
cpu_per_report: dict[str, float] = {}
# The product's daphne processes by name ("A" takes the POSTs, "B" holds the lead client).
daphne_pids: dict[str, int] = {}


class World:
    """The services, processes and data one run needs."""

    def __init__(self) -> None:
        self.redis_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            {
                "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
                "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "BACKGROUND_IN_PROCESS": "0",
                "LOG_LEVEL": "WARNING",
                "WS_RATE_BURST": "1000",
                # One reporter posts every sample: the production per-user limit would throttle the bench.
                "RATE_REPORT": "1000000/min",
                "RATE_LOGIN": "1000000/min",
            }
        )
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        self.processes.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(0.3)
        for args in (["migrate", "-v0"], ["demo_city", "--quiet-logins"]):
            subprocess.run(
                [PY, "manage.py", *args], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL
            )
        os.environ.update({k: self.env[k] for k in ("DATABASE_URL", "REDIS_URL", "BACKGROUND_IN_PROCESS")})
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
        # The harness (not the product) reads fixtures through the ORM between awaits.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        import django

        django.setup()

    def daphne(self, app: str = "config.asgi:application") -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        process = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(port), app],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        return url, process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def tickets(usernames: list[str]) -> list[str]:
    """One websocket ticket per entry (straight through the product's service)."""
    from command.models import User
    from realtime.feeds import ticket_issue

    users = {u.username: u for u in User.objects.filter(username__in=set(usernames))}
    return [ticket_issue(users[name]) for name in usernames]


def bench_users(n: int) -> list[str]:
    """n grid-worker users with no grids (they receive only what is sent to them by name)."""
    from django.contrib.auth.hashers import make_password

    from command.models import User

    existing = User.objects.filter(username__startswith="bench").count()
    if existing < n:
        password = make_password(None)
        User.objects.bulk_create(
            [
                User(username=f"bench{i:05d}", role="grid_worker", password=password)
                for i in range(existing, n)
            ]
        )
    return [f"bench{i:05d}" for i in range(n)]


class Client:
    """An asyncio websocket client of /ws/stream/ that timestamps the events it receives."""

    def __init__(self, base: str, ticket: str) -> None:
        self.url = base.replace("http://", "ws://") + "/ws/stream/"
        self.ticket = ticket
        self.arrivals: dict[str, float] = {}
        # Woken on an arrival, so that the harness waits without polling (a polling loop would take CPU
        # from the servers it measures, on a machine of two cores).
        self.arrived = asyncio.Condition()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self, watch: Any) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.url, max_size=2**22, open_timeout=60, ping_interval=None) as ws:
            await ws.send(json.dumps({"type": "auth", "ticket": self.ticket}))
            welcome = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "hello", "resume_from": welcome["head"]}))
            self.ready.set()
            async for raw in ws:
                now = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "event":
                    key = watch(message)
                    if key is not None:
                        self.arrivals[key] = now
                        async with self.arrived:
                            self.arrived.notify_all()
                    await ws.send(json.dumps({"type": "ack", "seq": message["seq"]}))


async def open_clients(base: str, names: list[str], watch: Any, batch: int = 200) -> list[Client]:
    """Open one socket per username, a batch at a time; tickets are issued per batch (they live 60 s)."""
    from asgiref.sync import sync_to_async

    clients = []
    for start in range(0, len(names), batch):
        ticket_list = await sync_to_async(tickets)(names[start : start + batch])
        chunk = [Client(base, t) for t in ticket_list]
        for client in chunk:
            client.task = asyncio.ensure_future(client.run(watch))
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in chunk)), 120)
        clients += chunk
    return clients


async def close_clients(clients: list[Client]) -> None:
    for client in clients:
        if client.task:
            client.task.cancel()
    await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)


def post_report(
    conn: http.client.HTTPConnection, token: str, lon: float, lat: float
) -> tuple[int, dict[str, Any]]:
    """POST one report on a kept-alive connection (as a phone's HTTP client keeps its connection)."""
    body = json.dumps({"category": "AC02", "description": "两车相撞", "lon": lon, "lat": lat}).encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": uuid.uuid4().hex,
    }
    conn.request("POST", "/api/v1/reports/", body, headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


_HOLD_IDLE = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def one(url, ticket, connected):
    for attempt in range(3):
        try:
            ws = await connect(url, max_size=2**22, open_timeout=60, ping_interval=None)
            break
        except (OSError, TimeoutError):
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)
    async with ws:
        await ws.send(json.dumps({"type": "auth", "ticket": ticket}))
        welcome = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "hello", "resume_from": welcome["head"]}))
        connected.set_result(None)
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "event":
                await ws.send(json.dumps({"type": "ack", "seq": message["seq"]}))

async def main():
    jobs = json.load(open(sys.argv[1]))
    loop = asyncio.get_running_loop()
    tasks = []
    for start in range(0, len(jobs), 200):  # a batch at a time, as a crowd of phones would not all at once
        batch = [loop.create_future() for _ in jobs[start : start + 200]]
        pairs = zip(jobs[start : start + 200], batch)
        tasks += [asyncio.ensure_future(one(url, ticket, f)) for (url, ticket), f in pairs]
        deadline = loop.time() + 120
        while not all(f.done() for f in batch) and loop.time() < deadline:
            ended = [t for t in tasks if t.done()]  # a client task only ends by failing
            if ended:
                print("failed", repr(ended[0].exception()), flush=True)
                return
            await asyncio.sleep(0.05)
        if not all(f.done() for f in batch):
            print("failed: timeout", flush=True)
            return
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
    for task in tasks:
        task.cancel()

asyncio.run(main())
"""


def hold_idle_clients(jobs: list[tuple[str, str]]) -> subprocess.Popen[str]:
    """Idle websocket clients (url, ticket) held by a helper process until its stdin is closed.

    Their event loop then does not share the measuring process's interpreter (and its GIL) with the
    client whose latency is timed."""
    spec = Path(tempfile.mkdtemp(prefix="bench-idle-")) / "idle.json"
    spec.write_text(json.dumps(jobs))
    helper = subprocess.Popen(
        [PY, "-c", _HOLD_IDLE, str(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert helper.stdout is not None
    line = helper.stdout.readline()
    assert line.strip() == "ready", f"idle clients did not connect: {line!r}"
    return helper


# The POST's own round trip (the intake and its answer) of each intake_latency sample.
answers: list[float] = []


async def intake_latency(
    world: World, a: str, b: str, others: int, samples: int, *, spread: bool
) -> list[float]:
    """POST a traffic accident on A → order.created at the lead police client on B, with `others` idle.

    spread: at the centres of the district's grids in turn, else all at one spot of one grid.
    """
    from rest_framework.authtoken.models import Token

    from command.demo import DISTRICT_SLUGS
    from command.models import User
    from gis.models import TerritoryUnit
    from tests.support.factories import point_in

    grid = User.objects.get(username="grid01").grids.order_by("code").values_list("code", flat=True)[0]
    police = f"police_{DISTRICT_SLUGS[grid[:6]]}"
    if spread:
        # Accidents all over the district (its police leads each): what a day brings, no duplicates.
        codes = TerritoryUnit.objects.filter(layer="grid", code__startswith=grid[:6]).order_by("code")
        spots = [point_in(code) for code in codes.values_list("code", flat=True)[:samples]]
    else:
        spots = [point_in(grid)]  # every sample at one spot: a storm, each report linking 20 duplicates
    token = Token.objects.get_or_create(user=User.objects.get(username="grid01"))[0].key
    idle_names = bench_users(others)
    from asgiref.sync import sync_to_async

    jobs = []
    for base, names in ((b, idle_names[: others // 2]), (a, idle_names[others // 2 :])):
        url = base.replace("http://", "ws://") + "/ws/stream/"
        for start in range(0, len(names), 200):  # tickets live 60 s: issued as the helper connects
            jobs += [(url, t) for t in await sync_to_async(tickets)(names[start : start + 200])]
    helper = await asyncio.get_running_loop().run_in_executor(None, hold_idle_clients, jobs) if jobs else None
    lead = (
        await open_clients(
            b,
            [police],
            lambda m: (
                str(m["data"]["incident_id"])
                if m["event"] == "order.created" and m["data"]["role"] == "lead"
                else None
            ),
        )
    )[0]
    latencies = []
    answers.clear()
    parties = {f"daphne {name}": pid for name, pid in daphne_pids.items()}
    parties["this bench process"] = os.getpid()
    before = {name: cpu_s(pid) for name, pid in parties.items()}
    before["PostgreSQL"] = postgres_cpu_s()
    loop = asyncio.get_running_loop()
    conn = http.client.HTTPConnection(a.removeprefix("http://"), timeout=30)
    for n in range(samples):
        lon, lat = spots[n % len(spots)]
        sent = time.perf_counter()
        status, body = await loop.run_in_executor(None, post_report, conn, token, lon, lat)
        answers.append((time.perf_counter() - sent) * 1000)
        assert status == 201, body
        key = str(body["id"])
        async with lead.arrived:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    lead.arrived.wait_for(functools.partial(operator.contains, lead.arrivals, key)), 10
                )
        latencies.append((lead.arrivals.get(key, float("inf")) - sent) * 1000)
    after = {name: cpu_s(pid) for name, pid in parties.items()}
    after["PostgreSQL"] = postgres_cpu_s()
    cpu_per_report.clear()
    cpu_per_report.update({name: (after[name] - before[name]) * 1000 / samples for name in after})
    conn.close()
    await close_clients([lead])
    if helper is not None:
        assert helper.stdin is not None
        helper.stdin.close()
        helper.wait(30)
    return latencies


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds so far of each party: the product's daphne processes, this process, PostgreSQL."""
    spent = {f"daphne {name}": cpu_s(pid) for name, pid in daphne_pids.items()}
    spent["this bench process"] = cpu_s(os.getpid())
    spent["PostgreSQL"] = postgres_cpu_s()
    return spent


async def warning_fanout(a: str, b: str, n: int, rounds: int) -> list[tuple[float, float, int, str]]:
    """Publish `rounds` warnings, 2 s apart, to n users with one socket each (split over A and B).

    Per warning: ms to write its feed rows, ms from commit to the last client's arrival, how many clients
    got it, and the CPU each party spent on it (from the publish until 1 s after the last arrival, so the
    clients' acks and their writes are counted).
    """
    from asgiref.sync import sync_to_async
    from django.db import transaction

    from command.models import User
    from realtime.publish import publish

    names = bench_users(n)
    markers: list[str] = []

    def watch(m):
        headline = m["data"].get("headline") if m["event"] == "warning.issued" else None
        return headline if headline in markers else None

    clients = await open_clients(a, names[: n // 2], watch) + await open_clients(b, names[n // 2 :], watch)
    ids = list(User.objects.filter(username__in=names).values_list("pk", flat=True))
    results = []
    for _ in range(rounds):
        await asyncio.sleep(2)
        marker = uuid.uuid4().hex
        markers.append(marker)

        def issue(marker: str = marker) -> tuple[float, float]:
            started = time.perf_counter()
            with transaction.atomic():
                publish(
                    name="warning.issued",
                    recipients=ids,
                    data={"id": 1, "level": "orange", "type": "暴雨", "headline": marker, "status": "issued"},
                )
                written = time.perf_counter()
            return started, written

        before = cpu_snapshot()
        started, written = await sync_to_async(issue)()
        deadline = time.perf_counter() + 30
        while sum(1 for c in clients if marker in c.arrivals) < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        arrivals = [c.arrivals.get(marker, float("inf")) for c in clients]
        got = sum(1 for x in arrivals if x != float("inf"))
        await asyncio.sleep(1)
        after = cpu_snapshot()
        spent = ", ".join(f"{name} {(after[name] - before[name]) * 1000:.0f}" for name in after)
        results.append(((written - started) * 1000, (max(arrivals) - written) * 1000, got, spent))
    await close_clients(clients)
    return results


async def bare_baselines(bare: str, n_fanout: int, samples: int) -> tuple[list[float], float]:
    """Bare group_send to one client (latency), and naive per-connection fan-out to n (last arrival)."""
    from channels.layers import get_channel_layer
    from websockets.asyncio.client import connect

    layer = get_channel_layer()
    assert layer is not None
    url = bare.replace("http://", "ws://")
    one = await connect(f"{url}/bare/0/")
    await asyncio.sleep(0.5)
    latencies = []
    for i in range(samples):
        sent = time.perf_counter()
        await layer.group_send("bare.0", {"type": "bare.message", "body": {"i": i}})
        await one.recv()
        latencies.append((time.perf_counter() - sent) * 1000)
    await one.close()
    sockets = []
    for i in range(1, n_fanout + 1):
        sockets.append(await connect(f"{url}/bare/{i}/"))
    await asyncio.sleep(1)
    started = time.perf_counter()
    for i in range(1, n_fanout + 1):
        await layer.group_send(f"bare.{i}", {"type": "bare.message", "body": {"x": 1}})
    await asyncio.gather(*(s.recv() for s in sockets))
    last = (time.perf_counter() - started) * 1000
    await asyncio.gather(*(s.close() for s in sockets))
    return latencies, last


async def idle_memory(a: str, pid: int, n: int) -> float:
    """RSS growth of one daphne process per idle connection, in KB."""

    names = bench_users(n)
    before = rss_kb(pid)
    clients = await open_clients(a, names, lambda m: None)
    await asyncio.sleep(2)
    after = rss_kb(pid)
    await close_clients(clients)
    return (after - before) / n


def line(label: str, value: str, target: str = "", ratio: str = "") -> None:
    print(f"{label:<62} {value:>18}  {target:<16} {ratio}")


async def run(args: argparse.Namespace) -> None:
    # This process holds up to 5,000 clients, which in the field are 5,000 phones: its collector gets the
    # server's thresholds (config/runtime.py), so that full collections of its own heap of 5,000 clients
    # (as the servers' of 2,500 sockets did, 0.4–0.8 s each) do not delay the arrival times it takes.
    gc.set_threshold(50_000, 20, 10)
    world = World()
    world.start()
    try:
        a, pid_a = world.daphne()
        b, pid_b = world.daphne()
        daphne_pids.update({"A": pid_a.pid, "B": pid_b.pid})
        bare, _ = world.daphne("bench.bare_asgi:application")
        fanouts = [int(x) for x in args.fanout.split(",") if x]
        cores = os.cpu_count()
        print(f"bench/realtime.py — {cores} cores; 2 product daphne processes + 1 bare; PostgreSQL; Redis")
        base_lat, naive = await bare_baselines(bare, max(fanouts, default=0), args.samples)
        base_p50 = statistics.median(base_lat)
        line("baseline: bare group_send → 1 client, p50", f"{base_p50:.2f} ms")
        line("baseline: bare group_send → 1 client, p99", f"{pct(base_lat, 99):.2f} ms")
        if fanouts:
            naive_label = f"baseline: naive group_send per connection → {max(fanouts)} clients, last"
            line(naive_label, f"{naive:.0f} ms")
        for spread, where in ((True, "over the district"), (False, "all at one spot")):
            lat = await intake_latency(world, a, b, args.others, args.samples, spread=spread)
            p50, p99 = statistics.median(lat), pct(lat, 99)
            line(
                f"POST report → order.created at lead client ({args.others} others), p50",
                f"{p50:.1f} ms",
                "target ≤ 15 ms",
                f"{p50 / base_p50:.1f}× bare",
            )
            line(
                f"  reports {where}, p99",
                f"{p99:.1f} ms",
                "target ≤ 60 ms",
                f"{p99 / pct(base_lat, 99):.1f}× bare",
            )
            line("  the POST's own answer, p50", f"{statistics.median(answers):.1f} ms")
            line("  the POST's own answer, p99", f"{pct(answers, 99):.1f} ms")
            spent = ", ".join(f"{name} {ms:.1f}" for name, ms in cpu_per_report.items())
            print(f"  CPU per report (ms): {spent}")
        for n in fanouts:
            rounds = await warning_fanout(a, b, n, args.warnings)
            target = "≤ 250 ms" if n <= 1000 else "≤ 1000 ms"
            writes = [write_ms for write_ms, _last, _got, _cpu in rounds]
            lasts = [last_ms for _write, last_ms, _got, _cpu in rounds]
            line(
                f"warning to {n} clients: feed rows written (one transaction)",
                f"{statistics.median(writes):.0f} ms",
            )
            line(
                f"warning to {n} clients: commit → last client has it, median of {len(rounds)}",
                f"{statistics.median(lasts):.0f} ms",
                f"target {target}",
                f"{statistics.median(lasts) / naive:.2f}× naive({max(fanouts)})" if n == max(fanouts) else "",
            )
            for i, (_write, last_ms, got, spent) in enumerate(rounds, 1):
                print(f"  warning {i}: last of {got}/{n} at {last_ms:.0f} ms; CPU (ms): {spent}")
        if not args.idle:
            return
        per_socket = await idle_memory(b, pid_b.pid, args.idle)
        line(
            f"idle sockets held by one daphne process ({args.idle}): RSS per socket",
            f"{per_socket:.1f} KB",
            "target ≤ 40 KB",
        )
    finally:
        world.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--fanout", default="1000,5000", help='comma-separated sizes ("" for none)')
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warnings", type=int, default=3, help="warnings issued to each fan-out size")
    parser.add_argument("--idle", type=int, default=5000, help="0 skips the idle-memory part")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
