"""CAP 1.2 in and out: samples of the kind real agencies send, the round trip through issue and export,
Update and Cancel by references, the level table, identifiers, and clear 400s for bad messages."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from lxml import etree

from command import cap
from command.models import EarlyWarning, User, WarningCapMessage, WarningReceipt
from command.warnings import warning_approve, warning_cap_xml, warning_issue

pytestmark = [pytest.mark.django_db]

SAMPLES = Path(__file__).resolve().parent / "cap_samples"
NS = {"cap": cap.CAP_NS}
IDENTIFIER = re.compile(r"^\d{6}\d{3}\d{3}\d{2}_\d{14}_\d$")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def xsd_valid(data: bytes) -> bool:
    """Validate against the OASIS schema file directly (not through command.cap)."""
    schema = etree.XMLSchema(etree.parse(str(cap.XSD_PATH)))
    return bool(schema.validate(etree.fromstring(data)))


def post_cap(api, data: bytes, content_type: str = "application/xml"):
    return api.post("/api/v1/warnings/cap/", data=data, content_type=content_type)


def user(name: str) -> User:
    return User.objects.get(username=name)


def receipts(warning_id: int) -> set[int]:
    return set(WarningReceipt.objects.filter(warning_id=warning_id).values_list("user_id", flat=True))


# ------------------------------------------------------------------------------------ the round trip


@pytest.mark.embedded
def test_round_trip_import_issue_update_cancel_export(client_for, time_machine):
    time_machine.move_to("2026-06-12T09:35:00+08:00")
    operator, commander = client_for("operator"), client_for("commander")
    imported = post_cap(operator, sample("shenzhen_rainstorm_orange_alert.xml"))
    assert imported.status_code == 201, imported.content
    body = imported.json()
    assert body["msg_type"] == "Alert" and body["created"] and not body["duplicate"]
    warning = body["warning"]
    assert warning["level"] == "orange" and warning["status"] == "draft" and warning["origin"] == "cap"
    assert warning["type"] == "暴雨" and warning["event_code"] == "11B03" and warning["language"] == "zh-CN"
    assert warning["headline"] == "深圳市气象台发布暴雨橙色预警信号"
    assert warning["translations"]["en-US"]["type"] == "Rainstorm"
    # CAP pairs are lat,lon: the stored ring is lon,lat.
    assert warning["area"]["spec"]["polygons"][0][0] == [113.93, 22.52]
    assert warning["expires"] == "2026-06-12T13:30:00+00:00"
    assert set(warning["area"]["summary"]["districts"]) >= {"440304", "440305"}

    actions = f"/api/v1/warnings/{warning['id']}/actions/"
    assert operator.post(actions, {"action": "issue"}, format="json").status_code == 409
    assert commander.post(actions, {"action": "approve"}, format="json").status_code == 200
    assert operator.post(actions, {"action": "issue"}, format="json").json()["status"] == "issued"

    exported = operator.get(f"/api/v1/warnings/{warning['id']}/cap/")
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/cap+xml")
    xml = exported.content
    assert xsd_valid(xml)
    root = etree.fromstring(xml)
    identifier = root.findtext("cap:identifier", namespaces=NS)
    assert IDENTIFIER.match(identifier), identifier
    assert identifier.startswith(cap.issuer_code() + "_20260612")
    assert root.findtext("cap:sent", namespaces=NS).endswith("+08:00")
    assert root.findtext("cap:msgType", namespaces=NS) == "Alert"
    infos = root.findall("cap:info", NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["zh-CN", "en-US"]
    assert infos[0].findtext("cap:severity", namespaces=NS) == "Severe"
    assert infos[0].findtext("cap:expires", namespaces=NS) == "2026-06-12T21:30:00+08:00"
    assert infos[1].findtext("cap:headline", namespaces=NS).startswith("Shenzhen Meteorological")
    polygon = infos[0].findtext("cap:area/cap:polygon", namespaces=NS)
    assert polygon.startswith("22.5200000,113.9300000 ")
    before = receipts(warning["id"])

    # The agency upgrades to red and widens the area: an operator may not raise to red, a commander may.
    time_machine.move_to("2026-06-12T11:02:00+08:00")
    update = sample("shenzhen_rainstorm_red_update.xml")
    refused = post_cap(operator, update)
    assert refused.status_code == 403, refused.content
    applied = post_cap(commander, update)
    assert applied.status_code == 200, applied.content
    updated = applied.json()["warning"]
    assert updated["status"] == "updated" and updated["level"] == "red" and updated["version"] == 2
    assert (
        len(updated["area"]["spec"]["circles"]) == 1 and "440303" in updated["area"]["summary"]["districts"]
    )
    after = receipts(warning["id"])
    assert before < after, "the update reaches everyone again and Luohu's recipients too"
    xml = operator.get(f"/api/v1/warnings/{warning['id']}/cap/").content
    assert xsd_valid(xml)
    root = etree.fromstring(xml)
    assert root.findtext("cap:msgType", namespaces=NS) == "Update"
    assert identifier in root.findtext("cap:references", namespaces=NS)
    assert root.findtext("cap:info/cap:severity", namespaces=NS) == "Extreme"
    assert root.findtext("cap:info/cap:area/cap:circle", namespaces=NS) == "22.5600000,114.1300000 4.500"

    time_machine.move_to("2026-06-12T16:01:00+08:00")
    cancelled = post_cap(operator, sample("shenzhen_rainstorm_cancel.xml"))
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["warning"]["status"] == "cancelled"
    xml = operator.get(f"/api/v1/warnings/{warning['id']}/cap/").content
    assert xsd_valid(xml)
    root = etree.fromstring(xml)
    assert root.findtext("cap:msgType", namespaces=NS) == "Cancel"
    assert len(root.findtext("cap:references", namespaces=NS).split()) == 2
    ours = WarningCapMessage.objects.filter(warning_id=warning["id"], direction="out")
    assert list(ours.values_list("msg_type", flat=True)) == ["Alert", "Update", "Cancel"]

    # The same message twice is taken once.
    again = post_cap(operator, sample("shenzhen_rainstorm_cancel.xml"))
    assert again.status_code == 200 and again.json()["duplicate"]


def test_exported_warning_imports_back_to_the_same_warning_content(time_machine):
    time_machine.move_to("2026-08-01T06:10:00+08:00")
    from command.warnings import warning_import_cap

    result = warning_import_cap(data=sample("guangdong_typhoon_circle_alert.xml"), actor=user("operator"))
    warning = result.warning
    assert warning.level == "yellow" and warning.type == "台风"
    assert warning.area_spec["circles"] == [{"lon": 114.07, "lat": 22.56, "radius_m": 6000.0}]
    assert warning.area_km2 == pytest.approx(113.1, rel=0.01)  # π · 6²
    warning_issue(warning_id=warning.pk, actor=user("operator"))
    warning.refresh_from_db()
    xml = warning_cap_xml(warning)
    assert xsd_valid(xml)
    # Import our own export elsewhere: same level, texts, circle and languages.
    WarningCapMessage.objects.filter(warning=warning, direction="out").update(sender="another-system")
    back = warning_import_cap(data=xml, actor=user("operator")).warning
    assert back.pk != warning.pk and back.level == warning.level and back.type == warning.type
    assert back.area_spec["circles"] == warning.area_spec["circles"]
    assert back.translations.keys() == warning.translations.keys() == {"en-US"}


def test_geocode_only_area_becomes_the_named_district(client_for, time_machine):
    time_machine.move_to("2026-06-13T08:05:00+08:00")
    response = post_cap(
        client_for("operator"), sample("yantian_geohazard_geocode_alert.xml"), "application/cap+xml"
    )
    assert response.status_code == 201, response.content
    warning = response.json()["warning"]
    assert warning["level"] == "blue" and warning["area"]["spec"]["units"] == [
        {"layer": "district", "code": "440308"}
    ]
    assert warning["area"]["summary"]["districts"] == ["440308"]


def test_cap_alert_without_expiry_gets_the_configured_validity(settings, time_machine):
    time_machine.move_to("2026-08-01T06:10:00+08:00", tick=False)
    settings.CAP_DEFAULT_VALID_HOURS = 6
    from command.warnings import warning_import_cap

    data = sample("guangdong_typhoon_circle_alert.xml")
    data = re.sub(rb"\s*<expires>[^<]*</expires>", b"", data).replace(b"_1</identifier>", b"_2</identifier>")
    warning = warning_import_cap(data=data, actor=user("operator")).warning
    assert warning.expires_at == datetime(2026, 8, 1, 4, 10, tzinfo=UTC)


# --------------------------------------------------------------------------------------- bad input


def _with(name: str, old: bytes, new: bytes) -> bytes:
    data = sample(name)
    assert old in data
    return data.replace(old, new)


ORANGE = "shenzhen_rainstorm_orange_alert.xml"
POLYGON = b"22.520000,113.930000 22.520000,114.060000 22.590000,114.060000 22.600000,114.000000 22.590000,113.930000 22.520000,113.930000"  # noqa: E501

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol3;</identifier></alert>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&secret;</identifier></alert>"""


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (b"<alert><identifier>x</alert>", "xml", "well-formed"),
        (b"", "body", "empty"),
        (BILLION_LAUGHS, "xml", "DOCTYPE"),
        (EXTERNAL_ENTITY, "xml", "DOCTYPE"),
        (sample("cap11_wrong_namespace.xml"), "namespace", "cap:1.1"),
        (_with(ORANGE, b"<sender>44030041600000</sender>", b""), "schema", "sender"),
        (_with(ORANGE, b"<severity>Severe</severity>", b"<severity>Bad</severity>"), "schema", "severity"),
        (_with(ORANGE, b"+08:00</sent>", b"Z</sent>"), "schema", "sent"),
        (_with(ORANGE, b"<status>Actual</status>", b"<status>Exercise</status>"), "status", "Actual"),
        (_with(ORANGE, b"<msgType>Alert</msgType>", b"<msgType>Ack</msgType>"), "msgType", "Ack"),
        (
            _with(ORANGE, POLYGON, b"22.52,113.93 22.60,114.06 22.52,114.06 22.60,113.93 22.52,113.93"),
            "info[0].area[0].polygon[0]",
            "Self-intersection",
        ),
        (
            _with(ORANGE, POLYGON, b"113.93,22.52 114.06,22.52 114.06,22.59 113.93,22.59 113.93,22.52"),
            "info[0].area[0].polygon[0]",
            "latitude first",
        ),
        (
            _with(ORANGE, POLYGON, b"22.52,113.93 22.52,114.06 22.59,114.06"),
            "info[0].area[0].polygon[0]",
            "at least 4",
        ),
        (
            _with(ORANGE, POLYGON, b"22.52,113.93 22.52,114.06 22.59,114.06 22.59,113.93"),
            "info[0].area[0].polygon[0]",
            "closed",
        ),
        (
            _with(ORANGE, POLYGON, b"50.0,10.0 50.0,10.1 50.1,10.1 50.0,10.0"),
            "area",
            "no part of the territory",
        ),
        (
            _with(ORANGE, b"<msgType>Alert</msgType>", b"<msgType>Update</msgType>"),
            "references",
            "must reference",
        ),
        (
            _with(
                ORANGE,
                b"<scope>Public</scope>",
                b"<scope>Public</scope><references>x,unknown-id,2026-06-12T09:00:00+08:00</references>",
            ).replace(b"<msgType>Alert</msgType>", b"<msgType>Cancel</msgType>"),
            "references",
            "known here",
        ),
    ],
    ids=[
        "malformed",
        "empty",
        "billion-laughs",
        "external-entity",
        "wrong-namespace",
        "missing-sender",
        "bad-severity",
        "utc-z-time",
        "exercise",
        "ack",
        "self-intersecting",
        "lon-first",
        "too-few-points",
        "not-closed",
        "outside-territory",
        "update-without-references",
        "unknown-reference",
    ],
)
def test_bad_messages_get_a_400_naming_the_problem(client_for, time_machine, data, field, words):
    time_machine.move_to("2026-06-12T09:35:00+08:00")
    before = EarlyWarning.objects.count()
    response = post_cap(client_for("operator"), data)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field and words in error["detail"], error
    assert EarlyWarning.objects.count() == before
    assert not WarningCapMessage.objects.filter(
        direction="in", xml__contains="44030041600000_2026061209"
    ).exists()


