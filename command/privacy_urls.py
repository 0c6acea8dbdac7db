"""The audited reveal of personal data (mounted under /api/v1/)."""

from django.urls import path

from command import privacy_api

urlpatterns = [
    path("incidents/<int:pk>/reveal/", privacy_api.IncidentRevealView.as_view(), name="incident-reveal"),
]
