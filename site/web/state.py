"""What the site's handlers share, built once by the app factory and kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from domain.access import AccessAdmin, Authorizer
from domain.settings import Settings


@dataclass(frozen=True)
class SiteContext:
    settings: Settings
    engine: Engine
    authorizer: Authorizer
    access_admin: AccessAdmin | None = None
    """Grants and API clients for the admin pages (local rows, or Keycloak's admin REST API)."""
