"""`manage.py cap_export ID`: print (or write) a warning's current version as CAP 1.2 XML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from command.models import EarlyWarning
from command.warnings import WarningActionRefused, warning_cap_xml


class Command(BaseCommand):
    help = "Export a warning as CAP 1.2 XML, validated against the OASIS schema."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, help="the warning's id")
        parser.add_argument("-o", "--output", help="write to this file instead of standard output")

    def handle(self, *args: Any, **options: Any) -> None:
        warning = EarlyWarning.objects.filter(pk=options["id"]).first()
        if warning is None:
            raise CommandError(f"no warning {options['id']}")
        try:
            data = warning_cap_xml(warning)
        except WarningActionRefused as exc:
            raise CommandError(str(exc)) from None
        if options["output"]:
            Path(options["output"]).write_bytes(data)
        else:
            self.stdout.write(data.decode("utf-8"), ending="")
