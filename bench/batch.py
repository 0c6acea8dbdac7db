"""Benchmark of batch geocoding: what ``manage.py geocode_batch`` runs, on the generated city.

Run: ``.venv/bin/python -m bench.batch [--grids N] [--rows N] [--workers N] [--repeat N]``. It writes a CSV
and a Parquet file of ``--rows`` points inside the territory (id, lon, lat, a short text column) and
prints, for each:

* the raw floor: ``TerritoryIndex.geocode_many`` on the same points, already in memory (with blocks, as
  the command adds ``block_code``), best of three;
* ``gis.batch.geocode_file`` end to end (read, convert, geocode, write) with the single engine (one
  geocoding thread; pyarrow's reader and a writer thread beside it) and with ``--engine dask`` on
  ``--workers`` threads, alternated ``--repeat`` times in this one process, each run with its wall time,
  CPU-seconds and stages;
* the dask / single speed-up measured in this run: the ratio of the median wall times, and each
  alternated pair's ratio;
* the same comparison for one-off runs, as ``geocode_batch`` makes them: ``--fresh`` alternated pairs,
  each run in a new Python process that loads the index (pickled by this one) and then times one
  ``geocode_file`` call, which for the dask engine includes importing dask.

Like the command, it calls ``gis.batch.tune_allocator()`` first (see there). The command adds argument
parsing, loading the index from the database and, for ``--engine dask``, importing dask (timed below).
Figures depend on what else the machine runs: the load average is printed before and after each format.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import shapely

from gis.batch import BatchReport, geocode_file, tune_allocator
from gis.citygen import generate_city
from gis.index import TerritoryIndex

TARGET_GRID = 1_000_000.0
TARGET_BLOCK = 500_000.0
# Alternated runs of one engine differ by 10-20 % on a shared machine; "faster" must beat that noise.
FASTER = 1.05


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
        f"  {label:<16} {report.points_per_second:>11,.0f} points/s end to end "
        f"({report.seconds:5.2f} s; {report.cpu_seconds:5.2f} CPU-s = "
        f"{report.points_per_cpu_second:>11,.0f} per CPU-second)   raw / this = "
        f"{raw / report.points_per_second:4.2f}x"
    )


def _stages(report: BatchReport) -> str:
    return (
        f"      geocode_many {report.geocode_seconds:.2f} s, waiting for input {report.read_seconds:.2f} s, "
        f"writing {report.write_seconds:.2f} s, peak Arrow memory {report.peak_arrow_bytes / 2**20:.0f} MiB"
    )


def _import_seconds(module: str) -> float:
    """Seconds to import module here (0 when something imported it already)."""
    if module in sys.modules:
        return 0.0
    t0 = time.perf_counter()
    importlib.import_module(module)
    return time.perf_counter() - t0


_FRESH_RUN = """
import json, os, pickle, sys, time
if sys.argv[6] != "all":
    os.sched_setaffinity(0, {int(c) for c in sys.argv[6].split(",")})  # before any thread starts
from gis.batch import geocode_file, tune_allocator
tune_allocator()
with open(sys.argv[1], "rb") as handle:
    index = pickle.load(handle)
cpu0, t0 = time.process_time(), time.perf_counter()
report = geocode_file(index, sys.argv[2], sys.argv[3], engine=sys.argv[4], workers=int(sys.argv[5]),
                      progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
                  "rows": report.rows}))
