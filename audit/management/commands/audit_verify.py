"""`manage.py audit_verify`: check the audit chain; exit 1 naming the first broken record."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audit.verify import verify_chain


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log (and its anchors); exit 1 at the first broken record."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--anchor-dir", help="folder of anchors (default: AUDIT_ANCHOR_DIR)")
        parser.add_argument("--no-anchors", action="store_true", help="check the chain only")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = verify_chain(anchors=not options["no_anchors"], anchor_base=options["anchor_dir"])
        except ValueError as exc:  # an unreadable anchor file
            self.stderr.write(f"audit chain NOT VERIFIED: {exc}")
            sys.exit(1)
        for note in result.notes:
            self.stderr.write(f"note: {note}")
        if not result.ok:
            self.stderr.write(f"audit chain BROKEN at {result.first_break} ({result.count} records read)")
            sys.exit(1)
        self.stdout.write(
            f"audit chain OK: {result.count} records, head seq {result.head_seq} hash {result.head_hash}, "
            f"{result.anchors_checked} anchors checked"
        )
