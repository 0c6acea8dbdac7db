"""The floor of any HTTP answer on daphne: a bare ASGI app that answers every request with a fixed JSON body.

Run by bench/geocode_api.py under daphne beside the product, so the product's figures can be read
against what daphne and the client alone cost on the same machine at the same moment.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"ok":true}'


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with a small JSON body, after reading the request."""
    if scope["type"] != "http":
        return
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
