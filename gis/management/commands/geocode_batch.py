"""python manage.py geocode_batch IN OUT [--crs C]: geocode every row of a CSV or Parquet file."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gis.batch import ADDED_COLUMNS, DEFAULT_CHUNK_ROWS, ENGINES, BatchError, geocode_file, tune_allocator
from gis.locator import get_index


class Command(BaseCommand):
    help = (
        "Geocode a CSV (.csv, .csv.gz) or Parquet (.parquet, .pq) file with lon and lat columns into a new "
        f"CSV or Parquet file: every input column is kept and {', '.join(ADDED_COLUMNS)} are added. "
        "Rows with a bad lon/lat are kept with empty codes and reported. See docs/data-formats.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("input", help="input file: .csv, .csv.gz, .parquet or .pq")
        parser.add_argument(
            "output", help="output file: .csv, .csv.gz, .parquet or .pq (replaced if present)"
        )
        parser.add_argument(
            "--crs", default="wgs84", help="datum of lon/lat: wgs84 (default), gcj02, bd09, cgcs2000"
        )
        parser.add_argument("--lon-column", default="lon", help="name of the longitude column (lon)")
        parser.add_argument("--lat-column", default="lat", help="name of the latitude column (lat)")
        parser.add_argument(
            "--encoding", default="utf-8", help="text encoding of a CSV input (utf-8; e.g. gbk)"
        )
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="single",
            help="single: one geocoding thread; dask: pieces of the input geocoded in parallel threads",
        )
        parser.add_argument("--workers", type=int, help="threads for --engine dask (default: the CPU count)")
        parser.add_argument(
            "--chunk-rows",
            type=int,
            default=DEFAULT_CHUNK_ROWS,
            help=f"rows per chunk; memory is bounded by a few chunks (default {DEFAULT_CHUNK_ROWS})",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        index = get_index()
        if len(index) == 0:
            raise CommandError(
                "no territory is loaded: import grids with gis_import (or run demo_city) first"
            )
        # This process exists for the batch: keep freed C memory for reuse (a page fault per reused
        # 4 KiB page otherwise costs about as much CPU as the geocoding).
        tune_allocator()
        try:
            report = geocode_file(
                index,
                options["input"],
                options["output"],
                crs=options["crs"],
                lon_column=options["lon_column"],
                lat_column=options["lat_column"],
                encoding=options["encoding"],
                chunk_rows=options["chunk_rows"],
                engine=options["engine"],
                workers=options["workers"],
                progress=False if options["no_progress"] else None,
            )
        except BatchError as exc:
            raise CommandError(str(exc)) from None
        for line in report.summary_lines():
            self.stdout.write(line)
        self.stdout.write(
            self.style.SUCCESS(f"wrote {options['output']} (territory version {index.version})")
        )
