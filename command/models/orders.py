"""Dispatch orders, their progress and supervision notices, escalation policies and units."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from command.models.core import Department


class OrderRole(models.TextChoices):
    LEAD = "lead", _("Lead (主办)")
    ASSIST = "assist", _("Assisting (协办)")


class OrderStatus(models.TextChoices):
    ISSUED = "issued", _("Issued")
    DELIVERED = "delivered", _("Delivered")
    SIGNED = "signed", _("Signed for")
    EN_ROUTE = "en_route", _("En route")
    ON_SCENE = "on_scene", _("On scene")
    COMPLETED = "completed", _("Completed")
    REJECTED = "rejected", _("Rejected, awaiting arbitration")
    REASSIGNED = "reassigned", _("Reassigned")
    RELEASED = "released", _("Released")


# Orders in these states no longer hold the incident; a new order to the same department may be made.
CLOSED_ORDER_STATES = (OrderStatus.COMPLETED, OrderStatus.REASSIGNED, OrderStatus.RELEASED)


class RejectCategory(models.TextChoices):
    NOT_OUR_AREA = "not_our_area", _("Not our area")
    NOT_OUR_JOB = "not_our_job", _("Not our responsibility")
    DUPLICATE = "duplicate", _("Duplicate")
    INSUFFICIENT_INFO = "insufficient_info", _("Insufficient information")
    OTHER = "other", _("Other")


class DispatchOrder(models.Model):
    """One department's order for one incident, with its own clock."""

    incident = models.ForeignKey("incidents.Incident", on_delete=models.PROTECT, related_name="orders")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="orders")
    role = models.CharField(_("role"), max_length=8, choices=OrderRole.choices)
    status = models.CharField(
        _("status"), max_length=16, choices=OrderStatus.choices, default=OrderStatus.ISSUED
    )
    # The rule that fired, copied so that editing the rule later never rewrites this order's history.
    rule_snapshot = models.JSONField(default=dict, blank=True)
    override_reason = models.TextField(blank=True)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    issued_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    signed_at = models.DateTimeField(null=True, blank=True)
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    departed_at = models.DateTimeField(null=True, blank=True)
    arrived_at = models.DateTimeField(null=True, blank=True)
    arrival_lon = models.FloatField(null=True, blank=True)
    arrival_lat = models.FloatField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    completion_note = models.TextField(blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)
    reject_reason = models.TextField(blank=True)
    reject_category = models.CharField(max_length=32, choices=RejectCategory.choices, blank=True)
    reject_count = models.PositiveIntegerField(default=0)
    ruling = models.TextField(blank=True)
    replaced_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # The clock of the current stage (sign, arrive or handle).
    stage = models.CharField(max_length=16, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    clock_unit = models.CharField(max_length=16, blank=True)
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    warn_at = models.DateTimeField(null=True, blank=True, db_index=True)
    warned_at = models.DateTimeField(null=True, blank=True)
    overdue_at = models.DateTimeField(null=True, blank=True)
    next_escalation_at = models.DateTimeField(null=True, blank=True, db_index=True)
    escalation_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("dispatch order")
        verbose_name_plural = _("dispatch orders")
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "department"],
                condition=~models.Q(status__in=["completed", "reassigned", "released"]),
                name="one_open_order_per_incident_department",
            )
        ]

    def __str__(self) -> str:
        return f"order {self.pk} {self.department.code} {self.status}"


class OrderProgress(models.Model):
    """A progress or completion note of an order, with its photos."""

    order = models.ForeignKey(DispatchOrder, on_delete=models.PROTECT, related_name="progress")
    at = models.DateTimeField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, default="progress")
    note = models.TextField(blank=True)
    lon = models.FloatField(null=True, blank=True)
    lat = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} of order {self.order_id} at {self.at:%Y-%m-%d %H:%M}"


class OrderPhoto(models.Model):
    """A photo attached to an order's progress or completion."""

    progress = models.ForeignKey(OrderProgress, on_delete=models.PROTECT, related_name="photos")
    file = models.FileField(upload_to="order-photos/%Y/%m/%d/")
    content_type = models.CharField(max_length=32)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"photo {self.sha256[:12]}"


class EscalationPolicy(models.Model):
    """The escalation ladder for a category and grade (most specific wins, like deadlines)."""

    category = models.ForeignKey(
        "incidents.Category",
        verbose_name=_("category or family"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
    )
    grade = models.ForeignKey(
        "incidents.Grade", verbose_name=_("grade"), null=True, blank=True, on_delete=models.CASCADE
    )
    repeat_minutes = models.PositiveIntegerField(_("repeat the overdue notice every (minutes)"), default=15)
    notify_head = models.BooleanField(_("notify the department's head"), default=True)

    class Meta:
        verbose_name = _("escalation policy")
        verbose_name_plural = _("escalation policies")

    def __str__(self) -> str:
        return f"escalation every {self.repeat_minutes} min"

    def clean(self) -> None:
        """Repeats less often than once a minute."""
        if self.repeat_minutes < 1:
            raise ValidationError({"repeat_minutes": _("At least one minute.")})


class SupervisionNotice(models.Model):
    """A supervision (督办) notice on an order: automatic at the deadline and after, or by a commander."""

    order = models.ForeignKey(DispatchOrder, on_delete=models.PROTECT, related_name="notices")
    at = models.DateTimeField()
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    level = models.PositiveIntegerField(default=1)
    message = models.TextField()

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"notice {self.level} on order {self.order_id}"


class UnitStatus(models.TextChoices):
    AVAILABLE = "available", _("Available")
    BUSY = "busy", _("Busy")
    OFF_DUTY = "off_duty", _("Off duty")


class Unit(models.Model):
    """A vehicle or team of a department, with its last known position."""

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="units")
    code = models.CharField(_("code"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=128)
    kind = models.CharField(_("kind"), max_length=32, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=UnitStatus.choices, default=UnitStatus.AVAILABLE
    )
    lon = models.FloatField(null=True, blank=True)
    lat = models.FloatField(null=True, blank=True)
    position_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("unit")
        verbose_name_plural = _("units")
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"
