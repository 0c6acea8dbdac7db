"""POST /api/v1/reports/: intake from phones and the hotline, idempotency, photos, bad input."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from PIL import Image

from incidents.models import Incident, IncidentLogRecord, Photo, Report
from realtime.models import FeedEntry
from tests.support.factories import first_grid_of, point_in

pytestmark = [pytest.mark.django_db]


def _body(grid: str, **overrides: object) -> dict[str, object]:
    lon, lat = point_in(grid)
    body: dict[str, object] = {
        "category": "UM02",
        "description": "井盖缺失，有行人跌落风险",
        "lon": lon,
        "lat": lat,
        "crs": "wgs84",
        "occurred_at": "2026-11-20T08:30:00+08:00",
        "address": "景田路12号",
        "reporter_name": "张三",
        "reporter_phone": "13812341234",
    }
    body.update(overrides)
    return body


def _jpeg(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.embedded
def test_phone_report_lands_in_its_grid_with_a_code(client_for):
    grid = first_grid_of("grid01")
    response = client_for("grid01").post(
        "/api/v1/reports/", _body(grid), format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["territory"]["grid"]["code"] == grid
    assert body["territory"]["district"]["code"] == grid[:6]
    assert re.fullmatch(rf"{grid[:6]}-\d{{8}}-\d{{4}}", body["code"])
    assert body["status"] == "reported" and body["stage"] == "accept" and body["due_at"]
    assert body["timeline"][0]["action"] == "report" and body["timeline"][0]["source"] == "api"
    incident = Incident.objects.get(pk=body["id"])
    # The event went to the command centre's feeds in the same transaction.
    recipients = set(
        FeedEntry.objects.filter(event__name="incident.created", event__data__id=incident.pk).values_list(
            "user__username", flat=True
        )
    )
    assert {"operator", "commander", "grid01"} <= recipients
    assert "fire_futian" not in recipients


def test_same_key_returns_the_original_and_a_changed_body_is_409(client_for):
    client = client_for("grid01")
    grid = first_grid_of("grid01")
    key = str(uuid.uuid4())
    first = client.post("/api/v1/reports/", _body(grid), format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = client.post("/api/v1/reports/", _body(grid), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Report.objects.filter(idempotency_key=key).count() == 1
    changed = client.post(
        "/api/v1/reports/", _body(grid, description="另一件事"), format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert changed.status_code == 409
    assert changed.json()["error"]["field"] == "Idempotency-Key"
    # The same key from another user is another report.
    other = client_for("grid02").post(
        "/api/v1/reports/", _body(grid), format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_phone_needs_a_key_but_the_hotline_does_not(client_for):
    grid = first_grid_of("grid01")
    missing = client_for("grid01").post("/api/v1/reports/", _body(grid), format="json")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "Idempotency-Key"
    hotline = client_for("operator").post("/api/v1/reports/", _body(grid), format="json")
    assert hotline.status_code == 201
    assert hotline.json()["reports"][0]["channel"] == "hotline"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"category": "XX99"}, "category"),
        ({"category": "AC"}, "category"),
        ({"lat": "NaN"}, "lat"),
        ({"lat": 200}, "lat"),
        ({"lon": "east"}, "lon"),
        ({"crs": "utm"}, "crs"),
        ({"description": ""}, "description"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"reporter_phone": "call me"}, "reporter_phone"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_changes_nothing(client_for, overrides, field):
    before = Incident.objects.count()
    grid = first_grid_of("grid01")
    response = client_for("grid01").post(
        "/api/v1/reports/", _body(grid, **overrides), format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert Incident.objects.count() == before


def test_outside_the_territory_is_422_naming_the_nearest_grid(client_for):
    response = client_for("grid01").post(
        "/api/v1/reports/",
        _body(first_grid_of("grid01"), lon=116.4, lat=39.9),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert response.status_code == 422
    nearest = response.json()["error"]["nearest_grid"]
    assert nearest["code"] and nearest["distance_m"] > 1_000_000


def test_gcj02_input_is_converted_and_kept(client_for):
    from gis.datums import wgs84_to_gcj02

    grid = first_grid_of("grid01")
    lon, lat = point_in(grid)
    glon, glat = wgs84_to_gcj02(lon, lat)
    response = client_for("grid01").post(
        "/api/v1/reports/",
        _body(grid, lon=glon, lat=glat, crs="gcj02"),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert response.status_code == 201
    body = response.json()
    assert body["territory"]["grid"]["code"] == grid
    assert abs(body["lon"] - lon) < 1e-6 and abs(body["lat"] - lat) < 1e-6
    assert body["reports"][0]["input"] == {"lon": glon, "lat": glat, "crs": "gcj02"}


def test_photos_are_checked_by_content_and_stored(client_for, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    grid = first_grid_of("grid01")
    files = [io.BytesIO(_jpeg(c)) for c in ("red", "green", "blue")]
    for n, f in enumerate(files):
        f.name = f"IMG_{n}.jpg"
    body = _body(grid)
    body["photos"] = files
    response = client_for("grid01").post(
        "/api/v1/reports/", body, format="multipart", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert response.status_code == 201, response.content
    photos = response.json()["reports"][0]["photos"]
    assert len(photos) == 3 and {p["content_type"] for p in photos} == {"image/jpeg"}
    stored = Photo.objects.filter(report__incident_id=response.json()["id"])
    assert all((tmp_path / p.file.name).exists() for p in stored)

    fake = io.BytesIO(b"this is not a picture at all")
    fake.name = "photo.jpg"
    body = _body(grid)
    body["photos"] = [fake]
    bad = client_for("grid01").post(
        "/api/v1/reports/", body, format="multipart", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "photos"


def test_too_many_photos(client_for, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    files = []
    for n in range(10):
        f = io.BytesIO(_jpeg())
        f.name = f"{n}.jpg"
        files.append(f)
    body = _body(first_grid_of("grid01"))
    body["photos"] = files
    response = client_for("grid01").post(
        "/api/v1/reports/", body, format="multipart", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert response.status_code == 400 and response.json()["error"]["field"] == "photos"


def test_departments_do_not_submit_reports(client_for):
    response = client_for("fire_futian").post(
        "/api/v1/reports/", _body(first_grid_of("grid01")), format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 403


def test_nearby_earlier_incident_of_the_same_family_is_a_possible_duplicate(client_for):
    client = client_for("grid01")
    grid = first_grid_of("grid01")
    first = client.post(
        "/api/v1/reports/", _body(grid), format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    second = client.post(
        "/api/v1/reports/",
        _body(grid, category="UM04", description="垃圾堆放"),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    other_family = client.post(
        "/api/v1/reports/",
        _body(grid, category="AC01", description="火灾"),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert first.json()["id"] in second.json()["possible_duplicates"]
    assert first.json()["id"] not in other_family.json()["possible_duplicates"]
    record = IncidentLogRecord.objects.get(incident_id=second.json()["id"], action="report")
    assert first.json()["id"] in record.data["possible_duplicates"]


def test_a_storm_of_reports_from_one_spot_links_only_the_nearest_duplicates(client_for, settings):
    from command.models import User
    from incidents.services import DUPLICATES_AT_MOST, ReportInput, report_submit

    settings.DUPLICATE_RADIUS_M = 100
    lon, lat = point_in(first_grid_of("grid01"))
    reporter = User.objects.get(username="grid01")
    made = []
    for i in range(DUPLICATES_AT_MOST + 5):  # the first five ~55 m away, the rest on the spot
        offset = 0.0005 if i < 5 else 0.0
        data = ReportInput(category="UM04", description=f"垃圾 {i}", lon=lon + offset, lat=lat)
        made.append(report_submit(reporter=reporter, data=data, idempotency_key=uuid.uuid4().hex).incident.pk)
    response = client_for("grid01").post(
        "/api/v1/reports/",
        _body(first_grid_of("grid01"), category="UM04", description="又一堆", lon=lon, lat=lat),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    linked = response.json()["possible_duplicates"]
    # All 25 are within the radius; the 20 kept are the ones on the spot, not the five farther away.
    assert sorted(linked) == sorted(made[5:])
    record = IncidentLogRecord.objects.get(incident_id=response.json()["id"], action="report")
    assert record.data["possible_duplicates"] == sorted(made[5:], reverse=True)


def test_emergency_category_is_registered_and_dispatched_on_intake(client_for):
    # Traffic accidents are registered on intake (category data): orders go out with the report.
    grid = first_grid_of("grid01")
    response = client_for("grid01").post(
        "/api/v1/reports/",
        _body(grid, category="AC02", description="两车相撞，有人受伤"),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "dispatched"
    actions = [t["action"] for t in body["timeline"]]
    assert actions[:4] == ["report", "accept", "register", "dispatch"]
    assert all(t["source"] == "system" for t in body["timeline"][1:4])
    from command.models import DispatchOrder

    kinds = set(
        DispatchOrder.objects.filter(incident_id=body["id"]).values_list("department__kind", flat=True)
    )
    assert kinds == {"police", "medical", "transport"}


@pytest.mark.parametrize("category", ["UM04", "AC02"])  # AC02 is registered and dispatched on intake
def test_the_answer_to_a_new_report_is_the_incident_detail_without_reading_back_the_report(
    client_for, settings, tmp_path, category
):
    from django.db import connection

    settings.MEDIA_ROOT = str(tmp_path)
    grid = first_grid_of("grid01")
    client = client_for("grid01")
    earlier = client.post(
        "/api/v1/reports/",
        _body(grid, category=category),
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    files = [io.BytesIO(_jpeg(c)) for c in ("red", "blue")]
    for n, f in enumerate(files):
        f.name = f"IMG_{n}.jpg"
    body = _body(grid, category=category)
    body["photos"] = files
    statements: list[str] = []

    def log(execute, sql, params, many, context):  # (the request resets connection.queries)
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(log):
        created = client.post("/api/v1/reports/", body, format="multipart", HTTP_IDEMPOTENCY_KEY="detail-1")
    assert created.status_code == 201, created.content
    answer = created.json()
    assert earlier.json()["id"] in answer["possible_duplicates"]
    assert len(answer["reports"]) == 1 and len(answer["reports"][0]["photos"]) == 2
    # The same body as reading the incident afterwards, as the same user.
    assert answer == client.get(f"/api/v1/incidents/{answer['id']}/").json()
    reads = [q for q in statements if q.startswith("SELECT")]
    assert len(answer["timeline"]) == (1 if category == "UM04" else 4), answer["timeline"]
    read_back = ('"incidents_photo"', '"incidents_incidentrequest"', '"incidents_incidentlogrecord"')
    assert not [q for q in reads if any(f"FROM {table}" in q for table in read_back)], reads
