"""gis.validate: reading a layer file and every validation rule, without a database."""

from __future__ import annotations

from pathlib import Path

import geopandas
import numpy as np
import pyogrio
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from gis.datums import wgs84_to_gcj02_many
from gis.validate import (
    ERROR,
    WARNING,
    Limits,
    Problem,
    SourceError,
    UnitSet,
    check_children_fit,
    metric_crs,
    read_source,
    validate_layer,
)

# A 0.01° square in Shenzhen (about 1.03 km x 1.11 km) as the parent community, cut into four grids.
X0, Y0, D = 114.05, 22.55, 0.01
PARENT = box(X0, Y0, X0 + D, Y0 + D)
H = D / 2
QUADRANTS = [
    box(X0, Y0, X0 + H, Y0 + H),
    box(X0 + H, Y0, X0 + D, Y0 + H),
    box(X0, Y0 + H, X0 + H, Y0 + D),
    box(X0 + H, Y0 + H, X0 + D, Y0 + D),
]
BOWTIE = Polygon([(X0, Y0), (X0 + H, Y0 + H), (X0 + H, Y0), (X0, Y0 + H)])


def parents(*extra: tuple[str, Polygon]) -> UnitSet:
    """The parent community (and any extra ones) as the database would give them."""
    units = [("C1", PARENT), *extra]
    geoms = np.empty(len(units), dtype=object)
    geoms[:] = [g for _, g in units]
    return UnitSet("community", [c for c, _ in units], [f"community {c}" for c, _ in units], geoms)


def frame(
    rows: list[tuple[str | None, str | None, str | None, object]], crs: str | None = "EPSG:4326"
) -> geopandas.GeoDataFrame:
    """A layer as read_source returns it: code, name, parent_code and geometry, indexed by feature id."""
    return geopandas.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "parent_code": [r[2] for r in rows],
        },
        geometry=[r[3] for r in rows],
        crs=crs,
    )


def grids(geoms: list[object] | None = None, crs: str | None = "EPSG:4326") -> geopandas.GeoDataFrame:
    """Four grids of community C1 (optionally with other geometries)."""
    geoms = list(QUADRANTS) if geoms is None else geoms
    return frame([(f"G{i}", f"grid {i}", "C1", g) for i, g in enumerate(geoms)], crs=crs)


def rules(problems: list[Problem], severity: str = ERROR) -> list[tuple[int | None, str]]:
    """(feature id, rule) of each problem of one severity."""
    return [(p.fid, p.rule) for p in problems if p.severity == severity]


def test_a_clean_tiling_passes_and_is_stored_in_wgs84() -> None:
    data = validate_layer(grids(), layer="grid", parents=parents())
    assert data.problems == []
    assert data.codes == ["G0", "G1", "G2", "G3"]
    assert data.parent_codes == ["C1"] * 4
    assert all(shapely.equals(a, b) for a, b in zip(data.geometries, QUADRANTS, strict=True))
    # A quarter of 0.01° x 0.01° at 22.55° N: about 514 m x 553 m.
    assert data.areas_m2 == pytest.approx([284_000] * 4, rel=0.01)
    assert shapely.equals(shapely.from_wkb(data.wkbs[0]), QUADRANTS[0])


def test_bowtie_is_refused_with_its_reason_and_location() -> None:
    data = validate_layer(grids([BOWTIE, *QUADRANTS[1:]]), layer="grid", parents=parents())
    assert rules(data.problems) == [(0, "invalid")]
    line = str(data.errors[0])
    assert line.startswith("feature 0 (code G0): invalid geometry: Self-intersection[")
    assert f"{X0 + H / 2:.3f}" in line


def test_fix_repairs_a_bowtie_into_its_polygonal_parts_and_reports_it() -> None:
    data = validate_layer(grids([BOWTIE, *QUADRANTS[1:]]), layer="grid", parents=parents(), fix=True)
    assert [(p.fid, p.rule) for p in data.warnings] == [(0, "repaired")]
    assert "Self-intersection" in data.warnings[0].message
    repaired = data.geometries[0]
    assert repaired.is_valid and isinstance(repaired, MultiPolygon) and len(repaired.geoms) == 2
    # The two triangles leave half of the first quadrant bare: a gap in the parent, reported as such.
    assert rules(data.problems) == [(None, "gap")]


