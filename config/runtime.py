"""Process start-up for a server: warm the territory index, keep the garbage collector's pauses short.

A daphne process holds a large, long-lived heap: Django's apps and URL patterns, and the territory
index (one shapely geometry and record per unit: about 125,000 of each in a 100,000-grid city).
CPython's full (generation 2) collection walks every tracked object, and was measured pausing a
process for 80–165 ms at that size, stalling whichever requests and websocket messages were in flight
(see docs/performance.md, "The HTTP request path"). After start-up, and again after each index
rebuild, `freeze_heap` collects once and moves the survivors to the permanent generation, which the
collector no longer walks; they are still freed by reference counting when dropped.

A server process also collects its young generation less often (`GC_THRESHOLDS`, default 50,000 /
20 / 10 instead of CPython's 700 / 10 / 10). With thousands of websockets open, every object in flight
when a young collection runs — a warning's message, its frame and write buffers for each of 2,500
sockets — is promoted, and the promotions set off a full collection of the whole heap (measured: every
4–8 s during warnings, 0.4–0.8 s each, with about 460,000 objects held by 2,500 sockets), which stalled
the fan-out it interrupted. Rarer young collections find those objects already freed by reference
counting; cyclic garbage waits a little longer (at most 50,000 net allocations) to be reclaimed.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)
_freeze_lock = threading.Lock()
_serving = False  # set in server processes only: a test process rebuilding indexes should not pay


def freeze_heap(reason: str, *, force: bool = False) -> None:
    """In a server process: collect once, then exempt every surviving object from later collections.

    `force` does it in any process: a benchmark that times the services as a warmed-up server runs them.
    """
    if not (_serving or force):
        return
    with _freeze_lock:
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        log.info(
            "heap frozen after %s: %d objects, %.0f ms",
            reason,
            gc.get_freeze_count(),
            (time.perf_counter() - started) * 1000,
        )


def gc_thresholds() -> tuple[int, int, int]:
    """settings.GC_THRESHOLDS ("young,middle,old"), checked; ValueError says what is wrong."""
    from django.conf import settings

    raw = str(settings.GC_THRESHOLDS)
    try:
        young, middle, old = (int(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{raw!r}: three comma-separated whole numbers expected") from None
    if min(young, middle, old) < 1:
        raise ValueError(f"{raw!r}: each threshold must be at least 1")
    return young, middle, old


def tune_collector() -> None:
    """Set this process's collection thresholds from settings.GC_THRESHOLDS."""
    gc.set_threshold(*gc_thresholds())


def warm_up() -> None:
    """Build the territory index now, not on the first report, then freeze the heap."""
    from django.db import connection

    from gis.locator import get_index

    try:
        get_index()  # freezes the heap itself once built
    except Exception as exc:  # the first request builds it instead (and says why it cannot)
        log.warning("territory index not built at start-up: %s", exc)
        freeze_heap("start-up")
    finally:
        connection.close()  # this thread's connection, back to the pool


def warm_up_in_thread() -> threading.Thread:
    """`warm_up` in a daemon thread, so the server accepts connections meanwhile."""
    global _serving
    _serving = True
    thread = threading.Thread(target=warm_up, name="warm-up", daemon=True)
    thread.start()
    return thread
