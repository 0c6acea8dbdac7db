"""Road networks for ranking units by travel time: read an OSM extract, snap points, search once per request.

Plain numpy/scipy with no Django import, so it can be benchmarked and reused on its own. An ``.osm.pbf``
extract is read with pyrosm (imported only when one is read) into a directed graph whose edge weights
are travel times from each way's ``maxspeed`` or, failing that, its ``highway`` type. The graph is held
as a scipy CSR matrix because one Dijkstra search from the incident over the *reversed* graph gives
every unit's time to the incident at once: recommending among 1,000 units is one search, not 1,000.
``RoadNetwork.to_networkx`` gives the same graph as a networkx ``DiGraph`` for checks and exports.

Points are snapped to the nearest node of the largest strongly connected component (a KD-tree in a
local metric frame): a unit parked on an isolated service road would otherwise be unreachable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    import networkx as nx

EARTH_RADIUS_M = 6_371_008.8

# Typical urban driving speeds (km/h) by OSM highway type, used when a way has no usable maxspeed.
HIGHWAY_SPEED_KMH: dict[str, float] = {
    "motorway": 90.0,
    "motorway_link": 50.0,
    "trunk": 70.0,
    "trunk_link": 40.0,
    "primary": 50.0,
    "primary_link": 40.0,
    "secondary": 40.0,
    "secondary_link": 35.0,
    "tertiary": 35.0,
    "tertiary_link": 30.0,
    "unclassified": 30.0,
    "residential": 25.0,
    "living_street": 10.0,
    "service": 15.0,
    "road": 25.0,
}
FALLBACK_SPEED_KMH = 25.0
# A zero weight would read as "no edge" to some tools; no real segment takes less than a millisecond.
MIN_EDGE_TIME_S = 1e-3

_ONEWAY_ALONG = frozenset({"yes", "true", "1"})
_ONEWAY_AGAINST = frozenset({"-1", "reverse"})
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class RoadNetworkError(Exception):
    """A road network file that cannot be read or holds no usable roads."""


def haversine_m(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> Any:
    """Great-circle distance in metres (numpy-vectorised; scalars in, float out)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def parse_maxspeed(value: Any) -> float | None:
    """A maxspeed tag in km/h ("50", "30 mph", "40;60" → the lower), or None when it gives no number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text == "walk":
        return 5.0
    numbers = [float(n) for n in _NUMBER.findall(text)]
    # Zone codes such as "FI:urban" or "none" carry no number: the highway type decides instead.
    if not numbers:
        return None
    speed = min(numbers) * (1.609344 if "mph" in text else 1.0)
    return speed if 1.0 <= speed <= 200.0 else None


def edge_speed_kmh(highway: Any, maxspeed: Any) -> float:
    """The speed of a way: its maxspeed when it has a usable one, else the typical speed of its type."""
    parsed = parse_maxspeed(maxspeed)
    if parsed is not None:
        return parsed
    return HIGHWAY_SPEED_KMH.get(str(highway).strip().lower(), FALLBACK_SPEED_KMH)


def edge_directions(oneway: Any, highway: Any, junction: Any = None) -> tuple[bool, bool]:
    """Whether a way may be driven (along its node order, against it), from oneway/junction/highway."""
    tag = "" if oneway is None or (isinstance(oneway, float) and math.isnan(oneway)) else str(oneway)
    tag = tag.strip().lower()
    if tag in _ONEWAY_ALONG:
        return True, False
    if tag in _ONEWAY_AGAINST:
        return False, True
    if tag == "no":
        return True, True
    # OSM implies oneway=yes on roundabouts and motorways unless tagged otherwise.
    if str(junction).strip().lower() in ("roundabout", "circular") or str(highway) == "motorway":
        return True, False
    return True, True


@dataclass(frozen=True)
class SearchTree:
    """One shortest-path search towards a target node: seconds to it and the next hop, per node."""

    target: int
    time_s: FloatArray
    next_hop: IntArray


@dataclass(frozen=True)
class Ranked:
    """One ranked origin: its index in the caller's arrays, distance, ETA and how they were estimated."""

    index: int
    distance_m: float
    eta_s: float
    method: str


@dataclass(frozen=True)
class Ranking:
    """The top origins for a target, best first, and how the target itself was placed."""

    method: str
    ranked: list[Ranked]
    note: str = ""
    target_snap_m: float | None = None


