"""Scoped, filtered, sorted and paged reads of the inventory, in a constant number of queries.

Every function takes the caller's :class:`ReadScope`; a row outside it is indistinguishable from a
row that does not exist (``NotFound``), so identifiers cannot be probed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.paging import Page, PageRequest, fetch_page, like_pattern, order_by_key
from domain.inventory.visibility import (
    clusters_visible,
    gpus_visible,
    nodes_visible,
    projects_visible,
    slices_visible,
)
from domain.models import (
    Allocation,
    AllocationRead,
    Cluster,
    ClusterRead,
    Gpu,
    GpuRead,
    GpuSlice,
    GpuSliceRead,
    Hub,
    Node,
    NodeRead,
    ResearchProject,
    ResearchProjectRead,
)
from domain.statuses import Health


class NotFound(LookupError):
    """No such row, or not visible to the caller."""


# --- clusters -------------------------------------------------------------------------------------

_CLUSTER_SORT = {
    "name": Cluster.name,
    "hub": Hub.name,
    "status": Cluster.status,
    "nodes": Cluster.node_count,
    "gpus": Cluster.gpu_count,
    "last_poll": Cluster.last_poll_at,
    "_tiebreak": (Cluster.id,),
}


def _cluster_stmt(scope: ReadScope) -> Select[Cluster, str]:
    return select(Cluster, col(Hub.name)).join(Hub, col(Hub.id) == Cluster.hub_id).where(clusters_visible(scope))


def _cluster_reads(session: Session, scope: ReadScope, rows: list[Any]) -> list[ClusterRead]:
    """Clusters with their capacity (stored counts) and what of it the caller may see (three grouped counts)."""
    ids = [cluster.id for cluster, _ in rows]
    visible = {} if scope.everything or not ids else _visible_counts(session, scope, ids)
    reads = []
    for cluster, hub in rows:
        mine = visible.get(cluster.id, {})
        update = {
            "hub": hub,
            "visible_node_count": mine.get("nodes", cluster.node_count if scope.everything else 0),
            "visible_gpu_count": mine.get("gpus", cluster.gpu_count if scope.everything else 0),
            "visible_slice_count": mine.get("slices", cluster.slice_count if scope.everything else 0),
        }
        reads.append(ClusterRead.model_validate(cluster, update=update))
    return reads


def _visible_counts(session: Session, scope: ReadScope, cluster_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per cluster, the nodes, GPUs and MIG slices the caller may see: one pass over the clusters' rows."""
    gpu_seen = gpus_visible(scope)
    node_seen = or_(col(Node.cluster_id).in_(scope.cluster_ids), gpu_seen)
    stmt = (
        select(
            col(Node.cluster_id),
            func.count(func.distinct(col(Node.id))).filter(node_seen),
            func.count(func.distinct(col(Gpu.id))).filter(gpu_seen),
            func.count(func.distinct(col(GpuSlice.id))).filter(slices_visible(scope)),
        )
        .select_from(Node)
        .outerjoin(Gpu, col(Gpu.node_id) == Node.id)
        .outerjoin(GpuSlice, col(GpuSlice.gpu_id) == Gpu.id)
        .where(col(Node.cluster_id).in_(cluster_ids))
        .group_by(col(Node.cluster_id))
    )
    return {
        cluster_id: {"nodes": nodes, "gpus": gpus, "slices": slices}
        for cluster_id, nodes, gpus, slices in session.execute(stmt).all()
    }


def list_clusters(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    status: str | None = None,
    hub: str | None = None,
    q: str | None = None,
    sort: str | None = None,
) -> Page[ClusterRead]:
    stmt = _cluster_stmt(scope)
    if status:
        stmt = stmt.where(col(Cluster.status) == status)
    if hub:
        stmt = stmt.where(col(Hub.name) == hub)
    if q:
        stmt = stmt.where(col(Cluster.name).ilike(like_pattern(q), escape="\\"))
    rows, total = fetch_page(session, order_by_key(stmt, sort, _CLUSTER_SORT, "name"), page)
    return Page(_cluster_reads(session, scope, list(rows)), total, page.limit, page.offset)


