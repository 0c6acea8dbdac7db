"""gis_import: validating and importing territory layers into the database (PostgreSQL)."""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import models
from shapely.geometry import Point, Polygon, box

from gis.citygen import City, Unit, generate_city, write_layers
from gis.importing import territory_import_layer
from gis.models import LAYER_ORDER, TerritoryUnit
from gis.selectors import territory_digest, territory_version
from gis.services import territory_replace

pytestmark = pytest.mark.django_db

NATURAL_EARTH = os.path.join(
    os.path.dirname(pyogrio.__file__), "tests", "fixtures", "naturalearth_lowres", "naturalearth_lowres.shp"
)

# A hand-made hierarchy for the rule tests: one district, street and community, a 0.01° square.
X0, Y0, D = 114.05, 22.55, 0.01
H = D / 2
SQUARE = box(X0, Y0, X0 + D, Y0 + D)
QUADRANTS = [
    box(X0, Y0, X0 + H, Y0 + H),
    box(X0 + H, Y0, X0 + D, Y0 + H),
    box(X0, Y0 + H, X0 + H, Y0 + D),
    box(X0 + H, Y0 + H, X0 + D, Y0 + D),
]
BOWTIE = Polygon([(X0, Y0), (X0 + H, Y0 + H), (X0 + H, Y0), (X0, Y0 + H)])
_ANGLES = np.linspace(0, 2 * np.pi, 120_000, endpoint=False)
CIRCLE = Polygon(
    np.column_stack([X0 + H / 2 + 0.001 * np.cos(_ANGLES), Y0 + H / 2 + 0.001 * np.sin(_ANGLES)])
)


