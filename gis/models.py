"""Territory units (district → street → community → grid, plus blocks) and the data version."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _


class Layer(models.TextChoices):
    DISTRICT = "district", _("District")
    STREET = "street", _("Street")
    COMMUNITY = "community", _("Community")
    GRID = "grid", _("Grid")
    BLOCK = "block", _("Block")


# The layer each layer's parent belongs to; blocks hang off communities, independently of grids.
PARENT_LAYER: dict[str, str | None] = {
    Layer.DISTRICT: None,
    Layer.STREET: Layer.DISTRICT,
    Layer.COMMUNITY: Layer.STREET,
    Layer.GRID: Layer.COMMUNITY,
    Layer.BLOCK: Layer.COMMUNITY,
}
LAYER_ORDER = [Layer.DISTRICT, Layer.STREET, Layer.COMMUNITY, Layer.GRID, Layer.BLOCK]


class TerritoryUnit(models.Model):
    """One polygon of one territory layer, stored as WKB in WGS-84 (lon/lat)."""

    layer = models.CharField(_("layer"), max_length=16, choices=Layer.choices, db_index=True)
    code = models.CharField(_("code"), max_length=32)
    name = models.CharField(_("name"), max_length=128)
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
    )
    # WKB keeps the embedded SQLite default free of SpatiaLite; the in-memory index does the spatial work.
    geometry_wkb = models.BinaryField(_("geometry (WKB, WGS-84)"))
    min_lon = models.FloatField()
    min_lat = models.FloatField()
    max_lon = models.FloatField()
    max_lat = models.FloatField()
    area_m2 = models.FloatField(_("area (m²)"))
    version = models.PositiveIntegerField(_("data version"), default=0)

    class Meta:
        verbose_name = _("territory unit")
        verbose_name_plural = _("territory units")
        ordering = ["layer", "code"]
        constraints = [models.UniqueConstraint(fields=["layer", "code"], name="territory_unit_layer_code")]
        indexes = [models.Index(fields=["code"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def clean(self) -> None:
        """A unit's parent must be of the layer above it."""
        expected = PARENT_LAYER.get(self.layer)
        if expected is None and self.parent_id is not None:
            raise ValidationError({"parent": _("A district has no parent.")})
        if expected is not None and (self.parent is None or self.parent.layer != expected):
            raise ValidationError({"parent": _("The parent must be a %(layer)s.") % {"layer": expected}})


class TerritoryVersion(models.Model):
    """A single row holding the territory data version; every import bumps it."""

    version = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("territory data version")

    def __str__(self) -> str:
        return f"v{self.version}"


class Place(models.Model):
    """A named place for address search: a landmark or a door address, as a WGS-84 point."""

    class Kind(models.TextChoices):
        LANDMARK = "landmark", _("Landmark")
        ADDRESS = "address", _("Door address")

    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.LANDMARK)
    lon = models.FloatField(_("longitude (WGS-84)"))
    lat = models.FloatField(_("latitude (WGS-84)"))
    aliases = models.JSONField(_("aliases"), default=list, blank=True)
    # Codes of the units the place lies in ({"district": …, "grid": …}) as supplied; the gazetteer
    # prefers what the current territory says for the point.
    unit_codes = models.JSONField(_("unit codes"), default=dict, blank=True)
    # Lets every process notice edits cheaply (max over an index) and rebuild its gazetteer.
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, db_index=True)

    class Meta:
        verbose_name = _("place")
        verbose_name_plural = _("places")
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        """Coordinates in range, aliases a list of strings, unit codes a layer → code mapping."""
        errors: dict[str, object] = {}
        if not -180.0 <= self.lon <= 180.0:
            errors["lon"] = _("Longitude must lie between -180 and 180.")
        if not -90.0 <= self.lat <= 90.0:
            errors["lat"] = _("Latitude must lie between -90 and 90.")
        if not isinstance(self.aliases, list) or not all(isinstance(a, str) for a in self.aliases):
            errors["aliases"] = _("Aliases must be a list of strings.")
        if not isinstance(self.unit_codes, dict) or not all(
            k in PARENT_LAYER and isinstance(v, str) for k, v in self.unit_codes.items()
        ):
            errors["unit_codes"] = _("Unit codes must map a layer name to a code.")
        if errors:
            raise ValidationError(errors)
