"""Who a project's notices go to: its members (with an e-mail address), and for escalations its admins.

Local mode reads the database: users granted the project (or its whole cluster) and admin users.
Keycloak mode asks Keycloak's admin REST API for the members of the project's ``{resource}-GET``
group. Both sit behind :class:`RecipientDirectory`; a directory that cannot answer raises
:class:`RecipientsUnavailable`, and the project's notices wait for the next run rather than go to nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import ColumnElement, Engine, or_, select
from sqlmodel import Session, col

from domain.access import AuthorizationUnavailable, GrantError, GroupMembers
from domain.access.factory import build_group_members
from domain.access.resources import group_name, project_resource
from domain.models import AccessGrant, LocalUser
from domain.settings import Settings


class RecipientsUnavailable(Exception):
    """The directory could not be read (Keycloak down); try again later."""


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    hub: str
    cluster_id: int
    cluster: str
    namespace: str

    @property
    def label(self) -> str:
        return f"{self.namespace} ({self.cluster})"


class RecipientDirectory(Protocol):
    def members(self, project: ProjectInfo) -> list[str]: ...

    def managers(self, project: ProjectInfo) -> list[str]: ...


class LocalRecipients:
    """Users granted the project (or its cluster) in local mode, with an e-mail address and not disabled;
    admin users for escalations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def members(self, project: ProjectInfo) -> list[str]:
        granted = select(col(AccessGrant.principal)).where(
            or_(col(AccessGrant.project_id) == project.id, col(AccessGrant.cluster_id) == project.cluster_id)
        )
        with Session(self.engine) as session:
            principals = list(session.execute(granted).scalars())
        names = {p.removeprefix("user:") for p in principals if p.startswith("user:")}
        if not names:
            return []
        return self._emails(col(LocalUser.username).in_(names))

    def managers(self, project: ProjectInfo) -> list[str]:
        return self._emails(col(LocalUser.is_admin).is_(True))

    def _emails(self, where: ColumnElement[bool]) -> list[str]:
        stmt = select(col(LocalUser.email)).where(
            where, col(LocalUser.email).is_not(None), col(LocalUser.disabled).is_(False)
        )
        with Session(self.engine) as session:
            return sorted({str(e) for e in session.execute(stmt).scalars() if e})


class StaticRecipients:
    """Fixed lists (the benchmark; a single-team installation)."""

    def __init__(self, members: Sequence[str], managers: Sequence[str] = ()) -> None:
        self._members, self._managers = list(members), list(managers)

    def members(self, project: ProjectInfo) -> list[str]:
        return list(self._members)

    def managers(self, project: ProjectInfo) -> list[str]:
        return list(self._managers)


class KeycloakRecipients:
    """Keycloak mode: the members of the project's ``HUB-...-PROJECT-...-GET`` group, e-mail from Keycloak.

    Managers are the configured ``AI_TELEMETRY_NOTIFY_ADMIN_EMAILS`` (added by the job), not looked up.
    """

    def __init__(self, directory: GroupMembers) -> None:
        self.directory = directory

    def members(self, project: ProjectInfo) -> list[str]:
        group = group_name(project_resource(project.hub, project.cluster, project.namespace))
        try:
            return self.directory.member_emails(group)
        except (AuthorizationUnavailable, GrantError) as exc:
            raise RecipientsUnavailable(str(exc)) from exc

    def managers(self, project: ProjectInfo) -> list[str]:
        return []


def recipient_directory(settings: Settings, engine: Engine) -> RecipientDirectory:
    """Keycloak mode asks the project's group; local mode reads the database's grants and users."""
    members = build_group_members(settings)
    return KeycloakRecipients(members) if members is not None else LocalRecipients(engine)
