"""The console pages without a browser: who may open which, the home redirect, the PWA files."""

from __future__ import annotations

import pytest

from command.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

PAGES = {"/command/": {"operator", "commander"}, "/m/": {"grid01"}, "/dept/": {"fire_futian"}}
PEOPLE = ["operator", "commander", "grid01", "fire_futian", "admin"]


def signed_in(client, username: str):
    client.force_login(User.objects.get(username=username))
    return client


@pytest.mark.parametrize("path", list(PAGES))
def test_anonymous_visitors_are_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


@pytest.mark.parametrize("username", PEOPLE)
def test_each_role_opens_only_its_console(client, username):
    signed_in(client, username)
    for path, allowed in PAGES.items():
        response = client.get(path)
        if username in allowed:
            assert response.status_code == 200, (username, path)
            assert response.context["config"]["user"]["username"] == username
            assert 'id="console-config"' in response.content.decode()
        else:
            assert response.status_code == 403, (username, path)
            assert "无权访问" in response.content.decode()


@pytest.mark.parametrize(
    ("username", "target"),
    [("operator", "/command/"), ("commander", "/command/"), ("grid01", "/m/"), ("fire_futian", "/dept/")],
)
def test_home_sends_each_role_to_its_console(client, username, target):
    response = signed_in(client, username).get("/")
    assert response.status_code == 302 and response["Location"] == target


def test_admin_keeps_the_home_page(client):
    response = signed_in(client, "admin").get("/")
    assert response.status_code == 200 and "管理员" in response.content.decode()


def test_pages_speak_chinese_by_default_and_english_on_request(client):
    signed_in(client, "operator")
    chinese = client.get("/command/").content.decode()
    assert 'lang="zh-hans"' in chinese and "指挥中心" in chinese and "事件队列" in chinese
    english = client.get("/command/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'lang="en"' in english and "Command centre" in english and "Incident queue" in english


def test_the_phone_page_is_an_installable_pwa(client):
    signed_in(client, "grid01")
    page = client.get("/m/").content.decode()
    assert 'rel="manifest" href="/m/manifest.webmanifest"' in page
    worker = client.get("/m/sw.js")
    assert worker.status_code == 200
    assert worker["Content-Type"].startswith("text/javascript")
    assert worker["Service-Worker-Allowed"] == "/m/"
    body = worker.content.decode()
    assert '"/static/command/mobile.js"' in body and 'const SHELL = "/m/"' in body
    manifest = client.get("/m/manifest.webmanifest")
    assert manifest["Content-Type"].startswith("application/manifest+json")
    data = manifest.json()
    assert data["start_url"] == "/m/" and data["scope"] == "/m/" and data["display"] == "standalone"
    sizes = {icon["sizes"] for icon in data["icons"]}
    assert {"192x192", "512x512"} <= sizes
    for icon in data["icons"]:
        assert client.get(icon["src"]).status_code == 200
