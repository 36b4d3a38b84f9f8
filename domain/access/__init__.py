"""Who may read what: one authorization interface, implemented locally (database) and by Keycloak.

Every page, fragment, API route and export asks an :class:`Authorizer` for the caller's
:class:`ReadScope` and hands that scope to the inventory queries, which turn it into a SQL filter.

Exceptions::

    AccessError
     ├── NotAuthenticated        no or invalid credentials        → 401 / login redirect
     ├── Forbidden               authenticated, not allowed       → 403
     └── AuthorizationUnavailable the backend cannot answer       → 503, never unfiltered data
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class AccessError(Exception):
    """Base of authentication and authorization failures."""


class NotAuthenticated(AccessError):
    pass


class Forbidden(AccessError):
    pass


class AuthorizationUnavailable(AccessError):
    """The authorization backend did not answer; callers must fail closed."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a person or an API client."""

    subject: str
    """Stable identifier, e.g. ``user:alice``; grants are keyed by it."""
    name: str
    is_admin: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class ReadScope:
    """What a principal may read: everything, some research projects, or whole clusters."""

    everything: bool = False
    project_ids: frozenset[int] = frozenset()
    cluster_ids: frozenset[int] = frozenset()

    @classmethod
    def all(cls) -> ReadScope:
        return cls(everything=True)

    @property
    def is_empty(self) -> bool:
        return not (self.everything or self.project_ids or self.cluster_ids)


class Authorizer(Protocol):
    """The interface both modes implement (local: database; keycloak: OIDC + UMA)."""

    def authenticate_password(self, username: str, password: str) -> Principal | None:
        """Check a login form; None when wrong. Keycloak mode logs in through OIDC instead."""
        ...

    def principal_for_subject(self, subject: str) -> Principal | None:
        """Rebuild the principal of a logged-in session; None when it no longer exists."""
        ...

    def authenticate_bearer(self, token: str) -> Principal | None:
        """Check an API bearer token; None when unknown or expired."""
        ...

    def read_scope(self, principal: Principal) -> ReadScope:
        """Raise :class:`AuthorizationUnavailable` rather than guess."""
        ...


__all__ = [
    "AccessError",
    "AuthorizationUnavailable",
    "Authorizer",
    "Forbidden",
    "NotAuthenticated",
    "Principal",
    "ReadScope",
]
