"""Routes of block data under /api/v1/: statistics, hotspots, evaluation and exports."""

from django.urls import path

from command import stats_api

urlpatterns = [
    path("stats/incidents/", stats_api.IncidentStatsView.as_view(), name="stats-incidents"),
    path("stats/units/", stats_api.UnitStatsView.as_view(), name="stats-units"),
    path("stats/compare/", stats_api.CompareStatsView.as_view(), name="stats-compare"),
    path("stats/departments/", stats_api.DepartmentStatsView.as_view(), name="stats-departments"),
    path("hotspots/", stats_api.HotspotView.as_view(), name="hotspots"),
    path("evaluation/", stats_api.EvaluationView.as_view(), name="evaluation"),
    path("exports/incidents.<str:kind>", stats_api.IncidentExportView.as_view(), name="export-incidents"),
    path("exports/stats.<str:kind>", stats_api.StatsExportView.as_view(), name="export-stats"),
]
