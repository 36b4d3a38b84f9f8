"""Request size limit: a body announced larger than ``AI_TELEMETRY_SITE_MAX_BODY_BYTES`` is refused with 413
before anything else (CSRF check, login, form parsing) looks at the request.

Bodies without a Content-Length (chunked) are counted as they are read, by Litestar's
``request_max_body_size`` set to the same limit.
"""

from __future__ import annotations

from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    try:
                        announced = int(value)
                    except ValueError:
                        raise ClientException(f"invalid Content-Length: {value[:40]!r}") from None
                    if announced > self.max_bytes:
                        raise RequestEntityTooLarge(detail=f"the request body limit is {self.max_bytes} bytes")
        await self.app(scope, receive, send)


def body_limit(max_bytes: int) -> DefineMiddleware:
    return DefineMiddleware(BodyLimitMiddleware, max_bytes=max_bytes)
