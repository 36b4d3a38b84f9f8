"""Workloads as the site shows them, filtered by the caller's :class:`ReadScope`.

A workload is visible through its research project (``project_id``): a project grant shows that
project's workloads, a cluster grant every workload on that cluster (including those whose project
the inventory does not know yet, e.g. from alerts of a cluster no source polls), admins all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import ColumnElement, Select, false, or_, select, true
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.paging import InvalidQuery, Page, PageRequest, fetch_page, like_pattern, order_by_key
from domain.inventory.queries import NotFound
from domain.inventory.visibility import projects_visible
from domain.models import Cluster, Gpu, ResearchProject, Workload, WorkloadRead

WorkloadState = Literal["open", "closed"]

_SORT = {
    "started": Workload.started_at,
    "ended": Workload.ended_at,
    "cluster": Workload.cluster,
    "namespace": Workload.namespace,
    "pod": Workload.pod,
    "util_avg": Workload.util_avg,
    "util_max": Workload.util_max,
    "energy": Workload.energy_wh,
    "source": Workload.source,
    "_tiebreak": (Workload.id,),
}


SORT_KEYS = tuple(key for key in _SORT if not key.startswith("_"))
"""The sort keys the list accepts (prefix ``-`` for descending), for validation and documentation."""


def workloads_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    projects = select(col(ResearchProject.id)).where(projects_visible(scope))
    clusters = select(col(Cluster.name)).where(col(Cluster.id).in_(scope.cluster_ids))
    return or_(col(Workload.project_id).in_(projects), col(Workload.cluster).in_(clusters))


def trace_url(template: str | None, trace_id: str) -> str | None:
    """The trace in the configured tracing UI; plain replacement, so braces elsewhere are kept as they are."""
    return template.replace("{trace_id}", trace_id) if template else None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _stmt(scope: ReadScope) -> Select[Workload, int | None]:
    return (
        select(Workload, col(Gpu.id))
        .outerjoin(Gpu, col(Gpu.uuid) == col(Workload.gpu_uuid))
        .where(workloads_visible(scope))
    )


def _read(row: Workload, gpu_id: int | None, template: str | None) -> WorkloadRead:
    duration = (row.ended_at - row.started_at).total_seconds() if row.ended_at is not None else None
    return WorkloadRead.model_validate(
        row, update={"gpu_id": gpu_id, "duration_seconds": duration, "trace_url": trace_url(template, row.trace_id)}
    )


def list_workloads(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    project_id: int | None = None,
    gpu_id: int | None = None,
    cluster_id: int | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    q: str | None = None,
    sort: str | None = None,
    trace_url_template: str | None = None,
) -> Page[WorkloadRead]:
    """Workloads newest first; ``since``/``until`` (naive means UTC) keep those overlapping the interval."""
    since, until = _aware(since), _aware(until)
    stmt = _stmt(scope)
    if project_id is not None:
        stmt = stmt.where(col(Workload.project_id) == project_id)
    if gpu_id is not None:
        stmt = stmt.where(
            col(Workload.gpu_uuid) == select(col(Gpu.uuid)).where(col(Gpu.id) == gpu_id).scalar_subquery()
        )
    if cluster_id is not None:
        stmt = stmt.where(
            col(Workload.cluster) == select(col(Cluster.name)).where(col(Cluster.id) == cluster_id).scalar_subquery()
        )
    if state == "open":
        stmt = stmt.where(col(Workload.ended_at).is_(None))
    elif state == "closed":
        stmt = stmt.where(col(Workload.ended_at).is_not(None))
    elif state:
        raise InvalidQuery("state: one of open, closed")
    if since is not None and until is not None and until < since:
        stmt = stmt.where(false())  # an empty range holds no workload
    if until is not None:
        stmt = stmt.where(col(Workload.started_at) <= until)
    if since is not None:
        stmt = stmt.where(or_(col(Workload.ended_at).is_(None), col(Workload.ended_at) >= since))
    if q:
        pattern = like_pattern(q)
        stmt = stmt.where(
            or_(
                col(Workload.pod).ilike(pattern, escape="\\"),
                col(Workload.namespace).ilike(pattern, escape="\\"),
            )
        )
    rows, total = fetch_page(session, order_by_key(stmt, sort, _SORT, "-started"), page)
    return Page([_read(r, g, trace_url_template) for r, g in rows], total, page.limit, page.offset)


def get_workload(
    session: Session, scope: ReadScope, workload_id: int, *, trace_url_template: str | None = None
) -> WorkloadRead:
    row = session.execute(_stmt(scope).where(col(Workload.id) == workload_id)).first()
    if row is None:
        raise NotFound(f"workload {workload_id}")
    return _read(row[0], row[1], trace_url_template)
