"""The whole loop over REST: report, accept, register (auto-dispatch), orders, handled, verified, closed."""

from __future__ import annotations

import uuid

import pytest

from command.models import DispatchOrder, SupervisionNotice
from incidents.models import Incident
from realtime.models import FeedEntry
from tests.support.factories import first_grid_of, point_in

pytestmark = [pytest.mark.django_db]


def act(client, url: str, action: str, expect: int = 200, **payload):
    response = client.post(url, {"action": action, **payload}, format="json")
    assert response.status_code == expect, (action, response.content)
    return response.json()


def _report_fire(client_for, grid: str) -> dict:
    lon, lat = point_in(grid)
    response = client_for("grid01").post(
        "/api/v1/reports/",
        {"category": "AC01", "description": "居民楼三层起火，有人员被困", "lon": lon, "lat": lat},
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_multi_department_fire_with_rejection_arbitration_and_rework(client_for):
    grid = first_grid_of("grid01")
    district = grid[:6]
    operator, commander = client_for("operator"), client_for("commander")
    incident = _report_fire(client_for, grid)
    url = f"/api/v1/incidents/{incident['id']}/actions/"

    # Forbidden in this state: 409 with the allowed actions listed.
    refused = operator.post(url, {"action": "close"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["allowed"] == ["accept", "cancel", "merge", "split", "extend"]
    assert client_for("grid01").post(url, {"action": "accept"}, format="json").status_code == 403

    act(operator, url, "accept")
    body = act(operator, url, "register", grade="II")
    # Fire auto-dispatches on registration: fire leads, police and medical assist (rule 10).
    assert body["status"] == "dispatched"
    orders = {o.department.code: o for o in DispatchOrder.objects.filter(incident_id=incident["id"])}
    from command.demo import DISTRICT_SLUGS

    slug = DISTRICT_SLUGS[district]
    assert set(orders) == {f"fire_{slug}", f"police_{slug}", "medical_120"}
    assert orders[f"fire_{slug}"].role == "lead"
    assert orders[f"fire_{slug}"].rule_snapshot["name"].startswith("火灾")
    assert orders[f"fire_{slug}"].due_at is not None and orders[f"fire_{slug}"].stage == "sign"

    fire, police, medical = (
        client_for(f"fire_{slug}"),
        client_for(f"police_{slug}"),
        client_for("medical_120"),
    )
    # The department sees its own order only.
    assert [o["id"] for o in fire.get("/api/v1/orders/").json()["results"]] == [orders[f"fire_{slug}"].pk]
    other = client_for("fire_nanshan" if slug != "nanshan" else "fire_futian")
    assert other.get(f"/api/v1/orders/{orders[f'fire_{slug}'].pk}/").status_code == 404
    assert (
        other.post(
            f"/api/v1/orders/{orders[f'fire_{slug}'].pk}/actions/", {"action": "sign"}, format="json"
        ).status_code
        == 404
    )

    fire_url = f"/api/v1/orders/{orders[f'fire_{slug}'].pk}/actions/"
    police_url = f"/api/v1/orders/{orders[f'police_{slug}'].pk}/actions/"
    medical_url = f"/api/v1/orders/{orders['medical_120'].pk}/actions/"

    assert act(fire, fire_url, "sign")["status"] == "signed"
    assert Incident.objects.get(pk=incident["id"]).status == "in_progress"

    # Police reject: a reason and a category are required; then the commander arbitrates.
    assert police.post(police_url, {"action": "reject"}, format="json").json()["error"]["field"] == "reason"
    act(police, police_url, "reject", 400, reason="不是我们的辖区")
    act(police, police_url, "reject", reason="不是我们的辖区", category="not_our_area")
    act(commander, police_url, "arbitrate", 400, reason="维持", ruling="maybe")
    upheld = act(commander, police_url, "arbitrate", reason="现场需要警戒，由你单位负责", ruling="uphold")
    assert upheld["status"] == "issued" and "reject" not in upheld["allowed_actions"]
    act(police, police_url, "reject", 409, reason="again", category="other")
    act(police, police_url, "sign")

    # Medical reject → reassigned by ruling to another department.
    act(medical, medical_url, "reject", reason="无伤员", category="not_our_job")
    act(
        commander,
        medical_url,
        "arbitrate",
        reason="改派应急管理局",
        ruling="reassign",
        department="emergency_mgmt",
    )
    reassigned = DispatchOrder.objects.get(incident_id=incident["id"], department__code="emergency_mgmt")
    em = client_for("emergency_mgmt")
    em_url = f"/api/v1/orders/{reassigned.pk}/actions/"
    act(em, em_url, "sign")

    lon, lat = point_in(grid)
    act(fire, fire_url, "depart")
    act(fire, fire_url, "arrive", 400, lon="x", lat=lat)
    act(fire, fire_url, "arrive", lon=lon, lat=lat)
    act(fire, fire_url, "progress", note="明火已扑灭，正在排烟")
    act(fire, fire_url, "complete", note="处置完毕")
    assert Incident.objects.get(pk=incident["id"]).status == "in_progress"  # assisting orders still open
    act(police, police_url, "complete", note="警戒解除")
    act(operator, em_url, "release", reason="无需协办")
    assert Incident.objects.get(pk=incident["id"]).status == "handled"

    # Verification by someone other than the handler; a failure sends it back for rework.
    fire_user_verifies = fire.post(url, {"action": "verify"}, format="json")
    assert fire_user_verifies.status_code in (403, 404)
    act(client_for("grid01"), url, "reject_verification", 400)
    body = act(client_for("grid01"), url, "reject_verification", reason="现场仍有积水和杂物")
    assert body["status"] == "in_progress" and body["rework_count"] == 1
    rework = DispatchOrder.objects.filter(
        incident_id=incident["id"], department__code=f"fire_{slug}", status="issued"
    ).get()
    rework_url = f"/api/v1/orders/{rework.pk}/actions/"
    for step, extra in (("sign", {}), ("arrive", {"lon": lon, "lat": lat}), ("complete", {"note": "已清理"})):
        act(fire, rework_url, step, **extra)
    assert Incident.objects.get(pk=incident["id"]).status == "handled"
    act(client_for("grid01"), url, "verify")
    act(operator, url, "close")
    act(operator, url, "evaluate", 400, score=9)
    final = act(client_for("grid01"), url, "evaluate", score=5, comment="处置及时")
    assert final["status"] == "evaluated"

    detail = operator.get(f"/api/v1/incidents/{incident['id']}/").json()
    actions = [t["action"] for t in detail["timeline"]]
    for expected in (
        "report",
        "accept",
        "register",
        "dispatch",
        "order_sign",
        "order_reject",
        "order_arbitrate",
        "start_work",
        "order_complete",
        "mark_handled",
        "reject_verification",
        "verify",
        "close",
        "evaluate",
    ):
        assert expected in actions, expected
    assert all(t["source"] in ("api", "system") for t in detail["timeline"])
    # Every order event reached the departments concerned and nobody else's.
    got = set(
        FeedEntry.objects.filter(
            event__name="order.created", event__data__incident_id=incident["id"]
        ).values_list("user__username", flat=True)
    )
    assert {u for u in got if u.startswith("fire_")} == {f"fire_{slug}"}
    assert {"operator", "commander", "medical_120", "emergency_mgmt", f"police_{slug}"} <= got
    assert not {u for u in got if u.startswith("grid")}


def test_operator_dispatch_overriding_the_rule_needs_a_reason_and_is_idempotent(client_for):
    grid = first_grid_of("grid01")
    operator = client_for("operator")
    lon, lat = point_in(grid)
    created = operator.post(
        "/api/v1/reports/",
        {"category": "UM03", "description": "违章搭建", "lon": lon, "lat": lat},
        format="json",
    ).json()
    url = f"/api/v1/incidents/{created['id']}/actions/"
    act(operator, url, "accept")
    act(operator, url, "register")
    proposal = operator.get(f"/api/v1/incidents/{created['id']}/dispatch-proposal/").json()
    assert proposal["lead"]["kind"] == "urban_management"
    assert proposal["assist"][0]["kind"] == "street_office"
    act(operator, url, "dispatch", 400, lead="water_group")
    act(operator, url, "dispatch", 400, lead="nope", reason="x")
    act(operator, url, "dispatch", lead="water_group", assist=["power_supply"], reason="涉及地下管线")
    act(operator, url, "dispatch", lead="water_group", assist=["power_supply"], reason="重复点击")
    codes = sorted(
        DispatchOrder.objects.filter(incident_id=created["id"]).values_list("department__code", flat=True)
    )
    assert codes == ["power_supply", "water_group"]
    order = DispatchOrder.objects.get(incident_id=created["id"], department__code="water_group")
    assert order.override_reason == "涉及地下管线"


def test_commander_supervision_notice_by_hand(client_for):
    grid = first_grid_of("grid01")
    incident = _report_fire(client_for, grid)
    url = f"/api/v1/incidents/{incident['id']}/actions/"
    act(client_for("operator"), url, "accept")
    act(client_for("operator"), url, "register")
    order = DispatchOrder.objects.filter(incident_id=incident["id"], role="lead").get()
    order_url = f"/api/v1/orders/{order.pk}/actions/"
    act(client_for("operator"), order_url, "supervise", 403, reason="x")
    act(client_for("commander"), order_url, "supervise", reason="请立即签收")
    assert SupervisionNotice.objects.get(order=order).message == "请立即签收"
