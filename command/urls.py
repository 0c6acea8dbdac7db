"""Pages of the command app: login, logout and the home page."""

from django.contrib.auth import views as auth_views
from django.urls import path

from command import views, warnings_urls

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    *warnings_urls.page_urlpatterns,
    path("", views.home, name="home"),
]
