"""The dashboard page (mounted before command.urls so that /command/dashboard/ is ours)."""

from django.urls import path

from command import dashboard_views

urlpatterns = [
    path("command/dashboard/", dashboard_views.dashboard, name="dashboard"),
]
