"""Evaluation figures (per department, grid, grid worker) against an independent pandas computation."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.analytics.synthetic import Dataset

pytestmark = pytest.mark.embedded

STAGES = {"sign": "signed_at", "arrive": "arrived_at", "handle": "completed_at"}
LABEL = {"sign": "sign", "arrive": "arrive", "handle": "complete"}


def _order_figures(ds: Dataset, now: dt.datetime) -> pd.DataFrame:
    """Per-order flags and durations, from the records (the definitions of docs/analytics.md)."""
    o = ds.orders.copy()
    logs = ds.logs
    overdue = logs[logs["action"] == "order_overdue"]
    marked = set(zip(overdue["order_id"].astype(int), overdue["stage"], strict=True))
    for stage, end in STAGES.items():
        current = (o["stage"] == stage) & (
            o["overdue_at"].notna() | (o["due_at"].notna() & (o["due_at"] < now))
        )
        late = o["id"].map(lambda pk, s=stage: (pk, s) in marked) | current
        done = o[end].notna()
        o[f"{LABEL[stage]}_due"] = done | late
        o[f"{LABEL[stage]}_on_time"] = done & ~late
    rework = logs[logs["action"] == "reject_verification"]
    lead_done = (o["role"] == "lead") & o["completed_at"].notna()
    o["lead_completed"] = lead_done
    o["reworked"] = [
        bool(done and ((rework["incident_id"] == inc) & (rework["at"] >= when)).any())
        for done, inc, when in zip(lead_done, o["incident_id"], o["completed_at"], strict=True)
    ]
    o["rejected"] = o["reject_count"] > 0
    for name, (end, start) in {
        "sign": ("signed_at", "issued_at"),
        "arrive": ("arrived_at", "signed_at"),
        "handle": ("completed_at", "arrived_at"),
        "total": ("completed_at", "issued_at"),
    }.items():
        seconds = (pd.to_datetime(o[end], utc=True) - pd.to_datetime(o[start], utc=True)).dt.total_seconds()
        o[f"min_{name}"] = seconds / 60.0
    return o


def _summarise(groups: Any) -> pd.DataFrame:
    def rate(part: pd.Series, whole: pd.Series) -> pd.Series:
        return (part / whole).where(whole > 0)

    out = pd.DataFrame(
        {
            "orders": groups.size(),
            "incidents": groups["incident_id"].nunique(),
            "sign_due": groups["sign_due"].sum(),
            "sign_on_time": groups["sign_on_time"].sum(),
            "arrive_due": groups["arrive_due"].sum(),
            "arrive_on_time": groups["arrive_on_time"].sum(),
            "complete_due": groups["complete_due"].sum(),
            "complete_on_time": groups["complete_on_time"].sum(),
            "rejected": groups["rejected"].sum(),
            "lead_completed": groups["lead_completed"].sum(),
            "reworked": groups["reworked"].sum(),
            "mean_sign_min": groups["min_sign"].mean(),
            "mean_arrive_min": groups["min_arrive"].mean(),
            "mean_handle_min": groups["min_handle"].mean(),
            "mean_total_min": groups["min_total"].mean(),
        }
    )
    for label in ("sign", "arrive", "complete"):
        out[f"{label}_on_time_rate"] = rate(out[f"{label}_on_time"], out[f"{label}_due"])
    out["rejection_rate"] = rate(out["rejected"], out["orders"])
    out["rework_rate"] = rate(out["reworked"], out["lead_completed"])
    return out


def _check(rows: list[dict[str, Any]], want: pd.DataFrame) -> None:
    got = pd.DataFrame(rows).set_index("key")
    assert sorted(got.index) == sorted(want.index)
    for column in want.columns:
        expected = want[column].astype(float).reindex(got.index)
        actual = got[column].astype(float)
        np.testing.assert_allclose(
            actual.to_numpy(), expected.to_numpy(), rtol=1e-6, err_msg=column, equal_nan=True
        )


def _period(ds: Dataset) -> dict[str, str]:
    return {"from": ds.start.isoformat(), "to": ds.end.isoformat()}


def test_per_department(dataset: Dataset, client_for: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    response = client_for("commander").get("/api/v1/evaluation/", {**_period(dataset), "by": "department"})
    assert response.status_code == 200, response.content
    o = _order_figures(dataset, now)
    want = _summarise(o.groupby("department"))
    _check(response.json()["rows"], want)


def test_per_grid_and_grid_worker(dataset: Dataset, client_for: Any) -> None:
    from command.models import User

    now = dt.datetime.now(dt.UTC)
    o = _order_figures(dataset, now)
    client = client_for("operator")
    grid_rows = client.get("/api/v1/evaluation/", {**_period(dataset), "by": "grid"}).json()["rows"]
    _check(grid_rows, _summarise(o.groupby("grid_code")))
    through = User.grids.through
    assignment = pd.DataFrame.from_records(
        list(
            through.objects.filter(user__role="grid_worker").values_list(
                "user__username", "territoryunit__code"
            )
        ),
        columns=["worker", "grid_code"],
    )
    per_worker = o.merge(assignment, on="grid_code")
    worker_rows = client.get("/api/v1/evaluation/", {**_period(dataset), "by": "grid_worker"}).json()["rows"]
    _check(worker_rows, _summarise(per_worker.groupby("worker")))


def test_department_sees_its_own_row_only(dataset: Dataset, client_for: Any) -> None:
    body = (
        client_for("fire_futian").get("/api/v1/evaluation/", {**_period(dataset), "by": "department"}).json()
    )
    assert [r["key"] for r in body["rows"]] in ([], ["fire_futian"])
    grids = client_for("fire_futian").get("/api/v1/evaluation/", {**_period(dataset), "by": "grid"}).json()
    o = dataset.orders
    assert sum(r["orders"] for r in grids["rows"]) == int((o["department"] == "fire_futian").sum())


def test_stage_times_per_department_endpoint(dataset: Dataset, client_for: Any) -> None:
    body = client_for("commander").get("/api/v1/stats/departments/", _period(dataset)).json()
    o = _order_figures(dataset, dt.datetime.now(dt.UTC))
    want = _summarise(o.groupby("department"))
    _check(body["departments"], want[["mean_sign_min", "mean_handle_min", "sign_on_time_rate"]])


def test_evaluation_csv(dataset: Dataset, client_for: Any) -> None:
    response = client_for("commander").get(
        "/api/v1/evaluation/", {**_period(dataset), "by": "department", "format": "csv"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    frame = pd.read_csv(io.BytesIO(response.content), encoding="utf-8-sig", keep_default_na=False)
    from command.evaluation import COLUMNS

    assert list(frame.columns) == COLUMNS
    o = _order_figures(dataset, dt.datetime.now(dt.UTC))
    want = _summarise(o.groupby("department"))
    indexed: Any = frame.set_index("key")
    for key, row in want.iterrows():
        assert indexed.loc[key, "orders"] == row["orders"]
        if not np.isnan(row["sign_on_time_rate"]):
            assert float(indexed.loc[key, "sign_on_time_rate"]) == pytest.approx(
                row["sign_on_time_rate"], abs=5e-5
            )


def test_unknown_grouping(demo_city: Any, client_for: Any) -> None:
    response = client_for("commander").get("/api/v1/evaluation/", {"by": "planet"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "by"
