"""The permission matrix: role × resource × action, declared once, walked by test_matrix.py, shown in
docs/security.md (`python -m tests.security.matrix` prints the tables; a test keeps the document in step).

Outcomes: ALLOW (the request passes authorization: 2xx, or a 400/409/422 about the input or the state),
DENY (403; 401 without credentials; a page's redirect to the login), HIDDEN (404: the object is not
among those the role may see, so its existence is not confirmed). An object-scoped cell is "own/other":
own = an object of the caller's unit (the department's order, the grid worker's grid or report, a
warning sent to them), other = one of another unit. The command centre and the administrator have no
unit: their two objects are simply two incidents, orders, units or warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

ALLOW, DENY, HIDDEN = "allow", "deny", "hidden"
ROLES = ("anonymous", "operator", "commander", "grid_worker", "department", "admin")
_CODE = {"A": ALLOW, "D": DENY, "H": HIDDEN}


@dataclass(frozen=True)
class Rule:
    """One row: what a route does, and the outcome for each role (own/other for object routes)."""

    resource: str
    action: str
    cells: dict[str, tuple[str, str]]
    scoped: bool


def rule(resource: str, action: str, spec: str) -> Rule:
    """Parse "anonymous=D operator=A … department=A/H" into a rule (every role must be named)."""
    cells: dict[str, tuple[str, str]] = {}
    scoped = False
    for part in spec.split():
        role, _, value = part.partition("=")
        own, _, other = value.partition("/")
        scoped = scoped or bool(other)
        cells[role] = (_CODE[own], _CODE[other or own])
    if set(cells) != set(ROLES):
        raise ValueError(f"{resource} {action}: roles {sorted(set(ROLES) ^ set(cells))} missing or unknown")
    return Rule(resource, action, cells, scoped)


_AUTH = "anonymous=D operator=A commander=A grid_worker=A department=A admin=A"
_PUBLIC = "anonymous=A operator=A commander=A grid_worker=A department=A admin=A"
_CENTRE = "anonymous=D operator=A commander=A grid_worker=D department=D admin=D"
_CENTRE_ADMIN = "anonymous=D operator=A commander=A grid_worker=D department=D admin=A"
_STATS = "anonymous=D operator=A commander=A grid_worker=D department=A admin=A"

# (METHOD, URL name) → rule. Every route of /api/v1/ must be here: test_matrix fails on a new one.
REST: dict[tuple[str, str], Rule] = {
    ("POST", "auth-token"): rule("token", "sign in", _PUBLIC),
    ("POST", "ws-ticket"): rule("websocket ticket", "issue", _AUTH),
    ("GET", "schema"): rule("API schema", "read", _PUBLIC),
    ("GET", "api-docs"): rule("API docs", "read", _PUBLIC),
    ("GET", "api-redoc"): rule("API docs", "read", _PUBLIC),
    ("GET", "category-list"): rule("category", "list", _AUTH),
    ("GET", "department-list"): rule("department", "list", _AUTH),
    ("GET", "territory"): rule("territory", "read GeoJSON", _AUTH),
    ("GET", "geocode"): rule("geocode", "point / address", _AUTH),
    ("GET", "geocode-reverse"): rule("geocode", "reverse", _AUTH),
    ("POST", "report-create"): rule(
        "report", "submit", "anonymous=D operator=A commander=A grid_worker=A department=D admin=D"
    ),
    ("GET", "incident-list"): rule("incident", "list (filtered)", _AUTH),
    ("GET", "incident-detail"): rule(
        "incident", "read", "anonymous=D operator=A commander=A grid_worker=A/H department=A/H admin=A"
    ),
    ("POST", "incident-actions"): rule(
        "incident",
        "act (closed loop)",
        "anonymous=D operator=A commander=A grid_worker=A/H department=D/H admin=D",
    ),
    ("POST", "incident-reveal"): rule("incident personal data", "reveal (audited)", _CENTRE),
    ("GET", "dispatch-proposal"): rule("incident", "dispatch proposal", _CENTRE),
    ("GET", "recommended-units"): rule("incident", "recommended units", _CENTRE),
    ("GET", "order-list"): rule("order", "list (filtered)", _AUTH),
    ("GET", "order-detail"): rule(
        "order", "read", "anonymous=D operator=A commander=A grid_worker=H department=A/H admin=A"
    ),
    ("POST", "order-actions"): rule(
        "order",
        "act (sign … arbitrate)",
        "anonymous=D operator=A commander=A grid_worker=H department=A/H admin=D",
    ),
    ("GET", "overdue-board"): rule("order", "overdue board (filtered)", _AUTH),
    # Photos follow what they belong to: the incident of the report, the order of the progress note.
    ("GET", "photo-report"): rule(
        "photo",
        "read a report's",
        "anonymous=D operator=A commander=A grid_worker=A/H department=A/H admin=A",
    ),
    ("GET", "photo-order"): rule(
        "photo",
        "read an order's (progress, completion)",
        "anonymous=D operator=A commander=A grid_worker=H department=A/H admin=A",
    ),
    ("GET", "unit-list"): rule("unit", "list (filtered)", _AUTH),
    ("POST", "unit-position"): rule(
        "unit", "report position", "anonymous=D operator=D commander=D grid_worker=H department=A/H admin=D"
    ),
    ("GET", "warning-list"): rule("warning", "list (filtered)", _AUTH),
    ("POST", "warning-list"): rule("warning", "draft", _CENTRE),
    ("GET", "warning-detail"): rule(
        "warning", "read", "anonymous=D operator=A commander=A grid_worker=A/H department=A/H admin=A"
    ),
    ("POST", "warning-actions"): rule(
        "warning",
        "act (approve … cancel; read)",
        "anonymous=D operator=A commander=A grid_worker=A/H department=A/H admin=D",
    ),
    ("POST", "warning-cap-import"): rule("warning", "CAP import", _CENTRE),
    ("GET", "warning-cap-export"): rule("warning", "CAP export", _CENTRE_ADMIN),
    ("GET", "presence"): rule("presence", "read", _CENTRE_ADMIN),
    ("GET", "stats-incidents"): rule("statistics", "incidents", _STATS),
    ("GET", "stats-units"): rule("statistics", "units", _STATS),
    ("GET", "stats-compare"): rule("statistics", "compare periods", _STATS),
    ("GET", "stats-departments"): rule("statistics", "departments", _STATS),
    ("GET", "hotspots"): rule("statistics", "hotspots", _STATS),
    ("GET", "evaluation"): rule("statistics", "evaluation", _STATS),
    ("GET", "export-incidents"): rule("export", "incidents (CSV, GeoJSON, GeoPackage)", _STATS),
    ("GET", "export-stats"): rule("export", "statistics", _STATS),
}

# Pages (URL name → rule); the Django admin is one row for all its pages.
PAGES: dict[tuple[str, str], Rule] = {
    ("GET", "healthz"): rule("health", "read", _PUBLIC),
    ("GET", "login"): rule("login page", "open", _PUBLIC),
    ("POST", "logout"): rule("session", "sign out", _PUBLIC),
    ("POST", "set_language"): rule("language", "switch", _PUBLIC),
    ("GET", "home"): rule("home page", "open", _AUTH),
    ("GET", "console-command"): rule("command centre page", "open", _CENTRE),
    ("GET", "console-mobile"): rule(
        "grid worker's phone page",
        "open",
        "anonymous=D operator=D commander=D grid_worker=A department=D admin=D",
    ),
    ("GET", "console-mobile-sw"): rule("phone page service worker", "read", _PUBLIC),
    ("GET", "console-mobile-manifest"): rule("phone page manifest", "read", _PUBLIC),
    ("GET", "console-dept"): rule(
        "department inbox page",
        "open",
        "anonymous=D operator=D commander=D grid_worker=D department=A admin=D",
    ),
    ("GET", "dashboard"): rule("dashboard page", "open", _STATS),
    ("GET", "warning-page"): rule(
        "warning page", "open", "anonymous=D operator=A commander=A grid_worker=A/H department=A/H admin=A"
    ),
    ("GET", "admin:index"): rule(
        "Django admin", "open", "anonymous=D operator=D commander=D grid_worker=D department=D admin=A"
    ),
}

_CENTRE_ROLES = frozenset({"operator", "commander"})
# Websocket actions: who may take each (the object must also be visible: see WS_VISIBILITY).
WS_ACTIONS: dict[str, frozenset[str]] = {
    **{
        f"incident.{a}": _CENTRE_ROLES
        for a in (
            "accept",
            "register",
            "cancel",
            "dispatch",
            "close",
            "merge",
            "split",
            "suspend",
            "resume",
            "extend",
        )
    },
    **{
        f"incident.{a}": _CENTRE_ROLES | {"grid_worker"}
        for a in ("verify", "reject_verification", "evaluate")
    },
    "incident.approve": frozenset({"commander"}),
    "incident.decline": frozenset({"commander"}),
    **{
        f"order.{a}": frozenset({"department"})
        for a in ("sign", "reject", "depart", "arrive", "progress", "complete")
    },
    "order.arbitrate": frozenset({"commander"}),
    "order.supervise": frozenset({"commander"}),
    "order.release": _CENTRE_ROLES,
    # Recipients only: the command centre and the grid workers and departments the warning reached.
    "warning.read": _CENTRE_ROLES | {"grid_worker", "department"},
}
# Which objects a websocket action can reach, per role: "all", "own" (own/other → visible/hidden), "none".
WS_VISIBILITY: dict[str, dict[str, str]] = {
    "incident": {
        "operator": "all",
        "commander": "all",
        "admin": "all",
        "grid_worker": "own",
        "department": "own",
    },
    "order": {
        "operator": "all",
        "commander": "all",
        "admin": "all",
        "grid_worker": "none",
        "department": "own",
    },
    "warning": {
        "operator": "all",
        "commander": "all",
        "admin": "all",
        "grid_worker": "own",
        "department": "own",
    },
}


def ws_expected(action: str, role: str, scope: str) -> str:
    """The outcome of a websocket action for a role on its own or another unit's object."""
    kind = action.split(".", 1)[0]
    reach = WS_VISIBILITY[kind][role]
    if reach == "none" or (reach == "own" and scope == "other"):
        return HIDDEN
    return ALLOW if role in WS_ACTIONS[action] else DENY