def get_cluster(session: Session, scope: ReadScope, cluster_id: int) -> ClusterRead:
    row = session.execute(_cluster_stmt(scope).where(col(Cluster.id) == cluster_id)).first()
    if row is None:
        raise NotFound(f"cluster {cluster_id}")
    return _cluster_reads(session, scope, [row])[0]


# --- nodes ----------------------------------------------------------------------------------------

_NODE_SORT = {
    "hostname": Node.hostname,
    "cluster": Cluster.name,
    "model": Node.gpu_model,
    "gpus": Node.gpu_count,
    "health": Node.health,
    "last_seen": Node.last_seen,
    "_tiebreak": (Node.id,),
}


def _node_stmt(scope: ReadScope) -> Select[Node, str, str]:
    return (
        select(Node, col(Cluster.name), col(Hub.name))
        .join(Cluster, col(Cluster.id) == Node.cluster_id)
        .join(Hub, col(Hub.id) == Cluster.hub_id)
        .where(nodes_visible(scope))
    )


def _node_read(node: Node, cluster: str, hub: str) -> NodeRead:
    return NodeRead.model_validate(node, update={"cluster": cluster, "hub": hub})


def list_nodes(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    cluster_id: int | None = None,
    health: str | None = None,
    model: str | None = None,
    q: str | None = None,
    sort: str | None = None,
) -> Page[NodeRead]:
    stmt = _node_stmt(scope)
    if cluster_id is not None:
        stmt = stmt.where(col(Node.cluster_id) == cluster_id)
    if health:
        stmt = stmt.where(col(Node.health) == health)
    if model:
        stmt = stmt.where(col(Node.gpu_model) == model)
    if q:
        stmt = stmt.where(col(Node.hostname).ilike(like_pattern(q), escape="\\"))
    rows, total = fetch_page(session, order_by_key(stmt, sort, _NODE_SORT, "hostname"), page)
    return Page([_node_read(*row) for row in rows], total, page.limit, page.offset)


def get_node(session: Session, scope: ReadScope, node_id: int) -> NodeRead:
    row = session.execute(_node_stmt(scope).where(col(Node.id) == node_id)).first()
    if row is None:
        raise NotFound(f"node {node_id}")
    return _node_read(*row)


# --- GPUs -----------------------------------------------------------------------------------------

_GPU_SORT = {
    "uuid": Gpu.uuid,
    "node": Node.hostname,
    "cluster": Cluster.name,
    "index": Gpu.index,
    "model": Gpu.model,
    "utilization": Gpu.utilization,
    "memory": Gpu.memory_used_mib,
    "power": Gpu.power_watts,
    "temperature": Gpu.temperature_c,
    "health": Gpu.health,
    "_tiebreak": (Gpu.id,),
}


def _gpu_stmt(scope: ReadScope) -> Select[Gpu, str, int | None, str, str]:
    return (
        select(Gpu, col(Node.hostname), col(Cluster.id), col(Cluster.name), col(Hub.name))
        .join(Node, col(Node.id) == Gpu.node_id)
        .join(Cluster, col(Cluster.id) == Node.cluster_id)
        .join(Hub, col(Hub.id) == Cluster.hub_id)
        .where(gpus_visible(scope))
    )


def _open_allocations(session: Session, scope: ReadScope, gpu_ids: Iterable[int]) -> dict[int, tuple[list[str], int]]:
    """Per GPU: the namespaces of the visible projects holding it or its slices now, and how many others do.

    A shared MIG GPU is visible to each of its tenants; a tenant learns that it is shared, never with whom.
    """
    ids = list(gpu_ids)
    holders: dict[int, tuple[list[str], int]] = {}
    if not ids:
        return holders
    rows = session.execute(
        select(col(Allocation.gpu_id), col(ResearchProject.id), col(ResearchProject.namespace), projects_visible(scope))
        .join(ResearchProject, col(ResearchProject.id) == Allocation.project_id)
        .where(col(Allocation.gpu_id).in_(ids), col(Allocation.until).is_(None))
        .distinct()
        .order_by(ResearchProject.namespace)
    ).all()
    shown: dict[int, list[str]] = defaultdict(list)
    hidden: dict[int, set[int]] = defaultdict(set)
    for gpu_id, project_id, namespace, visible in rows:
        if visible:
            if namespace not in shown[gpu_id]:
                shown[gpu_id].append(namespace)
        else:
            hidden[gpu_id].add(project_id)
    return {gpu_id: (shown.get(gpu_id, []), len(hidden.get(gpu_id, ()))) for gpu_id in set(shown) | set(hidden)}


