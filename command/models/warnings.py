"""Early warnings (预警): the warning, its receipts, its timeline, CAP messages and automatic rules."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from command.models.core import Department


class WarningLevel(models.TextChoices):
    """The four levels, lowest first; red (Ⅰ) is the highest."""

    BLUE = "blue", _("Blue (IV)")
    YELLOW = "yellow", _("Yellow (III)")
    ORANGE = "orange", _("Orange (II)")
    RED = "red", _("Red (I)")


# Level → (rank where 1 is the most severe, Roman numeral of GB/T 35965.1 and the national plans).
LEVEL_RANK: dict[str, int] = {"blue": 4, "yellow": 3, "orange": 2, "red": 1}
LEVEL_NUMERAL: dict[str, str] = {"blue": "Ⅳ", "yellow": "Ⅲ", "orange": "Ⅱ", "red": "Ⅰ"}


class WarningStatus(models.TextChoices):
    """draft → approved → issued → updated → cancelled or expired."""

    DRAFT = "draft", _("Draft")
    APPROVED = "approved", _("Approved")
    ISSUED = "issued", _("Issued")
    UPDATED = "updated", _("Updated")
    CANCELLED = "cancelled", _("Cancelled")
    EXPIRED = "expired", _("Expired")


# A warning in one of these states is in force: recipients hold it, updates and cancels reach them.
LIVE_WARNING_STATES = (WarningStatus.ISSUED, WarningStatus.UPDATED)
UNISSUED_WARNING_STATES = (WarningStatus.DRAFT, WarningStatus.APPROVED)


class WarningOrigin(models.TextChoices):
    MANUAL = "manual", _("Entered by hand")
    CAP = "cap", _("Imported from CAP")
    RULE = "rule", _("Automatic rule")


class EarlyWarning(models.Model):
    """A warning over an area, with its level, texts, times and where it stands."""

    level = models.CharField(_("level"), max_length=8, choices=WarningLevel.choices)
    type = models.CharField(_("type"), max_length=64, help_text=_("e.g. 暴雨, 台风, 高温, 地质灾害"))
    event_code = models.CharField(
        _("event type code"), max_length=16, blank=True, help_text=_("GB/T 35965.1 event type, e.g. 11B03")
    )
    cap_category = models.CharField(_("CAP category"), max_length=16, default="Other")
    headline = models.CharField(_("headline"), max_length=256)
    description = models.TextField(_("description"), blank=True)
    instructions = models.TextField(_("instructions"), blank=True)
    language = models.CharField(_("language"), max_length=16, default="zh-CN")
    # Other languages' texts: {"en-US": {"type", "headline", "description", "instructions"}}.
    translations = models.JSONField(_("translations"), default=dict, blank=True)
    # The area as given, normalised to WGS-84: {"polygons": [[[lon, lat], …]], "circles": [{"lon", "lat",
    # "radius_m"}], "units": [{"layer", "code"}]}; the union of all of it is area_wkb.
    area_spec = models.JSONField(_("area"), default=dict)
    area_desc = models.CharField(_("area description"), max_length=512, blank=True)
    area_wkb = models.BinaryField(_("area (WKB, WGS-84)"))
    area_km2 = models.FloatField(_("area (km²)"), default=0.0)
    # Counts per layer and the districts and streets covered, for lists and the page (not recipients).
    area_summary = models.JSONField(default=dict, blank=True)
    effective_at = models.DateTimeField(_("effective"))
    onset_at = models.DateTimeField(_("onset"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True, db_index=True)
    status = models.CharField(
        _("status"), max_length=16, choices=WarningStatus.choices, default=WarningStatus.DRAFT, db_index=True
    )
    # Bumped by issue, update and cancel: each version is one CAP message and one round of receipts.
    version = models.PositiveIntegerField(default=0)
    origin = models.CharField(max_length=8, choices=WarningOrigin.choices, default=WarningOrigin.MANUAL)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), db_index=True)
    # The last person to change an unissued draft: like the drafter, they may not approve it.
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    issued_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("early warning")
        verbose_name_plural = _("early warnings")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "expires_at"], name="warning_status_expires")]

    def __str__(self) -> str:
        return f"{self.get_level_display()} {self.type}: {self.headline}"

    def clean(self) -> None:
        """Times in order: expires after effective (and after onset when both are given)."""
        if (
            self.expires_at is not None
            and self.effective_at is not None
            and self.expires_at <= self.effective_at
        ):
            raise ValidationError({"expires_at": _("A warning must expire after it takes effect.")})
        if self.expires_at is not None and self.onset_at is not None and self.expires_at <= self.onset_at:
            raise ValidationError({"expires_at": _("A warning must expire after its onset.")})


class WarningReceipt(models.Model):
    """One recipient of a warning: why they receive it, and when the current version reached and was read."""

    warning = models.ForeignKey(EarlyWarning, on_delete=models.CASCADE, related_name="receipts")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The recipient's unit when first notified, so coverage per department does not drift later.
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reasons = models.JSONField(default=list)  # any of "centre", "department", "grid"
    districts = models.JSONField(default=list)  # covered district codes this recipient answers for
    version = models.PositiveIntegerField(default=0)
    notified_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    read_source = models.CharField(max_length=16, blank=True)

    class Meta:
        verbose_name = _("warning receipt")
        verbose_name_plural = _("warning receipts")
        constraints = [models.UniqueConstraint(fields=["warning", "user"], name="warning_receipt_once")]
        indexes = [models.Index(fields=["user", "warning"], name="warning_receipt_user")]

    def __str__(self) -> str:
        return f"warning {self.warning_id} → user {self.user_id}"


class WarningLogRecord(models.Model):
    """One step on a warning's timeline: who, in which role, from where, when, from and to, and why."""

    warning = models.ForeignKey(EarlyWarning, on_delete=models.PROTECT, related_name="timeline")
    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_role = models.CharField(max_length=32, blank=True)
    source = models.CharField(max_length=16)
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("warning log record")
        verbose_name_plural = _("warning log records")
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action}"


