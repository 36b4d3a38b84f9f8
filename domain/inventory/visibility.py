"""Turn a :class:`ReadScope` into SQL filters, so unauthorised rows never leave the database.

A researcher granted a project sees that project, the GPUs and slices it holds now, their nodes,
and the clusters they run on; a cluster grant shows everything of that cluster; admins see all.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, or_, select, true

from domain.access import ReadScope
from domain.models import Allocation, Cluster, Gpu, GpuSlice, Node, ResearchProject


def projects_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    return or_(
        ResearchProject.id.in_(scope.project_ids),  # type: ignore[union-attr]
        ResearchProject.cluster_id.in_(scope.cluster_ids),  # type: ignore[attr-defined]
    )


def _visible_project_ids(scope: ReadScope):  # type: ignore[no-untyped-def]
    return select(ResearchProject.id).where(projects_visible(scope))


def clusters_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    granted_project_clusters = select(ResearchProject.cluster_id).where(
        ResearchProject.id.in_(scope.project_ids)  # type: ignore[union-attr]
    )
    return or_(Cluster.id.in_(scope.cluster_ids), Cluster.id.in_(granted_project_clusters))  # type: ignore[union-attr]


def gpus_visible(scope: ReadScope) -> ColumnElement[bool]:
    """Needs ``Node`` joined (for the cluster)."""
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    held = select(Allocation.gpu_id).where(
        Allocation.until.is_(None),  # type: ignore[union-attr]
        Allocation.project_id.in_(_visible_project_ids(scope)),  # type: ignore[attr-defined]
    )
    return or_(Node.cluster_id.in_(scope.cluster_ids), Gpu.id.in_(held))  # type: ignore[attr-defined,union-attr]


def nodes_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    hosting = select(Gpu.node_id).join(Node, Node.id == Gpu.node_id).where(gpus_visible(scope))
    return or_(Node.cluster_id.in_(scope.cluster_ids), Node.id.in_(hosting))  # type: ignore[attr-defined,union-attr]


def slices_visible(scope: ReadScope) -> ColumnElement[bool]:
    """Needs ``Gpu`` and ``Node`` joined."""
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    held = select(Allocation.slice_id).where(
        Allocation.until.is_(None),  # type: ignore[union-attr]
        Allocation.slice_id.is_not(None),  # type: ignore[union-attr]
        Allocation.project_id.in_(_visible_project_ids(scope)),  # type: ignore[attr-defined]
    )
    return or_(Node.cluster_id.in_(scope.cluster_ids), GpuSlice.id.in_(held))  # type: ignore[attr-defined,union-attr]
