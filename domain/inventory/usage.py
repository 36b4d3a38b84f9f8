"""Usage over time from the ledger's rollups, for the fleet, a cluster, a node, a GPU or a research project.

The rollups hold sums only (docs/ledger.md), so every figure here is a ratio of sums:

- utilisation = Σ util_seconds / Σ seconds_util_known, None when no utilisation was known (never 0);
- GPUs allocated = Σ over GPUs of held seconds / the GPU's covered seconds in the bucket, where a
  GPU's covered seconds are the sum of all its rows (projects + unallocated = the accounted time);
- memory and power are time-averages over the covered seconds, summed over the GPUs;
- peaks and temperature are maxima, None when no reading was known.

A bucket the ledger has not fully accounted (the current one, or one with a gap) is ``partial``
and carries its ``covered_seconds``: averages are over the covered part, so a partial bucket is
charted at its true level instead of falling towards zero; its sums (GPU-seconds, energy) are what
was accounted.

Rows a caller may not read never enter the measures: outside clusters granted whole, only the rows
of the caller's visible projects count, so a researcher on a shared GPU sees their own share, and the
GPU's own readings (on rows they cannot read) are unknown to them, not 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select, true
from sqlmodel import Session

from domain.access import ReadScope
from domain.inventory.visibility import projects_visible
from domain.models import Cluster, Gpu, Node, ResearchProject, UsageRollup

PARTIAL_TOLERANCE_SECONDS = 0.5
"""A bucket covered to within this of its width is complete (window ends carry sub-second jitter)."""


@dataclass(frozen=True, slots=True)
class UsagePoint:
    bucket_start: datetime
    covered_seconds: float
    """Seconds of the bucket the ledger accounted for the subject's GPUs (the most of any of them)."""
    partial: bool
    """The bucket is not fully accounted (yet): the current bucket, or one with a gap."""
    util_avg: float | None
    """Average utilisation over the time it was known, percent; None: unknown."""
    util_max: float | None
    memory_mib: float | None
    """Framebuffer in use, time-averaged, summed over the GPUs and slices; None: unknown."""
    power_watts: float | None
    """Average draw, summed over the GPUs; None: unknown."""
    temperature_max_c: float | None
    """Hottest reading; None: no reading."""
    gpus_allocated: float
    """Average number of GPUs held over the covered part of the bucket (slices count as their share)."""
    gpu_seconds_allocated: float
    gpu_seconds_idle: float
    gpu_seconds_util_unknown: float
    """Held GPU-seconds whose utilisation was unknown: neither idle nor busy."""
    energy_wh: float

    @property
    def gpus_in_use(self) -> float | None:
        """GPU-equivalents actually working (held x utilisation); None when utilisation is unknown."""
        return None if self.util_avg is None else self.gpus_allocated * self.util_avg / 100


@dataclass(frozen=True, slots=True)
class UsageTotals:
    gpu_hours: float
    idle_gpu_hours: float
    unknown_util_gpu_hours: float
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