class CapDirection(models.TextChoices):
    IN = "in", _("Imported")
    OUT = "out", _("Issued by us")


class WarningCapMessage(models.Model):
    """A CAP message of a warning: one imported, or one version we issued (identifier, sent time)."""

    warning = models.ForeignKey(EarlyWarning, on_delete=models.PROTECT, related_name="cap_messages")
    direction = models.CharField(max_length=3, choices=CapDirection.choices)
    sender = models.CharField(max_length=256)
    identifier = models.CharField(max_length=256)
    sent = models.DateTimeField()
    msg_type = models.CharField(max_length=8)
    version = models.PositiveIntegerField(default=0)
    xml = models.TextField(blank=True)  # imported messages only: ours are re-rendered from the warning
    at = models.DateTimeField()

    class Meta:
        verbose_name = _("CAP message")
        verbose_name_plural = _("CAP messages")
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["sender", "identifier"], name="cap_message_sender_identifier")
        ]

    def __str__(self) -> str:
        return f"{self.msg_type} {self.sender},{self.identifier}"


class ClusterUnit(models.TextChoices):
    BLOCK = "block", _("Block")
    GRID = "grid", _("Grid")


# The placeholders a rule's headline and description may use, with sample values to check a template.
RULE_TEMPLATE_FIELDS: dict[str, object] = {
    "unit_name": "",
    "unit_code": "",
    "count": 0,
    "minutes": 0,
    "category": "",
    "expected": "",
    "ratio": "",
}


class RuleTrigger(models.TextChoices):
    """What makes a rule fire for a unit."""

    THRESHOLD = "threshold", _("At least N incidents in the window")
    EMERGING = "emerging", _("Emerging hotspot: improbably many against the unit's own history")


