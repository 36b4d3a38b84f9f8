"""The site's response headers: CSP (self and the vendored htmx only), framing, sniffing; HSTS over TLS
comes with the hook (domain/http_headers.py)."""

from __future__ import annotations

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
