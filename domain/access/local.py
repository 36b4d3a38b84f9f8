"""Local authorization mode: users, tokens and grants in the database (the embedded default)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from domain.access import (
    ApiClientCredentials,
    Grantee,
    GrantError,
    Principal,
    ProjectAccess,
    ProjectRef,
    ReadScope,
)
from domain.access.login_sessions import LOGIN_SESSION_SECONDS, LoginSessionStore
from domain.access.secrets import hash_password, new_token, token_digest, verify_password
from domain.database import session_scope
from domain.models import AccessGrant, ApiToken, Cluster, Hub, LocalUser, ResearchProject, utcnow

USER_PREFIX = "user:"
SESSION_PREFIX = "local:"
"""What a local login stores in the session cookie: ``local:<handle>`` of a server-side session."""
TEAM_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,58}[a-z0-9])?$")


def _principal(user: LocalUser) -> Principal:
    return Principal(subject=USER_PREFIX + user.username, name=user.display_name, is_admin=user.is_admin)


class LocalAuthorizer:
    """Local mode's :class:`~domain.access.Authorizer` and :class:`~domain.access.PasswordLogin`."""

    def __init__(self, engine: Engine, *, session_seconds: int = LOGIN_SESSION_SECONDS) -> None:
        self._engine = engine
        self._session_seconds = session_seconds
        # the store's key only seals Keycloak tokens; local sessions hold none
        self.sessions = LoginSessionStore(engine, secret="")

    def authenticate_password(self, username: str, password: str) -> Principal | None:
        with Session(self._engine) as session:
            user = session.exec(select(LocalUser).where(LocalUser.username == username)).first()
        if user is None or user.disabled or not verify_password(password, user.password_hash):
            return None
        return _principal(user)

    def start_session(self, principal: Principal) -> str:
        """A server-side session for a login; returns what the session cookie keeps (``local:<handle>``)."""
        self.sessions.purge_expired()
        expires_at = utcnow() + timedelta(seconds=self._session_seconds)
        return SESSION_PREFIX + self.sessions.create_plain(principal.subject, expires_at)

    def end_session(self, subject: str) -> None:
        """Forget the session (logout): the cookie that named it no longer authenticates, even replayed."""
        if subject.startswith(SESSION_PREFIX):
            self.sessions.delete(subject.removeprefix(SESSION_PREFIX))

    def principal_for_subject(self, subject: str) -> Principal | None:
        """``subject`` is what the login stored in the session cookie: ``local:<handle>``."""
        if not subject.startswith(SESSION_PREFIX):
            return None
        user_subject = self.sessions.subject_of(subject.removeprefix(SESSION_PREFIX))
        if user_subject is None or not user_subject.startswith(USER_PREFIX):
            return None
        with Session(self._engine) as session:
            user = session.exec(
                select(LocalUser).where(LocalUser.username == user_subject.removeprefix(USER_PREFIX))
            ).first()
        return None if user is None or user.disabled else _principal(user)

    def authenticate_bearer(self, token: str) -> Principal | None:
        with Session(self._engine) as session:
            row = session.exec(
                select(ApiToken, LocalUser)
                .join(LocalUser, col(LocalUser.id) == ApiToken.user_id)
                .where(ApiToken.token_hash == token_digest(token))
            ).first()
        if row is None:
            return None
        token_row, user = row
        if user.disabled:
            return None
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


