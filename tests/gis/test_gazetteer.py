"""Tests for gis.gazetteer: normalisation rules, ranking, loaders and reverse lookup."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely.geometry import Point, shape

from gis import datums
from gis.gazetteer import Gazetteer, PlaceRecord, load_csv, load_geojson, normalize_address

GEOD = Geod(ellps="WGS84")


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # 1. NFKC: full-width letters, digits and spaces become half-width; letters are casefolded.
        ("ＡＢＣ大厦　１２号", "abc大厦12号"),
        # 2. traditional forms of address markers
        ("莲花大厦十二號", "莲花大厦12号"),
        ("景田社區3單元", "景田社区3单元"),
        # 3. dashes and "#"
        ("5—2—301", "5-2-301"),
        ("3#楼", "3栋"),
        # 4. whitespace and punctuation, keeping a dash between digits
        ("莲花街道， 景田社区（北区）", "莲花街道景田社区北区"),
        ("5 - 2 - 301", "5-2-301"),
        ("景田-北", "景田北"),
        # 5. Chinese numerals before markers
        ("十二号", "12号"),
        ("一百零五号", "105号"),
        ("五零一室", "501室"),
        ("二十一栋", "21栋"),
        ("三单元", "3单元"),
        ("百花二路", "百花2路"),
        ("三元里大道", "三元里大道"),
        # 6. building and room variants
        ("3号楼", "3栋"),
        ("3幢", "3栋"),
        ("3座", "3栋"),
        ("A座1201", "a栋1201"),
        ("301房", "301室"),
        ("301户", "301室"),
        ("厨房", "厨房"),
        # 7. administrative prefixes, dropped only when something more specific follows
        ("广东省深圳市福田区莲花街道景田社区", "莲花街道景田社区"),
        ("深圳市福田区", "福田区"),
        ("深圳市", "深圳市"),
        ("北京市朝阳区", "朝阳区"),
        ("上海市浦东新区张江镇", "张江镇"),
        ("江苏省苏州市昆山市玉山镇", "玉山镇"),
        ("新疆维吾尔自治区乌鲁木齐市天山区", "天山区"),
        ("福田区1号", "福田区1号"),
        ("景田社区3栋", "景田社区3栋"),
        ("沃尔玛超市3号", "沃尔玛超市3号"),
        ("农贸市场2号", "农贸市场2号"),
        ("深圳市民中心", "深圳市民中心"),
    ],
)
def test_normalize_rules(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


def test_normalize_full_address() -> None:
    raw = "广东省深圳市福田区 莲花街道景田社区 十二号楼三单元五零一房"
    assert normalize_address(raw) == "莲花街道景田社区12栋3单元501室"
    assert normalize_address("莲花街道景田社区12栋3单元501室") == normalize_address(raw)


def test_normalize_is_idempotent_on_examples() -> None:
    for raw in [
        "广东省深圳市福田区莲花街道景田社区",
        "十二号楼三单元五零一房",
        "ＡＢＣ大厦　１２号",
        "5 - 2 - 301",
    ]:
        once = normalize_address(raw)
        assert normalize_address(once) == once


# --- search ------------------------------------------------------------------------------------


@pytest.fixture
def gazetteer() -> Gazetteer:
    return Gazetteer.from_records(
        [
            ("福田区", "district", 114.055, 22.541, {"district": "440304"}),
            (
                "莲花街道",
                "street",
                114.06,
                22.55,
                {"district": "440304", "street": "440304010"},
                ("莲花街道办",),
            ),
            ("景田社区", "community", 114.045, 22.555, {"community": "440304010001"}),
            ("景田社区3栋", "block", 114.0455, 22.5552),
            ("梅林社区", "community", 114.05, 22.57),
            ("景天花园", "landmark", 114.03, 22.56),
            PlaceRecord("市民中心", "landmark", 114.0579, 22.5431, aliases=("深圳市民中心", "市政府")),
        ]
    )


def test_exact_beats_containment_beats_fuzzy(gazetteer: Gazetteer) -> None:
    results = gazetteer.search("景田社区")
    names = [c.name for c in results]
    assert names[:2] == ["景田社区", "景田社区3栋"]
    assert results[0].score == 1.0
    assert 0.7 < results[1].score < 1.0
    fuzzy = [c for c in results if c.name in {"梅林社区", "景天花园"}]
    assert fuzzy and all(0.0 < c.score < 0.65 for c in fuzzy)
    assert [c.score for c in results] == sorted((c.score for c in results), reverse=True)
    assert results[0].unit_codes == {"community": "440304010001"}


def test_typo_finds_intended_place(gazetteer: Gazetteer) -> None:
    assert gazetteer.search("景天社区")[0].name == "景田社区"
    assert gazetteer.search("莲花街")[0].name == "莲花街道"


def test_partial_input_ranks_shortest_container_first(gazetteer: Gazetteer) -> None:
    results = gazetteer.search("景田")
    assert [c.name for c in results[:2]] == ["景田社区", "景田社区3栋"]
    assert all(0.7 < c.score < 1.0 for c in results[:2])


def test_full_width_and_prefixed_queries(gazetteer: Gazetteer) -> None:
    top = gazetteer.search("景田社区３栋")[0]
    assert (top.name, top.score) == ("景田社区3栋", 1.0)
    top = gazetteer.search("广东省深圳市福田区莲花街道")[0]
    assert (top.name, top.score) == ("莲花街道", 1.0)
    top = gazetteer.search("景田社区三号楼")[0]
    assert (top.name, top.score) == ("景田社区3栋", 1.0)


def test_aliases_match_once_per_place(gazetteer: Gazetteer) -> None:
    results = gazetteer.search("市政府")
    assert results[0].name == "市民中心"
    assert results[0].matched == "市政府"
    assert results[0].score == 1.0
    names = [c.name for c in gazetteer.search("市民中心")]
    assert names.count("市民中心") == 1


def test_limit_kinds_and_empty_query(gazetteer: Gazetteer) -> None:
    assert len(gazetteer.search("社区", limit=2)) == 2
    assert [c.kind for c in gazetteer.search("景田", kinds=["block"])] == ["block"]
    assert gazetteer.search("   ，。") == []
    assert gazetteer.search("景田", limit=0) == []
    assert gazetteer.search("zzz") == []


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="景田社区莲花街道梅林福3栋号 ，ＡB", max_size=12))
def test_scores_are_bounded_and_sorted(query: str) -> None:
    gaz = Gazetteer.from_records(
        [
            ("景田社区", "community", 114.0, 22.5),
            ("莲花街道", "street", 114.1, 22.5),
            ("梅林3栋", "block", 114, 22),
        ]
    )
    scores = [c.score for c in gaz.search(query)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)


def test_search_in_large_gazetteer_uses_rare_ngrams() -> None:
    # With many entries, grams like 社区 become "common" and stop nominating candidates; exact and
    # typo queries must still find their target.
    rng = random.Random(7)
    chars = "景莲香华梅福新安宝龙翠桂松竹金银东西南北上下大长青兴和平富康泰荔桃湖海沙石岭春秀丽锦鹏滨云凤鸿"
    names = sorted({"".join(rng.sample(chars, 3)) + "社区" for _ in range(25_000)})
    gaz = Gazetteer.from_records([(n, "community", 114.0, 22.5) for n in names])
    target = names[1234]
    assert gaz.search(target)[0].name == target
    typo = target[0] + "X" + target[2:]
    assert target in [c.name for c in gaz.search(typo, limit=10)]


def test_bad_records_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        Gazetteer.from_records([("景田社区", "village", 114.0, 22.5)])
    with pytest.raises(ValueError, match="out of range"):
        Gazetteer.from_records([("景田社区", "community", 22.5, 114.0)])
    with pytest.raises(ValueError, match="empty name"):
        Gazetteer.from_records([(" ", "community", 114.0, 22.5)])


# --- reverse -----------------------------------------------------------------------------------


def test_reverse_nearest_and_max_distance(gazetteer: Gazetteer) -> None:
    lon, lat = 114.0456, 22.5553
    hit = gazetteer.reverse(lon, lat)
    assert hit is not None
    assert hit.name == "景田社区3栋"
    expected = GEOD.inv(lon, lat, 114.0455, 22.5552)[2]
    assert hit.distance_m == pytest.approx(expected, abs=1e-6)

    assert gazetteer.reverse(114.2, 22.555) is None  # ~15 km from everything
    assert gazetteer.reverse(lon, lat, max_distance_m=5.0) is None
    assert gazetteer.reverse(lon, lat, max_distance_m=expected + 0.01) is not None

    community = gazetteer.reverse(lon, lat, kinds=["community"])
    assert community is not None and community.name == "景田社区"


def test_reverse_distance_threshold_is_geodesic() -> None:
    # A point 500 m due north must count as within 500.5 m and not within 499.5 m.
    lon, lat, _ = GEOD.fwd(114.0, 22.5, 0.0, 500.0)
    gaz = Gazetteer.from_records([("北点", "landmark", lon, lat), ("远点", "landmark", 114.2, 22.7)])
    hit = gaz.reverse(114.0, 22.5, max_distance_m=500.5)
    assert hit is not None and hit.distance_m == pytest.approx(500.0, abs=1e-6)
    assert gaz.reverse(114.0, 22.5, max_distance_m=499.5) is None


# --- loaders -----------------------------------------------------------------------------------


def test_load_csv(tmp_path: Path) -> None:
    path = tmp_path / "places.csv"
    path.write_text(
        "name,kind,lon,lat,aliases,district_code,community_code\n"
        "景田社区,community,114.045,22.555,景田|景田社区居委会,440304,440304010001\n"
        "市民中心,landmark,114.0579,22.5431,,,\n",
        encoding="utf-8-sig",  # Excel writes a BOM; the loader must not see it in the first header
    )
    gaz = load_csv(path)
    assert len(gaz) == 2
    first = gaz.records[0]
    assert first.aliases == ("景田", "景田社区居委会")
    assert first.unit_codes == {"district": "440304", "community": "440304010001"}
    assert gaz.records[1].unit_codes is None
    assert gaz.search("景田社区居委会")[0].name == "景田社区"


def test_load_csv_converts_crs_and_checks_columns(tmp_path: Path) -> None:
    path = tmp_path / "gcj.csv"
    path.write_text("name,kind,lon,lat\n市民中心,landmark,114.0579,22.5431\n", encoding="utf-8")
    record = load_csv(path, crs="gcj02").records[0]
    assert (record.lon, record.lat) == pytest.approx(datums.gcj02_to_wgs84(114.0579, 22.5431))

    bad = tmp_path / "bad.csv"
    bad.write_text("name,lon,lat\nx,1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="kind"):
        load_csv(bad)


def test_load_geojson(tmp_path: Path) -> None:
    polygon = {
        "type": "Polygon",
        "coordinates": [
            [[114.0, 22.5], [114.02, 22.5], [114.02, 22.52], [114.01, 22.505], [114.0, 22.52], [114.0, 22.5]]
        ],
    }
    data = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [114.0579, 22.5431]},
                "properties": {"name": "市民中心", "kind": "landmark", "aliases": ["市政府"]},
            },
            {
                "type": "Feature",
                "geometry": polygon,
                "properties": {
                    "name": "景田社区",
                    "kind": "community",
                    "aliases": "景田|景田居委",
                    "unit_codes": {"street": "440304010"},
                    "community_code": "440304010001",
                },
            },
        ],
    }
    path = tmp_path / "places.geojson"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    gaz = load_geojson(path)
    point, community = gaz.records
    assert (point.lon, point.lat) == (114.0579, 22.5431)
    assert point.aliases == ("市政府",)
    # A concave polygon's centroid may lie outside it; the representative point never does.
    assert shape(polygon).contains(Point(community.lon, community.lat))
    assert community.aliases == ("景田", "景田居委")
    assert community.unit_codes == {"street": "440304010", "community": "440304010001"}
    assert gaz.search("景田居委")[0].name == "景田社区"


def test_load_geojson_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}), encoding="utf-8")
    with pytest.raises(ValueError, match="FeatureCollection"):
        load_geojson(path)
    path.write_text(
        json.dumps({"type": "Feature", "geometry": None, "properties": {"name": "x", "kind": "landmark"}}),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="no geometry"):
        load_geojson(path)
