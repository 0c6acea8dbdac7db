"""Realtime delivery that loses nothing: real daphne processes, real Redis, real websocket clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone
from websockets.sync.client import connect

from command.models import DispatchOrder, User
from incidents.models import Source
from incidents.services import ReportInput, incident_act, report_submit
from realtime.models import Event
from realtime.publish import publish
from tests.support.factories import first_grid_of, point_in
from tests.support.servers import ROOT, daphne, free_port
from tests.support.wsclient import StreamClient, api, token_for

pytestmark = [pytest.mark.django_db(transaction=True)]


def _fire_in(grid: str, n: int) -> list[int]:
    """Report, accept and register n fires (auto-dispatched): n orders to the grid's fire department."""
    grid_worker = User.objects.get(username="grid01")
    operator = User.objects.get(username="operator")
    lon, lat = point_in(grid)
    ids = []
    for i in range(n):
        data = ReportInput(category="AC01", description=f"火情 {i}", lon=lon, lat=lat)
        incident = report_submit(reporter=grid_worker, data=data, idempotency_key=uuid.uuid4().hex).incident
        incident_act(incident_id=incident.pk, actor=operator, action="accept", source=Source.API)
        incident_act(incident_id=incident.pk, actor=operator, action="register", source=Source.API)
        ids.append(incident.pk)
    return ids


def _fire_department_of(grid: str) -> str:
    from command.demo import DISTRICT_SLUGS

    return f"fire_{DISTRICT_SLUGS[grid[:6]]}"


def _orders_created(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "order.created"]


def _assert_contiguous(events: list[dict], start: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(start, start + len(seqs))), seqs[:20]


@pytest.mark.slow
def test_offline_department_gets_all_200_orders_in_order_once(tmp_path, demo_city):
    grid = first_grid_of("grid01")
    department = _fire_department_of(grid)
    _fire_in(grid, 200)
    expected = list(
        DispatchOrder.objects.filter(department__code=department)
        .order_by("issued_at", "id")
        .values_list("pk", flat=True)
    )
    assert len(expected) == 200
    with daphne(tmp_path) as server:
        client = StreamClient(server.url, token_for(server.url, department), resume_from=0)
        events = client.collect(lambda ev: len(ev) >= 200, timeout=60)
        time.sleep(0.5)
        client.ws.send(json.dumps({"type": "ping"}))
        client.recv_type("pong")
        _assert_contiguous(client.events)
        assert [e["data"]["id"] for e in _orders_created(events)] == expected
        client.close()
        # Every order counts as delivered once its department's client acknowledged it.
        deadline = time.monotonic() + 10
        while DispatchOrder.objects.filter(department__code=department, delivered_at__isnull=True).exists():
            assert time.monotonic() < deadline, "orders not marked delivered after ack"
            time.sleep(0.2)
        # Reconnecting from the last seq seen replays nothing and then goes live.
        again = StreamClient(
            server.url, token_for(server.url, department), resume_from=client.events[-1]["seq"]
        )
        _fire_in(grid, 1)
        live = again.collect(lambda ev: any(e["event"] == "order.created" for e in ev), timeout=20)
        assert live[0]["seq"] == client.events[-1]["seq"] + 1
        again.close()


@pytest.mark.slow
def test_replay_then_live_has_no_gap_and_no_duplicate_at_the_seam(tmp_path, demo_city):
    grid = first_grid_of("grid01")
    department = _fire_department_of(grid)
    _fire_in(grid, 30)
    with daphne(tmp_path) as server:
        client = StreamClient(server.url, token_for(server.url, department), hello=False)
        producer = threading.Thread(target=_fire_in, args=(grid, 30))
        producer.start()
        client.hello(0)
        events = client.collect(lambda ev: len(_orders_created(ev)) >= 60, timeout=90)
        producer.join()
        _assert_contiguous(events)
        ids = [e["data"]["id"] for e in _orders_created(events)]
        assert len(ids) == len(set(ids)) == 60
        client.close()


