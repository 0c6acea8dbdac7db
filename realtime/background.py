"""The background loop: timers of every app, the outbox relay, presence sweep and feed pruning.

Runs inside the single daphne process on the embedded default (a daemon thread started by
config/asgi.py) or as `python manage.py worker` processes in production. Every step is safe to run in
several processes at once: the apps' ticks use conditional updates so each mark fires once.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from realtime.feeds import connections_sweep, feeds_prune
from realtime.hooks import TICKS
from realtime.publish import relay_unpublished

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class Loop:
    """One background loop; `run_once` is one round of every task."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.stop = threading.Event()
        self.last_prune = 0.0

    def run_once(self) -> dict[str, object]:
        """Run every task once; a failing task is logged and the others still run."""
        results: dict[str, object] = {}
        close_old_connections()
        for name, tick in list(TICKS.items()):
            try:
                results[name] = tick()
            except Exception:
                log.exception("background task %s failed", name)
        for name, task in (("relay", relay_unpublished), ("presence", connections_sweep)):
            try:
                results[name] = task()
            except Exception:
                log.exception("background task %s failed", name)
        if time.monotonic() - self.last_prune > PRUNE_EVERY_S:
            self.last_prune = time.monotonic()
            try:
                results["prune"] = feeds_prune()
            except Exception:
                log.exception("feed pruning failed")
        close_old_connections()
        return results

    def run_forever(self) -> None:
        """Run rounds until stopped."""
        log.info("background loop started (every %.1f s)", self.interval)
        while not self.stop.is_set():
            started = time.monotonic()
            self.run_once()
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def start_in_thread(interval: float = 1.0) -> Loop:
    """Start the loop in a daemon thread of this process (the embedded default)."""
    loop = Loop(interval)
    threading.Thread(target=loop.run_forever, name="background-loop", daemon=True).start()
    return loop
