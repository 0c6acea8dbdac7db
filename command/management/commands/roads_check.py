"""`manage.py roads_check [PATH] [--save OUT.npz]`: read a road network and print what it holds."""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from command.roads import RoadNetworkError, load_network


class Command(BaseCommand):
    help = (
        "Read a road network (.osm.pbf extract or .npz; default: settings.ROAD_NETWORK_FILE) and print its "
        "nodes, directed edges and connected components, so an administrator can check it before use."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", help="the network file (default: ROAD_NETWORK_FILE)")
        parser.add_argument(
            "--save", metavar="OUT.npz", help="also write it as .npz, which loads much faster"
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["path"] or getattr(settings, "ROAD_NETWORK_FILE", None)
        if not path:
            raise CommandError("give a PATH or set ROAD_NETWORK_FILE")
        started = time.perf_counter()
        try:
            network = load_network(path)
        except RoadNetworkError as exc:
            raise CommandError(str(exc)) from None
        summary = network.summary()
        summary["load_s"] = round(time.perf_counter() - started, 3)
        if options["save"]:
            network.save(options["save"])
            summary["saved"] = options["save"]
        if options["json"]:
            self.stdout.write(json.dumps(summary, ensure_ascii=False))
            return
        share = summary["largest_strong_component"] / summary["nodes"]
        west, south, east, north = summary["bounds"]
        lines = [
            f"file: {summary['source']}",
            f"nodes: {summary['nodes']:,}",
            f"edges: {summary['edges']:,} (directed; a two-way street counts twice)",
            f"components: {summary['strong_components']:,} strongly connected, "
            f"{summary['weak_components']:,} weakly connected",
            f"largest strongly connected component: {summary['largest_strong_component']:,} nodes "
            f"({share:.0%}); points snap to it",
            f"road length: {summary['length_km']:,.1f} km, "
            f"median speed {summary['median_speed_kmh']:.0f} km/h",
            f"bounds (lon/lat): {west:.5f} {south:.5f} {east:.5f} {north:.5f}",
            f"read in {summary['load_s']:.2f} s",
        ]
        if options["save"]:
            lines.append(f"saved: {options['save']}")
        self.stdout.write("\n".join(lines))
