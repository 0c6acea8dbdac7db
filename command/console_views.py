"""The three consoles: command centre (/command/), grid worker's phone page (/m/), department inbox (/dept/).

Each page is a thin shell: it checks the role, hands the browser its user, the translated strings its
script needs and the URLs of the REST API, and the script does the rest (initial loads over REST, live
updates over /ws/stream/, see command/static/command/stream.js). The phone page is an installable PWA
whose service worker is served from /m/sw.js so that its scope is /m/.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import pgettext_lazy as _p
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from command.constants import Role
from command.models import UnitStatus

View = Callable[..., HttpResponse]

# Which console each role lands on (PRODUCT.md "Pages"); roles without one keep the plain home page.
CONSOLE_OF_ROLE: dict[str, str] = {
    Role.OPERATOR: "console-command",
    Role.COMMANDER: "console-command",
    Role.GRID_WORKER: "console-mobile",
    Role.DEPARTMENT: "console-dept",
}

# Bump when the phone page's cached shell (templates, scripts, styles) changes: the service worker
# drops caches of older versions on activation.
PWA_VERSION = "2026-11-23.2"


def console_url_for(user: Any) -> str | None:
    """The console URL of the user's role, or None when the role has no console."""
    name = CONSOLE_OF_ROLE.get(getattr(user, "role", ""))
    return reverse(name) if name else None


def role_required(*roles: str) -> Callable[[View], View]:
    """Signed-in users of the given roles only: others get a 403 page naming where they belong."""

    def decorate(view: View) -> View:
        @wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if getattr(request.user, "role", None) not in roles:
                context = {"console_url": console_url_for(request.user)}
                return render(request, "command/console/forbidden.html", context, status=403)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


# Every string the scripts show, translated on the server (msgctxt "console" keeps them apart from
# the models' own msgids). Keys are what the scripts ask for.
COMMON_STRINGS: dict[str, Any] = {
    "live": _p("console", "Live"),
    "connecting": _p("console", "Connecting…"),
    "offline": _p("console", "Offline"),
    "reconnecting": _p("console", "Reconnecting…"),
    "signed_out": _p("console", "Signed out: please sign in again"),
    "revoked": _p("console", "Your access changed: reload the page"),
    "resync": _p("console", "Reloaded after a long absence"),
    "network_error": _p("console", "Network error"),
    "error": _p("console", "Error"),
    "saved": _p("console", "Done"),
    "cancel": _p("console", "Cancel"),
    "close": _p("console", "Close"),
    "confirm": _p("console", "Confirm"),
    "reason": _p("console", "Reason"),
    "reason_required": _p("console", "A reason is required"),
    "note": _p("console", "Note"),
    "none": _p("console", "None"),
    "loading": _p("console", "Loading…"),
    "minutes_left": _p("console", "{t} left"),
    "overdue_by": _p("console", "Overdue by {t}"),
    "no_deadline": _p("console", "No deadline"),
    "sound_on": _p("console", "Sound on"),
    "sound_off": _p("console", "Enable sound"),
    "lead": _p("console", "Lead"),
    "assist": _p("console", "Assisting"),
    "km": _p("console", "{d} km"),
    "photo": _p("console", "Photo"),
    "just_now": _p("console", "just now"),
    "view": _p("console", "Show"),
    "ungraded": _p("console", "Ungraded"),
    "dismiss": _p("console", "Dismiss"),
}
STATUS_LABELS: dict[str, Any] = {
    "reported": _p("console", "Reported"),
    "accepted": _p("console", "Accepted"),
    "registered": _p("console", "Registered"),
    "cancelled": _p("console", "Not registered"),
    "dispatched": _p("console", "Dispatched"),
    "in_progress": _p("console", "In progress"),
    "handled": _p("console", "Handled"),
    "verified": _p("console", "Verified"),
    "closed": _p("console", "Closed"),
    "evaluated": _p("console", "Evaluated"),
    "merged": _p("console", "Merged"),
}
ORDER_STATUS_LABELS: dict[str, Any] = {
    "issued": _p("console", "Issued"),
    "delivered": _p("console", "Delivered"),
    "signed": _p("console", "Signed for"),
    "en_route": _p("console", "En route"),
    "on_scene": _p("console", "On scene"),
    "completed": _p("console", "Completed"),
    "rejected": _p("console", "Rejected"),
    "reassigned": _p("console", "Reassigned"),
    "released": _p("console", "Released"),
}
GRADE_LABELS: dict[str, Any] = {
    "I": _p("console", "Ⅰ Extraordinarily serious"),
    "II": _p("console", "Ⅱ Serious"),
    "III": _p("console", "Ⅲ Relatively serious"),
    "IV": _p("console", "Ⅳ Ordinary"),
}
STAGE_LABELS: dict[str, Any] = {
    "accept": _p("console", "to accept"),
    "dispatch": _p("console", "to dispatch"),
    "sign": _p("console", "to sign for"),
    "arrive": _p("console", "to arrive"),
    "handle": _p("console", "to handle"),
    "verify": _p("console", "to verify"),
}
ACTION_LABELS: dict[str, Any] = {
    "accept": _p("console", "Accept"),
    "register": _p("console", "Register"),
    "dispatch": _p("console", "Dispatch"),
    "merge": _p("console", "Merge"),
    "cancel": _p("console", "Do not register"),
    "verify": _p("console", "Verified OK"),
    "reject_verification": _p("console", "Send back"),
    "sign": _p("console", "Sign for"),
    "reject": _p("console", "Reject"),
    "depart": _p("console", "Depart"),
    "arrive": _p("console", "Arrived"),
    "progress": _p("console", "Progress"),
    "complete": _p("console", "Complete"),
    "read": _p("console", "Mark as read"),
}
WARNING_LEVEL_LABELS: dict[str, Any] = {
    "blue": _p("console", "Blue Ⅳ"),
    "yellow": _p("console", "Yellow Ⅲ"),
    "orange": _p("console", "Orange Ⅱ"),
    "red": _p("console", "Red Ⅰ"),
}