def _gpu_reads(session: Session, scope: ReadScope, rows: list[Any]) -> list[GpuRead]:
    holders = _open_allocations(session, scope, (gpu.id for gpu, *_ in rows))
    return [
        GpuRead.model_validate(
            gpu,
            update={
                "node": node,
                "cluster_id": cid,
                "cluster": cname,
                "hub": hub,
                "allocated_to": holders.get(gpu.id, ([], 0))[0],
                "other_projects": holders.get(gpu.id, ([], 0))[1],
            },
        )
        for gpu, node, cid, cname, hub in rows
    ]


def list_gpus(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    cluster_id: int | None = None,
    node_id: int | None = None,
    model: str | None = None,
    health: str | None = None,
    project_id: int | None = None,
    q: str | None = None,
    sort: str | None = None,
) -> Page[GpuRead]:
    stmt = _gpu_stmt(scope)
    if cluster_id is not None:
        stmt = stmt.where(col(Node.cluster_id) == cluster_id)
    if node_id is not None:
        stmt = stmt.where(col(Gpu.node_id) == node_id)
    if model:
        stmt = stmt.where(col(Gpu.model) == model)
    if health:
        stmt = stmt.where(col(Gpu.health) == health)
    if project_id is not None:
        stmt = stmt.where(
            exists().where(
                col(Allocation.gpu_id) == Gpu.id,
                col(Allocation.project_id) == project_id,
                col(Allocation.until).is_(None),
            )
        )
    if q:
        pattern = like_pattern(q)
        stmt = stmt.where(
            or_(col(Gpu.uuid).ilike(pattern, escape="\\"), col(Node.hostname).ilike(pattern, escape="\\"))
        )
    rows, total = fetch_page(session, order_by_key(stmt, sort, _GPU_SORT, "node"), page)
    return Page(_gpu_reads(session, scope, rows), total, page.limit, page.offset)


def get_gpu(session: Session, scope: ReadScope, gpu_id: int) -> GpuRead:
    row = session.execute(_gpu_stmt(scope).where(col(Gpu.id) == gpu_id)).first()
    if row is None:
        raise NotFound(f"gpu {gpu_id}")
    return _gpu_reads(session, scope, [row])[0]


def gpu_models(session: Session, scope: ReadScope) -> list[str]:
    stmt = (
        select(col(Gpu.model))
        .join(Node, col(Node.id) == Gpu.node_id)
        .where(gpus_visible(scope))
        .distinct()
        .order_by(col(Gpu.model))
    )
    return list(session.execute(stmt).scalars())


# --- MIG slices -----------------------------------------------------------------------------------

_SLICE_SORT = {
    "gpu": Gpu.uuid,
    "node": Node.hostname,
    "cluster": Cluster.name,
    "profile": GpuSlice.profile,
    "instance": GpuSlice.mig_instance_id,
    "utilization": GpuSlice.utilization,
    "health": GpuSlice.health,
    "_tiebreak": (GpuSlice.id,),
}


def _slice_stmt(scope: ReadScope) -> Select[Any]:
    def holders(visible: bool) -> Any:
        condition = projects_visible(scope) if visible else ~projects_visible(scope)
        return (
            select(col(ResearchProject.namespace) if visible else func.count(func.distinct(col(ResearchProject.id))))
            .join(Allocation, col(Allocation.project_id) == ResearchProject.id)
            .where(col(Allocation.slice_id) == GpuSlice.id, col(Allocation.until).is_(None), condition)
            .order_by(ResearchProject.namespace if visible else None)
            .limit(1)
            .scalar_subquery()
        )

    return (
        select(GpuSlice, col(Gpu.uuid), col(Node.hostname), col(Cluster.name), holders(True), holders(False))
        .join(Gpu, col(Gpu.id) == GpuSlice.gpu_id)
        .join(Node, col(Node.id) == Gpu.node_id)
        .join(Cluster, col(Cluster.id) == Node.cluster_id)
        .where(slices_visible(scope))
    )


