"""Browser fixtures: Debian's headless Chromium driven by Playwright, signed-in contexts, screenshots.

Chromium comes from the Debian package (`make browser-deps`), never from `playwright install`. A
missing browser fails the run with the command to fix it: it never turns into skipped tests.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # The consoles ring on new orders and grade Ⅰ/Ⅱ incidents; a real user has clicked first.
    "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "demo-pass-2026"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium for the module's tests."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make browser-deps` "
            "(installs the Debian package 'chromium'), or set CHROMIUM_PATH"
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread while the tests use the ORM
    # (to make data and read it back), which Django would refuse; the ORM calls here are plain sync.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield launched
            finally:
                launched.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def off_loop(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run service code in a worker thread and return its result.

    Services publish events after commit through the channel layer's async_to_sync, which cannot run
    in a thread where Playwright's event loop is running (the push would be left to the relay, which
    only the embedded default runs inside daphne).
    """

    def call() -> Any:
        from django.db import connections

        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def wait_until(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy (page.wait_for_function evaluates strings, which
    the pages' Content-Security-Policy forbids; page.evaluate goes through the DevTools protocol)."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        page.wait_for_timeout(100)


def sign_in(context: Any, base: str, username: str) -> None:
    """Sign a browser context in through the login form (the session cookie is the context's)."""
    page = context.new_page()
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login/" not in page.url, f"{username} could not sign in"
    page.close()


@pytest.fixture
def open_console(browser: Any) -> Iterator[Callable[..., Any]]:
    """Return open(base, username, path, phone=False, **context options) → a signed-in page."""
    contexts: list[Any] = []

    def open_(base: str, username: str, path: str, *, phone: bool = False, **options: Any) -> Any:
        settings: dict[str, Any] = {
            "viewport": PHONE if phone else DESKTOP,
            "locale": "zh-CN",
            "timezone_id": "Asia/Shanghai",
        }
        if phone:
            settings.update(is_mobile=True, has_touch=True)
        settings.update(options)
        context = browser.new_context(**settings)
        contexts.append(context)
        sign_in(context, base, username)
        page = context.new_page()
        page.on("pageerror", lambda error: print(f"[{username}] page error: {error}"))
        page.goto(base + path)
        page.wait_for_selector("body[data-loaded=true]", timeout=30000)
        page.wait_for_selector("#conn[data-state=live]", timeout=30000)
        return page

    yield open_
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot under docs/screenshots/ (shown in the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def jpeg_photo(width: int = 640, height: int = 480) -> bytes:
    """A small real JPEG (what a phone camera would hand the page)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (90, 110, 130))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 4, height // 3, 3 * width // 4, height - 20], fill=(200, 60, 40))
    draw.ellipse([20, 20, 120, 120], fill=(250, 220, 90))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()
