"""The demo city: territory from gis.citygen plus departments, people, categories, rules and deadlines.

Everything here is data written through services, so a real city is loaded the same way from its own
files (gis_import, the admin) and nothing in the product depends on the demo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import transaction

from command.constants import DepartmentKind, Role
from command.models import Department, EscalationPolicy, LinkageRule, Unit, User
from command.services import user_create
from gis.citygen import City, generate_city
from gis.models import Layer, TerritoryUnit
from gis.services import territory_replace
from incidents.models import Category, DeadlinePolicy, DurationUnit, Family, Grade, Stage
from incidents.refcache import reference_changed

DISTRICT_SLUGS = {
    "440303": "luohu",
    "440304": "futian",
    "440305": "nanshan",
    "440306": "baoan",
    "440307": "longgang",
    "440308": "yantian",
    "440309": "longhua",
}

GRADES = [
    (1, "I", "特别重大", "red"),
    (2, "II", "重大", "orange"),
    (3, "III", "较大", "yellow"),
    (4, "IV", "一般", "blue"),
]

# (code, name, family, auto_dispatch); a family row has a two-letter code, its children add digits.
CATEGORIES: list[tuple[str, str, str, bool]] = [
    ("ND", "自然灾害", Family.NATURAL_DISASTER, False),
    ("ND01", "暴雨内涝", Family.NATURAL_DISASTER, True),
    ("ND02", "台风灾害", Family.NATURAL_DISASTER, True),
    ("ND03", "地质灾害（滑坡、崩塌、泥石流）", Family.NATURAL_DISASTER, True),
    ("ND04", "森林火灾", Family.NATURAL_DISASTER, True),
    ("ND05", "高温灾害", Family.NATURAL_DISASTER, False),
    ("AC", "事故灾难", Family.ACCIDENT, False),
    ("AC01", "火灾", Family.ACCIDENT, True),
    ("AC02", "道路交通事故", Family.ACCIDENT, True),
    ("AC03", "危险化学品泄漏", Family.ACCIDENT, True),
    ("AC04", "燃气泄漏", Family.ACCIDENT, True),
    ("AC05", "供水管道爆裂", Family.ACCIDENT, True),
    ("AC06", "电力故障停电", Family.ACCIDENT, True),
    ("AC07", "建筑物坍塌", Family.ACCIDENT, True),
    ("PH", "公共卫生事件", Family.PUBLIC_HEALTH, False),
    ("PH01", "传染病疫情", Family.PUBLIC_HEALTH, False),
    ("PH02", "食物中毒", Family.PUBLIC_HEALTH, True),
    ("PH03", "群体性不明原因疾病", Family.PUBLIC_HEALTH, False),
    ("SS", "社会安全事件", Family.SOCIAL_SECURITY, False),
    ("SS01", "群体性事件", Family.SOCIAL_SECURITY, False),
    ("SS02", "治安事件", Family.SOCIAL_SECURITY, True),
    ("SS03", "恐怖袭击事件", Family.SOCIAL_SECURITY, True),
    ("UM", "城市管理", Family.URBAN_MANAGEMENT, False),
    ("UM01", "占道经营", Family.URBAN_MANAGEMENT, False),
    ("UM02", "井盖缺失", Family.URBAN_MANAGEMENT, True),
    ("UM03", "违章搭建", Family.URBAN_MANAGEMENT, False),
    ("UM04", "垃圾堆放", Family.URBAN_MANAGEMENT, False),
    ("UM05", "路灯损坏", Family.URBAN_MANAGEMENT, False),
]

# Emergencies that skip the queue: registered (and, being auto-dispatching, dispatched) on intake.
REGISTER_ON_INTAKE = {"AC02", "AC03", "AC04"}

# (position, name, category code or None, lead kind, assisting kinds); the last row is the default.
RULES: list[tuple[int, str, str | None, str, list[str]]] = [
    (10, "火灾：消防主办，公安、急救协办", "AC01", "fire", ["police", "medical"]),
    (20, "交通事故：公安主办，急救、交通协办", "AC02", "police", ["medical", "transport"]),
    (30, "危化品泄漏：消防主办", "AC03", "fire", ["emergency_management", "police", "medical"]),
    (40, "燃气泄漏：燃气主办，消防协办", "AC04", "gas", ["fire"]),
    (50, "供水管道爆裂：水务主办", "AC05", "water", ["urban_management"]),
    (60, "停电：供电主办", "AC06", "power", []),
    (70, "建筑物坍塌：消防主办", "AC07", "fire", ["emergency_management", "medical"]),
    (80, "森林火灾：消防主办，应急管理协办", "ND04", "fire", ["emergency_management"]),
    (90, "自然灾害：应急管理主办，街道协办", "ND", "emergency_management", ["street_office"]),
    (100, "公共卫生：医疗急救主办", "PH", "medical", []),
    (110, "社会安全：公安主办", "SS", "police", []),
    (120, "城市管理：城管主办，街道协办", "UM", "urban_management", ["street_office"]),
    (1000, "默认：街道办主办", None, "street_office", []),
]

# Default deadlines per stage in minutes, tighter for grades I and II; urban management in working time.
DEADLINES_DEFAULT = {"accept": 5, "dispatch": 10, "sign": 5, "arrive": 30, "handle": 240, "verify": 1440}
DEADLINES_SEVERE = {"accept": 2, "dispatch": 5, "sign": 3, "arrive": 15, "handle": 120, "verify": 720}
DEADLINES_URBAN_WORKING = {"handle": 960, "verify": 480}


@dataclass(frozen=True)
class DemoSummary:
    """What demo_city loaded (or found already loaded)."""

    created: bool
    seed: int
    counts: dict[str, int]
    departments: int
    users: int


def demo_city_exists() -> bool:
    """True when a territory is already loaded."""
    return TerritoryUnit.objects.exists()


@transaction.atomic
def demo_city_load(*, seed: int = 2026, grids: int = 2000, reset: bool = False) -> DemoSummary:
    """Load the demo city unless a territory exists (then keep it, unless reset is asked for)."""
    if demo_city_exists() and not reset:
        return DemoSummary(False, seed, _counts(), Department.objects.count(), User.objects.count())
    if reset:
        _clear_reference_data()
    city = generate_city(seed=seed, grids=grids)
    territory_replace(units=city.units, origin=f"demo city (seed {seed}, {grids} grids)")
    _load_grades_and_categories()
    departments = _load_departments(city)
    _load_rules()
    _load_deadlines()
    _load_users(city, departments)
    _load_escalation()
    _load_units(city, departments, seed)
    # Rules, policies and users went in by bulk_create (no signals): running processes re-read them.
    reference_changed()
    return DemoSummary(True, seed, _counts(), Department.objects.count(), User.objects.count())


def _counts() -> dict[str, int]:
    return {layer: TerritoryUnit.objects.filter(layer=layer).count() for layer in Layer.values}


def _clear_reference_data() -> None:
    # Reset is a demo convenience that wipes the operational data too; never run it on a real city.
    from command.models import DispatchOrder, OrderPhoto, OrderProgress, SupervisionNotice
    from incidents.models import Incident, IncidentLogRecord, IncidentRequest, IncidentSerial, Photo, Report
    from realtime.models import Event

    OrderPhoto.objects.all().delete()
    OrderProgress.objects.all().delete()
    SupervisionNotice.objects.all().delete()
    DispatchOrder.objects.update(replaced_by=None)
    DispatchOrder.objects.all().delete()
    Photo.objects.all().delete()
    Report.objects.all().delete()
    IncidentLogRecord.objects.all().delete()
    IncidentRequest.objects.all().delete()
    Incident.objects.update(merged_into=None)
    Incident.objects.all().delete()
    IncidentSerial.objects.all().delete()
    Event.objects.all().delete()
    Unit.objects.all().delete()
    EscalationPolicy.objects.all().delete()
    Department.objects.update(head=None)
    User.objects.all().delete()
    LinkageRule.objects.all().delete()
    DeadlinePolicy.objects.all().delete()
    Department.objects.all().delete()
    Category.objects.filter(parent__isnull=False).delete()
    Category.objects.all().delete()
    Grade.objects.all().delete()


def _load_grades_and_categories() -> None:
    for level, code, name, color in GRADES:
        Grade.objects.update_or_create(level=level, defaults={"code": code, "name": name, "color": color})
    families: dict[str, Category] = {}
    for position, (code, name, family, auto) in enumerate(CATEGORIES):
        parent = None if len(code) == 2 else families[code[:2]]
        cat, _ = Category.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "family": family,
                "parent": parent,
                "auto_dispatch": auto,
                "register_on_intake": code in REGISTER_ON_INTAKE,
                "position": position,
            },
        )
        if parent is None:
            families[code] = cat


def _load_departments(city: City) -> dict[str, Department]:
    units = {u.code: u for u in TerritoryUnit.objects.filter(layer__in=[Layer.DISTRICT, Layer.STREET])}
    districts = [u for u in city.layer("district")]
    streets = [u for u in city.layer("street")]
    all_district_ids = [units[d.code].pk for d in districts]
    made: dict[str, Department] = {}

    def dept(code: str, name: str, kind: str, jurisdiction: list[int], phone: str = "") -> None:
        department = Department.objects.create(code=code, name=name, kind=kind, phone=phone)
        department.full_clean()
        department.jurisdiction.set(jurisdiction)
        made[code] = department

    dept("command_centre", "市应急联动指挥中心", DepartmentKind.COMMAND_CENTRE, all_district_ids, "12345")
    dept("medical_120", "市急救中心（120）", DepartmentKind.MEDICAL, all_district_ids, "120")
    dept("emergency_mgmt", "市应急管理局", DepartmentKind.EMERGENCY_MANAGEMENT, all_district_ids)
    dept("water_group", "市水务集团", DepartmentKind.WATER, all_district_ids, "96116")
    dept("power_supply", "市供电局", DepartmentKind.POWER, all_district_ids, "95598")
    dept("gas_group", "市燃气集团", DepartmentKind.GAS, all_district_ids, "96655")
    dept("transport", "市交通运输局", DepartmentKind.TRANSPORT, all_district_ids)
    for d in districts:
        slug = DISTRICT_SLUGS.get(d.code, d.code)
        pk = [units[d.code].pk]
        dept(f"police_{slug}", f"{d.name}公安分局（110）", DepartmentKind.POLICE, pk, "110")
        dept(f"fire_{slug}", f"{d.name}消防救援大队（119）", DepartmentKind.FIRE, pk, "119")
        dept(f"urban_{slug}", f"{d.name}城市管理和综合执法局", DepartmentKind.URBAN_MANAGEMENT, pk)
    for s in streets:
        dept(f"street_{s.code}", f"{s.name}办事处", DepartmentKind.STREET_OFFICE, [units[s.code].pk])
    return made


def _load_rules() -> None:
    cats = {c.code: c for c in Category.objects.all()}
    for position, name, cat_code, lead_kind, assist_kinds in RULES:
        rule = LinkageRule(
            position=position,
            name=name,
            category=cats[cat_code] if cat_code else None,
            is_default=cat_code is None,
            lead_kind=lead_kind,
            assist_kinds=assist_kinds,
        )
        rule.full_clean()
        rule.save()


def _load_deadlines() -> None:
    severe = list(Grade.objects.filter(level__in=[1, 2]))
    urban = Category.objects.get(code="UM")
    rows = [DeadlinePolicy(stage=stage, duration=minutes) for stage, minutes in DEADLINES_DEFAULT.items()]
    for grade in severe:
        rows += [
            DeadlinePolicy(stage=stage, grade=grade, duration=minutes)
            for stage, minutes in DEADLINES_SEVERE.items()
        ]
    rows += [
        DeadlinePolicy(stage=stage, category=urban, duration=minutes, unit=DurationUnit.WORKING_MINUTES)
        for stage, minutes in DEADLINES_URBAN_WORKING.items()
    ]
    for row in rows:
        row.full_clean(validate_unique=False)
    DeadlinePolicy.objects.bulk_create(rows)
    assert set(DEADLINES_DEFAULT) == set(Stage.values)


def _load_users(city: City, departments: dict[str, Department]) -> None:
    # One hash for the shared demo password: hashing it once per user would cost seconds for nothing.
    password_hash = make_password(settings.DEMO_PASSWORD)
    centre = departments["command_centre"]
    user_create(
        username="admin",
        role=Role.ADMIN,
        password_hash=password_hash,
        first_name="系统管理员",
        is_superuser=True,
    )
    user_create(
        username="operator",
        role=Role.OPERATOR,
        department=centre,
        password_hash=password_hash,
        first_name="值班员",
        phone="13800000001",
    )
    user_create(
        username="commander",
        role=Role.COMMANDER,
        department=centre,
        password_hash=password_hash,
        first_name="指挥长",
        phone="13800000002",
    )
    communities = city.layer("community")
    grid_ids: dict[str, list[int]] = {}
    for pk, parent_code in TerritoryUnit.objects.filter(layer=Layer.GRID).values_list("pk", "parent__code"):
        grid_ids.setdefault(parent_code, []).append(pk)
    for n in range(1, 21):
        community = communities[(n - 1) % len(communities)]
        street_code = community.parent_code or ""
        user_create(
            username=f"grid{n:02d}",
            role=Role.GRID_WORKER,
            department=departments.get(f"street_{street_code}"),
            password_hash=password_hash,
            first_name=f"网格员{n:02d}",
            phone=f"139{n:08d}",
            grids=sorted(grid_ids.get(community.code, [])),
        )
    for code, department in sorted(departments.items()):
        if code == "command_centre":
            continue
        user = user_create(
            username=code,
            role=Role.DEPARTMENT,
            department=department,
            password_hash=password_hash,
            first_name=department.name,
        )
        department.head = user
        department.save(update_fields=["head"])


def _load_escalation() -> None:
    EscalationPolicy.objects.create(repeat_minutes=15)
    for grade in Grade.objects.filter(level__in=[1, 2]):
        EscalationPolicy.objects.create(grade=grade, repeat_minutes=5)


# Units per department kind: (how many, name stem, unit kind).
UNIT_PLAN = {
    DepartmentKind.FIRE: (3, "消防车", "fire_engine"),
    DepartmentKind.POLICE: (4, "巡逻车", "patrol_car"),
    DepartmentKind.MEDICAL: (8, "救护车", "ambulance"),
    DepartmentKind.WATER: (2, "抢修车", "repair_truck"),
    DepartmentKind.POWER: (2, "抢修车", "repair_truck"),
    DepartmentKind.GAS: (2, "抢险车", "repair_truck"),
    DepartmentKind.URBAN_MANAGEMENT: (2, "执法队", "team"),
}


def _load_units(city: City, departments: dict[str, Department], seed: int) -> None:
    rng = np.random.default_rng(seed + 17)
    by_code = {u.code: u for u in city.units if u.layer == "district"}
    rows = []
    for code, department in sorted(departments.items()):
        plan = UNIT_PLAN.get(DepartmentKind(department.kind))
        if plan is None:
            continue
        count, stem, kind = plan
        area_codes = list(department.jurisdiction.values_list("code", flat=True))
        area = shapely.union_all([by_code[c].geometry for c in area_codes if c in by_code])
        minx, miny, maxx, maxy = area.bounds
        for n in range(1, count + 1):
            # Rejection sampling keeps each unit inside its department's jurisdiction.
            while True:
                lon, lat = float(rng.uniform(minx, maxx)), float(rng.uniform(miny, maxy))
                if area.contains(shapely.Point(lon, lat)):
                    break
            rows.append(
                Unit(
                    department=department,
                    code=f"{code}-{n:02d}",
                    name=f"{department.name}{stem}{n:02d}",
                    kind=kind,
                    lon=round(lon, 6),
                    lat=round(lat, 6),
                )
            )
    Unit.objects.bulk_create(rows)


def demo_logins() -> list[tuple[str, str]]:
    """The fixed demo logins as (username, description), in the order the README lists them."""
    rows = [("admin", "管理员 admin"), ("operator", "值班员 operator"), ("commander", "指挥长 commander")]
    rows.append(("grid01 … grid20", "网格员 grid workers"))
    for code, name in (
        Department.objects.exclude(code="command_centre").order_by("code").values_list("code", "name")
    ):
        rows.append((code, name))
    return rows
