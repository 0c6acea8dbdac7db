"""Duplicates merged into one incident keep every report; a split takes reports out again."""

from __future__ import annotations

import pytest

from command.models import User
from incidents.models import Incident, Report
from incidents.services import ActionError, incident_act
from tests.support.factories import report

pytestmark = [pytest.mark.django_db]


def test_merge_keeps_every_report_and_split_takes_them_out():
    operator = User.objects.get(username="operator")
    first = report("grid01", category="UM02", description="井盖缺失")
    second = report("grid02", category="UM02", description="同一个井盖")
    assert first.pk in set(second.possible_duplicates.values_list("pk", flat=True))
    with pytest.raises(ActionError):
        incident_act(incident_id=second.pk, actor=operator, action="merge", payload={"into": second.pk})
    incident_act(incident_id=second.pk, actor=operator, action="merge", payload={"into": first.pk})
    merged = Incident.objects.get(pk=second.pk)
    assert merged.status == "merged" and merged.merged_into_id == first.pk
    assert Report.objects.filter(incident=first).count() == 2
    assert set(Report.objects.filter(incident=first).values_list("reporter__username", flat=True)) == {
        "grid01",
        "grid02",
    }
    moved = Report.objects.get(incident=first, reporter__username="grid02")
    with pytest.raises(ActionError):
        incident_act(incident_id=first.pk, actor=operator, action="split", payload={"reason": "x"})
    incident_act(
        incident_id=first.pk,
        actor=operator,
        action="split",
        payload={"reason": "不是同一处", "report_ids": [moved.pk]},
    )
    moved.refresh_from_db()
    assert moved.incident_id not in (first.pk, second.pk)
    assert Incident.objects.get(pk=moved.incident_id).status == "reported"
    actions = list(first.timeline.values_list("action", flat=True))
    assert "merged_in" in actions and "split" in actions
