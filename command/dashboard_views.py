"""The statistics dashboard at /command/dashboard/: charts, block choropleth, hotspots and evaluation.

A thin shell like the consoles: the view checks the role and hands the script the period, the API URLs
and its translated strings; ``command/static/command/dashboard.js`` loads the figures from the REST API
(``/api/v1/stats/…``, ``/api/v1/hotspots/``, ``/api/v1/evaluation/``) and draws them with Chart.js
(vendored in ``command/static/vendor/chartjs/``) and Leaflet when it is vendored, else as SVG.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import pgettext_lazy as _p
from django.views.decorators.cache import never_cache

from command.evaluation import GROUPINGS
from command.stats import STATS_ROLES
from incidents.models import Category, Family, Grade, Status

# Strings the script shows, translated here (msgctxt "dashboard" keeps them apart from other msgids).
STRINGS: dict[str, Any] = {
    "current": _p("dashboard", "This period"),
    "previous": _p("dashboard", "Previous period"),
    "incidents": _p("dashboard", "Incidents"),
    "on_time_sign": _p("dashboard", "On-time sign-for"),
    "on_time_arrive": _p("dashboard", "On-time arrival"),
    "on_time_complete": _p("dashboard", "On-time completion"),
    "rate": _p("dashboard", "Rate"),
    "density": _p("dashboard", "Incidents per km²"),
    "no_data": _p("dashboard", "No data for this period"),
    "load_error": _p("dashboard", "Could not load the figures"),
    "emerging": _p("dashboard", "Emerging"),
    "vs_previous": _p("dashboard", "vs previous period"),
    "none": _p("dashboard", "No grade"),
}

# The closed loop's states as the charts name them (the model's labels carry no translation context).
STATUS_LABELS: dict[str, Any] = {
    Status.REPORTED: _p("dashboard", "Reported"),
    Status.ACCEPTED: _p("dashboard", "Accepted"),
    Status.REGISTERED: _p("dashboard", "Registered"),
    Status.CANCELLED: _p("dashboard", "Not registered"),
    Status.DISPATCHED: _p("dashboard", "Dispatched"),
    Status.IN_PROGRESS: _p("dashboard", "In progress"),
    Status.HANDLED: _p("dashboard", "Handled"),
    Status.VERIFIED: _p("dashboard", "Verified"),
    Status.CLOSED: _p("dashboard", "Closed"),
    Status.EVALUATED: _p("dashboard", "Evaluated"),
    Status.MERGED: _p("dashboard", "Merged"),
}


def _day(raw: str | None, default: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(raw) if raw else default
    except ValueError:
        return default


@never_cache
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard for the command centre, administrators and departments (their own orders)."""
    user: Any = request.user
    if getattr(user, "role", None) not in STATS_ROLES:
        return render(request, "command/console/forbidden.html", {"console_url": None}, status=403)
    today = timezone.localdate()
    last = _day(request.GET.get("to"), today)
    first = _day(request.GET.get("from"), last - dt.timedelta(days=29))
    if first > last:
        first, last = last, first
    category = request.GET.get("category") or ""
    categories = list(Category.objects.filter(parent__isnull=True).values_list("code", "name"))
    if category and not Category.objects.filter(code=category).exists():
        category = ""
    params = {
        "from": first.isoformat(),
        "to": (last + dt.timedelta(days=1)).isoformat(),
        **({"category": category} if category else {}),
    }
    config: dict[str, Any] = {
        # The API takes [from, to): the page's inclusive last day becomes the next midnight.
        "params": params,
        "urls": {
            "compare": reverse("stats-compare"),
            "counts": reverse("stats-incidents"),
            "units": reverse("stats-units"),
            "hotspots": reverse("hotspots"),
            "evaluation": reverse("evaluation"),
            "territory": reverse("territory", kwargs={"level": "block"}),
            "export_incidents": reverse("export-incidents", kwargs={"kind": "csv"}),
        },
        "families": {value: str(label) for value, label in Family.choices},
        "statuses": {str(value): str(label) for value, label in STATUS_LABELS.items()},
        "grades": dict(Grade.objects.values_list("code", "name")),
        "strings": {key: str(value) for key, value in STRINGS.items()},
        "leaflet": bool(finders.find("vendor/leaflet/leaflet.js")),
    }
    exports = [
        (label, kind, reverse(name, kwargs={"kind": kind}))
        for name, label in (("export-incidents", "incidents"), ("export-stats", "stats"))
        for kind in ("csv", "geojson", "gpkg")
    ]
    context = {
        "config": config,
        "first": first,
        "last": last,
        "category": category,
        "categories": categories,
        "query": urlencode(params),
        "exports": exports,
        "groupings": GROUPINGS,
        "evaluation_url": reverse("evaluation"),
        "leaflet": config["leaflet"],
    }
    return render(request, "command/dashboard.html", context)
