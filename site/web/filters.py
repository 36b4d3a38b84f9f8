"""Filter and paging parameters, declared once per list and shared by its page, fragment and API route.

Each list is a dataclass whose fields are its query parameters; a route takes it as the ``filters``
dependency (:func:`filters_of`), so the page and the API of a list cannot drift apart, and the
OpenAPI document lists the same parameters the page accepts. ``fetch`` runs the list's one query in
the caller's scope. Filters on a cluster, node, GPU or project take an id or a name
(:mod:`domain.inventory.references`): ``?cluster=3`` and ``?cluster=moc-prod`` select the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, get_type_hints

from litestar.di import Provide
from litestar.params import QueryParameter
from sqlmodel import Session

from domain.access import ReadScope
from domain.inventory import Page, PageRequest
from domain.inventory.paging import MAX_LIMIT
from domain.inventory.queries import SORT_KEYS, list_clusters, list_gpus, list_nodes, list_projects, list_slices
from domain.inventory.references import ID_MAX, resolve_cluster, resolve_gpu, resolve_node, resolve_project
from domain.inventory.usage import UsagePoint, usage_series
from domain.models import (
    ClusterRead,
    FindingRead,
    GpuRead,
    GpuSliceRead,
    NodeRead,
    ResearchProjectRead,
    WorkloadRead,
)
from domain.notifications.queries import OUTBOX_STATUSES, OutboxRow, list_outbox
from domain.pipeline.queries import SORT_KEYS as FINDING_SORT_KEYS
from domain.pipeline.queries import STATUS_FILTERS, list_findings
from domain.workloads import SORT_KEYS as WORKLOAD_SORT_KEYS
from domain.workloads import list_workloads

RFC3339 = {"format": "date-time"}


def sort_parameter(keys: tuple[str, ...], default: str) -> QueryParameter:
    """A ``sort`` parameter whose schema lists the keys a list accepts (``-`` prefix: descending)."""
    return QueryParameter(
        pattern=f"^-?({'|'.join(keys)})$",
        description=f"One of {', '.join(keys)}; - for descending (default {default}).",
    )


def one_of(values: tuple[str, ...], description: str, *, name: str | None = None) -> QueryParameter:
    """A text parameter limited to ``values``; empty means no filter (a form's "any")."""
    return QueryParameter(name=name, pattern=f"^({'|'.join(values)}|)$", description=description)


def reference(noun: str, names: str) -> QueryParameter:
    """A parameter naming one row by id or by name (``names``: what a name may be)."""
    return QueryParameter(
        max_length=512, description=f"Only rows of this {noun}: its id, or {names} (one the caller may read)."
    )


def moment(name: str, value: str) -> datetime:
    """Parse an RFC 3339 timestamp; one without an offset is ambiguous and refused."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an RFC 3339 timestamp, e.g. 2026-11-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: include a UTC offset, e.g. 2026-11-01T00:00:00Z")
    return parsed


def optional_moment(name: str, value: str | None) -> datetime | None:
    return moment(name, value) if value is not None else None


Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Rows per page.")]
Offset = Annotated[int, QueryParameter(ge=0, le=ID_MAX, description="Rows to skip.")]
Search = Annotated[str | None, QueryParameter(description="Case-insensitive substring search.", max_length=200)]
TextFilter = Annotated[str | None, QueryParameter(max_length=253, description="Exact match.")]
Moment = Annotated[
    str | None, QueryParameter(schema_extra=RFC3339, description="RFC 3339 with offset, e.g. 2026-11-01T00:00:00Z.")
]
ClusterRef = Annotated[str | None, reference("cluster", "its name or hub/name")]
NodeRef = Annotated[str | None, reference("node", "its host name or cluster/hostname")]
GpuRef = Annotated[str | None, reference("GPU", "its UUID")]
ProjectRef = Annotated[str | None, reference("research project", "its namespace or cluster/namespace")]


def filters_of(declaration: type) -> dict[str, Provide]:
    """The ``filters`` dependency of a route listing with ``declaration``."""
    return {"filters": Provide(declaration, sync_to_thread=False)}


def query_names(declaration: type) -> set[str]:
    """The query parameter names a declaration accepts (a field's own name unless its parameter renames it)."""
    hints = get_type_hints(declaration, include_extras=True)
    names = set()
    for item in fields(declaration):
        metadata = getattr(hints[item.name], "__metadata__", ())
        renamed = next((m.name for m in metadata if isinstance(m, QueryParameter) and m.name), None)
        names.add(renamed or item.name)
    return names


@dataclass(frozen=True, kw_only=True)
class Paging:
    """Every list pages the same way."""

    limit: Limit = 50
    offset: Offset = 0

    @property
    def page(self) -> PageRequest:
        return PageRequest(limit=self.limit, offset=self.offset)


@dataclass(frozen=True, kw_only=True)
class ClusterFilter(Paging):
    """Clusters: ``/clusters``, ``/api/v1/clusters``."""

    sort: Annotated[str | None, sort_parameter(SORT_KEYS["clusters"], "name")] = None
    q: Search = None
    status: TextFilter = None
    hub: TextFilter = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[ClusterRead]:
        return list_clusters(db, scope, self.page, status=self.status, hub=self.hub, q=self.q, sort=self.sort)


@dataclass(frozen=True, kw_only=True)
class NodeFilter(Paging):
    """Nodes: ``/nodes``, a cluster's page, ``/api/v1/nodes``."""

    sort: Annotated[str | None, sort_parameter(SORT_KEYS["nodes"], "hostname")] = None
    q: Search = None
    cluster: ClusterRef = None
    health: TextFilter = None
    model: TextFilter = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[NodeRead]:
        return list_nodes(
            db,
            scope,
            self.page,
            cluster_id=resolve_cluster(db, scope, self.cluster),
            health=self.health,
            model=self.model,
            q=self.q,
            sort=self.sort,
        )


@dataclass(frozen=True, kw_only=True)
class GpuFilter(Paging):
    """GPUs: ``/gpus``, a node's page, ``/api/v1/gpus``."""

    sort: Annotated[str | None, sort_parameter(SORT_KEYS["gpus"], "node")] = None
    q: Search = None
    cluster: ClusterRef = None
    node: NodeRef = None
    model: TextFilter = None
    health: TextFilter = None
    project: ProjectRef = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[GpuRead]:
        return list_gpus(
            db,
            scope,
            self.page,
            cluster_id=resolve_cluster(db, scope, self.cluster),
            node_id=resolve_node(db, scope, self.node),
            model=self.model,
            health=self.health,
            project_id=resolve_project(db, scope, self.project),
            q=self.q,
            sort=self.sort,
        )


@dataclass(frozen=True, kw_only=True)
class SliceFilter(Paging):
    """MIG slices: ``/slices``, ``/api/v1/slices``."""

    sort: Annotated[str | None, sort_parameter(SORT_KEYS["slices"], "gpu")] = None
    cluster: ClusterRef = None
    gpu: GpuRef = None
    profile: TextFilter = None
    project: ProjectRef = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[GpuSliceRead]:
        return list_slices(
            db,
            scope,
            self.page,
            cluster_id=resolve_cluster(db, scope, self.cluster),
            gpu_id=resolve_gpu(db, scope, self.gpu),
            profile=self.profile,
            project_id=resolve_project(db, scope, self.project),
            sort=self.sort,
        )


@dataclass(frozen=True, kw_only=True)
class ProjectFilter(Paging):
    """Research projects: ``/projects``, ``/api/v1/projects``."""

    sort: Annotated[str | None, sort_parameter(SORT_KEYS["projects"], "namespace")] = None
    q: Search = None
    cluster: ClusterRef = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[ResearchProjectRead]:
        return list_projects(
            db, scope, self.page, cluster_id=resolve_cluster(db, scope, self.cluster), q=self.q, sort=self.sort
        )


@dataclass(frozen=True, kw_only=True)
class AccessFilter(Paging):
    """Projects and who may read them: ``/admin/access`` (a shorter page: each row lists grants)."""

    limit: Limit = 25
    q: Search = None
    cluster: ClusterRef = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[ResearchProjectRead]:
        cluster_id = resolve_cluster(db, scope, self.cluster)
        return list_projects(db, scope, self.page, cluster_id=cluster_id, q=self.q, sort="cluster")


@dataclass(frozen=True, kw_only=True)
class FindingFilter(Paging):
    """Findings: ``/findings``, ``/api/v1/findings``."""

    sort: Annotated[str | None, sort_parameter(FINDING_SORT_KEYS, "-last_seen")] = None
    q: Search = None
    status: Annotated[str | None, one_of(STATUS_FILTERS, "Default: active.")] = None
    severity: TextFilter = None
    kind: TextFilter = None
    cluster: ClusterRef = None
    project: ProjectRef = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[FindingRead]:
        return list_findings(
            db,
            scope,
            self.page,
            status=self.status or None,
            kind=self.kind,
            severity=self.severity,
            cluster_id=resolve_cluster(db, scope, self.cluster),
            project_id=resolve_project(db, scope, self.project),
            q=self.q,
            sort=self.sort,
        )


@dataclass(frozen=True, kw_only=True)
class WorkloadFilter(Paging):
    """Workloads (pods on GPUs, start to end): ``/workloads``, ``/api/v1/workloads``.

    ``since``/``until`` keep the workloads overlapping that interval.
    """

    sort: Annotated[str | None, sort_parameter(WORKLOAD_SORT_KEYS, "-started")] = None
    q: Search = None
    project: ProjectRef = None
    gpu: GpuRef = None
    cluster: ClusterRef = None
    workload_state: Annotated[str | None, one_of(("open", "closed"), "open or closed.", name="state")] = None
    since: Moment = None
    until: Moment = None

    def fetch(self, db: Session, scope: ReadScope, *, trace_url_template: str | None) -> Page[WorkloadRead]:
        return list_workloads(
            db,
            scope,
            self.page,
            project_id=resolve_project(db, scope, self.project),
            gpu_id=resolve_gpu(db, scope, self.gpu),
            cluster_id=resolve_cluster(db, scope, self.cluster),
            state=self.workload_state or None,
            since=optional_moment("since", self.since),
            until=optional_moment("until", self.until),
            q=self.q,
            sort=self.sort,
            trace_url_template=trace_url_template,
        )


@dataclass(frozen=True, kw_only=True)
class OutboxFilter(Paging):
    """Notices sent and to send: ``/notifications``."""

    status: Annotated[str | None, one_of(OUTBOX_STATUSES, "pending, sent, failed or all.")] = None

    def fetch(self, db: Session, scope: ReadScope) -> Page[OutboxRow]:
        return list_outbox(db, scope, self.page, status=self.status or "all")


@dataclass(frozen=True, kw_only=True)
class UsageFilter:
    """Usage over time of the fleet or one subject: ``/api/v1/usage``."""

    since: Annotated[str, QueryParameter(schema_extra=RFC3339, description="Start of the range, RFC 3339 with offset.")]
    until: Annotated[str | None, QueryParameter(schema_extra=RFC3339, description="End of the range, exclusive.")] = (
        None
    )
    cluster: ClusterRef = None
    node: NodeRef = None
    gpu: GpuRef = None
    project: ProjectRef = None

    def fetch(self, db: Session, scope: ReadScope, *, bucket_seconds: int) -> list[UsagePoint]:
        start = moment("since", self.since)
        end = optional_moment("until", self.until)
        if end is not None and end <= start:
            return []  # an empty range has no buckets
        return usage_series(
            db,
            scope,
            since=start,
            until=end,
            bucket_seconds=bucket_seconds,
            cluster_id=resolve_cluster(db, scope, self.cluster),
            node_id=resolve_node(db, scope, self.node),
            gpu_id=resolve_gpu(db, scope, self.gpu),
            project_id=resolve_project(db, scope, self.project),
        )
