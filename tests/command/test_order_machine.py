"""Random order actions by random roles keep the dispatch order lifecycle's invariants (hypothesis).

Each example registers a fresh fire incident (the demo rules dispatch it to fire as lead, police and
medical assisting) and then drives its orders through ``command.services.order_act`` (and the client
receipt, ``order_mark_delivered``), by the order's own department, another department, the operator,
the commander and a grid worker. A model written here, independently of command/rules.py, predicts each
outcome; the database must agree after every step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from command.models import DispatchOrder, OrderProgress, SupervisionNotice, User
from command.rules import OrderActionRefused
from command.services import order_act, order_mark_delivered
from incidents.models import Incident, IncidentLogRecord
from incidents.services import ActionError, incident_act
from realtime.models import Event
from tests.support.factories import report

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("demo_city")]

DEPT, OPERATOR, COMMANDER, GRID = "department", "operator", "commander", "grid_worker"
OPEN = {"issued", "delivered"}
WORKING = {"signed", "en_route", "on_scene"}
CLOSED = {"completed", "reassigned", "released"}

# The lifecycle as PRODUCT.md tells it, written out apart from command/rules.py:
# action → (states it may start from, state it leads to (None: unchanged), roles that may do it).
TABLE: dict[str, tuple[set[str], str | None, set[str]]] = {
    "sign": (OPEN, "signed", {DEPT}),
    "reject": (OPEN, "rejected", {DEPT}),
    "depart": ({"signed"}, "en_route", {DEPT}),
    "arrive": ({"signed", "en_route"}, "on_scene", {DEPT}),
    "progress": (WORKING, None, {DEPT}),
    "complete": (WORKING, "completed", {DEPT}),
    "arbitrate": ({"rejected"}, None, {COMMANDER}),  # uphold → issued, reassign → reassigned
    "release": (OPEN | WORKING | {"rejected"}, "released", {OPERATOR, COMMANDER}),
    "supervise": (OPEN | WORKING | {"rejected"}, None, {COMMANDER}),
}
NEEDS_REASON = {"reject", "arbitrate", "release", "supervise"}
# Every (from, to) an order may ever take, the client's receipt (issued → delivered) included.
ALLOWED_MOVES = {(s, t) for sources, t, _ in TABLE.values() if t for s in sources} | {
    ("issued", "delivered"),
    ("rejected", "issued"),
    ("rejected", "reassigned"),
}
ACTORS = ["own", "other_department", OPERATOR, COMMANDER, GRID]
# Departments with no order from the fire rule, to reassign to.
SPARE = ["water_group", "gas_group", "power_supply", "transport", "emergency_mgmt"]
SEEN: dict[str, int] = {}
# The steps a run may start with (see walk_some_orders_along).
PREFIX = ["sign", "depart", "arrive", "progress", "complete", "reject", "uphold", "reassign", "release"]
PREFIX += ["supervise", "deliver"]


@dataclass
class ModelOrder:
    """What the test believes about one order."""

    department: str
    role: str
    status: str = "issued"
    # Delivery is recorded once: by the client's acknowledgement or, failing that, by signing; an order
    # upheld back to "issued" after a rejection keeps it (order_mark_delivered then changes nothing).
    delivered: bool = False
    upheld: bool = False
    rejections_at_uphold: int | None = None


@dataclass
class Outcome:
    """A predicted result: the new status on success, else which refusal (and the field at fault)."""

    ok: bool
    status: str | None = None
    refused: bool = False
    bad_field: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def weighted(good: Any, *bad: Any) -> st.SearchStrategy[Any]:
    """The good value half the time, else one of the bad ones (so deep states are reached)."""
    return st.one_of(st.just(good), st.sampled_from([good, *bad]))


class OrderLifecycle(RuleBasedStateMachine):
    """One incident's dispatch orders under random actions; the model follows what should happen."""

    def __init__(self) -> None:
        super().__init__()
        self.users = {u.username: u for u in User.objects.filter(role__in=[DEPT, OPERATOR, COMMANDER])}
        self.users["grid01"] = User.objects.get(username="grid01")
        operator = self.users["operator"]
        incident = report(category="AC01", description="仓库起火，浓烟很大")
        incident_act(incident_id=incident.pk, actor=operator, action="accept")
        incident_act(incident_id=incident.pk, actor=operator, action="register")
        self.incident_id = incident.pk
        self.orders: dict[int, ModelOrder] = {
            o.pk: ModelOrder(o.department.code, o.role)
            for o in DispatchOrder.objects.filter(incident_id=incident.pk).select_related("department")
        }
        assert sorted((m.role, m.department.split("_")[0]) for m in self.orders.values()) == [
            ("assist", "medical"),
            ("assist", "police"),
            ("lead", "fire"),
        ]
        self.incident_status = "dispatched"
        self.timeline = self._timeline_ids()

    # --------------------------------------------------------------------------------------- helpers

    def _timeline_ids(self) -> list[int]:
        return list(
            IncidentLogRecord.objects.filter(incident_id=self.incident_id)
            .order_by("id")
            .values_list("pk", flat=True)
        )

    def _incident_status(self) -> str:
        return str(Incident.objects.values_list("status", flat=True).get(pk=self.incident_id))

    def _snapshot(self) -> tuple[Any, ...]:
        rows = DispatchOrder.objects.filter(incident_id=self.incident_id).order_by("pk").values()
        orders = [{k: v for k, v in row.items() if k != "updated_at"} for row in rows]
        return (
            orders,
            self._timeline_ids(),
            self._incident_status(),
            Event.objects.order_by("-pk").values_list("pk", flat=True).first(),
            OrderProgress.objects.filter(order__incident_id=self.incident_id).count(),
            SupervisionNotice.objects.filter(order__incident_id=self.incident_id).count(),
        )

    def _pick(self, pick: int, action: str, aim: bool) -> int:
        """An order: when aiming, one whose state admits the action (if any), else any order."""
        ids = sorted(self.orders)
        if aim:
            fitting = [i for i in ids if self.orders[i].status in TABLE[action][0]]
            ids = fitting or ids
        return ids[pick % len(ids)]

    def _actor(self, who: str, order: ModelOrder) -> tuple[User, str]:
        if who == "own":
            return self.users[order.department], DEPT
        if who == "other_department":
            other = next(c for c in ["water_group", "gas_group"] if c != order.department)
            return self.users[other], "foreign"
        return self.users[{OPERATOR: "operator", COMMANDER: "commander", GRID: "grid01"}[who]], who

    def _open_departments(self) -> set[str]:
        return {m.department for m in self.orders.values() if m.status not in CLOSED}

    # ----------------------------------------------------------------------------------- the model

    def expect(self, order_id: int, action: str, role: str, payload: dict[str, Any]) -> Outcome:
        """What must happen when `role` ("foreign": another department) does `action` to the order."""
        order = self.orders[order_id]
        sources, target, roles = TABLE[action]
        if role == "foreign":
            return Outcome(ok=False, refused=True)
        if role not in roles or order.status not in sources:
            return Outcome(ok=False, refused=True)
        if action == "reject" and order.upheld:
            return Outcome(ok=False, refused=True)
        if action == "release" and order.role == "lead":
            return Outcome(
                ok=False, refused=True
            )  # a lead order is reassigned by arbitration, never released
        reason = str(payload.get("reason") or "").strip()
        if action in NEEDS_REASON and not reason:
            return Outcome(ok=False, bad_field="reason")
        if action == "reject" and payload.get("category") not in {
            "not_our_area",
            "not_our_job",
            "duplicate",
            "insufficient_info",
            "other",
        }:
            return Outcome(ok=False, bad_field="category")
        if action == "arrive" and "lon" not in payload:
            return Outcome(ok=False, bad_field="lon")
        if action == "progress" and not str(payload.get("note") or "").strip():
            return Outcome(ok=False, bad_field="note")
        if action == "arbitrate":
            ruling = payload.get("ruling")
            if ruling == "uphold":
                return Outcome(ok=True, status="issued", extra={"uphold": True})
            if ruling != "reassign":
                return Outcome(ok=False, bad_field="ruling")
            code = payload.get("department")
            known = {u.department.code for u in self.users.values() if u.role == DEPT and u.department}
            if not code or code not in known or code == order.department or code in self._open_departments():
                return Outcome(ok=False, bad_field="department")
            return Outcome(ok=True, status="reassigned", extra={"to": code})
        return Outcome(ok=True, status=target or order.status)

    def _handled_expected(self) -> bool:
        live = [m for m in self.orders.values() if m.status != "reassigned"]
        lead_done = any(m.role == "lead" and m.status == "completed" for m in live)
        return lead_done and all(m.status in ("completed", "released") for m in live)

    # ------------------------------------------------------------------------------------ one step

    def attempt(self, order_id: int, action: str, who: str, payload: dict[str, Any]) -> None:
        """Do the action through the service and check the result against the model."""
        model = self.orders[order_id]
        user, role = self._actor(who, model)
        expected = self.expect(order_id, action, role, payload)
        before = self._snapshot()
        try:
            order_act(order_id=order_id, actor=user, action=action, payload=dict(payload))
        except OrderActionRefused:
            assert expected.refused, f"{action} by {role} on {model} was refused; expected {expected}"
            assert self._snapshot() == before, "a refused action changed something"
            SEEN["refused"] = SEEN.get("refused", 0) + 1
            return
        except ActionError as exc:
            assert not expected.ok and not expected.refused, f"{action} failed ({exc}); expected {expected}"
            assert exc.field == expected.bad_field, (
                f"{action}: {exc} names {exc.field}, not {expected.bad_field}"
            )
            assert self._snapshot() == before, "an invalid action changed something"
            SEEN["invalid"] = SEEN.get("invalid", 0) + 1
            return
        assert expected.ok, f"{action} by {role} on {model} with {payload} succeeded; expected {expected}"
        self._check_moves(before[0])
        SEEN[action] = SEEN.get(action, 0) + 1
        old_incident = self.incident_status
        if action == "sign" and model.role == "lead" and self.incident_status == "dispatched":
            self.incident_status = "in_progress"
        if action == "arbitrate" and expected.extra.get("uphold"):
            model.upheld = True
            model.rejections_at_uphold = DispatchOrder.objects.get(pk=order_id).reject_count
        if "to" in expected.extra:
            new = DispatchOrder.objects.get(pk=order_id).replaced_by
            assert new is not None and new.department.code == expected.extra["to"]
            assert new.role == model.role and new.status == "issued" and not new.ruling
            self.orders[new.pk] = ModelOrder(expected.extra["to"], model.role)
        assert expected.status is not None
        model.status = expected.status
        if action == "sign":
            model.delivered = True
        if action in ("complete", "release") and self._handled_expected():
            self.incident_status = "handled"
        if self.incident_status != old_incident:
            SEEN[f"incident {self.incident_status}"] = SEEN.get(f"incident {self.incident_status}", 0) + 1
        self._check_timeline(f"order_{action}", order_id, old_incident)

    def _check_moves(self, before: list[dict[str, Any]]) -> None:
        """Every order that changed state took a move the lifecycle allows."""
        was = {row["id"]: row["status"] for row in before}
        for pk, status in DispatchOrder.objects.filter(incident_id=self.incident_id).values_list(
            "pk", "status"
        ):
            if pk in was and was[pk] != status:
                assert (was[pk], status) in ALLOWED_MOVES, (pk, was[pk], status)
            if pk not in was:
                assert status == "issued", "a new order starts as issued"

    def _check_timeline(self, name: str, order_id: int, old_incident: str) -> None:
        """Exactly one timeline row for the order's change, plus one for the incident's own move if any."""
        ids = self._timeline_ids()
        new = list(IncidentLogRecord.objects.filter(pk__in=ids[len(self.timeline) :]).order_by("id"))
        assert ids[: len(self.timeline)] == self.timeline, "timeline rows were removed or rewritten"
        rows = [r for r in new if r.action == name]
        assert len(rows) == 1 and rows[0].data["order_id"] == order_id, [r.action for r in new]
        moves = [r for r in new if r is not rows[0]]
        if self.incident_status != old_incident:
            assert [(r.action, r.from_status, r.to_status) for r in moves] == [
                (
                    "start_work" if self.incident_status == "in_progress" else "mark_handled",
                    old_incident,
                    self.incident_status,
                )
            ]
        else:
            assert moves == [], [r.action for r in moves]
        self.timeline = ids

    # ------------------------------------------------------------------------------------ the rules

    def _act(self, action: str, pick: int, aim: bool, who: str, payload: dict[str, Any]) -> None:
        self.attempt(self._pick(pick, action, aim), action, who, payload)

    @initialize(steps=st.lists(st.tuples(st.sampled_from(PREFIX), st.integers(0, 9)), max_size=6))
    def walk_some_orders_along(self, steps: list[tuple[str, int]]) -> None:
        """Well-formed actions by the right people first, so that runs start from deep states too."""
        for step, pick in steps:
            if step == "deliver":
                self.deliver(pick)
                continue
            action = "arbitrate" if step in ("uphold", "reassign") else step
            order_id = self._pick(pick, action, True)
            spare = [c for c in SPARE if c not in self._open_departments()]
            payloads: dict[str, dict[str, Any]] = {
                "reject": {"reason": "不属于本单位辖区", "category": "not_our_area"},
                "arrive": {"lon": 114.05, "lat": 22.55},
                "progress": {"note": "已到场处置"},
                "uphold": {"reason": "应由本单位处置", "ruling": "uphold"},
                "reassign": {"reason": "改派", "ruling": "reassign", "department": (spare or ["none"])[0]},
                "release": {"reason": "误派"},
                "supervise": {"reason": "请加快"},
            }
            payload = payloads.get(step, {})
            who = {"arbitrate": COMMANDER, "release": OPERATOR, "supervise": COMMANDER}.get(action, "own")
            self.attempt(order_id, action, who, payload)

    @rule(pick=st.integers(0, 9), aim=weighted(True, False), who=weighted("own", *ACTORS))
    def sign(self, pick: int, aim: bool, who: str) -> None:
        self._act("sign", pick, aim, who, {})

    @rule(
        pick=st.integers(0, 9),
        aim=weighted(True, False),
        who=weighted("own", *ACTORS),
        reason=weighted("不属于本单位辖区", "", "   "),
        category=weighted("not_our_area", "other", None, "bogus"),
    )
    def reject(self, pick: int, aim: bool, who: str, reason: str, category: str | None) -> None:
        payload: dict[str, Any] = {"reason": reason}
        if category is not None:
            payload["category"] = category
        self._act("reject", pick, aim, who, payload)

    @rule(pick=st.integers(0, 9), aim=weighted(True, False), who=weighted("own", *ACTORS))
    def depart(self, pick: int, aim: bool, who: str) -> None:
        self._act("depart", pick, aim, who, {})

    @rule(pick=st.integers(0, 9), aim=weighted(True, False), who=weighted("own", *ACTORS), at=st.booleans())
    def arrive(self, pick: int, aim: bool, who: str, at: bool) -> None:
        self._act("arrive", pick, aim, who, {"lon": 114.05, "lat": 22.55} if at else {})

    @rule(
        pick=st.integers(0, 9),
        aim=weighted(True, False),
        who=weighted("own", *ACTORS),
        note=weighted("已控制火势", ""),
    )
    def progress(self, pick: int, aim: bool, who: str, note: str) -> None:
        self._act("progress", pick, aim, who, {"note": note})

    @rule(
        pick=st.integers(0, 9),
        aim=weighted(True, False),
        who=weighted("own", *ACTORS),
        note=st.sampled_from(["", "明火已扑灭"]),
    )
    def complete(self, pick: int, aim: bool, who: str, note: str) -> None:
        self._act("complete", pick, aim, who, {"note": note})

    @rule(
        pick=st.integers(0, 9),
        aim=weighted(True, False),
        who=weighted(COMMANDER, *ACTORS),
        reason=weighted("裁定", ""),
        ruling=weighted("uphold", "reassign", "reassign", "bogus", None),
        to=st.sampled_from(["spare", "spare", "same", "holder", "unknown", "centre", "missing"]),
    )
    def arbitrate(self, pick: int, aim: bool, who: str, reason: str, ruling: str | None, to: str) -> None:
        order_id = self._pick(pick, "arbitrate", aim)
        model = self.orders[order_id]
        holders = sorted(self._open_departments() - {model.department})
        spare = [c for c in SPARE if c not in self._open_departments()]
        codes: dict[str, str | None] = {
            "spare": spare[0] if spare else "no_such_department",
            "same": model.department,
            "holder": holders[0] if holders else "no_such_department",
            "unknown": "no_such_department",
            "centre": "command_centre",
            "missing": None,
        }
        payload: dict[str, Any] = {"reason": reason}
        if ruling is not None:
            payload["ruling"] = ruling
        if codes[to] is not None:
            payload["department"] = codes[to]
        self.attempt(order_id, "arbitrate", who, payload)

    @rule(
        pick=st.integers(0, 9),
        aim=weighted(True, False),
        who=weighted(OPERATOR, *ACTORS),
        reason=weighted("误派，撤回", ""),
    )
    def release(self, pick: int, aim: bool, who: str, reason: str) -> None:
        self._act("release", pick, aim, who, {"reason": reason})

    @rule(
        pick=st.integers(0, 9),
        aim=weighted(True, False),
        who=weighted(COMMANDER, *ACTORS),
        reason=weighted("请加快", ""),
    )
    def supervise(self, pick: int, aim: bool, who: str, reason: str) -> None:
        self._act("supervise", pick, aim, who, {"reason": reason})

    @rule(pick=st.integers(0, 9))
    def deliver(self, pick: int) -> None:
        """The department's client acknowledges the order (once, and only while it is issued)."""
        order_id = sorted(self.orders)[pick % len(self.orders)]
        model = self.orders[order_id]
        before = self._snapshot()
        done = order_mark_delivered(order_id=order_id)
        assert done == (model.status == "issued" and not model.delivered)
        if not done:
            assert self._snapshot() == before
            return
        SEEN["deliver"] = SEEN.get("deliver", 0) + 1
        self._check_moves(before[0])
        model.status, model.delivered = "delivered", True
        self._check_timeline("order_delivered", order_id, self.incident_status)

    # ------------------------------------------------------------------------------------ invariants

    @invariant()
    def orders_match_the_model(self) -> None:
        rows = {
            pk: (status, ruling, count)
            for pk, status, ruling, count in DispatchOrder.objects.filter(
                incident_id=self.incident_id
            ).values_list("pk", "status", "ruling", "reject_count")
        }
        assert set(rows) == set(self.orders)
        for pk, (status, ruling, count) in rows.items():
            model = self.orders[pk]
            assert status == model.status, f"order {pk} is {status}, the model says {model.status}"
            assert bool(ruling) == (model.upheld or status == "reassigned")
            if model.upheld:
                # Upheld once, never rejected again.
                assert count == model.rejections_at_uphold
        open_by_department = [m.department for m in self.orders.values() if m.status not in CLOSED]
        assert len(open_by_department) == len(set(open_by_department)), "two open orders to one department"

    @invariant()
    def incident_follows_its_orders(self) -> None:
        status = self._incident_status()
        assert status == self.incident_status
        assert (status == "handled") == self._handled_expected()


