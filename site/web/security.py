"""Response headers that every page carries: CSP (self and the vendored htmx only), framing, sniffing."""

from __future__ import annotations

from litestar import Response

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)


def security_headers(*, hsts: bool):  # type: ignore[no-untyped-def]
    """An ``after_request`` hook; HSTS only when the site is served over TLS (secure cookies on)."""

    def add(response: Response) -> Response:  # type: ignore[type-arg]
        headers = response.headers
        headers.setdefault("Content-Security-Policy", _CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        if hsts:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response

    return add