def test_oversized_messages_and_areas_are_refused(client_for, settings, time_machine):
    time_machine.move_to("2026-06-12T09:35:00+08:00")
    api = client_for("operator")
    settings.CAP_MAX_BYTES = 2000
    too_long = post_cap(api, sample(ORANGE))
    assert too_long.status_code == 400 and "more than the limit of 2000" in too_long.json()["error"]["detail"]
    settings.CAP_MAX_BYTES = 1024 * 1024
    settings.WARNING_MAX_VERTICES = 5
    many = post_cap(api, sample(ORANGE))
    assert many.status_code == 400 and "points" in many.json()["error"]["detail"]
    settings.WARNING_MAX_VERTICES = 10_000
    huge = _with(ORANGE, POLYGON, b"20.0,110.0 20.0,118.0 26.0,118.0 26.0,110.0 20.0,110.0")
    response = post_cap(api, huge)
    assert response.status_code == 400 and "km²" in response.json()["error"]["detail"]
    assert response.json()["error"]["field"] == "area"
    json_body = api.post("/api/v1/warnings/cap/", {"xml": "<alert/>"}, format="json")
    assert json_body.status_code == 415
    assert (
        client_for("grid01")
        .post("/api/v1/warnings/cap/", data=b"<x/>", content_type="application/xml")
        .status_code
        == 403
    )