def _when(condition: ColumnElement[bool], value: Any) -> Any:
    """``value`` on the rows meeting ``condition``, NULL on the others (aggregates skip NULL)."""
    return case((condition, value), else_=None)


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
    """One point per bucket, oldest first; the subject filters combine.

    Two levels in SQL: per bucket and GPU (the GPU's covered seconds come from all its rows, the
    measures only from the rows that are the subject's and readable), then per bucket.
    """
    counted = _readable(scope)
    if project_id is not None:
        counted = and_(counted, UsageRollup.project_id == project_id)
    held = and_(counted, UsageRollup.project_id != 0)
    in_range = [UsageRollup.bucket_start >= since]
    if until is not None:
        in_range.append(UsageRollup.bucket_start < until)

    covered = func.sum(UsageRollup.seconds)
    per_gpu: Any = (
        select(
            UsageRollup.bucket_start.label("bucket"),
            covered.label("covered"),
            (func.coalesce(func.sum(_when(held, UsageRollup.seconds)), 0) / covered).label("gpus"),
            func.sum(_when(held, UsageRollup.seconds)).label("held"),
            func.sum(_when(held, UsageRollup.seconds_idle)).label("idle"),
            func.sum(_when(held, UsageRollup.seconds - UsageRollup.seconds_util_known)).label("unknown"),
            func.sum(_when(counted, UsageRollup.util_seconds)).label("util_seconds"),
            func.sum(_when(counted, UsageRollup.seconds_util_known)).label("util_known"),
            func.max(_when(counted, UsageRollup.util_max)).label("util_max"),
            (func.sum(_when(counted, UsageRollup.memory_mib_seconds)) / covered).label("memory"),
            func.max(_when(counted, UsageRollup.memory_max_mib)).label("memory_max"),
            func.sum(_when(counted, UsageRollup.energy_wh)).label("energy"),
            (
                func.sum(_when(counted, UsageRollup.energy_wh))
                * 3600
                / func.nullif(func.sum(_when(counted, UsageRollup.power_seconds_known)), 0)
                * func.sum(_when(counted, UsageRollup.seconds))
                / covered
            ).label("power"),
            func.max(_when(counted, UsageRollup.temperature_max_c)).label("temperature"),
        )
        .join(Gpu, Gpu.id == UsageRollup.gpu_id)
        .join(Node, Node.id == Gpu.node_id)
        .where(*in_range)
        .group_by(UsageRollup.bucket_start, UsageRollup.gpu_id)
        .having(func.sum(case((counted, 1), else_=0)) > 0, covered > 0)
    )
    for value, column in ((cluster_id, Node.cluster_id), (node_id, Gpu.node_id), (gpu_id, UsageRollup.gpu_id)):
        if value is not None:
            per_gpu = per_gpu.where(column == value)
    if project_id is not None:  # only the GPUs the project touched in the range: the project index, not a scan
        touched = select(UsageRollup.gpu_id).where(UsageRollup.project_id == project_id, *in_range)
        per_gpu = per_gpu.where(UsageRollup.gpu_id.in_(touched))  # type: ignore[attr-defined]
    g = per_gpu.subquery("per_gpu")
    stmt = (
        select(
            g.c.bucket,
            func.max(g.c.covered),
            func.sum(g.c.gpus),
            func.coalesce(func.sum(g.c.held), 0),
            func.coalesce(func.sum(g.c.idle), 0),
            func.coalesce(func.sum(g.c.unknown), 0),
            func.sum(g.c.util_seconds) / func.nullif(func.sum(g.c.util_known), 0),
            func.max(g.c.util_max),
            case((func.max(g.c.memory_max).is_(None), literal(None)), else_=func.sum(g.c.memory)),
            func.sum(g.c.power),
            func.max(g.c.temperature),
            func.coalesce(func.sum(g.c.energy), 0),
        )
        .group_by(g.c.bucket)
        .order_by(g.c.bucket)
    )
    points = []
    for row in session.execute(stmt).all():
        bucket, cover, gpus, alloc, idle, unknown, util, peak, memory, power, temperature, energy = row
        points.append(
            UsagePoint(
                bucket_start=bucket,
                covered_seconds=float(cover),
                partial=float(cover) < bucket_seconds - PARTIAL_TOLERANCE_SECONDS,
                util_avg=_float(util),
                util_max=_float(peak),
                memory_mib=_float(memory),
                power_watts=_float(power),
                temperature_max_c=_float(temperature),
                gpus_allocated=float(gpus or 0),
                gpu_seconds_allocated=float(alloc),
                gpu_seconds_idle=float(idle),
                gpu_seconds_util_unknown=float(unknown),
                energy_wh=float(energy),
            )
        )
    return points


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def totals(points: list[UsagePoint]) -> UsageTotals:
    return UsageTotals(
        gpu_hours=sum(p.gpu_seconds_allocated for p in points) / 3600,
        idle_gpu_hours=sum(p.gpu_seconds_idle for p in points) / 3600,
        unknown_util_gpu_hours=sum(p.gpu_seconds_util_unknown for p in points) / 3600,
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
    unknown_util_gpu_hours: float
    energy_kwh: float
    util_avg: float | None
    """Average utilisation over the time it was known; None: never known."""

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
    """GPU-hours, idle and unknown-utilisation GPU-hours and energy per visible project, most GPU-hours first."""
    stmt: Any = (
        select(
            ResearchProject.id,
            ResearchProject.namespace,
            Cluster.name,
            ResearchProject.gpu_quota,
            func.sum(UsageRollup.seconds),
            func.sum(UsageRollup.seconds_idle),
            func.sum(UsageRollup.seconds - UsageRollup.seconds_util_known),
            func.sum(UsageRollup.energy_wh),
            func.sum(UsageRollup.util_seconds) / func.nullif(func.sum(UsageRollup.seconds_util_known), 0),
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
        ProjectUsage(
            pid,
            ns,
            cluster,
            quota,
            (alloc or 0) / 3600,
            (idle or 0) / 3600,
            (unknown or 0) / 3600,
            (energy or 0) / 1000,
            _float(util),
        )
        for pid, ns, cluster, quota, alloc, idle, unknown, energy, util in session.execute(stmt).all()
    ]
