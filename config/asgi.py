"""ASGI entry point: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django.setup(set_prefix=False)

from config.asgi_handler import SyncChainASGIHandler  # noqa: E402  (needs Django set up)

django_asgi_app = SyncChainASGIHandler()

from config.preflight import check_or_exit  # noqa: E402  (needs Django set up)
from realtime.routing import build_application  # noqa: E402

if os.environ.get("YJLD_SKIP_PREFLIGHT") != "1":
    check_or_exit()

from django.conf import settings  # noqa: E402

if settings.BACKGROUND_IN_PROCESS:
    from realtime.background import start_in_thread

    start_in_thread()

application = build_application(django_asgi_app)

from config.runtime import tune_collector  # noqa: E402

tune_collector()  # a server process's collector thresholds (GC_THRESHOLDS), with or without preflight

if os.environ.get("YJLD_SKIP_PREFLIGHT") != "1":
    from config.runtime import warm_up_in_thread

    warm_up_in_thread()
