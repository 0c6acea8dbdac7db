"""Issue #9: every state change on the audit chain — territory imports, places imports, admin deletions.

Each change writes its audit rows in its own transaction; a refused or failed one writes none, and
`audit_verify` passes afterwards.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyogrio
import pytest
from django.contrib import admin
from django.contrib.admin import actions
from django.contrib.admin.models import DELETION, LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from shapely.geometry import Polygon, box

from audit.models import AuditRecord
from audit.services import os_user
from command.models import User
from gis.citygen import Unit
from gis.models import Place, TerritoryUnit
from gis.selectors import territory_version
from gis.services import territory_replace
from tests.gis.test_import import clear_territory, export_layer
from tests.support.factories import point_in

pytestmark = [pytest.mark.django_db]

GRID = "4403040010010001"


def _new_records(before: int) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(seq__gt=before).order_by("seq"))


def _head() -> int:
    return int(AuditRecord.objects.order_by("-seq").values_list("seq", flat=True).first() or 0)


def _chain_verifies() -> bool:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=err)
    except SystemExit as exc:
        return not exc.code
    return True


def _gis_import(*args: str) -> str:
    out = io.StringIO()
    call_command("gis_import", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# ------------------------------------------------------------------------------- territory imports


def test_a_territory_import_writes_one_audit_row(tmp_path: Path) -> None:
    path = export_layer("district", tmp_path / "districts.gpkg")
    count = TerritoryUnit.objects.filter(layer="district").count()
    before = _head()
    out = _gis_import(str(path), "--layer", "district")
    assert "imported district" in out
    (record,) = _new_records(before)
    assert (record.action, record.object_type, record.object_id) == (
        "territory_import",
        "territory_layer",
        "district",
    )
    assert (record.source, record.actor_id, record.actor_role) == ("cli", None, "system")
    data = record.data_obj
    assert data["layer"] == "district" and data["file"] == "districts.gpkg"
    assert data["features"] == count and data["updated"] == count and data["created"] == 0
    assert data["version"] == territory_version()
    assert data.get("os_user", "") == os_user()
    assert str(tmp_path) not in record.data  # the file name, not the folder it was in
    assert _chain_verifies()


def test_a_refused_a_dry_run_and_an_unreadable_territory_import_write_no_audit_row(tmp_path: Path) -> None:
    path = export_layer("district", tmp_path / "districts.gpkg")
    frame = pyogrio.read_dataframe(path)
    x0, y0, x1, y1 = frame.geometry.iloc[0].bounds
    frame.loc[frame.index[0], "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])  # a bow tie
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    version, before = territory_version(), _head()
    with pytest.raises(CommandError, match="refused"):
        _gis_import(str(path), "--layer", "district")
    clean = export_layer("district", tmp_path / "clean.gpkg")
    assert "dry run" in _gis_import(str(clean), "--layer", "district", "--dry-run")
    with pytest.raises(CommandError, match="no such file"):
        _gis_import(str(tmp_path / "missing.geojson"), "--layer", "district")
    assert _new_records(before) == [] and territory_version() == version
    assert _chain_verifies()


def test_a_territory_replace_writes_one_audit_row() -> None:
    clear_territory()
    before = _head()
    square = box(114.05, 22.55, 114.06, 22.56)
    version = territory_replace(
        units=[
            Unit("district", "D1", "district one", None, square),
            Unit("street", "S1", "street one", "D1", square),
            Unit("community", "C1", "community one", "S1", square),
        ],
        origin="hand-made",
    )
    (record,) = _new_records(before)
    assert (record.action, record.object_type, record.source) == ("territory_replace", "territory", "system")
    assert record.data_obj == {
        "origin": "hand-made",
        "features": 3,
        "layers": {"district": 1, "street": 1, "community": 1, "grid": 0, "block": 0},
        "version": version,
    }
    assert _chain_verifies()


def test_a_failed_territory_replace_writes_no_audit_row() -> None:
    clear_territory()
    before, version = _head(), territory_version()
    with pytest.raises(ValueError, match="unknown parent codes"):
        territory_replace(units=[Unit("street", "S9", "orphan", "NOPE", box(114.0, 22.5, 114.01, 22.51))])
    assert _new_records(before) == [] and territory_version() == version


# ---------------------------------------------------------------------------------- places imports


def _places_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("name,kind,lon,lat,aliases,grid_code\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_a_places_import_writes_one_audit_row(tmp_path: Path) -> None:
    lon, lat = point_in(GRID)
    path = _places_csv(
        tmp_path / "landmarks.csv",
        [f"莲花山公园,landmark,{lon},{lat},,{GRID}", f"红荔路1号,address,{lon + 0.001},{lat},,"],
    )
    before = _head()
    call_command("places_import", str(path), "--replace", stdout=io.StringIO())
    (record,) = _new_records(before)
    assert (record.action, record.object_type, record.source) == ("places_import", "place", "cli")
    data = record.data_obj
    assert data["file"] == "landmarks.csv" and data["mode"] == "replace"
    assert (data["records"], data["created"], data["skipped"]) == (2, 2, 0)
    assert data["deleted"] >= 0 and data.get("os_user", "") == os_user()

    before = _head()
    call_command("places_import", str(path), stdout=io.StringIO())
    (again,) = _new_records(before)
    assert again.data_obj["mode"] == "append" and again.data_obj["skipped"] == 2
    assert _chain_verifies()


def test_a_refused_or_dry_run_places_import_writes_no_audit_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,kind,lon,lat\n景田,landmark,114,95\n", encoding="utf-8")
    good = _places_csv(tmp_path / "good.csv", ["景田,landmark,114.05,22.55,,"])
    places, before = Place.objects.count(), _head()
    with pytest.raises(CommandError, match="out of range"):
        call_command("places_import", str(bad), "--replace", stdout=io.StringIO())
    call_command("places_import", str(good), "--dry-run", stdout=io.StringIO())
    assert _new_records(before) == [] and Place.objects.count() == places


# -------------------------------------------------------------------------------- admin deletions


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    return client


def _spare_users(n: int) -> list[User]:
    return [User.objects.create_user(username=f"spare{i}", password=None, role="operator") for i in range(n)]


def _bulk_delete(client: Client, users: list[User]) -> Any:
    return client.post(
        "/admin/command/user/",
        {"action": "delete_selected", "_selected_action": [str(u.pk) for u in users], "post": "yes"},
    )


def test_an_admin_bulk_delete_puts_every_deleted_object_on_the_chain(admin_client: Client) -> None:
    users = _spare_users(3)
    page = admin_client.get("/admin/command/user/").content.decode()
    plural = User._meta.verbose_name_plural
    label = actions.delete_selected.short_description % {"verbose_name_plural": plural}  # type: ignore[attr-defined]
    assert f'<option value="delete_selected">{label}</option>' in page
    before = _head()
    confirm = admin_client.post(
        "/admin/command/user/",
        {"action": "delete_selected", "_selected_action": [str(u.pk) for u in users]},
    )
    assert confirm.status_code == 200 and "spare2" in confirm.content.decode()
    assert _new_records(before) == []  # the confirmation page changes nothing
    response = _bulk_delete(admin_client, users)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not User.objects.filter(pk__in=[u.pk for u in users]).exists()
    records = _new_records(before)
    assert [(r.action, r.object_type, r.source, r.actor_username) for r in records] == [
        ("admin_delete", "command.user", "admin", "admin")
    ] * 3
    assert sorted(r.object_id for r in records) == sorted(str(u.pk) for u in users)
    assert sorted(r.data_obj["repr"] for r in records) == ["spare0", "spare1", "spare2"]
    assert _chain_verifies()


def test_single_admin_deletions_are_on_the_chain_once(admin_client: Client) -> None:
    first, second = _spare_users(2)
    before = _head()
    response = admin_client.post(f"/admin/command/user/{first.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content.decode()[:2000]
    response = _bulk_delete(admin_client, [second])  # one selected object: the single-entry path
    assert response.status_code == 302, response.content.decode()[:2000]
    records = _new_records(before)
    assert [(r.action, r.object_id) for r in records] == [
        ("admin_delete", str(first.pk)),
        ("admin_delete", str(second.pk)),
    ]
    assert _chain_verifies()


def test_a_failed_admin_bulk_delete_leaves_no_audit_row(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = _spare_users(2)
    model_admin = admin.site.get_model_admin(User)

    def delete_then_fail(request: Any, queryset: Any) -> None:
        queryset.delete()
        raise RuntimeError("the database refused the deletion")

    monkeypatch.setattr(model_admin, "delete_queryset", delete_then_fail)
    before, entries = _head(), LogEntry.objects.count()
    with pytest.raises(RuntimeError, match="refused the deletion"):
        _bulk_delete(admin_client, users)
    assert User.objects.filter(pk__in=[u.pk for u in users]).count() == 2
    assert _new_records(before) == [] and LogEntry.objects.count() == entries


def test_log_entries_written_in_bulk_outside_the_admin_views_are_on_the_chain() -> None:
    users = _spare_users(2)
    actor = User.objects.get(username="admin")
    before = _head()
    entries = LogEntry.objects.log_actions(user_id=actor.pk, queryset=users, action_flag=DELETION)
    assert len(entries) == 2
    records = _new_records(before)
    assert [(r.action, r.object_id, r.actor_username) for r in records] == [
        ("admin_delete", str(u.pk), "admin") for u in users
    ]
    assert _chain_verifies()
