"""Benchmark of block data on PostgreSQL: counts per block per day, and the GeoPackage export.

Run: ``.venv/bin/python -m bench.stats [--incidents N] [--export N] [--keep]``. It uses its own database
``bench_stats`` on the server of ``BENCH_DATABASE_URL`` (default postgres://postgres@127.0.0.1:5432/…),
dropped and re-created unless ``--keep`` finds it already filled; it never touches the ``test`` database.

1. Setup: migrate, load the demo city (2,000 grids, 500 blocks), then COPY ``--incidents`` incidents
   (default 1,000,000) spread evenly over the 365 days up to now, at points drawn uniformly in the city
   and geocoded by the product's index, with random categories, grades and statuses; plus one report
   (name and phone) for each of the newest ``--export`` incidents.
2. Counts per block per day for the last 30 days (about 1/12 of the rows), through
   ``command.stats.incident_counts`` and through the REST API end to end. Baseline in the same run: the
   naive way, the month's rows read into pandas and grouped there. Target ≤ 500 ms.
3. GeoPackage export of the newest ``--export`` incidents (default 100,000) through the REST API,
   timed to the last byte, with the process's resident memory sampled every 5 ms; the same for a tenth
   of the rows to show memory stays flat. Baseline: read all rows into a GeoDataFrame and write it with
   ``to_file`` in one go. Target ≤ 10 s with memory flat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

DB_NAME = "bench_stats"
TARGET_COUNTS_MS = 500.0
TARGET_EXPORT_S = 10.0


def _load() -> str:
    """The machine's load average: figures from a busy machine say so."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Samples this process's resident memory in a thread; peak and start in MiB."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.start = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = _rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _server_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _with_db(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def _prepare_database(keep: bool) -> bool:
    """Create bench_stats (dropping an old one unless keep); True when kept with data in it."""
    import psycopg

    admin = _with_db(_server_url(), "postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and keep:
            return True
        if exists:
            conn.execute(f'DROP DATABASE "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    return False


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["DATABASE_URL"] = _with_db(_server_url(), DB_NAME)
    os.environ.setdefault("YJLD_SKIP_PREFLIGHT", "1")
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    import logging

    import django

    django.setup()
    # One audit line per export would drown the figures.
    logging.getLogger("yjld.audit").setLevel(logging.WARNING)


def _points(n: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from gis.locator import get_index
    from gis.models import TerritoryUnit

    boxes = np.array(
        list(
            TerritoryUnit.objects.filter(layer="district").values_list(
                "min_lon", "min_lat", "max_lon", "max_lat"
            )
        )
    )
    west, south, east, north = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    rng = np.random.default_rng(seed)
    index = get_index()
    parts: dict[str, list[Any]] = {}
    have = 0
    while have < n:
        lon = rng.uniform(west, east, 2 * (n - have) + 1000)
        lat = rng.uniform(south, north, lon.size)
        res = index.geocode_many(lon, lat)
        keep = (res["grid_code"] != None) & (res["block_code"] != None) & ~res["snapped"]  # noqa: E711
        for name, values in (("lon", lon), ("lat", lat), *((k, res[k]) for k in _CODES)):
            parts.setdefault(name, []).append(np.asarray(values)[keep])
        have += int(keep.sum())
    return {k: np.concatenate(v)[:n] for k, v in parts.items()}


_CODES = ("district_code", "street_code", "community_code", "grid_code", "block_code")


def _fill(n: int, export: int, seed: int) -> None:
    """COPY n incidents over the last year, and reports for the newest `export` ones."""
    import numpy as np
    from django.db import connection

    from command.models import User
    from incidents.models import Category, Grade, Incident, Report

    t0 = time.perf_counter()
    pts = _points(n, seed)
    print(f"   {n:,} points drawn and geocoded in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(seed + 1)
    now = dt.datetime.now(dt.UTC)
    # Evenly over the year, newest last; the ids then follow time, as they do in production.
    seconds = np.sort(rng.uniform(0, 365 * 86400, n))[::-1]
    cats = np.array(list(Category.objects.filter(parent__isnull=False).values_list("pk", flat=True)))
    grades = np.array([*Grade.objects.values_list("pk", flat=True), 0])
    statuses = np.array(
        ["registered", "dispatched", "in_progress", "handled", "closed", "evaluated", "cancelled"]
    )
    workers = np.array(list(User.objects.filter(role="grid_worker").values_list("pk", flat=True)))
    cat = rng.choice(cats, n)
    grade = rng.choice(grades, n)
    status = rng.choice(statuses, n)
    worker = rng.choice(workers, n)
    overdue = rng.random(n) < 0.1
    table = Incident._meta.db_table
    given = {
        "code",
        "status",
        "category_id",
        "grade_id",
        "description",
        "address",
        "lon",
        "lat",
        *_CODES,
        "geocode",
        "occurred_at",
        "reported_at",
        "reported_by_id",
        "overdue_at",
        "updated_at",
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_name = %s AND column_name <> 'id' ORDER BY ordinal_position",
            [table],
        )
        schema = cursor.fetchall()
    # Columns this script does not know (other features' additions) get a neutral value of their type.
    extra = {
        name: _neutral(kind)
        for name, kind, nullable, default in schema
        if name not in given and nullable == "NO" and default is None
    }
    columns = [*sorted(given), *extra]
    t0 = time.perf_counter()
    raw = connection.connection  # the psycopg connection under Django's wrapper
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for i in range(n):
            moment = now - dt.timedelta(seconds=float(seconds[i]))
            row = {
                "code": f"B{i:08d}",
                "status": str(status[i]),
                "category_id": int(cat[i]),
                "grade_id": int(grade[i]) or None,
                "description": "基准测试事件",
                "address": "",
                "lon": float(pts["lon"][i]),
                "lat": float(pts["lat"][i]),
                **{k: str(pts[k][i]) for k in _CODES},
                "geocode": "{}",
                "occurred_at": moment,
                "reported_at": moment,
                "reported_by_id": int(worker[i]),
                "overdue_at": moment + dt.timedelta(hours=4) if overdue[i] else None,
                "updated_at": now,
                **extra,
            }
            copy.write_row([row[c] for c in columns])
    print(f"   {n:,} incidents copied in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    newest = list(
        Incident.objects.order_by("-reported_at").values_list(
            "pk", "reported_by_id", "category_id", "lon", "lat", "reported_at"
        )[:export]
    )
    with (
        raw.cursor() as cur,
        cur.copy(
            f"COPY {Report._meta.db_table} (incident_id, reporter_id, idempotency_key, request_hash, "
            "channel, category_id, description, lon, lat, input_lon, input_lat, input_crs, address, "
            "reporter_name, reporter_phone, occurred_at, received_at) FROM STDIN"
        ) as copy,
    ):
        for pk, by, category, lon, lat, at in newest:
            copy.write_row(
                [
                    pk,
                    by,
                    "",
                    "0" * 64,
                    "phone",
                    category,
                    "基准",
                    lon,
                    lat,
                    lon,
                    lat,
                    "wgs84",
                    "",
                    "张三",
                    "13812345678",
                    at,
                    at,
                ]
            )
    raw.commit()
    with connection.cursor() as cursor:
        # What autovacuum would soon do: set hint bits and the visibility map after a bulk load, and
        # gather statistics, so the first timed query does not pay for the load.
        cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute(f"VACUUM ANALYZE {Report._meta.db_table}")
    print(f"   {len(newest):,} reports copied and tables vacuumed in {time.perf_counter() - t0:.1f} s")


def _neutral(kind: str) -> Any:
    if kind in ("integer", "bigint", "smallint", "double precision", "real", "numeric"):
        return 0
    if kind == "boolean":
        return False
    if kind in ("jsonb", "json"):
        return "{}"
    if kind.startswith("timestamp"):
        return dt.datetime.now(dt.UTC)
    return ""


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm-up: plans, caches, the first connection
    result = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        result.append(time.perf_counter() - t0)
    return result


def bench_counts(repeat: int) -> None:
    """Part 2: counts per block per day for the last 30 days."""
    import pandas as pd
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from command.models import User
    from command.stats import StatsFilter, incident_counts, local_zone
    from incidents.models import Incident

    commander = User.objects.get(username="commander")
    today = timezone.localtime(timezone.now(), local_zone()).date()
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=local_zone())
    start = end - dt.timedelta(days=30)
    query = StatsFilter(start=start, end=end)
    in_month = Incident.objects.filter(reported_at__gte=start, reported_at__lt=end).count()
    total = Incident.objects.count()
    print(f"\n== counts per block per day, last 30 days: {in_month:,} of {total:,} incidents")
    rows: list[dict[str, Any]] = []

    def ours() -> None:
        rows[:] = incident_counts(commander, query=query, layer="block", bucket="day")

    runs = _times(ours, repeat)
    client = APIClient()
    client.force_authenticate(commander)
    params = {"layer": "block", "bucket": "day", "from": start.isoformat(), "to": end.isoformat()}

    def api() -> None:
        response = client.get("/api/v1/stats/incidents/", params)
        assert response.status_code == 200, response.content[:200]
        response.json()

    api_runs = _times(api, repeat)
    frame: list[pd.Series] = []

    def baseline() -> None:
        # The obvious way: fetch the month's rows and group them in pandas.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT block_code, reported_at FROM {Incident._meta.db_table} "
                "WHERE reported_at >= %s AND reported_at < %s AND status <> 'merged'",
                [start, end],
            )
            df = pd.DataFrame(cursor.fetchall(), columns=["block_code", "reported_at"])
        day = pd.to_datetime(df["reported_at"], utc=True).dt.tz_convert(str(local_zone())).dt.floor("D")
        frame[:] = [df.groupby([df["block_code"], day]).size()]

    base_runs = _times(baseline, max(1, repeat // 2))
    agree = sum(r["count"] for r in rows) == int(frame[0].sum()) and len(rows) == len(frame[0])
    median, api_median, base = (statistics.median(r) * 1000 for r in (runs, api_runs, base_runs))
    print(f"   {len(rows):,} (block, day) rows; pandas baseline agrees: {agree}")
    print(f"   {'':<34}{'median ms':>10}{'max ms':>9}")
    print(f"   {'selector (SQL GROUP BY)':<34}{median:>10.1f}{max(runs) * 1000:>9.1f}")
    print(f"   {'REST API end to end':<34}{api_median:>10.1f}{max(api_runs) * 1000:>9.1f}")
    print(f"   {'baseline: rows into pandas':<34}{base:>10.1f}{max(base_runs) * 1000:>9.1f}")
    print(f"   ratio ours / baseline: selector {median / base:.3f}, API {api_median / base:.3f}")
    verdict = _verdict(api_median <= TARGET_COUNTS_MS)
    print(f"   API median {api_median:.0f} ms, target ≤ {TARGET_COUNTS_MS:.0f} ms: {verdict}")
    for layer, bucket, label in (
        ("grid", "day", "per grid per day"),
        ("district", "hour", "per district per hour"),
    ):
        t = _times(partial(incident_counts, commander, query=query, layer=layer, bucket=bucket), 3)
        print(f"   also {label}, same month: median {statistics.median(t) * 1000:.0f} ms")
    year = StatsFilter(start=end - dt.timedelta(days=366), end=end)
    t = _times(lambda: incident_counts(commander, query=year, layer="block", bucket="month"), 3)
    whole = statistics.median(t) * 1000
    print(f"   also per block per month over the whole year ({total:,} rows): median {whole:.0f} ms")


def _drain(chunks: Iterator[bytes]) -> int:
    size = 0
    for chunk in chunks:
        size += len(chunk)
    return size


def bench_export(export: int) -> None:
    """Part 3: the GeoPackage export of the newest `export` incidents, time and memory."""
    import tempfile

    import geopandas as gpd
    import pandas as pd
    import pyogrio
    from django.db import connection
    from rest_framework.test import APIClient

    from command.models import User
    from incidents.models import Incident

    commander = User.objects.get(username="commander")
    client = APIClient()
    client.force_authenticate(commander)
    print("\n== GeoPackage export through the REST API (newest incidents; personal data masked, the default)")
    print(f"   {'incidents':>10}{'seconds':>9}{'MiB':>8}{'RSS before':>12}{'peak':>8}{'growth':>8}")
    results: dict[int, tuple[float, float]] = {}
    for size in (export // 10, export):
        # The oldest moment among the newest `size` incidents: the period [it, now + 1 min) holds them.
        first = Incident.objects.order_by("-reported_at").values_list("reported_at", flat=True)[size - 1]
        params = {
            "from": first.isoformat(),
            "to": (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).isoformat(),
        }
        with PeakRss() as rss:
            t0 = time.perf_counter()
            response: Any = client.get("/api/v1/exports/incidents.gpkg", params)
            assert response.status_code == 200
            length = _drain(response.streaming_content)
            response.close()
            took = time.perf_counter() - t0
        results[size] = (took, rss.peak - rss.start)
        growth = rss.peak - rss.start
        mib = length / 2**20
        print(f"   {size:>10,}{took:>9.2f}{mib:>8.1f}{rss.start:>12.0f}{rss.peak:>8.0f}{growth:>8.0f}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.gpkg"
        check: Any = client.get("/api/v1/exports/incidents.gpkg", params)
        with open(path, "wb") as out:
            for chunk in check.streaming_content:
                out.write(chunk)
        rows = pyogrio.read_info(path)["features"]
        print(f"   check: the {export:,}-incident file holds {rows:,} features")
        # Baseline: every row into a GeoDataFrame, then to_file in one go (memory grows with the rows).
        with PeakRss() as rss:
            t0 = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT i.id, i.code, i.status, i.category_id, i.grade_id, i.description, i.address, "
                    "i.lon, i.lat, i.district_code, i.street_code, i.community_code, i.grid_code, "
                    "i.block_code, i.occurred_at, i.reported_at, i.due_at, i.overdue_at, i.rework_count, "
                    f"r.reporter_name, r.reporter_phone FROM {Incident._meta.db_table} i LEFT JOIN "
                    "incidents_report r ON r.incident_id = i.id WHERE i.reported_at >= %s "
                    "ORDER BY i.reported_at",
                    [first],
                )
                names = [c.name for c in cursor.description]
                df = pd.DataFrame(cursor.fetchall(), columns=names)
            frame = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs="EPSG:4326")
            frame.to_file(Path(folder) / "baseline.gpkg", driver="GPKG", engine="pyogrio")
            base = time.perf_counter() - t0
        print(
            f"   baseline (all rows in a GeoDataFrame, to_file): {base:.2f} s, peak RSS growth "
            f"{rss.peak - rss.start:.0f} MiB"
        )
    took, growth = results[export]
    small_growth = results[export // 10][1]
    print(f"   ratio ours / baseline: time {took / base:.2f}")
    verdict = _verdict(took <= TARGET_EXPORT_S)
    print(
        f"   {export:,} incidents in {took:.2f} s, target ≤ {TARGET_EXPORT_S:.0f} s: {verdict}; "
        f"memory growth {small_growth:.0f} MiB at {export // 10:,} and {growth:.0f} MiB at {export:,} rows"
    )


def main() -> None:
    """Parse arguments, build or reuse the benchmark database, and print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--export", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--keep", action="store_true", help="reuse bench_stats when it already holds the data"
    )
    args = parser.parse_args()
    kept = _prepare_database(args.keep)
    _setup_django()
    from django.core.management import call_command

    from command.demo import demo_city_load
    from incidents.models import Incident

    print(f"== database {DB_NAME} ({'kept' if kept else 'created'}); {os.cpu_count()} CPUs, {_load()}")
    if kept:
        have = Incident.objects.count()
        if have < args.incidents:
            raise SystemExit(
                f"{DB_NAME} holds {have:,} incidents, fewer than {args.incidents:,}: run without --keep"
            )
    else:
        t0 = time.perf_counter()
        call_command("migrate", verbosity=0)
        demo_city_load(seed=2026, grids=2000)
        print(f"   migrated and demo city loaded in {time.perf_counter() - t0:.1f} s")
        _fill(args.incidents, args.export, seed=2026)
    bench_counts(args.repeat)
    bench_export(args.export)
    print(f"\n== done; {_load()}")


if __name__ == "__main__":
    main()