@pytest.mark.slow
def test_two_daphne_processes_share_events_and_departments_see_only_their_own(tmp_path, demo_city):
    grid = first_grid_of("grid01")
    department = _fire_department_of(grid)
    other = "fire_nanshan" if department != "fire_nanshan" else "fire_futian"
    with daphne(tmp_path) as a, daphne(tmp_path) as b:
        mine = StreamClient(b.url, token_for(b.url, department))
        theirs = StreamClient(b.url, token_for(b.url, other))
        operator = token_for(a.url, "operator")
        lon, lat = point_in(grid)
        status, body = api(
            a.url,
            "POST",
            "/api/v1/reports/",
            token=operator,
            body={"category": "AC01", "description": "厨房起火", "lon": lon, "lat": lat},
        )
        assert status == 201, body
        for action in ("accept", "register"):
            status, body = api(
                a.url,
                "POST",
                f"/api/v1/incidents/{body['id']}/actions/",
                token=operator,
                body={"action": action},
            )
            assert status == 200, body
        created = mine.collect(lambda ev: len(_orders_created(ev)) == 1, timeout=20)
        order_id = _orders_created(created)[0]["data"]["id"]
        assert _orders_created(created)[0]["data"]["department"] == department
        # The other department's client cannot act on it, and cannot ask to join anything.
        refused = theirs.action("order.sign", order_id=order_id)
        assert refused["ok"] is False and refused["status"] == 404
        theirs.ws.send(json.dumps({"type": "subscribe", "group": f"department.{department}"}))
        assert theirs.recv_type("error")["status"] == 400
        signed = mine.action("order.sign", order_id=order_id)
        assert signed["ok"] is True and signed["status"] == "signed"
        mine.collect(
            lambda ev: any(e["event"] == "order.updated" and e["data"]["status"] == "signed" for e in ev)
        )
        time.sleep(1.0)
        theirs.ws.send(json.dumps({"type": "ping"}))
        theirs.recv_type("pong")
        assert not [e for e in theirs.events if e["event"].startswith("order.")]
        mine.close()
        theirs.close()


def test_deactivated_user_socket_closes_within_5_seconds(tmp_path, demo_city):
    with daphne(tmp_path) as server:
        client = StreamClient(server.url, token_for(server.url, "water_group"))
        User.objects.filter(username="water_group").update(is_active=False)
        started = time.monotonic()
        code = client.closed_code(timeout=5)
        assert code == 4403, code
        assert time.monotonic() - started <= 5


def test_tickets_are_single_use_and_browsers_need_an_allowed_origin(tmp_path, demo_city):
    with daphne(tmp_path) as server:
        token = token_for(server.url, "operator")
        _, body = api(server.url, "POST", "/api/v1/ws-tickets/", token=token)
        ws_url = server.url.replace("http://", "ws://") + "/ws/stream/"
        with connect(ws_url) as ws:
            ws.send(json.dumps({"type": "auth", "ticket": body["ticket"]}))
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        with connect(ws_url) as ws:
            ws.send(json.dumps({"type": "auth", "ticket": body["ticket"]}))
            assert json.loads(ws.recv(timeout=10))["type"] == "closing"
        with connect(ws_url) as ws:
            ws.send(json.dumps({"type": "hello", "resume_from": 0}))
            assert json.loads(ws.recv(timeout=10))["reason"] == "authenticate first"
        with pytest.raises(Exception, match="403"):
            connect(ws_url, origin="http://evil.example")


@pytest.mark.slow
def test_slow_client_past_the_window_still_gets_every_event(tmp_path, demo_city, settings):
    user = User.objects.get(username="power_supply")
    with daphne(tmp_path, env={"WS_WINDOW": "100"}) as server:
        client = StreamClient(server.url, token_for(server.url, "power_supply"))
        # The client reads nothing while 1,500 events are published to it.
        for i in range(1500):
            with transaction.atomic():
                publish(
                    name="order.created",
                    recipients=[user.pk],
                    data={
                        "id": 10_000_000 + i,
                        "incident_id": 1,
                        "incident_code": "X",
                        "department": "power_supply",
                        "role": "lead",
                        "status": "issued",
                        "due_at": None,
                    },
                )
        events = client.collect(lambda ev: len(ev) >= 1500, timeout=120)
        _assert_contiguous(events)
        assert [e["data"]["id"] for e in events] == [10_000_000 + i for i in range(1500)]
        client.close()


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            break
        except Exception:
            time.sleep(0.05)
    return process


