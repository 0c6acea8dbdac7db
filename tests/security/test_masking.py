"""Masking snapshot: every payload each role can get carries no mobile or ID number in clear.

The world's reports carry a mobile number in the structured field, in the description (with an
18-character ID number) and split 3-4-4 in the address. Every GET route is called for every role (own
and other objects), every page is opened, every websocket event of the role's feed is read from a
real daphne, and log lines are written through the configured handler. Roles without the right
(grid_worker, department, admin, anonymous) must never see a clear number; the roles with it
(operator, commander) see masked numbers in every JSON answer too, and clear ones only through the
audited reveal (and in exports, which are theirs to make).
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.security.matrix import REST, ROLES
from tests.security.test_matrix import CALLS, PASSWORD
from tests.security.world import ID_NUMBER, PHONE, World, build_world

# What "in clear" means: an 11-digit mobile number or an 18-character ID number standing alone (not
# the fraction of a coordinate), or the number split 3-4-4.
CLEAR = re.compile(
    r"(?<![0-9.])1[3-9][0-9]{9}(?![0-9])|(?<![0-9A-Za-z.])[0-9]{17}[0-9Xx](?![0-9A-Za-z])|139 1234 5678"
)
WITH_RIGHT = ("operator", "commander")


def _clear_numbers(text: str) -> list[str]:
    return sorted(set(CLEAR.findall(text)))


def _client(world: World, role: str) -> APIClient:
    from command.models import User

    client = APIClient()
    if role != "anonymous":
        token, _ = Token.objects.get_or_create(user=User.objects.get(username=world.users[role]))
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


def _get_paths(world: World, role: str) -> list[str]:
    """Every GET of the matrix for own and other objects, plus the other export formats and filters."""
    paths = []
    for key, row in REST.items():
        if key[0] != "GET":
            continue
        for scope in ("own", "other") if row.scoped else ("own",):
            paths.append(CALLS[key](world, role, scope).path)
    paths += [
        "/api/v1/exports/incidents.geojson",
        "/api/v1/exports/incidents.gpkg",
        f"/api/v1/incidents/?q={PHONE[:5]}",
        f"/api/v1/orders/?incident={world.incident['own']}",
        "/api/v1/hotspots/?format=geojson",
    ]
    return paths


def _body_text(response: Any) -> str:
    streamed = hasattr(response, "streaming_content")
    raw = b"".join(response.streaming_content) if streamed else response.content
    if raw[:16].startswith(b"SQLite format 3"):
        return _gpkg_text(raw)
    return raw.decode("utf-8", "replace")


def _gpkg_text(raw: bytes) -> str:
    """Every text value of a GeoPackage's feature tables."""
    import sqlite3
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".gpkg") as handle:
        handle.write(raw)
        handle.flush()
        connection = sqlite3.connect(handle.name)
        try:
            tables = [r[0] for r in connection.execute("SELECT table_name FROM gpkg_contents")]
            values = []
            for table in tables:
                for row in connection.execute(f'SELECT * FROM "{table}"'):
                    values += [str(v) for v in row if isinstance(v, str)]
            return "\n".join(values)
        finally:
            connection.close()


@pytest.mark.django_db
def test_rest_payloads_show_no_clear_numbers(demo_city):
    """Every GET answer of every role; JSON is masked for everyone, exports for roles without the right."""
    world = build_world()
    leaks = []
    for role in ROLES:
        client = _client(world, role)
        for path in _get_paths(world, role):
            response = client.get(path)
            if response.status_code >= 400:
                continue
            found = _clear_numbers(_body_text(response))
            export = "/exports/" in path
            if found and not (export and role in WITH_RIGHT):
                leaks.append(f"{role:<12} GET {path}: {found}")
    assert not leaks, "personal numbers in clear:\n" + "\n".join(leaks)


