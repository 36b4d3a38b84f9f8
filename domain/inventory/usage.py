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

The range picks the tier (:func:`resolution`): at most :data:`MAX_POINTS` points a series, the fine
tier only for ranges up to about 41 hours, the hourly tier (summed to 1, 2, 3, 6 or 12 hours) up to
about 250 days, the daily tier beyond. Fleet, cluster and project series past the fine tier read the
per-cluster tier (``cluster_rollup``) and take a hub's covered time from ``accounted_period``: there a
bucket's GPU counts and averages are over the hub's accounted time, which equals the per-GPU
definition whenever each GPU was accounted for the whole covered span (docs/ledger.md, "Tiers").

Rows a caller may not read never enter the measures: outside clusters granted whole, only the rows
of the caller's visible projects count, so a researcher on a shared GPU sees their own share, and the
GPU's own readings (on rows they cannot read) are unknown to them, not 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.visibility import projects_visible
from domain.ledger.tiers import FINE, floor_to, pieces
from domain.models import (
    AccountedPeriod,
    Cluster,
    ClusterRollup,
    Gpu,
    Hub,
    Node,
    ResearchProject,
    UsageRollup,
    UsageRollupDaily,
    UsageRollupHourly,
    UtcDateTime,
)
from domain.models.history import DAY, HOUR

