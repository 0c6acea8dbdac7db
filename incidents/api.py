"""REST views of the incidents app."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import generics, serializers

from incidents.models import Category


class CategorySerializer(serializers.ModelSerializer[Category]):
    parent_code = serializers.SlugRelatedField[Category](source="parent", read_only=True, slug_field="code")

    class Meta:
        model = Category
        fields = ["id", "code", "name", "family", "parent_code", "auto_dispatch"]


class CategoryListView(generics.ListAPIView[Category]):
    """Active categories with their codes, families and parents."""

    serializer_class = CategorySerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Category]:
        return Category.objects.filter(active=True).select_related("parent").order_by("position", "code")
