"""python manage.py geocode --lon X --lat Y [--crs C]: print the geocode result as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gis.geocoding import GeocodeError, geocode_point


class Command(BaseCommand):
    help = "Geocode one point and print the result as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--lon", required=True, help="longitude")
        parser.add_argument("--lat", required=True, help="latitude")
        parser.add_argument("--crs", default="wgs84", help="wgs84 (default), gcj02, bd09 or cgcs2000")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = geocode_point(lon=options["lon"], lat=options["lat"], crs=options["crs"])
        except GeocodeError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result, ensure_ascii=False, indent=2))
