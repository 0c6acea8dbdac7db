"""A wrong DATABASE_URL or REDIS_URL stops the product at start with one line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import DAPHNE, free_port

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.pop("YJLD_SKIP_PREFLIGHT", None)
    full.update(env)
    return subprocess.run(args, cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)


def _assert_one_line(done: subprocess.CompletedProcess[str], setting: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {setting}: cannot use "), lines[0]


@pytest.mark.embedded
def test_unreachable_database_url_is_one_line():
    port = free_port()
    done = _run(
        [sys.executable, "manage.py", "migrate"], DATABASE_URL=f"postgres://nobody:secret@127.0.0.1:{port}/x"
    )
    _assert_one_line(done, "DATABASE_URL")
    assert "secret" not in done.stderr  # the password is redacted


@pytest.mark.embedded
def test_unreachable_redis_url_is_one_line(tmp_path):
    done = _run(
        [sys.executable, "manage.py", "migrate"],
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    _assert_one_line(done, "REDIS_URL")


@pytest.mark.embedded
def test_daphne_start_with_unreachable_redis_is_one_line(tmp_path):
    done = _run(
        [DAPHNE, "-p", str(free_port()), "config.asgi:application"],
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    _assert_one_line(done, "REDIS_URL")


@pytest.mark.embedded
def test_daphne_start_with_malformed_gc_thresholds_is_one_line(tmp_path):
    done = _run(
        [DAPHNE, "-p", str(free_port()), "config.asgi:application"],
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        REDIS_URL="",
        GC_THRESHOLDS="50000,twenty,10",
    )
    _assert_one_line(done, "GC_THRESHOLDS")
    assert "three comma-separated whole numbers" in done.stderr


@pytest.mark.embedded
@pytest.mark.parametrize(
    ("setting", "skip_preflight", "expected"),
    [("", "0", "(50000, 20, 10)"), ("12345,11,9", "0", "(12345, 11, 9)"), ("", "1", "(50000, 20, 10)")],
)
def test_a_server_process_collects_its_young_generation_less_often(
    tmp_path, setting, skip_preflight, expected
):
    """What daphne loads (config.asgi) sets the collector's thresholds; a plain Django process does not."""
    show = "import gc; print(gc.get_threshold())"
    server = _run(
        [sys.executable, "-c", f"import config.asgi; {show}"],
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        REDIS_URL="",
        GC_THRESHOLDS=setting,
        YJLD_SKIP_PREFLIGHT=skip_preflight,
    )
    assert server.returncode == 0, server.stderr
    assert server.stdout.strip().splitlines()[-1] == expected
    plain = _run(
        [sys.executable, "-c", f"import django; django.setup(); {show}"],
        DJANGO_SETTINGS_MODULE="config.settings.base",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        GC_THRESHOLDS=setting,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "(700, 10, 10)"
