"""python manage.py places_import PATH [--replace]: load landmarks and door addresses for address search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import os_user
from gis.places import PLACE_KINDS, places_import, read_places_file


class Command(BaseCommand):
    help = (
        "Import named places (landmarks, door addresses) from a CSV (name, kind, lon, lat[, aliases]"
        "[, <layer>_code]) or a GeoJSON file into the gazetteer used by address search. The whole file "
        "is checked first; any error changes nothing. See docs/data-formats.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="a .csv or .geojson file")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--replace", action="store_true", help="delete every existing place first")
        mode.add_argument(
            "--append",
            action="store_true",
            help="add to the existing places, skipping exact duplicates (the default)",
        )
        parser.add_argument(
            "--crs", default="wgs84", help="datum of the coordinates: wgs84, gcj02, bd09, cgcs2000"
        )
        parser.add_argument(
            "--kind", choices=PLACE_KINDS, help="kind of GeoJSON features without a 'kind' property"
        )
        parser.add_argument("--dry-run", action="store_true", help="check the file, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            records = read_places_file(options["path"], crs=options["crs"], default_kind=options["kind"])
        except (ValueError, OSError) as exc:
            raise CommandError(" ".join(str(exc).split())) from None
        if options["dry_run"]:
            self.stdout.write(f"{options['path']}: {len(records)} place(s) read; dry run, nothing changed")
            return
        result = places_import(
            records=records,
            replace=options["replace"],
            source="cli",
            origin=Path(options["path"]).name,
            os_user=os_user(),
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"{options['path']}: {result.created} place(s) added, {result.skipped} duplicate(s) skipped, "
                f"{result.deleted} removed"
            )
        )