def test_export_of_a_draft_is_refused(client_for, time_machine):
    time_machine.move_to("2026-06-12T09:35:00+08:00")
    api = client_for("operator")
    warning = post_cap(api, sample(ORANGE)).json()["warning"]
    response = api.get(f"/api/v1/warnings/{warning['id']}/cap/")
    assert response.status_code == 409 and "only issued" in response.json()["error"]["detail"]


# ------------------------------------------------------------------------------- levels, identifiers


def test_level_table_is_configurable_and_checked(settings):
    assert cap.level_map().level_for("Severe", "Immediate", "Likely") == "orange"
    settings.CAP_LEVEL_MAP = {
        "import": [
            {"certainty": ["Unlikely"], "level": "blue"},
            {"severity": "Extreme", "urgency": ["Immediate", "Expected"], "level": "red"},
            {"severity": ["Extreme", "Severe"], "level": "orange"},
            {"severity": "Moderate", "level": "yellow"},
            {"level": "blue"},
        ],
        "export": {
            "red": {"severity": "Extreme", "urgency": "Immediate", "certainty": "Observed"},
            "orange": {"severity": "Severe", "urgency": "Expected", "certainty": "Likely"},
            "yellow": {"severity": "Moderate", "urgency": "Expected", "certainty": "Likely"},
            "blue": {"severity": "Minor", "urgency": "Future", "certainty": "Possible"},
        },
    }
    table = cap.level_map()
    assert table.level_for("Extreme", "Immediate", "Unlikely") == "blue"
    assert table.level_for("Extreme", "Future", "Likely") == "orange"
    assert table.level_for("Unknown", "Unknown", "Unknown") == "blue"
    assert table.export["red"] == ("Extreme", "Immediate", "Observed")
    settings.CAP_LEVEL_MAP = {"import": [{"severity": "Terrible", "level": "red"}], "export": {}}
    with pytest.raises(ImproperlyConfigured, match="Terrible"):
        cap.level_map()
    settings.CAP_LEVEL_MAP = {
        "import": [{"level": "blue"}],
        "export": {
            level: {"severity": "Minor", "urgency": "Future", "certainty": "Possible"} for level in cap.LEVELS
        },
    }
    with pytest.raises(ImproperlyConfigured, match="would import as another level"):
        cap.level_map()


