#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

# Commands that need no database or Redis; every other command checks them first so that a wrong
# DATABASE_URL or REDIS_URL is one clear line rather than a traceback.
OFFLINE_COMMANDS = {
    "help",
    "version",
    "makemigrations",
    "makemessages",
    "compilemessages",
    "collectstatic",
    "check",
    "spectacular",
    "shell",
    "test",
    "--help",
    "-h",
    "--version",
}


def main() -> None:
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import django
    from django.core.management import execute_from_command_line

    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command not in OFFLINE_COMMANDS and os.environ.get("YJLD_SKIP_PREFLIGHT") != "1":
        django.setup()
        from config.preflight import check_or_exit

        check_or_exit()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
