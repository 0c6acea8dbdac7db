"""GET /api/v1/incidents/: filters, cursor pagination, visibility by role, detail with timeline."""

from __future__ import annotations

import pytest

from command.models import User
from incidents.services import incident_act
from tests.support.factories import first_grid_of, report

pytestmark = [pytest.mark.django_db]


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_filters_and_cursor_pagination(client_for):
    operator = User.objects.get(username="operator")
    grid = first_grid_of("grid01")
    made = [report(category="UM02", description=f"井盖 {i}") for i in range(5)]
    fire = report(category="AC01", description="阳台起火")
    incident_act(incident_id=fire.pk, actor=operator, action="accept")
    client = client_for("operator")

    assert fire.pk in _ids(client.get("/api/v1/incidents/?status=accepted"))
    assert fire.pk not in _ids(client.get("/api/v1/incidents/?status=reported"))
    family = _ids(client.get("/api/v1/incidents/?category=UM"))
    assert {i.pk for i in made} <= set(family) and fire.pk not in family
    assert _ids(client.get("/api/v1/incidents/?category=AC01")) == [fire.pk]
    assert {i.pk for i in made} <= set(_ids(client.get(f"/api/v1/incidents/?area={grid[:6]}")))
    assert {i.pk for i in made} <= set(_ids(client.get(f"/api/v1/incidents/?area={grid}")))
    assert _ids(client.get("/api/v1/incidents/?area=000000")) == []
    assert _ids(client.get("/api/v1/incidents/?q=阳台")) == [fire.pk]
    assert _ids(client.get("/api/v1/incidents/?overdue=true")) == []
    assert client.get("/api/v1/incidents/?status=nope").status_code == 400
    assert client.get("/api/v1/incidents/?overdue=maybe").status_code == 400
    assert client.get("/api/v1/incidents/?reported_after=yesterday").status_code == 400

    # Cursor pagination walks every incident once, newest first.
    seen: list[int] = []
    url = "/api/v1/incidents/?page_size=2&category=UM"
    while url:
        body = client.get(url).json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= 5


def test_visibility_by_role(client_for):
    operator = User.objects.get(username="operator")
    mine = report("grid01", category="UM02")
    elsewhere_grid = (
        User.objects.get(username="grid05").grids.order_by("code").values_list("code", flat=True)[0]
    )
    other = report("grid05", category="UM02", grid=elsewhere_grid)
    grid01 = _ids(client_for("grid01").get("/api/v1/incidents/"))
    assert mine.pk in grid01 and other.pk not in grid01
    assert client_for("grid01").get(f"/api/v1/incidents/{other.pk}/").status_code == 404
    # A department sees an incident only once it holds an order for it.
    assert client_for("urban_futian").get(f"/api/v1/incidents/{mine.pk}/").status_code == 404
    for action in ("accept", "register"):
        incident_act(incident_id=mine.pk, actor=operator, action=action)
    lead = mine.orders.get(role="lead").department.code
    detail = client_for(lead).get(f"/api/v1/incidents/{mine.pk}/").json()
    assert detail["id"] == mine.pk
    assert detail["allowed_actions"] == []  # departments act on their orders, not on the incident


def test_phone_numbers_masked_for_everyone_and_revealed_only_with_a_reason(client_for):
    from incidents.services import ReportInput, report_submit
    from tests.support.factories import point_in

    lon, lat = point_in(first_grid_of("grid01"))
    incident = report_submit(
        reporter=User.objects.get(username="grid01"),
        data=ReportInput(category="UM02", description="井盖", lon=lon, lat=lat, reporter_phone="13812341234"),
        idempotency_key="mask-1",
    ).incident
    for username in ("operator", "grid01"):
        detail = client_for(username).get(f"/api/v1/incidents/{incident.pk}/").json()
        assert detail["reports"][0]["reporter_phone"] == "138****1234", username
    # The clear number only through the audited reveal, with a reason, for the command centre.
    revealed = client_for("operator").post(
        f"/api/v1/incidents/{incident.pk}/reveal/", {"reason": "回访报告人"}, format="json"
    )
    assert revealed.status_code == 200, revealed.content
    assert "13812341234" in revealed.content.decode()
    refused = client_for("grid01").post(
        f"/api/v1/incidents/{incident.pk}/reveal/", {"reason": "x"}, format="json"
    )
    assert refused.status_code in (403, 404)


