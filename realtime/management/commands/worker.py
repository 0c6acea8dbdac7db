"""python manage.py worker: run the background loop (deadlines, escalation, relay, presence sweep)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime.background import Loop


class Command(BaseCommand):
    help = "Run the background loop in the foreground (one or more per deployment)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds (default 1)")
        parser.add_argument("--once", action="store_true", help="run one round and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        loop = Loop(options["interval"])
        if options["once"]:
            self.stdout.write(str(loop.run_once()))
            return
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            loop.stop.set()
