"""Session login, bearer tokens, the admin and the API schema."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db]


@pytest.mark.embedded
def test_token_login_and_bearer_use(api_client):
    response = api_client.post(
        "/api/v1/auth/token/", {"username": "operator", "password": "demo-pass-2026"}, format="json"
    )
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert len(token) >= 20
    assert api_client.get("/api/v1/departments/").status_code in (401, 403)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    departments = api_client.get("/api/v1/departments/")
    assert departments.status_code == 200
    codes = {d["code"] for d in departments.json()}
    assert "fire_futian" in codes and "medical_120" in codes


def test_token_login_rejects_bad_password_clearly(api_client):
    response = api_client.post(
        "/api/v1/auth/token/", {"username": "operator", "password": "wrong"}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400 and error["detail"]


def test_token_login_names_missing_fields(api_client):
    response = api_client.post("/api/v1/auth/token/", {"username": "operator"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]


def test_wrong_bearer_token_is_401(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert api_client.get("/api/v1/categories/").status_code == 401


def test_categories_list(client_for):
    body = client_for("grid01").get("/api/v1/categories/").json()
    codes = {c["code"]: c for c in body}
    assert codes["AC01"]["parent_code"] == "AC" and codes["AC01"]["family"] == "accident"


@pytest.mark.embedded
def test_login_page_is_chinese_by_default_and_english_on_request(client):
    page = client.get("/login/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'lang="zh-hans"' in text and "登录" in text
    english = client.get("/login/", HTTP_ACCEPT_LANGUAGE="en")
    assert "Sign in" in english.content.decode()


@pytest.mark.embedded
def test_session_login_reaches_home(client):
    response = client.post("/login/", {"username": "commander", "password": "demo-pass-2026"}, follow=True)
    assert response.status_code == 200
    assert "指挥长" in response.content.decode()
    bad = client.post("/logout/")
    assert bad.status_code == 302
    failed = client.post("/login/", {"username": "commander", "password": "nope"})
    assert failed.status_code == 200 and "用户名或密码错误" in failed.content.decode()


def test_admin_is_usable_by_admin(client):
    client.login(username="admin", password="demo-pass-2026")
    for url in (
        "/admin/",
        "/admin/command/department/",
        "/admin/command/linkagerule/",
        "/admin/gis/territoryunit/",
        "/admin/incidents/category/",
        "/admin/command/user/",
    ):
        assert client.get(url).status_code == 200, url


def test_operator_cannot_enter_admin(client):
    client.login(username="operator", password="demo-pass-2026")
    assert client.get("/admin/").status_code == 302


def test_openapi_schema_and_docs(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/v1/auth/token/" in schema.json()["paths"]
    assert client.get("/api/v1/docs/").status_code == 200
