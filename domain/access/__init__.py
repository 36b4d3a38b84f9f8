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

Capabilities only one mode has are protocols of their own, so callers never test for a concrete
class: a browser logs in through a :class:`PasswordLogin` (local: the site's own form) or a
:class:`RedirectLogin` (Keycloak: OIDC code + PKCE); the worker keeps Keycloak's resources in step
with the inventory through a :class:`ProjectSync`. :mod:`domain.access.factory` builds all of them
from the settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sqlalchemy import Engine


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
    token_expires_at: float | None = field(default=None, compare=False)
    """When ``token`` expires (POSIX seconds, from its verified ``exp`` claim); None without a token."""


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

    def principal_for_subject(self, subject: str) -> Principal | None:
        """Rebuild the principal of a logged-in session; None when it no longer exists."""
        ...

    def authenticate_bearer(self, token: str) -> Principal | None:
        """Check an API bearer token; None when unknown or expired."""
        ...

    def read_scope(self, principal: Principal) -> ReadScope:
        """Raise :class:`AuthorizationUnavailable` rather than guess."""
        ...


class PasswordLogin(Protocol):
    """A login flow where the site checks a username and password itself (local mode)."""

    def authenticate_password(self, username: str, password: str) -> Principal | None:
        """The principal of a correct login form; None when the user is unknown, disabled or the password wrong."""
        ...

    def start_session(self, principal: Principal) -> str:
        """A server-side login session; returns what the session cookie keeps (the subject)."""
        ...

    def end_session(self, subject: str) -> None:
        """Forget a login session, so the cookie that named it no longer authenticates, even replayed."""
        ...


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """Where to send the browser, and what to keep in its session until it comes back."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class RedirectLogin(Protocol):
    """A login flow that sends the browser to an identity provider and back (OIDC code + PKCE).

    Every method raises :class:`AuthorizationUnavailable` when the provider does not answer.
    """

    @property
    def provider_url(self) -> str:
        """The identity provider's address, to name it when it cannot be reached."""
        ...

    @property
    def site_url(self) -> str | None:
        """The site's public base URL for the callback; None: the request's own."""
        ...

    def start_login(self, redirect_uri: str) -> LoginRequest:
        """A fresh state, nonce and PKCE challenge, and the provider's URL to send the browser to."""
        ...

    def finish_login(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> tuple[str, Principal]:
        """Trade the code for tokens and keep them server-side; returns (session cookie subject, principal)."""
        ...

    def logout(self, subject: str) -> bool:
        """Forget the login session and end the provider's; True if the provider confirmed."""
        ...


@dataclass(frozen=True, slots=True)
class SyncReport:
    resources: int
    """Resources the inventory needs (hubs, clusters, projects)."""
    created: int
    """Objects created by this run (resources, groups, policies, permissions); 0 when all existed."""


class ProjectSync(Protocol):
    """Keeps the authorization backend's resources in step with the inventory (the worker's job)."""

    def sync_projects(self, engine: Engine) -> SyncReport:
        """Create what every hub, cluster and project of the inventory needs; idempotent."""
        ...


class GroupMembers(Protocol):
    """Who belongs to a project's group, by e-mail (Keycloak mode: its admin REST API)."""

    def member_emails(self, group: str) -> list[str]:
        """Verified addresses of the group's enabled members; none when the group does not exist."""
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
    "LoginRequest",
    "NotAuthenticated",
    "PasswordLogin",
    "Principal",
    "ProjectAccess",
    "ProjectRef",
    "ProjectSync",
    "ReadScope",
    "RedirectLogin",
    "SyncReport",
]
