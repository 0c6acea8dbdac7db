"""Hotspots: incident density per block and grid, and emerging hotspots against each unit's own history.

Density is incidents per km² of the unit (``TerritoryUnit.area_m2``, measured in a metric CRS at import).

An **emerging hotspot** is a unit whose count in the current window is improbably high given its own
history. For a unit with ``h`` incidents in the history period (length ``H``, just before the window)
and ``c`` incidents in the current window (length ``W``):

- expected count ``λ = (h + ½) · W / H`` — the unit's own rate scaled to the window; the ½ (a Jeffreys
  prior on a Poisson rate) keeps a unit with no history from having λ = 0;
- statistic: the one-sided Poisson test, ``p = P(X ≥ c | X ~ Poisson(λ))``; beside it the z-score
  ``(c − λ) / √λ`` and the ratio ``c / λ`` are reported for people, not used to decide;
- multiple testing: every unit of the layer is one test, so p-values are adjusted by Benjamini–Hochberg
  over all units of the layer (zeros included) and a unit is *emerging* when ``c ≥ min_count`` and its
  adjusted value ``q ≤ fdr`` (default 5 % false discoveries among the flagged).

The model assumes a stationary rate per unit (no time-of-day or weekly season); with a window that is a
whole number of days, the daily cycle cancels out. Counts come from one SQL aggregation (conditional
counts of the window and of the history per unit); only per-unit rows reach Python.

The warnings engineer's automatic rules call :func:`emerging_hotspots` (the public entry point).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from command.stats import LAYER_FIELDS, StatsFilter, apply_filter, category_ids
from gis.models import Layer, TerritoryUnit
from incidents.models import Incident, Status

HOTSPOT_LAYERS: Final = (Layer.BLOCK, Layer.GRID)
STATISTIC: Final = (
    "one-sided Poisson test p = P(X ≥ c | λ), λ = (h + 0.5)·W/H from the unit's own history; "
    "Benjamini–Hochberg q over all units of the layer; emerging when c ≥ min_count and q ≤ fdr"
)


@dataclass(frozen=True)
class Hotspot:
    """One unit's figures for the window: observed and expected counts, the test and the verdict."""

    layer: str
    code: str
    name: str
    count: int
    history_count: int
    expected: float
    ratio: float | None
    z: float
    p_value: float
    q_value: float
    emerging: bool
    area_km2: float | None
    density_per_km2: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def poisson_sf(count: int, lam: float) -> float:
    """P(X ≥ count) for X ~ Poisson(lam), accurate in the far tail (no 1 − cdf cancellation)."""
    if count <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    if count <= lam:
        # The lower tail is the small side here: 1 − P(X ≤ count − 1) loses nothing.
        log_term = -lam
        lower = 0.0
        for k in range(count):
            if k:
                log_term += math.log(lam) - math.log(k)
            lower += math.exp(log_term)
        return min(1.0, max(0.0, 1.0 - lower))
    # Upper tail summed from `count` up: terms shrink geometrically once k > lam.
    log_term = -lam + count * math.log(lam) - math.lgamma(count + 1)
    total = 0.0
    k = count
    while True:
        term = math.exp(log_term)
        total += term
        k += 1
        log_term += math.log(lam) - math.log(k)
        if term == 0.0 or term < total * 1e-17 or k > count + 10_000:
            break
    return min(1.0, total)