@pytest.mark.django_db
def test_the_reveal_answers_clear_numbers_and_records_it(demo_city):
    from audit.models import AuditRecord

    world = build_world()
    incident = world.incident["own"]
    detail = _client(world, "operator").get(f"/api/v1/incidents/{incident}/").json()
    assert detail["reports"][0]["reporter_phone"] == "139****5678"
    assert "139****5678" in detail["description"] and "4403**********1234" in detail["description"]
    before = AuditRecord.objects.count()
    reveal = _client(world, "operator").post(
        f"/api/v1/incidents/{incident}/reveal/", {"reason": "回拨报告人"}, format="json"
    )
    assert reveal.status_code == 200
    body = reveal.json()
    assert body["reports"][0]["reporter_phone"] == PHONE and ID_NUMBER in body["description"]
    record = AuditRecord.objects.get(seq=body["audit_seq"])
    assert AuditRecord.objects.count() == before + 1
    assert (record.action, record.actor_username, record.reason) == ("reveal", "operator", "回拨报告人")
    assert not _clear_numbers(record.data + record.reason)
    for role in ("grid_worker", "department", "admin"):
        refused = _client(world, role).post(
            f"/api/v1/incidents/{incident}/reveal/", {"reason": "x"}, format="json"
        )
        assert refused.status_code == 403
    assert AuditRecord.objects.count() == before + 1
    missing = _client(world, "commander").post(f"/api/v1/incidents/{incident}/reveal/", {}, format="json")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "reason"


@pytest.mark.django_db
def test_pages_show_no_clear_numbers(demo_city):
    world = build_world()
    pages = ["/", "/login/", "/command/", "/m/", "/dept/", "/command/dashboard/", "/m/manifest.webmanifest"]
    admin_pages = [
        "/admin/",
        "/admin/audit/auditrecord/",
        "/admin/command/department/",
        "/admin/command/earlywarning/",
        f"/admin/command/earlywarning/{world.warning['own']}/change/",
    ]
    leaks = []
    for role in ROLES:
        client = Client()
        if role != "anonymous":
            client.login(username=world.users[role], password=PASSWORD)
        for path in pages + (admin_pages if role == "admin" else []):
            response = client.get(path)
            if response.status_code >= 400:
                continue
            found = _clear_numbers(_body_text(response))
            if found:
                leaks.append(f"{role:<12} GET {path}: {found}")
    assert not leaks, "personal numbers in clear on pages:\n" + "\n".join(leaks)


def test_log_lines_show_no_clear_numbers(client_for):
    handler = next(
        h
        for h in logging.getLogger().handlers
        if any(type(f).__name__ == "RedactingLogFilter" for f in h.filters)
    )
    stream = io.StringIO()
    old = handler.setStream(stream)
    try:
        # A real request whose path carries a number: django.request logs it as a 400/404 warning.
        client_for("grid01").get(f"/api/v1/territory/{PHONE}/")
        logging.getLogger("yjld.test").warning("回拨 %s，证件 %s", PHONE, ID_NUMBER)
        try:
            raise ValueError(f"bad phone {PHONE}")
        except ValueError:
            logging.getLogger("yjld.test").exception("intake failed")
    finally:
        handler.setStream(old)
    text = stream.getvalue()
    assert (
        "139****5678" in text and "4403**********1234" in text and "ValueError: bad phone 139****5678" in text
    )
    assert not _clear_numbers(text), text


@pytest.mark.django_db(transaction=True)
def test_websocket_events_show_no_clear_numbers(demo_city, tmp_path):
    """Every event in each role's feed, replayed and live, from a real daphne."""
    from command.models import User
    from tests.support.servers import daphne
    from tests.support.wsclient import StreamClient

    world = build_world()
    roles = ("operator", "commander", "grid_worker", "department", "admin")
    tokens = {
        role: Token.objects.get_or_create(user=User.objects.get(username=world.users[role]))[0].key
        for role in roles
    }
    leaks: list[str] = []
    errors: list[BaseException] = []
    names: dict[str, set[str]] = {}

    def read_feed(server_url: str, role: str) -> None:
        client = StreamClient(server_url, tokens[role])
        try:
            head = int(client.welcome["head"])
            if head:
                client.collect(lambda events: len(events) >= head, timeout=30)
            names[role] = {event["event"] for event in client.events}
            for event in client.events:
                found = _clear_numbers(json.dumps(event, ensure_ascii=False))
                if found:
                    leaks.append(f"{role:<12} {event['event']} seq {event['seq']}: {found}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    with daphne(tmp_path) as server:
        threads = [threading.Thread(target=read_feed, args=(server.url, role)) for role in roles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert not leaks, "personal numbers in clear in websocket events:\n" + "\n".join(leaks)
    # The snapshot read the units' positions too; they go to the centre and the unit's department only.
    unit_feeds = {role for role, seen in names.items() if "unit.updated" in seen}
    assert unit_feeds == {"operator", "commander", "department"}, names
