"""Writes for the command app: people and roles, dispatch by linkage rules, orders, escalation, units."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from command import rules
from command.constants import ROLE_PERMISSIONS, DepartmentKind, Role
from command.models import (
    CLOSED_ORDER_STATES,
    Department,
    DispatchOrder,
    EscalationPolicy,
    LinkageRule,
    OrderPhoto,
    OrderProgress,
    OrderRole,
    OrderStatus,
    RejectCategory,
    SupervisionNotice,
    Unit,
    UnitStatus,
    User,
)
from config.memo import memo_scope
from config.rows import insert_rows, lock_row
from config.security import redact_text
from gis.geocoding import parse_coordinate
from incidents import audience, deadlines, refcache
from incidents.models import Incident, Source
from incidents.photos import CheckedPhoto
from incidents.services import (
    ActionError,
    incident_for_step,
    incident_mark_dispatched,
    incident_record,
    incident_system_transition,
    opened_in_this_transaction,
    retry_on_deadlock,
    service_transaction,
)
from realtime.publish import publish

# ------------------------------------------------------------------------------------- people, roles


def role_group_name(role: str) -> str:
    """The Django group that mirrors a role."""
    return f"role:{role}"


def roles_ensure_groups() -> dict[str, Group]:
    """Create (or refresh) one Django group per role carrying that role's model permissions."""
    groups: dict[str, Group] = {}
    for role in Role.values:
        group, _ = Group.objects.get_or_create(name=role_group_name(role))
        perms = []
        for dotted in ROLE_PERMISSIONS.get(role, []):
            app_label, codename = dotted.split(".", 1)
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:
                perms.append(perm)
        group.permissions.set(perms)
        groups[role] = group
    return groups


@transaction.atomic
def user_set_role(*, user: User, role: str, department: Department | None = None) -> User:
    """Give a user a role (and department), keeping the mirroring Django group in step."""
    if role not in Role.values:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(Role.values)}")
    user.role = role
    user.department = department
    user.is_staff = role == Role.ADMIN
    user.full_clean(exclude=["password"])
    user.save()
    user.groups.remove(*Group.objects.filter(name__startswith="role:"))
    group, _ = Group.objects.get_or_create(name=role_group_name(role))
    user.groups.add(group)
    return user


@transaction.atomic
def user_create(
    *,
    username: str,
    role: str,
    department: Department | None = None,
    password: str | None = None,
    password_hash: str | None = None,
    first_name: str = "",
    phone: str = "",
    grids: Iterable[int] = (),
    is_superuser: bool = False,
) -> User:
    """Create a user with a role; pass either a password or an already-computed hash."""
    user = User(username=username, first_name=first_name, phone=phone, is_superuser=is_superuser)
    if password_hash is not None:
        user.password = password_hash
    elif password is not None:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user_set_role(user=user, role=role, department=department)
    grid_ids = list(grids)
    if grid_ids:
        user.grids.set(grid_ids)
    return user


# ------------------------------------------------------------------------------------------ linkage


def _enabled_rules() -> list[LinkageRule]:
    return list(
        LinkageRule.objects.filter(enabled=True)
        .select_related("category", "grade", "territory", "lead_department")
        .prefetch_related("assist_departments")
        .order_by("position", "id")
    )


def _jurisdiction_map() -> dict[str, list[tuple[str, str, Department]]]:
    """Territory unit code → (kind, the unit's layer, department) of each active department holding it."""
    departments = {d.pk: d for d in Department.objects.filter(active=True)}
    by_code: dict[str, list[tuple[str, str, Department]]] = {}
    rows = Department.jurisdiction.through.objects.filter(department_id__in=list(departments)).values_list(
        "department_id", "territoryunit__code", "territoryunit__layer"
    )
    for department_id, code, layer in rows:
        department = departments[department_id]
        by_code.setdefault(code, []).append((department.kind, layer, department))
    return by_code


def _jurisdictions(codes: frozenset[str]) -> list[tuple[str, str, Department]]:
    """Active departments whose jurisdiction holds one of `codes`: (kind, that unit's layer, department)."""
    by_code = refcache.kept("jurisdictions", _jurisdiction_map)
    found = [entry for code in codes for entry in by_code.get(code, ())]
    return sorted(found, key=lambda entry: (entry[2].code, entry[1]))


