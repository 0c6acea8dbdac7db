"""Progress and completion photos of dispatch orders, and the routes that serve photos to those allowed.

POST /api/v1/orders/{id}/actions/ takes multipart `photos` with `progress` and `complete`, checked like
report photos (by content, size and count, location removed) and stored with the note in the action's
transaction; a bad photo is a 400 naming the file and changes nothing. GET /api/v1/photos/order/{id}/
and /api/v1/photos/report/{id}/ stream a photo to whoever may see its order or incident, 404 to others.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import ExifTags, Image

from command.models import DispatchOrder, OrderPhoto, OrderProgress, OrderRole, User
from incidents.models import IncidentLogRecord, Photo, Source
from incidents.photos import check_photo
from incidents.services import ReportInput, incident_act, report_submit
from tests.support.factories import first_grid_of, point_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("demo_city")]


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def _jpeg(color: str = "red", *, gps: bool = False) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    if gps:
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (22.0, 32.0, 11.5),
        }
    Image.new("RGB", (64, 48), color).save(out, "JPEG", exif=exif)
    return out.getvalue()


def _file(data: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def _signed_order(*, with_report_photo: bool = False) -> tuple[DispatchOrder, User]:
    """A registered manhole report dispatched by rule; its lead order signed by its department."""
    operator = User.objects.get(username="operator")
    photos = [check_photo(_jpeg("blue"), filename="scene.jpg")] if with_report_photo else []
    lon, lat = point_in(first_grid_of("grid01"))
    incident = report_submit(
        reporter=User.objects.get(username="grid01"),
        data=ReportInput(category="UM02", description="井盖缺失", lon=lon, lat=lat),
        photos=photos,
        idempotency_key=uuid.uuid4().hex,
    ).incident
    for action in ("accept", "register"):
        incident_act(incident_id=incident.pk, actor=operator, action=action, source=Source.API)
    order = DispatchOrder.objects.get(incident=incident, role=OrderRole.LEAD)
    staff = User.objects.filter(department_id=order.department_id, role="department").order_by("pk").first()
    assert staff is not None
    from command.services import order_act

    order_act(order_id=order.pk, actor=staff, action="sign")
    order.refresh_from_db()
    return order, staff


def _other_department(order: DispatchOrder) -> str:
    other = (
        User.objects.filter(role="department")
        .exclude(department_id=order.department_id)
        .order_by("pk")
        .first()
    )
    assert other is not None
    return other.username


def _stored_files(root: Path, folder: str) -> list[Path]:
    return [p for p in (root / folder).rglob("*") if p.is_file()] if (root / folder).exists() else []


def _download(client: Any, url: str) -> tuple[int, bytes, Any]:
    response = client.get(url)
    body = (
        b"".join(response.streaming_content) if hasattr(response, "streaming_content") else response.content
    )
    return response.status_code, body, response


def test_complete_with_a_photo_stores_it_and_serves_it_to_those_allowed(client_for, _media):
    order, staff = _signed_order()
    camera = _jpeg(gps=True)
    assert ExifTags.IFD.GPSInfo in Image.open(io.BytesIO(camera)).getexif()
    response = client_for(staff.username).post(
        f"/api/v1/orders/{order.pk}/actions/",
        {"action": "complete", "note": "井盖已更换", "photos": [_file(camera, "IMG_0001.jpg")]},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed"
    completion = body["progress"][-1]
    assert completion["kind"] == "completion" and completion["note"] == "井盖已更换"
    [photo] = completion["photos"]
    assert body["photos"] == [{**photo, "kind": "completion"}]
    row = OrderPhoto.objects.get()
    assert row.progress.order_id == order.pk and row.progress.kind == "completion"
    assert photo == {
        "id": row.pk,
        "content_type": "image/jpeg",
        "size": row.size,
        "sha256": row.sha256,
        "url": f"/api/v1/photos/order/{row.pk}/",
    }
    stored = (_media / row.file.name).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == row.sha256 and len(stored) == row.size
    assert row.file.name.startswith("order-photos/")
    # The camera's location is gone from what was stored.
    assert ExifTags.IFD.GPSInfo not in Image.open(io.BytesIO(stored)).getexif()
    # The timeline (and so the audit chain) names the photo by its hash.
    step = IncidentLogRecord.objects.filter(incident_id=order.incident_id, action="order_complete").get()
    assert step.data["photos"] == [{"id": row.pk, "sha256": row.sha256}]

    for username in (staff.username, "operator", "commander"):
        status, content, served = _download(client_for(username), photo["url"])
        assert status == 200, username
        assert content == stored
        assert served["Content-Type"] == "image/jpeg"
        assert served["Cache-Control"].startswith("private")
        assert served["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in served["Content-Security-Policy"]
    assert _download(client_for(_other_department(order)), photo["url"])[0] == 404
    assert _download(client_for("grid01"), photo["url"])[0] == 404
    assert client_for("operator").get(f"/api/v1/photos/order/{row.pk + 1000}/").status_code == 404
    from rest_framework.test import APIClient

    assert APIClient().get(photo["url"]).status_code == 401
    # The list carries the photos too (for the command centre's incident detail).
    listed = client_for("operator").get(f"/api/v1/orders/?incident={order.incident_id}").json()["results"]
    assert next(o for o in listed if o["id"] == order.pk)["photos"] == body["photos"]


def test_progress_takes_photos_and_the_order_detail_lists_them(client_for):
    order, staff = _signed_order()
    client = client_for(staff.username)
    files = [_file(_jpeg(c), f"{c}.jpg") for c in ("red", "green")]
    response = client.post(
        f"/api/v1/orders/{order.pk}/actions/",
        {"action": "progress", "note": "正在更换", "photos": files},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "signed"
    detail = client.get(f"/api/v1/orders/{order.pk}/").json()
    [note] = detail["progress"]
    assert note["kind"] == "progress" and len(note["photos"]) == 2
    assert [p["id"] for p in detail["photos"]] == [p["id"] for p in note["photos"]]
    # A form without photos is the same as JSON; a progress note is still required.
    missing = client.post(f"/api/v1/orders/{order.pk}/actions/", {"action": "progress"}, format="multipart")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "note"


def _unchanged(order: DispatchOrder, media: Path) -> None:
    fresh = DispatchOrder.objects.get(pk=order.pk)
    assert fresh.status == order.status == "signed" and fresh.completed_at is None
    assert not OrderProgress.objects.filter(order=order).exists()
    assert not OrderPhoto.objects.exists()
    assert not IncidentLogRecord.objects.filter(
        incident_id=order.incident_id, action__in=["order_complete", "order_progress"]
    ).exists()
    assert _stored_files(media, "order-photos") == []


@pytest.mark.parametrize(
    ("files", "named", "reason"),
    [
        ([("x.jpg", b"this is a text file, not a picture")], "x.jpg", "unsupported_type"),
        ([("ok.jpg", None), ("half.jpg", "truncated")], "half.jpg", "corrupt"),
    ],
)
def test_a_bad_photo_is_refused_by_name_and_changes_nothing(client_for, _media, files, named, reason):
    order, staff = _signed_order()
    uploads = []
    for name, data in files:
        content = _jpeg() if data is None else _jpeg()[:200] if data == "truncated" else data
        uploads.append(_file(content, name))
    response = client_for(staff.username).post(
        f"/api/v1/orders/{order.pk}/actions/",
        {"action": "complete", "note": "完成", "photos": uploads},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "photos" and error["reason"] == reason and error["file"] == named
    assert named in error["detail"]
    _unchanged(order, _media)


def test_too_many_photos_are_refused(client_for, settings, _media):
    settings.PHOTO_MAX_COUNT = 2
    order, staff = _signed_order()
    uploads = [_file(_jpeg(), f"{n}.jpg") for n in range(3)]
    response = client_for(staff.username).post(
        f"/api/v1/orders/{order.pk}/actions/",
        {"action": "complete", "note": "完成", "photos": uploads},
        format="multipart",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "photos" and error["reason"] == "too_many" and "limit of 2" in error["detail"]
    _unchanged(order, _media)


def test_photos_only_go_with_progress_and_complete_and_only_as_files(client_for, _media):
    order, staff = _signed_order()
    client = client_for(staff.username)
    url = f"/api/v1/orders/{order.pk}/actions/"
    wrong = client.post(url, {"action": "depart", "photos": [_file(_jpeg(), "a.jpg")]}, format="multipart")
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "photos"
    as_json = client.post(
        url, {"action": "complete", "photos": ["data:image/jpeg;base64,AAAA"]}, format="json"
    )
    assert as_json.status_code == 400 and "multipart" in as_json.json()["error"]["detail"]
    other_field = client.post(
        url, {"action": "complete", "photo": [_file(_jpeg(), "a.jpg")]}, format="multipart"
    )
    assert other_field.status_code == 400 and other_field.json()["error"]["field"] == "photo"
    _unchanged(order, _media)
    # The service says the same to callers that bypass the view.
    from command.services import order_act
    from incidents.services import ActionError

    with pytest.raises(ActionError) as refused:
        order_act(
            order_id=order.pk, actor=staff, action="depart", photos=[check_photo(_jpeg(), filename="a.jpg")]
        )
    assert refused.value.field == "photos"
    _unchanged(order, _media)


def test_a_failed_action_leaves_no_photo_file_behind(client_for, _media, monkeypatch):
    from command import services

    order, staff = _signed_order()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the timeline is unavailable")

    # Fails after the photos were written to storage, inside the action's transaction.
    monkeypatch.setattr(services, "_order_log", broken)
    with pytest.raises(RuntimeError):
        services.order_act(
            order_id=order.pk,
            actor=staff,
            action="complete",
            payload={"note": "完成"},
            photos=[check_photo(_jpeg(), filename="a.jpg")],
        )
    _unchanged(order, _media)


def test_report_photos_are_served_to_who_may_see_the_incident(client_for, _media):
    order, staff = _signed_order(with_report_photo=True)
    photo = Photo.objects.get(report__incident_id=order.incident_id)
    detail = client_for("operator").get(f"/api/v1/incidents/{order.incident_id}/").json()
    url = detail["reports"][0]["photos"][0]["url"]
    assert url == f"/api/v1/photos/report/{photo.pk}/"
    stored = (_media / photo.file.name).read_bytes()
    # The reporter, the department holding the order, the command centre and the administrator.
    for username in ("grid01", staff.username, "operator", "commander", "admin"):
        status, content, served = _download(client_for(username), url)
        assert status == 200, username
        assert content == stored and served["Content-Type"] == photo.content_type
        assert served["Cache-Control"].startswith("private")
    assert _download(client_for(_other_department(order)), url)[0] == 404
    # An <img> asks for image/*: still the photo, not a 406.
    assert client_for("operator").get(url, HTTP_ACCEPT="image/webp,image/*").status_code == 200
    # MEDIA_URL serves nothing.
    assert client_for("operator").get(f"/media/{photo.file.name}").status_code == 404


def test_a_photo_whose_file_is_gone_is_a_404_not_an_error(client_for, _media):
    order, _staff = _signed_order(with_report_photo=True)
    photo = Photo.objects.get(report__incident_id=order.incident_id)
    (_media / photo.file.name).unlink()
    response = client_for("operator").get(f"/api/v1/photos/report/{photo.pk}/")
    assert response.status_code == 404 and "missing" in response.json()["error"]["detail"]
