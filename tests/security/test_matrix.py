"""The permission matrix walked: every role against every route and websocket action, own and other objects.

The routes come from the URL resolver, so a route without a row in tests/security/matrix.py fails
`test_every_route_has_a_row`. Each REST request runs in a savepoint that is rolled back, so every role
meets the same state. A mismatch is reported as (route, role, own/other, expected, got) for all cells
at once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.security import matrix
from tests.security.matrix import ALLOW, DENY, HIDDEN, PAGES, REST, ROLES
from tests.security.world import World, build_world
from tests.support.factories import first_grid_of, point_in

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "demo-pass-2026"


# --------------------------------------------------------------------------------------------- routes


def _walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str, Any]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern) and p.name:
            yield prefix + str(p.pattern), namespace + p.name, p.callback


def routes() -> dict[tuple[str, str], str]:
    """(METHOD, URL name) → route of every named route except the admin's own pages."""
    found: dict[tuple[str, str], str] = {}
    for route, name, callback in _walk(get_resolver().url_patterns):
        if name.startswith("admin:") and name != "admin:index":
            continue
        view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        if view is None:
            methods = ["POST"] if name in ("set_language",) else ["GET"]
        else:
            methods = [m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)]
            if name == "login":
                methods = ["GET"]  # the form posts are covered by test_hardening (lockout, CSRF)
            if name == "logout":
                methods = ["POST"]
        for method in methods:
            found[(method, name)] = route
    return found


def test_every_route_has_a_row():
    """A new route must get a row in tests/security/matrix.py (and so in docs/security.md)."""
    known = set(REST) | set(PAGES)
    missing = sorted(set(routes()) - known)
    assert not missing, f"routes without a row in the permission matrix: {missing}"
    stale = sorted(known - set(routes()))
    assert not stale, f"rows of the permission matrix for routes that no longer exist: {stale}"


def test_every_websocket_action_has_a_row():
    from realtime.hooks import ACTIONS

    assert set(ACTIONS) == set(matrix.WS_ACTIONS), sorted(set(ACTIONS) ^ set(matrix.WS_ACTIONS))


def test_the_document_carries_the_matrix():
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert matrix.markdown() in text, "docs/security.md is out of date: run `python -m tests.security.matrix`"


# -------------------------------------------------------------------------------------------- requests


@dataclass
class Call:
    """One request: method, path, body (JSON unless content_type says otherwise)."""

    method: str
    path: str
    body: Any = None
    content_type: str | None = None


def _incident_action(role: str) -> dict[str, Any]:
    # Chosen to pass or fail on the role alone: refused roles get 403, allowed ones a 200 or a 409.
    bodies: dict[str, dict[str, Any]] = {
        "operator": {"action": "extend", "minutes": 10, "reason": "矩阵"},
        "commander": {"action": "extend", "minutes": 10, "reason": "矩阵"},
        "grid_worker": {"action": "verify"},
    }
    return bodies.get(role, {"action": "accept"})


def _order_action(role: str) -> dict[str, Any]:
    return {
        "operator": {"action": "release", "reason": "矩阵"},
        "commander": {"action": "supervise", "reason": "矩阵"},
    }.get(role, {"action": "sign"})


def _warning_action(role: str) -> dict[str, Any]:
    if role in ("operator", "commander", "admin", "anonymous"):
        return {"action": "cancel", "reason": "矩阵"}
    return {"action": "read"}


def _token_body(world: World, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "wrong"}
    return {"username": world.users[role], "password": PASSWORD}


def _report_body() -> dict[str, Any]:
    lon, lat = point_in(first_grid_of("grid01"))
    return {"category": "UM02", "description": "矩阵测试", "lon": lon, "lat": lat}


def _warning_body() -> dict[str, Any]:
    lon, lat = point_in(first_grid_of("grid01"))
    return {
        "level": "blue",
        "type": "暴雨",
        "headline": "矩阵",
        "area": {"circles": [{"lon": lon, "lat": lat, "radius_m": 500}]},
        "expires": (timezone.now() + timedelta(hours=2)).isoformat(),
    }


