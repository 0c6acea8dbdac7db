"""Benchmark of batch geocoding: what ``manage.py geocode_batch`` runs, on the generated city.

Run: ``.venv/bin/python -m bench.batch [--grids N] [--rows N] [--workers N]``. It writes a CSV and a Parquet
file of ``--rows`` points inside the territory (id, lon, lat, a short text column) and prints, for each:

* the raw floor: ``TerritoryIndex.geocode_many`` on the same points, already in memory (with blocks, as
  the command adds ``block_code``), best of three;
* ``gis.batch.geocode_file`` end to end (read, convert, geocode, write) with the single engine, its
  CPU-seconds (the per-core figure: pyarrow's reader and the writer thread run beside the main thread)
  and its stages;
* the same with ``--engine dask`` on ``--workers`` processes, and its speed-up over the single engine,
  once per multiprocessing start method in ``--contexts``: ``spawn`` (dask's default, what the command
  uses unless dask's ``multiprocessing.context`` is configured) and ``fork`` (no interpreter start-up).

The command itself adds only argument parsing and loading the index from the database. Figures depend on
what else the machine runs: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import shapely
from dask import config as dask_config

from gis.batch import BatchReport, geocode_file
from gis.citygen import generate_city
from gis.index import TerritoryIndex

TARGET_GRID = 1_000_000.0
TARGET_BLOCK = 500_000.0


def _points(index: TerritoryIndex, bounds: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points inside the territory, rounded to 7 decimals as real input is."""
    rng = np.random.default_rng(seed)
    lon_parts: list[np.ndarray] = []
    lat_parts: list[np.ndarray] = []
    have = 0
    while have < n:
        lon = np.round(rng.uniform(bounds[0], bounds[2], 2 * (n - have) + 1000), 7)
        lat = np.round(rng.uniform(bounds[1], bounds[3], lon.size), 7)
        found = index.geocode_many(lon, lat, with_block=False)
        keep = ~np.isnan(found["boundary_distance_m"]) & ~found["snapped"]
        lon_parts.append(lon[keep])
        lat_parts.append(lat[keep])
        have += int(keep.sum())
    return np.concatenate(lon_parts)[:n], np.concatenate(lat_parts)[:n]


def _best_rate(fn: Callable[[], object], n: int, repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPU(s)"


def _line(label: str, report: BatchReport, raw: float) -> str:
    return (
        f"  {label:<22} {report.points_per_second:>11,.0f} points/s end to end "
        f"({report.seconds:5.2f} s; {report.points_per_cpu_second:>11,.0f} per CPU-second)   "
        f"raw / this = {raw / report.points_per_second:4.2f}x"
    )


def _stages(report: BatchReport) -> str:
    return (
        f"      geocode_many {report.geocode_seconds:.2f} s, waiting for input {report.read_seconds:.2f} s, "
        f"writing {report.write_seconds:.2f} s (writer thread), CPU {report.cpu_seconds:.2f} s, "
        f"peak Arrow memory {report.peak_arrow_bytes / 2**20:.0f} MiB"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--grids", type=int, default=2000, help="grids of the generated city (demo: 2000)")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--dir", help="where to write the files (default: a temporary directory)")
    parser.add_argument(
        "--contexts",
        default="spawn,fork",
        help="multiprocessing start methods to try for the dask engine (spawn is dask's default)",
    )
    args = parser.parse_args(argv)

    print(f"before: {_load()}")
    t0 = time.perf_counter()
    city = generate_city(seed=args.seed, grids=args.grids)
    index = TerritoryIndex.from_units(city.units)
    bounds = shapely.total_bounds(np.array([u.geometry for u in city.layer("grid")], dtype=object))
    lon, lat = _points(index, bounds, args.rows, args.seed + 1)
    print(
        f"city: {args.grids} grids, index built, {args.rows:,} points drawn "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    raw_grid = _best_rate(lambda: index.geocode_many(lon, lat, with_block=False), lon.size)
    raw_block = _best_rate(lambda: index.geocode_many(lon, lat, with_block=True), lon.size)
    print()
    print("raw TerritoryIndex.geocode_many on the points in memory (best of 3, one core):")
    print(
        f"  grid + ancestors       {raw_grid:>11,.0f} points/s   target >= {TARGET_GRID:,.0f}: "
        f"{'MET' if raw_grid >= TARGET_GRID else 'NOT MET'}"
    )
    print(
        f"  with block             {raw_block:>11,.0f} points/s   target >= {TARGET_BLOCK:,.0f}: "
        f"{'MET' if raw_block >= TARGET_BLOCK else 'NOT MET'}"
    )

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        work = Path(folder)
        table = pa.table(
            {
                "id": np.arange(args.rows),
                "lon": lon,
                "lat": lat,
                "kind": pa.array(np.array(["井盖", "路灯", "积水", "占道"])[np.arange(args.rows) % 4]),
            }
        )
        pacsv.write_csv(table, work / "in.csv")
        pq.write_table(table, work / "in.parquet")
        del table
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.0f} MiB" for p in sorted(work.iterdir()))
        print()
        print(f"input files: {sizes}")
        for kind in ("csv", "parquet"):
            src, dst = work / f"in.{kind}", work / f"out.{kind}"
            print()
            print(f"{kind.upper()} in, {kind.upper()} out, {args.rows:,} rows (geocode_file, with blocks):")
            single = geocode_file(index, src, dst, progress=False)
            print(_line("single engine", single, raw_block))
            print(_stages(single))
            for context in args.contexts.split(","):
                with dask_config.set({"multiprocessing.context": context}):
                    dask = geocode_file(index, src, dst, engine="dask", workers=args.workers, progress=False)
                print(_line(f"dask {context}, {args.workers} wk", dask, raw_block))
                print(_stages(dask))
                print(f"      {dask.summary_lines()[-1]}")
                speedup = single.seconds / dask.seconds
                print(
                    f"  dask ({context}) / single = {speedup:.2f}x faster   target: faster than one core: "
                    f"{'MET' if speedup > 1.0 else 'NOT MET'}"
                )
    print()
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
