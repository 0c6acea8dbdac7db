"""CAP 1.2 (OASIS Common Alerting Protocol): safe parsing, schema validation, level mapping and rendering.

No database here: `parse_cap` turns bytes into a `CapAlert` (or a `CapError` naming what is wrong) and
`render_cap` turns a `CapAlert` into bytes; command/warnings.py maps them to and from warnings.

Parsing is defensive because the bytes come from outside: a size limit first, then lxml with entity
resolution, DTD loading and network access switched off, and any DOCTYPE refused outright (CAP never
needs one, and it is where entity-expansion and external-entity attacks live). The document is then
validated against the official OASIS CAP 1.2 schema vendored in command/data/CAP-v1.2.xsd.

CAP coordinates are WGS-84 "lat,lon" pairs, latitude first (the opposite of GeoJSON and of this code
base), and circle radii are kilometres; every conversion to our lon/lat and metres happens here.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import shapely
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from lxml import etree
from shapely.geometry import Polygon

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
XSD_PATH: Final = Path(__file__).resolve().parent / "data" / "CAP-v1.2.xsd"
BEIJING: Final = ZoneInfo("Asia/Shanghai")
DEFAULT_MAX_BYTES: Final = 1024 * 1024
DEFAULT_MAX_VERTICES: Final = 10_000
DEFAULT_ISSUER_CODE: Final = "44030000000000"

SEVERITIES: Final = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
URGENCIES: Final = ("Immediate", "Expected", "Future", "Past", "Unknown")
CERTAINTIES: Final = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
LEVELS: Final = ("blue", "yellow", "orange", "red")

# How CAP's three qualifiers map to our four levels, and back. Overridden whole by settings.CAP_LEVEL_MAP.
# "import": rows tried in order, first match wins; a row names any of severity, urgency, certainty (a
# value or a list of values; an absent key matches anything) and the level it gives. The default
# follows the national practice of GB/T 35965.1 feeds, where the colour is carried by severity alone.
# "export": the severity, urgency and certainty written for each level (severity must map back to the
# same level on import, which `level_map` checks).
DEFAULT_CAP_LEVEL_MAP: Final[dict[str, Any]] = {
    "import": [
        {"severity": "Extreme", "level": "red"},
        {"severity": "Severe", "level": "orange"},
        {"severity": "Moderate", "level": "yellow"},
        {"severity": "Minor", "level": "blue"},
        {"severity": "Unknown", "level": "blue"},
    ],
    "export": {
        "red": {"severity": "Extreme", "urgency": "Immediate", "certainty": "Likely"},
        "orange": {"severity": "Severe", "urgency": "Immediate", "certainty": "Likely"},
        "yellow": {"severity": "Moderate", "urgency": "Expected", "certainty": "Likely"},
        "blue": {"severity": "Minor", "urgency": "Expected", "certainty": "Possible"},
    },
}

_IDENTIFIER_RE: Final = re.compile(r"^(\d{14})_(\d{14})_(\d)$")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR_RE: Final = re.compile(rf"^({_NUMBER}),({_NUMBER})$")
# Checked on the raw bytes before parsing, so no parser ever sees an entity declaration; documents in
# other encodings are caught after parsing by the docinfo check (and libxml2's amplification limit).
_DOCTYPE_RE: Final = re.compile(rb"<!(DOCTYPE|ENTITY)")


class CapError(ValueError):
    """A CAP message that cannot be taken; `field` names the element at fault (e.g. info[0].area[1])."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class CapArea:
    """One <area>: its description, polygons as lon/lat rings, circles as (lon, lat, metres), geocodes."""

    desc: str
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    circles: list[tuple[float, float, float]] = field(default_factory=list)
    geocodes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CapInfo:
    """One <info> block (one language of the message)."""

    language: str
    categories: list[str]
    event: str
    urgency: str
    severity: str
    certainty: str
    event_codes: list[tuple[str, str]] = field(default_factory=list)
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    web: str = ""
    contact: str = ""
    parameters: list[tuple[str, str]] = field(default_factory=list)
    areas: list[CapArea] = field(default_factory=list)


@dataclass
class CapAlert:
    """A CAP 1.2 <alert>: the envelope and its info blocks."""

    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    source: str = ""
    note: str = ""
    references: list[tuple[str, str, str]] = field(default_factory=list)
    infos: list[CapInfo] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- settings