COMMAND_STRINGS: dict[str, Any] = {
    "new_severe": _p("console", "New grade {g} incident"),
    "no_incidents": _p("console", "Nothing waiting"),
    "orders": _p("console", "Dispatch orders"),
    "timeline": _p("console", "Timeline"),
    "reports": _p("console", "Reports"),
    "reports_n": _p("console", "{n} reports"),
    "eta_min": _p("console", "about {m} min"),
    "place": _p("console", "Place"),
    "deadline": _p("console", "Deadline"),
    "rule": _p("console", "Linkage rule"),
    "no_rule": _p("console", "No rule matches: choose the departments"),
    "unresolved": _p("console", "No department of kind {k} covers this place"),
    "recommended_units": _p("console", "Recommended units"),
    "no_units": _p("console", "No available units of these departments"),
    "override_reason": _p("console", "Reason for choosing other departments"),
    "merge_into": _p("console", "Merge into"),
    "possible_duplicate": _p("console", "possible duplicate"),
    "no_merge_targets": _p("console", "No open incident to merge into"),
    "grade": _p("console", "Grade"),
    "category": _p("console", "Category"),
    "online": _p("console", "online"),
    "awaiting_arbitration": _p("console", "Awaiting arbitration"),
    "escalations": _p("console", "Escalated {n}×"),
    "nothing_overdue": _p("console", "Nothing overdue"),
    "near_boundary": _p("console", "near a grid boundary"),
    "warning_area": _p("console", "Warning area"),
    "select_incident": _p("console", "Select an incident in the queue or on the map"),
    "incident": _p("console", "Incident"),
    "unit": _p("console", "Unit"),
    "uphold": _p("console", "Uphold"),
    "reassign": _p("console", "Reassign"),
}
MOBILE_STRINGS: dict[str, Any] = {
    "queued": _p("console", "Queued: waiting for the network"),
    "sending": _p("console", "Sending…"),
    "sent": _p("console", "Sent"),
    "failed": _p("console", "Failed"),
    "retry": _p("console", "Send again"),
    "delete": _p("console", "Delete"),
    "locating": _p("console", "Locating…"),
    "located": _p("console", "Position ±{m} m"),
    "no_gps": _p("console", "No position: {why}"),
    "need_position": _p("console", "Get the position first (or type it)"),
    "need_category": _p("console", "Choose a category"),
    "need_description": _p("console", "Describe what happened"),
    "saved_offline": _p("console", "Saved: it will be sent when the network returns"),
    "report_sent": _p("console", "Report sent: {code}"),
    "no_reports": _p("console", "No reports yet"),
    "no_tasks": _p("console", "No verification tasks"),
    "no_warnings": _p("console", "No warnings for your grids"),
    "sign_in_again": _p("console", "Signed out: sign in again, then send again"),
    "server_error": _p("console", "Server error: will try again"),
    "too_big": _p("console", "Photo too large (at most {mb} MB)"),
    "photos_n": _p("console", "{n} photos"),
    "geocoded": _p("console", "In grid {grid}"),
    "outside": _p("console", "Outside the territory"),
    "read_done": _p("console", "Read"),
    "new_warning": _p("console", "New warning"),
    "details": _p("console", "Details"),
}
DEPT_STRINGS: dict[str, Any] = {
    "new_order": _p("console", "New dispatch order {code}"),
    "no_orders": _p("console", "No open orders"),
    "reject_category": _p("console", "Why is it not yours?"),
    "position": _p("console", "Position"),
    "use_gps": _p("console", "Use my position"),
    "use_incident": _p("console", "Use the incident's location"),
    "need_note": _p("console", "A note is required"),
    "issued_at": _p("console", "Issued {t}"),
    "due_at": _p("console", "Due {t}"),
    "photos": _p("console", "Photos"),
    "photos_hint": _p("console", "JPEG, PNG or WebP: at most {n}, each up to {mb} MB"),
    "too_many_photos": _p("console", "At most {n} photos"),
    "too_big": _p("console", "Photo too large (at most {mb} MB)"),
}
REJECT_CATEGORIES: dict[str, Any] = {
    "not_our_area": _p("console", "Not our area"),
    "not_our_job": _p("console", "Not our responsibility"),
    "duplicate": _p("console", "Duplicate"),
    "insufficient_info": _p("console", "Insufficient information"),
    "other": _p("console", "Other"),
}


