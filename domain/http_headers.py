"""Security headers for every response of an app (the site's and the worker's receiver's).

A ``before_send`` hook rather than ``after_request``: it sees every response the app sends, error
pages, static files and the OpenAPI document included, and the request's scheme. The scheme is
``https`` when uvicorn serves TLS itself or, behind a TLS-terminating proxy, when uvicorn's
``proxy_headers`` took it from ``X-Forwarded-Proto`` of a trusted proxy (``FORWARDED_ALLOW_IPS``);
HSTS is never sent over plain http, where browsers must ignore it (RFC 6797 7.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

HSTS = "max-age=31536000; includeSubDomains"
RETRY_AFTER_SECONDS = 5
"""How long a client is asked to wait before retrying a 503: the site's pages and API, the login pages,
the receiver's webhook and the servers' answer to a cut-off body."""
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}
"""The header that says so."""
DATA_ONLY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
"""For answers that are data only (the receiver's, the servers' own 408/414/431/503): nothing in them may
load, run or be framed."""


def security_headers(headers: Mapping[str, str]) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook adding ``headers`` (unless the response set its own) and HSTS over TLS."""

    async def add(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        response_headers = MutableScopeHeaders.from_message(message)
        for name, value in headers.items():
            if name not in response_headers:
                response_headers[name] = value
        if scope.get("scheme") == "https" and "Strict-Transport-Security" not in response_headers:
            response_headers["Strict-Transport-Security"] = HSTS

    return add
