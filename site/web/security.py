"""The site's response headers: CSP (self and the vendored htmx only), framing, sniffing; HSTS over TLS
comes with the hook (domain/http_headers.py)."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from domain.http_headers import security_headers

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

site_security_headers = security_headers(HEADERS)


CACHEABLE_PREFIXES = ("/static/",)
"""Public, versioned files: the only answers a browser or proxy may keep."""


async def no_store(message: Message, scope: Scope) -> None:
    """``Cache-Control: no-store`` on every answer but static files (unless it set its own): pages, fragments,
    JSON and CSV are a signed-in caller's view, which no shared cache or back button may keep."""
    if message["type"] != "http.response.start" or scope.get("path", "").startswith(CACHEABLE_PREFIXES):
        return
    headers = MutableScopeHeaders.from_message(message)
    if "Cache-Control" not in headers:
        headers["Cache-Control"] = "no-store"
