"""publish_batch and audit_batch: fewer statements, the same records, sequence and chain as one by one."""

from __future__ import annotations

import itertools

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.models import AuditRecord
from audit.services import audit_batch, audit_record
from audit.verify import verify_chain
from command.models import User
from realtime.models import Event, Feed, FeedEntry
from realtime.publish import publish, publish_batch

pytestmark = [pytest.mark.django_db(transaction=True)]


def _data(i: int) -> dict[str, object]:
    return {
        "id": 20_000_000 + i,
        "incident_id": 1,
        "incident_code": "B",
        "department": "fire",
        "role": "lead",
        "status": "issued",
        "due_at": None,
    }


def test_a_batch_gives_each_recipient_consecutive_sequence_numbers_in_publish_order(demo_city):
    users = list(User.objects.order_by("pk").values_list("pk", flat=True)[:6])
    a, b, c = users[:2], users[2:4], users[4:]
    for user in users:  # recipients who have had events before (the common case)
        Feed.objects.get_or_create(user_id=user)
    before = {u: FeedEntry.objects.filter(user_id=u).count() for u in users}
    with CaptureQueriesContext(connection) as batched, transaction.atomic(), publish_batch():
        assert publish(name="order.created", data=_data(0), recipients=a + b) is None
        publish(name="order.created", data=_data(1), recipients=b + c)
        publish(name="order.created", data=_data(2), recipients=a + c)
        publish(name="order.created", data=_data(3), recipients=[])
        assert not Event.objects.filter(data__id__gte=20_000_000).exists(), "written when the batch ends"
    events = list(Event.objects.filter(data__id__gte=20_000_000).order_by("pk"))
    assert [e.data["id"] for e in events] == [20_000_000, 20_000_001, 20_000_002]
    for user in users:
        entries = list(FeedEntry.objects.filter(user_id=user).order_by("seq").values_list("seq", "event_id"))
        new = entries[before[user] :]
        assert len(new) == 2, (user, new)
        seqs = [seq for seq, _ in new]
        assert seqs == [seqs[0], seqs[0] + 1], "consecutive"
        assert [ev for _, ev in new] == sorted(ev for _, ev in new), "in publish order"
        assert seqs[0] == (entries[before[user] - 1][0] + 1 if before[user] else 1), (
            "no gap after the old head"
        )
    # One by one, the same three events take two statements each; the batch writes them with one (the
    # events, the feed heads moved in user order, the sequence numbers and feed entries).
    sqls = [q["sql"] for q in batched.captured_queries]
    inside = sqls[sqls.index("BEGIN") + 1 : sqls.index("COMMIT")]
    writes = [sql for sql in inside if not sql.startswith('SELECT 1 AS "a"')]
    assert len(writes) == 1, writes


def test_a_batch_to_a_newcomer_creates_the_feed_and_numbers_from_one(demo_city):
    newcomer, old_hand = list(User.objects.order_by("pk").values_list("pk", flat=True)[:2])
    Feed.objects.filter(user_id=newcomer).delete()
    Feed.objects.get_or_create(user_id=old_hand)
    FeedEntry.objects.filter(user_id=newcomer).delete()
    with CaptureQueriesContext(connection) as batched, transaction.atomic(), publish_batch():
        publish(name="order.created", data=_data(0), recipients=[newcomer, old_hand])
        publish(name="order.created", data=_data(1), recipients=[newcomer])
    entries = FeedEntry.objects.filter(user_id=newcomer).order_by("seq")
    assert list(entries.values_list("seq", flat=True)) == [1, 2]
    assert Feed.objects.get(user_id=newcomer).last_seq == 2
    sqls = [q["sql"] for q in batched.captured_queries]
    inside = sqls[sqls.index("BEGIN") + 1 : sqls.index("COMMIT")]
    # The newcomer's feed is made by the same statement that numbers the events.
    assert len([sql for sql in inside if not sql.startswith('SELECT 1 AS "a"')]) == 1, inside


def test_an_exception_discards_the_batch():
    users = list(User.objects.order_by("pk").values_list("pk", flat=True)[:2])
    with pytest.raises(RuntimeError), transaction.atomic(), publish_batch():
        publish(name="order.created", data=_data(9), recipients=users)
        raise RuntimeError("boom")
    assert not Event.objects.filter(data__id=20_000_009).exists()


def test_an_audit_batch_chains_like_single_records(demo_city):
    start = AuditRecord.objects.count()
    with transaction.atomic():
        audit_record(action="single", object_type="test", object_id=1)
    with transaction.atomic(), audit_batch():
        records = [audit_record(action=f"batched-{i}", object_type="test", object_id=i) for i in range(5)]
        assert all(r.pk is None for r in records), "chained when the batch ends"
    rows = list(AuditRecord.objects.order_by("seq")[start:])
    assert [r.action for r in rows] == ["single"] + [f"batched-{i}" for i in range(5)]
    assert [r.seq for r in rows] == list(range(rows[0].seq, rows[0].seq + 6))
    assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(rows))
    result = verify_chain(anchors=False)
    assert result.ok, result
    with pytest.raises(ValueError), transaction.atomic(), audit_batch():
        audit_record(action="lost", object_type="test")
        raise ValueError("rolled back")
    assert not AuditRecord.objects.filter(action="lost").exists()


def test_concurrent_batches_to_overlapping_recipients_neither_deadlock_nor_skip_a_number(demo_city):
    """Four threads publish batches to random overlapping sets of eight users, listed in random order.

    Each batch locks its recipients' feed heads inside its one statement; every lock is taken in user
    order, so no transaction waits on another that waits on it (PostgreSQL would abort one: a deadlock).
    """
    import random
    import threading

    from django.db import connections

    users = list(User.objects.order_by("pk").values_list("pk", flat=True)[:8])
    Feed.objects.filter(user_id__in=users[:2]).delete()  # two newcomers among them, made on the way
    FeedEntry.objects.filter(user_id__in=users[:2]).delete()
    before = {u: FeedEntry.objects.filter(user_id=u).count() for u in users}
    errors: list[BaseException] = []
    sent: dict[int, int] = dict.fromkeys(users, 0)
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for n in range(25):
                batch = [rng.sample(users, rng.randint(2, 6)) for _ in range(rng.randint(1, 3))]
                with transaction.atomic(), publish_batch():
                    for i, recipients in enumerate(batch):
                        publish(
                            name="order.created", data=_data(seed * 1000 + n * 10 + i), recipients=recipients
                        )
                with lock:
                    for recipients in batch:
                        for user in recipients:
                            sent[user] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for user in users:
        seqs = list(FeedEntry.objects.filter(user_id=user).order_by("seq").values_list("seq", flat=True))
        new = seqs[before[user] :]
        assert len(new) == sent[user], (user, len(new), sent[user])
        assert seqs == list(range(1, len(seqs) + 1)) or new == list(range(new[0], new[0] + len(new))), user
