"""A real websocket client of /ws/stream/ (the `websockets` library), for tests against real daphne."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def api(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A JSON request to the product's REST API over real HTTP."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def token_for(base: str, username: str) -> str:
    """A bearer token for a demo user."""
    status, body = api(
        base, "POST", "/api/v1/auth/token/", body={"username": username, "password": "demo-pass-2026"}
    )
    assert status == 200, body
    return str(body["token"])


class StreamClient:
    """A phone-style client: ticket auth, hello, collect events, ack."""

    def __init__(self, base: str, token: str, *, resume_from: int = 0, hello: bool = True) -> None:
        self.base = base
        status, body = api(base, "POST", "/api/v1/ws-tickets/", token=token)
        assert status == 201, body
        ws_url = base.replace("http://", "ws://") + "/ws/stream/"
        # No client keepalive: the server pings (daphne), and on a loaded 2-core CI machine a 20 s client
        # ping timeout closed sockets of tests that deliberately read nothing for a while.
        self._connect = connect(ws_url, open_timeout=10, max_size=2**22, ping_interval=None)
        self.ws: ClientConnection = self._connect.__enter__()
        self.ws.send(json.dumps({"type": "auth", "ticket": body["ticket"]}))
        self.welcome = self.recv_type("welcome")
        self.events: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []
        if hello:
            self.hello(resume_from)

    def hello(self, resume_from: int) -> None:
        self.ws.send(json.dumps({"type": "hello", "resume_from": resume_from}))

    def recv(self, timeout: float = 10) -> dict[str, Any]:
        return dict(json.loads(self.ws.recv(timeout=timeout)))

    def recv_type(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return message
            if message["type"] == "event":
                self.events.append(message)
            else:
                self.other.append(message)

    def collect(self, predicate: Any, timeout: float = 20, ack: bool = True) -> list[dict[str, Any]]:
        """Receive until predicate(events) is true; acknowledge as we go."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out with {len(self.events)} events; other: {self.other[-3:]}")
            try:
                message = self.recv(remaining)
            except TimeoutError:
                continue
            if message["type"] == "event":
                self.events.append(message)
                if ack:
                    self.ack(message["seq"])
            else:
                self.other.append(message)
        return self.events

    def ack(self, seq: int) -> None:
        self.ws.send(json.dumps({"type": "ack", "seq": seq}))

    def action(self, action: str, **fields: Any) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        self.ws.send(json.dumps({"type": "action", "request_id": request_id, "action": action, **fields}))
        deadline = time.monotonic() + 20
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == "result" and message["request_id"] == request_id:
                return message
            if message["type"] == "event":
                self.events.append(message)
                self.ack(message["seq"])
            else:
                self.other.append(message)

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.ws.close()

    def closed_code(self, timeout: float = 10) -> int | None:
        """Wait until the server closes the socket; return the close code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None


async def open_stream(ticket: str) -> tuple[Any, dict[str, Any]]:
    """An in-process stream socket (channels' WebsocketCommunicator): authenticated by ticket, hello sent
    from its head. Returns the communicator and the welcome message."""
    from channels.testing import WebsocketCommunicator

    from realtime.consumers import StreamConsumer

    client = WebsocketCommunicator(StreamConsumer.as_asgi(), "/ws/stream/")
    connected, _ = await client.connect()
    assert connected
    await client.send_to(text_data=json.dumps({"type": "auth", "ticket": ticket}))
    welcome = await client.receive_json_from(timeout=10)
    await client.send_to(text_data=json.dumps({"type": "hello", "resume_from": welcome["head"]}))
    return client, welcome