def test_detail_has_timeline_with_who_role_source_and_reason(client_for):
    operator = User.objects.get(username="operator")
    incident = report(category="UM02")
    incident_act(incident_id=incident.pk, actor=operator, action="cancel", payload={"reason": "重复上报"})
    timeline = client_for("operator").get(f"/api/v1/incidents/{incident.pk}/").json()["timeline"]
    last = timeline[-1]
    assert (
        last["actor"],
        last["role"],
        last["action"],
        last["from_status"],
        last["to_status"],
        last["reason"],
    ) == ("operator", "operator", "cancel", "reported", "cancelled", "重复上报")


def test_reporter_me_lists_exactly_the_callers_incidents_once(client_for):
    """reporter=me: incidents holding a report of the caller (merged ones too), each once, no one else's."""
    operator = User.objects.get(username="operator")
    elsewhere = first_grid_of("grid05")
    assert elsewhere != first_grid_of("grid01")
    mine = report("grid01")
    again = report("grid01", key="retry-1")
    assert report("grid01", key="retry-1").pk == again.pk  # a retried report makes no second incident
    theirs_in_my_grid = report("grid05")
    theirs = report("grid05", grid=elsewhere)
    # Two duplicates of grid01 merged into grid05's incident in another grid: it now holds three reports.
    for n in range(2):
        duplicate = report("grid01", grid=elsewhere, description=f"重复上报 {n}")
        incident_act(incident_id=duplicate.pk, actor=operator, action="merge", payload={"into": theirs.pk})
    assert theirs.reports.filter(reporter__username="grid01").count() == 2

    grid01 = client_for("grid01")
    listed = _ids(grid01.get("/api/v1/incidents/?reporter=me&page_size=200"))
    assert sorted(listed) == sorted({mine.pk, again.pk, theirs.pk})
    assert len(listed) == len(set(listed))
    # Everything grid01 sees without the filter includes another worker's report in its grid.
    assert theirs_in_my_grid.pk in _ids(grid01.get("/api/v1/incidents/?page_size=200"))
    # The incident holding its merged report is grid01's to read, though in another grid.
    assert grid01.get(f"/api/v1/incidents/{theirs.pk}/").status_code == 200
    # The filter combines with the others.
    assert _ids(grid01.get(f"/api/v1/incidents/?reporter=me&area={elsewhere}")) == [theirs.pk]

    grid05 = _ids(client_for("grid05").get("/api/v1/incidents/?reporter=me&page_size=200"))
    assert sorted(grid05) == sorted([theirs_in_my_grid.pk, theirs.pk])
    # The command centre sees everything, but reporter=me holds only its own (hotline) reports.
    assert _ids(client_for("operator").get("/api/v1/incidents/?reporter=me")) == []


@pytest.mark.parametrize("value", ["you", "", "grid01", "ME", "1"])
def test_reporter_other_than_me_is_refused_naming_the_parameter(client_for, value):
    response = client_for("grid01").get("/api/v1/incidents/", {"reporter": value})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "reporter" in error["fields"], error


def test_reporter_parameter_is_in_the_schema(client_for):
    import yaml

    schema = yaml.safe_load(client_for("grid01").get("/api/v1/schema/").content)
    parameters = schema["paths"]["/api/v1/incidents/"]["get"]["parameters"]
    reporter = next(p for p in parameters if p["name"] == "reporter")
    assert reporter["in"] == "query" and reporter["schema"]["enum"] == ["me"]
