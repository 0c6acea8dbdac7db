"""The early warning page in headless Chromium: no script the CSP blocks, live coverage, the cancel action.

The operator opens an issued warning's page; a recipient reads the warning and the page's coverage
counts climb without a reload; the operator cancels it through the page's own button (with a reason in
the browser's prompt) and the page shows it cancelled. Any Content-Security-Policy violation fails.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, off_loop, sign_in, wait_until
from tests.support.servers import daphne

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_warning_page_runs_under_the_csp_and_updates_coverage(
    tmp_path: Any, demo_city: Any, browser: Any
) -> None:
    from command.models import EarlyWarning, User, WarningReceipt
    from command.warnings import warning_mark_read
    from tests.security.world import _issue_warning

    worker = User.objects.filter(role="grid_worker", grids__isnull=False).order_by("username").first()
    assert worker is not None
    grid = worker.grids.order_by("code").values_list("code", flat=True).first()
    assert grid is not None
    warning_id = off_loop(_issue_warning, grid)
    recipients = WarningReceipt.objects.filter(warning_id=warning_id).count()
    assert recipients > 1

    with daphne(tmp_path) as server:
        context = browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
        try:
            sign_in(context, server.url, "operator")
            page = context.new_page()
            violations: list[str] = []
            page.on(
                "console",
                lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
            )
            page.on("pageerror", lambda error: violations.append(f"page error: {error}"))
            page.goto(f"{server.url}/command/warnings/{warning_id}/")
            assert page.inner_text("#coverage-total [data-k=recipients]") == str(recipients)
            assert page.inner_text("#coverage-total [data-k=read]") == "0"

            off_loop(warning_mark_read, warning_id=warning_id, user=worker)
            # The page refreshes its figures by itself (the script is a static file the CSP allows).
            wait_until(
                page,
                "document.querySelector('#coverage-total [data-k=read]').textContent === '1'",
                timeout=30,
            )
            assert page.inner_text("#refreshed-at") != ""

            page.once("dialog", lambda dialog: dialog.accept("演练结束"))
            with page.expect_navigation(timeout=20000):
                page.click("button[data-action=cancel]")
            assert page.locator("button[data-action=cancel]").count() == 0
            assert not violations, violations
        finally:
            context.close()
    warning = EarlyWarning.objects.get(pk=warning_id)
    assert warning.status == "cancelled"
