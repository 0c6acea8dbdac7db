from django.urls import path

from command import api

urlpatterns = [
    path("auth/token/", api.TokenView.as_view(), name="auth-token"),
    path("departments/", api.DepartmentListView.as_view(), name="department-list"),
]