def linkage_rule_for(incident: Incident, *, at: datetime | None = None) -> LinkageRule | None:
    """The first enabled rule (by position) whose conditions match the incident; else the default."""
    local = timezone.localtime(at or timezone.now()).time()
    facts = rules.RuleFacts(
        category_code=incident.category.code,
        family_code=incident.category.parent.code if incident.category.parent is not None else None,
        grade_code=incident.grade.code if incident.grade else None,
        area_codes=frozenset(c for c in incident.area_codes().values() if c),
        local_time=local,
    )
    default = None
    for rule in refcache.kept("linkage_rules", _enabled_rules):
        if rule.is_default:
            default = default or rule
            continue
        if rules.rule_matches(
            category_code=rule.category.code if rule.category else None,
            grade_code=rule.grade.code if rule.grade else None,
            territory_code=rule.territory.code if rule.territory else None,
            time_from=rule.time_from,
            time_to=rule.time_to,
            facts=facts,
        ):
            return rule
    return default


def department_of_kind_for(kind: str, incident: Incident) -> Department | None:
    """The active department of `kind` whose jurisdiction contains the incident (deepest unit wins)."""
    codes = frozenset(c for c in incident.area_codes().values() if c)
    depth = {"district": 1, "street": 2, "community": 3, "grid": 4, "block": 4}
    best: tuple[tuple[int, str, int], Department] | None = None
    for department_kind, layer, department in _jurisdictions(codes):
        if department_kind != kind:
            continue
        key = (-depth.get(layer, 0), department.code, department.pk)
        if best is None or key < best[0]:
            best = (key, department)
    return best[1] if best else None


def rule_snapshot(rule: LinkageRule | None) -> dict[str, Any]:
    """A copy of the rule as it stands, stored on each order it produced."""
    if rule is None:
        return {}
    return {
        "id": rule.pk,
        "position": rule.position,
        "name": rule.name,
        "is_default": rule.is_default,
        "category": rule.category.code if rule.category else None,
        "grade": rule.grade.code if rule.grade else None,
        "territory": rule.territory.code if rule.territory else None,
        "time_from": rule.time_from.isoformat() if rule.time_from else None,
        "time_to": rule.time_to.isoformat() if rule.time_to else None,
        "lead_department": rule.lead_department.code if rule.lead_department else None,
        "lead_kind": rule.lead_kind or None,
        "assist_departments": sorted(d.code for d in rule.assist_departments.all()),
        "assist_kinds": list(rule.assist_kinds),
    }


def linkage_proposal(incident: Incident) -> dict[str, Any]:
    """What the rules propose for an incident: the rule, the lead and the assisting departments."""
    rule = linkage_rule_for(incident)
    lead: Department | None = None
    assists: list[Department] = []
    unresolved: list[str] = []
    if rule is not None:
        lead = rule.lead_department or (
            department_of_kind_for(rule.lead_kind, incident) if rule.lead_kind else None
        )
        if lead is None and rule.lead_kind:
            unresolved.append(rule.lead_kind)
        # Prefetched with the kept rules (a department's edit bumps the reference data version).
        assists = sorted((d for d in rule.assist_departments.all() if d.active), key=lambda d: d.code)
        for kind in rule.assist_kinds:
            found = department_of_kind_for(kind, incident)
            if found is None:
                unresolved.append(kind)
            elif found not in assists and found != lead:
                assists.append(found)
    return {
        "rule": rule,
        "lead": lead,
        "assists": [a for a in assists if a != lead],
        "unresolved_kinds": unresolved,
    }


# ----------------------------------------------------------------------------------------- dispatch


def _departments_by_code(codes: Sequence[str], field: str) -> list[Department]:
    found = {d.code: d for d in Department.objects.filter(code__in=codes, active=True)}
    missing = [c for c in codes if c not in found]
    if missing:
        raise ActionError(field, f"unknown department {missing[0]!r}")
    if any(d.kind == DepartmentKind.COMMAND_CENTRE for d in found.values()):
        raise ActionError(field, "the command centre does not receive dispatch orders")
    return [found[c] for c in codes]


