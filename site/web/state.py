"""What the site's handlers share, built once by the app factory and kept on ``app.state``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine

from domain.access import AccessAdmin, Authorizer, PasswordLogin, RedirectLogin
from domain.settings import Settings


@dataclass(frozen=True)
class SiteContext:
    settings: Settings
    engine: Engine
    authorizer: Authorizer
    access_admin: AccessAdmin | None = None
    """Grants and API clients for the admin pages (local rows, or Keycloak's admin REST API)."""
    password_login: PasswordLogin | None = None
    """The local login form's backend (local mode); None when logins go to an identity provider."""
    redirect_login: RedirectLogin | None = None
    """The OIDC login's backend (Keycloak mode)."""
    access_checks: Mapping[str, Callable[[], str]] = field(default_factory=dict)
    """Readiness checks of the access backend by name (``keycloak``)."""
