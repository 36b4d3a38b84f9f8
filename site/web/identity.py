"""Who is calling, and what they may read: the dependencies every protected route declares.

A request is authenticated by an ``Authorization: Bearer`` header (API clients) or by the
encrypted session cookie set at login (browsers), which names a server-side session (``local:`` or
``oidc:`` handle) that logout deletes. Either way the same authorizer answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from sqlmodel import Session

from domain.access import Forbidden, NotAuthenticated, Principal, ReadScope
from web.state import SiteContext

SESSION_SUBJECT = "subject"


def site_context(state: State) -> SiteContext:
    return state["site"]


def provide_principal(request: Request[Any, Any, Any], state: State) -> Principal:
    authorizer = site_context(state).authorizer
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("Authorization header must be 'Bearer <token>'")
        principal = authorizer.authenticate_bearer(token.strip())
        if principal is None:
            raise NotAuthenticated("invalid or expired token")
        return principal
    subject = request.session.get(SESSION_SUBJECT) if request.session else None
    principal = authorizer.principal_for_subject(subject) if isinstance(subject, str) else None
    if principal is None:
        raise NotAuthenticated("login required")
    return principal


Caller = NamedDependency[Principal]
Visible = NamedDependency[ReadScope]
Db = NamedDependency[Session]
"""Handler parameter types of the three dependencies below, so each injection is explicit."""


def provide_scope(principal: Caller, state: State) -> ReadScope:
    return site_context(state).authorizer.read_scope(principal)


def provide_db(state: State) -> Iterator[Session]:
    with Session(site_context(state).engine) as session:
        yield session


PROTECTED = {
    "principal": Provide(provide_principal, sync_to_thread=True),
    "visible": Provide(provide_scope, sync_to_thread=True),
    "db": Provide(provide_db),
}
"""Dependencies of every route that shows fleet data; the authorization matrix test relies on them."""


def require_admin(principal: Caller) -> Principal:
    if not principal.is_admin:
        raise Forbidden("administrators only")
    return principal


Admin = NamedDependency[Principal]
ADMIN_ONLY = {**PROTECTED, "admin": Provide(require_admin, sync_to_thread=False)}
"""Dependencies of admin-only routes: a handler that declares ``admin`` answers 403 to everyone else."""
