"""CSRF tokens bound to the login session.

Litestar's CSRF check is a double-submit cookie: the form's token must equal the ``csrftoken`` cookie,
whoever set it. A cookie planted in the browser (from a sibling host, or left from before the login)
would then pass for any session. Here a logged-in session also remembers the digest of the one token
issued to it: the first page a session loads after login gets a fresh token (cookie and forms), bound
to the session, and a form post of a logged-in session must carry exactly that token. Posts without a
login (the login form itself) keep the plain double-submit check, and so does logout, which can only end
the session: a page that never passed a route (a 404 for an unknown path) offers the logout button with
the token the browser has.
"""

from __future__ import annotations

import hashlib
from secrets import compare_digest
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware, generate_csrf_token
from litestar.types import Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from web.identity import SESSION_SUBJECT

SESSION_CSRF = "csrf"
"""Session key holding the SHA-256 of the CSRF token issued to the session."""
UNBOUND_POSTS = frozenset({"/logout"})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionBoundCsrfMiddleware(CSRFMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stored = scope.get("session")
        session: dict[str, Any] = stored if isinstance(stored, dict) else {}
        if (
            scope["type"] != ScopeType.HTTP
            or not isinstance(session, dict)
            or SESSION_SUBJECT not in session
            or scope["path"] in UNBOUND_POSTS
        ):
            await super().__call__(scope, receive, send)
            return
        cookie = self._cookie(scope)
        bound = session.get(SESSION_CSRF)
        matches = isinstance(bound, str) and cookie is not None and compare_digest(bound, _digest(cookie))
        if scope["method"] in self.config.safe_methods:
            if matches:
                await super().__call__(scope, receive, send)
                return
            token = generate_csrf_token(secret=self.config.secret)  # a fresh token for this session
            scope["session"] = {**session, SESSION_CSRF: _digest(token)}
            ScopeState.from_scope(scope).csrf_token = token
            await self.app(scope, receive, self.create_send_wrapper(send=send, token=token, csrf_cookie=None))
            return
        if not matches:
            raise PermissionDeniedException("CSRF token verification failed")
        await super().__call__(scope, receive, send)  # and the form's token must equal the (bound) cookie

    def _cookie(self, scope: Scope) -> str | None:
        request = scope["litestar_app"].request_class(scope=scope)
        value = request.cookies.get(self.config.cookie_name)
        return value if isinstance(value, str) else None


def session_bound_csrf(config: CSRFConfig) -> DefineMiddleware:
    """The middleware, to be listed after the session middleware (it reads the session)."""
    return DefineMiddleware(SessionBoundCsrfMiddleware, config=config)
