from django.urls import path

from gis import api

urlpatterns = [
    path("geocode/", api.GeocodeView.as_view(), name="geocode"),
]