def benjamini_hochberg(p_values: list[float], m: int | None = None) -> list[float]:
    """Benjamini–Hochberg adjusted q-values, in input order; `m` tests in all (≥ len(p_values))."""
    n = len(p_values)
    m = max(m or n, n)
    order = sorted(range(n), key=lambda i: p_values[i])
    q = [1.0] * n
    running = 1.0
    for rank in range(n, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = min(1.0, running)
    return q


def _counts(
    incidents: QuerySet[Incident], column: str, window_start: dt.datetime, history_start: dt.datetime
) -> dict[str, tuple[int, int]]:
    rows = (
        incidents.order_by()
        .values(column)
        .annotate(
            current=Count("pk", filter=Q(reported_at__gte=window_start)),
            history=Count("pk", filter=Q(reported_at__lt=window_start)),
        )
    )
    return {r[column]: (int(r["current"]), int(r["history"])) for r in rows if r[column]}


def emerging_hotspots(
    *,
    layer: str = Layer.BLOCK,
    now: dt.datetime | None = None,
    window: dt.timedelta = dt.timedelta(hours=24),
    history: dt.timedelta = dt.timedelta(days=28),
    category: str | None = None,
    min_count: int = 3,
    fdr: float = 0.05,
    incidents: QuerySet[Incident] | None = None,
) -> list[Hotspot]:
    """Every unit of `layer` tested for the window ending at `now`, ranked: emerging first, then by p-value.

    `category` is a category or family code; `incidents` narrows the population (e.g. what a caller may
    see); merged incidents never count. Units without incidents in window or history are included (they
    count for the multiple-testing adjustment) but are not returned.
    """
    if layer not in HOTSPOT_LAYERS:
        raise ValueError(f"hotspots are kept per block or grid, not {layer!r}")
    if window <= dt.timedelta(0) or history <= dt.timedelta(0):
        raise ValueError("window and history must be positive")
    now = now or timezone.now()
    window_start = now - window
    history_start = window_start - history
    base = incidents if incidents is not None else Incident.objects.all()
    base = base.filter(reported_at__gte=history_start, reported_at__lt=now).exclude(status=Status.MERGED)
    if category:
        base = base.filter(category_id__in=category_ids(category))
    column = LAYER_FIELDS[layer]
    counted = _counts(base, column, window_start, history_start)
    units = {
        code: (name, area)
        for code, name, area in TerritoryUnit.objects.filter(layer=layer).values_list(
            "code", "name", "area_m2"
        )
    }
    scale = window / history
    tested = max(len(units), len(counted))
    codes = sorted(counted)
    p_values: list[float] = []
    for code in codes:
        current, past = counted[code]
        p_values.append(poisson_sf(current, (past + 0.5) * scale))
    q_values = benjamini_hochberg(p_values, tested)
    result: list[Hotspot] = []
    for code, p, q in zip(codes, p_values, q_values, strict=True):
        current, past = counted[code]
        lam = (past + 0.5) * scale
        name, area_m2 = units.get(code, ("", None))
        area_km2 = float(area_m2) / 1e6 if area_m2 else None
        result.append(
            Hotspot(
                layer=str(layer),
                code=code,
                name=name,
                count=current,
                history_count=past,
                expected=lam,
                ratio=current / lam if lam > 0 else None,
                z=(current - lam) / math.sqrt(lam),
                p_value=p,
                q_value=q,
                emerging=current >= min_count and q <= fdr,
                area_km2=area_km2,
                density_per_km2=current / area_km2 if area_km2 else None,
            )
        )
    result.sort(key=lambda h: (not h.emerging, h.p_value, -h.count, h.code))
    return result


def density(
    incidents: QuerySet[Incident], *, layer: str, query: StatsFilter, limit: int | None = None
) -> list[dict[str, Any]]:
    """Incidents per km² per unit of `layer` over the filter's period, densest first."""
    if layer not in HOTSPOT_LAYERS:
        raise ValueError(f"density is kept per block or grid, not {layer!r}")
    column = LAYER_FIELDS[layer]
    counts = dict(
        apply_filter(incidents, query)
        .order_by()
        .values_list(column)
        .annotate(n=Count("pk"))
        .values_list(column, "n")
    )
    rows: list[dict[str, Any]] = []
    for code, name, area_m2 in TerritoryUnit.objects.filter(layer=layer).values_list(
        "code", "name", "area_m2"
    ):
        n = int(counts.get(code, 0))
        area_km2 = float(area_m2) / 1e6 if area_m2 else None
        rows.append(
            {
                "layer": str(layer),
                "code": code,
                "name": name,
                "count": n,
                "area_km2": area_km2,
                "density_per_km2": n / area_km2 if area_km2 else None,
            }
        )
    rows.sort(key=lambda r: (-(r["density_per_km2"] or 0.0), r["code"]))
    return rows[:limit] if limit else rows
