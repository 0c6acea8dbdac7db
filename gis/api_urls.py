from django.urls import path

from gis import api

urlpatterns = [
    path("geocode/", api.GeocodeView.as_view(), name="geocode"),
    path("geocode/reverse/", api.ReverseGeocodeView.as_view(), name="geocode-reverse"),
    path("territory/<str:level>/", api.TerritoryView.as_view(), name="territory"),
]