def list_slices(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    cluster_id: int | None = None,
    gpu_id: int | None = None,
    profile: str | None = None,
    project_id: int | None = None,
    sort: str | None = None,
) -> Page[GpuSliceRead]:
    stmt = _slice_stmt(scope)
    if cluster_id is not None:
        stmt = stmt.where(col(Node.cluster_id) == cluster_id)
    if gpu_id is not None:
        stmt = stmt.where(col(GpuSlice.gpu_id) == gpu_id)
    if profile:
        stmt = stmt.where(col(GpuSlice.profile) == profile)
    if project_id is not None:
        stmt = stmt.where(
            exists().where(
                col(Allocation.slice_id) == GpuSlice.id,
                col(Allocation.project_id) == project_id,
                col(Allocation.until).is_(None),
            )
        )
    rows, total = fetch_page(session, order_by_key(stmt, sort, _SLICE_SORT, "gpu"), page)
    items = [
        GpuSliceRead.model_validate(
            s, update={"gpu_uuid": u, "node": n, "cluster": c, "allocated_to": a, "other_projects": others or 0}
        )
        for s, u, n, c, a, others in rows
    ]
    return Page(items, total, page.limit, page.offset)


# --- research projects ----------------------------------------------------------------------------

_PROJECT_SORT = {
    "namespace": ResearchProject.namespace,
    "cluster": Cluster.name,
    "quota": ResearchProject.gpu_quota,
    "allocated": ResearchProject.allocated_gpus,
    "last_seen": ResearchProject.last_seen,
    "_tiebreak": (ResearchProject.id,),
}


def _project_stmt(scope: ReadScope) -> Select[ResearchProject, str, str]:
    return (
        select(ResearchProject, col(Cluster.name), col(Hub.name))
        .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
        .join(Hub, col(Hub.id) == Cluster.hub_id)
        .where(projects_visible(scope))
    )


def _project_read(project: ResearchProject, cluster: str, hub: str) -> ResearchProjectRead:
    return ResearchProjectRead.model_validate(project, update={"cluster": cluster, "hub": hub})


def list_projects(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    cluster_id: int | None = None,
    q: str | None = None,
    sort: str | None = None,
) -> Page[ResearchProjectRead]:
    stmt = _project_stmt(scope)
    if cluster_id is not None:
        stmt = stmt.where(col(ResearchProject.cluster_id) == cluster_id)
    if q:
        stmt = stmt.where(col(ResearchProject.namespace).ilike(like_pattern(q), escape="\\"))
    rows, total = fetch_page(session, order_by_key(stmt, sort, _PROJECT_SORT, "namespace"), page)
    return Page([_project_read(*r) for r in rows], total, page.limit, page.offset)


def get_project(session: Session, scope: ReadScope, project_id: int) -> ResearchProjectRead:
    row = session.execute(_project_stmt(scope).where(col(ResearchProject.id) == project_id)).first()
    if row is None:
        raise NotFound(f"project {project_id}")
    return _project_read(*row)


# --- allocations ----------------------------------------------------------------------------------


def list_allocations(
    session: Session,
    scope: ReadScope,
    *,
    gpu_id: int | None = None,
    project_id: int | None = None,
    open_only: bool = True,
    limit: int = 200,
) -> list[AllocationRead]:
    """Allocations of a GPU or a project, restricted to projects the caller may read."""
    stmt = (
        select(Allocation, col(Gpu.uuid), col(ResearchProject.namespace))
        .join(Gpu, col(Gpu.id) == Allocation.gpu_id)
        .join(ResearchProject, col(ResearchProject.id) == Allocation.project_id)
        .where(projects_visible(scope))
        .order_by(col(Allocation.since).desc(), col(Allocation.id))
        .limit(limit)
    )
    if gpu_id is not None:
        stmt = stmt.where(col(Allocation.gpu_id) == gpu_id)
    if project_id is not None:
        stmt = stmt.where(col(Allocation.project_id) == project_id)
    if open_only:
        stmt = stmt.where(col(Allocation.until).is_(None))
    return [
        AllocationRead.model_validate(a, update={"gpu_uuid": u, "namespace": ns})
        for a, u, ns in session.execute(stmt).all()
    ]


