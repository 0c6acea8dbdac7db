"""The warning's page: what it says, where it stands, and its coverage (refreshed from the API)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from command.constants import Role
from command.models import LEVEL_NUMERAL, WarningReceipt
from command.warnings import allowed_actions, warning_coverage, warning_identifier, warnings_visible_to

POLL_SECONDS = 5


@login_required
def warning_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One warning for the command centre (with coverage) or for one of its recipients."""
    warning = get_object_or_404(warnings_visible_to(request.user), pk=pk)
    centre = getattr(request.user, "role", None) in (Role.OPERATOR, Role.COMMANDER, Role.ADMIN)
    receipt = WarningReceipt.objects.filter(warning=warning, user_id=request.user.pk or 0).first()
    context = {
        "warning": warning,
        "numeral": LEVEL_NUMERAL[warning.level],
        "identifier": warning_identifier(warning),
        "coverage": warning_coverage(warning) if centre else None,
        "centre": centre,
        "receipt": receipt,
        # Updates need a form of their own (the API takes them); the page offers the one-click actions.
        "actions": [a for a in allowed_actions(warning, request.user) if a != "update"],
        "poll_ms": POLL_SECONDS * 1000,
    }
    return render(request, "command/warning_detail.html", context)
