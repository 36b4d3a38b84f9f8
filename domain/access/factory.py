"""Pick the implementations of the access interfaces that the settings ask for, in one place.

Callers receive protocols (:class:`~domain.access.Authorizer`, :class:`~domain.access.AccessAdmin`,
:class:`~domain.access.PasswordLogin` or :class:`~domain.access.RedirectLogin`,
:class:`~domain.access.ProjectSync`) and never test which concrete class they got; what only one
mode has is wired here, where the concrete classes are known (Keycloak's permission cache is
forgotten after every grant made through the same process).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import Engine

from domain.access import (
    AccessAdmin,
    Authorizer,
    GroupMembers,
    PasswordLogin,
    ProjectSync,
    RedirectLogin,
    SyncReport,
)
from domain.access.local import LocalAccessAdmin, LocalAuthorizer
from domain.access.login_sessions import LOGIN_SESSION_SECONDS
from domain.settings import KeycloakSettings, Settings, SettingsError

if TYPE_CHECKING:
    from domain.access.keycloak_admin import KeycloakAccessAdmin


@dataclass(frozen=True)
class SiteAccess:
    """Everything the site needs of the access backend, built together so the parts agree.

    Exactly one of ``password_login`` and ``redirect_login`` is set: the site mounts its login
    routes after it.
    """

    authorizer: Authorizer
    admin: AccessAdmin
    password_login: PasswordLogin | None = None
    redirect_login: RedirectLogin | None = None
    checks: Mapping[str, Callable[[], str]] = field(default_factory=dict)
    """Readiness checks of the backend by name (``keycloak``), each ``ok`` or why not."""


def build_site_access(
    settings: Settings, engine: Engine, *, transport: httpx.BaseTransport | None = None
) -> SiteAccess:
    """Local mode: the database answers everything. Keycloak mode: OIDC login, UMA permissions, admin REST API.

    ``transport`` reaches Keycloak (tests hand in a stand-in realm's); None is the network.
    """
    if settings.auth.mode == "local":
        local = LocalAuthorizer(engine, session_seconds=LOGIN_SESSION_SECONDS)
        return SiteAccess(authorizer=local, admin=LocalAccessAdmin(engine), password_login=local)
    if settings.auth.mode == "keycloak":
        from domain.access.keycloak import KeycloakAuthorizer  # noqa: PLC0415  (see _keycloak_admin)

        secret = settings.site.session_secret.get_secret_value() if settings.site.session_secret else ""
        keycloak = KeycloakAuthorizer(settings.keycloak, engine, session_secret=secret, transport=transport)
        return SiteAccess(
            authorizer=keycloak,
            admin=_keycloak_admin(settings.keycloak, on_change=keycloak.forget_permissions),
            redirect_login=keycloak,
            checks={"keycloak": keycloak.keycloak_status},
        )
    raise SettingsError(f"AI_TELEMETRY_AUTH_MODE={settings.auth.mode} is not supported")


def build_access_admin(
    settings: Settings, engine: Engine, *, on_change: Callable[[], None] | None = None
) -> AccessAdmin:
    """Grants go to the database (local mode) or to Keycloak's admin REST API (Keycloak mode).

    ``on_change`` runs after every grant, revoke or new API client, so a process can forget the
    permission answers it cached.
    """
    if settings.auth.mode == "keycloak":
        return _keycloak_admin(settings.keycloak, on_change=on_change)
    return LocalAccessAdmin(engine, on_change=on_change)


def _keycloak_admin(settings: KeycloakSettings, on_change: Callable[[], None] | None = None) -> KeycloakAccessAdmin:
    """Keycloak's classes are imported in Keycloak mode only: python-keycloak and the requests and
    cryptography stack under it are ~16 MB of a local-mode process (the worker polling 10,000 GPUs)."""
    from domain.access.keycloak_admin import KeycloakAccessAdmin  # noqa: PLC0415

    return KeycloakAccessAdmin(settings, on_change=on_change)


class LocalProjectSync:
    """Local mode's :class:`~domain.access.ProjectSync`: grants name database rows, so there is nothing to create."""

    def sync_projects(self, engine: Engine) -> SyncReport:
        return SyncReport(resources=0, created=0)


def build_project_sync(settings: Settings) -> ProjectSync:
    """Keycloak mode creates each project's resource, group, policy and permission; local mode needs none.

    Raises ``ValueError`` when Keycloak mode has no Keycloak URL (the worker logs it and retries).
    """
    if settings.auth.mode == "keycloak":
        return _keycloak_admin(settings.keycloak)
    return LocalProjectSync()


def build_group_members(settings: Settings) -> GroupMembers | None:
    """Keycloak mode's directory of project group members; local mode has none (grants name users)."""
    if settings.auth.mode == "keycloak":
        return _keycloak_admin(settings.keycloak)
    return None
