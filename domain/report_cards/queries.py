"""Report cards read from the database, filtered by the caller's :class:`ReadScope`.

A workload's card covers its workload run: the visible workloads of the same cluster, namespace and pod
that overlap it (one per device the pod held). A project's card for a month covers the visible
workloads of the project that started in that month (a run is counted in the month it started).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.paging import InvalidQuery
from domain.inventory.queries import NotFound, get_project
from domain.ledger.statements import StatementError, month_bounds
from domain.models import Workload
from domain.models.base import table_of
from domain.report_cards.cards import ReportCard, group_workloads, project_card, workload_card
from domain.report_cards.usage import usage_from_row
from domain.workloads import workloads_visible

_COLUMNS = (
    "id",
    "cluster",
    "namespace",
    "pod",
    "gpu_uuid",
    "mig_instance_id",
    "gpu_model",
    "started_at",
    "ended_at",
    "project_id",
    "seconds",
    "gpu_seconds",
    "idle_gpu_seconds",
    "util_seconds",
    "util_known_seconds",
    "util_max",
    "memory_max_mib",
    "memory_total_mib",
    "energy_wh",
    "profiling",
    "profiling_missing",
)


def _select() -> Any:
    table = table_of(Workload)
    return select(*(table.c[name] for name in _COLUMNS))


def run_card_of(db: Session, scope: ReadScope, workload_id: int, now: datetime | None = None) -> ReportCard:
    """The card of the workload run workload ``workload_id`` belongs to; NotFound when it is not visible."""
    now = now or datetime.now(UTC)
    anchor = db.execute(_select().where(Workload.id == workload_id, workloads_visible(scope))).first()
    if anchor is None:
        raise NotFound(f"workload {workload_id}")
    end = anchor.ended_at or now
    rows = db.execute(
        _select().where(
            Workload.cluster == anchor.cluster,
            Workload.namespace == anchor.namespace,
            Workload.pod == anchor.pod,
            Workload.started_at <= end,
            or_(col(Workload.ended_at).is_(None), col(Workload.ended_at) >= anchor.started_at),
            workloads_visible(scope),
        )
    ).all()
    usages = [usage_from_row(row) for row in rows]
    for run in group_workloads(usages, now):
        if any(d.workload_id == workload_id for d in run):
            return workload_card(run, now)
    raise NotFound(f"workload {workload_id}")  # unreachable: the anchor is in one run


def latest_workload_id(db: Session, scope: ReadScope, namespace: str, pod: str, cluster: str | None = None) -> int:
    """The newest visible workload of ``namespace/pod`` (on ``cluster``, if given)."""
    stmt = select(col(Workload.id)).where(
        col(Workload.namespace) == namespace, col(Workload.pod) == pod, workloads_visible(scope)
    )
    if cluster:
        stmt = stmt.where(col(Workload.cluster) == cluster)
    found = db.execute(stmt.order_by(col(Workload.started_at).desc(), col(Workload.id).desc())).first()
    if found is None:
        raise NotFound(f"workload {namespace}/{pod}" + (f" on {cluster}" if cluster else ""))
    return int(found[0])


def project_month_card(
    db: Session, scope: ReadScope, project_id: int, month: str, now: datetime | None = None
) -> ReportCard:
    """The project's card for ``month`` (``YYYY-MM``, UTC); NotFound when the project is not visible."""
    try:
        start, end = month_bounds(month)
    except StatementError as exc:
        raise InvalidQuery(str(exc)) from None
    project = get_project(db, scope, project_id)
    rows = db.execute(
        _select().where(
            Workload.project_id == project_id,
            Workload.started_at >= start,
            Workload.started_at < end,
            workloads_visible(scope),
        )
    ).all()
    usages = [usage_from_row(row) for row in rows]
    return project_card(project.namespace, month, usages, now)