def test_point_and_empty_geometries_are_refused() -> None:
    data = validate_layer(
        grids([Point(X0, Y0), Polygon(), None, QUADRANTS[3]]), layer="grid", parents=parents()
    )
    problems = rules(data.problems)
    assert (0, "type") in problems and (1, "empty") in problems and (2, "empty") in problems
    assert "not a polygon: Point" in str(data.errors[0])


def test_missing_codes_names_and_parents_and_duplicate_codes_are_refused() -> None:
    data = validate_layer(
        frame(
            [
                ("G1", "one", "C1", QUADRANTS[0]),
                ("G1", "two", "C1", QUADRANTS[1]),
                ("  ", "three", "C1", QUADRANTS[2]),
                ("G4", "", None, QUADRANTS[3]),
                ("G5", "five", "C9", box(X0 + 1, Y0, X0 + 1.001, Y0 + 0.001)),
            ]
        ),
        layer="grid",
        parents=parents(),
    )
    problems = rules(data.problems)
    assert (0, "duplicate") in problems and (1, "duplicate") in problems
    assert (2, "code") in problems
    assert (3, "name") in problems and (3, "parent") in problems
    assert (4, "parent") in problems
    by_fid = {p.fid: str(p) for p in data.errors if p.rule in ("duplicate", "parent")}
    assert by_fid[0] == "feature 0 (code G1): duplicate code (also feature 1)"
    assert "unknown parent: no community with code C9" in by_fid[4]


def test_a_child_sticking_out_of_its_parent_is_refused_but_a_sliver_is_tolerated() -> None:
    out = box(X0 + H, Y0 + H, X0 + D + 0.001, Y0 + D)  # 10 % wider than its quadrant, outside C1
    sliver = box(X0 + H, Y0 + H, X0 + D + 1e-6, Y0 + D)  # about 0.1 m too wide: 55 m², 0.02 %
    data = validate_layer(grids([*QUADRANTS[:3], out]), layer="grid", parents=parents())
    assert rules(data.problems) == [(3, "outside")]
    assert "sticks out of its parent community C1 by" in data.errors[0].message
    assert "(16.7% of its area)" in data.errors[0].message
    assert validate_layer(grids([*QUADRANTS[:3], sliver]), layer="grid", parents=parents()).problems == []


def test_overlapping_siblings_are_refused_and_tiny_overlaps_tolerated() -> None:
    wide = box(X0, Y0, X0 + H + 0.001, Y0 + H)  # reaches 0.001° into its eastern neighbour
    data = validate_layer(grids([wide, *QUADRANTS[1:]]), layer="grid", parents=parents())
    assert rules(data.problems) == [(0, "overlap")]
    assert "overlaps feature 1 (code G1) by" in str(data.errors[0])
    # The same feature twice: a complete overlap, not only a partial one.
    twice = validate_layer(grids([*QUADRANTS, QUADRANTS[0]]), layer="grid", parents=parents())
    assert (0, "overlap") in rules(twice.problems)
    tiny = box(X0, Y0, X0 + H + 1e-6, Y0 + H)
    assert validate_layer(grids([tiny, *QUADRANTS[1:]]), layer="grid", parents=parents()).problems == []


def test_a_gap_in_a_tiling_layer_is_refused_but_blocks_may_leave_gaps() -> None:
    data = validate_layer(grids(QUADRANTS[:3]), layer="grid", parents=parents())
    assert rules(data.problems) == [(None, "gap")]
    gap = data.errors[0]
    assert gap.code == "C1"
    assert str(gap).startswith("community C1 (community C1): 25.0% (")
    assert "covered by none of its 3 grid units" in str(gap)
    blocks = validate_layer(grids(QUADRANTS[:3]), layer="block", parents=parents())
    assert blocks.problems == []


def test_a_parent_without_any_child_is_a_gap() -> None:
    other = box(X0 + D, Y0, X0 + 2 * D, Y0 + D)
    data = validate_layer(grids(), layer="grid", parents=parents(("C2", other)))
    assert [str(p) for p in data.errors] == [
        "community C2 (community C2): has no grid at all (grid units must cover their community completely)"
    ]


