"""Synthetic incidents, orders and timeline records, written in bulk and kept beside as plain records.

The rows are bulk-created in the test's transaction from Python records; the tests recompute every
figure from those records with pandas (independently of the ORM queries under test) and compare.
Times sit in March–April 2025, away from anything other tests create, and include reports minutes
either side of local midnight so that time-zone bucketing is exercised.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

TZ = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2025, 3, 1, tzinfo=TZ)
END = dt.datetime(2025, 4, 15, tzinfo=TZ)
PHONE = "13812345678"


@dataclass
class Dataset:
    """What was written, as DataFrames: incidents, orders, timeline records; plus the period."""

    incidents: pd.DataFrame
    orders: pd.DataFrame
    logs: pd.DataFrame
    start: dt.datetime = START
    end: dt.datetime = END
    extra: dict[str, Any] = field(default_factory=dict)


def territory_points(n: int, seed: int) -> dict[str, np.ndarray]:
    """n points inside the demo city's grids, geocoded by the product's own index."""
    from gis.locator import get_index
    from gis.models import TerritoryUnit

    index = get_index()
    rng = np.random.default_rng(seed)
    boxes = TerritoryUnit.objects.filter(layer="district").values_list(
        "min_lon", "min_lat", "max_lon", "max_lat"
    )
    arr = np.array(list(boxes))
    bounds = (arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max())
    lons: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    codes: dict[str, list[np.ndarray]] = {}
    have = 0
    while have < n:
        lon = rng.uniform(bounds[0], bounds[2], 3 * n)
        lat = rng.uniform(bounds[1], bounds[3], 3 * n)
        res = index.geocode_many(lon, lat)
        keep = np.array(
            [
                g is not None and b is not None
                for g, b in zip(res["grid_code"], res["block_code"], strict=True)
            ]
        )
        keep &= ~np.asarray(res["snapped"], dtype=bool)
        lons.append(lon[keep])
        lats.append(lat[keep])
        for name in ("district_code", "street_code", "community_code", "grid_code", "block_code"):
            codes.setdefault(name, []).append(np.asarray(res[name])[keep])
        have += int(keep.sum())
    out = {"lon": np.concatenate(lons)[:n], "lat": np.concatenate(lats)[:n]}
    for name, parts in codes.items():
        out[name] = np.concatenate(parts)[:n]
    return out


STAGE_ENDS = (("sign", "signed_at"), ("arrive", "arrived_at"), ("handle", "completed_at"))
STATUSES = [
    "reported",
    "accepted",
    "registered",
    "cancelled",
    "dispatched",
    "in_progress",
    "handled",
    "verified",
    "closed",
    "evaluated",
    "merged",
]


def build_dataset(
    *,
    n: int = 1200,
    seed: int = 7,
    start: dt.datetime = START,
    end: dt.datetime = END,
    with_orders: bool = True,
    code_prefix: str = "T",
) -> Dataset:
    """Write n incidents (and orders, reports, timeline records) and return the records as DataFrames."""
    from command.models import Department, DispatchOrder, User
    from incidents.models import Category, Grade, Incident, IncidentLogRecord, Report

    rnd = random.Random(seed)
    points = territory_points(n, seed)
    categories = list(
        Category.objects.filter(parent__isnull=False).values_list("pk", "code", "family", "parent__code")
    )
    grades = list(Grade.objects.values_list("pk", "code"))
    workers = list(User.objects.filter(role="grid_worker").order_by("username").values_list("pk", flat=True))
    span = (end - start).total_seconds()
    records: list[dict[str, Any]] = []
    for i in range(n):
        if i % 10 == 0:
            # Close to local midnight: the UTC date differs from the local one.
            day = start + dt.timedelta(days=rnd.randrange(0, (end - start).days))
            moment = day + dt.timedelta(minutes=rnd.choice([-20, -5, 5, 20]))
            moment = max(start, min(moment, end - dt.timedelta(minutes=1)))
        else:
            moment = start + dt.timedelta(seconds=rnd.uniform(0, span))
        cat_pk, cat_code, family, parent_code = rnd.choice(categories)
        grade = rnd.choice([*grades, (None, None)])
        status = rnd.choice(STATUSES)
        overdue = moment + dt.timedelta(hours=2) if rnd.random() < 0.2 else None
        records.append(
            {
                "id": None,
                "code": f"{code_prefix}-{seed}-{i:05d}",
                "status": status,
                "category_id": cat_pk,
                "category": cat_code,
                "family": family,
                "family_code": parent_code,
                "grade_id": grade[0],
                "grade": grade[1],
                "lon": float(points["lon"][i]),
                "lat": float(points["lat"][i]),
                "district_code": points["district_code"][i],
                "street_code": points["street_code"][i],
                "community_code": points["community_code"][i],
                "grid_code": points["grid_code"][i],
                "block_code": points["block_code"][i],
                "reported_at": moment.astimezone(dt.UTC),
                "overdue_at": overdue,
                "reported_by_id": rnd.choice(workers),
                "reporter_name": "张三丰" if i % 3 == 0 else "",
                "reporter_phone": PHONE if i % 3 == 0 else "",
            }
        )
    incidents = Incident.objects.bulk_create(
        [
            Incident(
                code=r["code"],
                status=r["status"],
                category_id=r["category_id"],
                grade_id=r["grade_id"],
                description="测试事件",
                address="测试地址",
                lon=r["lon"],
                lat=r["lat"],
                district_code=r["district_code"],
                street_code=r["street_code"],
                community_code=r["community_code"],
                grid_code=r["grid_code"],
                block_code=r["block_code"],
                occurred_at=r["reported_at"] - dt.timedelta(minutes=5),
                reported_at=r["reported_at"],
                reported_by_id=r["reported_by_id"],
                overdue_at=r["overdue_at"],
            )
            for r in records
        ],
        batch_size=1000,
    )
    for r, incident in zip(records, incidents, strict=True):
        r["id"] = incident.pk
    reports = []
    for r in records:
        if r["reporter_phone"] or rnd.random() < 0.3:
            reports.append(
                Report(
                    incident_id=r["id"],
                    reporter_id=r["reported_by_id"],
                    request_hash="0" * 64,
                    category_id=r["category_id"],
                    description="测试事件",
                    lon=r["lon"],
                    lat=r["lat"],
                    input_lon=r["lon"],
                    input_lat=r["lat"],
                    reporter_name=r["reporter_name"],
                    reporter_phone=r["reporter_phone"],
                    occurred_at=r["reported_at"],
                    received_at=r["reported_at"],
                )
            )
    Report.objects.bulk_create(reports, batch_size=1000)
    order_rows: list[dict[str, Any]] = []
    log_rows: list[dict[str, Any]] = []
    if with_orders:
        departments = list(Department.objects.exclude(kind="command_centre").values_list("pk", "code"))
        now = dt.datetime.now(dt.UTC)
        far = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
        for r in records:
            if r["status"] in ("reported", "accepted", "registered", "cancelled", "merged"):
                continue
            chosen = rnd.sample(departments, rnd.choice([1, 1, 2, 3]))
            for k, (dept_pk, dept_code) in enumerate(chosen):
                issued = r["reported_at"] + dt.timedelta(minutes=rnd.uniform(1, 30))
                o: dict[str, Any] = {
                    "incident_id": r["id"],
                    "department_id": dept_pk,
                    "department": dept_code,
                    "role": "lead" if k == 0 else "assist",
                    "issued_at": issued,
                    "signed_at": None,
                    "arrived_at": None,
                    "completed_at": None,
                    "reject_count": rnd.choice([0, 0, 0, 0, 0, 1, 2]),
                    "stage": "",
                    "due_at": None,
                    "overdue_at": None,
                    "grid_code": r["grid_code"],
                }
                if rnd.random() < 0.85:
                    o["signed_at"] = issued + dt.timedelta(minutes=rnd.expovariate(1 / 10))
                    if rnd.random() < 0.85:
                        o["arrived_at"] = o["signed_at"] + dt.timedelta(minutes=rnd.expovariate(1 / 20))
                        if rnd.random() < 0.8:
                            o["completed_at"] = o["arrived_at"] + dt.timedelta(
                                minutes=rnd.expovariate(1 / 60)
                            )
                if o["completed_at"]:
                    o["status"] = "completed"
                elif o["arrived_at"]:
                    o["status"], o["stage"] = "on_scene", "handle"
                elif o["signed_at"]:
                    o["status"], o["stage"] = "signed", "arrive"
                elif o["reject_count"]:
                    o["status"] = "rejected"
                else:
                    o["status"], o["stage"] = "issued", "sign"
                if o["stage"]:
                    o["due_at"] = rnd.choice([None, far, issued + dt.timedelta(minutes=30)])
                    if o["due_at"] is not None and o["due_at"] < now and rnd.random() < 0.5:
                        o["overdue_at"] = o["due_at"]
                order_rows.append(o)
        orders = DispatchOrder.objects.bulk_create(
            [
                DispatchOrder(
                    incident_id=o["incident_id"],
                    department_id=o["department_id"],
                    role=o["role"],
                    status=o["status"],
                    issued_at=o["issued_at"],
                    signed_at=o["signed_at"],
                    arrived_at=o["arrived_at"],
                    completed_at=o["completed_at"],
                    reject_count=o["reject_count"],
                    stage=o["stage"],
                    due_at=o["due_at"],
                    overdue_at=o["overdue_at"],
                )
                for o in order_rows
            ],
            batch_size=1000,
        )
        for o, order in zip(order_rows, orders, strict=True):
            o["id"] = order.pk
        for o in order_rows:
            for stage, column in STAGE_ENDS:
                if o[column] is not None and rnd.random() < 0.25:
                    log_rows.append(
                        {
                            "incident_id": o["incident_id"],
                            "at": o[column],
                            "action": "order_overdue",
                            "order_id": o["id"],
                            "stage": stage,
                        }
                    )
                if rnd.random() < 0.05:
                    # Repeats and other orders' marks must not count for this order's stage.
                    log_rows.append(
                        {
                            "incident_id": o["incident_id"],
                            "at": o["issued_at"],
                            "action": "order_escalated",
                            "order_id": o["id"],
                            "stage": stage,
                        }
                    )
            if o["completed_at"] is not None and o["role"] == "lead":
                u = rnd.random()
                if u < 0.2:
                    log_rows.append(
                        {
                            "incident_id": o["incident_id"],
                            "at": o["completed_at"] + dt.timedelta(hours=1),
                            "action": "reject_verification",
                            "order_id": None,
                            "stage": None,
                        }
                    )
                elif u < 0.3:
                    log_rows.append(
                        {
                            "incident_id": o["incident_id"],
                            "at": o["completed_at"] - dt.timedelta(hours=1),
                            "action": "reject_verification",
                            "order_id": None,
                            "stage": None,
                        }
                    )
        IncidentLogRecord.objects.bulk_create(
            [
                IncidentLogRecord(
                    incident_id=lr["incident_id"],
                    at=lr["at"],
                    source="system",
                    action=lr["action"],
                    data={"order_id": lr["order_id"], "stage": lr["stage"]} if lr["order_id"] else {},
                )
                for lr in log_rows
            ],
            batch_size=1000,
        )
    return Dataset(
        incidents=pd.DataFrame.from_records(records),
        orders=pd.DataFrame.from_records(order_rows),
        logs=pd.DataFrame.from_records(log_rows),
        start=start,
        end=end,
    )
