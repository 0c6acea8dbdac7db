"""Fuzzing, bounded in time: schemathesis over the OpenAPI schema, hypothesis over GeoJSON and CAP input.

- Every operation of /api/v1/schema/ is called in-process (Django's WSGI app, the test transaction's
  connection) with generated valid and invalid input, as the operator: no answer may be a 5xx, and
  every answer must match the schema's declared response. Examples per operation: FUZZ_EXAMPLES
  (default 6: about 30 s for the whole API on the 2-core CI machine; raise it for a nightly run).
- GeoJSON-like areas and territory layers go through gis.areas.validate_area, gis.validate.validate_layer
  and POST /api/v1/warnings/: either a clean result or a ValueError / 400 naming the field, never a crash.
- CAP 1.2: generated alerts survive render → parse; mangled and hostile XML (DTDs, entities) is refused
  with a CapError, never parsed.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
import shapely
from django.core.wsgi import get_wsgi_application
from django.db import transaction
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))

# ------------------------------------------------------------------------------------------ OpenAPI


def _served_schema() -> dict[str, Any]:
    """The schema /api/v1/schema/ serves, generated in-process (the same generator and settings)."""
    import json

    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    document = SchemaGenerator().get_schema(request=None, public=True)
    return dict(json.loads(OpenApiJsonRenderer().render(document)))


# Loaded when the module is collected (schemathesis' lazy fixture loader does not work with pytest 9).
schema = schemathesis.openapi.from_dict(_served_schema())
schema.app = get_wsgi_application()


@pytest.fixture
def wsgi_in_test_transaction(db: Any) -> Iterator[None]:
    """Let the WSGI app share the test's connection, as Django's test client does."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    # Otherwise the handler closes the connection (it is inside the test transaction, not in
    # autocommit) at the end of every request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def operator_token(db: Any) -> str:
    from command.models import User

    token, _ = Token.objects.get_or_create(user=User.objects.get(username="operator"))
    return str(token.key)


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_answers_without_5xx_and_as_its_schema_says(
    case: Any, operator_token: str, wsgi_in_test_transaction: None
) -> None:
    headers = {"Authorization": f"Bearer {operator_token}", "Idempotency-Key": uuid.uuid4().hex}
    # Each example in a savepoint: generated writes must not pile up into later examples' state.
    with transaction.atomic():
        case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])
        transaction.set_rollback(True)


# ------------------------------------------------------------------------------------------ GeoJSON

coordinate = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-200, max_value=200),
    st.floats(min_value=113.7, max_value=114.7),
)
latitude = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=22.4, max_value=22.9)
)
lonlat = st.tuples(coordinate, latitude)


@st.composite
def rings(draw: Any, *, max_points: int = 40) -> list[list[float]]:
    """A ring of GeoJSON positions: often a fair polygon, sometimes open, crossed, degenerate or wild."""
    kind = draw(st.sampled_from(["star", "random", "bowtie", "degenerate"]))
    if kind == "star":
        lon, lat = draw(st.floats(113.8, 114.5)), draw(st.floats(22.45, 22.8))
        n = draw(st.integers(3, max_points))
        radius = draw(st.floats(1e-6, 0.2))
        ring = [
            [lon + radius * math.cos(2 * math.pi * k / n), lat + radius * math.sin(2 * math.pi * k / n)]
            for k in range(n)
        ]
    elif kind == "bowtie":
        lon, lat = draw(st.floats(113.8, 114.5)), draw(st.floats(22.45, 22.8))
        ring = [[lon, lat], [lon + 0.01, lat + 0.01], [lon + 0.01, lat], [lon, lat + 0.01]]
    elif kind == "degenerate":
        point = [draw(st.floats(113.8, 114.5)), draw(st.floats(22.45, 22.8))]
        ring = [point] * draw(st.integers(0, 4))
    else:
        ring = [list(p) for p in draw(st.lists(lonlat, min_size=0, max_size=max_points))]
    if ring and draw(st.booleans()):
        ring.append(list(ring[0]))
    return ring


def _polygon(ring: list[list[float]]) -> Any:
    try:
        return shapely.Polygon(ring)
    except Exception:  # shapely refuses some rings outright (fewer than 4 points, NaN): not our input
        return None


@given(st.lists(rings(), min_size=1, max_size=3), st.integers(1, 200))
@settings(max_examples=150, deadline=None)
def test_validate_area_returns_a_clean_area_or_a_value_error(
    parts: list[list[list[float]]], limit: int
) -> None:
    from gis.areas import validate_area

    polygons = [p for p in (_polygon(r) for r in parts) if p is not None]
    assume(polygons)
    area = polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)
    try:
        result = validate_area(area, max_vertices=limit)
    except ValueError:
        return
    assert result.is_valid and not result.is_empty
    assert shapely.get_num_coordinates(result) <= limit
    min_x, min_y, max_x, max_y = result.bounds
    assert -180 <= min_x <= max_x <= 180 and -90 <= min_y <= max_y <= 90


