"""demo_city: the generated city as data, its properties, and loading once."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
import shapely
from django.core.management import call_command

from command.constants import DepartmentKind, Role
from command.models import Department, LinkageRule, User
from gis.models import Layer, TerritoryUnit
from gis.selectors import territory_digest, territory_version
from incidents.models import Category, DeadlinePolicy, Grade, Stage

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def _geoms(layer: str) -> tuple[list[str], list[str | None], np.ndarray]:
    rows = list(
        TerritoryUnit.objects.filter(layer=layer)
        .order_by("code")
        .values_list("code", "parent__code", "geometry_wkb")
    )
    codes = [r[0] for r in rows]
    parents: list[str | None] = [r[1] for r in rows]
    geoms = shapely.from_wkb([bytes(r[2]) for r in rows])
    return codes, parents, geoms


def test_sizes_and_reference_data():
    counts = {layer: TerritoryUnit.objects.filter(layer=layer).count() for layer in Layer.values}
    assert counts["district"] >= 3
    assert counts["street"] >= 12
    assert counts["community"] >= 60
    assert counts["grid"] == 2000
    assert counts["block"] >= 500
    assert Department.objects.count() >= 10
    assert not Department.objects.filter(jurisdiction__isnull=True).exists()
    assert {k for k in Department.objects.values_list("kind", flat=True)} >= {
        DepartmentKind.POLICE,
        DepartmentKind.FIRE,
        DepartmentKind.MEDICAL,
        DepartmentKind.WATER,
        DepartmentKind.POWER,
        DepartmentKind.GAS,
        DepartmentKind.STREET_OFFICE,
        DepartmentKind.COMMAND_CENTRE,
    }
    assert set(User.objects.values_list("role", flat=True)) == set(Role.values)
    assert Category.objects.filter(parent__isnull=True).values_list("family", flat=True).count() >= 4
    assert Category.objects.filter(parent__isnull=False).count() >= 20
    assert list(Grade.objects.values_list("code", flat=True)) == ["I", "II", "III", "IV"]
    assert LinkageRule.objects.filter(is_default=True).count() == 1
    general = DeadlinePolicy.objects.filter(category=None, grade=None, area=None)
    assert set(general.values_list("stage", flat=True)) == set(Stage.values)


def test_fixed_demo_logins_exist():
    names = set(User.objects.values_list("username", flat=True))
    assert {"admin", "operator", "commander"} <= names
    assert {f"grid{n:02d}" for n in range(1, 21)} <= names
    for code in Department.objects.exclude(code="command_centre").values_list("code", flat=True):
        user = User.objects.get(username=code)
        assert user.role == Role.DEPARTMENT and user.department.code == code
        assert user.check_password("demo-pass-2026")
    grid01 = User.objects.get(username="grid01")
    assert grid01.grids.count() > 0 and set(grid01.grids.values_list("layer", flat=True)) == {"grid"}
    assert User.objects.get(username="admin").is_superuser


def test_codes_nest_in_gbt2260_style():
    for code in TerritoryUnit.objects.filter(layer="district").values_list("code", flat=True):
        assert len(code) == 6 and code.isdigit()
    for layer in ("street", "community", "grid", "block"):
        for code, parent in TerritoryUnit.objects.filter(layer=layer).values_list("code", "parent__code"):
            assert parent and code.startswith(parent) and len(code) > len(parent)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("street", "district"),
        ("community", "street"),
        ("grid", "community"),
        ("block", "community"),
    ],
)
def test_children_tile_their_parents(child, parent):
    parent_codes, _, parent_geoms = _geoms(parent)
    _, child_parents, child_geoms = _geoms(child)
    assert shapely.is_valid(child_geoms).all()
    parent_area = dict(zip(parent_codes, shapely.area(parent_geoms), strict=True))
    by_parent: dict[str, list[int]] = {}
    for i, p in enumerate(child_parents):
        by_parent.setdefault(str(p), []).append(i)
    assert set(by_parent) == set(parent_codes), "every parent is covered by children"
    parent_geom = dict(zip(parent_codes, parent_geoms, strict=True))
    for code, indices in by_parent.items():
        kids = child_geoms[indices]
        union = shapely.union_all(kids)
        # No gaps: the children's union covers the parent; no overlaps: their areas add up to it.
        assert abs(shapely.area(union) - parent_area[code]) <= 1e-9 * parent_area[code] + 1e-14
        assert abs(shapely.area(kids).sum() - parent_area[code]) <= 1e-7 * parent_area[code]
        outside = shapely.area(shapely.difference(kids, parent_geom[code]))
        assert (outside <= 1e-9 * shapely.area(kids) + 1e-14).all(), "children lie inside their parent"


def test_running_again_keeps_the_data():
    before = (territory_digest(), territory_version(), User.objects.count())
    out = StringIO()
    call_command("demo_city", stdout=out)
    assert "already loaded" in out.getvalue()
    assert (territory_digest(), territory_version(), User.objects.count()) == before


def test_same_seed_gives_byte_identical_territory_and_another_seed_differs():
    first = territory_digest()
    call_command("demo_city", "--reset", "--seed", "2026", "--quiet-logins", stdout=StringIO())
    assert territory_digest() == first
    call_command("demo_city", "--reset", "--seed", "7", "--quiet-logins", stdout=StringIO())
    assert territory_digest() != first


def test_bad_arguments_are_a_clear_cli_error():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--grids"):
        call_command("demo_city", "--grids", "5", stdout=StringIO())
