"""Categories, grades and deadline policies: the reference data incidents are judged by."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _


class Family(models.TextChoices):
    """The four national kinds of emergency, plus everyday urban management."""

    NATURAL_DISASTER = "natural_disaster", _("Natural disaster")
    ACCIDENT = "accident", _("Accident and disaster")
    PUBLIC_HEALTH = "public_health", _("Public health event")
    SOCIAL_SECURITY = "social_security", _("Social security event")
    URBAN_MANAGEMENT = "urban_management", _("Urban management")


class Category(models.Model):
    """An incident category: a family (top level, no parent) or a subcategory within one."""

    code = models.CharField(_("code"), max_length=32, unique=True)
    name = models.CharField(_("name"), max_length=128)
    family = models.CharField(_("family"), max_length=32, choices=Family.choices)
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
    )
    auto_dispatch = models.BooleanField(_("dispatch automatically on registration"), default=False)
    active = models.BooleanField(_("active"), default=True)
    position = models.PositiveIntegerField(_("position"), default=0)

    class Meta:
        verbose_name = _("category")
        verbose_name_plural = _("categories")
        ordering = ["position", "code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def clean(self) -> None:
        """A subcategory belongs to a top-level category of the same family."""
        if self.parent is not None:
            if self.parent.parent_id is not None:
                raise ValidationError(
                    {"parent": _("Only two levels: the parent must be a top-level category.")}
                )
            if self.parent.family != self.family:
                raise ValidationError({"family": _("A subcategory has its parent's family.")})


class Grade(models.Model):
    """An incident grade: Ⅰ 特别重大 (level 1, highest) to Ⅳ 一般 (level 4)."""

    level = models.PositiveSmallIntegerField(_("level"), unique=True, help_text=_("1 is the most severe."))
    code = models.CharField(_("code"), max_length=8, unique=True)
    name = models.CharField(_("name"), max_length=32)
    color = models.CharField(_("colour"), max_length=16)

    class Meta:
        verbose_name = _("grade")
        verbose_name_plural = _("grades")
        ordering = ["level"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Stage(models.TextChoices):
    """The clocked stages of an incident and its orders."""

    ACCEPT = "accept", _("Accept")
    DISPATCH = "dispatch", _("Dispatch")
    SIGN = "sign", _("Sign for")
    ARRIVE = "arrive", _("Arrive")
    HANDLE = "handle", _("Handle")
    VERIFY = "verify", _("Verify")


class DurationUnit(models.TextChoices):
    MINUTES = "minutes", _("Minutes (calendar time)")
    WORKING_MINUTES = "working_minutes", _("Working minutes (on the working calendar)")


class DeadlinePolicy(models.Model):
    """How long a stage may take; the most specific matching row (category × grade × area) wins."""

    stage = models.CharField(_("stage"), max_length=16, choices=Stage.choices)
    category = models.ForeignKey(
        Category, verbose_name=_("category or family"), null=True, blank=True, on_delete=models.CASCADE
    )
    grade = models.ForeignKey(Grade, verbose_name=_("grade"), null=True, blank=True, on_delete=models.CASCADE)
    area = models.ForeignKey(
        "gis.TerritoryUnit", verbose_name=_("area"), null=True, blank=True, on_delete=models.CASCADE
    )
    duration = models.PositiveIntegerField(_("duration"))
    unit = models.CharField(
        _("unit"), max_length=16, choices=DurationUnit.choices, default=DurationUnit.MINUTES
    )
    warn_fraction = models.FloatField(_("warn at fraction"), default=0.75)

    class Meta:
        verbose_name = _("deadline policy")
        verbose_name_plural = _("deadline policies")
        ordering = ["stage", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["stage", "category", "grade", "area"],
                name="deadline_policy_unique_scope",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_stage_display()}: {self.duration} {self.unit}"

    def clean(self) -> None:
        """Durations are positive and the warning fraction lies strictly between 0 and 1."""
        if self.duration <= 0:
            raise ValidationError({"duration": _("Must be positive.")})
        if not 0 < self.warn_fraction < 1:
            raise ValidationError({"warn_fraction": _("Must lie strictly between 0 and 1.")})