def test_identifier_is_gbt_35965_in_beijing_time(settings):
    moment = datetime(2026, 12, 31, 17, 30, 5, tzinfo=UTC)  # 01:30:05 on 1 January in Beijing
    identifier = cap.make_identifier("44030000000000", moment, 3)
    assert identifier == "44030000000000_20270101013005_3" and len(identifier) == 31
    code, when, serial = cap.parse_identifier(identifier)
    assert (code, when, serial) == ("44030000000000", moment, 3)
    assert cap.parse_identifier("KSTO1055887203") is None
    assert cap.format_cap_time(moment) == "2027-01-01T01:30:05+08:00"
    settings.WARNING_ISSUER_CODE = "4403"
    with pytest.raises(ImproperlyConfigured, match="14 digits"):
        cap.issuer_code()


def test_polygon_and_circle_conversion():
    ring = cap.parse_polygon("22.5,114.0 22.5,114.1 22.6,114.1 22.5,114.0", "p")
    assert ring[0] == (114.0, 22.5) and ring[2] == (114.1, 22.6)
    assert cap.parse_circle("22.56,114.07 2.5", "c") == (114.07, 22.56, 2500.0)
    assert cap.format_circle(114.07, 22.56, 2500.0) == "22.5600000,114.0700000 2.500"
    assert (
        cap.format_polygon([(114.0, 22.5), (114.1, 22.5), (114.1, 22.6)]).split()[-1]
        == "22.5000000,114.0000000"
    )
    for bad, words in [("22.56,114.07", "radius"), ("22.56,114.07 0", "positive"), ("95,114 1", "latitude")]:
        with pytest.raises(cap.CapError, match=words):
            cap.parse_circle(bad, "c")


