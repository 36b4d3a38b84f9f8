"""Demo identities for the embedded default: an admin and two researchers with one project each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from domain.access.accounts import AccountError, ensure_user, find_project, grant_project
from domain.database import session_scope


@dataclass(frozen=True)
class DemoIdentity:
    username: str
    password: str
    display_name: str
    is_admin: bool = False
    project: tuple[str, str] | None = None
    """(cluster, namespace) this researcher is granted."""


DEMO_IDENTITIES = (
    DemoIdentity("admin", "admin-demo", "Fleet Admin", is_admin=True),
    DemoIdentity("alice", "alice-demo", "Alice (ML team A)", project=("moc-prod", "ml-team-a")),
    DemoIdentity("bob", "bob-demo", "Bob (Vision lab)", project=("nerc-ocp", "vision-lab")),
)


def seed_demo_identities(engine: Engine) -> list[str]:
    """Create the demo users and their grants; idempotent. Returns problems (e.g. a missing project)."""
    problems: list[str] = []
    with session_scope(engine) as session:
        for identity in DEMO_IDENTITIES:
            ensure_user(
                session,
                identity.username,
                display_name=identity.display_name,
                password=identity.password,
                is_admin=identity.is_admin,
            )
            if identity.project is None:
                continue
            try:
                project = find_project(session, *identity.project)
            except AccountError as exc:
                problems.append(str(exc))
                continue
            grant_project(session, identity.username, project, granted_by="demo")
    return problems
