"""Categories, grades and deadline policies: the reference data incidents are judged by."""

from __future__ import annotations

import pickle
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from config.rows import update_row


def _snapshot(value: Any) -> Any:
    """A deep copy of a JSON value (the geocode), a third of `copy.deepcopy`'s time: a pickle round trip
    of our own bytes, which keeps every type as it was."""
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


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
    register_on_intake = models.BooleanField(
        _("accept and register on intake"),
        default=False,
        help_text=_(
            "For emergencies (fire, traffic accidents): skip the queue; with automatic dispatch the "
            "orders go out as the report arrives."
        ),
    )
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


class ReferenceVersion(models.Model):
    """One row counting edits of the reference data that each process keeps in memory.

    Deadline policies, linkage rules, categories, grades, jurisdictions and the directory of event
    recipients are read on every intake and action; processes keep them and re-read them when this
    number (or the territory data version) has moved. Saving or deleting one of those rows, or a user,
    through the ORM (the admin, services) bumps it in the same transaction (see incidents/refcache.py).
    """

    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = _("reference data version")

    def __str__(self) -> str:
        return f"v{self.version}"


class Status(models.TextChoices):
    """The closed loop of an incident (上报 → 受理 → 立案 → 派遣 → 处置 → 反馈 → 核查 → 结案 → 评价)."""

    REPORTED = "reported", _("Reported")
    ACCEPTED = "accepted", _("Accepted")
    REGISTERED = "registered", _("Registered")
    CANCELLED = "cancelled", _("Not registered")
    DISPATCHED = "dispatched", _("Dispatched")
    IN_PROGRESS = "in_progress", _("In progress")
    HANDLED = "handled", _("Handled")
    VERIFIED = "verified", _("Verified")
    CLOSED = "closed", _("Closed")
    EVALUATED = "evaluated", _("Evaluated")
    MERGED = "merged", _("Merged into another incident")


class Source(models.TextChoices):
    """Where an action came from."""

    WEB = "web", _("Web page")
    API = "api", _("API")
    WEBSOCKET = "websocket", _("Websocket")
    SYSTEM = "system", _("System")


class IncidentSerial(models.Model):
    """The last serial used per district and day; its row lock keeps incident codes gap-free."""

    district_code = models.CharField(max_length=32)
    day = models.DateField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["district_code", "day"], name="incident_serial_unique")
        ]

    def __str__(self) -> str:
        return f"{self.district_code} {self.day}: {self.last}"


