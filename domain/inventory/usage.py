"""Usage over time from the rollups, for the fleet, a cluster, a node, a GPU or a research project.

Rows a caller may not read never enter the sums: outside clusters granted whole, only the rollups of
the caller's visible projects count, so a researcher on a shared node sees their own usage only.
Utilisation is averaged over allocatable units: whole GPUs, and the slices of MIG GPUs (a MIG GPU's
own row carries power and temperature but no utilisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, or_, select, true
from sqlmodel import Session

from domain.access import ReadScope
from domain.inventory.visibility import projects_visible
from domain.models import Cluster, Gpu, Node, ResearchProject, UsageRollup


@dataclass(frozen=True, slots=True)
class UsagePoint:
    bucket_start: datetime
    util_avg: float
    util_max: float
    memory_mib: float
    """Framebuffer in use, summed over the GPUs and slices."""
    power_watts: float
    """Average draw, summed over the GPUs."""
    temperature_max_c: float
    gpus_allocated: float
    """Average number of GPUs held in the bucket (slices count as fractions)."""
    gpu_seconds_allocated: float
    gpu_seconds_idle: float
    energy_wh: float


@dataclass(frozen=True, slots=True)
class UsageTotals:
    gpu_hours: float
    idle_gpu_hours: float
    energy_kwh: float

    @property
    def idle_share(self) -> float:
        return self.idle_gpu_hours / self.gpu_hours if self.gpu_hours else 0.0


def _readable(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    visible_projects = select(ResearchProject.id).where(projects_visible(scope))
    return or_(
        Node.cluster_id.in_(scope.cluster_ids),  # type: ignore[attr-defined]
        UsageRollup.project_id.in_(visible_projects),  # type: ignore[attr-defined]
    )


def usage_series(
    session: Session,
    scope: ReadScope,
    *,
    since: datetime,
    bucket_seconds: int,
    until: datetime | None = None,
    cluster_id: int | None = None,
    node_id: int | None = None,
    gpu_id: int | None = None,
    project_id: int | None = None,
) -> list[UsagePoint]:
    """One point per bucket, oldest first; the subject filters combine."""
    unit = or_(UsageRollup.slice_id != 0, Gpu.mig_mode.is_(False))  # type: ignore[attr-defined]
    held = UsageRollup.project_id != 0
    util_known = func.sum(case((unit, UsageRollup.seconds_util_known), else_=0))
    stmt: Any = (
        select(
            UsageRollup.bucket_start,
            func.sum(case((unit, UsageRollup.util_seconds), else_=0)) / func.nullif(util_known, 0),
            func.max(UsageRollup.util_max),
            func.sum(UsageRollup.memory_mib_seconds) / bucket_seconds,
            func.sum(UsageRollup.energy_wh) * 3600 / bucket_seconds,
            func.max(UsageRollup.temperature_max_c),
            func.sum(case((held, UsageRollup.seconds), else_=0)),
            func.sum(case((held, UsageRollup.seconds_idle), else_=0)),
            func.sum(UsageRollup.energy_wh),
        )
        .join(Gpu, Gpu.id == UsageRollup.gpu_id)
        .join(Node, Node.id == Gpu.node_id)
        .where(UsageRollup.bucket_start >= since, _readable(scope))
        .group_by(UsageRollup.bucket_start)
        .order_by(UsageRollup.bucket_start)
    )
    if until is not None:
        stmt = stmt.where(UsageRollup.bucket_start < until)
    for value, column in (
        (cluster_id, Node.cluster_id),
        (node_id, Gpu.node_id),
        (gpu_id, UsageRollup.gpu_id),
        (project_id, UsageRollup.project_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return [
        UsagePoint(
            bucket,
            avg or 0.0,
            peak or 0.0,
            memory or 0.0,
            power or 0.0,
            temperature or 0.0,
            (allocated or 0.0) / bucket_seconds,
            allocated or 0.0,
            idle or 0.0,
            energy or 0.0,
        )
        for bucket, avg, peak, memory, power, temperature, allocated, idle, energy in session.execute(stmt).all()
    ]


def totals(points: list[UsagePoint]) -> UsageTotals:
    return UsageTotals(
        gpu_hours=sum(p.gpu_seconds_allocated for p in points) / 3600,
        idle_gpu_hours=sum(p.gpu_seconds_idle for p in points) / 3600,
        energy_kwh=sum(p.energy_wh for p in points) / 1000,
    )


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    project_id: int
    namespace: str
    cluster: str
    gpu_quota: float | None
    gpu_hours: float
    idle_gpu_hours: float
    energy_kwh: float
    util_avg: float

    @property
    def idle_share(self) -> float:
        return self.idle_gpu_hours / self.gpu_hours if self.gpu_hours else 0.0


def usage_by_project(
    session: Session,
    scope: ReadScope,
    *,
    since: datetime,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[ProjectUsage]:
    """GPU-hours, idle GPU-hours and energy per visible project in a period, most GPU-hours first."""
    weight = func.sum(UsageRollup.seconds_util_known)
    stmt: Any = (
        select(
            ResearchProject.id,
            ResearchProject.namespace,
            Cluster.name,
            ResearchProject.gpu_quota,
            func.sum(UsageRollup.seconds),
            func.sum(UsageRollup.seconds_idle),
            func.sum(UsageRollup.energy_wh),
            func.sum(UsageRollup.util_seconds) / func.nullif(weight, 0),
        )
        .join(ResearchProject, ResearchProject.id == UsageRollup.project_id)
        .join(Cluster, Cluster.id == ResearchProject.cluster_id)
        .where(UsageRollup.bucket_start >= since, projects_visible(scope))
        .group_by(ResearchProject.id, ResearchProject.namespace, Cluster.name, ResearchProject.gpu_quota)
        .order_by(func.sum(UsageRollup.seconds).desc(), ResearchProject.id)
    )
    if until is not None:
        stmt = stmt.where(UsageRollup.bucket_start < until)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        ProjectUsage(pid, ns, cluster, quota, (alloc or 0) / 3600, (idle or 0) / 3600, (energy or 0) / 1000, util or 0)
        for pid, ns, cluster, quota, alloc, idle, energy, util in session.execute(stmt).all()
    ]