@pytest.mark.slow
def test_order_lifecycle_state_machine() -> None:
    SEEN.clear()
    run_state_machine_as_test(
        OrderLifecycle,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            derandomize=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print("order actions seen:", dict(sorted(SEEN.items())))
    # Not only refusals: random runs do reach work (every path is walked for sure in the test below).
    assert SEEN.get("sign", 0) > 0 and SEEN.get("refused", 0) > 0 and SEEN.get("invalid", 0) > 0


def test_every_path_of_the_machine_once() -> None:
    """The machine's own checks along one chosen run that takes every branch of the lifecycle."""
    machine = OrderLifecycle()
    by_kind = {m.department.split("_")[0]: pk for pk, m in machine.orders.items()}
    lead, police, medical = by_kind["fire"], by_kind["police"], by_kind["medical"]

    def step(order_id: int, action: str, who: str = "own", **payload: Any) -> str:
        machine.attempt(order_id, action, who, payload)
        machine.orders_match_the_model()
        machine.incident_follows_its_orders()
        return machine.orders[order_id].status

    machine.deliver(sorted(machine.orders).index(lead))
    assert machine.orders[lead].status == "delivered"
    assert step(lead, "sign", "other_department") == "delivered"  # refused: not theirs
    assert step(lead, "sign", GRID) == "delivered"
    assert step(lead, "depart") == "delivered"  # refused: not signed yet
    assert step(lead, "sign") == "signed" and machine.incident_status == "in_progress"
    assert step(lead, "depart") == "en_route"
    assert step(lead, "arrive") == "en_route"  # invalid: no position
    assert step(lead, "arrive", lon=114.05, lat=22.55) == "on_scene"
    assert step(lead, "progress", note="") == "on_scene"  # invalid: no note
    assert step(lead, "progress", note="火势已控制") == "on_scene"
    assert step(lead, "supervise", COMMANDER, reason="请加快") == "on_scene"
    assert step(lead, "release", OPERATOR, reason="误派") == "on_scene"  # invalid: the only lead
    assert step(police, "reject", reason="不归本单位") == "issued"  # invalid: no category
    assert step(police, "reject", category="not_our_job") == "issued"  # invalid: no reason
    assert step(police, "reject", reason="不归本单位", category="not_our_job") == "rejected"
    assert step(police, "arbitrate", OPERATOR, reason="裁定", ruling="uphold") == "rejected"  # refused
    assert step(police, "arbitrate", COMMANDER, reason="裁定", ruling="maybe") == "rejected"  # invalid
    assert step(police, "arbitrate", COMMANDER, reason="裁定", ruling="uphold") == "issued"
    assert step(police, "reject", reason="还是不归", category="other") == "issued"  # refused: upheld
    assert step(police, "sign") == "signed"
    assert step(medical, "reject", reason="非急救", category="not_our_job") == "rejected"
    for code in ("medical_120", "fire_futian", "command_centre", "no_such_department"):
        department = code if code != "fire_futian" else machine.orders[lead].department
        assert step(
            medical, "arbitrate", COMMANDER, reason="改派", ruling="reassign", department=department
        ) == ("rejected")
    assert (
        step(medical, "arbitrate", COMMANDER, reason="改派", ruling="reassign", department="emergency_mgmt")
        == "reassigned"
    )
    spare = next(pk for pk, m in machine.orders.items() if m.department == "emergency_mgmt")
    assert step(lead, "complete", note="明火已扑灭") == "completed"
    assert machine.incident_status == "in_progress"  # the assisting orders are still open
    assert step(police, "complete") == "completed"
    assert step(spare, "release", COMMANDER, reason="无需协办") == "released"
    assert machine.incident_status == "handled"
    for pk in machine.orders:
        assert step(pk, "supervise", COMMANDER, reason="督办") == machine.orders[pk].status  # all closed


def test_model_table_covers_every_service_action() -> None:
    """The model knows every action the service offers (and no more)."""
    from command import rules

    assert set(TABLE) == set(rules.ORDER_TRANSITIONS)
