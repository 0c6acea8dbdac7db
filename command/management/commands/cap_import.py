"""`manage.py cap_import FILE`: take one CAP 1.2 message (Alert, Update or Cancel) from a file or stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from command.cap import CapError
from command.models import User
from command.warnings import WarningActionRefused, warning_import_cap
from incidents.models import Source
from incidents.services import ActionError


class Command(BaseCommand):
    help = "Import a CAP 1.2 message: an Alert drafts a warning; an Update or Cancel changes its warning."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the CAP XML file, or - for standard input")
        parser.add_argument(
            "--user", help="act as this user (an operator or commander); default: the system", default=None
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        actor = None
        if options["user"]:
            actor = User.objects.filter(username=options["user"], is_active=True).first()
            if actor is None:
                raise CommandError(f"no active user {options['user']!r}")
        try:
            result = warning_import_cap(data=data, actor=actor, source=Source.SYSTEM)
        except (CapError, ActionError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        except WarningActionRefused as exc:
            raise CommandError(f"{path}: refused: {exc}") from None
        warning = result.warning
        self.stdout.write(
            json.dumps(
                {
                    "warning": warning.pk,
                    "msg_type": result.msg_type,
                    "created": result.created,
                    "duplicate": result.duplicate,
                    "status": warning.status,
                    "level": warning.level,
                    "headline": warning.headline,
                },
                ensure_ascii=False,
            )
        )