Builder = Callable[[World, str, str], Call]
API = "/api/v1"
CALLS: dict[tuple[str, str], Builder] = {
    ("POST", "auth-token"): lambda w, r, s: Call("POST", f"{API}/auth/token/", _token_body(w, r)),
    ("POST", "ws-ticket"): lambda w, r, s: Call("POST", f"{API}/ws-tickets/"),
    ("GET", "schema"): lambda w, r, s: Call("GET", f"{API}/schema/"),
    ("GET", "api-docs"): lambda w, r, s: Call("GET", f"{API}/docs/"),
    ("GET", "api-redoc"): lambda w, r, s: Call("GET", f"{API}/redoc/"),
    ("GET", "category-list"): lambda w, r, s: Call("GET", f"{API}/categories/"),
    ("GET", "department-list"): lambda w, r, s: Call("GET", f"{API}/departments/"),
    ("GET", "territory"): lambda w, r, s: Call("GET", f"{API}/territory/district/?simplify=50"),
    ("GET", "geocode"): lambda w, r, s: Call("GET", f"{API}/geocode/?lon=114.05&lat=22.54"),
    ("GET", "geocode-reverse"): lambda w, r, s: Call("GET", f"{API}/geocode/reverse/?lon=114.05&lat=22.54"),
    ("POST", "report-create"): lambda w, r, s: Call("POST", f"{API}/reports/", _report_body()),
    ("GET", "incident-list"): lambda w, r, s: Call("GET", f"{API}/incidents/"),
    ("GET", "incident-detail"): lambda w, r, s: Call("GET", f"{API}/incidents/{w.incident[s]}/"),
    ("POST", "incident-actions"): lambda w, r, s: Call(
        "POST", f"{API}/incidents/{w.incident[s]}/actions/", _incident_action(r)
    ),
    ("POST", "incident-reveal"): lambda w, r, s: Call(
        "POST", f"{API}/incidents/{w.incident[s]}/reveal/", {"reason": "矩阵"}
    ),
    ("GET", "dispatch-proposal"): lambda w, r, s: Call(
        "GET", f"{API}/incidents/{w.incident[s]}/dispatch-proposal/"
    ),
    ("GET", "recommended-units"): lambda w, r, s: Call(
        "GET", f"{API}/incidents/{w.incident[s]}/recommended-units/"
    ),
    ("GET", "order-list"): lambda w, r, s: Call("GET", f"{API}/orders/"),
    ("GET", "order-detail"): lambda w, r, s: Call("GET", f"{API}/orders/{w.order[s]}/"),
    ("POST", "order-actions"): lambda w, r, s: Call(
        "POST", f"{API}/orders/{w.order[s]}/actions/", _order_action(r)
    ),
    ("GET", "photo-report"): lambda w, r, s: Call("GET", f"{API}/photos/report/{w.report_photo[s]}/"),
    ("GET", "photo-order"): lambda w, r, s: Call("GET", f"{API}/photos/order/{w.order_photo[s]}/"),
    ("GET", "overdue-board"): lambda w, r, s: Call("GET", f"{API}/overdue/"),
    ("GET", "unit-list"): lambda w, r, s: Call("GET", f"{API}/units/"),
    ("POST", "unit-position"): lambda w, r, s: Call(
        "POST", f"{API}/units/{w.unit[s]}/position/", {"lon": 114.05, "lat": 22.54}
    ),
    ("GET", "warning-list"): lambda w, r, s: Call("GET", f"{API}/warnings/"),
    ("POST", "warning-list"): lambda w, r, s: Call("POST", f"{API}/warnings/", _warning_body()),
    ("GET", "warning-detail"): lambda w, r, s: Call("GET", f"{API}/warnings/{w.warning[s]}/"),
    ("POST", "warning-actions"): lambda w, r, s: Call(
        "POST", f"{API}/warnings/{w.warning[s]}/actions/", _warning_action(r)
    ),
    ("POST", "warning-cap-import"): lambda w, r, s: Call(
        "POST", f"{API}/warnings/cap/", b"<alert/>", content_type="application/xml"
    ),
    ("GET", "warning-cap-export"): lambda w, r, s: Call("GET", f"{API}/warnings/{w.warning[s]}/cap/"),
    ("GET", "presence"): lambda w, r, s: Call("GET", f"{API}/presence/"),
    ("GET", "stats-incidents"): lambda w, r, s: Call("GET", f"{API}/stats/incidents/"),
    ("GET", "stats-units"): lambda w, r, s: Call("GET", f"{API}/stats/units/"),
    ("GET", "stats-compare"): lambda w, r, s: Call("GET", f"{API}/stats/compare/"),
    ("GET", "stats-departments"): lambda w, r, s: Call("GET", f"{API}/stats/departments/"),
    ("GET", "hotspots"): lambda w, r, s: Call("GET", f"{API}/hotspots/"),
    ("GET", "evaluation"): lambda w, r, s: Call("GET", f"{API}/evaluation/"),
    ("GET", "export-incidents"): lambda w, r, s: Call("GET", f"{API}/exports/incidents.csv"),
    ("GET", "export-stats"): lambda w, r, s: Call("GET", f"{API}/exports/stats.csv"),
}