def incident_dispatch(
    *,
    incident: Incident,
    actor: Any,
    source: str,
    payload: dict[str, Any],
    reason: str,
    proposal: dict[str, Any] | None = None,
) -> Incident:
    """Create the dispatch orders for an (already row-locked) incident, by rule or as the operator chose."""
    proposal = proposal or linkage_proposal(incident)
    lead_code = payload.get("lead")
    assist_codes = payload.get("assist")
    if lead_code is None and assist_codes is None:
        lead, assists = proposal["lead"], proposal["assists"]
        if lead is None:
            raise ActionError("lead", "no linkage rule gives a lead department here; name one with a reason")
        override = ""
    else:
        if not isinstance(lead_code, str) or not lead_code:
            raise ActionError("lead", "the code of the lead department is required")
        if assist_codes is None:
            assist_codes = []
        if not isinstance(assist_codes, list) or not all(isinstance(c, str) for c in assist_codes):
            raise ActionError("assist", "a list of department codes is expected")
        lead = _departments_by_code([lead_code], "lead")[0]
        assists = [d for d in _departments_by_code(list(dict.fromkeys(assist_codes)), "assist") if d != lead]
        proposed = (proposal["lead"], {d.pk for d in proposal["assists"]})
        chosen = (lead, {d.pk for d in assists})
        override = reason
        if chosen != proposed and not reason:
            raise ActionError("reason", "choosing other departments than the rule proposes needs a reason")
    snapshot = rule_snapshot(proposal["rule"])
    now = timezone.now()
    created: list[DispatchOrder] = []
    # The incident row is locked: a second dispatch of the same department finds the open order. An
    # incident opened by this very call (an emergency dispatched on intake) has no orders to find.
    busy = set() if opened_in_this_transaction(incident) else _departments_with_open_orders(incident.pk)
    for department, role in [(lead, OrderRole.LEAD), *[(d, OrderRole.ASSIST) for d in assists]]:
        if department.pk in busy:
            continue
        busy.add(department.pk)
        order = DispatchOrder(
            incident=incident,
            department=department,
            role=role,
            rule_snapshot=snapshot,
            override_reason=override,
            issued_by=actor if getattr(actor, "pk", None) else None,
            issued_at=now,
        )
        _enter_order_stage(order, incident, now)
        created.append(order)
    # One INSERT for all the orders (PostgreSQL and SQLite return their ids), then their events in order.
    insert_rows(created)
    for order in created:
        _order_event("order.created", order, action="issue")
    data = {
        "orders": [{"id": o.pk, "department": o.department.code, "role": o.role} for o in created],
        "rule": snapshot.get("name"),
        "override": bool(override),
    }
    incident_mark_dispatched(incident=incident, actor=actor, source=source, reason=reason, data=data)
    return incident


def _departments_with_open_orders(incident_id: int) -> set[int]:
    """Departments holding an open order for the incident (a kept SQL text: every dispatch asks)."""
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_ORDERS_SQL, [incident_id, *_CLOSED_ORDER_STATES])
        return {int(row[0]) for row in cursor.fetchall()}


_CLOSED_ORDER_STATES = sorted(CLOSED_ORDER_STATES)
_OPEN_ORDERS_SQL = (
    f"SELECT department_id FROM {DispatchOrder._meta.db_table} WHERE incident_id = %s "
    f"AND status NOT IN ({', '.join(['%s'] * len(_CLOSED_ORDER_STATES))})"
)


def auto_dispatch_after_register(*, incident: Incident, action: str, actor: Any, source: str) -> None:
    """Dispatch by rule as soon as an incident of an auto-dispatching category is registered."""
    if action != "register" or not incident.category.auto_dispatch:
        return
    proposal = linkage_proposal(incident)
    if proposal["lead"] is None:
        return  # nobody to send it to by rule: it waits in the queue for an operator's choice
    incident_dispatch(
        incident=incident,
        actor=None,
        source=Source.SYSTEM,
        payload={},
        reason="automatic dispatch on registration",
        proposal=proposal,
    )


def rework_reopen_lead(*, incident: Incident, actor: Any, source: str, reason: str) -> None:
    """After a failed verification, issue a new order to the lead department for the rework."""
    lead = (
        incident.orders.filter(role=OrderRole.LEAD, status=OrderStatus.COMPLETED)
        .order_by("-completed_at")
        .first()
    )
    if lead is None:
        return
    now = timezone.now()
    order = DispatchOrder(
        incident=incident,
        department=lead.department,
        role=OrderRole.LEAD,
        rule_snapshot=lead.rule_snapshot,
        override_reason=f"rework: {reason}",
        issued_by=actor,
        issued_at=now,
    )
    _enter_order_stage(order, incident, now)
    order.save()
    _order_event("order.created", order, action="rework")


# ------------------------------------------------------------------------------------- order actions


def _order_recipients(order: DispatchOrder) -> list[int]:
    # Department staff of the order's unit (not grid workers who happen to belong to a street office).
    return audience.department_recipients(order.department_id)


