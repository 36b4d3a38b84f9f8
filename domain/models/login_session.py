"""Browser login sessions, server-side: Keycloak logins with their tokens, local logins without.

The session cookie holds a random handle; the table holds its SHA-256 and the tokens, encrypted with
a key derived from the site's session secret, so neither a leaked cookie-less database dump nor a
leaked cookie alone yields a usable token. The table keeps the name it had when only Keycloak
logins were stored (``oidc_session``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime, utcnow


class LoginSession(SQLModel, table=True):
    __tablename__ = "oidc_session"
    id: int | None = Field(default=None, primary_key=True)
    handle_digest: str = Field(max_length=64, unique=True, description="SHA-256 of the cookie's handle.")
    subject: str = Field(max_length=253, index=True, description="user:NAME of the logged-in person.")
    tokens: str = Field(sa_type=Text, description="Encrypted access, refresh and ID tokens (none for local logins).")
    access_expires_at: datetime = Field(sa_type=UtcDateTime)
    refresh_expires_at: datetime | None = Field(
        default=None, sa_type=UtcDateTime, index=True, description="After this the session is gone."
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    refreshed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