# ------------------------------------------------------------------------------------------ rendering

_SHOW = {ALLOW: "✔", DENY: "✘", HIDDEN: "404"}


def _cell(value: tuple[str, str], scoped: bool) -> str:
    own, other = value
    if not scoped or own == other:
        return _SHOW[own]
    return f"{_SHOW[own]} / {_SHOW[other]}"


def _table(rows: dict[tuple[str, str], Rule], paths: dict[tuple[str, str], str]) -> list[str]:
    lines = [
        "| resource | action | route | " + " | ".join(ROLES) + " |",
        "|---|---|---|" + "---|" * len(ROLES),
    ]
    for key, row in rows.items():
        route = f"`{key[0]} {paths.get(key, key[1])}`"
        cells = " | ".join(_cell(row.cells[r], row.scoped) for r in ROLES)
        lines.append(f"| {row.resource} | {row.action} | {route} | {cells} |")
    return lines


REST_PATHS = {
    ("POST", "auth-token"): "/api/v1/auth/token/",
    ("POST", "ws-ticket"): "/api/v1/ws-tickets/",
    ("GET", "schema"): "/api/v1/schema/",
    ("GET", "api-docs"): "/api/v1/docs/",
    ("GET", "api-redoc"): "/api/v1/redoc/",
    ("GET", "category-list"): "/api/v1/categories/",
    ("GET", "department-list"): "/api/v1/departments/",
    ("GET", "territory"): "/api/v1/territory/{level}/",
    ("GET", "geocode"): "/api/v1/geocode/",
    ("GET", "geocode-reverse"): "/api/v1/geocode/reverse/",
    ("POST", "report-create"): "/api/v1/reports/",
    ("GET", "incident-list"): "/api/v1/incidents/",
    ("GET", "incident-detail"): "/api/v1/incidents/{id}/",
    ("POST", "incident-actions"): "/api/v1/incidents/{id}/actions/",
    ("POST", "incident-reveal"): "/api/v1/incidents/{id}/reveal/",
    ("GET", "dispatch-proposal"): "/api/v1/incidents/{id}/dispatch-proposal/",
    ("GET", "recommended-units"): "/api/v1/incidents/{id}/recommended-units/",
    ("GET", "order-list"): "/api/v1/orders/",
    ("GET", "order-detail"): "/api/v1/orders/{id}/",
    ("POST", "order-actions"): "/api/v1/orders/{id}/actions/",
    ("GET", "photo-report"): "/api/v1/photos/report/{id}/",
    ("GET", "photo-order"): "/api/v1/photos/order/{id}/",
    ("GET", "overdue-board"): "/api/v1/overdue/",
    ("GET", "unit-list"): "/api/v1/units/",
    ("POST", "unit-position"): "/api/v1/units/{id}/position/",
    ("GET", "warning-list"): "/api/v1/warnings/",
    ("POST", "warning-list"): "/api/v1/warnings/",
    ("GET", "warning-detail"): "/api/v1/warnings/{id}/",
    ("POST", "warning-actions"): "/api/v1/warnings/{id}/actions/",
    ("POST", "warning-cap-import"): "/api/v1/warnings/cap/",
    ("GET", "warning-cap-export"): "/api/v1/warnings/{id}/cap/",
    ("GET", "presence"): "/api/v1/presence/",
    ("GET", "stats-incidents"): "/api/v1/stats/incidents/",
    ("GET", "stats-units"): "/api/v1/stats/units/",
    ("GET", "stats-compare"): "/api/v1/stats/compare/",
    ("GET", "stats-departments"): "/api/v1/stats/departments/",
    ("GET", "hotspots"): "/api/v1/hotspots/",
    ("GET", "evaluation"): "/api/v1/evaluation/",
    ("GET", "export-incidents"): "/api/v1/exports/incidents.{kind}",
    ("GET", "export-stats"): "/api/v1/exports/stats.{kind}",
}
PAGE_PATHS = {
    ("GET", "healthz"): "/healthz",
    ("GET", "login"): "/login/",
    ("POST", "logout"): "/logout/",
    ("POST", "set_language"): "/i18n/setlang/",
    ("GET", "home"): "/",
    ("GET", "console-command"): "/command/",
    ("GET", "console-mobile"): "/m/",
    ("GET", "console-mobile-sw"): "/m/sw.js",
    ("GET", "console-mobile-manifest"): "/m/manifest.webmanifest",
    ("GET", "console-dept"): "/dept/",
    ("GET", "dashboard"): "/command/dashboard/",
    ("GET", "warning-page"): "/command/warnings/{id}/",
    ("GET", "admin:index"): "/admin/ (every admin page)",
}


def ws_table() -> list[str]:
    """The websocket actions as a markdown table (own / other)."""
    roles = [r for r in ROLES if r != "anonymous"]
    lines = ["| action | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for action in WS_ACTIONS:
        cells = []
        for role in roles:
            own, other = ws_expected(action, role, "own"), ws_expected(action, role, "other")
            cells.append(_SHOW[own] if own == other else f"{_SHOW[own]} / {_SHOW[other]}")
        lines.append(f"| `{action}` | " + " | ".join(cells) + " |")
    return lines


def markdown() -> str:
    """Every table of the matrix, as docs/security.md carries them."""
    parts = [
        "<!-- matrix:begin (generated by `python -m tests.security.matrix`; test_matrix checks it) -->",
        "",
        "REST API (`/api/v1/`):",
        "",
        *_table(REST, REST_PATHS),
        "",
        "Pages:",
        "",
        *_table(PAGES, PAGE_PATHS),
        "",
        "Websocket actions on `/ws/stream/` (anonymous sockets are closed with 4401 before any action):",
        "",
        *ws_table(),
        "",
        "<!-- matrix:end -->",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown())
