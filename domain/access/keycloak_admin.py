"""Keycloak mode's :class:`~domain.access.AccessAdmin`: grants, API clients and project sync.

Everything is written through Keycloak's admin REST API (python-keycloak), as an operator would
do it by hand, using the naming of :mod:`domain.access.resources`:

* granting a user or an API client a project = adding the user (or the client's service account)
  to the project's group ``{resource}-GET``;
* granting a group (a team) a project = adding that group to the group policy ``{resource}-GET``;
* creating an API client for a team = a confidential client with a service account, an audience
  mapper for the site, membership of the team's group and of the groups of any extra projects;
* project sync = creating, idempotently, the resource, group, group policy and permission of every
  hub, cluster and research project in the inventory.

The admin client (by default the site client's own service account) needs the realm-management
roles listed in ``keycloak/README.md``. Keycloak being down raises
:class:`~domain.access.AuthorizationUnavailable`; unknown names raise :class:`~domain.access.GrantError`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from keycloak import KeycloakAdmin
from keycloak.exceptions import (
    KeycloakConnectionError,
    KeycloakError,
    KeycloakGetError,
    raise_error_from_response,
)
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from domain.access import (
    ApiClientCredentials,
    AuthorizationUnavailable,
    Grantee,
    GrantError,
    ProjectAccess,
    ProjectRef,
    SyncReport,
)
from domain.access.keycloak import SERVICE_ACCOUNT_PREFIX
from domain.access.local import TEAM_NAME
from domain.access.resources import (
    SCOPE,
    ResourceSpec,
    cluster_resource,
    group_name,
    hub_resource,
    is_resource_group,
    permission_name,
    policy_name,
    project_resource,
    specs_for,
)
from domain.models import Cluster, Hub, ResearchProject
from domain.settings import KeycloakSettings

log = logging.getLogger(__name__)

MEMBER_PAGE = 500
"""Group members read per admin-API call; every page is read."""


def audience_mapper(audience: str) -> dict[str, Any]:
    """Protocol mapper that puts the site's client id into a client's access tokens (``aud``)."""
    return {
        "name": f"audience {audience}",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "consentRequired": False,
        "config": {
            "included.client.audience": audience,
            "id.token.claim": "false",
            "access.token.claim": "true",
            "introspection.token.claim": "true",
        },
    }


@dataclass
class _Known:
    """Ids of the authorization objects already in Keycloak, by name; filled as they are created."""

    resources: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)


class KeycloakAccessAdmin:
    """Admin operations on the realm (an :class:`~domain.access.AccessAdmin` and the worker's
    :class:`~domain.access.ProjectSync`); every call is serialised (python-keycloak shares its session)."""

    def __init__(self, settings: KeycloakSettings, *, on_change: Callable[[], None] | None = None) -> None:
        if not settings.url:
            raise ValueError("Keycloak mode needs the Keycloak URL")
        self.settings = settings
        self._on_change = on_change
        self._lock = threading.RLock()
        self._admin: KeycloakAdmin | None = None
        self._site_id: str | None = None

    # --- plumbing -----------------------------------------------------------------------------

    def _connect(self) -> KeycloakAdmin:
        if self._admin is None:
            s = self.settings
            secret = s.admin_client_secret or s.client_secret
            self._admin = KeycloakAdmin(
                server_url=f"{s.url}/",
                realm_name=s.realm,
                user_realm_name=s.realm,
                client_id=s.admin_client_id or s.client_id,
                client_secret_key=secret.get_secret_value() if secret else None,
                grant_type="client_credentials",
                verify=str(s.ca_file) if s.ca_file else True,
                timeout=int(max(1, s.timeout_seconds)),
            )
        return self._admin

    @contextmanager
    def _calling(self, what: str) -> Iterator[KeycloakAdmin]:
        with self._lock:
            try:
                yield self._connect()
            except KeycloakConnectionError as exc:
                self._admin = None
                raise AuthorizationUnavailable(f"Keycloak at {self.settings.url} is unreachable ({what})") from exc
            except KeycloakError as exc:
                code = exc.response_code
                if code is None or code >= 500 or code in (401, 403):
                    self._admin = None  # a fresh admin token next time
                    hint = " (does the admin client's service account have the realm-management roles?)"
                    raise AuthorizationUnavailable(
                        f"Keycloak refused the {what}: {code} {exc.error_message!s}"
                        + (hint if code in (401, 403) else "")
                    ) from exc
                raise GrantError(f"Keycloak rejected the {what}: {exc.error_message!s}") from exc

    def _authz(self, kc: KeycloakAdmin) -> str:
        if self._site_id is None:
            site_id = kc.get_client_id(self.settings.client_id)
            if site_id is None:
                raise GrantError(f"no client {self.settings.client_id!r} in realm {self.settings.realm!r}")
            self._site_id = site_id
        return f"admin/realms/{self.settings.realm}/clients/{self._site_id}/authz/resource-server"

    @staticmethod
    def _get(kc: KeycloakAdmin, path: str, **params: Any) -> Any:
        return raise_error_from_response(kc.connection.raw_get(path, **params), KeycloakGetError)

    @staticmethod
    def _send(kc: KeycloakAdmin, method: str, path: str, payload: dict[str, Any]) -> Any:
        call = kc.connection.raw_post if method == "POST" else kc.connection.raw_put
        return raise_error_from_response(call(path, data=json.dumps(payload)), KeycloakGetError)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # --- finding and creating the authorization objects --------------------------------------

    def _known_everything(self, kc: KeycloakAdmin) -> _Known:
        authz = self._authz(kc)
        known = _Known()
        for resource in self._get(kc, f"{authz}/resource", first=0, max=-1, deep="false"):
            known.resources[resource["name"]] = resource["_id"]
        for group in kc.get_groups({"briefRepresentation": "true"}):
            known.groups[group["name"]] = group["id"]
        for policy in self._get(kc, f"{authz}/policy", first=0, max=-1):
            known.policies[policy["name"]] = policy["id"]
        return known

    def _known_for(self, kc: KeycloakAdmin, specs: Iterable[ResourceSpec]) -> _Known:
        """Targeted look-ups for a few resources (a grant), instead of listing everything."""
        authz = self._authz(kc)
        known = _Known()
        for spec in specs:
            for resource in self._get(kc, f"{authz}/resource", name=spec.name, exactName="true", deep="false"):
                if resource["name"] == spec.name:
                    known.resources[spec.name] = resource["_id"]
            group_id = self._group_id(kc, group_name(spec.name))
            if group_id is not None:
                known.groups[group_name(spec.name)] = group_id
            for name in (policy_name(spec.name), permission_name(spec.name)):
                for policy in self._get(kc, f"{authz}/policy", name=name, first=0, max=20):
                    if policy["name"] == name:
                        known.policies[name] = policy["id"]
        return known

    def _group_id(self, kc: KeycloakAdmin, name_or_path: str) -> str | None:
        path = name_or_path if name_or_path.startswith("/") else f"/{name_or_path}"
        try:
            group = kc.get_group_by_path(path)
        except KeycloakGetError as exc:
            if exc.response_code == 404:
                return None
            raise
        return str(group["id"]) if group else None

    def _ensure(self, kc: KeycloakAdmin, spec: ResourceSpec, known: _Known, *, retry: bool = True) -> int:
        """Create whatever of the resource, group, policy and permission is missing; returns how many.

        Another replica (or an operator) may create the same object meanwhile: a conflict re-reads
        what exists and carries on, once.
        """
        try:
            return self._create_missing(kc, spec, known)
        except KeycloakError as exc:
            if exc.response_code != 409 or not retry:
                raise
            fresh = self._known_for(kc, [spec])
            known.resources.update(fresh.resources)
            known.groups.update(fresh.groups)
            known.policies.update(fresh.policies)
            return self._ensure(kc, spec, known, retry=False)

    def _create_missing(self, kc: KeycloakAdmin, spec: ResourceSpec, known: _Known) -> int:
        authz = self._authz(kc)
        created = 0
        if spec.name not in known.resources:
            body = self._send(
                kc,
                "POST",
                f"{authz}/resource",
                {
                    "name": spec.name,
                    "displayName": spec.name,
                    "type": spec.type,
                    "ownerManagedAccess": False,
                    "attributes": {k: [v] for k, v in spec.attributes.items()},
                    "scopes": [{"name": SCOPE}],
                },
            )
            known.resources[spec.name] = body["_id"]
            created += 1
        group = group_name(spec.name)
        if group not in known.groups:
            group_id = kc.create_group({"name": group, "attributes": {"resource": [spec.name]}}, skip_exists=True)
            known.groups[group] = group_id or self._group_id(kc, group) or ""
            created += 1
        policy = policy_name(spec.name)
        if policy not in known.policies:
            body = self._send(
                kc,
                "POST",
                f"{authz}/policy/group",
                {
                    "name": policy,
                    "description": f"Members of /{group}",
                    "logic": "POSITIVE",
                    "decisionStrategy": "UNANIMOUS",
                    "groups": [{"id": known.groups[group], "extendChildren": False}],
                },
            )
            known.policies[policy] = body["id"]
            created += 1
        permission = permission_name(spec.name)
        if permission not in known.policies:
            body = self._send(
                kc,
                "POST",
                f"{authz}/permission/resource",
                {
                    "name": permission,
                    "description": f"{SCOPE} on {spec.name}",
                    "logic": "POSITIVE",
                    "decisionStrategy": "AFFIRMATIVE",
                    "resources": [known.resources[spec.name]],
                    "policies": [known.policies[policy]],
                },
            )
            known.policies[permission] = body["id"]
            created += 1
        return created

    def _ensure_project(self, kc: KeycloakAdmin, project: ProjectRef) -> _Known:
        specs = specs_for(project.hub, project.cluster, project.namespace)
        known = self._known_for(kc, specs)
        for spec in specs:
            self._ensure(kc, spec, known)
        return known

    def _member_id(self, kc: KeycloakAdmin, grantee: Grantee) -> str:
        """The Keycloak user id of a user, or of an API client's service account."""
        if grantee.kind == "user":
            user_id = kc.get_user_id(grantee.name)
            if user_id is None:
                raise GrantError(f"no user {grantee.name!r} in realm {self.settings.realm!r}")
            return user_id
        client_id = kc.get_client_id(grantee.name)
        if client_id is None:
            raise GrantError(f"no client {grantee.name!r} in realm {self.settings.realm!r}")
        try:
            return str(kc.get_client_service_account_user(client_id)["id"])
        except KeycloakGetError as exc:
            raise GrantError(f"client {grantee.name!r} has no service account") from exc

    def member_emails(self, group: str, *, page_size: int = MEMBER_PAGE) -> list[str]:
        """Verified e-mail addresses of the enabled members of ``group``, every page of them; none when
        the group does not exist. An unverified address is skipped (and logged): a notice about someone's
        GPUs must not go to an address nobody proved to own."""
        members: list[dict[str, Any]] = []
        with self._calling("group member listing") as kc:
            group_id = self._group_id(kc, group)
            if group_id is None:
                return []
            while True:
                page = kc.get_group_members(
                    group_id, {"briefRepresentation": "false", "first": len(members), "max": page_size}
                )
                members.extend(page)
                if len(page) < page_size:
                    break
        out: set[str] = set()
        for member in members:
            if not member.get("email") or not member.get("enabled", True):
                continue
            if not member.get("emailVerified", False):
                log.info(
                    "group %s: member %s has an unverified e-mail address; no notices to it",
                    group,
                    member.get("username"),
                )
                continue
            out.add(str(member["email"]))
        return sorted(out)

    # --- the AccessAdmin protocol -------------------------------------------------------------

    def teams(self) -> list[str]:
        with self._calling("group listing") as kc:
            groups = kc.get_groups({"briefRepresentation": "true"})
        return sorted(g["name"] for g in groups if not is_resource_group(g["name"]))

    def grant(self, project: ProjectRef, grantee: Grantee, *, granted_by: str) -> bool:
        resource = project_resource(project.hub, project.cluster, project.namespace)
        with self._calling("grant") as kc:
            known = self._ensure_project(kc, project)
            group_id = known.groups[group_name(resource)]
            if grantee.kind == "group":
                changed = self._set_policy_group(kc, known.policies[policy_name(resource)], grantee.name, present=True)
            else:
                member = self._member_id(kc, grantee)
                if any(g["id"] == group_id for g in kc.get_user_groups(member)):
                    changed = False
                else:
                    kc.group_user_add(member, group_id)
                    changed = True
        if changed:
            log.info("%s granted %s read access to %s", granted_by, grantee, resource)
            self._changed()
        return changed

    def revoke(self, project: ProjectRef, grantee: Grantee) -> bool:
        resource = project_resource(project.hub, project.cluster, project.namespace)
        with self._calling("revoke") as kc:
            known = self._known_for(kc, specs_for(project.hub, project.cluster, project.namespace)[-1:])
            group_id = known.groups.get(group_name(resource))
            policy_id = known.policies.get(policy_name(resource))
            if group_id is None or policy_id is None:
                return False
            if grantee.kind == "group":
                changed = self._set_policy_group(kc, policy_id, grantee.name, present=False)
            else:
                member = self._member_id(kc, grantee)
                if not any(g["id"] == group_id for g in kc.get_user_groups(member)):
                    changed = False
                else:
                    kc.group_user_remove(member, group_id)
                    changed = True
        if changed:
            log.info("revoked %s's read access to %s", grantee, resource)
            self._changed()
        return changed

    def _set_policy_group(self, kc: KeycloakAdmin, policy_id: str, group: str, *, present: bool) -> bool:
        team_id = self._group_id(kc, group)
        if team_id is None:
            raise GrantError(f"no group {group!r} in realm {self.settings.realm!r}")
        path = f"{self._authz(kc)}/policy/group/{policy_id}"
        policy = self._get(kc, path)
        groups = [g for g in policy.get("groups") or [] if g.get("id")]
        listed = any(g["id"] == team_id for g in groups)
        if listed == present:
            return False
        if present:
            groups.append({"id": team_id, "extendChildren": False})
        else:
            groups = [g for g in groups if g["id"] != team_id]
        policy["groups"] = groups
        self._send(kc, "PUT", path, policy)
        return True

    def access_of(self, projects: Sequence[ProjectRef]) -> list[ProjectAccess]:
        with self._calling("access listing") as kc:
            authz = self._authz(kc)
            groups = kc.get_groups({"briefRepresentation": "true"})
            group_ids = {g["name"]: g["id"] for g in groups}
            group_names = {g["id"]: g["name"] for g in groups}
            policies = {p["name"]: p for p in self._get(kc, f"{authz}/policy", first=0, max=-1, type="group")}
            memo: dict[str, tuple[Grantee, ...]] = {}

            def who(resource: str) -> tuple[Grantee, ...]:
                if resource in memo:
                    return memo[resource]
                found: set[Grantee] = set()
                own = group_ids.get(group_name(resource))
                if own is not None:
                    for member in kc.get_group_members(own, {"briefRepresentation": "true"}):
                        username = str(member.get("username", ""))
                        if username.startswith(SERVICE_ACCOUNT_PREFIX):
                            found.add(Grantee("client", username.removeprefix(SERVICE_ACCOUNT_PREFIX)))
                        else:
                            found.add(Grantee("user", username))
                policy = policies.get(policy_name(resource))
                if policy is not None:
                    for entry in json.loads((policy.get("config") or {}).get("groups") or "[]"):
                        name = group_names.get(entry.get("id"))
                        if name is not None and entry.get("id") != own:
                            found.add(Grantee("group", name))
                memo[resource] = tuple(sorted(found))
                return memo[resource]

            answer = []
            for project in projects:
                direct = who(project_resource(project.hub, project.cluster, project.namespace))
                inherited = set(who(cluster_resource(project.hub, project.cluster))) | set(
                    who(hub_resource(project.hub))
                )
                answer.append(ProjectAccess(project, direct, tuple(sorted(inherited))))
        return answer

    def create_api_client(self, team: str, projects: Sequence[ProjectRef], *, created_by: str) -> ApiClientCredentials:
        if not TEAM_NAME.match(team):
            raise GrantError("team names are lower-case letters, digits and dashes (at most 60 characters)")
        client_id = f"{team}-api"
        with self._calling("API client creation") as kc:
            if kc.get_client_id(client_id) is not None:
                raise GrantError(f"client {client_id!r} already exists; rotate its secret in Keycloak instead")
            team_group = self._group_id(kc, team)
            internal_id = kc.create_client(
                {
                    "clientId": client_id,
                    "name": f"API client of {team}",
                    "description": f"Created by {created_by} from AI Telemetry.",
                    "enabled": True,
                    "protocol": "openid-connect",
                    "publicClient": False,
                    "clientAuthenticatorType": "client-secret",
                    "standardFlowEnabled": False,
                    "implicitFlowEnabled": False,
                    "directAccessGrantsEnabled": False,
                    "serviceAccountsEnabled": True,
                    "attributes": {"ai-telemetry.team": team},
                    "protocolMappers": [audience_mapper(self.settings.expected_audience)],
                }
            )
            secret = str(kc.get_client_secrets(internal_id)["value"])
            account = str(kc.get_client_service_account_user(internal_id)["id"])
            if team_group is not None:
                kc.group_user_add(account, team_group)
            for project in projects:
                known = self._ensure_project(kc, project)
                resource = project_resource(project.hub, project.cluster, project.namespace)
                kc.group_user_add(account, known.groups[group_name(resource)])
        log.info("%s created API client %s for team %s", created_by, client_id, team)
        self._changed()
        return ApiClientCredentials(client_id=client_id, client_secret=secret, token_url=self.settings.token_url)

    # --- project sync (the worker's job) ------------------------------------------------------

    def sync_projects(self, engine: Engine) -> SyncReport:
        """Create the resources of every hub, cluster and project in the inventory; idempotent."""
        specs: dict[str, ResourceSpec] = {}
        with Session(engine) as session:
            for hub, cluster, namespace in session.exec(
                select(Hub.name, Cluster.name, ResearchProject.namespace)
                .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
                .join(Hub, col(Hub.id) == Cluster.hub_id)
            ).all():
                for spec in specs_for(hub, cluster, namespace):
                    specs.setdefault(spec.name, spec)
            for hub, cluster in session.exec(
                select(col(Hub.name), col(Cluster.name)).join(Hub, col(Hub.id) == Cluster.hub_id)
            ).all():
                for spec in specs_for(hub, cluster):
                    specs.setdefault(spec.name, spec)
        created = 0
        with self._calling("project sync") as kc:
            known = self._known_everything(kc)
            for spec in specs.values():
                created += self._ensure(kc, spec, known)
        if created:
            log.info("project sync created %d Keycloak object(s) for %d resource(s)", created, len(specs))
        return SyncReport(resources=len(specs), created=created)
