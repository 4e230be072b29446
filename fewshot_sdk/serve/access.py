"""The API key: when the service has one, every request must carry it, except the page's own static files.

The page (``/`` and ``/page/*``: HTML, script and style, no data) must load in a browser before a
person can type the key into it; everything that reads or changes a task, and ``/healthz`` and
``/metrics``, needs ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Keys are compared in
constant time.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from fewshot_sdk.serve.errors import error_response

PUBLIC_PATHS = frozenset({"/", "/page/app.js", "/page/style.css"})


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].strip()
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


class ApiKeyCheck:
    """ASGI middleware: 401 with one line for a request without the right key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope.get("method") == "GET" and scope.get("path") in PUBLIC_PATHS):
            await self.app(scope, receive, send)
            return
        given = presented_key(dict(scope["headers"]))
        if given is None or not hmac.compare_digest(given, self.key):
            why = "missing" if given is None else "wrong"
            response = error_response(
                401,
                f"{why} API key: this service needs its key in the X-API-Key header (or Authorization: Bearer)",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