@pytest.mark.slow
def test_redis_outage_keeps_intake_working_and_loses_no_order(tmp_path, demo_city):
    port = free_port()
    redis_process = _redis_server(port)
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "BACKGROUND_IN_PROCESS": "1",
        "YJLD_SKIP_PREFLIGHT": "1",
    }
    grid = first_grid_of("grid01")
    department = _fire_department_of(grid)
    lon, lat = point_in(grid)
    try:
        with daphne(tmp_path, env=env) as server:
            client = StreamClient(server.url, token_for(server.url, department))
            operator = token_for(server.url, "operator")
            redis_process.terminate()
            redis_process.wait()
            outage_started = time.monotonic()
            made = []
            for i in range(5):
                status, body = api(
                    server.url,
                    "POST",
                    "/api/v1/reports/",
                    token=operator,
                    body={"category": "AC01", "description": f"停电期间火情 {i}", "lon": lon, "lat": lat},
                )
                assert status == 201, body
                for action in ("accept", "register"):
                    status, _ = api(
                        server.url,
                        "POST",
                        f"/api/v1/incidents/{body['id']}/actions/",
                        token=operator,
                        body={"action": action},
                    )
                    assert status == 200
                made.append(body["id"])
            time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
            redis_process = _redis_server(port)
            events = client.collect(lambda ev: len(_orders_created(ev)) >= 5, timeout=60)
            assert sorted(e["data"]["incident_id"] for e in _orders_created(events)) == sorted(made)
            _assert_contiguous(events, start=events[0]["seq"])
            client.close()
    finally:
        redis_process.terminate()


KILL_SCRIPT = """
import os, signal, uuid, django
django.setup()
from django.db import transaction
from django.utils import timezone
from command.models import User
from incidents.models import Source
from incidents.services import ReportInput, incident_act, report_submit
grid_worker = User.objects.get(username="grid01"); operator = User.objects.get(username="operator")
lon, lat = {lon}, {lat}
incident = report_submit(reporter=grid_worker, data=ReportInput(category="AC01", description="kill -9",
                         lon=lon, lat=lat), idempotency_key=uuid.uuid4().hex).incident
incident_act(incident_id=incident.pk, actor=operator, action="accept")
with transaction.atomic():
    # Registered first, so it runs right after COMMIT and before the push that publish() queued.
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    incident_act(incident_id=incident.pk, actor=operator, action="register")
"""


