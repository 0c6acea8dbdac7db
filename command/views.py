"""Session pages: login and the signed-in home page."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class LoginView(auth_views.LoginView):
    """The session login page (Simplified Chinese by default)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Who is signed in, with their role, unit and the places they can go."""
    return render(request, "command/home.html", {"person": request.user})
