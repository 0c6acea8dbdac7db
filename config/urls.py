"""URL roots: pages, the admin, /healthz and the REST API under /api/v1/."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config.health import healthz

api_v1: list[URLPattern | URLResolver] = [
    path("", include("command.api_urls")),
    path("", include("command.recommend_urls")),
    path("", include("command.warnings_urls")),
    path("", include("command.privacy_urls")),
    path("", include("incidents.api_urls")),
    path("", include("gis.api_urls")),
    path("", include("realtime.api_urls")),
    path("", include("command.stats_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include(api_v1)),
    path("", include("command.console_urls")),
    path("", include("command.dashboard_urls")),
    path("", include("command.urls")),
]
