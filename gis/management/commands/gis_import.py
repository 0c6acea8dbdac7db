"""python manage.py gis_import PATH --layer LAYER: validate a territory layer file and replace that layer."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import os_user
from gis.importing import ImportReport, SourceError, territory_import_layer
from gis.models import LAYER_ORDER


class Command(BaseCommand):
    help = (
        "Import one territory layer from GeoJSON, GeoPackage, Shapefile or any file GDAL reads. Every "
        "problem is reported at once; any error refuses the import and changes nothing. "
        "See docs/data-formats.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the file to read (a Shapefile's .shp, a .gpkg, a .geojson, …)")
        parser.add_argument(
            "--layer", required=True, choices=[str(layer) for layer in LAYER_ORDER], help="territory layer"
        )
        parser.add_argument("--code-field", default="code", help="field holding the unit code (code)")
        parser.add_argument("--name-field", default="name", help="field holding the unit name (name)")
        parser.add_argument(
            "--parent-field",
            default="parent_code",
            help="field holding the parent unit's code (parent_code); not read for districts",
        )
        parser.add_argument(
            "--crs",
            help="CRS of the coordinates when the file has none (EPSG:4326, EPSG:3857, gcj02, bd09, …); "
            "a file with a different CRS is refused",
        )
        parser.add_argument(
            "--fix",
            action="store_true",
            help="repair invalid geometries with make_valid (polygonal parts kept, each repair reported)",
        )
        parser.add_argument("--dry-run", action="store_true", help="validate and report, change nothing")
        parser.add_argument(
            "--source-layer", help="layer inside a multi-layer file (default: the only one, or --layer's)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = territory_import_layer(
                path=options["path"],
                layer=options["layer"],
                code_field=options["code_field"],
                name_field=options["name_field"],
                parent_field=options["parent_field"],
                crs=options["crs"],
                fix=options["fix"],
                dry_run=options["dry_run"],
                source_layer=options["source_layer"],
                source="cli",
                os_user=os_user(),
            )
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{report.path}: {report.features} {report.layer} feature(s), CRS {report.source_crs}"
        )
        for problem in report.problems:
            self.stdout.write(str(problem))
        self._summary(report, verbosity=int(options["verbosity"]))
        if report.refused:
            raise CommandError(f"refused: {len(report.errors)} error(s); nothing was changed")

    def _summary(self, report: ImportReport, *, verbosity: int) -> None:
        counts = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        plan = f"{report.created} new, {report.updated} updated, {report.removed} removed"
        if report.refused:
            self.stdout.write(f"summary: {report.features} feature(s); {counts}")
        elif report.dry_run:
            self.stdout.write(f"summary: {report.features} feature(s); {counts}; dry run, would be: {plan}")
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"summary: {report.features} feature(s); {counts}; imported {report.layer}: {plan}; "
                    f"territory data version {report.version}"
                )
            )
        if verbosity >= 2:
            self.stdout.write(
                "timings: " + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in report.timings.items())
            )