def _config(request: HttpRequest, strings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    user: Any = request.user
    return {
        "user": {
            "id": user.pk,
            "username": user.username,
            "name": user.get_full_name() or user.username,
            "role": user.role,
            "department": getattr(user.department, "code", None),
        },
        "language": get_language(),
        "strings": {**COMMON_STRINGS, **strings},
        "status": STATUS_LABELS,
        "order_status": ORDER_STATUS_LABELS,
        "grades": GRADE_LABELS,
        "stages": STAGE_LABELS,
        "actions": ACTION_LABELS,
        "warning_levels": WARNING_LEVEL_LABELS,
        "api": "/api/v1/",
        "stream": "/ws/stream/",
        **extra,
    }


@never_cache
@ensure_csrf_cookie
@role_required(Role.OPERATOR, Role.COMMANDER)
def command_centre(request: HttpRequest) -> HttpResponse:
    """The command centre: live map, incident queue, dispatch, overdue board, presence."""
    config = _config(
        request,
        COMMAND_STRINGS,
        map={
            # Optional base map, e.g. "https://tiles.example.org/{z}/{x}/{y}.png"; none by default.
            "tile_url": getattr(settings, "MAP_TILE_URL", ""),
            "tile_attribution": getattr(settings, "MAP_TILE_ATTRIBUTION", ""),
        },
        reject_categories=REJECT_CATEGORIES,
        unit_status=dict(UnitStatus.choices),
    )
    return render(request, "command/console/command.html", {"config": config})


@never_cache
@ensure_csrf_cookie
@role_required(Role.GRID_WORKER)
def mobile(request: HttpRequest) -> HttpResponse:
    """The grid worker's phone page: report (offline-capable), my reports, verification, warnings."""
    user: Any = request.user
    grids = list(user.grids.order_by("code").values("code", "name"))
    config = _config(
        request,
        MOBILE_STRINGS,
        grids=grids,
        photo_max_bytes=settings.PHOTO_MAX_BYTES,
        photo_max_count=settings.PHOTO_MAX_COUNT,
        sw_url=reverse("console-mobile-sw"),
        pwa_version=PWA_VERSION,
    )
    return render(request, "command/console/mobile.html", {"config": config})


@never_cache
@ensure_csrf_cookie
@role_required(Role.DEPARTMENT)
def dept_inbox(request: HttpRequest) -> HttpResponse:
    """The department inbox: live orders with a sound, their actions and deadlines."""
    config = _config(
        request,
        DEPT_STRINGS,
        reject_categories=REJECT_CATEGORIES,
        photo_max_bytes=settings.PHOTO_MAX_BYTES,
        photo_max_count=settings.PHOTO_MAX_COUNT,
    )
    return render(request, "command/console/dept.html", {"config": config})


PWA_ASSETS = (
    "command/base.css",
    "command/console.css",
    "command/stream.js",
    "command/ui.js",
    "command/outbox.js",
    "command/mobile.js",
    "command/icons/icon-192.png",
    "command/icons/icon-512.png",
)


def service_worker(request: HttpRequest) -> HttpResponse:
    """The phone page's service worker, served under /m/ so that its scope is /m/."""
    body = render_to_string(
        "command/console/sw.js",
        {
            "version": PWA_VERSION,
            "assets": [static(path) for path in PWA_ASSETS],
            "shell": reverse("console-mobile"),
        },
    )
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = reverse("console-mobile")
    # The browser checks for a new worker on every visit; never let a cache keep an old one.
    response["Cache-Control"] = "no-cache"
    return response


def manifest(request: HttpRequest) -> JsonResponse:
    """The web app manifest of the phone page (name in the visitor's language)."""
    shell = reverse("console-mobile")
    body = {
        "name": str(_p("console", "Grid worker · Emergency linkage")),
        "short_name": str(_p("console", "Grid report")),
        "lang": get_language(),
        "start_url": shell,
        "scope": shell,
        "display": "standalone",
        "background_color": "#f4f6f8",
        "theme_color": "#12263a",
        "icons": [
            {"src": static("command/icons/icon-192.png"), "sizes": "192x192", "type": "image/png"},
            {"src": static("command/icons/icon-512.png"), "sizes": "512x512", "type": "image/png"},
            {
                "src": static("command/icons/icon-512.png"),
                "sizes": "512x512",
                "type": "image/png",
                "purpose": "maskable",
            },
        ],
    }
    response = JsonResponse(body, json_dumps_params={"ensure_ascii": False})
    response["Content-Type"] = "application/manifest+json; charset=utf-8"
    return response