class RoadNetwork:
    """A directed road graph with travel times, a snapping index and a one-search ranking."""

    def __init__(
        self,
        *,
        node_ids: NDArray[Any],
        lon: NDArray[Any],
        lat: NDArray[Any],
        tails: NDArray[Any],
        heads: NDArray[Any],
        length_m: NDArray[Any],
        time_s: NDArray[Any],
        source: str = "",
    ) -> None:
        self.source = source
        self.node_ids = np.asarray(node_ids, dtype=np.int64)
        self.lon = np.asarray(lon, dtype=np.float64)
        self.lat = np.asarray(lat, dtype=np.float64)
        n = self.node_ids.size
        if n == 0:
            raise RoadNetworkError("the network has no nodes")
        tails = np.asarray(tails, dtype=np.int64)
        heads = np.asarray(heads, dtype=np.int64)
        length = np.asarray(length_m, dtype=np.float64)
        times = np.maximum(np.asarray(time_s, dtype=np.float64), MIN_EDGE_TIME_S)
        if not (
            self.lon.size == self.lat.size == n and tails.size == heads.size == length.size == times.size
        ):
            raise RoadNetworkError("node and edge arrays differ in length")
        if tails.size and (min(tails.min(), heads.min()) < 0 or max(tails.max(), heads.max()) >= n):
            raise RoadNetworkError("an edge refers to a node that does not exist")
        keep = tails != heads
        tails, heads, length, times = tails[keep], heads[keep], length[keep], times[keep]
        # Parallel edges (two ways between the same nodes): keep the fastest, as a router would take it.
        order = np.lexsort((times, heads, tails))
        tails, heads, length, times = tails[order], heads[order], length[order], times[order]
        first = np.ones(tails.size, dtype=bool)
        first[1:] = (tails[1:] != tails[:-1]) | (heads[1:] != heads[:-1])
        tails, heads, length, times = tails[first], heads[first], length[first], times[first]
        if tails.size == 0:
            raise RoadNetworkError("the network has no edges")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(tails, minlength=n), out=indptr[1:])
        self.forward = csr_matrix((times, heads, indptr), shape=(n, n))
        # Aligned with forward.data: the length of the same directed edge, found by its sorted key.
        self.edge_length_m = length
        self._edge_keys = tails * n + heads
        # Searching the reversed graph from the target yields every node's time *to* the target.
        self.reverse = self.forward.T.tocsr()
        n_components, labels = connected_components(self.forward, directed=True, connection="strong")
        self.strong_components = int(n_components)
        self.weak_components = int(connected_components(self.forward, directed=True, connection="weak")[0])
        main = int(np.bincount(labels).argmax())
        self.routable = np.flatnonzero(labels == main)
        self._lon0 = float(np.mean(self.lon))
        self._lat0 = float(np.mean(self.lat))
        self._tree = cKDTree(self._project(self.lon[self.routable], self.lat[self.routable]))

    # ------------------------------------------------------------------------------ facts and export

    @property
    def node_count(self) -> int:
        """Number of nodes."""
        return int(self.node_ids.size)

    @property
    def edge_count(self) -> int:
        """Number of directed edges (a two-way street segment counts twice)."""
        return int(self.forward.nnz)

    def edges(self) -> tuple[IntArray, IntArray, FloatArray, FloatArray]:
        """Every directed edge as (tail index, head index, length in m, time in s)."""
        tails = np.repeat(np.arange(self.node_count, dtype=np.int64), np.diff(self.forward.indptr))
        heads = self.forward.indices.astype(np.int64)
        return tails, heads, self.edge_length_m, np.asarray(self.forward.data, dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Counts and extent, as roads_check prints them."""
        _, _, length, times = self.edges()
        speeds = length / times * 3.6
        return {
            "source": self.source,
            "nodes": self.node_count,
            "edges": self.edge_count,
            "strong_components": self.strong_components,
            "weak_components": self.weak_components,
            "largest_strong_component": int(self.routable.size),
            "length_km": float(length.sum() / 1000),
            "median_speed_kmh": float(np.median(speeds)),
            "bounds": [
                float(self.lon.min()),
                float(self.lat.min()),
                float(self.lon.max()),
                float(self.lat.max()),
            ],
        }

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a networkx DiGraph: nodes by OSM id with lon/lat, edges with length_m and time_s."""
        import networkx as nx

        graph = nx.DiGraph()
        for i, (node_id, x, y) in enumerate(zip(self.node_ids, self.lon, self.lat, strict=True)):
            graph.add_node(int(node_id), index=i, lon=float(x), lat=float(y))
        tails, heads, length, times = self.edges()
        ids = self.node_ids
        graph.add_edges_from(
            (int(ids[t]), int(ids[h]), {"length_m": float(d), "time_s": float(s)})
            for t, h, d, s in zip(tails, heads, length, times, strict=True)
        )
        return graph

    def save(self, path: str | Path) -> None:
        """Write the network as .npz, which loads in a blink where parsing a city's .osm.pbf takes minutes."""
        tails, heads, length, times = self.edges()
        np.savez_compressed(
            path,
            node_ids=self.node_ids,
            lon=self.lon,
            lat=self.lat,
            tails=tails,
            heads=heads,
            length_m=length,
            time_s=times,
        )

    # ----------------------------------------------------------------------------- snapping, search

    def _project(self, lon: Any, lat: Any) -> FloatArray:
        # An equirectangular frame around the network's centre: metric enough to find the nearest node.
        x = EARTH_RADIUS_M * math.cos(math.radians(self._lat0)) * np.radians(np.asarray(lon) - self._lon0)
        y = EARTH_RADIUS_M * np.radians(np.asarray(lat) - self._lat0)
        return np.column_stack([np.atleast_1d(x), np.atleast_1d(y)])

    def snap(self, lon: Any, lat: Any) -> tuple[IntArray, FloatArray]:
        """Nearest routable node index of each point, and its great-circle distance in metres."""
        lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        lat_a = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        if lon_a.size == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        _, where = self._tree.query(self._project(lon_a, lat_a), k=1)
        nodes = self.routable[np.asarray(where, dtype=np.int64)]
        return nodes, np.asarray(haversine_m(lon_a, lat_a, self.lon[nodes], self.lat[nodes]), dtype=float)

    def search_to(self, target: int, *, limit_s: float = np.inf) -> SearchTree:
        """One Dijkstra search over the reversed graph: every node's shortest time to `target`."""
        times, predecessors = dijkstra(
            self.reverse, directed=True, indices=int(target), return_predecessors=True, limit=limit_s
        )
        return SearchTree(target=int(target), time_s=times, next_hop=predecessors.astype(np.int64))

    def path_to_target(self, tree: SearchTree, node: int) -> list[int]:
        """The node indices of the fastest path from `node` to the search's target (empty: unreachable)."""
        if not np.isfinite(tree.time_s[node]):
            return []
        path = [int(node)]
        while path[-1] != tree.target:
            path.append(int(tree.next_hop[path[-1]]))
        return path

    def path_length_m(self, tree: SearchTree, node: int) -> float:
        """The length of the fastest path from `node` to the search's target (inf: unreachable)."""
        path = np.asarray(self.path_to_target(tree, node), dtype=np.int64)
        if path.size == 0:
            return math.inf
        # One vectorised lookup of every hop's edge (tail·n + head keys are sorted like the CSR rows).
        where = np.searchsorted(self._edge_keys, path[:-1] * self.node_count + path[1:])
        return float(self.edge_length_m[where].sum())

    def rank_to(
        self,
        *,
        lon: float,
        lat: float,
        from_lon: NDArray[Any],
        from_lat: NDArray[Any],
        k: int,
        access_speed_kmh: float,
        detour_factor: float,
        max_snap_m: float,
        tiebreak: NDArray[Any] | None = None,
    ) -> Ranking:
        """The k origins fastest to (lon, lat) by road; origins off the network fall back to straight line."""
        from_lon = np.asarray(from_lon, dtype=np.float64)
        from_lat = np.asarray(from_lat, dtype=np.float64)
        target_nodes, target_snaps = self.snap(lon, lat)
        target, target_snap = int(target_nodes[0]), float(target_snaps[0])
        if target_snap > max_snap_m:
            fallback = straight_line_rank(
                lon=lon,
                lat=lat,
                from_lon=from_lon,
                from_lat=from_lat,
                k=k,
                speed_kmh=access_speed_kmh,
                detour_factor=detour_factor,
                tiebreak=tiebreak,
            )
            note = f"the point is {target_snap:,.0f} m from the nearest road (more than {max_snap_m:,.0f} m)"
            return Ranking("straight_line", fallback.ranked, note, target_snap)
        if from_lon.size == 0:
            return Ranking("road", [], "", target_snap)
        nodes, snaps = self.snap(from_lon, from_lat)
        access_speed = access_speed_kmh / 3.6
        near = snaps <= max_snap_m
        straight_eta = haversine_m(from_lon, from_lat, lon, lat) * detour_factor / access_speed
        # The legs between a point and its node are walked or driven off the graph: straight line × detour.
        access_eta = (snaps + target_snap) * detour_factor / access_speed
        wanted = max(1, min(k, int(from_lon.size)))
        # A search bounded at `limit` settles every node within it exactly. Once k origins have an ETA
        # within the limit, no origin beyond it can beat them (its road time alone exceeds the limit), so
        # the top k are exact without searching the whole city. Start from the k-th straight-line ETA and
        # widen until that holds; the last round is unbounded.
        first = max(30.0, float(np.partition(straight_eta, wanted - 1)[wanted - 1]))
        limits = [first, first * 3, first * 9, math.inf]
        for limit in limits:
            tree = self.search_to(target, limit_s=limit)
            road_s = tree.time_s[nodes] if nodes.size else np.empty(0)
            on_road = near & np.isfinite(road_s)
            unknown = near & ~on_road
            if math.isinf(limit):
                # Unbounded: a near origin still without a time cannot reach the target by road at all.
                eta = np.where(on_road, road_s + access_eta, straight_eta)
                break
            eta = np.where(on_road, road_s + access_eta, np.where(unknown, math.inf, straight_eta))
            if int(np.count_nonzero(eta <= limit)) >= wanted:
                break
        keys = tiebreak if tiebreak is not None else np.arange(eta.size)
        best = np.lexsort((keys, eta))[:k]
        ranked: list[Ranked] = []
        for i in best.tolist():
            if on_road[i]:
                distance = self.path_length_m(tree, int(nodes[i])) + float(snaps[i]) + target_snap
                ranked.append(Ranked(i, distance, float(eta[i]), "road"))
            else:
                distance = float(haversine_m(from_lon[i], from_lat[i], lon, lat))
                ranked.append(Ranked(i, distance, float(eta[i]), "straight_line"))
        off = int((~near).sum()) + (int(unknown.sum()) if math.isinf(limit) else 0)
        note = f"{off} of {eta.size} origins are off the road network (straight line for them)" if off else ""
        return Ranking("road", ranked, note, target_snap)


def straight_line_rank(
    *,
    lon: float,
    lat: float,
    from_lon: NDArray[Any],
    from_lat: NDArray[Any],
    k: int,
    speed_kmh: float,
    detour_factor: float,
    tiebreak: NDArray[Any] | None = None,
) -> Ranking:
    """The k origins nearest to (lon, lat) as the crow flies; ETA = distance × detour ÷ speed."""
    distance = np.asarray(haversine_m(np.asarray(from_lon), np.asarray(from_lat), lon, lat), dtype=float)
    eta = distance * detour_factor / (speed_kmh / 3.6)
    keys = tiebreak if tiebreak is not None else np.arange(eta.size)
    best = np.lexsort((keys, eta))[:k]
    ranked = [Ranked(i, float(distance[i]), float(eta[i]), "straight_line") for i in best.tolist()]
    return Ranking("straight_line", ranked)


# ---------------------------------------------------------------------------------------------- loading


def network_from_frames(nodes: Any, edges: Any, *, source: str = "") -> RoadNetwork:
    """A network from pyrosm-shaped frames: nodes (id, lon, lat), edges (u, v, length, highway, …)."""
    node_ids = nodes["id"].to_numpy(dtype=np.int64)
    order = np.argsort(node_ids)
    node_ids = node_ids[order]
    lon = nodes["lon"].to_numpy(dtype=np.float64)[order]
    lat = nodes["lat"].to_numpy(dtype=np.float64)[order]
    u = edges["u"].to_numpy(dtype=np.int64)
    v = edges["v"].to_numpy(dtype=np.int64)
    pos_u = np.searchsorted(node_ids, u)
    pos_v = np.searchsorted(node_ids, v)
    known = (pos_u < node_ids.size) & (pos_v < node_ids.size)
    known[known] &= (node_ids[pos_u[known]] == u[known]) & (node_ids[pos_v[known]] == v[known])
    n = len(edges)

    def column(name: str) -> list[Any]:
        return list(edges[name]) if name in edges.columns else [None] * n

    highway, maxspeed = column("highway"), column("maxspeed")
    oneway, junction = column("oneway"), column("junction")
    length = edges["length"].to_numpy(dtype=np.float64)
    # Tags repeat a lot (a city has a few dozen highway × maxspeed pairs): decide each pair once.
    speed_of: dict[tuple[str, str], float] = {}
    ways_of: dict[tuple[str, str, str], tuple[bool, bool]] = {}
    speed = np.empty(n, dtype=np.float64)
    along = np.zeros(n, dtype=bool)
    against = np.zeros(n, dtype=bool)
    for i in range(n):
        if not known[i]:
            continue
        key = (str(highway[i]), str(maxspeed[i]))
        if key not in speed_of:
            speed_of[key] = edge_speed_kmh(highway[i], maxspeed[i])
        speed[i] = speed_of[key]
        dkey = (str(oneway[i]), str(highway[i]), str(junction[i]))
        if dkey not in ways_of:
            ways_of[dkey] = edge_directions(oneway[i], highway[i], junction[i])
        along[i], against[i] = ways_of[dkey]
    seconds = length / (np.where(known, speed, 1.0) / 3.6)
    fwd, back = along & known, against & known
    tails = np.concatenate([pos_u[fwd], pos_v[back]])
    heads = np.concatenate([pos_v[fwd], pos_u[back]])
    lengths = np.concatenate([length[fwd], length[back]])
    times = np.concatenate([seconds[fwd], seconds[back]])
    return RoadNetwork(
        node_ids=node_ids,
        lon=lon,
        lat=lat,
        tails=tails,
        heads=heads,
        length_m=lengths,
        time_s=times,
        source=source,
    )


def read_osm_pbf(path: str | Path, *, network_type: str = "driving") -> RoadNetwork:
    """Read the drivable roads of an .osm.pbf extract (with pyrosm) into a RoadNetwork."""
    import warnings

    try:
        from pyrosm import OSM
    except ImportError as exc:  # pragma: no cover - pyrosm is a declared dependency
        raise RoadNetworkError("reading .osm.pbf needs pyrosm (pip install pyrosm)") from exc
    with warnings.catch_warnings():
        # pyrosm warns about columns that a small extract happens not to have; they are optional here.
        warnings.simplefilter("ignore")
        try:
            result = OSM(str(path)).get_network(
                network_type=network_type, nodes=True, extra_attributes=["junction"]
            )
        except Exception as exc:
            raise RoadNetworkError(f"cannot read {path}: {exc}") from exc
    if result is None or result[1] is None or len(result[1]) == 0:
        raise RoadNetworkError(f"{path} holds no {network_type} roads")
    nodes, edges = result
    return network_from_frames(nodes, edges, source=str(path))


def read_npz(path: str | Path) -> RoadNetwork:
    """Read a network written by RoadNetwork.save."""
    try:
        with np.load(path) as data:
            return RoadNetwork(
                node_ids=data["node_ids"],
                lon=data["lon"],
                lat=data["lat"],
                tails=data["tails"],
                heads=data["heads"],
                length_m=data["length_m"],
                time_s=data["time_s"],
                source=str(path),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise RoadNetworkError(f"cannot read {path}: {exc}") from exc


def load_network(path: str | Path) -> RoadNetwork:
    """Read a road network file: an OSM extract (.osm.pbf) or a saved network (.npz)."""
    p = Path(path)
    if not p.is_file():
        raise RoadNetworkError(f"{path}: no such file")
    name = p.name.lower()
    if name.endswith(".pbf"):
        return read_osm_pbf(p)
    if name.endswith(".npz"):
        return read_npz(p)
    raise RoadNetworkError(f"{path}: expected an .osm.pbf extract or an .npz saved by roads_check --save")
