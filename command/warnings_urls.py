"""Routes of early warnings: the REST API (mounted under /api/v1/) and the warning's page.

`urlpatterns` are the API routes; `page_urlpatterns` hold the page at /command/warnings/<id>/, which the
site's page routes (command/urls.py) take in as ``*warnings_urls.page_urlpatterns``.
"""

from django.urls import path

from command import warnings_api, warnings_views

urlpatterns = [
    path("warnings/", warnings_api.WarningListView.as_view(), name="warning-list"),
    path("warnings/cap/", warnings_api.CapImportView.as_view(), name="warning-cap-import"),
    path("warnings/<int:pk>/", warnings_api.WarningDetailView.as_view(), name="warning-detail"),
    path("warnings/<int:pk>/actions/", warnings_api.WarningActionView.as_view(), name="warning-actions"),
    path("warnings/<int:pk>/cap/", warnings_api.CapExportView.as_view(), name="warning-cap-export"),
]

page_urlpatterns = [
    path("command/warnings/<int:pk>/", warnings_views.warning_page, name="warning-page"),
]
