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