PARTIAL_TOLERANCE_SECONDS = 0.5
"""A bucket covered to within this of its width is complete (window ends carry sub-second jitter)."""
MAX_POINTS = 500
"""The most points a series carries, whatever the range."""
HOURLY_STEPS = (HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR)
DAILY_STEPS = (DAY, 2 * DAY, 7 * DAY, 14 * DAY)
_PER_GPU = {FINE: UsageRollup, HOUR: UsageRollupHourly, DAY: UsageRollupDaily}


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a range is drawn: points ``step`` seconds apart, summed from the tier of width ``tier``."""

    step: int
    tier: int
    """FINE (the rollup bucket), HOUR or DAY."""


def resolution(
    since: datetime,
    until: datetime,
    fine_seconds: int,
    *,
    oldest: Mapping[str, datetime | None] | None = None,
) -> Resolution:
    """The finest step that keeps ``[since, until)`` within :data:`MAX_POINTS` points, from the finest
    tier that still holds ``since``: ``oldest`` gives the oldest bucket left in the ``"fine"`` and
    ``"hourly"`` tiers (retention trims from the oldest end; None: empty); a tier not named is whole."""
    span = max((until - since).total_seconds(), 0.0)

    def holds(tier: str) -> bool:
        if oldest is None or tier not in oldest:
            return True
        first = oldest[tier]
        return first is not None and since >= first  # None: the tier holds nothing (any more)

    def fits(step: int) -> bool:
        return span / step + 1 <= MAX_POINTS

    if fits(fine_seconds) and holds("fine"):
        return Resolution(fine_seconds, FINE)
    if holds("hourly"):
        for step in HOURLY_STEPS:
            if fits(step):
                return Resolution(step, HOUR)
    for step in DAILY_STEPS:
        if fits(step):
            return Resolution(step, DAY)
    return Resolution(math.ceil(span / (MAX_POINTS - 1) / DAY) * DAY, DAY)


def _resolution(session: Session, since: datetime, until: datetime, fine_seconds: int) -> Resolution:
    """:func:`resolution` knowing where retention trimmed the tiers it would read.

    A tier was trimmed when the next coarser tier holds older buckets than it does (the tiers are
    written together, so before any retention they begin together, at the ledger's first window);
    only then does its oldest bucket limit the ranges it draws. Looked up only when needed.
    """
    oldest: dict[str, datetime | None] = {}
    first: dict[Any, datetime | None] = {}

    def oldest_of(table: Any) -> datetime | None:
        if table not in first:
            first[table] = session.execute(select(func.min(table.bucket_start))).scalar()
        return first[table]

    res = resolution(since, until, fine_seconds)
    for tier, width, table, coarser in (
        ("fine", FINE, UsageRollup, UsageRollupHourly),
        ("hourly", HOUR, UsageRollupHourly, UsageRollupDaily),
    ):
        if res.tier != width:
            continue
        mine, older = oldest_of(table), oldest_of(coarser)
        if older is not None and (mine is None or older < floor_to(mine, DAY if width == HOUR else HOUR)):
            oldest[tier] = mine
            res = resolution(since, until, fine_seconds, oldest=oldest)
    return res


def _display(column: Any, step: int, tier_width: int, dialect: str) -> Any:
    """``column`` (a bucket start) floored to ``step`` seconds from the Unix epoch."""
    if step == tier_width:
        return column
    if dialect == "postgresql":
        floored = func.date_bin(
            literal_column(f"interval '{int(step)} seconds'"), column, literal_column("timestamp '1970-01-01'")
        )
    else:  # SQLite keeps times as text: via the epoch and back
        epoch = cast(func.strftime(literal_column("'%s'"), column), Integer)
        width: ColumnElement[int] = literal_column(str(int(step)))
        floored = func.datetime(epoch.op("/")(width).op("*")(width), literal_column("'unixepoch'"))
    return type_coerce(floored, UtcDateTime)


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


def _readable(scope: ReadScope, table: Any = UsageRollup, cluster: Any = Node.cluster_id) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    visible_projects = select(col(ResearchProject.id)).where(projects_visible(scope))
    return or_(cluster.in_(scope.cluster_ids), table.project_id.in_(visible_projects))


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
    """One point per step of :func:`resolution` (``bucket_seconds`` is the fine tier's width), oldest
    first; the subject filters combine."""
    if until is None:  # up to the ledger's present: the latest moment any hub is accounted to
        latest = session.execute(select(func.max(Hub.accounted_until))).scalar() or datetime.now(UTC)
        end = max(latest, since) + timedelta(seconds=bucket_seconds)
    else:
        end = until
    res = _resolution(session, since, end, bucket_seconds)
    dialect = session.get_bind().dialect.name
    if res.tier == FINE or node_id is not None or gpu_id is not None:
        stmt = _per_gpu_series(
            scope,
            res,
            since,
            until,
            dialect,
            cluster_id=cluster_id,
            node_id=node_id,
            gpu_id=gpu_id,
            project_id=project_id,
        )
    else:
        stmt = _cluster_series(scope, res, since, until, dialect, cluster_id=cluster_id, project_id=project_id)
    points = []
    for row in session.execute(stmt).all():
        bucket, cover, gpus, alloc, idle, unknown, util, peak, memory, power, temperature, energy = row
        points.append(
            UsagePoint(
                bucket_start=bucket,
                covered_seconds=float(cover),
                partial=float(cover) < res.step - PARTIAL_TOLERANCE_SECONDS,
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


def _per_bucket(g: Any) -> Any:
    """The second level: the per-(bucket, GPU or hub) subquery ``g`` summed per bucket."""
    return (
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


def _measures(t: Any, counted: Any, held: Any, covered: Any) -> list[Any]:
    """The first level's measures over the rows of ``t``, divided by ``covered`` where an average."""
    return [
        (func.coalesce(func.sum(_when(held, t.seconds)), 0) / covered).label("gpus"),
        func.sum(_when(held, t.seconds)).label("held"),
        func.sum(_when(held, t.seconds_idle)).label("idle"),
        func.sum(_when(held, t.seconds - t.seconds_util_known)).label("unknown"),
        func.sum(_when(counted, t.util_seconds)).label("util_seconds"),
        func.sum(_when(counted, t.seconds_util_known)).label("util_known"),
        func.max(_when(counted, t.util_max)).label("util_max"),
        (func.sum(_when(counted, t.memory_mib_seconds)) / covered).label("memory"),
        func.max(_when(counted, t.memory_max_mib)).label("memory_max"),
        func.sum(_when(counted, t.energy_wh)).label("energy"),
        (
            func.sum(_when(counted, t.energy_wh))
            * 3600
            / func.nullif(func.sum(_when(counted, t.power_seconds_known)), 0)
            * func.sum(_when(counted, t.seconds))
            / covered
        ).label("power"),
        func.max(_when(counted, t.temperature_max_c)).label("temperature"),
    ]


def _per_gpu_series(
    scope: ReadScope,
    res: Resolution,
    since: datetime,
    until: datetime | None,
    dialect: str,
    *,
    cluster_id: int | None,
    node_id: int | None,
    gpu_id: int | None,
    project_id: int | None,
) -> Any:
    """Two levels: per bucket and GPU (the GPU's covered seconds come from all its rows, the measures only
    from the rows that are the subject's and readable), then per bucket."""
    t: Any = _PER_GPU[res.tier]
    width = res.step if res.tier == FINE else res.tier
    counted = _readable(scope, t)
    if project_id is not None:
        counted = and_(counted, t.project_id == project_id)
    held = and_(counted, t.project_id != 0)
    in_range = [t.bucket_start >= since]
    if until is not None:
        in_range.append(t.bucket_start < until)
    bucket = _display(t.bucket_start, res.step, width, dialect)
    covered = func.sum(t.seconds)
    per_gpu: Any = (
        select(bucket.label("bucket"), covered.label("covered"), *_measures(t, counted, held, covered))
        .join(Gpu, Gpu.id == t.gpu_id)
        .join(Node, col(Node.id) == Gpu.node_id)
        .where(*in_range)
        .group_by(bucket, t.gpu_id)
        .having(func.sum(case((counted, 1), else_=0)) > 0, covered > 0)
    )
    for value, column in ((cluster_id, Node.cluster_id), (node_id, Gpu.node_id), (gpu_id, t.gpu_id)):
        if value is not None:
            per_gpu = per_gpu.where(column == value)
    if project_id is not None:  # only the GPUs the project touched in the range: the project index, not a scan
        touched = select(t.gpu_id).where(t.project_id == project_id, *in_range)
        per_gpu = per_gpu.where(t.gpu_id.in_(touched))
    return _per_bucket(per_gpu.subquery("per_gpu"))


def _cluster_series(
    scope: ReadScope,
    res: Resolution,
    since: datetime,
    until: datetime | None,
    dialect: str,
    *,
    cluster_id: int | None,
    project_id: int | None,
) -> Any:
    """Two levels over the per-cluster tier: per bucket and hub (averages over the hub's accounted
    time in the bucket, from ``accounted_period``), then per bucket."""
    t: Any = ClusterRollup
    p: Any = AccountedPeriod
    counted = _readable(scope, t, t.cluster_id)
    if project_id is not None:
        counted = and_(counted, t.project_id == project_id)
    held = and_(counted, t.project_id != 0)
    lo = since
    bucket = _display(t.bucket_start, res.step, res.tier, dialect)
    usage: Any = (
        select(bucket.label("bucket"), col(Cluster.hub_id).label("hub"), *_measures(t, counted, held, literal(1.0)))
        .join(Cluster, Cluster.id == t.cluster_id)
        .where(t.width == res.tier, t.bucket_start >= lo)
        .group_by(bucket, col(Cluster.hub_id))
        .having(func.sum(case((counted, 1), else_=0)) > 0)
    )
    period_bucket = _display(p.bucket_start, res.step, res.tier, dialect)
    accounted: Any = (
        select(period_bucket.label("bucket"), p.hub_id.label("hub"), func.sum(p.seconds).label("covered"))
        .where(p.width == res.tier, p.bucket_start >= lo)
        .group_by(period_bucket, p.hub_id)
    )
    if until is not None:
        usage = usage.where(t.bucket_start < until)
        accounted = accounted.where(p.bucket_start < until)
    if cluster_id is not None:
        usage = usage.where(t.cluster_id == cluster_id)
    if project_id is not None:
        usage = usage.where(t.project_id == project_id)
    u = usage.subquery("usage")
    a = accounted.subquery("accounted")
    per_hub = (
        select(
            u.c.bucket,
            a.c.covered,
            (u.c.gpus / a.c.covered).label("gpus"),
            u.c.held,
            u.c.idle,
            u.c.unknown,
            u.c.util_seconds,
            u.c.util_known,
            u.c.util_max,
            (u.c.memory / a.c.covered).label("memory"),
            u.c.memory_max,
            u.c.energy,
            (u.c.power / a.c.covered).label("power"),
            u.c.temperature,
        )
        .join(a, and_(a.c.bucket == u.c.bucket, a.c.hub == u.c.hub))
        .where(a.c.covered > 0)
    )
    return _per_bucket(per_hub.subquery("per_hub"))


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
    """GPU-hours, idle and unknown-utilisation GPU-hours and energy per visible project, most GPU-hours first.

    Whole days and hours of the range come from the per-cluster tier, only its ragged ends from the fine
    tier (:func:`domain.ledger.tiers.pieces`); the tiers are sums of the same rows.
    """
    end = until or floor_to(datetime.now(UTC), DAY) + timedelta(days=1)  # today's daily row holds up to now
    parts = []
    for piece in pieces(since, end):
        t: Any = UsageRollup if piece.width == FINE else ClusterRollup
        where = [t.bucket_start >= piece.start, t.bucket_start < piece.end, t.project_id != 0]
        if piece.width != FINE:
            where.append(t.width == piece.width)
        parts.append(
            select(
                t.project_id,
                t.seconds,
                t.seconds_idle,
                (t.seconds - t.seconds_util_known).label("unknown"),
                t.energy_wh,
                t.util_seconds,
                t.seconds_util_known,
            ).where(*where)
        )
    if not parts:
        return []
    r = union_all(*parts).subquery("rows")
    stmt: Any = (
        select(
            col(ResearchProject.id),
            col(ResearchProject.namespace),
            col(Cluster.name),
            col(ResearchProject.gpu_quota),
            func.sum(r.c.seconds),
            func.sum(r.c.seconds_idle),
            func.sum(r.c.unknown),
            func.sum(r.c.energy_wh),
            func.sum(r.c.util_seconds) / func.nullif(func.sum(r.c.seconds_util_known), 0),
        )
        .join(ResearchProject, col(ResearchProject.id) == r.c.project_id)
        .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
        .where(projects_visible(scope))
        .group_by(
            col(ResearchProject.id), col(ResearchProject.namespace), col(Cluster.name), col(ResearchProject.gpu_quota)
        )
        .order_by(func.sum(r.c.seconds).desc(), col(ResearchProject.id))
    )
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