def test_an_empty_file_leaves_every_parent_uncovered() -> None:
    data = validate_layer(grids([]), layer="grid", parents=parents())
    assert [(p.rule, p.code) for p in data.errors] == [("gap", "C1")]
    assert validate_layer(grids([]), layer="block", parents=parents()).problems == []


def test_districts_have_no_parent_and_are_checked_for_overlaps_only() -> None:
    data = validate_layer(
        frame([("D1", "one", None, QUADRANTS[0]), ("D2", "two", "ignored", QUADRANTS[3])]),
        layer="district",
    )
    assert data.problems == [] and data.parent_codes == [None, None]


def test_vertex_and_byte_limits() -> None:
    ring = shapely.Point(X0 + H / 2, Y0 + H / 2).buffer(0.001, quad_segs=64)  # 257 vertices
    data = validate_layer(
        grids([ring, *QUADRANTS[1:]]), layer="block", parents=parents(), limits=Limits(max_vertices=100)
    )
    assert rules(data.problems) == [(0, "vertices")]
    assert "too many vertices: 257 (limit 100)" in str(data.errors[0])
    data = validate_layer(grids(), layer="grid", parents=parents(), limits=Limits(max_bytes=80))
    assert rules(data.problems) == [(0, "bytes"), (1, "bytes"), (2, "bytes"), (3, "bytes")]


def test_missing_crs_is_refused_unless_given() -> None:
    data = validate_layer(grids(crs=None), layer="grid", parents=parents())
    assert [(p.rule, p.fid) for p in data.errors] == [("crs", None)]
    assert str(data.errors[0]).startswith("file: the file has no CRS: give it with --crs")
    assert validate_layer(grids(crs=None), layer="grid", parents=parents(), crs="EPSG:4326").problems == []


def test_crs_option_must_agree_with_the_file() -> None:
    assert validate_layer(grids(), layer="grid", parents=parents(), crs="epsg:4326").problems == []
    assert validate_layer(grids(), layer="grid", parents=parents(), crs="wgs84").problems == []
    data = validate_layer(grids(), layer="grid", parents=parents(), crs="EPSG:3857")
    assert [p.rule for p in data.errors] == ["crs"]
    assert "the file says its CRS is EPSG:4326 but --crs says EPSG:3857" in data.errors[0].message
    with pytest.raises(SourceError, match="not a CRS pyproj knows"):
        validate_layer(grids(), layer="grid", parents=parents(), crs="EPSG:999999")


def test_a_web_mercator_file_is_reprojected_to_wgs84(tmp_path: Path) -> None:
    path = tmp_path / "grid.gpkg"
    pyogrio.write_dataframe(grids().to_crs("EPSG:3857"), path, layer="grid", driver="GPKG")
    data = validate_layer(read_source(path, layer="grid"), layer="grid", parents=parents())
    assert data.problems == [] and data.source_crs == "EPSG:3857"
    for got, want in zip(data.geometries, QUADRANTS, strict=True):
        assert shapely.equals_exact(shapely.normalize(got), shapely.normalize(want), tolerance=1e-9)


def test_wrong_crs_shows_as_out_of_range_coordinates() -> None:
    metres = grids().to_crs("EPSG:3857").set_crs(None, allow_override=True)
    data = validate_layer(metres, layer="grid", parents=parents(), crs="EPSG:4326")
    assert rules(data.problems) == [(0, "range"), (1, "range"), (2, "range"), (3, "range")]


def test_gcj02_coordinates_are_shifted_back_to_wgs84() -> None:
    lon, lat = wgs84_to_gcj02_many(np.array([X0]), np.array([Y0]))
    shifted = shapely.transform(
        np.array(QUADRANTS, dtype=object), lambda xy: xy + np.array([lon[0] - X0, lat[0] - Y0])
    )
    data = validate_layer(grids(list(shifted)), layer="grid", parents=parents(), crs="gcj02")
    assert data.problems == []
    assert abs(data.geometries[0].bounds[0] - X0) < 1e-5  # GCJ-02 offsets are ~500 m, i.e. ~5e-3°


