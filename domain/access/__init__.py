"""Who may read what: one authorization interface, implemented locally (database) and by Keycloak.

Every page, fragment, API route and export asks an :class:`Authorizer` for the caller's
:class:`ReadScope` and hands that scope to the inventory queries, which turn it into a SQL filter.

Exceptions::

    AccessError
     ├── NotAuthenticated        no or invalid credentials        → 401 / login redirect
     ├── Forbidden               authenticated, not allowed       → 403
     └── AuthorizationUnavailable the backend cannot answer       → 503, never unfiltered data
    GrantError (ValueError)       a grant names an unknown user, group, client or project → 400

Admins change who may read what through an :class:`AccessAdmin` (local: ``AccessGrant`` rows;
Keycloak: group membership and group policies written through the admin REST API).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


class AccessError(Exception):
    """Base of authentication and authorization failures."""


class NotAuthenticated(AccessError):
    pass


class Forbidden(AccessError):
    pass


class AuthorizationUnavailable(AccessError):
    """The authorization backend did not answer; callers must fail closed."""


class GrantError(ValueError):
    """A grant or an API client names something that does not exist or cannot be done; says which."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a person or an API client."""

    subject: str
    """Stable identifier, e.g. ``user:alice``; grants are keyed by it."""
    name: str
    is_admin: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)
    token: str | None = field(default=None, repr=False, compare=False)
    """The bearer access token the principal was authenticated with, for backends that evaluate
    permissions per token (Keycloak's UMA grant); None in local mode."""


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


GranteeKind = Literal["user", "group", "client"]
GRANTEE_KINDS: tuple[GranteeKind, ...] = ("user", "group", "client")


@dataclass(frozen=True, slots=True, order=True)
class Grantee:
    """Who a grant is for: a user, a group (Keycloak mode) or an API client."""

    kind: GranteeKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class ProjectRef:
    """A research project by its natural key (resources in Keycloak are named after it)."""

    hub: str
    cluster: str
    namespace: str
    project_id: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.cluster}/{self.namespace}"


@dataclass(frozen=True, slots=True)
class ProjectAccess:
    """Who can read one project: granted directly, or through its cluster or hub."""

    project: ProjectRef
    grantees: tuple[Grantee, ...] = ()
    via_cluster: tuple[Grantee, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiClientCredentials:
    """What an admin hands a team once: a client id and secret, and where to trade them for a token.

    In local mode there is no token endpoint: the secret is itself the bearer token.
    """

    client_id: str
    client_secret: str = field(repr=False)
    token_url: str | None


class AccessAdmin(Protocol):
    """Admin-only changes to who may read which project (both modes implement it)."""

    def access_of(self, projects: Sequence[ProjectRef]) -> list[ProjectAccess]:
        """Who can read each project, in the order given."""
        ...

    def teams(self) -> list[str]:
        """Groups that can be granted projects or own an API client (empty in local mode)."""
        ...

    def grant(self, project: ProjectRef, grantee: Grantee, *, granted_by: str) -> bool:
        """Let ``grantee`` read ``project``; False when it already could. Raises :class:`GrantError`."""
        ...

    def revoke(self, project: ProjectRef, grantee: Grantee) -> bool:
        """Take the direct grant away; False when there was none."""
        ...

    def create_api_client(self, team: str, projects: Sequence[ProjectRef], *, created_by: str) -> ApiClientCredentials:
        """A new API client for ``team`` that reads the team's projects and ``projects``."""
        ...


__all__ = [
    "GRANTEE_KINDS",
    "AccessAdmin",
    "AccessError",
    "ApiClientCredentials",
    "AuthorizationUnavailable",
    "Authorizer",
    "Forbidden",
    "GrantError",
    "Grantee",
    "GranteeKind",
    "NotAuthenticated",
    "Principal",
    "ProjectAccess",
    "ProjectRef",
    "ReadScope",
]
