"""The whole story in a real browser: an offline report reaches the map, is dispatched, rings, is signed.

A grid worker's phone goes offline, a report with a photo waits in the outbox (and survives a reload
from the service worker), the network returns and it is sent with its Idempotency-Key; the incident
appears on the command centre's map without a reload; the operator accepts, registers (grade Ⅱ: the
alert sounds) and dispatches from the dialog that shows the rule's proposal and recommended units;
the department's inbox rings and shows the order; the department signs; the command centre sees
"signed" live; the department completes the order with a photo from the dialog, and the command
centre sees it completed with the report's and the completion's photos, served by the API.
Screenshots of the three consoles go to docs/screenshots/.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from command.demo import DISTRICT_SLUGS
from command.models import OrderPhoto, User
from command.warnings import warning_act, warning_create
from gis.models import TerritoryUnit
from incidents.models import Incident, Report
from tests.browser.conftest import jpeg_photo, off_loop, screenshot, wait_until
from tests.support.factories import first_grid_of, point_in
from tests.support.servers import daphne

pytestmark = [pytest.mark.django_db(transaction=True)]

LIVE = 20000  # ms: anything live must show well within this


@pytest.mark.slow
def test_offline_report_to_signed_order(tmp_path, demo_city, open_console):
    grid = first_grid_of("grid01")
    lon, lat = point_in(grid)
    police = f"police_{DISTRICT_SLUGS[grid[:6]]}"
    # Uploaded photos go to the test's folder, not var/media.
    with daphne(tmp_path, env={"MEDIA_ROOT": str(tmp_path / "media")}) as server:
        base = server.url
        centre = open_console(base, "operator", "/command/")
        centre.evaluate("window.__sameDocument = true")
        inbox = open_console(base, police, "/dept/")
        phone = open_console(
            base,
            "grid01",
            "/m/",
            phone=True,
            permissions=["geolocation"],
            geolocation={"longitude": lon, "latitude": lat, "accuracy": 8},
        )
        assert phone.evaluate("async () => !!(await navigator.serviceWorker.ready).active")

        # --- a yellow rain warning over the worker's community reaches the phone and the map live
        community = TerritoryUnit.objects.get(layer="grid", code=grid).parent.code
        warning = off_loop(issue_warning, community)
        phone.wait_for_selector(f'#warning-list li[data-warning="{warning}"].unread', timeout=LIVE)
        centre.wait_for_selector('#map[data-warnings="1"]', timeout=LIVE)
        phone.click(f'#warning-list li[data-warning="{warning}"] button')
        phone.wait_for_selector(f'#warning-list li[data-warning="{warning}"]:not(.unread)')

        # --- the phone goes offline and reports with a photo
        phone.context.set_offline(True)
        phone.wait_for_selector("#conn[data-state=offline]")
        phone.click("#locate")
        wait_until(phone, "document.getElementById('lon').value !== ''")
        phone.select_option("#category", "SS01")
        phone.fill("#description", "小区门口聚集约三十人，情绪激动")
        phone.set_input_files(
            "#photos", files=[{"name": "scene.jpg", "mimeType": "image/jpeg", "buffer": jpeg_photo()}]
        )
        phone.click("#submit-report")
        queued = phone.locator("#mine-list li.report").first
        queued.wait_for()
        assert queued.get_attribute("data-state") == "queued"
        assert "等待网络" in queued.inner_text()
        key = queued.get_attribute("data-key")
        assert Report.objects.count() == 0

        # The page opens offline from the service worker; the report is still in the outbox.
        phone.reload()
        phone.wait_for_selector(f'#mine-list li[data-key="{key}"][data-state=queued]')

        # --- the network returns: the report is sent with its Idempotency-Key
        phone.context.set_offline(False)
        sent = phone.locator(f'#mine-list li[data-key="{key}"][data-state=sent]')
        sent.wait_for(timeout=LIVE)
        incident_id = int(sent.get_attribute("data-incident"))
        report = Report.objects.get(incident_id=incident_id)
        assert report.idempotency_key == key
        assert report.photos.count() == 1
        assert Incident.objects.filter(grid_code=grid).count() == 1

        # --- the incident appears on the command centre's map and queue, without a reload
        centre.wait_for_selector(f"path.inc-{incident_id}", timeout=LIVE)
        item = f'#queue li[data-id="{incident_id}"]'
        centre.wait_for_selector(item)
        assert centre.evaluate("window.__sameDocument") is True
        centre.click(f"{item} .incident-head")
        centre.wait_for_selector("#detail-body .detail-head")

        # --- accept, register (grade Ⅱ rings the alert), dispatch from the dialog
        centre.click(f"{item} button[data-action=accept]")
        centre.wait_for_selector(f'{item}[data-status="accepted"]')
        centre.click(f"{item} button[data-action=register]")
        centre.select_option("dialog select[name=grade]", "II")
        centre.click("dialog button[type=submit]")
        centre.wait_for_selector(f'{item}[data-status="registered"]')
        centre.wait_for_selector(f'#severe-alerts .severe[data-incident="{incident_id}"]', timeout=LIVE)
        assert int(centre.evaluate("document.body.dataset.rings")) >= 1

        centre.click(f"{item} button[data-action=dispatch]")
        centre.wait_for_selector("dialog #dispatch-proposal")
        assert "公安" in centre.inner_text("dialog #dispatch-proposal")
        assert centre.locator("dialog select[name=lead]").input_value() == police
        centre.wait_for_selector("dialog #recommended-units li")
        screenshot(centre, "command-centre-dispatch")
        centre.click("dialog button[type=submit]")
        centre.wait_for_selector("#detail-orders li", timeout=LIVE)

        # --- the department's inbox rings and shows the order
        card = ", ".join(f'#open-orders li[data-order][data-status="{s}"]' for s in ("issued", "delivered"))
        inbox.wait_for_selector(card, timeout=LIVE)
        inbox.wait_for_selector("#ringing:not([hidden])")
        assert int(inbox.evaluate("document.body.dataset.rings")) >= 1
        order_id = int(inbox.locator(card).first.get_attribute("data-order"))
        inbox.wait_for_selector(f'li[data-order="{order_id}"][data-full="true"]')
        screenshot(inbox, "department-inbox")

        # --- the department signs; the command centre sees it live
        inbox.click(f'li[data-order="{order_id}"] button[data-action=sign]')
        inbox.wait_for_selector(f'li[data-order="{order_id}"][data-status="signed"]')
        signed = f'#detail-orders li[data-order="{order_id}"] .status-signed'
        centre.wait_for_selector(signed, timeout=LIVE)
        assert centre.inner_text(signed) == "已签收"
        assert centre.evaluate("window.__sameDocument") is True
        centre.click("[data-filter=working]")
        centre.wait_for_selector(f"{item} .chip.order-signed")
        screenshot(centre, "command-centre")

        # The reporter's phone follows its report's status live too.
        phone.wait_for_selector(
            f'#mine-list li[data-key="{key}"] .status:not(.status-reported)', timeout=LIVE
        )
        phone.evaluate("window.scrollTo(0, 0)")
        screenshot(phone, "grid-worker-phone", full_page=True)

        # --- the department completes with a photo (multipart, with the CSRF token of the session)
        inbox.click(f'li[data-order="{order_id}"] button[data-action=complete]')
        inbox.fill("dialog textarea[name=note]", "人群已疏散，现场恢复秩序")
        inbox.set_input_files(
            "dialog input[name=photos]",
            files=[{"name": "done.jpg", "mimeType": "image/jpeg", "buffer": jpeg_photo(320, 240)}],
        )
        inbox.click("dialog button[type=submit]")
        done = f'li[data-order="{order_id}"][data-status="completed"]'
        inbox.wait_for_selector(done, state="attached", timeout=LIVE)
        inbox.click("details.done-list summary")  # finished orders are folded away
        assert (
            OrderPhoto.objects.filter(progress__order_id=order_id, progress__kind="completion").count() == 1
        )
        loaded = (
            "(s) => [...document.querySelectorAll(s)].filter((i) => i.complete && i.naturalWidth > 0).length"
        )
        wait_until(inbox, f"({loaded})('{done} .photos img') === 1")
        # The command centre sees it live, with the report's photo and the completion's, both loaded.
        centre.wait_for_selector(
            f'#detail-orders li[data-order="{order_id}"] .status-completed', timeout=LIVE
        )
        wait_until(centre, f"({loaded})('#detail-orders .photos img') === 1")
        wait_until(centre, f"({loaded})('#detail-body .photos img') === 2")


def issue_warning(community: str) -> int:
    """Draft and issue a yellow rainstorm warning over one community (yellow needs no approval)."""
    operator = User.objects.get(username="operator")
    warning = warning_create(
        actor=operator,
        payload={
            "level": "yellow",
            "type": "暴雨",
            "headline": "暴雨黄色预警",
            "description": "未来3小时内可能出现50毫米以上降雨。",
            "instructions": "请巡查低洼地段和地下通道，发现积水及时上报。",
            "area": {"units": [{"layer": "community", "code": community}]},
            "expires": (timezone.now() + timedelta(hours=6)).isoformat(),
        },
    )
    warning_act(warning_id=warning.pk, actor=operator, action="issue")
    return warning.pk
