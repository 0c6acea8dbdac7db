"""Departments (linked units), people and their roles, and linkage rules."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from command.constants import DepartmentKind, Role


class Department(models.Model):
    """A linked unit (联动单位) or the command centre, with its jurisdiction."""

    code = models.CharField(
        _("code"),
        max_length=64,
        unique=True,
        help_text=_("Letters, digits and _ . - only; the demo city names each department's user after it."),
    )
    name = models.CharField(_("name"), max_length=128)
    kind = models.CharField(_("kind"), max_length=32, choices=DepartmentKind.choices)
    jurisdiction = models.ManyToManyField(
        "gis.TerritoryUnit", verbose_name=_("jurisdiction"), blank=True, related_name="departments"
    )
    phone = models.CharField(_("duty phone"), max_length=32, blank=True)
    head = models.ForeignKey(
        "command.User",
        verbose_name=_("head"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("department")
        verbose_name_plural = _("departments")
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def clean(self) -> None:
        """Codes are used as usernames and in group names, so keep them to a safe alphabet."""
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        if not self.code or set(self.code) - allowed:
            raise ValidationError({"code": _("Use letters, digits, '_', '.' and '-' only.")})


class User(AbstractUser):
    """A person with one role, belonging to one department (or the command centre)."""

    role = models.CharField(_("role"), max_length=32, choices=Role.choices, default=Role.OPERATOR)
    department = models.ForeignKey(
        Department,
        verbose_name=_("department"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="members",
    )
    grids = models.ManyToManyField(
        "gis.TerritoryUnit",
        verbose_name=_("assigned grids"),
        blank=True,
        related_name="grid_workers",
        limit_choices_to={"layer": "grid"},
    )
    phone = models.CharField(_("phone"), max_length=32, blank=True)

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def clean(self) -> None:
        """Department staff need a department."""
        super().clean()
        if self.role == Role.DEPARTMENT and self.department_id is None:
            raise ValidationError({"department": _("Department staff must belong to a department.")})


class LinkageRule(models.Model):
    """An ordered linkage (dispatch) rule: the first enabled rule whose conditions match wins."""

    position = models.PositiveIntegerField(_("position"), help_text=_("Lower runs first."))
    name = models.CharField(_("name"), max_length=128)
    enabled = models.BooleanField(_("enabled"), default=True)
    is_default = models.BooleanField(_("default rule"), default=False)
    category = models.ForeignKey(
        "incidents.Category",
        verbose_name=_("category or family"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
    )
    grade = models.ForeignKey(
        "incidents.Grade", verbose_name=_("grade"), null=True, blank=True, on_delete=models.PROTECT
    )
    territory = models.ForeignKey(
        "gis.TerritoryUnit", verbose_name=_("territory"), null=True, blank=True, on_delete=models.PROTECT
    )
    time_from = models.TimeField(_("from (time of day)"), null=True, blank=True)
    time_to = models.TimeField(_("to (time of day)"), null=True, blank=True)
    lead_department = models.ForeignKey(
        Department,
        verbose_name=_("lead department"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    lead_kind = models.CharField(
        _("lead: kind with jurisdiction"), max_length=32, choices=DepartmentKind.choices, blank=True
    )
    assist_departments = models.ManyToManyField(
        Department, verbose_name=_("assisting departments"), blank=True, related_name="+"
    )
    assist_kinds = models.JSONField(_("assisting: kinds with jurisdiction"), default=list, blank=True)

    class Meta:
        verbose_name = _("linkage rule")
        verbose_name_plural = _("linkage rules")
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"

    def clean(self) -> None:
        """A rule names exactly one way to find its lead department, and both ends of a time window."""
        errors: dict[str, str] = {}
        if bool(self.lead_department_id) == bool(self.lead_kind):
            errors["lead_department"] = str(_("Name either a lead department or a lead kind, not both."))
        if (self.time_from is None) != (self.time_to is None):
            errors["time_to"] = str(_("Give both ends of the time window, or neither."))
        kinds = set(DepartmentKind.values)
        if not isinstance(self.assist_kinds, list) or any(k not in kinds for k in self.assist_kinds):
            errors["assist_kinds"] = str(_("Assisting kinds must be a list of department kinds."))
        if errors:
            raise ValidationError(errors)