def run(*args: str) -> str:
    """Run gis_import and return what it printed; CommandError propagates."""
    out = io.StringIO()
    call_command("gis_import", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> str:
    """Run gis_import expecting a refusal (exit 1) and return what it printed."""
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"refused: \d+ error\(s\); nothing was changed"):
        call_command("gis_import", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def clear_territory() -> None:
    """Remove the demo territory and everything that refers to it (inside the test's transaction)."""
    for rel in TerritoryUnit._meta.get_fields(include_hidden=True):
        if (
            not (rel.is_relation and rel.auto_created and not rel.concrete)
            or rel.related_model is TerritoryUnit
        ):
            continue
        assert isinstance(rel, models.ForeignObjectRel)
        if isinstance(rel, models.ManyToManyRel):
            rel.through._base_manager.all().delete()  # type: ignore[union-attr]
            continue
        model = rel.related_model
        field = rel.field
        manager = model._base_manager
        if field.null:
            manager.filter(**{f"{field.name}__isnull": False}).update(**{field.name: None})
        else:
            manager.all().delete()
    for layer in reversed(LAYER_ORDER):
        TerritoryUnit.objects.filter(layer=layer).delete()


def write(
    path: Path, rows: Sequence[tuple[Any, ...]], *, crs: str | None = "EPSG:4326", **names: str
) -> Path:
    """Write features (code, name, parent_code, geometry) to a file; names= renames the fields."""
    frame = geopandas.GeoDataFrame(
        {
            names.get("code", "code"): [r[0] for r in rows],
            names.get("name", "name"): [r[1] for r in rows],
            names.get("parent_code", "parent_code"): pd.Series([r[2] for r in rows], dtype=object),
        },
        geometry=[r[3] for r in rows],
        crs=crs,
    )
    pyogrio.write_dataframe(frame, path, driver="GPKG" if path.suffix == ".gpkg" else "GeoJSON")
    return path


def export_layer(layer: str, path: Path) -> Path:
    """Write one layer of the database to a GeoPackage, as an administrator would get it back."""
    rows = list(
        TerritoryUnit.objects.filter(layer=layer).values_list("code", "name", "parent__code", "geometry_wkb")
    )
    geoms = shapely.from_wkb(np.array([bytes(r[3]) for r in rows], dtype=object))
    return write(path, [(r[0], r[1], r[2], g) for r, g in zip(rows, geoms, strict=True)])


@pytest.fixture
def tiny_territory() -> None:
    """A fresh territory with one district, street and community: the 0.01° square."""
    clear_territory()
    territory_replace(
        units=[
            Unit("district", "D1", "district one", None, SQUARE),
            Unit("street", "S1", "street one", "D1", SQUARE),
            Unit("community", "C1", "community one", "S1", SQUARE),
        ]
    )


@pytest.fixture(scope="module")
def small_city() -> City:
    """A small generated city (seed 3, 200 grids)."""
    return generate_city(seed=3, grids=200)


@pytest.fixture(scope="module")
def city_files(small_city: City, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small city's layers, each in a different format (GeoJSON, GeoPackage, Shapefile)."""
    base = tmp_path_factory.mktemp("city")
    json_paths = write_layers(small_city, base / "json", driver="GeoJSON")
    gpkg_paths = write_layers(small_city, base / "gpkg", driver="GPKG")
    with pytest.warns(RuntimeWarning, match="parent_cod"):
        shp_paths = write_layers(small_city, base / "shp", driver="ESRI Shapefile")
    return {
        "district": json_paths["district"],
        "street": gpkg_paths["street"],
        "community": shp_paths["community"],
        "grid": shp_paths["grid"],
        "block": gpkg_paths["block"],
    }


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.embedded
def test_round_trip_of_a_generated_city_through_geojson_geopackage_and_shapefile(
    small_city: City, city_files: dict[str, Path]
) -> None:
    clear_territory()
    before = territory_version()
    for step, layer in enumerate(LAYER_ORDER, start=1):
        out = run(str(city_files[layer]), "--layer", layer)
        count = len(small_city.layer(layer))
        assert f"imported {layer}: {count} new, 0 updated, 0 removed; territory data version" in out
        assert territory_version() == before + step
        assert set(TerritoryUnit.objects.filter(layer=layer).values_list("version", flat=True)) == {
            before + step
        }
    rows = TerritoryUnit.objects.values_list("layer", "code", "name", "parent__code", "geometry_wkb")
    stored: dict[tuple[Any, ...], Any] = {r[:4]: shapely.from_wkb(bytes(r[4])) for r in rows}
    expected: dict[tuple[Any, ...], Any] = {
        (u.layer, u.code, u.name, u.parent_code): u.geometry for u in small_city.units
    }
    assert stored.keys() == expected.keys()
    # Exactly the same coordinates; only the ring orientation may differ (Shapefiles store rings clockwise).
    for key, geom in expected.items():
        assert shapely.equals_exact(shapely.normalize(stored[key]), shapely.normalize(geom), tolerance=0), key


@pytest.mark.embedded
def test_reimporting_the_demo_city_updates_in_place_and_keeps_assignments(tmp_path: Path) -> None:
    from command.models import Department, User

    digest = territory_digest()
    ids = dict(TerritoryUnit.objects.values_list("code", "id"))
    jurisdictions = sorted(
        Department.jurisdiction.through.objects.values_list("department_id", "territoryunit_id")
    )
    assignments = sorted(User.grids.through.objects.values_list("user_id", "territoryunit_id"))
    assert jurisdictions and assignments
    version = territory_version()
    for layer in LAYER_ORDER:
        out = run(str(export_layer(layer, tmp_path / f"{layer}.gpkg")), "--layer", layer)
        count = TerritoryUnit.objects.filter(layer=layer).count()
        assert f"imported {layer}: 0 new, {count} updated, 0 removed" in out
    assert territory_version() == version + len(LAYER_ORDER)
    assert territory_digest() == digest
    assert dict(TerritoryUnit.objects.values_list("code", "id")) == ids
    assert sorted(
        Department.jurisdiction.through.objects.values_list("department_id", "territoryunit_id")
    ) == (jurisdictions)
    assert sorted(User.grids.through.objects.values_list("user_id", "territoryunit_id")) == assignments


def test_a_changed_name_and_geometry_are_updated_on_the_same_row(tmp_path: Path) -> None:
    from command.models import User

    worker = User.objects.filter(grids__isnull=False).first()
    assert worker is not None
    grid = worker.grids.order_by("code").first()
    assert grid is not None
    path = export_layer("grid", tmp_path / "grid.gpkg")
    frame = pyogrio.read_dataframe(path)
    row = frame.index[frame["code"] == grid.code][0]
    frame.loc[row, "name"] = "renamed grid"
    # Shifting it by a millimetre changes the geometry without opening a measurable gap or overlap.
    frame.loc[row, "geometry"] = shapely.transform(
        frame.loc[row, "geometry"], lambda xy: xy + np.array([1e-8, 0.0])
    )
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    run(str(path), "--layer", "grid")
    grid.refresh_from_db()
    assert grid.name == "renamed grid" and grid.version == territory_version()
    assert worker.grids.filter(pk=grid.pk).exists()


# --------------------------------------------------------------------------- refusals change nothing


@pytest.mark.embedded
def test_a_refused_import_changes_nothing(tmp_path: Path) -> None:
    digest, version = territory_digest(), territory_version()
    path = export_layer("grid", tmp_path / "grid.gpkg")
    frame = pyogrio.read_dataframe(path, fid_as_index=True)
    first = frame.index[0]
    frame.loc[first, "geometry"] = BOWTIE
    frame.loc[frame.index[1], "name"] = "renamed, but the import is refused"
    pyogrio.write_dataframe(frame.reset_index(drop=True), path, driver="GPKG")
    out = refused(str(path), "--layer", "grid")
    assert f"feature 1 (code {frame.loc[first, 'code']}): invalid geometry: Self-intersection[" in out
    assert "summary: 2000 feature(s); " in out
    assert territory_digest() == digest and territory_version() == version


def test_dry_run_reports_and_changes_nothing(tmp_path: Path) -> None:
    digest, version = territory_digest(), territory_version()
    out = run(str(export_layer("community", tmp_path / "c.gpkg")), "--layer", "community", "--dry-run")
    count = TerritoryUnit.objects.filter(layer="community").count()
    assert f"dry run, would be: 0 new, {count} updated, 0 removed" in out
    assert territory_digest() == digest and territory_version() == version


def test_codes_still_referenced_cannot_disappear(tmp_path: Path) -> None:
    from command.models import User

    worker = User.objects.filter(grids__isnull=False).order_by("username").first()
    assert worker is not None
    assigned = sorted(worker.grids.values_list("code", flat=True))
    path = export_layer("grid", tmp_path / "grid.gpkg")
    frame = pyogrio.read_dataframe(path)
    pyogrio.write_dataframe(frame[~frame["code"].isin(assigned)], path, driver="GPKG")
    digest = territory_digest()
    out = refused(str(path), "--layer", "grid")
    line = next(line for line in out.splitlines() if line.startswith(f"existing grid {assigned[0]} ("))
    assert ": is not in the file but cannot be removed: still referenced by " in line
    assert "user.grids ×1" in line
    assert territory_digest() == digest


def test_an_unreferenced_code_is_removed_when_a_neighbour_takes_its_place(tmp_path: Path) -> None:
    from gis.importing import _references

    grids = list(
        TerritoryUnit.objects.filter(layer="grid").order_by("code").values_list("id", "code", "parent_id")
    )
    referenced = _references([g[0] for g in grids])
    path = export_layer("grid", tmp_path / "grid.gpkg")
    frame = pyogrio.read_dataframe(path)
    # Two free grids of one community: the first absorbs the second, so the community stays covered.
    free = [g for g in grids if g[0] not in referenced]
    keep, drop = next((a, b) for a, b in itertools.pairwise(free) if a[2] == b[2])
    row = {code: frame.index[frame["code"] == code][0] for code in (keep[1], drop[1])}
    frame.loc[row[keep[1]], "geometry"] = shapely.union(
        frame.loc[row[keep[1]], "geometry"], frame.loc[row[drop[1]], "geometry"]
    )
    pyogrio.write_dataframe(frame[frame["code"] != drop[1]], path, driver="GPKG")
    out = run(str(path), "--layer", "grid")
    assert "imported grid: 0 new, 1999 updated, 1 removed" in out
    assert not TerritoryUnit.objects.filter(code=drop[1]).exists()


def test_existing_children_that_stop_fitting_are_warned_about(tmp_path: Path) -> None:
    path = export_layer("community", tmp_path / "community.gpkg")
    frame = pyogrio.read_dataframe(path)
    by_street = frame.groupby("parent_code")["code"].apply(list)
    first, second = next(codes for codes in by_street if len(codes) >= 2)[:2]
    grid = TerritoryUnit.objects.filter(layer="grid", parent__code=second).order_by("code").first()
    assert grid is not None
    moved = shapely.from_wkb(bytes(grid.geometry_wkb))
    # One grid's ground moves from the second community to the first: the street stays tiled.
    a, b = frame.index[frame["code"] == first][0], frame.index[frame["code"] == second][0]
    frame.loc[a, "geometry"] = shapely.union(frame.loc[a, "geometry"], moved)
    frame.loc[b, "geometry"] = shapely.difference(frame.loc[b, "geometry"], moved)
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    out = run(str(path), "--layer", "community")
    assert (
        f"existing grid {grid.code} ({grid.name}): warning: would stick out of the new community {second}"
        in out
    )
    # Blocks of the second community on that ground stick out as well; none of it refuses the import.
    assert "0 error(s), " in out and "; imported community: 0 new" in out


# ------------------------------------------------------------------------------- rules through files


@pytest.mark.parametrize(
    ("geoms", "expected"),
    [
        ([BOWTIE, *QUADRANTS[1:]], ["feature 0 (code G0): invalid geometry: Self-intersection["]),
        ([Point(X0, Y0), *QUADRANTS[1:]], ["feature 0 (code G0): not a polygon: Point"]),
        ([Polygon(), *QUADRANTS[1:]], ["feature 0 (code G0): empty geometry"]),
        (
            [box(X0, Y0, X0 + H, Y0 + H + 0.002), *QUADRANTS[1:]],
            ["feature 0 (code G0): overlaps feature 2 (code G2) by"],
        ),
        (
            [*QUADRANTS[:3], box(X0 + H, Y0 + H, X0 + D + 0.002, Y0 + D)],
            ["feature 3 (code G3): sticks out of its parent community C1 by"],
        ),
        (QUADRANTS[:3], ["community C1 (community one): 25.0% ("]),
        (
            [CIRCLE, *QUADRANTS[1:]],
            ["feature 0 (code G0): too many vertices: 120,001 (limit 100,000)"],
        ),
    ],
    ids=["bowtie", "point", "empty", "overlap", "outside", "gap", "vertices"],
)
def test_each_rule_refuses_a_broken_grid_file(
    tiny_territory: None, tmp_path: Path, geoms: list[object], expected: list[str]
) -> None:
    digest = territory_digest()
    path = write(tmp_path / "grid.geojson", [(f"G{i}", f"grid {i}", "C1", g) for i, g in enumerate(geoms)])
    out = refused(str(path), "--layer", "grid")
    for line in expected:
        assert line in out
    assert territory_digest() == digest


def test_duplicate_codes_and_unknown_parents_are_refused(tiny_territory: None, tmp_path: Path) -> None:
    rows = [("G0", "a", "C1", QUADRANTS[0]), ("G0", "b", "C1", QUADRANTS[1]), ("G2", "c", "C9", QUADRANTS[2])]
    out = refused(str(write(tmp_path / "grid.geojson", rows)), "--layer", "grid")
    assert "feature 0 (code G0): duplicate code (also feature 1)" in out
    assert "feature 1 (code G0): duplicate code (also feature 0)" in out
    assert "feature 2 (code G2): unknown parent: no community with code C9 in the database" in out


def test_missing_crs_is_refused_and_crs_option_fills_it(tiny_territory: None, tmp_path: Path) -> None:
    rows = [(f"G{i}", f"grid {i}", "C1", g) for i, g in enumerate(QUADRANTS)]
    # GeoJSON is WGS-84 by definition (GDAL reads it so), so a GeoPackage is what lacks a CRS.
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        gpkg = write(tmp_path / "grid.gpkg", rows, crs=None)
    out = refused(str(gpkg), "--layer", "grid")
    assert "file: the file has no CRS: give it with --crs (e.g. --crs EPSG:4326)" in out
    assert "imported grid: 4 new" in run(str(gpkg), "--layer", "grid", "--crs", "EPSG:4326")


def test_a_web_mercator_file_is_reprojected(tiny_territory: None, tmp_path: Path) -> None:
    rows = [(f"G{i}", f"grid {i}", "C1", g) for i, g in enumerate(QUADRANTS)]
    path = tmp_path / "grid.gpkg"
    frame = pyogrio.read_dataframe(write(tmp_path / "g.geojson", rows)).to_crs("EPSG:3857")
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    out = refused(str(path), "--layer", "grid", "--crs", "EPSG:4326")
    assert "the file says its CRS is EPSG:3857 but --crs says EPSG:4326" in out
    out = run(str(path), "--layer", "grid")
    assert "4 grid feature(s), CRS EPSG:3857" in out
    stored = TerritoryUnit.objects.get(layer="grid", code="G3")
    geom = shapely.from_wkb(bytes(stored.geometry_wkb))
    assert shapely.equals_exact(shapely.normalize(geom), shapely.normalize(QUADRANTS[3]), tolerance=1e-9)
    assert (stored.min_lon, stored.max_lat) == pytest.approx((X0 + H, Y0 + D))
    assert stored.area_m2 == pytest.approx(284_000, rel=0.01)


def test_fix_repairs_a_bowtie_and_reports_it(tiny_territory: None, tmp_path: Path) -> None:
    # Blocks may leave gaps, so the two triangles of the repaired bowtie import as they are.
    path = write(tmp_path / "block.geojson", [("B0", "bowtie block", "C1", BOWTIE)])
    assert "invalid geometry: Self-intersection[" in refused(str(path), "--layer", "block")
    out = run(str(path), "--layer", "block", "--fix")
    assert "feature 0 (code B0): warning: repaired invalid geometry (Self-intersection[" in out
    assert "0 error(s), 1 warning(s); imported block: 1 new" in out
    geom = shapely.from_wkb(bytes(TerritoryUnit.objects.get(code="B0").geometry_wkb))
    assert geom.is_valid and geom.geom_type == "MultiPolygon" and len(geom.geoms) == 2


def test_field_name_options(tiny_territory: None, tmp_path: Path) -> None:
    rows = [(f"G{i}", f"grid {i}", "C1", g) for i, g in enumerate(QUADRANTS)]
    path = write(tmp_path / "grid.geojson", rows, code="WGBM", name="WGMC", parent_code="SQBM")
    with pytest.raises(
        CommandError, match=r"no field 'code' \(--code-field\); the fields are: WGBM, WGMC, SQBM"
    ):
        run(str(path), "--layer", "grid")
    with pytest.raises(CommandError, match=r"no field 'parent_code' \(--parent-field\)"):
        run(str(path), "--layer", "grid", "--code-field", "WGBM", "--name-field", "WGMC")
    out = run(
        str(path), "--layer", "grid", "--code-field", "WGBM", "--name-field", "WGMC", "--parent-field", "SQBM"
    )
    assert "imported grid: 4 new" in out
    assert TerritoryUnit.objects.get(code="G2").name == "grid 2"


def test_usage_errors_are_clear_command_errors(tiny_territory: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"no such file: .*nothing\.geojson"):
        run(str(tmp_path / "nothing.geojson"), "--layer", "grid")
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("{ not json")
    with pytest.raises(CommandError, match=r"cannot read .*garbage\.geojson"):
        run(str(garbage), "--layer", "grid")
    with pytest.raises(CommandError, match="invalid choice: 'province'"):
        run(str(garbage), "--layer", "province")
    with pytest.raises(CommandError, match="--crs 'EPSG:999999' is not a CRS pyproj knows"):
        run(
            str(write(tmp_path / "g.geojson", [("G0", "g", "C1", SQUARE)])),
            "--layer",
            "grid",
            "--crs",
            "EPSG:999999",
        )


# ------------------------------------------------------------------------------ a real public dataset


def test_natural_earth_countries_as_districts(tmp_path: Path) -> None:
    clear_territory()
    args = ["--layer", "district", "--code-field", "iso_a3", "--name-field", "name"]
    out = refused(NATURAL_EARTH, *args)
    # The real data's only refusal: five countries share the placeholder code -99 in this edition.
    duplicates = sorted(
        int(line.split()[1]) for line in out.splitlines() if "(code -99): duplicate code" in line
    )
    assert duplicates == [21, 43, 160, 167, 174]
    assert "summary: 177 feature(s); 5 error(s), 0 warning(s)" in out
    # Give them Natural Earth's own adm0_a3 codes and import again.
    frame = pyogrio.read_dataframe(NATURAL_EARTH)
    fixed = {"Norway": "NOR", "France": "FRA", "N. Cyprus": "CYN", "Somaliland": "SOL", "Kosovo": "KOS"}
    frame["iso_a3"] = [
        fixed.get(name, code) for name, code in zip(frame["name"], frame["iso_a3"], strict=True)
    ]
    path = tmp_path / "countries.gpkg"
    pyogrio.write_dataframe(frame, path, driver="GPKG")
    out = run(str(path), *args)
    assert "177 feature(s); 0 error(s), 0 warning(s); imported district: 177 new" in out
    rows = TerritoryUnit.objects.filter(layer="district").values_list("code", "geometry_wkb", "area_m2")
    codes = [r[0] for r in rows]
    geoms = shapely.from_wkb(np.array([bytes(r[1]) for r in rows], dtype=object))
    # The geocoder resolves through grids, and a country layer has none: check containment directly.
    tree = shapely.STRtree(geoms)
    places = {
        "Paris": ((2.35, 48.86), "FRA"),
        "Beijing": ((116.4, 39.9), "CHN"),
        # At 1:110m the coast runs ~500 m east of (-74.0, 40.7), so take a point in Manhattan.
        "New York": ((-73.97, 40.78), "USA"),
        "Sydney": ((151.2, -33.87), "AUS"),
        "Nairobi": ((36.82, -1.29), "KEN"),
        "Brasília": ((-47.88, -15.79), "BRA"),
    }
    for name, (lonlat, code) in places.items():
        hits = tree.query(Point(lonlat), predicate="within")
        assert [codes[i] for i in hits] == [code], name
    areas = {r[0]: r[2] for r in rows}
    # Stored areas are metres on the ellipsoid: France's metropolitan and overseas parts here ~ 0.64 Mkm².
    assert areas["FRA"] == pytest.approx(6.4e11, rel=0.05)

    # The geocoder resolves through grids, with distances in a local transverse Mercator fitted to the
    # territory: a city, or a region — not the whole globe. So take East Africa's countries as the
    # districts of a territory, give each one street, community and grid of its own shape (every layer
    # through gis_import, parents checked), and ask the product's own `geocode` command where its
    # capitals are.
    clear_territory()
    east_africa = frame[frame["iso_a3"].isin(["KEN", "TZA", "UGA", "RWA", "BDI", "ETH", "SOM", "SOL", "SSD"])]
    assert len(east_africa) == 9
    for layer, parent_suffix, suffix in (
        ("district", "", ""),
        ("street", "", "-S"),
        ("community", "-S", "-C"),
        ("grid", "-C", "-G"),
    ):
        layer_frame = east_africa[["iso_a3", "name", "geometry"]].copy()
        layer_frame["parent_code"] = layer_frame["iso_a3"] + parent_suffix
        layer_frame["iso_a3"] = layer_frame["iso_a3"] + suffix
        layer_path = tmp_path / f"east-africa-{layer}.gpkg"
        pyogrio.write_dataframe(layer_frame, layer_path, driver="GPKG")
        out = run(str(layer_path), "--layer", layer, "--code-field", "iso_a3", "--name-field", "name")
        assert f"9 feature(s); 0 error(s), 0 warning(s); imported {layer}: 9 new" in out, out
    from gis.locator import reset

    reset()
    capitals = {
        "Nairobi": ((36.82, -1.29), "KEN"),
        "Kampala": ((32.58, 0.35), "UGA"),
        "Dodoma": ((35.74, -6.17), "TZA"),
        "Addis Ababa": ((38.74, 9.03), "ETH"),
        "Kigali": ((30.06, -1.95), "RWA"),
        "Juba": ((31.58, 4.85), "SSD"),
    }
    for name, ((lon, lat), code) in capitals.items():
        printed = io.StringIO()
        call_command("geocode", "--lon", str(lon), "--lat", str(lat), stdout=printed)
        result = json.loads(printed.getvalue())
        assert result["district"]["code"] == code, (name, result)
        assert (result["street"]["code"], result["grid"]["code"]) == (f"{code}-S", f"{code}-G"), name
        assert result["snapped"] is False, name


def test_the_service_reports_what_it_would_do(tiny_territory: None, tmp_path: Path) -> None:
    rows = [(f"G{i}", f"grid {i}", "C1", g) for i, g in enumerate(QUADRANTS)]
    report = territory_import_layer(path=write(tmp_path / "g.geojson", rows), layer="grid", dry_run=True)
    assert (report.features, report.created, report.refused, report.written) == (4, 4, False, False)
    report = territory_import_layer(path=tmp_path / "g.geojson", layer="grid")
    assert report.written and report.version == territory_version()
