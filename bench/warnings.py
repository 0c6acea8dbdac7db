"""Benchmark of early warnings: area resolution at city scale, and issuing to thousands of recipients.

Run: ``.venv/bin/python -m bench.warnings [--grids N] [--recipients N] [--skip-db]``. It prints:

1. Area resolution (gis.areas.AreaResolver, as get_area_resolver builds it) of district-sized polygons
   against a generated city of ``--grids`` grids (default 100,000): each district's own outline, and the
   same outline turned by 7° so its edges cross the grids instead of following them. Beside it, the
   baseline measured in the same run: a geopandas overlay of the grid layer with the area (both already
   in the resolver's metric frame), the obvious way to write it. Target: ≤ 100 ms.
2. Issuing a warning whose area reaches ``--recipients`` grid workers (default 5,000) plus the demo
   city's departments and command centre, on PostgreSQL: recipients worked out, receipts and the
   outbox rows of one event per recipient written and committed (the push through the channel layer,
   after commit, is timed on its own). Then an update (new version to the same people) and a cancel.
   Target: ≤ 1 s. It uses a throwaway database ``yjld_bench_warnings`` on the server of
   ``BENCH_DATABASE_URL`` (default: TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres),
   created and dropped by the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

TARGET_RESOLVE_MS = 100.0
TARGET_ISSUE_S = 1.0


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    result = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        result.append(time.perf_counter() - t0)
    return result


def bench_resolution(grids: int, repeat: int) -> None:
    """Part 1: area resolution of district-sized polygons against `grids` grids."""
    import geopandas as gpd
    import numpy as np
    import shapely
    from pyproj import Transformer
    from shapely import affinity

    from gis.areas import AreaResolver
    from gis.citygen import generate_city

    t0 = time.perf_counter()
    city = generate_city(grids=grids)
    generated = time.perf_counter() - t0
    t0 = time.perf_counter()
    resolver = AreaResolver.from_units(city.units)
    built = time.perf_counter() - t0
    grid_units = city.layer("grid")
    to_metric = Transformer.from_crs("EPSG:4326", resolver.crs, always_xy=True)

    def project(geoms: Any) -> Any:
        # Densified first, as the resolver does, so edges shared in lon/lat stay shared in metres.
        dense = shapely.segmentize(geoms, 0.001)
        return shapely.transform(dense, lambda xy: np.column_stack(to_metric.transform(xy[:, 0], xy[:, 1])))

    print(f"== area resolution: {len(grid_units):,} grids, {len(resolver):,} units in all")
    print(f"   city generated in {generated:.1f} s, resolver built in {built:.2f} s")
    metric_grids = gpd.GeoDataFrame(
        {"code": [u.code for u in grid_units]},
        geometry=project(np.asarray([u.geometry for u in grid_units], dtype=object)),
    )
    metric_grids["unit_m2"] = metric_grids.area
    worst = 0.0
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"   load average {load} on {os.cpu_count()} cores at the start (other work inflates the times)")
    columns = f"{'grids':>8}{'best ms':>9}{'median ms':>11}{'max ms':>9}{'baseline ms':>13}{'ratio':>7}"
    print(f"   {'area':<24}{columns}")
    for district in city.layer("district"):
        for label, area in (
            (f"{district.code} outline", district.geometry),
            (f"{district.code} turned 7°", affinity.rotate(district.geometry, 7, origin="centroid")),
        ):
            resolver.resolve(area)  # warm-up: first use prepares the geometry's structures
            runs = _times(partial(resolver.resolve, area), repeat)
            covered = len(resolver.resolve(area)["grid"])
            metric_area = gpd.GeoDataFrame(geometry=[project(area)])
            t0 = time.perf_counter()
            hit = gpd.overlay(metric_grids, metric_area, how="intersection", keep_geom_type=True)
            baseline = time.perf_counter() - t0
            agree = int((hit.area / hit["unit_m2"] > 1e-6).sum())
            assert agree == covered, f"baseline disagrees: {agree} grids against {covered}"
            best, median, top = min(runs) * 1000, statistics.median(runs) * 1000, max(runs) * 1000
            worst = max(worst, median)
            ratio = median / (baseline * 1000)
            print(
                f"   {label:<24}{covered:>8,}{best:>9.1f}{median:>11.1f}{top:>9.1f}"
                f"{baseline * 1000:>13.0f}{ratio:>7.2f}"
            )
    vertices = int(max(shapely.get_num_coordinates(d.geometry) for d in city.layer("district")))
    print(f"   districts have up to {vertices} vertices; ratio = ours / geopandas overlay (lower is better)")
    verdict = _verdict(worst <= TARGET_RESOLVE_MS)
    print(f"   worst median {worst:.1f} ms, target ≤ {TARGET_RESOLVE_MS:.0f} ms: {verdict}")


def _setup_django(database_url: str) -> Any:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["DATABASE_URL"] = database_url
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = "yjld_bench_warnings"
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit(f"the issue benchmark needs PostgreSQL, got {connection.vendor} from {database_url}")
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    return old_name


def bench_issue(recipients: int, database_url: str, repeat: int) -> None:
    """Part 2: issue, update and cancel of a warning reaching `recipients` grid workers and more."""
    old_name = _setup_django(database_url)
    from django.db import connection

    try:
        _bench_issue(recipients, repeat)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _bench_issue(recipients: int, repeat: int) -> None:
    from datetime import timedelta

    import shapely
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone

    import realtime.publish
    from command.demo import demo_city_load
    from command.models import Department, EarlyWarning, User, WarningReceipt
    from command.warnings import (
        warning_audience,
        warning_cancel,
        warning_create,
        warning_event_data,
        warning_issue,
        warning_update,
    )
    from gis.locator import get_area_resolver
    from gis.models import TerritoryUnit
    from realtime.models import Event, FeedEntry
    from realtime.publish import publish

    t0 = time.perf_counter()
    demo_city_load(seed=2026, grids=2000)
    print(f"\n== issue on PostgreSQL: demo city loaded in {time.perf_counter() - t0:.1f} s")
    grid_ids = list(TerritoryUnit.objects.filter(layer="grid").order_by("code").values_list("pk", flat=True))
    street = Department.objects.filter(kind="street_office").first()
    unusable = make_password(None)
    users = User.objects.bulk_create(
        [
            User(username=f"bench{n:05d}", role="grid_worker", department=street, password=unusable)
            for n in range(recipients)
        ],
        batch_size=2000,
    )
    User.grids.through.objects.bulk_create(
        [
            User.grids.through(user_id=u.pk, territoryunit_id=grid_ids[i % len(grid_ids)])
            for i, u in enumerate(users)
        ],
        batch_size=5000,
    )
    operator = User.objects.get(username="operator")
    commander = User.objects.get(username="commander")
    resolver = get_area_resolver()
    districts = [u.geometry for u in resolver.units if u.layer == "district"]
    city = shapely.union_all(districts).buffer(0.001)
    area = {"polygons": [[list(p) for p in shapely.get_exterior_ring(city.convex_hull).coords]]}

    def fresh_warning() -> EarlyWarning:
        return warning_create(
            actor=operator,
            payload={
                "level": "yellow",
                "type": "高温",
                "headline": "全市高温黄色预警",
                "area": area,
                "expires": (timezone.now() + timedelta(hours=12)).isoformat(),
            },
        )

    # The push after commit goes through the channel layer; it is timed on its own below.
    real_push = realtime.publish.push_event
    pushed: list[int] = []
    realtime.publish.push_event = pushed.append  # type: ignore[assignment]
    t0 = time.perf_counter()
    audience = warning_audience(resolver.resolve(shapely.from_wkb(bytes(fresh_warning().area_wkb))))
    print(
        f"   recipients worked out (resolve + queries) in {(time.perf_counter() - t0) * 1000:.0f} ms: "
        f"{len(audience):,} recipients"
    )
    issue_runs, issue_cpu, update_runs, cancel_runs = [], [], [], []
    count = 0
    for _ in range(repeat):
        warning = fresh_warning()
        t0, c0 = time.perf_counter(), time.process_time()
        warning_issue(warning_id=warning.pk, actor=operator)
        issue_runs.append(time.perf_counter() - t0)
        issue_cpu.append(time.process_time() - c0)
        count = WarningReceipt.objects.filter(warning=warning).count()
        t0 = time.perf_counter()
        warning_update(
            warning_id=warning.pk, actor=operator, changes={"headline": "全市高温黄色预警（更新）"}
        )
        update_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        warning_cancel(warning_id=warning.pk, actor=commander, reason="降温")
        cancel_runs.append(time.perf_counter() - t0)
    realtime.publish.push_event = real_push
    event = Event.objects.filter(name="warning.issued").order_by("-pk").first()
    assert event is not None
    entries = FeedEntry.objects.filter(event=event).count()
    t0 = time.perf_counter()
    delivered = real_push(event.pk)
    push_s = time.perf_counter() - t0
    best = min(issue_runs)
    print(f"   receipts per warning {count:,}, feed entries of its issued event {entries:,}")
    print(
        f"   issue  (recipients + receipts + {entries:,} outbox rows, committed): "
        f"best {best * 1000:.0f} ms, median {statistics.median(issue_runs) * 1000:.0f} ms over {repeat} "
        f"(this process's CPU: median {statistics.median(issue_cpu) * 1000:.0f} ms)"
    )
    print(
        f"   update (same recipients again, receipts reset, new event): "
        f"median {statistics.median(update_runs) * 1000:.0f} ms"
    )
    print(f"   cancel: median {statistics.median(cancel_runs) * 1000:.0f} ms")
    print(
        f"   push of one event to {entries:,} users through the channel layer (after commit): "
        f"{push_s * 1000:.0f} ms ({'pushed' if delivered else 'no channel layer'})"
    )
    sample = EarlyWarning.objects.order_by("-pk").first()
    assert sample is not None
    t0 = time.perf_counter()
    with transaction.atomic():
        publish(name="warning.updated", data=warning_event_data(sample, "bench"), recipients=list(audience))
        transaction.set_rollback(True)
    print(
        f"   realtime.publish alone (one event, {len(audience):,} feeds): "
        f"{(time.perf_counter() - t0) * 1000:.0f} ms"
    )
    print(f"   baseline in the same run: {count:,} receipts alone with bulk_create: ", end="")
    warning = fresh_warning()
    rows = [WarningReceipt(warning=warning, user_id=u, notified_at=timezone.now()) for u in audience]
    t0 = time.perf_counter()
    with transaction.atomic():
        WarningReceipt.objects.bulk_create(rows, batch_size=2000)
    print(f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    print(
        f"   issue target ≤ {TARGET_ISSUE_S:.0f} s for {recipients:,}+ recipients: "
        f"{_verdict(statistics.median(issue_runs) <= TARGET_ISSUE_S)}"
    )


def main() -> None:
    """Parse the options and run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=100_000)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-db", action="store_true", help="only the area resolution part")
    parser.add_argument("--skip-resolution", action="store_true", help="only the issue part")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args()
    if not args.skip_resolution:
        bench_resolution(args.grids, max(args.repeat, 5))
    if not args.skip_db:
        bench_issue(args.recipients, args.database_url, args.repeat)


if __name__ == "__main__":
    main()
