"""Early warnings: drafting, the two-person rule, recipients from the area, updates, cancels, receipts,
coverage, expiry, automatic cluster rules and the warning's page."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import geopandas as gpd
import pytest
import shapely
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from command.cap import issuer_code
from command.models import (
    Department,
    EarlyWarning,
    User,
    WarningLogRecord,
    WarningReceipt,
    WarningRule,
    WarningRuleFiring,
)
from command.services import user_create
from command.warnings import (
    WarningActionRefused,
    auto_warnings_tick,
    warning_approve,
    warning_cancel,
    warning_coverage,
    warning_create,
    warning_identifier,
    warning_issue,
    warning_mark_delivered,
    warning_update,
    warnings_delivered_on_ack,
    warnings_tick,
)
from command.warnings_urls import page_urlpatterns
from config.urls import urlpatterns as site_urlpatterns
from gis.models import TerritoryUnit
from incidents.models import Category, Incident
from incidents.services import ActionError, ReportInput, report_submit
from realtime.models import Event, FeedEntry
from tests.support.factories import first_grid_of, point_in

pytestmark = [pytest.mark.django_db]

# The page is mounted by command/urls.py once the lead wires it; the tests mount it themselves.
urlpatterns = [*page_urlpatterns, *site_urlpatterns]


def blob(lon: float, lat: float, radius_m: float, *, sides: int = 7, turn: float = 0.3) -> list[list[float]]:
    """An irregular polygon around a point (deliberately not aligned with any unit's edges)."""
    ring = []
    for k in range(sides):
        angle = turn + 2 * math.pi * k / sides
        r = radius_m * (1.0 + 0.25 * math.sin(3 * angle))
        dx = r * math.cos(angle) / (111_320.0 * math.cos(math.radians(lat)))
        dy = r * math.sin(angle) / 110_574.0
        ring.append([lon + dx, lat + dy])
    ring.append(ring[0])
    return ring


def payload(level: str = "yellow", area: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    lon, lat = point_in(first_grid_of("grid01"))
    return {
        "level": level,
        "type": "暴雨",
        "headline": f"{level} rainstorm warning",
        "description": "强降雨",
        "instructions": "注意防范",
        "area": area or {"polygons": [blob(lon + 0.004, lat - 0.003, 2500)]},
        "expires": (timezone.now() + timedelta(hours=6)).isoformat(),
        **extra,
    }


def user(name: str) -> User:
    return User.objects.get(username=name)


def second_commander() -> User:
    centre = Department.objects.get(code="command_centre")
    return user_create(username="commander2", role="commander", department=centre, password="x")


def receipt_users(warning: EarlyWarning) -> set[int]:
    return set(WarningReceipt.objects.filter(warning=warning).values_list("user_id", flat=True))


def event_recipients(warning: EarlyWarning, name: str) -> set[int]:
    event = Event.objects.filter(name=name, data__id=warning.pk).order_by("-pk").first()
    assert event is not None, f"no {name} event"
    return set(FeedEntry.objects.filter(event=event).values_list("user_id", flat=True))


def expected_recipients(area: shapely.Geometry) -> set[int]:
    """The rule of PRODUCT.md worked out independently with a geopandas overlay in UTM zone 50N."""
    rows = list(TerritoryUnit.objects.values_list("pk", "layer", "geometry_wkb"))
    units = gpd.GeoDataFrame(
        {"pk": [r[0] for r in rows], "layer": [r[1] for r in rows]},
        geometry=[shapely.from_wkb(bytes(r[2])) for r in rows],
        crs="EPSG:4326",
    ).to_crs("EPSG:32650")
    units["unit_m2"] = units.area
    warning_area = gpd.GeoDataFrame(geometry=[area], crs="EPSG:4326").to_crs("EPSG:32650")
    hit = gpd.overlay(units, warning_area, how="intersection", keep_geom_type=True)
    # A share below one in a million is a shared-edge sliver, not coverage (gis.areas.MIN_SHARE).
    hit = hit[hit.area / hit["unit_m2"] > 1e-6]
    covered = set(hit["pk"].tolist())
    grids = set(hit.loc[hit["layer"] == "grid", "pk"].tolist())
    departments = set(
        Department.jurisdiction.through.objects.filter(
            territoryunit_id__in=covered, department__active=True
        ).values_list("department_id", flat=True)
    )
    staff = User.objects.filter(is_active=True, department_id__in=departments)
    workers = User.objects.filter(is_active=True, role="grid_worker", grids__in=grids)
    centre = User.objects.filter(is_active=True, role__in=["operator", "commander"])
    return {u for q in (staff, workers, centre) for u in q.values_list("pk", flat=True)}


# ------------------------------------------------------------------------------------ create, inputs


def test_create_checks_every_field_and_changes_nothing_on_error(client_for):
    api = client_for("operator")
    before = EarlyWarning.objects.count()
    lon, lat = point_in(first_grid_of("grid01"))
    bowtie = [[lon, lat], [lon + 0.02, lat + 0.01], [lon + 0.02, lat], [lon, lat + 0.02], [lon, lat]]
    far = [[10.0, 50.0], [10.1, 50.0], [10.1, 50.1], [10.0, 50.0]]
    swapped = [[lat, lon], [lat + 0.01, lon], [lat + 0.01, lon + 0.01], [lat, lon]]
    cases = [
        ({**payload(), "level": "purple"}, "level"),
        ({k: v for k, v in payload().items() if k != "headline"}, "headline"),
        ({**payload(), "expires": "tomorrow"}, "expires"),
        ({**payload(), "expires": (timezone.now() - timedelta(hours=1)).isoformat()}, "expires"),
        (payload(area={"polygons": [bowtie]}), "area.polygons[0]"),
        (payload(area={"polygons": [far]}), "area"),
        (payload(area={"polygons": [swapped]}), "area.polygons[0]"),
        (payload(area={"units": [{"layer": "district", "code": "999999"}]}), "area.units[0]"),
        (payload(area={"circles": [{"lon": lon, "lat": lat, "radius_m": -5}]}), "area.circles[0]"),
        (payload(area={"circles": [{"lon": lon, "lat": lat, "radius_m": 400_000}]}), "area"),
        (payload(area={"polygons": [], "circles": []}), "area"),
        (payload(area={"polygons": [blob(lon, lat, 900)], "crs": "mars"}), "area.crs"),
    ]
    for body, field in cases:
        response = api.post("/api/v1/warnings/", body, format="json")
        assert response.status_code == 400, (field, response.content)
        error = response.json()["error"]
        assert error["field"] == field, (field, error)
    self_intersection = api.post("/api/v1/warnings/", payload(area={"polygons": [bowtie]}), format="json")
    assert "Self-intersection" in self_intersection.json()["error"]["detail"]
    swapped_hint = api.post("/api/v1/warnings/", payload(area={"polygons": [swapped]}), format="json")
    assert "[lon, lat]" in swapped_hint.json()["error"]["detail"]
    too_big = api.post(
        "/api/v1/warnings/",
        payload(area={"circles": [{"lon": lon, "lat": lat, "radius_m": 400_000}]}),
        format="json",
    )
    assert "km²" in too_big.json()["error"]["detail"]
    assert EarlyWarning.objects.count() == before
    assert client_for("grid01").post("/api/v1/warnings/", payload(), format="json").status_code == 403


def test_create_accepts_gcj02_and_named_units(client_for):
    lon, lat = point_in(first_grid_of("grid01"))
    response = client_for("operator").post(
        "/api/v1/warnings/",
        payload(
            area={
                "polygons": [blob(lon, lat, 800)],
                "circles": [{"lon": lon + 0.02, "lat": lat, "radius_m": 500}],
                "units": [{"layer": "street", "code": TerritoryUnit.objects.filter(layer="street")[0].code}],
                "crs": "gcj02",
                "description": "测试区域",
            }
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "draft" and body["area"]["description"] == "测试区域"
    # GCJ-02 is shifted a few hundred metres from WGS-84 in Shenzhen; the stored ring is WGS-84.
    stored = body["area"]["spec"]["polygons"][0][0]
    given = blob(lon, lat, 800)[0]
    assert 0.002 < abs(stored[0] - given[0]) + abs(stored[1] - given[1]) < 0.02
    assert body["area"]["geojson"]["type"] in ("Polygon", "MultiPolygon")


# ------------------------------------------------------------------------ recipients, the key check


@pytest.mark.embedded
def test_issue_reaches_exactly_the_recipients_of_an_independent_overlay(client_for):
    api = client_for("operator")
    draft = api.post("/api/v1/warnings/", payload("blue"), format="json").json()
    issued = api.post(f"/api/v1/warnings/{draft['id']}/actions/", {"action": "issue"}, format="json")
    assert issued.status_code == 200, issued.content
    warning = EarlyWarning.objects.get(pk=draft["id"])
    assert warning.status == "issued" and warning.version == 1
    area = shapely.geometry.shape(issued.json()["area"]["geojson"])
    expected = expected_recipients(area)
    assert receipt_users(warning) == expected
    assert event_recipients(warning, "warning.issued") == expected
    # The test means something only if the area takes some grid workers and street offices and not others.
    workers = set(User.objects.filter(role="grid_worker").values_list("pk", flat=True))
    assert expected & workers and workers - expected
    streets = set(User.objects.filter(department__kind="street_office").values_list("pk", flat=True))
    assert expected & streets and streets - expected
    covered_worker = next(iter(expected & workers))
    reasons = WarningReceipt.objects.get(warning=warning, user_id=covered_worker).reasons
    assert "grid" in reasons or "department" in reasons
    identifier = warning_identifier(warning)
    assert identifier is not None and identifier.endswith(("_0", "_1", "_2"))
    log = WarningLogRecord.objects.filter(warning=warning, action="issue").get()
    assert log.actor == user("operator") and log.actor_role == "operator" and log.source == "api"
    assert (
        log.from_status == "draft" and log.to_status == "issued" and log.data["recipients"] == len(expected)
    )


def test_named_district_reaches_its_departments_and_not_others():
    warning = warning_create(
        actor=user("operator"),
        payload=payload("yellow", area={"units": [{"layer": "district", "code": "440308"}]}),
    )
    warning_issue(warning_id=warning.pk, actor=user("operator"))
    got = set(User.objects.filter(pk__in=receipt_users(warning)).values_list("username", flat=True))
    assert {"police_yantian", "fire_yantian", "medical_120", "operator", "commander"} <= got
    assert "police_futian" not in got
    coverage = warning_coverage(warning)
    assert [d["code"] for d in coverage["by_district"]] == ["440308"]


# ---------------------------------------------------------------------------------- two-person rule


def test_orange_needs_a_commander_who_did_not_draft_it(client_for):
    operator = client_for("operator")
    draft = operator.post("/api/v1/warnings/", payload("orange"), format="json").json()
    url = f"/api/v1/warnings/{draft['id']}/actions/"
    refused = operator.post(url, {"action": "issue"}, format="json")
    assert refused.status_code == 409 and "approval" in refused.json()["error"]["detail"]
    assert operator.post(url, {"action": "approve"}, format="json").status_code == 403
    # The drafter edits, a commander approves, the operator issues: two people.
    edited = operator.post(url, {"action": "update", "changes": {"headline": "橙色暴雨预警"}}, format="json")
    assert edited.status_code == 200 and edited.json()["status"] == "draft"
    approved = client_for("commander").post(url, {"action": "approve"}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert operator.post(url, {"action": "issue"}, format="json").json()["status"] == "issued"

    # A commander's own draft needs another commander; an edit after approval voids it.
    commander, other = user("commander"), second_commander()
    own = warning_create(actor=commander, payload=payload("red"))
    with pytest.raises(WarningActionRefused) as exc:
        warning_approve(warning_id=own.pk, actor=commander)
    assert exc.value.status == 403
    warning_approve(warning_id=own.pk, actor=other)
    warning_update(warning_id=own.pk, actor=commander, changes={"description": "更新"})
    own.refresh_from_db()
    assert own.status == "draft" and own.approved_by is None
    with pytest.raises(WarningActionRefused):
        warning_issue(warning_id=own.pk, actor=user("operator"))
    actions = list(WarningLogRecord.objects.filter(warning=own).values_list("action", "to_status"))
    assert actions == [("create", "draft"), ("approve", "approved"), ("edit", "draft")]


@pytest.mark.embedded
def test_one_flush_of_many_recipients_acks_marks_their_receipts_in_one_update():
    operator = user("operator")
    warning = warning_create(actor=operator, payload=payload("yellow"))
    warning_issue(warning_id=warning.pk, actor=operator)
    recipients = sorted(receipt_users(warning))
    assert len(recipients) >= 4
    acked, late, silent = recipients[:-2], recipients[-2], recipients[-1]
    issued = ("warning.issued", {"id": warning.pk, "version": 1})
    acks = {u: [issued, ("incident.updated", {"id": 1})] for u in acked}
    acks[late] = [("warning.issued", {"id": warning.pk, "version": 0})]  # an older version's ack
    with CaptureQueriesContext(connection) as queries:
        warnings_delivered_on_ack(acks)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2, "one UPDATE per warning version, not one per recipient"
    delivered = set(
        WarningReceipt.objects.filter(warning=warning, delivered_at__isnull=False).values_list(
            "user_id", flat=True
        )
    )
    assert delivered == set(acked), (late, silent)


# ------------------------------------------------------------------------------- update, cancel


@pytest.mark.embedded
def test_update_reaches_the_same_recipients_and_the_newly_covered():
    operator = user("operator")
    lon, lat = point_in(first_grid_of("grid01"))
    first = {"polygons": [blob(lon, lat, 1500)]}
    warning = warning_create(actor=operator, payload=payload("yellow", area=first))
    warning_issue(warning_id=warning.pk, actor=operator)
    before = receipt_users(warning)
    reader = next(iter(before))
    assert warning_mark_delivered(warning.pk, reader, version=1)
    WarningReceipt.objects.filter(warning=warning, user_id=reader).update(read_at=timezone.now())

    moved = {"polygons": [blob(lon + 0.05, lat + 0.03, 1500)]}
    warning_update(warning_id=warning.pk, actor=operator, changes={"area": moved}, reason="雨带东移")
    warning.refresh_from_db()
    after = receipt_users(warning)
    assert warning.status == "updated" and warning.version == 2
    assert before < after, "everyone who had it keeps it, and the newly covered join"
    assert event_recipients(warning, "warning.updated") == after
    receipt = WarningReceipt.objects.get(warning=warning, user_id=reader)
    assert receipt.version == 2 and receipt.delivered_at is None and receipt.read_at is None
    log = WarningLogRecord.objects.filter(warning=warning, action="update").get()
    assert log.data["newly_covered"] == len(after - before) and log.reason == "雨带东移"
    assert log.data["previous_version_coverage"]["read"] == 1
    assert not warning_mark_delivered(warning.pk, reader, version=1), "a late ack of version 1 is ignored"

    # Raising a live warning to orange needs a commander other than the drafter.
    with pytest.raises(WarningActionRefused) as exc:
        warning_update(warning_id=warning.pk, actor=operator, changes={"level": "orange"})
    assert exc.value.status == 403
    warning_update(warning_id=warning.pk, actor=user("commander"), changes={"level": "orange"})
    warning.refresh_from_db()
    assert warning.level == "orange" and warning.approved_by == user("commander") and warning.version == 3
    with pytest.raises(ActionError) as nothing:
        warning_update(warning_id=warning.pk, actor=operator, changes={"level": "orange"})
    assert nothing.value.field == "changes"


def test_cancel_needs_a_reason_and_reaches_everyone(client_for):
    operator = user("operator")
    warning = warning_create(actor=operator, payload=payload("blue"))
    warning_issue(warning_id=warning.pk, actor=operator)
    url = f"/api/v1/warnings/{warning.pk}/actions/"
    api = client_for("operator")
    missing = api.post(url, {"action": "cancel"}, format="json")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "reason"
    done = api.post(url, {"action": "cancel", "reason": "降雨减弱"}, format="json")
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    warning.refresh_from_db()
    assert event_recipients(warning, "warning.cancelled") == receipt_users(warning)
    again = api.post(url, {"action": "cancel", "reason": "x"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["allowed"] == ["read"]
    # A draft cancelled before issue tells only the command centre.
    draft = warning_create(actor=operator, payload=payload("blue"))
    warning_cancel(warning_id=draft.pk, actor=operator, reason="重复")
    centre = set(User.objects.filter(role__in=["operator", "commander"]).values_list("pk", flat=True))
    assert event_recipients(draft, "warning.cancelled") == centre
    assert not WarningReceipt.objects.filter(warning=draft).exists()


# ----------------------------------------------------------------------------- receipts, coverage


def test_read_delivered_and_coverage_per_district_and_department(client_for):
    operator = user("operator")
    warning = warning_create(actor=operator, payload=payload("yellow"))
    warning_issue(warning_id=warning.pk, actor=operator)
    worker = User.objects.filter(pk__in=receipt_users(warning), role="grid_worker").first()
    assert worker is not None
    warnings_delivered_on_ack({worker.pk: [("warning.issued", {"id": warning.pk, "version": 1})]})
    receipt = WarningReceipt.objects.get(warning=warning, user=worker)
    assert receipt.delivered_at is not None and receipt.read_at is None
    response = client_for(worker.username).post(
        f"/api/v1/warnings/{warning.pk}/actions/", {"action": "read"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["my_receipt"]["read_at"] is not None
    total = len(receipt_users(warning))
    coverage = warning_coverage(warning)
    assert coverage["recipients"] == total and coverage["delivered"] == 1 and coverage["read"] == 1
    assert coverage["read_share"] == round(1 / total, 4)
    district = next(d for d in coverage["by_district"] if d["code"] in receipt.districts)
    assert district["read"] == 1 and district["name"]
    department = next(d for d in coverage["by_department"] if d["code"] == worker.department.code)
    assert department["read"] == 1 and department["recipients"] >= 1

    detail = client_for("operator").get(f"/api/v1/warnings/{warning.pk}/").json()
    assert detail["coverage"]["read"] == 1 and len(detail["receipts"]) == total
    mine = next(r for r in detail["receipts"] if r["username"] == worker.username)
    assert mine["read_at"] and mine["department"] == worker.department.code

    outsider = User.objects.filter(role="grid_worker").exclude(pk__in=receipt_users(warning)).first()
    assert outsider is not None
    assert client_for(outsider.username).get(f"/api/v1/warnings/{warning.pk}/").status_code == 404
    seen = client_for(worker.username).get("/api/v1/warnings/").json()["results"]
    assert warning.pk in [w["id"] for w in seen]
    assert "receipts" not in client_for(worker.username).get(f"/api/v1/warnings/{warning.pk}/").json()


def test_expiry_tick_expires_once():
    operator = user("operator")
    warning = warning_create(actor=operator, payload=payload("blue"))
    warning_issue(warning_id=warning.pk, actor=operator)
    later = warning.expires_at + timedelta(seconds=1)
    assert warnings_tick(now=later) >= 1
    assert warnings_tick(now=later) == 0
    warning.refresh_from_db()
    assert warning.status == "expired" and warning.expired_at == later
    log = WarningLogRecord.objects.get(warning=warning, action="expire")
    assert log.source == "system" and log.actor is None and log.from_status == "issued"
    event = Event.objects.filter(name="warning.updated", data__id=warning.pk, data__action="expire").get()
    assert set(FeedEntry.objects.filter(event=event).values_list("user_id", flat=True)) == receipt_users(
        warning
    )


def test_identifiers_in_the_same_second_take_the_next_serial(time_machine):
    time_machine.move_to("2026-07-01T10:00:00+08:00", tick=False)
    operator = user("operator")
    first = warning_create(actor=operator, payload=payload("blue"))
    second = warning_create(actor=operator, payload=payload("blue"))
    warning_issue(warning_id=first.pk, actor=operator)
    warning_issue(warning_id=second.pk, actor=operator)
    first.refresh_from_db()
    second.refresh_from_db()
    assert warning_identifier(first) == f"{issuer_code()}_20260701100000_0"
    assert warning_identifier(second) == f"{issuer_code()}_20260701100000_1"


# ---------------------------------------------------------------------------------- automatic rules


def _report_in_block(block: str, category: str = "ND01") -> Incident:
    lon, lat = point_in(block, "block")
    data = ReportInput(category=category, description="路面积水严重", lon=lon, lat=lat)
    return report_submit(reporter=user("grid01"), data=data).incident


def test_cluster_rule_drafts_one_warning_per_cluster_and_alerts_the_centre():
    block = TerritoryUnit.objects.filter(layer="block").order_by("code")[7].code
    rule = WarningRule.objects.create(
        name="积水聚集",
        category=Category.objects.get(code="ND"),
        unit_layer="block",
        min_count=3,
        window_minutes=60,
        level="blue",
        warning_type="城市内涝",
        headline="{unit_name}{minutes}分钟内{count}起{category}报告",
    )
    rule.full_clean()
    for _ in range(2):
        _report_in_block(block)
    _report_in_block(block, category="UM02")  # another family does not count
    assert auto_warnings_tick() == 0
    _report_in_block(block)
    assert auto_warnings_tick() == 1
    assert auto_warnings_tick() == 0, "the same cluster is recorded once"
    firing = WarningRuleFiring.objects.get(rule=rule)
    assert firing.unit_code == block and len(firing.incident_ids) == 3
    warning = firing.warning
    assert warning is not None and warning.status == "draft" and warning.origin == "rule"
    assert warning.area_spec["units"] == [{"layer": "block", "code": block}]
    assert "60分钟内3起自然灾害报告" in warning.headline and warning.created_by is None
    centre = set(User.objects.filter(role__in=["operator", "commander"]).values_list("pk", flat=True))
    assert event_recipients(warning, "warning.updated") == centre
    log = WarningLogRecord.objects.get(warning=warning)
    assert (
        log.action == "auto_draft" and log.source == "system" and log.data["incidents"] == firing.incident_ids
    )
    # One more incident is not a new cluster; three fresh ones are.
    _report_in_block(block)
    assert auto_warnings_tick() == 0
    _report_in_block(block)
    _report_in_block(block)
    assert auto_warnings_tick() == 1
    assert WarningRuleFiring.objects.filter(rule=rule).count() == 2
    # An operator issues the blue draft.
    warning_issue(warning_id=warning.pk, actor=user("operator"))


def test_emerging_hotspot_rule_fires_only_where_the_window_beats_the_unit_history():
    """An emerging rule asks more than a count: three reports fire in a quiet block, not in a busy one."""
    blocks = TerritoryUnit.objects.filter(layer="block").order_by("code")
    quiet, busy = blocks[11].code, blocks[12].code
    rule = WarningRule.objects.create(
        name="积水突增",
        category=Category.objects.get(code="ND"),
        trigger="emerging",
        unit_layer="block",
        min_count=3,
        window_minutes=60,
        history_days=1,
        fdr=0.05,
        level="yellow",
        warning_type="城市内涝",
        headline="{unit_name}{minutes}分钟内{count}起，历史预期{expected}起",
    )
    rule.full_clean()
    now = timezone.now()
    # The busy block had twelve such incidents over the day before the window: three in an hour is usual.
    for hours in range(2, 14):
        incident = _report_in_block(busy)
        Incident.objects.filter(pk=incident.pk).update(reported_at=now - timedelta(hours=hours))
    for _ in range(3):
        _report_in_block(busy)
        _report_in_block(quiet)
    # An independent check of the statistic: λ = (h + ½)·W/H, p = P(X ≥ 3).
    busy_lambda = (12 + 0.5) / 24
    busy_p = 1 - math.exp(-busy_lambda) * (1 + busy_lambda + busy_lambda**2 / 2)
    assert busy_p > 0.01, "the busy block's p-value alone is above any FDR threshold over many blocks"

    assert auto_warnings_tick(now=now + timedelta(seconds=1)) == 1
    firing = WarningRuleFiring.objects.get(rule=rule)
    assert firing.unit_code == quiet and len(firing.incident_ids) == 3
    hotspot = WarningLogRecord.objects.get(warning=firing.warning).data["hotspot"]
    assert hotspot["history_count"] == 0 and hotspot["count"] == 3
    assert hotspot["expected"] == pytest.approx(0.5 / 24, rel=1e-3)
    assert hotspot["p_value"] < 1e-5 and hotspot["q_value"] <= 0.05
    assert firing.warning is not None and "历史预期0.0起" in firing.warning.headline
    assert firing.warning.level == "yellow" and firing.warning.origin == "rule"
    # A second quiet block bursts; emerging rules are evaluated once a minute (they read weeks of
    # history), so the tick 30 s later leaves it, the one two minutes later fires it — and only it.
    other_quiet = blocks[13].code
    for _ in range(3):
        _report_in_block(other_quiet)
    assert auto_warnings_tick(now=now + timedelta(seconds=30)) == 0, "not evaluated within the minute"
    assert auto_warnings_tick(now=now + timedelta(minutes=2)) == 1, "the new cluster; the first not again"
    fired = set(WarningRuleFiring.objects.filter(rule=rule).values_list("unit_code", flat=True))
    assert fired == {quiet, other_quiet}

    # The same data under a plain threshold rule fires for all three: the hotspot test made the difference.
    rule.trigger = "threshold"
    rule.save()
    WarningRuleFiring.objects.filter(rule=rule).delete()
    assert auto_warnings_tick(now=now + timedelta(minutes=3)) == 3


def test_emerging_rule_checks_its_statistics_settings():
    rule = WarningRule(
        name="x",
        category=Category.objects.get(code="ND"),
        trigger="emerging",
        min_count=3,
        window_minutes=24 * 60,
        history_days=1,
        fdr=0.9,
        warning_type="t",
        headline="{unit_name}: {ratio}",
    )
    with pytest.raises(Exception) as exc:
        rule.full_clean()
    assert "history_days" in str(exc.value) and "fdr" in str(exc.value) and "headline" not in str(exc.value)


def test_rule_checks_its_template():
    rule = WarningRule(
        name="x",
        category=Category.objects.get(code="ND"),
        min_count=1,
        window_minutes=10,
        warning_type="t",
        headline="{nope}",
    )
    with pytest.raises(Exception) as exc:
        rule.full_clean()
    assert "min_count" in str(exc.value) and "headline" in str(exc.value)


# ------------------------------------------------------------------------------------------- page


@pytest.mark.urls("tests.command.test_warnings")
def test_warning_page_in_chinese_with_coverage():
    operator = user("operator")
    warning = warning_create(actor=operator, payload=payload("orange"))
    browser = Client()
    browser.force_login(operator)
    page = browser.get(f"/command/warnings/{warning.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'lang="zh-hans"' in text and warning.headline in text and 'id="coverage-total"' in text
    assert f"/api/v1/warnings/{warning.pk}/?receipts=0" in text
    outsider = Client()
    outsider.force_login(user("grid02"))
    assert outsider.get(f"/command/warnings/{warning.pk}/").status_code == 404
    assert Client().get(f"/command/warnings/{warning.pk}/").status_code == 302
