"""The audit chain: written by the product's routes, append-only in PostgreSQL, and every tampering found.

Tampering is done as a database superuser would: with the append-only trigger disabled. Each test then
asserts that `audit_verify` exits 1 naming the first broken record.
"""

from __future__ import annotations

import hashlib
import threading
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit.anchors import read_anchors
from audit.chain import record_hash
from audit.models import AuditHead, AuditRecord
from audit.verify import verify_chain

pytestmark = [pytest.mark.django_db]

TRIGGER = "audit_auditrecord_append_only"


def _reveal(client: Any, incident_id: int, reason: str = "回访报告人") -> dict[str, Any]:
    response = client.post(f"/api/v1/incidents/{incident_id}/reveal/", {"reason": reason}, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


@pytest.fixture
def chain(client_for: Any, report_via_api: Any) -> list[AuditRecord]:
    """At least six records written through the reveal route (plus whatever the product hooks add)."""
    operator = client_for("operator")
    incident = report_via_api()
    for n in range(6):
        _reveal(operator, incident["id"], reason=f"回访 {n}")
    records = list(AuditRecord.objects.order_by("seq"))
    assert len(records) >= 6
    return records


def _verify_command() -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("audit_verify", stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue()
    return 0, out.getvalue()


def _as_superuser(*statements: tuple[str, list[Any]]) -> None:
    """Run SQL with the append-only trigger disabled, as someone with the table's ownership could."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE audit_auditrecord DISABLE TRIGGER {TRIGGER}")
        for sql, params in statements:
            cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE audit_auditrecord ENABLE TRIGGER {TRIGGER}")


@pytest.fixture(autouse=True)
def _postgres_only(request: Any) -> None:
    if connection.vendor != "postgresql" and "sqlite_ok" not in request.keywords:
        pytest.fail("the append-only trigger and the tampering tests need PostgreSQL (the suite's default)")


# ------------------------------------------------------------------------------------------ writing


@pytest.mark.sqlite_ok
def test_a_reveal_writes_one_chained_record_and_the_chain_verifies(client_for, report_via_api):
    incident = report_via_api()
    before = AuditRecord.objects.count()
    body = _reveal(client_for("commander"), incident["id"], reason="核实报警人身份")
    record = AuditRecord.objects.get(seq=body["audit_seq"])
    assert AuditRecord.objects.count() == before + 1
    assert (record.action, record.object_type, record.object_id) == (
        "reveal",
        "incident",
        str(incident["id"]),
    )
    assert (record.actor_username, record.actor_role, record.source) == ("commander", "commander", "api")
    assert record.reason == "核实报警人身份"
    assert "reporter_phone" in record.data_obj["fields"] and "13912345678" not in record.data
    assert record.hash == record_hash(record)
    assert _verify_command()[0] == 0


def test_every_incident_and_order_step_lands_on_the_chain(client_for, report_via_api):
    """WAITS ON THE LEAD'S HOOK: incidents.services._record calls audit_record (docs/security.md)."""
    incident = report_via_api()
    operator = client_for("operator")
    for action in ("accept", "register"):
        response = operator.post(
            f"/api/v1/incidents/{incident['id']}/actions/", {"action": action}, format="json"
        )
        assert response.status_code == 200, response.content
    if response.json()["status"] != "dispatched":  # categories that dispatch on registration skip this
        response = operator.post(
            f"/api/v1/incidents/{incident['id']}/actions/", {"action": "dispatch"}, format="json"
        )
        assert response.status_code == 200, response.content
    order = operator.get(f"/api/v1/orders/?incident={incident['id']}").json()["results"][0]
    signed = client_for(order["department"]["code"]).post(
        f"/api/v1/orders/{order['id']}/actions/", {"action": "sign"}, format="json"
    )
    assert signed.status_code == 200, signed.content
    rows = AuditRecord.objects.filter(object_id=str(incident["id"])).order_by("seq")
    actions = [r.action for r in rows]
    for expected in ("report", "accept", "register", "dispatch", "order_sign"):
        assert expected in actions, actions
    sign = rows.get(action="order_sign")
    assert (sign.actor_username, sign.source) == (order["department"]["code"], "api")
    assert _verify_command()[0] == 0


def test_admin_changes_are_on_the_chain_and_the_audit_admin_is_read_only(client, chain):
    from command.models import Department

    client.login(username="admin", password="demo-pass-2026")
    department = Department.objects.get(code="water_group")
    page = client.get(f"/admin/command/department/{department.pk}/change/")
    assert page.status_code == 200
    form = {
        "code": department.code,
        "name": "市水务集团（改）",
        "kind": department.kind,
        "jurisdiction": [str(pk) for pk in department.jurisdiction.values_list("pk", flat=True)],
        "phone": department.phone,
        "head": department.head_id or "",
        "active": "on",
    }
    response = client.post(f"/admin/command/department/{department.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    record = AuditRecord.objects.order_by("-seq").first()
    assert record is not None
    assert (record.action, record.object_type, record.object_id) == (
        "admin_change",
        "command.department",
        str(department.pk),
    )
    assert (record.actor_username, record.source) == ("admin", "admin")
    assert client.get("/admin/audit/auditrecord/").status_code == 200
    assert client.get(f"/admin/audit/auditrecord/{chain[0].pk}/change/").status_code == 200
    assert client.get("/admin/audit/auditrecord/add/").status_code == 403
    assert client.get(f"/admin/audit/auditrecord/{chain[0].pk}/delete/").status_code == 403
    assert _verify_command()[0] == 0


# ------------------------------------------------------------------------------------ append-only


def test_postgres_refuses_update_and_delete_of_audit_records(chain):
    for sql in (
        "UPDATE audit_auditrecord SET reason = 'x' WHERE id = %s",
        "DELETE FROM audit_auditrecord WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [chain[2].pk])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditRecord.objects.filter(pk=chain[2].pk).update(reason="x")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        chain[2].delete()
    assert _verify_command()[0] == 0


# -------------------------------------------------------------------------------------- tampering


def test_an_edited_record_is_named(chain):
    target = chain[2]
    _as_superuser(("UPDATE audit_auditrecord SET reason = %s WHERE id = %s", ["无", target.pk]))
    code, message = _verify_command()
    assert code == 1
    assert f"seq {target.seq} (id {target.pk})" in message and "edited" in message


def test_an_edited_record_with_its_own_hash_recomputed_breaks_the_next_link(chain):
    target = chain[2]
    target.reason = "篡改"
    forged = record_hash(target)
    _as_superuser(
        ("UPDATE audit_auditrecord SET reason = %s, hash = %s WHERE id = %s", ["篡改", forged, target.pk])
    )
    code, message = _verify_command()
    assert code == 1 and f"seq {chain[3].seq} " in message and "prev_hash" in message


def test_a_deleted_record_is_named(chain):
    _as_superuser(("DELETE FROM audit_auditrecord WHERE id = %s", [chain[2].pk]))
    code, message = _verify_command()
    assert code == 1
    assert f"seq {chain[3].seq} (id {chain[3].pk})" in message and "missing" in message


def test_deleted_records_at_the_end_are_found_through_the_head(chain):
    last = chain[-1]
    _as_superuser(("DELETE FROM audit_auditrecord WHERE id = %s", [last.pk]))
    code, message = _verify_command()
    assert code == 1 and f"seq {last.seq}" in message and "deleted" in message


def test_an_inserted_record_is_named(chain):
    """A forged record slipped in after the second one, later records renumbered to make room."""
    at = chain[1]
    shift = 10**9
    _as_superuser(
        ("UPDATE audit_auditrecord SET seq = seq + %s WHERE seq > %s", [shift, at.seq]),
        ("UPDATE audit_auditrecord SET seq = seq - %s + 1 WHERE seq > %s", [shift, shift]),
    )
    forged = AuditRecord(
        seq=at.seq + 1,
        at=at.at,
        actor_id=at.actor_id,
        actor_username="operator",
        actor_role="operator",
        source="api",
        action="reveal",
        object_type="incident",
        object_id=at.object_id,
        reason="伪造",
        data="{}",
        prev_hash=at.hash,
    )
    forged.hash = record_hash(forged)
    forged.save(force_insert=True)
    code, message = _verify_command()
    # The forged record itself chains correctly to its predecessor; the first broken one is the next.
    assert code == 1
    assert f"seq {at.seq + 2} (id {chain[2].pk})" in message


def test_a_record_appended_behind_the_writers_back_is_found(chain):
    last = chain[-1]
    forged = AuditRecord(
        seq=last.seq + 1,
        at=last.at,
        actor_username="operator",
        actor_role="operator",
        source="api",
        action="reveal",
        object_type="incident",
        object_id="1",
        data="{}",
        prev_hash=last.hash,
    )
    forged.hash = record_hash(forged)
    forged.save(force_insert=True)
    code, message = _verify_command()
    assert code == 1 and f"seq {last.seq + 1}" in message and "outside audit_record" in message


def test_reordered_records_are_named(chain):
    a, b = chain[2], chain[4]
    _as_superuser(
        ("UPDATE audit_auditrecord SET seq = -1 WHERE id = %s", [a.pk]),
        ("UPDATE audit_auditrecord SET seq = %s WHERE id = %s", [a.seq, b.pk]),
        ("UPDATE audit_auditrecord SET seq = %s WHERE id = %s", [b.seq, a.pk]),
    )
    code, message = _verify_command()
    assert code == 1 and f"seq {a.seq} (id {b.pk})" in message


def test_a_rewritten_chain_passes_alone_but_fails_against_its_anchor(chain, settings):
    out = StringIO()
    call_command("audit_anchor", stdout=out, stderr=StringIO())
    anchors = read_anchors()
    assert len(anchors) == 1 and anchors[0].seq == chain[-1].seq and anchors[0].hash == chain[-1].hash
    assert f'"seq": {chain[-1].seq}' in out.getvalue()
    assert _verify_command()[0] == 0
    # Rewrite from the third record on, recomputing every hash and the head: internally consistent.
    records = list(AuditRecord.objects.order_by("seq"))
    statements: list[tuple[str, list[Any]]] = []
    prev = records[1].hash
    for n, record in enumerate(records[2:]):
        record.prev_hash = prev
        if n == 0:
            record.reason = "改写"
        record.hash = record_hash(record)
        statements.append(
            (
                "UPDATE audit_auditrecord SET reason = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [record.reason, record.prev_hash, record.hash, record.pk],
            )
        )
        prev = record.hash
    _as_superuser(*statements)
    AuditHead.objects.filter(pk=1).update(hash=prev)
    assert verify_chain(anchors=False).ok
    code, message = _verify_command()
    assert code == 1
    assert f"seq {chain[-1].seq}" in message and anchors[0].path.name in message and "rewritten" in message


# ------------------------------------------------------------------------------------- concurrency


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_append_one_after_another(demo_city, settings):
    """Eight threads reveal at once, each in its own connection: the chain stays gap-free and valid."""
    from command.models import User
    from command.privacy_api import personal_data_reveal
    from incidents.models import Source
    from tests.support.factories import report

    incident = report()
    operator = User.objects.get(username="operator")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        try:
            barrier.wait()
            for n in range(5):
                personal_data_reveal(incident=incident, actor=operator, reason=f"并发 {n}", source=Source.API)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    seqs = list(AuditRecord.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 40
    result = verify_chain()
    assert result.ok, result.first_break
    assert AuditHead.objects.get(pk=1).seq == seqs[-1]


def test_an_action_chains_its_records_in_one_statement_and_the_chain_holds(demo_city):
    """Lock the head, number and hash the records, insert them and move the head: one statement, the
    same text and number of parameters for one record as for five (one prepared statement)."""
    from command.models import User
    from incidents.services import incident_act
    from tests.support.factories import report

    operator = User.objects.get(username="operator")
    incident = report(category="AC01", description="厂房起火")
    sent: list[tuple[str, int]] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "audit_audit" in sql:
            sent.append((sql, len(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        incident_act(incident_id=incident.pk, actor=operator, action="accept")  # one record
    before = AuditHead.objects.get(pk=1).seq
    with connection.execute_wrapper(spy):
        incident_act(incident_id=incident.pk, actor=operator, action="register")  # + dispatch: 5 records
    assert len(sent) == 2, sent
    assert sent[0] == sent[1] and sent[0][1] <= 50
    records = list(AuditRecord.objects.filter(seq__gt=before).order_by("seq"))
    assert len(records) >= 2
    assert AuditHead.objects.get(pk=1).seq == records[-1].seq
    assert all(r.hash == record_hash(r) for r in records)
    assert verify_chain(anchors=False).ok


AWKWARD_TEXTS = [
    '"seq":1',
    '{"seq":-918273645546372819}',
    '引号"、反斜杠\\、换行\n与制表\t',
    "emoji 🚒🚑 与全角（１２３）",
    "a \u2028 line separator and a \x7f",
    "",
]


def test_the_hashes_postgresql_computes_are_the_chain_modules(demo_city):
    """Records with quotes, escapes, the sequence marker itself and non-BMP text, several per statement:
    each stored hash is audit/chain.py's, and the whole chain verifies."""
    from audit.services import audit_batch, audit_record
    from command.models import User

    operator = User.objects.get(username="operator")
    with transaction.atomic(), audit_batch():
        written = [
            audit_record(
                action="note",
                object_type="test",
                object_id=text[:60],
                actor=operator,
                reason=text,
                data={"text": text, "seq": 7, "nested": {"seq": text}},
            )
            for text in AWKWARD_TEXTS
        ]
    with transaction.atomic():
        written.append(audit_record(action="note", object_type="test", reason=AWKWARD_TEXTS[0]))
    seqs = [r.seq for r in written]
    assert seqs == list(range(seqs[0], seqs[0] + len(written)))
    stored = {r.seq: r for r in AuditRecord.objects.filter(seq__in=seqs)}
    for record in written:
        row = stored[record.seq]
        assert (row.pk, row.hash, row.prev_hash) == (record.pk, record.hash, record.prev_hash)
        assert row.hash == record_hash(row)
    assert [stored[s].prev_hash for s in seqs[1:]] == [stored[s].hash for s in seqs[:-1]]
    assert AuditHead.objects.get(pk=1).seq == seqs[-1]
    result = verify_chain(anchors=False)
    assert result.ok, result.first_break


def test_a_missing_head_is_rebuilt_from_the_last_record_and_the_chain_goes_on(demo_city):
    """With the head row gone (a flushed table), the one statement writes nothing and the ORM path
    restarts the head from the last record: no renumbering, no broken link."""
    from audit.services import audit_record

    with transaction.atomic():
        first = audit_record(action="note", object_type="test", reason="before")
    AuditHead.objects.filter(pk=1).delete()
    with transaction.atomic():
        second = audit_record(action="note", object_type="test", reason="after")
    assert second.seq == first.seq + 1 and second.prev_hash == first.hash
    assert AuditHead.objects.get(pk=1).seq == second.seq
    with transaction.atomic():
        third = audit_record(action="note", object_type="test", reason="and on")
    assert third.seq == second.seq + 1 and third.prev_hash == second.hash
    assert verify_chain(anchors=False).ok


@pytest.mark.sqlite_ok
@given(
    seq=st.integers(min_value=1, max_value=2**62),
    text=st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    actor_id=st.none() | st.integers(min_value=1, max_value=2**40),
)
@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_serialisation_split_around_the_sequence_number_rebuilds_it(seq, text, actor_id):
    """What the PostgreSQL writer hashes (before ‖ the number's text ‖ after) is exactly `serialise`."""
    from datetime import UTC, datetime

    from audit.chain import canonical_json, hash_around_seq, serialise, serialise_around_seq

    record = AuditRecord(
        seq=seq,
        at=datetime(2026, 12, 7, 3, 0, tzinfo=UTC),
        actor_id=actor_id,
        actor_username=text,
        actor_role="operator",
        source="api",
        action="note",
        object_type="test",
        object_id=text[:64],
        reason=text,
        data=canonical_json({"seq": text, "text": text}),
    )
    before, after = serialise_around_seq(record)
    assert before + str(seq).encode() + after == serialise(record)
    assert record.seq == seq
    record.prev_hash = hashlib.sha256(text.encode()).hexdigest()
    assert hash_around_seq(record.prev_hash, before, seq, after) == record_hash(record)