# --- fleet summary --------------------------------------------------------------------------------


@dataclass
class FleetCounts:
    gpus: int = 0
    allocated: int = 0
    in_use: int = 0
    idle_allocated: int = 0
    failing: int = 0
    missing: int = 0


@dataclass
class FleetSummary:
    totals: FleetCounts
    by_cluster: list[tuple[str, int, FleetCounts]] = field(default_factory=list)
    by_model: list[tuple[str, FleetCounts]] = field(default_factory=list)
    top_projects: list[ResearchProjectRead] = field(default_factory=list)


def fleet_summary(session: Session, scope: ReadScope, *, idle_threshold_percent: float) -> FleetSummary:
    """GPU counts by state, per cluster and per model, in one aggregate query."""
    # derived tables joined once, rather than correlated EXISTS evaluated per GPU inside each FILTER
    held = select(col(Allocation.gpu_id).label("gpu_id")).where(col(Allocation.until).is_(None)).distinct().subquery()
    busy = (
        select(col(GpuSlice.gpu_id).label("gpu_id"))
        .where(col(GpuSlice.utilization) >= idle_threshold_percent)
        .distinct()
        .subquery()
    )
    allocated = held.c.gpu_id.is_not(None)
    in_use: ColumnElement[bool] = or_(col(Gpu.utilization) >= idle_threshold_percent, busy.c.gpu_id.is_not(None))
    live = col(Gpu.health) != Health.MISSING

    def count(condition: ColumnElement[bool]) -> Any:
        return func.count().filter(condition)

    stmt = (
        select(
            col(Cluster.id),
            col(Cluster.name),
            col(Gpu.model),
            func.count(),
            count(and_(live, allocated)),
            count(and_(live, in_use)),
            count(and_(live, allocated, ~in_use)),
            count(col(Gpu.health) == Health.FAILING),
            count(col(Gpu.health) == Health.MISSING),
        )
        .join(Node, col(Node.id) == Gpu.node_id)
        .join(Cluster, col(Cluster.id) == Node.cluster_id)
        .outerjoin(held, held.c.gpu_id == Gpu.id)
        .outerjoin(busy, busy.c.gpu_id == Gpu.id)
        .where(gpus_visible(scope))
        .group_by(col(Cluster.id), col(Cluster.name), col(Gpu.model))
    )
    totals = FleetCounts()
    clusters: dict[int, tuple[str, FleetCounts]] = {}
    models: dict[str, FleetCounts] = {}
    for cid, cname, model, *numbers in session.execute(stmt).all():
        per_cluster = clusters.setdefault(cid, (cname, FleetCounts()))[1]
        for bucket in (totals, per_cluster, models.setdefault(model, FleetCounts())):
            bucket.gpus += numbers[0]
            bucket.allocated += numbers[1]
            bucket.in_use += numbers[2]
            bucket.idle_allocated += numbers[3]
            bucket.failing += numbers[4]
            bucket.missing += numbers[5]
    top = list_projects(session, scope, PageRequest(limit=5), sort="-allocated").items
    return FleetSummary(
        totals=totals,
        by_cluster=sorted(((name, cid, c) for cid, (name, c) in clusters.items()), key=lambda r: r[0]),
        by_model=sorted(models.items()),
        top_projects=top,
    )


SORT_KEYS: dict[str, tuple[str, ...]] = {
    name: tuple(key for key in columns if not key.startswith("_"))
    for name, columns in (
        ("clusters", _CLUSTER_SORT),
        ("nodes", _NODE_SORT),
        ("gpus", _GPU_SORT),
        ("slices", _SLICE_SORT),
        ("projects", _PROJECT_SORT),
    )
}
"""The sort keys each list accepts (prefix ``-`` for descending), for validation and documentation."""
