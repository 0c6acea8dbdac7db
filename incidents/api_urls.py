from django.urls import path

from incidents import api

urlpatterns = [
    path("categories/", api.CategoryListView.as_view(), name="category-list"),
]