# ------------------------------------------------------------------------------ management commands


def test_cap_import_and_export_commands(tmp_path, time_machine):
    time_machine.move_to("2026-08-01T06:10:00+08:00")
    out = io.StringIO()
    call_command(
        "cap_import", str(SAMPLES / "guangdong_typhoon_circle_alert.xml"), "--user", "operator", stdout=out
    )
    assert '"created": true' in out.getvalue()
    warning = EarlyWarning.objects.get(type="台风")
    with pytest.raises(CommandError, match="only issued"):
        call_command("cap_export", str(warning.pk), stdout=io.StringIO())
    warning_issue(warning_id=warning.pk, actor=user("operator"))
    target = tmp_path / "out.xml"
    call_command("cap_export", str(warning.pk), "--output", str(target))
    assert xsd_valid(target.read_bytes())
    printed = io.StringIO()
    call_command("cap_export", str(warning.pk), stdout=printed)
    assert printed.getvalue().encode() == target.read_bytes()
    bad = tmp_path / "bad.xml"
    bad.write_bytes(sample("cap11_wrong_namespace.xml"))
    with pytest.raises(CommandError, match="namespace"):
        call_command("cap_import", str(bad))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("cap_import", str(tmp_path / "missing.xml"))
    # The system (no --user) may import; an orange draft still waits for a commander.
    time_machine.move_to("2026-06-12T09:35:00+08:00")
    call_command("cap_import", str(SAMPLES / ORANGE), stdout=io.StringIO())
    orange = EarlyWarning.objects.get(event_code="11B03")
    assert orange.created_by is None and orange.status == "draft"
    warning_approve(warning_id=orange.pk, actor=user("commander"))
