"""Local authorization mode: users, tokens and grants in the database (the embedded default)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.access import Principal, ReadScope
from domain.access.secrets import token_digest, verify_password
from domain.models import AccessGrant, ApiToken, LocalUser, utcnow

USER_PREFIX = "user:"


def _principal(user: LocalUser) -> Principal:
    return Principal(subject=USER_PREFIX + user.username, name=user.display_name, is_admin=user.is_admin)


class LocalAuthorizer:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def authenticate_password(self, username: str, password: str) -> Principal | None:
        with Session(self._engine) as session:
            user = session.exec(select(LocalUser).where(LocalUser.username == username)).first()
        if user is None or not verify_password(password, user.password_hash):
            return None
        return _principal(user)

    def principal_for_subject(self, subject: str) -> Principal | None:
        if not subject.startswith(USER_PREFIX):
            return None
        with Session(self._engine) as session:
            user = session.exec(
                select(LocalUser).where(LocalUser.username == subject.removeprefix(USER_PREFIX))
            ).first()
        return None if user is None else _principal(user)

    def authenticate_bearer(self, token: str) -> Principal | None:
        with Session(self._engine) as session:
            row = session.exec(
                select(ApiToken, LocalUser)
                .join(LocalUser, LocalUser.id == ApiToken.user_id)
                .where(ApiToken.token_hash == token_digest(token))
            ).first()
        if row is None:
            return None
        token_row, user = row
        if token_row.expires_at is not None and token_row.expires_at <= utcnow():
            return None
        return _principal(user)

    def read_scope(self, principal: Principal) -> ReadScope:
        if principal.is_admin:
            return ReadScope.all()
        with Session(self._engine) as session:
            grants = session.exec(select(AccessGrant).where(AccessGrant.principal == principal.subject)).all()
        return ReadScope(
            project_ids=frozenset(g.project_id for g in grants if g.project_id is not None),
            cluster_ids=frozenset(g.cluster_id for g in grants if g.cluster_id is not None),
        )
