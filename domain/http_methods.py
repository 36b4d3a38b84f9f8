"""HEAD on every GET route, for the site and the receiver (RFC 9110 9.3.2: GET's headers, no body).

Litestar answers HEAD only where a handler declares it, so monitors and link checkers that probe with
HEAD got 405. The app's ASGI handler is wrapped: a HEAD request is routed as GET (on a copy of the
scope, so the server still knows it answers HEAD) and the body is dropped; the headers, Content-Length
included, are GET's.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send


def answer_head(app: Litestar) -> Litestar:
    """Make every GET route of ``app`` answer HEAD too; returns ``app``."""
    inner: ASGIApp = app.asgi_handler

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "HEAD":
            await inner(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        as_get: HTTPScope = {**scope, "method": "GET"}
        await inner(as_get, receive, headers_only)

    app.asgi_handler = handler
    return app
