"""Server-side store of browser login sessions: Keycloak logins (with their tokens) and local logins.

The browser's (encrypted) session cookie carries only a random handle, so a logout ends the session
for good: a copy of the cookie taken before the logout no longer authenticates anything. The database
row is keyed by the handle's SHA-256 and holds the access, refresh and ID tokens encrypted (Fernet) with a key
derived from the site's session secret, which every site replica shares. Rows die with their
refresh token; :meth:`LoginSessionStore.purge_expired` removes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from domain.database import session_scope
from domain.models import LoginSession, utcnow

LOGIN_SESSION_SECONDS = 8 * 3600
"""How long a browser's login session lasts (both modes): the session cookie's max age, and the expiry of
a local login's server-side row. A Keycloak login's row also ends with its refresh token."""


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The tokens of one login, as the token endpoint returned them."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime | None

    @classmethod
    def from_response(cls, response: dict[str, Any], now: datetime, *, previous: TokenSet | None = None) -> TokenSet:
        """Build from a token endpoint answer; a refresh answer may omit the ID token (keep the old one)."""
        refresh_in = int(response.get("refresh_expires_in") or 0)
        return cls(
            access_token=response["access_token"],
            refresh_token=response.get("refresh_token") or (previous.refresh_token if previous else None),
            id_token=response.get("id_token") or (previous.id_token if previous else None),
            access_expires_at=now + timedelta(seconds=int(response.get("expires_in") or 60)),
            refresh_expires_at=now + timedelta(seconds=refresh_in) if refresh_in > 0 else None,
        )


@dataclass(frozen=True, slots=True)
class StoredSession:
    subject: str
    tokens: TokenSet


def _digest(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


class LoginSessionStore:
    def __init__(self, engine: Engine, secret: str) -> None:
        self._engine = engine
        key = hashlib.sha256(b"ai-telemetry oidc tokens\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def _seal(self, tokens: TokenSet) -> str:
        payload = {"a": tokens.access_token, "r": tokens.refresh_token, "i": tokens.id_token}
        return self._fernet.encrypt(json.dumps(payload).encode()).decode()

    def _open(self, row: LoginSession) -> TokenSet | None:
        try:
            payload = json.loads(self._fernet.decrypt(row.tokens.encode()))
        except (InvalidToken, ValueError):  # written with another session secret: the session is gone
            return None
        return TokenSet(
            access_token=payload["a"],
            refresh_token=payload["r"],
            id_token=payload["i"],
            access_expires_at=row.access_expires_at,
            refresh_expires_at=row.refresh_expires_at,
        )

    def create(self, subject: str, tokens: TokenSet) -> str:
        """Store a new session; returns the handle for the cookie (only its digest is stored)."""
        return self._insert(subject, self._seal(tokens), tokens.access_expires_at, tokens.refresh_expires_at)

    def create_plain(self, subject: str, expires_at: datetime) -> str:
        """Store a session without tokens (a local-mode login), alive until ``expires_at``; returns the handle."""
        return self._insert(subject, "", expires_at, expires_at)

    def _insert(
        self, subject: str, sealed: str, access_expires_at: datetime, refresh_expires_at: datetime | None
    ) -> str:
        handle = secrets.token_urlsafe(32)
        row = LoginSession(
            handle_digest=_digest(handle),
            subject=subject,
            tokens=sealed,
            access_expires_at=access_expires_at,
            refresh_expires_at=refresh_expires_at,
        )
        with session_scope(self._engine) as session:
            session.add(row)
        return handle

    def subject_of(self, handle: str, now: datetime | None = None) -> str | None:
        """Who the live session of ``handle`` belongs to; None when unknown or expired."""
        with Session(self._engine) as session:
            row = session.exec(select(LoginSession).where(LoginSession.handle_digest == _digest(handle))).first()
        if row is None or (row.refresh_expires_at is not None and row.refresh_expires_at <= (now or utcnow())):
            return None
        return row.subject

    def load(self, handle: str, now: datetime | None = None) -> StoredSession | None:
        """The live session of ``handle``; None when unknown, unreadable or past its refresh token."""
        with Session(self._engine) as session:
            row = session.exec(select(LoginSession).where(LoginSession.handle_digest == _digest(handle))).first()
        if row is None:
            return None
        if row.refresh_expires_at is not None and row.refresh_expires_at <= (now or utcnow()):
            return None
        tokens = self._open(row)
        return None if tokens is None else StoredSession(row.subject, tokens)

    def replace_tokens(self, handle: str, tokens: TokenSet) -> None:
        with session_scope(self._engine) as session:
            row = session.exec(select(LoginSession).where(LoginSession.handle_digest == _digest(handle))).first()
            if row is None:
                return
            row.tokens = self._seal(tokens)
            row.access_expires_at = tokens.access_expires_at
            row.refresh_expires_at = tokens.refresh_expires_at
            row.refreshed_at = utcnow()

    def delete(self, handle: str) -> StoredSession | None:
        """Remove the session and return what it held (the logout needs the refresh token; None without tokens)."""
        with session_scope(self._engine) as session:
            row = session.exec(select(LoginSession).where(LoginSession.handle_digest == _digest(handle))).first()
            if row is None:
                return None
            tokens = self._open(row)
            subject = row.subject
            session.delete(row)
        return None if tokens is None else StoredSession(subject, tokens)

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete sessions whose refresh token has expired; returns how many."""
        with session_scope(self._engine) as session:
            result = session.exec(delete(LoginSession).where(col(LoginSession.refresh_expires_at) <= (now or utcnow())))
        return int(result.rowcount or 0)
