"""Response headers that every response carries: CSP (self and the vendored htmx only), framing, sniffing,
and HSTS whenever the request came over TLS.

A ``before_send`` hook rather than ``after_request``: it sees every response the app sends, error pages,
static files and the OpenAPI document included, and the request's scheme. The scheme is ``https`` when
uvicorn serves TLS itself or, behind a TLS-terminating proxy, when uvicorn's ``proxy_headers`` took it
from ``X-Forwarded-Proto`` of a trusted proxy (``FORWARDED_ALLOW_IPS``); HSTS is never sent over plain
http, where browsers must ignore it (RFC 6797 7.2).
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


async def security_headers(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook adding the headers to the start of every HTTP response."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in HEADERS.items():
        if name not in headers:
            headers[name] = value
    if scope.get("scheme") == "https" and "Strict-Transport-Security" not in headers:
        headers["Strict-Transport-Security"] = HSTS
