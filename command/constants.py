"""Roles and department kinds: the vocabulary of PRODUCT.md."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    OPERATOR = "operator", _("Duty officer")
    COMMANDER = "commander", _("Commander")
    GRID_WORKER = "grid_worker", _("Grid worker")
    DEPARTMENT = "department", _("Department staff")
    ADMIN = "admin", _("Administrator")


class DepartmentKind(models.TextChoices):
    COMMAND_CENTRE = "command_centre", _("Command centre")
    POLICE = "police", _("Police (110)")
    FIRE = "fire", _("Fire and rescue (119)")
    MEDICAL = "medical", _("Medical emergency (120)")
    EMERGENCY_MANAGEMENT = "emergency_management", _("Emergency management")
    WATER = "water", _("Water")
    POWER = "power", _("Power")
    GAS = "gas", _("Gas")
    URBAN_MANAGEMENT = "urban_management", _("Urban management")
    TRANSPORT = "transport", _("Transport")
    STREET_OFFICE = "street_office", _("Street office")
    OTHER = "other", _("Other")


# Model permissions each role's Django group carries (used by the admin); object-level rules live in
# selectors and services.
ROLE_PERMISSIONS: dict[str, list[str]] = {
    Role.OPERATOR: ["incidents.view_category", "command.view_department", "gis.view_territoryunit"],
    Role.COMMANDER: [
        "incidents.view_category",
        "command.view_department",
        "command.view_linkagerule",
        "gis.view_territoryunit",
    ],
    Role.GRID_WORKER: [],
    Role.DEPARTMENT: [],
    Role.ADMIN: [
        "gis.view_territoryunit",
        "gis.view_territoryversion",
        "command.add_department",
        "command.change_department",
        "command.view_department",
        "command.add_user",
        "command.change_user",
        "command.view_user",
        "command.add_linkagerule",
        "command.change_linkagerule",
        "command.delete_linkagerule",
        "command.view_linkagerule",
        "incidents.add_category",
        "incidents.change_category",
        "incidents.view_category",
        "incidents.view_grade",
        "incidents.add_deadlinepolicy",
        "incidents.change_deadlinepolicy",
        "incidents.delete_deadlinepolicy",
        "incidents.view_deadlinepolicy",
    ],
}