def test_every_problem_is_reported_at_once() -> None:
    data = validate_layer(
        frame(
            [
                ("G0", "zero", "C1", BOWTIE),
                ("G1", "one", "C1", Point(X0, Y0)),
                ("G1", "dup", "C1", QUADRANTS[2]),
                ("G3", "three", "C9", QUADRANTS[3]),
            ]
        ),
        layer="grid",
        parents=parents(),
    )
    found = set(rules(data.problems))
    assert {(0, "invalid"), (1, "type"), (1, "duplicate"), (2, "duplicate"), (3, "parent")} <= found


def test_children_that_no_longer_fit_are_warnings() -> None:
    geoms = np.empty(2, dtype=object)
    geoms[:] = [QUADRANTS[0], box(X0 + D, Y0, X0 + D + H, Y0 + H)]
    children = UnitSet("grid", ["G0", "G9"], ["zero", "nine"], geoms, ["C1", "C1"])
    problems = check_children_fit(children, parents())
    assert [(p.code, p.severity) for p in problems] == [("G9", WARNING)]
    assert str(problems[0]).startswith(
        "existing grid G9 (nine): warning: would stick out of the new community"
    )


def test_metric_crs_is_local_for_a_city_and_global_for_the_world() -> None:
    local = metric_crs(np.array([[113.8, 22.4, 114.6, 22.9]]))
    assert local.coordinate_operation is not None
    assert local.coordinate_operation.method_name == "Lambert Azimuthal Equal Area"
    assert metric_crs(np.array([[-180.0, -90.0, 180.0, 83.6]])).to_epsg() == 6933


def test_read_source_maps_fields_and_reports_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "grid.geojson"
    renamed = grids().rename(columns={"code": "WG_CODE", "name": "WG_NAME", "parent_code": "SQ"})
    pyogrio.write_dataframe(renamed, path, driver="GeoJSON")
    read = read_source(path, layer="grid", code_field="wg_code", name_field="WG_NAME", parent_field="SQ")
    assert read["code"].tolist() == ["G0", "G1", "G2", "G3"] and read["parent_code"].tolist() == ["C1"] * 4
    with pytest.raises(
        SourceError, match=r"no field 'code' \(--code-field\); the fields are: WG_CODE, WG_NAME"
    ):
        read_source(path, layer="grid")
    with pytest.raises(SourceError, match="no such file"):
        read_source(tmp_path / "missing.geojson", layer="grid")
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("this is not GeoJSON")
    with pytest.raises(SourceError, match="cannot read"):
        read_source(garbage, layer="grid")
    with pytest.raises(SourceError, match="unknown layer 'province'"):
        read_source(path, layer="province")


def test_read_source_picks_the_layer_of_a_multi_layer_file(tmp_path: Path) -> None:
    path = tmp_path / "city.gpkg"
    pyogrio.write_dataframe(grids(), path, layer="grid", driver="GPKG")
    pyogrio.write_dataframe(grids(), path, layer="other", driver="GPKG")
    assert len(read_source(path, layer="grid")) == 4
    with pytest.raises(SourceError, match=r"has 2 layers \(grid, other\); choose one with --source-layer"):
        read_source(path, layer="block")
    assert len(read_source(path, layer="block", source_layer="other")) == 4
    # GeoPackage feature ids start at 1, and those are the ids reported.
    data = validate_layer(read_source(path, layer="grid"), layer="grid", parents=parents())
    assert data.fids.tolist() == [1, 2, 3, 4]


def test_numeric_codes_from_a_shapefile_are_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "grid.shp"
    numeric = grids().assign(code=[4403040010010001 + i for i in range(4)], parent_code=[1.0] * 4)
    with pytest.warns(RuntimeWarning, match="'parent_code' to 'parent_cod'"):
        pyogrio.write_dataframe(numeric, path, driver="ESRI Shapefile")
    data = validate_layer(read_source(path, layer="grid"), layer="grid", parents=parents(("1", PARENT)))
    assert data.codes[0] == "4403040010010001" and data.parent_codes[0] == "1"
