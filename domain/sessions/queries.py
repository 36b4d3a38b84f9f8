"""Workload sessions as the site shows them, filtered by the caller's :class:`ReadScope`.

A session is visible through its research project (``project_id``): a project grant shows that
project's sessions, a cluster grant every session on that cluster (including those whose project
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
from domain.models import Cluster, Gpu, ResearchProject, WorkloadSession, WorkloadSessionRead

SessionState = Literal["open", "closed"]

_SORT = {
    "started": WorkloadSession.started_at,
    "ended": WorkloadSession.ended_at,
    "cluster": WorkloadSession.cluster,
    "namespace": WorkloadSession.namespace,
    "pod": WorkloadSession.pod,
    "util_avg": WorkloadSession.util_avg,
    "util_max": WorkloadSession.util_max,
    "energy": WorkloadSession.energy_wh,
    "source": WorkloadSession.source,
    "_tiebreak": (WorkloadSession.id,),
}


SORT_KEYS = tuple(key for key in _SORT if not key.startswith("_"))
"""The sort keys the list accepts (prefix ``-`` for descending), for validation and documentation."""


def sessions_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    projects = select(col(ResearchProject.id)).where(projects_visible(scope))
    clusters = select(col(Cluster.name)).where(col(Cluster.id).in_(scope.cluster_ids))
    return or_(col(WorkloadSession.project_id).in_(projects), col(WorkloadSession.cluster).in_(clusters))


def trace_url(template: str | None, trace_id: str) -> str | None:
    """The trace in the configured tracing UI; plain replacement, so braces elsewhere are kept as they are."""
    return template.replace("{trace_id}", trace_id) if template else None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _stmt(scope: ReadScope) -> Select[WorkloadSession, int | None]:
    return (
        select(WorkloadSession, col(Gpu.id))
        .outerjoin(Gpu, col(Gpu.uuid) == col(WorkloadSession.gpu_uuid))
        .where(sessions_visible(scope))
    )


def _read(row: WorkloadSession, gpu_id: int | None, template: str | None) -> WorkloadSessionRead:
    duration = (row.ended_at - row.started_at).total_seconds() if row.ended_at is not None else None
    return WorkloadSessionRead.model_validate(
        row, update={"gpu_id": gpu_id, "duration_seconds": duration, "trace_url": trace_url(template, row.trace_id)}
    )


def list_sessions(
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
) -> Page[WorkloadSessionRead]:
    """Sessions newest first; ``since``/``until`` (naive means UTC) keep those overlapping the interval."""
    since, until = _aware(since), _aware(until)
    stmt = _stmt(scope)
    if project_id is not None:
        stmt = stmt.where(col(WorkloadSession.project_id) == project_id)
    if gpu_id is not None:
        stmt = stmt.where(
            col(WorkloadSession.gpu_uuid) == select(col(Gpu.uuid)).where(col(Gpu.id) == gpu_id).scalar_subquery()
        )
    if cluster_id is not None:
        stmt = stmt.where(
            col(WorkloadSession.cluster)
            == select(col(Cluster.name)).where(col(Cluster.id) == cluster_id).scalar_subquery()
        )
    if state == "open":
        stmt = stmt.where(col(WorkloadSession.ended_at).is_(None))
    elif state == "closed":
        stmt = stmt.where(col(WorkloadSession.ended_at).is_not(None))
    elif state:
        raise InvalidQuery("state: one of open, closed")
    if since is not None and until is not None and until < since:
        stmt = stmt.where(false())  # an empty range holds no session
    if until is not None:
        stmt = stmt.where(col(WorkloadSession.started_at) <= until)
    if since is not None:
        stmt = stmt.where(or_(col(WorkloadSession.ended_at).is_(None), col(WorkloadSession.ended_at) >= since))
    if q:
        pattern = like_pattern(q)
        stmt = stmt.where(
            or_(
                col(WorkloadSession.pod).ilike(pattern, escape="\\"),
                col(WorkloadSession.namespace).ilike(pattern, escape="\\"),
            )
        )
    rows, total = fetch_page(session, order_by_key(stmt, sort, _SORT, "-started"), page)
    return Page([_read(r, g, trace_url_template) for r, g in rows], total, page.limit, page.offset)


def get_session(
    session: Session, scope: ReadScope, session_id: int, *, trace_url_template: str | None = None
) -> WorkloadSessionRead:
    row = session.execute(_stmt(scope).where(col(WorkloadSession.id) == session_id)).first()
    if row is None:
        raise NotFound(f"session {session_id}")
    return _read(row[0], row[1], trace_url_template)