def max_bytes() -> int:
    """The largest CAP message accepted (settings.CAP_MAX_BYTES, default 1 MiB)."""
    return int(getattr(settings, "CAP_MAX_BYTES", DEFAULT_MAX_BYTES))


def max_vertices() -> int:
    """The most polygon vertices one message may carry (settings.WARNING_MAX_VERTICES, default 10,000)."""
    return int(getattr(settings, "WARNING_MAX_VERTICES", DEFAULT_MAX_VERTICES))


def issuer_code() -> str:
    """Our GB/T 35965.1 issuing-unit code ZZZZZZDDDUUUXX (settings.WARNING_ISSUER_CODE)."""
    code = str(getattr(settings, "WARNING_ISSUER_CODE", DEFAULT_ISSUER_CODE))
    if not re.fullmatch(r"\d{14}", code):
        raise ImproperlyConfigured(
            "WARNING_ISSUER_CODE must be 14 digits: 6-digit area code (GB/T 2260), 3-digit organisation "
            f"code (GB/T 4657), 3-digit unit and 2-digit extension; got {code!r}"
        )
    return code


def sender_id() -> str:
    """The CAP <sender> of our messages (settings.CAP_SENDER, default the issuer code)."""
    return str(getattr(settings, "CAP_SENDER", "") or issuer_code())


def sender_name() -> str:
    """The CAP <senderName> of our messages (settings.CAP_SENDER_NAME)."""
    return str(getattr(settings, "CAP_SENDER_NAME", "市应急联动指挥中心"))


