"""Unit recommendation: the top-k available units for an incident, by road travel time or straight line.

With ``settings.ROAD_NETWORK_FILE`` set (an ``.osm.pbf`` extract or an ``.npz`` saved by
``roads_check --save``), the network is read once per process and units are ranked by shortest-path
time over it (one search per request, see command/roads.py). Without one, or when the incident lies
too far from any road of it, units are ranked by great-circle distance × ``STRAIGHT_LINE_DETOUR``
at ``STRAIGHT_LINE_SPEED_KMH``. Every answer says which method it used.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from command.models import Department, Unit, UnitStatus
from command.roads import Ranking, RoadNetwork, RoadNetworkError, load_network, straight_line_rank
from incidents.models import Incident

log = logging.getLogger(__name__)

ROAD, STRAIGHT_LINE = "road", "straight_line"
MAX_K = 50

_networks: dict[str, RoadNetwork | RoadNetworkError] = {}
_networks_lock = threading.Lock()


@dataclass(frozen=True)
class UnitRecommendation:
    """One recommended unit with its distance, ETA and how they were estimated."""

    unit: Unit
    department: Department
    distance_m: float
    eta_s: float
    method: str


@dataclass(frozen=True)
class Recommendation:
    """The recommended units, best first, and how they were ranked."""

    method: str
    units: list[UnitRecommendation]
    considered: int
    note: str
    speed_kmh: float
    detour_factor: float
    network: dict[str, Any] | None


def straight_line_speed_kmh() -> float:
    """The assumed speed of the straight-line estimate (settings.STRAIGHT_LINE_SPEED_KMH, default 30)."""
    return float(getattr(settings, "STRAIGHT_LINE_SPEED_KMH", 30.0))


def detour_factor() -> float:
    """Road distance over straight-line distance, assumed (settings.STRAIGHT_LINE_DETOUR, default 1.3)."""
    return float(getattr(settings, "STRAIGHT_LINE_DETOUR", 1.3))


def max_snap_m() -> float:
    """How far a point may lie from its nearest road and still be routed (settings.ROAD_SNAP_MAX_M)."""
    return float(getattr(settings, "ROAD_SNAP_MAX_M", 1000.0))


def road_network() -> RoadNetwork | None:
    """The network of settings.ROAD_NETWORK_FILE, read once per process; None when unset or unreadable."""
    path = getattr(settings, "ROAD_NETWORK_FILE", None)
    if not path:
        return None
    key = str(path)
    found = _networks.get(key)
    if found is None:
        with _networks_lock:
            found = _networks.get(key)
            if found is None:
                try:
                    found = load_network(key)
                except RoadNetworkError as exc:
                    # Remember the failure: a broken file must not cost a re-read on every request.
                    log.error("road network %s not loaded, ranking by straight line: %s", key, exc)
                    found = exc
                _networks[key] = found
    return found if isinstance(found, RoadNetwork) else None


def road_network_problem() -> str:
    """Why no road network is in use (empty when one is)."""
    path = getattr(settings, "ROAD_NETWORK_FILE", None)
    if not path:
        return "no road network is configured (ROAD_NETWORK_FILE)"
    found = _networks.get(str(path))
    return f"the road network could not be read: {found}" if isinstance(found, RoadNetworkError) else ""


def _network_info(network: RoadNetwork) -> dict[str, Any]:
    return {"file": Path(network.source).name, "nodes": network.node_count, "edges": network.edge_count}


def units_recommend(
    *,
    lon: float,
    lat: float,
    k: int = 5,
    kind: str | None = None,
    department: Department | None = None,
    network: RoadNetwork | None = None,
    straight_line: bool = False,
) -> Recommendation:
    """The k available units fastest to (lon, lat), over `network` or else the configured one."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}")
    units = Unit.objects.filter(status=UnitStatus.AVAILABLE, lon__isnull=False, lat__isnull=False)
    if kind:
        units = units.filter(kind=kind)
    if department is not None:
        units = units.filter(department=department)
    # Only three columns for every candidate; whole rows are read for the k winners alone.
    rows = list(units.values_list("pk", "lon", "lat"))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    lons = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    lats = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    speed, detour = straight_line_speed_kmh(), detour_factor()
    net = None if straight_line else (network or road_network())
    note = "straight line asked for" if straight_line else road_network_problem() if net is None else ""
    ranking: Ranking
    if net is not None:
        ranking = net.rank_to(
            lon=lon,
            lat=lat,
            from_lon=lons,
            from_lat=lats,
            k=k,
            access_speed_kmh=speed,
            detour_factor=detour,
            max_snap_m=max_snap_m(),
            tiebreak=ids,
        )
        note = ranking.note
    else:
        ranking = straight_line_rank(
            lon=lon,
            lat=lat,
            from_lon=lons,
            from_lat=lats,
            k=k,
            speed_kmh=speed,
            detour_factor=detour,
            tiebreak=ids,
        )
    winners = [int(ids[r.index]) for r in ranking.ranked]
    chosen = Unit.objects.select_related("department").in_bulk(winners)
    result = [
        UnitRecommendation(
            unit=chosen[int(ids[r.index])],
            department=chosen[int(ids[r.index])].department,
            distance_m=r.distance_m,
            eta_s=r.eta_s,
            method=r.method,
        )
        for r in ranking.ranked
        if int(ids[r.index]) in chosen
    ]
    return Recommendation(
        method=ranking.method,
        units=result,
        considered=len(rows),
        note=note,
        speed_kmh=speed,
        detour_factor=detour,
        network=_network_info(net) if net is not None else None,
    )


def incident_recommend_units(
    *,
    incident: Incident,
    k: int = 5,
    kind: str | None = None,
    department: Department | None = None,
    network: RoadNetwork | None = None,
    straight_line: bool = False,
) -> Recommendation:
    """The k available units fastest to an incident's location (see units_recommend)."""
    return units_recommend(
        lon=incident.lon,
        lat=incident.lat,
        k=k,
        kind=kind,
        department=department,
        network=network,
        straight_line=straight_line,
    )
