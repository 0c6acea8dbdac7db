"""Real servers for integration tests: daphne processes on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
DAPHNE = str(Path(sys.executable).with_name("daphne"))


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database the tests are using right now (the test_ database, not the base one)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


@dataclass
class Server:
    """A running daphne process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def daphne(
    tmp_path: Path, *, env: dict[str, str] | None = None, wait: bool = True, port: int | None = None
) -> Iterator[Server]:
    """Run the product's ASGI app in a real daphne process against the test database.

    `port` reuses a given port (a restart of "the same" server); by default a free one is chosen.
    """
    port = port or free_port()
    full_env = dict(os.environ)
    full_env.update({"DATABASE_URL": test_database_url(), "PYTHONUNBUFFERED": "1"})
    if settings.REDIS_URL:
        full_env["REDIS_URL"] = settings.REDIS_URL
    full_env.update(env or {})
    log = tmp_path / f"daphne-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=log)
    try:
        if wait:
            wait_http(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(server: Server, path: str = "/healthz", timeout: float = 30.0) -> None:
    """Wait until the server answers HTTP at path (any status), or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"daphne exited ({server.process.returncode}):\n{server.log.read_text()}")
        try:
            urllib.request.urlopen(server.url + path, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not answer within {timeout}s:\n{server.log.read_text()}")