def _as_values(value: Any, allowed: Sequence[str], where: str) -> frozenset[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ImproperlyConfigured(f"CAP_LEVEL_MAP {where}: {bad or values!r} not among {', '.join(allowed)}")
    return frozenset(values)


@dataclass(frozen=True)
class LevelMap:
    """The checked CAP_LEVEL_MAP: import rows and export terms."""

    rows: tuple[tuple[frozenset[str] | None, frozenset[str] | None, frozenset[str] | None, str], ...]
    export: Mapping[str, tuple[str, str, str]]

    def level_for(self, severity: str, urgency: str, certainty: str) -> str | None:
        """The level of the first row matching all three qualifiers, or None."""
        for sev, urg, cer, level in self.rows:
            if (
                (sev is None or severity in sev)
                and (urg is None or urgency in urg)
                and (cer is None or certainty in cer)
            ):
                return level
        return None


def level_map() -> LevelMap:
    """settings.CAP_LEVEL_MAP (or the default), checked; ImproperlyConfigured names what is wrong."""
    raw = getattr(settings, "CAP_LEVEL_MAP", None) or DEFAULT_CAP_LEVEL_MAP
    if not isinstance(raw, Mapping) or not isinstance(raw.get("import"), list):
        raise ImproperlyConfigured("CAP_LEVEL_MAP needs an 'import' list and an 'export' mapping")
    rows = []
    for i, row in enumerate(raw["import"]):
        if not isinstance(row, Mapping) or row.get("level") not in LEVELS:
            raise ImproperlyConfigured(
                f"CAP_LEVEL_MAP import[{i}]: 'level' must be one of {', '.join(LEVELS)}"
            )
        unknown = set(row) - {"severity", "urgency", "certainty", "level"}
        if unknown:
            raise ImproperlyConfigured(f"CAP_LEVEL_MAP import[{i}]: unknown keys {sorted(unknown)}")
        rows.append(
            (
                _as_values(row.get("severity"), SEVERITIES, f"import[{i}].severity"),
                _as_values(row.get("urgency"), URGENCIES, f"import[{i}].urgency"),
                _as_values(row.get("certainty"), CERTAINTIES, f"import[{i}].certainty"),
                str(row["level"]),
            )
        )
    export_raw = raw.get("export")
    if not isinstance(export_raw, Mapping) or set(export_raw) != set(LEVELS):
        raise ImproperlyConfigured(f"CAP_LEVEL_MAP export must give terms for each of {', '.join(LEVELS)}")
    export: dict[str, tuple[str, str, str]] = {}
    for level in LEVELS:
        terms = export_raw[level]
        sev, urg, cer = terms.get("severity"), terms.get("urgency"), terms.get("certainty")
        if sev not in SEVERITIES or urg not in URGENCIES or cer not in CERTAINTIES:
            raise ImproperlyConfigured(
                f"CAP_LEVEL_MAP export.{level}: severity, urgency, certainty are required"
            )
        export[level] = (sev, urg, cer)
    checked = LevelMap(tuple(rows), export)
    for level, (sev, urg, cer) in export.items():
        if checked.level_for(sev, urg, cer) != level:
            raise ImproperlyConfigured(f"CAP_LEVEL_MAP export.{level} would import as another level")
    return checked


# ---------------------------------------------------------------------------------------------- times


def format_cap_time(moment: datetime) -> str:
    """A CAP 1.2 dateTime in Beijing time: 2026-06-12T09:30:00+08:00 (the schema forbids "Z")."""
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()


def make_identifier(code: str, entered_at: datetime, serial: int) -> str:
    """A GB/T 35965.1 identifier ZZZZZZDDDUUUXX_YYYYMMDDhhmmss_N: unit code, Beijing entry time, serial."""
    if not re.fullmatch(r"\d{14}", code) or not 0 <= serial <= 9:
        raise ValueError(f"bad identifier parts: code={code!r}, serial={serial}")
    return f"{code}_{entered_at.astimezone(BEIJING):%Y%m%d%H%M%S}_{serial}"


def parse_identifier(identifier: str) -> tuple[str, datetime, int] | None:
    """Split a GB/T 35965.1 identifier into unit code, entry time (Beijing) and serial; None if not one."""
    match = _IDENTIFIER_RE.match(identifier)
    if match is None:
        return None
    when = datetime.strptime(match.group(2), "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
    return match.group(1), when, int(match.group(3))


# --------------------------------------------------------------------------------------------- schema

_local = threading.local()


def _schema() -> etree.XMLSchema:
    # One compiled schema per thread: libxml2 validation contexts are not meant to be shared.
    schema = getattr(_local, "schema", None)
    if schema is None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        schema = etree.XMLSchema(etree.parse(str(XSD_PATH), parser))
        _local.schema = schema
    return schema


def _short(message: str) -> str:
    return message.replace("{" + CAP_NS + "}", "")


def parse_xml(data: bytes) -> Any:
    """Parse untrusted XML bytes safely: size limit, no DTD, no entities, no network (CapError otherwise)."""
    if not isinstance(data, bytes | bytearray):
        raise CapError("body", "CAP XML is expected as bytes")
    limit = max_bytes()
    if len(data) > limit:
        raise CapError("body", f"the message is {len(data)} bytes, more than the limit of {limit}")
    if not data.strip():
        raise CapError("body", "the message is empty")
    if _DOCTYPE_RE.search(data):
        raise CapError("xml", "DOCTYPE and entity declarations are not allowed in CAP messages")
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )
    try:
        root = etree.fromstring(bytes(data), parser)
    except etree.XMLSyntaxError as exc:
        detail = re.sub(r" \(<string>, line \d+\)$", "", str(exc))
        raise CapError("xml", f"not well-formed XML: {detail}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise CapError("xml", "DOCTYPE and entity declarations are not allowed in CAP messages")
    return root


def validate_root(root: Any) -> None:
    """Check the namespace, then validate against the OASIS CAP 1.2 schema (CapError naming the element)."""
    qname = etree.QName(root)
    if qname.namespace != CAP_NS or qname.localname != "alert":
        found = f"{{{qname.namespace}}}{qname.localname}" if qname.namespace else qname.localname
        raise CapError(
            "namespace", f"the root element is {found}; a CAP 1.2 message is an <alert> in namespace {CAP_NS}"
        )
    schema = _schema()
    if not schema.validate(root):
        errors = list(schema.error_log)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CapError("schema", f"line {first.line}: {_short(first.message)}{more}")


def validate_cap(data: bytes) -> None:
    """Raise CapError unless `data` is well-formed, safe CAP 1.2 valid against the OASIS schema."""
    validate_root(parse_xml(data))


# --------------------------------------------------------------------------------------------- parsing


def _text(parent: Any, name: str) -> str:
    child = parent.find(f"{{{CAP_NS}}}{name}")
    return (child.text or "").strip() if child is not None else ""


def _texts(parent: Any, name: str) -> list[str]:
    return [(c.text or "").strip() for c in parent.findall(f"{{{CAP_NS}}}{name}")]


def _pairs(parent: Any, name: str) -> list[tuple[str, str]]:
    return [(_text(c, "valueName"), _text(c, "value")) for c in parent.findall(f"{{{CAP_NS}}}{name}")]


def _time(parent: Any, name: str, where: str) -> datetime | None:
    raw = _text(parent, name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise CapError(f"{where}.{name}", f"not a date-time: {raw!r}") from None


def _point(text: str, where: str) -> tuple[float, float]:
    match = _PAIR_RE.match(text)
    if match is None:
        raise CapError(where, f"{text[:40]!r} is not a 'lat,lon' pair")
    lat, lon = float(match.group(1)), float(match.group(2))
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise CapError(where, "coordinates must be finite")
    if not -90.0 <= lat <= 90.0:
        hint = " (CAP pairs are 'lat,lon', latitude first)" if -180.0 <= lat <= 180.0 else ""
        raise CapError(where, f"latitude {lat:g} is out of range{hint}")
    if not -180.0 <= lon <= 180.0:
        raise CapError(where, f"longitude {lon:g} is out of range")
    return lon, lat


def parse_polygon(text: str, where: str) -> list[tuple[float, float]]:
    """A CAP polygon ("lat,lon lat,lon …", closed, ≥ 4 pairs) as a valid lon/lat ring."""
    tokens = text.split()
    if len(tokens) > max_vertices():
        raise CapError(
            where, f"the polygon has {len(tokens)} points, more than the limit of {max_vertices()}"
        )
    ring = [_point(token, where) for token in tokens]
    if len(ring) < 4:
        raise CapError(where, f"a polygon needs at least 4 'lat,lon' pairs, got {len(ring)}")
    if ring[0] != ring[-1]:
        raise CapError(where, "the polygon is not closed: its first and last pairs must be equal")
    polygon = Polygon(ring)
    if not polygon.is_valid:
        raise CapError(where, f"invalid polygon: {shapely.is_valid_reason(polygon)} (as lon lat)")
    if polygon.is_empty or polygon.area == 0.0:
        raise CapError(where, "the polygon has no area")
    return ring


def parse_circle(text: str, where: str) -> tuple[float, float, float]:
    """A CAP circle ("lat,lon radius" with the radius in kilometres) as (lon, lat, radius in metres)."""
    parts = text.split()
    if len(parts) != 2:
        raise CapError(where, f"{text[:60]!r} is not 'lat,lon radius-in-km'")
    lon, lat = _point(parts[0], where)
    try:
        radius_km = float(parts[1])
    except ValueError:
        raise CapError(where, f"radius {parts[1][:20]!r} is not a number of kilometres") from None
    if not math.isfinite(radius_km) or radius_km <= 0.0:
        raise CapError(where, f"the radius must be a positive number of kilometres, got {parts[1]!r}")
    return lon, lat, radius_km * 1000.0


def _area(element: Any, where: str) -> CapArea:
    area = CapArea(desc=_text(element, "areaDesc"))
    for i, text in enumerate(_texts(element, "polygon")):
        area.polygons.append(parse_polygon(text, f"{where}.polygon[{i}]"))
    for i, text in enumerate(_texts(element, "circle")):
        area.circles.append(parse_circle(text, f"{where}.circle[{i}]"))
    area.geocodes = _pairs(element, "geocode")
    return area


def _info(element: Any, where: str) -> CapInfo:
    info = CapInfo(
        language=_text(element, "language") or "en-US",
        categories=_texts(element, "category"),
        event=_text(element, "event"),
        urgency=_text(element, "urgency"),
        severity=_text(element, "severity"),
        certainty=_text(element, "certainty"),
        event_codes=_pairs(element, "eventCode"),
        effective=_time(element, "effective", where),
        onset=_time(element, "onset", where),
        expires=_time(element, "expires", where),
        sender_name=_text(element, "senderName"),
        headline=_text(element, "headline"),
        description=_text(element, "description"),
        instruction=_text(element, "instruction"),
        web=_text(element, "web"),
        contact=_text(element, "contact"),
        parameters=_pairs(element, "parameter"),
    )
    info.areas = [_area(a, f"{where}.area[{i}]") for i, a in enumerate(element.findall(f"{{{CAP_NS}}}area"))]
    return info


def parse_references(text: str) -> list[tuple[str, str, str]]:
    """CAP <references>: space-separated "sender,identifier,sent" triples."""
    result = []
    for token in text.split():
        parts = token.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapError("references", f"{token[:80]!r} is not 'sender,identifier,sent'")
        result.append((parts[0], parts[1], parts[2]))
    return result


def parse_cap(data: bytes) -> CapAlert:
    """Parse and validate a CAP 1.2 message (CapError naming the problem: xml, namespace, schema, area …)."""
    root = parse_xml(data)
    validate_root(root)
    sent = _time(root, "sent", "alert")
    assert sent is not None  # the schema makes <sent> mandatory
    alert = CapAlert(
        identifier=_text(root, "identifier"),
        sender=_text(root, "sender"),
        sent=sent,
        status=_text(root, "status"),
        msg_type=_text(root, "msgType"),
        scope=_text(root, "scope"),
        source=_text(root, "source"),
        note=_text(root, "note"),
        references=parse_references(_text(root, "references")),
    )
    if not alert.identifier or not alert.sender:
        raise CapError("identifier" if not alert.identifier else "sender", "must not be empty")
    # CAP forbids spaces, commas and restricted characters in both (they separate <references>).
    for name in ("identifier", "sender"):
        value = getattr(alert, name)
        if any(ch in value for ch in " ,<&"):
            raise CapError(name, f"{value[:60]!r} contains a space, comma or restricted character")
    infos = root.findall(f"{{{CAP_NS}}}info")
    alert.infos = [_info(element, f"info[{i}]") for i, element in enumerate(infos)]
    vertices = sum(len(r) for info in alert.infos for a in info.areas for r in a.polygons)
    if vertices > max_vertices():
        raise CapError(
            "info", f"the areas have {vertices} points in all, more than the limit of {max_vertices()}"
        )
    return alert


# -------------------------------------------------------------------------------------------- rendering


def _sub(parent: Any, name: str, text: str | None = None) -> Any:
    child = etree.SubElement(parent, f"{{{CAP_NS}}}{name}")
    if text is not None:
        child.text = text
    return child


def _pair(parent: Any, name: str, value_name: str, value: str) -> None:
    element = _sub(parent, name)
    _sub(element, "valueName", value_name)
    _sub(element, "value", value)


def format_polygon(ring: Sequence[tuple[float, float]]) -> str:
    """A lon/lat ring as a closed CAP polygon ("lat,lon …", seven decimals ≈ 1 cm, as areas are stored)."""
    points = list(ring)
    if points[0] != points[-1]:
        points.append(points[0])
    return " ".join(f"{lat:.7f},{lon:.7f}" for lon, lat in points)


def format_circle(lon: float, lat: float, radius_m: float) -> str:
    """A circle as CAP "lat,lon radius-in-km"."""
    return f"{lat:.7f},{lon:.7f} {radius_m / 1000.0:.3f}"


def render_cap(alert: CapAlert) -> bytes:
    """The CAP 1.2 XML of `alert` (elements in schema order, times in Beijing time)."""
    root = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
    _sub(root, "identifier", alert.identifier)
    _sub(root, "sender", alert.sender)
    _sub(root, "sent", format_cap_time(alert.sent))
    _sub(root, "status", alert.status)
    _sub(root, "msgType", alert.msg_type)
    if alert.source:
        _sub(root, "source", alert.source)
    _sub(root, "scope", alert.scope)
    if alert.note:
        _sub(root, "note", alert.note)
    if alert.references:
        _sub(root, "references", " ".join(",".join(r) for r in alert.references))
    for info in alert.infos:
        element = _sub(root, "info")
        _sub(element, "language", info.language)
        for category in info.categories:
            _sub(element, "category", category)
        _sub(element, "event", info.event)
        _sub(element, "urgency", info.urgency)
        _sub(element, "severity", info.severity)
        _sub(element, "certainty", info.certainty)
        for name, value in info.event_codes:
            _pair(element, "eventCode", name, value)
        for tag, moment in (("effective", info.effective), ("onset", info.onset), ("expires", info.expires)):
            if moment is not None:
                _sub(element, tag, format_cap_time(moment))
        for tag, text in (
            ("senderName", info.sender_name),
            ("headline", info.headline),
            ("description", info.description),
            ("instruction", info.instruction),
            ("web", info.web),
            ("contact", info.contact),
        ):
            if text:
                _sub(element, tag, text)
        for name, value in info.parameters:
            _pair(element, "parameter", name, value)
        for area in info.areas:
            area_element = _sub(element, "area")
            _sub(area_element, "areaDesc", area.desc)
            for ring in area.polygons:
                _sub(area_element, "polygon", format_polygon(ring))
            for lon, lat, radius_m in area.circles:
                _sub(area_element, "circle", format_circle(lon, lat, radius_m))
            for name, value in area.geocodes:
                _pair(area_element, "geocode", name, value)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