class LocalAccessAdmin:
    """Local mode's :class:`~domain.access.AccessAdmin`: ``AccessGrant`` rows of local users.

    There are no groups in local mode; an API client is a local user (``{team}-api``) with a
    personal access token, so ``client`` grants are grants to that user.
    """

    def __init__(self, engine: Engine, *, on_change: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._on_change = on_change

    def teams(self) -> list[str]:
        return []

    def access_of(self, projects: Sequence[ProjectRef]) -> list[ProjectAccess]:
        with Session(self._engine) as session:
            ids = [self._project(session, p) for p in projects]
            project_ids = [p.id for p in ids]
            cluster_ids = {p.cluster_id for p in ids}
            grants = session.exec(
                select(AccessGrant).where(
                    or_(
                        col(AccessGrant.project_id).in_(project_ids),
                        col(AccessGrant.cluster_id).in_(cluster_ids),
                    )
                )
            ).all()
        direct: dict[int, set[Grantee]] = {}
        inherited: dict[int, set[Grantee]] = {}
        for grant in grants:
            grantee = Grantee("user", grant.principal.removeprefix(USER_PREFIX))
            if grant.project_id is not None:
                direct.setdefault(grant.project_id, set()).add(grantee)
            if grant.cluster_id is not None:
                inherited.setdefault(grant.cluster_id, set()).add(grantee)
        return [
            ProjectAccess(
                ref,
                tuple(sorted(direct.get(row.id or 0, ()))),
                tuple(sorted(inherited.get(row.cluster_id, ()))),
            )
            for ref, row in zip(projects, ids, strict=True)
        ]

    def grant(self, project: ProjectRef, grantee: Grantee, *, granted_by: str) -> bool:
        with session_scope(self._engine) as session:
            row = self._project(session, project)
            principal = self._principal(session, grantee)
            exists = session.exec(
                select(AccessGrant).where(AccessGrant.principal == principal, AccessGrant.project_id == row.id)
            ).first()
            if exists is not None:
                return False
            session.add(AccessGrant(principal=principal, project_id=row.id, granted_by=granted_by))
        self._changed()
        return True

    def revoke(self, project: ProjectRef, grantee: Grantee) -> bool:
        with session_scope(self._engine) as session:
            row = self._project(session, project)
            principal = self._principal(session, grantee)
            grant = session.exec(
                select(AccessGrant).where(AccessGrant.principal == principal, AccessGrant.project_id == row.id)
            ).first()
            if grant is None:
                return False
            session.delete(grant)
        self._changed()
        return True

    def create_api_client(self, team: str, projects: Sequence[ProjectRef], *, created_by: str) -> ApiClientCredentials:
        if not TEAM_NAME.match(team):
            raise GrantError("team names are lower-case letters, digits and dashes (at most 60 characters)")
        username = f"{team}-api"
        with session_scope(self._engine) as session:
            if session.exec(select(LocalUser).where(LocalUser.username == username)).first() is not None:
                raise GrantError(f"user {username!r} already exists")
            user = LocalUser(
                username=username,
                display_name=f"API client of {team}",
                password_hash=hash_password(secrets.token_urlsafe(32)),  # nobody knows it: token only
            )
            session.add(user)
            session.flush()
            for project in projects:
                row = self._project(session, project)
                session.add(AccessGrant(principal=USER_PREFIX + username, project_id=row.id, granted_by=created_by))
            token = new_token()
            assert user.id is not None  # flushed above
            session.add(ApiToken(user_id=user.id, token_hash=token_digest(token), name=f"API client ({created_by})"))
        self._changed()
        return ApiClientCredentials(client_id=username, client_secret=token, token_url=None)

    @staticmethod
    def _project(session: Session, ref: ProjectRef) -> ResearchProject:
        stmt = (
            select(ResearchProject)
            .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
            .join(Hub, col(Hub.id) == Cluster.hub_id)
            .where(Cluster.name == ref.cluster, ResearchProject.namespace == ref.namespace, Hub.name == ref.hub)
        )
        project = session.exec(stmt).first()
        if project is None:
            raise GrantError(f"no research project {ref.namespace} on cluster {ref.cluster} (hub {ref.hub})")
        return project

    @staticmethod
    def _principal(session: Session, grantee: Grantee) -> str:
        if grantee.kind == "group":
            raise GrantError("local mode has no groups: grant users or API clients (groups need Keycloak mode)")
        user = session.exec(select(LocalUser).where(LocalUser.username == grantee.name)).first()
        if user is None:
            raise GrantError(f"no local {grantee.kind} {grantee.name!r}")
        return USER_PREFIX + user.username

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
