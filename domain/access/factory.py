"""Pick the implementations of the access interfaces that the settings ask for."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from domain.access import AccessAdmin
from domain.access.keycloak_admin import KeycloakAccessAdmin
from domain.access.local import LocalAccessAdmin
from domain.settings import Settings


def build_access_admin(
    settings: Settings, engine: Engine, *, on_change: Callable[[], None] | None = None
) -> AccessAdmin:
    """Grants go to the database (local mode) or to Keycloak's admin REST API (Keycloak mode).

    ``on_change`` runs after every grant, revoke or new API client, so a process can forget the
    permission answers it cached.
    """
    if settings.auth.mode == "keycloak":
        return KeycloakAccessAdmin(settings.keycloak, on_change=on_change)
    return LocalAccessAdmin(engine, on_change=on_change)
