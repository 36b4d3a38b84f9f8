"""Turn a :class:`ReadScope` into SQL filters, so unauthorised rows never leave the database.

A researcher granted a project sees that project, the GPUs and slices it holds now, their nodes,
and the clusters they run on; a cluster grant shows everything of that cluster; admins see all.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, false, or_, select, true
from sqlmodel import col

from domain.access import ReadScope
from domain.models import Allocation, Cluster, Gpu, GpuSlice, Node, ResearchProject


def projects_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    return or_(
        col(ResearchProject.id).in_(scope.project_ids),
        col(ResearchProject.cluster_id).in_(scope.cluster_ids),
    )


def _visible_project_ids(scope: ReadScope) -> Select[int | None]:
    return select(col(ResearchProject.id)).where(projects_visible(scope))


def clusters_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    granted_project_clusters = select(col(ResearchProject.cluster_id)).where(
        col(ResearchProject.id).in_(scope.project_ids)
    )
    return or_(col(Cluster.id).in_(scope.cluster_ids), col(Cluster.id).in_(granted_project_clusters))


def gpus_visible(scope: ReadScope) -> ColumnElement[bool]:
    """Needs ``Node`` joined (for the cluster)."""
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    held = select(col(Allocation.gpu_id)).where(
        col(Allocation.until).is_(None),
        col(Allocation.project_id).in_(_visible_project_ids(scope)),
    )
    return or_(col(Node.cluster_id).in_(scope.cluster_ids), col(Gpu.id).in_(held))


def nodes_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    hosting = select(col(Gpu.node_id)).join(Node, col(Node.id) == Gpu.node_id).where(gpus_visible(scope))
    return or_(col(Node.cluster_id).in_(scope.cluster_ids), col(Node.id).in_(hosting))


def slices_visible(scope: ReadScope) -> ColumnElement[bool]:
    """Needs ``Gpu`` and ``Node`` joined."""
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    held = select(col(Allocation.slice_id)).where(
        col(Allocation.until).is_(None),
        col(Allocation.slice_id).is_not(None),
        col(Allocation.project_id).in_(_visible_project_ids(scope)),
    )
    return or_(col(Node.cluster_id).in_(scope.cluster_ids), col(GpuSlice.id).in_(held))
