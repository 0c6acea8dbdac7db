from django.urls import path

from incidents import api, photo_api

urlpatterns = [
    path("categories/", api.CategoryListView.as_view(), name="category-list"),
    path("reports/", api.ReportCreateView.as_view(), name="report-create"),
    path("incidents/", api.IncidentListView.as_view(), name="incident-list"),
    path("incidents/<int:pk>/", api.IncidentDetailView.as_view(), name="incident-detail"),
    path("incidents/<int:pk>/actions/", api.IncidentActionView.as_view(), name="incident-actions"),
    path("photos/report/<int:pk>/", photo_api.ReportPhotoView.as_view(), name="photo-report"),
]
