"""Writes for departments, people and roles."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import Group, Permission
from django.db import transaction

from command.constants import ROLE_PERMISSIONS, Role
from command.models import Department, User


def role_group_name(role: str) -> str:
    """The Django group that mirrors a role."""
    return f"role:{role}"


def roles_ensure_groups() -> dict[str, Group]:
    """Create (or refresh) one Django group per role carrying that role's model permissions."""
    groups: dict[str, Group] = {}
    for role in Role.values:
        group, _ = Group.objects.get_or_create(name=role_group_name(role))
        wanted = ROLE_PERMISSIONS.get(role, [])
        perms = []
        for dotted in wanted:
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
    role_groups = Group.objects.filter(name__startswith="role:")
    user.groups.remove(*role_groups)
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
