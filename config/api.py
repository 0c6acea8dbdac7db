"""API-wide helpers: the error shape every 4xx shares."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Wrap DRF errors as {"error": {"status", "detail", "fields"}} so clients always find the cause."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        body: dict[str, Any] = {"status": response.status_code, "detail": str(data["detail"])}
    else:
        body = {"status": response.status_code, "detail": "invalid input", "fields": data}
        if isinstance(data, dict) and "non_field_errors" in data:
            body["detail"] = "; ".join(str(m) for m in data["non_field_errors"])
    code = getattr(exc, "default_code", None)
    if code:
        body["code"] = code
    response.data = {"error": body}
    return response


def error_response(code: int, detail: str, **extra: Any) -> Response:
    """The shared error shape {"error": {"status", "detail", …}} for views that answer errors themselves."""
    return Response({"error": {"status": code, "detail": detail, **extra}}, status=code)
