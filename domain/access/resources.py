"""Keycloak resource naming, shared with existing AI Telemetry and prom-keycloak-proxy realms.

One resource per hub, cluster and research project, each with the scope ``GET``::

    HUB-{hub}                                   resource type urn:ai-telemetry:resources:hub
    HUB-{hub}-CLUSTER-{cluster}                 resource type urn:ai-telemetry:resources:cluster
    HUB-{hub}-CLUSTER-{cluster}-PROJECT-{ns}    resource type urn:ai-telemetry:resources:project

For each resource ``R``: a group ``R-GET`` (membership is the grant), a group policy ``R-GET``
naming that group (and any team groups granted the resource), and a resource permission
``R-GET-permission`` (affirmative) applying the policy to ``R``.

Reading a hub means reading all its clusters; reading a cluster means reading all its projects.
Names are turned back into database ids through :class:`ResourceIndex`, built from the inventory,
never by parsing the names (hub and cluster names may contain dashes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlmodel import Session, col, select

from domain.access import ReadScope
from domain.models import Cluster, Hub, ResearchProject

SCOPE = "GET"
HUB_TYPE = "urn:ai-telemetry:resources:hub"
CLUSTER_TYPE = "urn:ai-telemetry:resources:cluster"
PROJECT_TYPE = "urn:ai-telemetry:resources:project"


def hub_resource(hub: str) -> str:
    return f"HUB-{hub}"


def cluster_resource(hub: str, cluster: str) -> str:
    return f"{hub_resource(hub)}-CLUSTER-{cluster}"


def project_resource(hub: str, cluster: str, namespace: str) -> str:
    return f"{cluster_resource(hub, cluster)}-PROJECT-{namespace}"


def group_name(resource: str) -> str:
    """The group whose members may read ``resource``; its group policy has the same name."""
    return f"{resource}-{SCOPE}"


def policy_name(resource: str) -> str:
    return group_name(resource)


def permission_name(resource: str) -> str:
    return f"{resource}-{SCOPE}-permission"


def is_resource_group(name: str) -> bool:
    """True for the groups this naming owns (``HUB-...-GET``), as opposed to team groups."""
    return name.startswith("HUB-") and name.endswith(f"-{SCOPE}")


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource to exist in Keycloak, with the attributes an operator would look for."""

    name: str
    type: str
    attributes: Mapping[str, str]


def specs_for(hub: str, cluster: str | None = None, namespace: str | None = None) -> list[ResourceSpec]:
    """The resources one hub, cluster or project needs, outermost first."""
    specs = [ResourceSpec(hub_resource(hub), HUB_TYPE, {"hub": hub})]
    if cluster is not None:
        specs.append(ResourceSpec(cluster_resource(hub, cluster), CLUSTER_TYPE, {"hub": hub, "cluster": cluster}))
    if cluster is not None and namespace is not None:
        specs.append(
            ResourceSpec(
                project_resource(hub, cluster, namespace),
                PROJECT_TYPE,
                {"hub": hub, "cluster": cluster, "namespace": namespace},
            )
        )
    return specs


@dataclass(frozen=True)
class ResourceIndex:
    """Resource name → what reading it grants, for every hub, cluster and project in the inventory."""

    grants: Mapping[str, ReadScope]

    @classmethod
    def load(cls, session: Session) -> ResourceIndex:
        grants: dict[str, ReadScope] = {}
        hub_clusters: dict[str, set[int]] = {}
        for cluster_id, cluster, hub in session.exec(
            select(col(Cluster.id), col(Cluster.name), col(Hub.name)).join(Hub, col(Hub.id) == Cluster.hub_id)
        ).all():
            assert cluster_id is not None  # a stored row has its key
            grants[cluster_resource(hub, cluster)] = ReadScope(cluster_ids=frozenset({cluster_id}))
            hub_clusters.setdefault(hub, set()).add(cluster_id)
        for hub, cluster_ids in hub_clusters.items():
            grants[hub_resource(hub)] = ReadScope(cluster_ids=frozenset(cluster_ids))
        for project_id, namespace, cluster, hub in session.exec(
            select(col(ResearchProject.id), col(ResearchProject.namespace), col(Cluster.name), col(Hub.name))
            .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
            .join(Hub, col(Hub.id) == Cluster.hub_id)
        ).all():
            assert project_id is not None  # a stored row has its key
            grants[project_resource(hub, cluster, namespace)] = ReadScope(project_ids=frozenset({project_id}))
        return cls(grants)

    def scope_for(self, resource_names: Iterable[str]) -> ReadScope:
        """The union of what the named resources grant; names unknown to the inventory grant nothing."""
        project_ids: set[int] = set()
        cluster_ids: set[int] = set()
        for name in resource_names:
            grant = self.grants.get(name)
            if grant is not None:
                project_ids |= grant.project_ids
                cluster_ids |= grant.cluster_ids
        return ReadScope(project_ids=frozenset(project_ids), cluster_ids=frozenset(cluster_ids))
