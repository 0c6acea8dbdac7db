"""python manage.py demo_city: load the generated demo city (once; again keeps the data)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from command.demo import demo_city_load, demo_logins


class Command(BaseCommand):
    help = "Load a deterministic generated demo city (territory, departments, users, categories, rules)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=2026, help="same seed, same city (default 2026)")
        parser.add_argument("--grids", type=int, default=2000, help="number of grids (default 2000)")
        parser.add_argument(
            "--reset", action="store_true", help="replace an existing territory and demo data"
        )
        parser.add_argument("--quiet-logins", action="store_true", help="do not print the demo logins")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["grids"] < 100:
            raise CommandError("--grids must be at least 100")
        summary = demo_city_load(seed=options["seed"], grids=options["grids"], reset=options["reset"])
        counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
        if summary.created:
            self.stdout.write(self.style.SUCCESS(f"demo city loaded (seed {summary.seed}): {counts}"))
        else:
            self.stdout.write(
                f"territory already loaded, kept as it is ({counts}); use --reset to replace it"
            )
        self.stdout.write(f"departments {summary.departments}, users {summary.users}")
        if not options["quiet_logins"]:
            self.stdout.write(f"\nDemo logins (password for all: {settings.DEMO_PASSWORD}):")
            for username, description in demo_logins():
                self.stdout.write(f"  {username:<24} {description}")