class Incident(models.Model):
    """One incident, made of one or more reports, walking the closed loop."""

    code = models.CharField(_("code"), max_length=48, unique=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.REPORTED)
    # No index of its own: the (category, -reported_at) index below serves it (migration 0007).
    category = models.ForeignKey(
        Category, verbose_name=_("category"), on_delete=models.PROTECT, db_index=False
    )
    grade = models.ForeignKey(Grade, verbose_name=_("grade"), null=True, blank=True, on_delete=models.PROTECT)
    description = models.TextField(_("description"))
    address = models.CharField(_("address"), max_length=256, blank=True)
    lon = models.FloatField(_("longitude (WGS-84)"))
    lat = models.FloatField(_("latitude (WGS-84)"))
    # The geocode result is copied, so later territory edits do not move history.
    district_code = models.CharField(max_length=32, db_index=True)
    street_code = models.CharField(max_length=32, db_index=True)
    community_code = models.CharField(max_length=32, db_index=True)
    grid_code = models.CharField(max_length=32, db_index=True)
    block_code = models.CharField(max_length=32, blank=True, db_index=True)
    geocode = models.JSONField(default=dict)
    occurred_at = models.DateTimeField(_("occurred at"))
    reported_at = models.DateTimeField(_("reported at"), db_index=True)
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="incidents_reported"
    )
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="merged_incidents"
    )
    possible_duplicates = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="+")
    # The clock of the current stage (see incidents/deadlines.py).
    stage = models.CharField(max_length=16, choices=Stage.choices, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    clock_unit = models.CharField(max_length=16, choices=DurationUnit.choices, blank=True)
    due_at = models.DateTimeField(_("due at"), null=True, blank=True, db_index=True)
    warn_at = models.DateTimeField(null=True, blank=True, db_index=True)
    warned_at = models.DateTimeField(null=True, blank=True)
    overdue_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(_("suspended at"), null=True, blank=True)
    rework_count = models.PositiveIntegerField(default=0)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    handled_by = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    evaluation_score = models.PositiveSmallIntegerField(null=True, blank=True)
    evaluation_comment = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("incident")
        verbose_name_plural = _("incidents")
        ordering = ["-reported_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-reported_at"]),
            # The list's whole order after the category (migration 0008): its first page is a range scan.
            models.Index(fields=["category", "-reported_at", "-id"], name="incident_category_newest"),
        ]

    def __str__(self) -> str:
        return self.code

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save; a row read from the database writes only the columns changed since (and updated_at).

        Each step of the closed loop changes a handful of the incident's thirty columns: the UPDATE (and
        the Python that builds it) stays that small, and a column this transaction did not touch is
        never written back over another's change. No pre_save/post_save signal is sent for such a save
        (config/rows.py; nothing listens to incidents' saves).
        """
        fields = None if args or kwargs else self.pending_update()
        if fields is not None:
            update_row(self, fields)  # what save(update_fields=fields) writes, without rebuilding its SQL
            self.remember_stored(set(fields))  # the others are as read (the geocode is not copied again)
            return
        super().save(*args, **kwargs)
        if getattr(self, "_loaded_values", None) is not None:
            written = kwargs.get("update_fields")
            self.remember_stored(None if written is None else set(written))

    def pending_update(self) -> list[str] | None:
        """The fields a save would write (those changed since the row was read, and updated_at).

        None for an incident not read from the database (a save then writes it whole). Deferred fields
        are left alone, as Django's save leaves them.
        """
        loaded: dict[str, Any] | None = getattr(self, "_loaded_values", None)
        if loaded is None or self._state.adding:
            return None
        deferred = self.get_deferred_fields()  # as Django's save: columns never read are not written
        changed = [
            field.name
            for field in self._meta.concrete_fields
            if field.attname not in deferred
            and (field.attname not in loaded or getattr(self, field.attname) != loaded[field.attname])
        ]
        return [*[n for n in changed if n != "updated_at"], "updated_at"]

    def remember_stored(self, names: set[str] | None = None) -> None:
        """Take the current values (of the fields named, else all) as the row's, e.g. after config.rows."""
        loaded: dict[str, Any] = getattr(self, "_loaded_values", None) or {}
        deferred = self.get_deferred_fields()
        for field in self._meta.concrete_fields:
            if field.attname in deferred:
                continue
            if names is None or field.name in names or field.attname in names:
                value = getattr(self, field.attname)
                loaded[field.attname] = _snapshot(value) if field.name == "geocode" else value
        self._loaded_values = loaded

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any, **kwargs: Any) -> Incident:
        """A row read from the database, remembering its values (see save)."""
        instance = super().from_db(db, field_names, values, **kwargs)
        loaded = dict(zip(field_names, values, strict=True))
        if "geocode" in loaded:  # a dict: kept as a copy, so that a change made to it in place shows
            loaded["geocode"] = _snapshot(loaded["geocode"])
        instance._loaded_values = loaded
        return instance

    def area_codes(self) -> dict[str, str]:
        """The codes of the territory units holding the incident, per layer ("" where none)."""
        return {
            "district": self.district_code,
            "street": self.street_code,
            "community": self.community_code,
            "grid": self.grid_code,
            "block": self.block_code,
        }

    @property
    def is_overdue(self) -> bool:
        """True once the current stage has passed its due time (the mark is set by the timer engine)."""
        return self.overdue_at is not None


class Report(models.Model):
    """One intake (a phone report or a hotline call); an incident keeps every report merged into it."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="reports")
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reports")
    idempotency_key = models.CharField(max_length=128, blank=True, default="")
    request_hash = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, default="phone")
    category = models.ForeignKey(Category, on_delete=models.PROTECT)
    description = models.TextField()
    lon = models.FloatField()
    lat = models.FloatField()
    input_lon = models.FloatField()
    input_lat = models.FloatField()
    input_crs = models.CharField(max_length=16, default="wgs84")
    address = models.CharField(max_length=256, blank=True)
    reporter_name = models.CharField(max_length=64, blank=True)
    reporter_phone = models.CharField(max_length=32, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["received_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reporter", "idempotency_key"],
                name="report_idempotency_key_per_reporter",
                condition=~models.Q(idempotency_key=""),
            )
        ]

    def __str__(self) -> str:
        return f"report {self.pk} of incident {self.incident_id}"


class Photo(models.Model):
    """A photo of a report, checked by content and stored through Django's storage API."""

    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="photos")
    file = models.FileField(upload_to="photos/%Y/%m/%d/")
    content_type = models.CharField(max_length=32)
    size = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255, blank=True)
    location_stripped = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"photo {self.sha256[:12]}"


class IncidentLogRecord(models.Model):
    """One step on an incident's timeline: who, in which role, from where, when, what and why."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="timeline")
    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_role = models.CharField(max_length=32, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action}"


class RequestKind(models.TextChoices):
    SUSPEND = "suspend", _("Suspend")
    EXTEND = "extend", _("Extend")


class IncidentRequest(models.Model):
    """A suspension or extension asked for by an operator, waiting for a commander's approval."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="requests")
    kind = models.CharField(max_length=16, choices=RequestKind.choices)
    minutes = models.PositiveIntegerField(null=True, blank=True)
    reason = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    approved = models.BooleanField(null=True)
    decision_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["requested_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} request on incident {self.incident_id}"
