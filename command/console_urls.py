"""Pages of the three consoles and the phone page's PWA files (see command/console_views.py)."""

from django.urls import path

from command import console_views

urlpatterns = [
    path("command/", console_views.command_centre, name="console-command"),
    path("m/", console_views.mobile, name="console-mobile"),
    path("m/sw.js", console_views.service_worker, name="console-mobile-sw"),
    path("m/manifest.webmanifest", console_views.manifest, name="console-mobile-manifest"),
    path("dept/", console_views.dept_inbox, name="console-dept"),
]
