from django.urls import path

from command import recommend_api

urlpatterns = [
    path(
        "incidents/<int:pk>/recommended-units/",
        recommend_api.RecommendedUnitsView.as_view(),
        name="recommended-units",
    ),
]
