"""Places (landmarks, door addresses): the places_import command, the Place model and the gazetteer cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from gis import datums, places
from gis.models import Place, TerritoryUnit
from gis.services import territory_version_bump
from tests.support.factories import point_in

GRID = "4403040010010001"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_caches(settings: Any) -> Iterator[None]:
    """Check the territory version and the places on every call."""
    settings.GIS_VERSION_CHECK_S = 0
    places.reset()
    yield
    places.reset()


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("name,kind,lon,lat,aliases,grid_code\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_csv_import_appends_skips_duplicates_and_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lon, lat = point_in(GRID)
    first = write_csv(
        tmp_path / "a.csv",
        [
            f"莲花山公园,landmark,{lon},{lat},莲花山|莲花山公园北门,{GRID}",
            f"红荔路1号,address,{lon + 0.001},{lat},,",
        ],
    )
    call_command("places_import", str(first))
    assert "2 place(s) added, 0 duplicate(s) skipped, 0 removed" in capsys.readouterr().out
    park = Place.objects.get(name="莲花山公园")
    assert park.kind == "landmark" and park.aliases == ["莲花山", "莲花山公园北门"]
    assert park.unit_codes == {"grid": GRID} and park.lon == pytest.approx(lon)

    call_command("places_import", str(first), "--append")
    assert "0 place(s) added, 2 duplicate(s) skipped" in capsys.readouterr().out
    assert Place.objects.count() == 2

    second = write_csv(tmp_path / "b.csv", [f"福田口岸,landmark,{lon},{lat},,"])
    call_command("places_import", str(second), "--replace")
    assert "1 place(s) added, 0 duplicate(s) skipped, 2 removed" in capsys.readouterr().out
    assert list(Place.objects.values_list("name", flat=True)) == ["福田口岸"]


def test_geojson_import_with_default_kind_and_crs(tmp_path: Path) -> None:
    lon, lat = point_in(GRID)
    glon, glat = datums.wgs84_to_gcj02(lon, lat)
    data = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [glon, glat]},
                "properties": {"name": "市民中心"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [glon, glat]},
                "properties": {"name": "福中三路2号", "kind": "address", "aliases": ["福中三路二号"]},
            },
        ],
    }
    path = tmp_path / "places.geojson"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    call_command("places_import", str(path), "--kind", "landmark", "--crs", "gcj02")
    centre = Place.objects.get(name="市民中心")
    assert centre.kind == "landmark"
    assert centre.lon == pytest.approx(lon, abs=1e-7) and centre.lat == pytest.approx(lat, abs=1e-7)
    assert Place.objects.get(name="福中三路2号").aliases == ["福中三路二号"]


@pytest.mark.parametrize(
    ("content", "name", "extra", "message"),
    [
        (None, "missing.csv", [], "file not found"),
        ("name,kind,lon,lat\n", "places.xlsx", [], "unknown file extension '.xlsx'"),
        ("name,lon,lat\n景田,114,22\n", "p.csv", [], r"missing CSV column\(s\) \['kind'\]"),
        ("name,kind,lon,lat\n景田,landmark,abc,22\n", "p.csv", [], "bad lon/lat 'abc'"),
        ("name,kind,lon,lat\n景田,landmark,114,95\n", "p.csv", [], "out of range"),
        (
            "name,kind,lon,lat\n景田社区,community,114,22.5\n",
            "p.csv",
            [],
            "has kind 'community'; a place is one of",
        ),
        ("name,kind,lon,lat\n,landmark,114,22.5\n", "p.csv", [], "empty name"),
        ("name,kind,lon,lat\n景田,landmark,114,22.5\n", "p.csv", ["--crs", "mars"], "unknown crs 'mars'"),
        ('{"type": "Point"}', "p.geojson", [], "expected a GeoJSON FeatureCollection"),
        ("{not json", "p.geojson", [], "Expecting property name"),
    ],
)
def test_bad_files_are_one_line_errors_and_change_nothing(
    tmp_path: Path, content: str | None, name: str, extra: list[str], message: str
) -> None:
    Place.objects.create(name="保留", kind="landmark", lon=114.0, lat=22.5)
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=message) as caught:
        call_command("places_import", str(path), "--replace", *extra)
    assert "\n" not in str(caught.value)
    assert list(Place.objects.values_list("name", flat=True)) == ["保留"]


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "a.csv", ["景田,landmark,114.05,22.55,,"])
    call_command("places_import", str(path), "--dry-run")
    assert "1 place(s) read; dry run" in capsys.readouterr().out
    assert not Place.objects.exists()


def test_place_clean_validates_fields() -> None:
    place = Place(
        name="x", kind="landmark", lon=200.0, lat=22.5, aliases="a|b", unit_codes={"planet": "earth"}
    )
    with pytest.raises(ValidationError) as caught:
        place.full_clean()
    assert {"lon", "aliases", "unit_codes"} <= set(caught.value.message_dict)
    Place(
        name="x", kind="address", lon=114.0, lat=22.5, aliases=["y"], unit_codes={"grid": GRID}
    ).full_clean()


def test_gazetteer_holds_units_and_places_and_follows_changes() -> None:
    first = places.get_gazetteer()
    units = TerritoryUnit.objects.count()
    assert len(first) == units
    assert places.get_gazetteer() is first  # nothing changed: the same object is served

    lon, lat = point_in(GRID)
    places.places_import(records=[places.PlaceRecord("福田图书馆", "landmark", lon, lat)])
    second = places.get_gazetteer()
    assert second is not first and len(second) == units + 1
    hit = second.search("福田图书馆", limit=1)[0]
    assert hit.unit_codes["grid"] == GRID and hit.unit_codes["district"] == "440304"

    Place.objects.filter(name="福田图书馆").update(name="福田区图书馆")
    # An update through the queryset does not touch updated_at; a save (admin, services) does.
    Place.objects.get(name="福田区图书馆").save()
    third = places.get_gazetteer()
    assert third is not second and third.search("福田区图书馆", limit=1)[0].score == 1.0

    territory_version_bump()
    assert places.get_gazetteer() is not third


def test_unit_records_carry_their_ancestors() -> None:
    gazetteer = places.get_gazetteer()
    grid = TerritoryUnit.objects.get(layer="grid", code=GRID)
    hit = gazetteer.search(grid.name, limit=1, kinds=["grid"])[0]
    assert hit.unit_codes == {
        "grid": GRID,
        "community": "440304001001",
        "street": "440304001",
        "district": "440304",
    }


def test_rows_edited_outside_the_import_are_skipped_not_fatal() -> None:
    Place.objects.create(name="坏数据", kind="grid", lon=114.0, lat=22.5)
    Place.objects.create(name="远方", kind="landmark", lon=500.0, lat=22.5)
    Place.objects.create(name="好数据", kind="landmark", lon=114.05, lat=22.55, aliases="not a list")
    gazetteer = places.get_gazetteer()
    assert len(gazetteer) == TerritoryUnit.objects.count() + 1
    assert gazetteer.search("好数据", limit=1)[0].kind == "landmark"