def test_process_killed_between_commit_and_publish_loses_nothing(tmp_path, demo_city):
    grid = first_grid_of("grid01")
    department = _fire_department_of(grid)
    lon, lat = point_in(grid)
    with daphne(tmp_path, env={"BACKGROUND_IN_PROCESS": "1"}) as server:
        client = StreamClient(server.url, token_for(server.url, department))
        from tests.support.servers import test_database_url

        env = dict(os.environ, DATABASE_URL=test_database_url(), BACKGROUND_IN_PROCESS="0")
        done = subprocess.run(
            [sys.executable, "-c", KILL_SCRIPT.format(lon=lon, lat=lat)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        # Written as published (the dead process meant to push it after commit): the relay has nothing
        # to do, and the server's hub must notice that the socket is behind its feed.
        assert not Event.objects.filter(name="order.created", published_at__isnull=True).exists()
        events = client.collect(lambda ev: len(_orders_created(ev)) >= 1, timeout=15)
        assert _orders_created(events)[0]["data"]["department"] == department
        client.close()


def test_a_push_lost_with_nothing_after_it_still_arrives(tmp_path, demo_city, monkeypatch):
    """Redis pub/sub dropped the only push (a subscriber was reconnecting), and no later event follows."""
    import realtime.publish

    department = User.objects.get(username=_fire_department_of(first_grid_of("grid01")))

    def lost(event_ids: list[int], **kwargs: object) -> int:
        # What the pusher saw: the publish "succeeded", so the events count as pushed; nobody got them.
        return Event.objects.filter(pk__in=event_ids).update(published_at=timezone.now())

    # No background relay in the server: it is the hub that must notice the socket is behind.
    with daphne(tmp_path, env={"BACKGROUND_IN_PROCESS": "0"}) as server:
        client = StreamClient(server.url, token_for(server.url, department.username))

        def warn(n: int) -> None:
            with transaction.atomic():
                publish(
                    name="warning.issued",
                    recipients=[department.pk],
                    data={
                        "id": n,
                        "level": "red",
                        "type": "台风",
                        "headline": f"预警 {n}",
                        "status": "issued",
                    },
                )

        def warnings(events: list[dict]) -> list[str]:
            return [e["data"]["headline"] for e in events if e["event"] == "warning.issued"]

        warn(1)  # pushed as usual: the socket is live
        client.collect(lambda ev: len(warnings(ev)) >= 1, timeout=15)
        monkeypatch.setattr(realtime.publish, "push_events", lost)
        warn(2)
        assert not Event.objects.filter(published_at__isnull=True).exists(), "the relay has nothing to do"
        got = client.collect(lambda ev: len(warnings(ev)) >= 2, timeout=15)
        assert warnings(got) == ["预警 1", "预警 2"]
        client.close()


@pytest.mark.slow
def test_idle_clients_longer_than_60_seconds_still_get_a_broadcast(tmp_path, demo_city):
    users = list(User.objects.filter(role="department").order_by("username")[:40])
    with daphne(tmp_path) as server:
        clients = [StreamClient(server.url, token_for(server.url, u.username)) for u in users]
        time.sleep(65)
        with transaction.atomic():
            publish(
                name="warning.issued",
                recipients=[u.pk for u in users],
                data={
                    "id": 1,
                    "level": "orange",
                    "type": "暴雨",
                    "headline": "暴雨橙色预警",
                    "status": "issued",
                },
            )
        for client in clients:
            got = client.collect(lambda ev: any(e["event"] == "warning.issued" for e in ev), timeout=20)
            assert got[-1]["data"]["headline"] == "暴雨橙色预警"
            client.close()


def test_read_receipt_over_the_websocket(tmp_path, demo_city):
    """`read` (no request id) and `warning.read` mark the receipt read; a non-recipient is refused."""
    from command.models import WarningReceipt
    from tests.security.world import _issue_warning

    worker = User.objects.filter(role="grid_worker", grids__isnull=False).order_by("username").first()
    assert worker is not None
    warning_id = _issue_warning(worker.grids.order_by("code").first().code)
    receipt = WarningReceipt.objects.get(warning_id=warning_id, user=worker)
    assert receipt.read_at is None
    recipients = WarningReceipt.objects.filter(warning_id=warning_id).values_list("user_id", flat=True)
    outsider_user = User.objects.filter(role="grid_worker").exclude(pk__in=list(recipients)).first()
    assert outsider_user is not None
    with daphne(tmp_path) as server:
        client = StreamClient(server.url, token_for(server.url, worker.username))
        client.ws.send(json.dumps({"type": "read", "warning_id": warning_id}))
        result = client.recv_type("result")
        assert result["ok"] is True and result["warning_id"] == warning_id, result
        receipt.refresh_from_db()
        assert receipt.read_at is not None and receipt.read_source == Source.WEBSOCKET
        again = client.action("warning.read", warning_id=warning_id)
        assert again["ok"] is True and again["read_at"] == result["read_at"], "the first read counts"
        bad = client.action("warning.read", warning_id="x")
        assert bad["ok"] is False and bad["status"] == 400 and "warning_id" in bad["error"]
        client.close()
        other = StreamClient(server.url, token_for(server.url, outsider_user.username))
        hidden = other.action("warning.read", warning_id=warning_id)
        assert hidden["ok"] is False and hidden["status"] == 404
        other.close()


def test_project_root_is_where_daphne_runs():
    assert (Path(ROOT) / "manage.py").exists()
