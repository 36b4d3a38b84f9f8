"""Local-mode accounts: users, personal access tokens and grants, used by the CLI and the demo."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from domain.access import ProjectRef
from domain.access.local import USER_PREFIX
from domain.access.secrets import hash_password, new_token, token_digest
from domain.models import AccessGrant, ApiToken, Cluster, Hub, LocalUser, ResearchProject, utcnow


class AccountError(ValueError):
    """A named user, cluster or project does not exist; the message says which."""


def ensure_user(session: Session, username: str, *, display_name: str, password: str, is_admin: bool) -> LocalUser:
    """Create the user if missing; an existing user keeps its password."""
    user = session.exec(select(LocalUser).where(LocalUser.username == username)).first()
    if user is None:
        user = LocalUser(
            username=username, display_name=display_name, password_hash=hash_password(password), is_admin=is_admin
        )
        session.add(user)
        session.flush()
    return user


def create_token(session: Session, username: str, *, name: str = "cli", expires_in: timedelta | None = None) -> str:
    """Return a new personal access token for ``username``; only its digest is stored."""
    user = session.exec(select(LocalUser).where(LocalUser.username == username)).first()
    if user is None:
        raise AccountError(f"no such user: {username}")
    assert user.id is not None  # a stored row has its key
    token = new_token()
    expires_at = utcnow() + expires_in if expires_in else None
    session.add(ApiToken(user_id=user.id, token_hash=token_digest(token), name=name, expires_at=expires_at))
    return token


def find_project(session: Session, cluster: str, namespace: str) -> ResearchProject:
    project = session.exec(
        select(ResearchProject)
        .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
        .where(Cluster.name == cluster, ResearchProject.namespace == namespace)
    ).first()
    if project is None:
        raise AccountError(f"no research project {namespace} on cluster {cluster}")
    return project


def grant_project(session: Session, username: str, project: ResearchProject, *, granted_by: str) -> bool:
    """Let ``username`` read ``project``; False when the grant already existed."""
    principal = USER_PREFIX + username
    exists = session.exec(
        select(AccessGrant).where(AccessGrant.principal == principal, AccessGrant.project_id == project.id)
    ).first()
    if exists is not None:
        return False
    session.add(AccessGrant(principal=principal, project_id=project.id, granted_by=granted_by))
    return True


def project_ref(session: Session, spec: str) -> ProjectRef:
    """A project named ``CLUSTER/NAMESPACE`` (or ``HUB/CLUSTER/NAMESPACE`` where clusters share names)."""
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise AccountError(f"{spec!r}: write CLUSTER/NAMESPACE or HUB/CLUSTER/NAMESPACE")
    *hub, cluster, namespace = parts
    stmt = (
        select(Hub.name, ResearchProject.id)
        .join(Cluster, col(Cluster.hub_id) == Hub.id)
        .join(ResearchProject, col(ResearchProject.cluster_id) == Cluster.id)
        .where(Cluster.name == cluster, ResearchProject.namespace == namespace)
    )
    if hub:
        stmt = stmt.where(Hub.name == hub[0])
    rows = session.exec(stmt).all()
    if not rows:
        raise AccountError(f"no research project {namespace} on cluster {cluster}")
    if len(rows) > 1:
        hubs = ", ".join(sorted(r[0] for r in rows))
        raise AccountError(f"{cluster}/{namespace} exists on several hubs ({hubs}): write HUB/CLUSTER/NAMESPACE")
    return ProjectRef(rows[0][0], cluster, namespace, rows[0][1])