class WarningRule(models.Model):
    """An automatic warning for a block or grid: a plain count threshold, or an emerging hotspot.

    A *threshold* rule fires when at least N incidents of the category (family) fall in one unit within
    T minutes. An *emerging* rule fires when the unit is an emerging hotspot for that window against its
    own history (``command.hotspots.emerging_hotspots``: one-sided Poisson test, Benjamini–Hochberg over
    the layer) and holds at least N incidents.
    """

    name = models.CharField(_("name"), max_length=128)
    enabled = models.BooleanField(_("enabled"), default=True)
    category = models.ForeignKey(
        "incidents.Category", verbose_name=_("category or family"), on_delete=models.PROTECT
    )
    unit_layer = models.CharField(
        _("counted per"), max_length=8, choices=ClusterUnit.choices, default=ClusterUnit.BLOCK
    )
    trigger = models.CharField(
        _("fires on"), max_length=12, choices=RuleTrigger.choices, default=RuleTrigger.THRESHOLD
    )
    min_count = models.PositiveIntegerField(_("at least (incidents)"), default=3)
    window_minutes = models.PositiveIntegerField(_("within (minutes)"), default=60)
    history_days = models.PositiveIntegerField(
        _("history (days)"),
        default=28,
        help_text=_("Emerging hotspots only: the unit's own history just before the window."),
    )
    fdr = models.FloatField(
        _("false discovery rate"),
        default=0.05,
        help_text=_("Emerging hotspots only: the Benjamini–Hochberg level, e.g. 0.05."),
    )
    level = models.CharField(_("level"), max_length=8, choices=WarningLevel.choices, default="blue")
    warning_type = models.CharField(_("warning type"), max_length=64)
    headline = models.CharField(
        _("headline"),
        max_length=256,
        help_text=_(
            "May use {unit_name}, {unit_code}, {count}, {minutes}, {category}, and for emerging "
            "hotspots {expected} (the count expected from the unit's history) and {ratio}."
        ),
    )
    description = models.TextField(_("description"), blank=True)
    instructions = models.TextField(_("instructions"), blank=True)
    valid_minutes = models.PositiveIntegerField(_("valid for (minutes)"), default=360)

    class Meta:
        verbose_name = _("automatic warning rule")
        verbose_name_plural = _("automatic warning rules")
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """A cluster needs two incidents at least and a window of a minute at least."""
        errors: dict[str, str] = {}
        if self.min_count < 2:
            errors["min_count"] = str(_("At least two incidents make a cluster."))
        if self.window_minutes < 1:
            errors["window_minutes"] = str(_("At least one minute."))
        if self.valid_minutes < 1:
            errors["valid_minutes"] = str(_("At least one minute."))
        if self.trigger == RuleTrigger.EMERGING:
            if self.history_days < 1:
                errors["history_days"] = str(_("At least one day."))
            elif self.history_days * 24 * 60 < 2 * self.window_minutes:
                errors["history_days"] = str(_("The history must be at least twice the window."))
            if not 0 < self.fdr <= 0.5:
                errors["fdr"] = str(_("Between 0 and 0.5, e.g. 0.05."))
        try:
            self.headline.format(**RULE_TEMPLATE_FIELDS)
        except (KeyError, IndexError, ValueError):
            errors["headline"] = str(
                _("Only {unit_name}, {unit_code}, {count}, {minutes}, {category}, {expected}, {ratio}.")
            )
        if errors:
            raise ValidationError(errors)


class WarningRuleFiring(models.Model):
    """One firing of an automatic rule for one unit: the incidents that made the cluster and the draft."""

    rule = models.ForeignKey(WarningRule, on_delete=models.PROTECT, related_name="firings")
    unit_layer = models.CharField(max_length=8, choices=ClusterUnit.choices)
    unit_code = models.CharField(max_length=32)
    fired_at = models.DateTimeField(db_index=True)
    window_start = models.DateTimeField()
    incident_ids = models.JSONField(default=list)
    warning = models.OneToOneField(
        EarlyWarning, null=True, blank=True, on_delete=models.PROTECT, related_name="rule_firing"
    )

    class Meta:
        verbose_name = _("automatic warning firing")
        verbose_name_plural = _("automatic warning firings")
        ordering = ["-fired_at", "-id"]
        indexes = [models.Index(fields=["rule", "unit_code", "fired_at"], name="warning_firing_lookup")]

    def __str__(self) -> str:
        return f"{self.rule_id} at {self.unit_layer} {self.unit_code}"
