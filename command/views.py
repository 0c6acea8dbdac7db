"""Session pages: login and the signed-in home page."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from command.console_views import console_url_for


class LoginView(auth_views.LoginView):
    """The session login page (Simplified Chinese by default)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send each role to its console; roles without one (admin) see who they are and where to go."""
    console = console_url_for(request.user)
    if console is not None:
        return redirect(console)
    return render(request, "command/home.html", {"person": request.user})