def order_event_data(order: DispatchOrder, action: str | None = None) -> dict[str, Any]:
    """The data of an order event (no personal data)."""
    incident = order.incident
    data: dict[str, Any] = {
        "id": order.pk,
        "incident_id": incident.pk,
        "incident_code": incident.code,
        "department": order.department.code,
        "role": order.role,
        "status": order.status,
        "stage": order.stage or None,
        "due_at": order.due_at.isoformat() if order.due_at else None,
        "overdue": order.overdue_at is not None,
        "category": incident.category.code,
        "grade": incident.grade.code if incident.grade else None,
        "lon": incident.lon,
        "lat": incident.lat,
        "address": redact_text(incident.address),
        "description": redact_text(incident.description[:500]),
    }
    if action is not None:
        data["action"] = action
    return data


def _order_event(
    name: str,
    order: DispatchOrder,
    *,
    action: str,
    extra: dict[str, Any] | None = None,
    recipients: Iterable[int] | None = None,
) -> None:
    data = order_event_data(order, action)
    if extra:
        data.update(extra)
    publish(
        name=name, data=data, recipients=recipients if recipients is not None else _order_recipients(order)
    )


def _enter_order_stage(order: DispatchOrder, incident: Incident, now: datetime) -> None:
    stage = rules.ORDER_STAGE.get(order.status)
    order.warned_at = order.overdue_at = order.next_escalation_at = None
    order.escalation_count = 0
    if stage is None:
        order.stage, order.stage_started_at, order.due_at, order.warn_at, order.clock_unit = (
            "",
            None,
            None,
            None,
            "",
        )
        return
    if stage == order.stage and order.due_at is not None:
        return
    clock = deadlines.clock_for(
        stage=stage,
        category=incident.category,
        grade=incident.grade,
        area_codes=incident.area_codes(),
        start=now,
    )
    order.stage, order.stage_started_at = stage, now
    order.due_at = clock.due_at if clock else None
    order.warn_at = clock.warn_at if clock else None
    order.clock_unit = clock.unit if clock else ""