@given(
    st.lists(
        st.tuples(
            rings(max_points=12),
            st.one_of(st.none(), st.text(max_size=40)),
            st.one_of(st.none(), st.text(max_size=8)),
        ),
        min_size=0,
        max_size=6,
    ),
    st.sampled_from([None, "EPSG:4326", "EPSG:4490", "EPSG:3857"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_validate_layer_reports_problems_and_never_crashes(features: list[Any], crs: str | None) -> None:
    import geopandas

    from gis.validate import SourceError, validate_layer

    geoms = [_polygon(r) for r, _, _ in features]
    frame = geopandas.GeoDataFrame(
        {
            "code": [c for _, _, c in features],
            "name": [n for _, n, _ in features],
            "parent_code": [None] * len(features),
        },
        geometry=geoms,
        crs=crs,
    )
    try:
        result = validate_layer(frame, layer="district", fix=True)
    except SourceError:
        return
    assert len(result) == len(features)
    if not result.errors:
        for wkb in result.wkbs:
            geometry = shapely.from_wkb(wkb)
            assert geometry.is_valid and not geometry.is_empty


area_specs = st.fixed_dictionaries(
    {},
    optional={
        "polygons": st.lists(rings(max_points=30), max_size=3),
        "circles": st.lists(
            st.fixed_dictionaries(
                {
                    "lon": st.one_of(coordinate, st.text(max_size=5)),
                    "lat": latitude,
                    "radius_m": st.one_of(st.floats(allow_nan=True), st.integers(-10, 10**7)),
                }
            ),
            max_size=2,
        ),
        "units": st.lists(
            st.fixed_dictionaries(
                {"layer": st.sampled_from(["district", "grid", "planet", ""]), "code": st.text(max_size=12)}
            ),
            max_size=2,
        ),
        "crs": st.sampled_from(["wgs84", "gcj02", "bd09", "cgcs2000", "EPSG:3857", ""]),
        "extra": st.integers(),
    },
)


@pytest.mark.django_db
def test_warning_areas_from_the_api_are_taken_or_refused_naming_the_field(demo_city, client_for) -> None:
    client = client_for("operator")
    expires = (datetime.now(UTC) + timedelta(hours=3)).isoformat()

    @given(area_specs)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def check(area: dict[str, Any]) -> None:
        body = {"level": "blue", "type": "暴雨", "headline": "模糊测试", "area": area, "expires": expires}
        # json.dumps lets NaN and Infinity through, as a careless client would send them.
        with transaction.atomic():
            response = client.post("/api/v1/warnings/", json.dumps(body), content_type="application/json")
            transaction.set_rollback(True)
        assert response.status_code in (201, 400), (response.status_code, area)
        if response.status_code == 400:
            error = response.json()["error"]
            # NaN and Infinity are refused by the JSON parser itself, before any field is looked at.
            named = str(error.get("field", "")).startswith("area") or error.get("code") == "parse_error"
            assert named, (area, error)

    check()


# ---------------------------------------------------------------------------------------------- CAP

# Text an XML 1.0 document can carry (no control characters, surrogates, private use or non-characters).
_XML_CHARS = st.characters(blacklist_categories=["Cs", "Cc", "Co", "Cn"], blacklist_characters="\ufffe\uffff")
_CAP_TEXT = st.text(_XML_CHARS, min_size=1, max_size=30).map(str.strip).filter(bool)
_TOKEN = st.from_regex(r"[A-Za-z0-9_.\-]{1,24}", fullmatch=True)
_MOMENT = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@st.composite
def cap_areas(draw: Any) -> Any:
    from command.cap import CapArea

    lon, lat = draw(st.floats(113.8, 114.5)), draw(st.floats(22.45, 22.8))
    n = draw(st.integers(3, 12))
    radius = draw(st.floats(0.001, 0.1))
    ring = [
        (
            round(lon + radius * math.cos(2 * math.pi * k / n), 6),
            round(lat + radius * math.sin(2 * math.pi * k / n), 6),
        )
        for k in range(n)
    ]
    ring.append(ring[0])
    circles = (
        [(round(lon, 6), round(lat, 6), float(draw(st.integers(100, 50_000))))] if draw(st.booleans()) else []
    )
    return CapArea(
        desc=draw(_CAP_TEXT), polygons=[ring] if draw(st.booleans()) or not circles else [], circles=circles
    )


@st.composite
def cap_alerts(draw: Any) -> Any:
    """A CAP 1.2 alert as command.cap models it, with the enumerations of the OASIS schema."""
    from command.cap import CapAlert, CapInfo

    info = CapInfo(
        language=draw(st.sampled_from(["zh-CN", "en-US"])),
        categories=draw(
            st.lists(
                st.sampled_from(["Met", "Geo", "Safety", "Env", "Health"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        ),
        event=draw(_CAP_TEXT),
        urgency=draw(st.sampled_from(["Immediate", "Expected", "Future", "Past", "Unknown"])),
        severity=draw(st.sampled_from(["Extreme", "Severe", "Moderate", "Minor", "Unknown"])),
        certainty=draw(st.sampled_from(["Observed", "Likely", "Possible", "Unlikely", "Unknown"])),
        headline=draw(_CAP_TEXT),
        description=draw(_CAP_TEXT),
        expires=draw(_MOMENT),
        areas=draw(st.lists(cap_areas(), min_size=1, max_size=2)),
    )
    return CapAlert(
        identifier=draw(_TOKEN),
        sender=draw(_TOKEN),
        sent=draw(_MOMENT),
        status=draw(st.sampled_from(["Actual", "Exercise", "System", "Test", "Draft"])),
        msg_type=draw(st.sampled_from(["Alert", "Update", "Cancel", "Ack", "Error"])),
        scope="Public",
        infos=[info],
    )


def _render(alert: Any) -> bytes:
    from command.cap import render_cap

    return bytes(render_cap(alert))


@given(cap_alerts())
@settings(max_examples=60, deadline=None)
def test_cap_alerts_survive_render_and_parse(alert: Any) -> None:
    from command.cap import parse_cap

    parsed = parse_cap(_render(alert))
    assert (parsed.identifier, parsed.sender, parsed.status, parsed.msg_type) == (
        alert.identifier,
        alert.sender,
        alert.status,
        alert.msg_type,
    )
    assert parsed.sent == alert.sent
    assert [i.event for i in parsed.infos] == [i.event for i in alert.infos]
    assert len(parsed.infos[0].areas) == len(alert.infos[0].areas)


HOSTILE = [
    b'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    b'<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<?xml-stylesheet href="http://127.0.0.1/x.xsl"?>',
]


@given(cap_alerts(), st.data())
@settings(max_examples=80, deadline=None)
def test_mangled_and_hostile_cap_is_refused_with_a_cap_error(alert: Any, data: Any) -> None:
    from command.cap import CapError, parse_cap

    raw = _render(alert)
    how = data.draw(st.sampled_from(["truncate", "flip", "prefix", "entity", "garbage"]))
    if how == "truncate":
        mangled = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        mangled = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif how == "prefix":
        mangled = data.draw(st.sampled_from(HOSTILE)) + raw.split(b"?>", 1)[-1]
    elif how == "entity":
        mangled = HOSTILE[0] + raw.split(b"?>", 1)[-1].replace(
            b"<scope>Public</scope>", b"<scope>&x;</scope>"
        )
    else:
        mangled = data.draw(st.binary(max_size=200))
    try:
        parsed = parse_cap(mangled)
    except CapError:
        return
    # Some changes leave a valid message: a flip inside a text, a cut in the trailing whitespace, a
    # harmless processing instruction. It must still be an alert without a DTD or an entity.
    if how == "truncate":
        assert not raw[len(mangled) :].strip()
    else:
        assert how in ("flip", "prefix")
    assert parsed.identifier and b"<!DOCTYPE" not in mangled and b"<!ENTITY" not in mangled


@pytest.mark.django_db
def test_warning_text_is_refused_or_exported_as_cap(demo_city, client_for) -> None:
    """Whatever text a warning takes in, its CAP export must not fail (XML cannot carry every character)."""
    client = client_for("operator")
    expires = (datetime.now(UTC) + timedelta(hours=3)).isoformat()

    @given(st.text(max_size=12))
    @example("雨\x01")
    @example("\ufffe")
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def check(text: str) -> None:
        body = {
            "level": "blue",
            "type": "暴雨",
            "headline": f"模糊{text}",
            "description": text,
            "area": {"units": [{"layer": "district", "code": "440304"}]},
            "expires": expires,
        }
        with transaction.atomic():
            created = client.post("/api/v1/warnings/", body, format="json")
            if created.status_code == 201:
                warning = created.json()["id"]
                issued = client.post(
                    f"/api/v1/warnings/{warning}/actions/", {"action": "issue"}, format="json"
                )
                assert issued.status_code == 200, issued.content
                exported = client.get(f"/api/v1/warnings/{warning}/cap/")
                assert exported.status_code == 200, (text, exported.status_code)
            else:
                assert created.status_code == 400, created.content
            transaction.set_rollback(True)

    check()