"""


def _fresh(
    index_path: Path, src: Path, dst: Path, engine: str, workers: int, cpus: str = "all"
) -> tuple[float, float]:
    """Wall and CPU seconds of one geocode_file call in a new process (the index already loaded).

    cpus: "all", or the CPUs (comma-separated) the process and every thread it starts may run on.
    """
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_RUN, str(index_path), str(src), str(dst), engine, str(workers), cpus],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["cpu"])


def _verdict(single: list[float], dask: list[float], what: str) -> str:
    """The dask engine against the single engine, both free to use every core (no target)."""
    pairs = [s / d for s, d in zip(single, dask, strict=True)]
    speedup = statistics.median(single) / statistics.median(dask)
    return (
        f"  dask / single engine = {speedup:.2f}x ({what}; pairs: {', '.join(f'{p:.2f}x' for p in pairs)})"
        "   (no target: the single engine's reader, geocoding and writer threads use more than one core)"
    )


def _core_verdict(one_core: list[float], dask: list[float], cores: int) -> str:
    """The target: the dask engine on every core against the same work held to one core."""
    pairs = [s / d for s, d in zip(one_core, dask, strict=True)]
    speedup = statistics.median(one_core) / statistics.median(dask)
    return (
        f"  dask on {cores} cores / one core = {speedup:.2f}x (median of {len(dask)} one-off runs each; "
        f"pairs: {', '.join(f'{p:.2f}x' for p in pairs)})   target: faster than one core by more than "
        f"the noise (>= {FASTER:.2f}x): {'MET' if speedup >= FASTER else 'NOT MET'}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--grids", type=int, default=2000, help="grids of the generated city (demo: 2000)")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=2, help="threads of the dask engine")
    parser.add_argument("--repeat", type=int, default=3, help="alternated single/dask runs per format")
    parser.add_argument(
        "--fresh", type=int, default=3, help="alternated single/dask runs in new processes per format"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--dir", help="where to write the files (default: a temporary directory)")
    args = parser.parse_args(argv)

    print(f"before: {_load()}")
    print(f"tune_allocator() applied: {tune_allocator()}")
    print(f"importing dask (paid once by the command's --engine dask): {_import_seconds('dask'):.2f} s")
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
        index_path = work / "index.pkl"
        with open(index_path, "wb") as handle:
            # cloudpickle: the index holds functions compiled at build time, which plain pickle refuses.
            cloudpickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)
        sizes = ", ".join(
            f"{p.name} {p.stat().st_size / 2**20:.0f} MiB"
            for p in sorted(work.iterdir())
            if p.name.startswith("in.")
        )
        print()
        print(f"input files: {sizes}")
        for kind in ("csv", "parquet"):
            src, dst = work / f"in.{kind}", work / f"out.{kind}"
            print()
            print(
                f"{kind.upper()} in, {kind.upper()} out, {args.rows:,} rows (geocode_file, with blocks), "
                f"{_load()}:"
            )
            runs: dict[str, list[float]] = {"single": [], "dask": []}
            for _ in range(args.repeat):
                for engine in ("single", "dask"):
                    report = geocode_file(
                        index, src, dst, engine=engine, workers=args.workers, progress=False
                    )
                    runs[engine].append(report.seconds)
                    label = "single engine" if engine == "single" else f"dask, {args.workers} threads"
                    print(_line(label, report, raw_block))
                    print(_stages(report))
                    if engine == "dask":
                        print(f"      {report.summary_lines()[-1]}")
            print(_verdict(runs["single"], runs["dask"], f"median of {args.repeat} alternated runs each"))
            if args.fresh:
                # "One core" is the single engine in a process held to one CPU (with every thread it
                # starts: pyarrow's reader pool, the writer); the others may use every core.
                one_cpu = str(min(os.sched_getaffinity(0)))
                fresh: dict[str, list[float]] = {"one core": [], "single": [], "dask": []}
                lines = []
                for _ in range(args.fresh):
                    for label, engine, cpus in (
                        ("one core", "single", one_cpu),
                        ("single", "single", "all"),
                        ("dask", "dask", "all"),
                    ):
                        seconds, cpu = _fresh(index_path, src, dst, engine, args.workers, cpus)
                        fresh[label].append(seconds)
                        lines.append(f"{label} {seconds:.2f} s ({cpu:.2f} CPU-s)")
                print(f"  one-off runs in new processes: {', '.join(lines)}")
                print(_verdict(fresh["single"], fresh["dask"], f"median of {args.fresh} one-off runs each"))
                print(_core_verdict(fresh["one core"], fresh["dask"], len(os.sched_getaffinity(0))))
    print()
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
