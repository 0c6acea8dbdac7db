"""`manage.py audit_anchor`: write the audit chain's head (seq, hash, time) to an anchor file."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audit.anchors import anchor_dir, write_anchor


class Command(BaseCommand):
    help = (
        "Write the head of the audit chain to AUDIT_ANCHOR_DIR/<database>/ and print it as one JSON line "
        "(copy that line off the host: an anchor on the same disk as the database is weak evidence)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--anchor-dir", help="folder of anchors (default: AUDIT_ANCHOR_DIR)")

    def handle(self, *args: Any, **options: Any) -> None:
        body = write_anchor(options["anchor_dir"])
        if body is None:
            self.stderr.write("the audit chain is empty: nothing to anchor")
            return
        self.stderr.write(f"anchored in {anchor_dir(options['anchor_dir'])}")
        self.stdout.write(json.dumps(body, sort_keys=True))