def classify_api(status: int) -> str:
    """An API answer as an outcome of the matrix."""
    if status in (401, 403):
        return DENY
    if status == 404:
        return HIDDEN
    if status < 300 or status in (400, 409, 422):
        return ALLOW
    return f"unexpected {status}"


def classify_page(response: Any) -> str:
    """A page answer: 403 or a redirect to a login form (with `next`) is a denial."""
    if response.status_code == 403:
        return DENY
    if response.status_code == 404:
        return HIDDEN
    if response.status_code in (301, 302):
        location = response.get("Location", "")
        return DENY if "login/?next=" in location else ALLOW
    return ALLOW if response.status_code < 400 else f"unexpected {response.status_code}"


def _api_client(world: World, role: str) -> APIClient:
    from command.models import User

    client = APIClient()
    if role != "anonymous":
        token, _ = Token.objects.get_or_create(user=User.objects.get(username=world.users[role]))
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


def _send(client: APIClient, call: Call) -> Any:
    key = uuid.uuid4().hex
    if call.method == "GET":
        return client.get(call.path)
    if call.content_type:
        return client.generic(
            call.method, call.path, call.body, content_type=call.content_type, HTTP_IDEMPOTENCY_KEY=key
        )
    return client.post(call.path, call.body or {}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _mismatch_report(mismatches: list[tuple[str, str, str, str, str]]) -> str:
    lines = [f"{len(mismatches)} cells of the permission matrix do not hold:"]
    lines += [
        f"  {route:<48} {role:<12} {scope:<6} expected {exp:<7} got {got}"
        for route, role, scope, exp, got in mismatches
    ]
    return "\n".join(lines)


@pytest.mark.django_db
def test_rest_matrix(demo_city):
    """Every role × every REST route × own/other object, each request in a rolled-back savepoint."""
    world = build_world()
    clients = {role: _api_client(world, role) for role in ROLES}
    mismatches: list[tuple[str, str, str, str, str]] = []
    for key, row in REST.items():
        for role in ROLES:
            for index, scope in enumerate(("own", "other") if row.scoped else ("own",)):
                call = CALLS[key](world, role, scope)
                with transaction.atomic():
                    response = _send(clients[role], call)
                    transaction.set_rollback(True)
                got = classify_api(response.status_code)
                expected = row.cells[role][index]
                if got != expected:
                    detail = f"{got} ({response.status_code})"
                    mismatches.append((f"{key[0]} {call.path}", role, scope, expected, detail))
    assert not mismatches, _mismatch_report(mismatches)


def _page_client(world: World, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.login(username=world.users[role], password=PASSWORD)
    return client


PageBuilder = Callable[[World, str], tuple[str, str, dict[str, str]]]
PAGE_CALLS: dict[tuple[str, str], PageBuilder] = {
    ("GET", "healthz"): lambda w, s: ("GET", "/healthz", {}),
    ("GET", "login"): lambda w, s: ("GET", "/login/", {}),
    ("POST", "logout"): lambda w, s: ("POST", "/logout/", {}),
    ("POST", "set_language"): lambda w, s: ("POST", "/i18n/setlang/", {"language": "en", "next": "/"}),
    ("GET", "home"): lambda w, s: ("GET", "/", {}),
    ("GET", "console-command"): lambda w, s: ("GET", "/command/", {}),
    ("GET", "console-mobile"): lambda w, s: ("GET", "/m/", {}),
    ("GET", "console-mobile-sw"): lambda w, s: ("GET", "/m/sw.js", {}),
    ("GET", "console-mobile-manifest"): lambda w, s: ("GET", "/m/manifest.webmanifest", {}),
    ("GET", "console-dept"): lambda w, s: ("GET", "/dept/", {}),
    ("GET", "dashboard"): lambda w, s: ("GET", "/command/dashboard/", {}),
    ("GET", "warning-page"): lambda w, s: ("GET", f"/command/warnings/{w.warning[s]}/", {}),
    ("GET", "admin:index"): lambda w, s: ("GET", "/admin/", {}),
}


@pytest.mark.django_db
def test_pages_matrix(demo_city):
    """Every role × every page (a fresh session per request: signing out must not leak into the next)."""
    world = build_world()
    clients = {role: _page_client(world, role) for role in ROLES}
    mismatches = []
    for key, row in PAGES.items():
        for role in ROLES:
            for index, scope in enumerate(("own", "other") if row.scoped else ("own",)):
                method, path, data = PAGE_CALLS[key](world, scope)
                # Signing out ends the session: that request gets a client of its own.
                client = _page_client(world, role) if key == ("POST", "logout") else clients[role]
                response = client.get(path) if method == "GET" else client.post(path, data)
                got = classify_page(response)
                expected = row.cells[role][index]
                if got != expected:
                    mismatches.append(
                        (f"{method} {path}", role, scope, expected, f"{got} ({response.status_code})")
                    )
    assert not mismatches, _mismatch_report(mismatches)


@pytest.mark.django_db
def test_lists_hold_the_own_objects_and_not_the_others(demo_city):
    """Row-level filtering of the lists: each unit sees its own incident, order, unit and warning only."""
    world = build_world()
    checks = {
        "grid_worker": [("incidents/", "incident")],
        "department": [
            ("incidents/", "incident"),
            ("orders/", "order"),
            ("units/", "unit"),
            ("warnings/", "warning"),
        ],
    }
    problems = []
    for role, lists in checks.items():
        client = _api_client(world, role)
        for path, kind in lists:
            body = client.get(f"{API}/{path}?page_size=200").json()
            rows = body["results"] if isinstance(body, dict) else body
            ids = {row["id"] for row in rows}
            own, other = getattr(world, kind)["own"], getattr(world, kind)["other"]
            if own not in ids:
                problems.append(f"{role}: {path} lacks its own {kind} {own}")
            if other in ids:
                problems.append(f"{role}: {path} shows another unit's {kind} {other}")
    assert not problems, problems


# ------------------------------------------------------------------------------------------ websocket


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_websocket_matrix(demo_city, tmp_path):
    """Every websocket action × every signed-in role × own/other object, against a real daphne."""
    from command.models import User
    from tests.support.servers import daphne
    from tests.support.wsclient import StreamClient

    world = build_world()
    roles = [r for r in ROLES if r != "anonymous"]
    tokens = {
        role: Token.objects.get_or_create(user=User.objects.get(username=world.users[role]))[0].key
        for role in roles
    }
    mismatches: list[tuple[str, str, str, str, str]] = []
    errors: list[BaseException] = []

    def walk(server_url: str, role: str) -> None:
        client = StreamClient(server_url, tokens[role])
        try:
            for action in matrix.WS_ACTIONS:
                kind = action.split(".", 1)[0]
                for scope in ("own", "other"):
                    target = {"incident": world.incident, "order": world.order, "warning": world.warning}[
                        kind
                    ][scope]
                    result = client.action(action, **{f"{kind}_id": target})
                    status = 200 if result["ok"] else int(result["status"])
                    got = classify_api(status)
                    expected = matrix.ws_expected(action, role, scope)
                    if got != expected:
                        mismatches.append((action, role, scope, expected, f"{got} ({status})"))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    with daphne(tmp_path, env={"WS_RATE_PER_S": "1000", "WS_RATE_BURST": "1000"}) as server:
        # The roles walk at once, each on its own socket: outcomes depend on role and object, not order.
        threads = [threading.Thread(target=walk, args=(server.url, role)) for role in roles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        # Without a ticket or a session there is no action at all: the socket closes with 4401.
        import json as _json

        from websockets.sync.client import connect

        with connect(server.url.replace("http://", "ws://") + "/ws/stream/", open_timeout=10) as ws:
            ws.send(
                _json.dumps(
                    {"type": "action", "request_id": "r", "action": "incident.accept", "incident_id": 1}
                )
            )
            closing = _json.loads(ws.recv(timeout=10))
            assert closing["type"] == "closing" and closing["code"] == 4401
    assert not mismatches, _mismatch_report(mismatches)