def _order_log(
    order: DispatchOrder,
    *,
    actor: Any,
    action: str,
    source: str,
    from_status: str,
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    incident_record(
        order.incident,
        actor=actor,
        action=f"order_{action}",
        source=source,
        from_status=order.incident.status,
        to_status=order.incident.status,
        reason=reason,
        data={
            "order_id": order.pk,
            "department": order.department.code,
            "role": order.role,
            "order_from": from_status,
            "order_to": order.status,
            **(data or {}),
        },
    )


# The actions whose note may carry photos (already checked: incidents.photos.check_photos).
PHOTO_ACTIONS = ("progress", "complete")


def order_act(
    *,
    order_id: int,
    actor: Any,
    action: str,
    source: str = Source.API,
    payload: dict[str, Any] | None = None,
    photos: Sequence[CheckedPhoto] = (),
) -> DispatchOrder:
    """Carry out one action on a dispatch order (raises rules.OrderActionRefused or ActionError).

    `photos` go with `progress` and `complete` only; they are stored with the note in the action's
    transaction, and their files are deleted again if that transaction does not commit.
    """
    payload = payload or {}
    return retry_on_deadlock(lambda: _order_act(order_id, actor, action, source, payload, photos))


def _order_act(
    order_id: int,
    actor: Any,
    action: str,
    source: str,
    payload: dict[str, Any],
    photos: Sequence[CheckedPhoto],
) -> DispatchOrder:
    saved: list[str] = []
    try:
        return _order_act_atomic(order_id, actor, action, source, payload, photos, saved)
    except BaseException:
        # Nothing of a refused or failed action stays behind, files included.
        for name in saved:
            default_storage.delete(name)
        raise


def _order_act_atomic(
    order_id: int,
    actor: Any,
    action: str,
    source: str,
    payload: dict[str, Any],
    photos: Sequence[CheckedPhoto],
    saved: list[str],
) -> DispatchOrder:
    with service_transaction():
        order = (
            DispatchOrder.objects.select_for_update(of=("self",))
            .select_related("department", "incident", "incident__category", "incident__grade")
            .get(pk=order_id)
        )
        role = actor.role
        # Ownership first: another department learns nothing about the order's state.
        if role == Role.DEPARTMENT and actor.department_id != order.department_id:
            raise rules.OrderActionRefused(
                "this order belongs to another department", [], forbidden_role=True
            )
        transition = rules.order_check(
            action=action,
            status=order.status,
            role=role,
            upheld=bool(order.ruling),
            order_role=order.role,
        )
        reason = str(payload.get("reason") or "").strip()
        if transition.needs_reason and not reason:
            raise ActionError("reason", f"a reason is required to {action}")
        if photos and action not in PHOTO_ACTIONS:
            raise ActionError("photos", f"photos go with {' or '.join(PHOTO_ACTIONS)}, not with {action}")
        # Lock the incident too: the incident's state follows its orders.
        Incident.objects.select_for_update().filter(pk=order.incident_id).first()
        handler = _ORDER_HANDLERS[action]
        now = timezone.now()
        from_status = order.status
        progress = handler(order, actor=actor, payload=payload, reason=reason, now=now)
        stored = _store_photos(progress, photos, now=now, saved=saved) if progress and photos else []
        if (
            transition.target is not None
            and order.status == transition.target
            and order.status != from_status
        ):
            _enter_order_stage(order, order.incident, now)
        order.save()
        data = _log_data(order, action, payload)
        if stored:
            # The timeline (and so the audit chain) names each photo by its content hash.
            data["photos"] = [{"id": p.pk, "sha256": p.sha256} for p in stored]
        _order_log(
            order,
            actor=actor,
            action=action,
            source=source,
            from_status=from_status,
            reason=reason,
            data=data,
        )
        _order_event("order.updated", order, action=action)
        _after_order_change(order, actor=actor, action=action, source=source)
        return order


def _store_photos(
    progress: OrderProgress, photos: Sequence[CheckedPhoto], *, now: datetime, saved: list[str]
) -> list[OrderPhoto]:
    """Store checked photos through Django's storage and attach them to a progress note."""
    rows = []
    for photo in photos:
        name = default_storage.save(
            f"order-photos/{now:%Y/%m/%d}/{photo.sha256[:16]}.{photo.extension}", ContentFile(photo.content)
        )
        saved.append(name)
        rows.append(
            OrderPhoto.objects.create(
                progress=progress,
                file=name,
                content_type=photo.content_type,
                size=len(photo.content),
                sha256=photo.sha256,
            )
        )
    return rows


def _log_data(order: DispatchOrder, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if action == "arrive":
        return {"lon": order.arrival_lon, "lat": order.arrival_lat}
    if action == "reject":
        return {"category": order.reject_category}
    if action == "arbitrate":
        return {"ruling": payload.get("ruling"), "to": payload.get("department")}
    return {}


def _sign(order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime) -> None:
    order.status, order.signed_at, order.signed_by = OrderStatus.SIGNED, now, actor
    if order.delivered_at is None:
        order.delivered_at = now


def _reject(order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime) -> None:
    category = payload.get("category")
    if category not in RejectCategory.values:
        raise ActionError(
            "category", f"a reason category is required: one of {', '.join(RejectCategory.values)}"
        )
    order.status, order.rejected_at = OrderStatus.REJECTED, now
    order.reject_reason, order.reject_category = reason, category
    order.reject_count += 1


def _depart(order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime) -> None:
    order.status, order.departed_at = OrderStatus.EN_ROUTE, now


def _position(payload: dict[str, Any]) -> tuple[float, float]:
    from gis.geocoding import InvalidCoordinate

    try:
        return parse_coordinate("lon", payload.get("lon")), parse_coordinate("lat", payload.get("lat"))
    except InvalidCoordinate as exc:
        raise ActionError(exc.field, exc.message) from None


def _arrive(order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime) -> None:
    lon, lat = _position(payload)
    order.status, order.arrived_at, order.arrival_lon, order.arrival_lat = OrderStatus.ON_SCENE, now, lon, lat


def _note(
    order: DispatchOrder, *, actor: Any, payload: dict[str, Any], kind: str, now: datetime
) -> OrderProgress:
    note = str(payload.get("note") or "").strip()
    if kind == "progress" and not note:
        raise ActionError("note", "a progress note is required")
    return OrderProgress.objects.create(order=order, at=now, by=actor, kind=kind, note=note[:4000])


def _progress(
    order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime
) -> OrderProgress:
    return _note(order, actor=actor, payload=payload, kind="progress", now=now)


def _complete(
    order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime
) -> OrderProgress:
    progress = _note(order, actor=actor, payload=payload, kind="completion", now=now)
    order.status, order.completed_at, order.completed_by = OrderStatus.COMPLETED, now, actor
    order.completion_note = progress.note
    return progress


def _arbitrate(
    order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime
) -> None:
    ruling = payload.get("ruling")
    if ruling == "uphold":
        order.status, order.ruling = OrderStatus.ISSUED, reason
        order.stage = ""  # restart the sign-for clock
        _enter_order_stage(order, order.incident, now)
        return
    if ruling != "reassign":
        raise ActionError("ruling", "use 'uphold' (the department must take it) or 'reassign'")
    code = payload.get("department")
    if not isinstance(code, str) or not code:
        raise ActionError("department", "the code of the department to reassign to is required")
    target = _departments_by_code([code], "department")[0]
    if target.pk == order.department_id:
        raise ActionError("department", "reassign to another department, or uphold the order")
    if order.incident.orders.filter(department=target).exclude(status__in=CLOSED_ORDER_STATES).exists():
        raise ActionError("department", f"{code} already holds an open order for this incident")
    order.status, order.ruling = OrderStatus.REASSIGNED, reason
    new = DispatchOrder(
        incident=order.incident,
        department=target,
        role=order.role,
        rule_snapshot=order.rule_snapshot,
        override_reason=f"reassigned by ruling: {reason}",
        issued_by=actor,
        issued_at=now,
    )
    _enter_order_stage(new, order.incident, now)
    new.save()
    order.replaced_by = new
    _order_event("order.created", new, action="reassign")


def _release(
    order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime
) -> None:
    # Only assisting orders get here: rules.order_check refuses releasing a lead order.
    order.status = OrderStatus.RELEASED


def _supervise(
    order: DispatchOrder, *, actor: Any, payload: dict[str, Any], reason: str, now: datetime
) -> None:
    level = order.notices.count() + 1
    SupervisionNotice.objects.create(order=order, at=now, by=actor, level=level, message=reason)
    _order_event(
        "order.overdue",
        order,
        action="supervise",
        extra={
            "overdue_by_s": _overdue_by(order, now),
            "level": level,
            "message": reason,
            "by": actor.username,
        },
        recipients=_escalation_recipients(order),
    )


# A handler changes the order in place; those that write a progress note return it (for its photos).
OrderHandler = Callable[..., OrderProgress | None]
_ORDER_HANDLERS: dict[str, OrderHandler] = {
    "sign": _sign,
    "reject": _reject,
    "depart": _depart,
    "arrive": _arrive,
    "progress": _progress,
    "complete": _complete,
    "arbitrate": _arbitrate,
    "release": _release,
    "supervise": _supervise,
}
assert set(_ORDER_HANDLERS) == set(rules.ORDER_TRANSITIONS)


def _after_order_change(order: DispatchOrder, *, actor: Any, action: str, source: str) -> None:
    incident = order.incident
    if action == "sign" and order.role == OrderRole.LEAD:
        incident_system_transition(
            incident_id=incident.pk,
            action="start_work",
            actor=actor,
            source=source,
            data={"order_id": order.pk},
        )
    if action in ("complete", "release"):
        orders = list(
            incident.orders.exclude(status=OrderStatus.REASSIGNED).values_list(
                "role", "status", "completed_by"
            )
        )
        lead_done = any(r == OrderRole.LEAD and s == OrderStatus.COMPLETED for r, s, _ in orders)
        open_left = any(s not in (OrderStatus.COMPLETED, OrderStatus.RELEASED) for _, s, _ in orders)
        if lead_done and not open_left:
            handlers = sorted({by for _, s, by in orders if s == OrderStatus.COMPLETED and by})
            incident_system_transition(
                incident_id=incident.pk,
                action="mark_handled",
                actor=actor,
                source=source,
                handlers=handlers,
                data={"order_id": order.pk},
            )


def order_mark_delivered(*, order_id: int, at: datetime | None = None) -> bool:
    """Record the first acknowledgement of an order by its department's client (once)."""
    moment = at or timezone.now()
    return retry_on_deadlock(lambda: _order_mark_delivered(order_id, moment))


def _departments_by_id() -> dict[int, Department]:
    """Every department by id (kept per process: refcache; a department's save bumps the version)."""
    return refcache.kept("departments_by_id", lambda: {d.pk: d for d in Department.objects.all()})


def _order_mark_delivered(order_id: int, at: datetime) -> bool:
    with service_transaction():
        # Once only: an order upheld back to "issued" after a rejection keeps its first delivery time.
        # (One plain statement: this runs at every first ack of an order, on the websocket's path.)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {DispatchOrder._meta.db_table} SET status = %s, delivered_at = %s "
                "WHERE id = %s AND status = %s AND delivered_at IS NULL",
                [
                    OrderStatus.DELIVERED,
                    connection.ops.adapt_datetimefield_value(at),
                    order_id,
                    OrderStatus.ISSUED,
                ],
            )
            if cursor.rowcount != 1:
                return False
        order = lock_row(DispatchOrder, order_id)  # already locked by the UPDATE: no wait
        # Its incident with category, grade, reporters and the reference versions in one read. Not
        # locked: the step changes nothing of the incident's row, and a lock would make every first ack
        # wait on (and hold up) the incident's own actions and the intakes that link it as a duplicate.
        order.incident = incident_for_step(order.incident_id)
        department = _departments_by_id().get(order.department_id)
        order.department = department or Department.objects.get(pk=order.department_id)
        _order_log(
            order, actor=None, action="delivered", source=Source.SYSTEM, from_status=OrderStatus.ISSUED
        )
        # The department knows it has the order; the command centre is who needs to see "delivered".
        # (Its active staff from the kept directory: no read of the users table per acknowledgement.)
        _order_event("order.updated", order, action="delivered", recipients=audience.directory().centre)
        return True


# ---------------------------------------------------------------------------------------- escalation


def _overdue_by(order: DispatchOrder, now: datetime) -> float:
    return max(0.0, (now - order.due_at).total_seconds()) if order.due_at else 0.0


def escalation_policy_for(order: DispatchOrder) -> EscalationPolicy | None:
    """The most specific escalation policy for the order's incident (category × grade)."""
    incident = order.incident
    cats = [incident.category_id] + ([incident.category.parent_id] if incident.category.parent_id else [])
    best = None
    for policy in EscalationPolicy.objects.all():
        if policy.category_id is not None and policy.category_id not in cats:
            continue
        if policy.grade_id is not None and policy.grade_id != incident.grade_id:
            continue
        key = (
            policy.category_id is not None,
            policy.category_id == incident.category_id,
            policy.grade_id is not None,
            -policy.pk,
        )
        if best is None or key > best[0]:
            best = (key, policy)
    return best[1] if best else None


def _escalation_recipients(order: DispatchOrder) -> list[int]:
    query = Q(role=Role.COMMANDER) | Q(department_id=order.department_id, role=Role.DEPARTMENT)
    ids = set(User.objects.filter(query, is_active=True).values_list("pk", flat=True))
    if order.department.head_id:
        ids.add(order.department.head_id)
    return sorted(ids)


def orders_tick(*, now: datetime | None = None) -> dict[str, int]:
    """Warn, escalate and re-escalate orders whose clocks have run; each step fires once per worker set."""
    # One memo scope for the tick: its events use the kept directory of recipients (one version read).
    with memo_scope():
        return _orders_tick(now or timezone.now())


def _orders_tick(now: datetime) -> dict[str, int]:
    counts = {"warned": 0, "overdue": 0, "repeated": 0}
    active = [
        OrderStatus.ISSUED,
        OrderStatus.DELIVERED,
        OrderStatus.SIGNED,
        OrderStatus.EN_ROUTE,
        OrderStatus.ON_SCENE,
    ]
    related = ("department", "incident", "incident__category", "incident__grade")
    for pk, stage in DispatchOrder.objects.filter(
        status__in=active, warned_at__isnull=True, warn_at__lte=now
    ).values_list("pk", "stage"):
        with transaction.atomic():
            if DispatchOrder.objects.filter(pk=pk, stage=stage, warned_at__isnull=True).update(warned_at=now):
                order = DispatchOrder.objects.select_related(*related).get(pk=pk)
                _order_log(
                    order,
                    actor=None,
                    action="due_soon",
                    source=Source.SYSTEM,
                    from_status=order.status,
                    data={"stage": stage, "due_at": order.due_at.isoformat() if order.due_at else None},
                )
                _order_event("order.updated", order, action="due_soon")
                counts["warned"] += 1
    for pk, stage in DispatchOrder.objects.filter(
        status__in=active, overdue_at__isnull=True, due_at__lte=now
    ).values_list("pk", "stage"):
        with transaction.atomic():
            order = DispatchOrder.objects.select_related(*related).get(pk=pk)
            policy = escalation_policy_for(order)
            repeat = timedelta(minutes=policy.repeat_minutes if policy else 15)
            if DispatchOrder.objects.filter(pk=pk, stage=stage, overdue_at__isnull=True).update(
                overdue_at=now, escalation_count=1, next_escalation_at=now + repeat
            ):
                order.refresh_from_db()
                _escalate(order, now=now, level=1)
                counts["overdue"] += 1
    for pk, stage, due_next in DispatchOrder.objects.filter(
        status__in=active, overdue_at__isnull=False, next_escalation_at__lte=now
    ).values_list("pk", "stage", "next_escalation_at"):
        with transaction.atomic():
            order = DispatchOrder.objects.select_related(*related).get(pk=pk)
            policy = escalation_policy_for(order)
            repeat = timedelta(minutes=policy.repeat_minutes if policy else 15)
            level = order.escalation_count + 1
            # Conditional on the old next time: only one worker moves it, so each repeat fires once.
            if DispatchOrder.objects.filter(pk=pk, stage=stage, next_escalation_at=due_next).update(
                escalation_count=level, next_escalation_at=now + repeat
            ):
                order.refresh_from_db()
                _escalate(order, now=now, level=level)
                counts["repeated"] += 1
    return counts


def _escalate(order: DispatchOrder, *, now: datetime, level: int) -> None:
    late = _overdue_by(order, now)
    message = (
        f"{order.department.name}：{order.incident.code} {order.stage} "
        f"已超时 {int(late // 60)} 分钟（第 {level} 次督办）"
    )
    SupervisionNotice.objects.create(order=order, at=now, by=None, level=level, message=message)
    _order_log(
        order,
        actor=None,
        action="overdue" if level == 1 else "escalated",
        source=Source.SYSTEM,
        from_status=order.status,
        data={"stage": order.stage, "level": level, "overdue_by_s": late},
    )
    _order_event(
        "order.overdue",
        order,
        action="overdue",
        extra={"overdue_by_s": late, "level": level, "message": message},
        recipients=_escalation_recipients(order),
    )


# --------------------------------------------------------------------------------------------- units


def unit_recipients(unit: Unit) -> list[int]:
    """Who follows a unit live: the command centre and its own department's staff."""
    # Staff only: grid workers who belong to a street office do not track its vehicles.
    query = Q(role__in=[Role.OPERATOR, Role.COMMANDER]) | Q(
        department_id=unit.department_id, role=Role.DEPARTMENT
    )
    return list(User.objects.filter(query, is_active=True).values_list("pk", flat=True))


def unit_event_data(unit: Unit) -> dict[str, Any]:
    """The data of a `unit.updated` event (a vehicle or team: no personal data)."""
    return {
        "id": unit.pk,
        "code": unit.code,
        "name": unit.name,
        "kind": unit.kind,
        "department": unit.department.code,
        "status": unit.status,
        "lon": unit.lon,
        "lat": unit.lat,
        "position_at": unit.position_at.isoformat() if unit.position_at else None,
    }


def unit_set_position(
    *, unit: Unit, actor: Any, lon: Any, lat: Any, status: str | None = None, source: str = Source.API
) -> Unit:
    """Record a unit's position (and optionally its status) reported by its department; publish it live."""
    if actor.role != Role.DEPARTMENT or actor.department_id != unit.department_id:
        # Positions come from the unit's own department (its vehicles' terminals), nobody else.
        raise PermissionDenied("only the unit's own department reports its position")
    x, y = _position({"lon": lon, "lat": lat})
    if status is not None and status not in UnitStatus.values:
        raise ActionError("status", f"use one of {', '.join(UnitStatus.values)}")
    with transaction.atomic():
        # Locked: two reports of one unit at once leave the later position and a matching audit trail.
        locked = Unit.objects.select_for_update(of=("self",)).select_related("department").get(pk=unit.pk)
        from_status = locked.status
        locked.lon, locked.lat, locked.position_at = x, y, timezone.now()
        if status is not None:
            locked.status = status
        locked.save(update_fields=["lon", "lat", "position_at", "status"])
        publish(name="unit.updated", data=unit_event_data(locked), recipients=unit_recipients(locked))
        # After publish: the audit chain's lock is always taken after the feed locks (docs/security.md).
        audit_record(
            action="position",
            object_type="unit",
            object_id=locked.pk,
            actor=actor,
            source=source,
            from_status=from_status,
            to_status=locked.status,
            data={"department": locked.department.code, "lon": x, "lat": y},
            at=locked.position_at,
        )
    # The caller's instance follows, as it did when this saved it in place.
    unit.lon, unit.lat, unit.position_at = locked.lon, locked.lat, locked.position_at
    unit.status = locked.status
    return unit
