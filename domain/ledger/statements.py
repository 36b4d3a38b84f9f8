"""Monthly statements per research project, read from the ledger (docs/ledger.md).

A statement covers a period ``[start, end)`` (a calendar month in UTC, or any bucket-aligned span)
and holds, per visible project and per GPU model and MIG profile: GPU-hours held, idle GPU-hours,
GPU-hours whose utilisation was unknown, energy, and cost from the rate card. Every figure is a sum
of ledger rows (the daily tier for whole days, the hourly and fine tiers for the rest, docs/ledger.md
"Tiers"), so totals are exactly the sums of the lines.

Every statement carries its **reconciliation**, per hub and for all of them::

    projects + unallocated + unaccounted = capacity      (GPU-hours)

where projects and unallocated are the rollups' seconds on the hub's GPUs, and unaccounted and
capacity come from the hub's accounted windows, pro-rated to the period (both are uniform over a
window). The reconciliation is **fleet-level**: its "projects" figure sums every project on the
hub for whoever reads everything. A reader who does not is shown it for the hubs their visible
projects run on, *scoped*: "projects" is their own projects, and what the other projects held is
folded into "others and unallocated", so no other project's hours can be worked out by subtraction.
It is the proof that the ledger is whole, not the reader's bill; the lines above it are.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import Engine, case, func, literal, select, union_all
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.visibility import projects_visible
from domain.ledger.rate_card import WHOLE, RateCard, ServiceUnit
from domain.ledger.tiers import FINE, pieces
from domain.models import (
    AccountedPeriod,
    AccountedWindow,
    Cluster,
    Gpu,
    GpuSlice,
    Hub,
    Node,
    ResearchProject,
    UsageRollup,
    UsageRollupDaily,
    UsageRollupHourly,
)
from domain.models.base import UtcDateTime
from domain.models.history import DAY, HOUR

CENT = Decimal("0.01")
BALANCE_TOLERANCE_GPU_HOURS = 1e-6
"""Float sums of millions of rows differ from each other in the last digits; anything more is a hole."""


MONTH_PATTERN = r"^(19[7-9]\d|2\d{3})-(0[1-9]|1[0-2])$"
"""``YYYY-MM`` from 1970-01 to 2999-12: the months a ledger can hold."""


class StatementError(ValueError):
    """A statement was asked for a period that is not one (the message says why)."""


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` to its ``[start, end)`` in UTC. Raises :class:`StatementError`."""
    if not re.match(MONTH_PATTERN, month):
        raise StatementError(f"month: {month!r} is not YYYY-MM (1970-01 to 2999-12), e.g. 2026-11")
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One project's use of one GPU model (whole GPUs, or one MIG profile) in the period."""

    model: str
    profile: str
    """A MIG profile (e.g. 1g.10gb), or ``whole``."""
    gpu_hours: float
    idle_gpu_hours: float
    """Held with a known utilisation below the idle threshold."""
    unknown_util_gpu_hours: float
    """Held while no utilisation was known: neither idle nor busy."""
    energy_kwh: float
    price_per_gpu_hour: float | None
    """From the rate card; None: no rate card, or no price for this model."""
    cost: Decimal | None
    """gpu_hours x price, rounded to the cent; None when unpriced."""
    service_units: float | None


@dataclass(frozen=True, slots=True)
class Totals:
    gpu_hours: float = 0.0
    idle_gpu_hours: float = 0.0
    unknown_util_gpu_hours: float = 0.0
    energy_kwh: float = 0.0
    cost: Decimal | None = None
    """Sum of the priced lines' costs; None when no line is priced."""
    unpriced_gpu_hours: float = 0.0
    """GPU-hours without a price: the cost above leaves them out."""
    service_units: float | None = None

    @classmethod
    def of_lines(cls, lines: list[StatementLine]) -> Totals:
        return cls._sum(lines, unpriced=sum(x.gpu_hours for x in lines if x.cost is None))

    @classmethod
    def of_totals(cls, totals: list[Totals]) -> Totals:
        return cls._sum(totals, unpriced=sum(x.unpriced_gpu_hours for x in totals))

    @classmethod
    def _sum(cls, parts: list[StatementLine] | list[Totals], *, unpriced: float) -> Totals:
        costs = [x.cost for x in parts if x.cost is not None]
        units = [x.service_units for x in parts if x.service_units is not None]
        return cls(
            gpu_hours=sum(x.gpu_hours for x in parts),
            idle_gpu_hours=sum(x.idle_gpu_hours for x in parts),
            unknown_util_gpu_hours=sum(x.unknown_util_gpu_hours for x in parts),
            energy_kwh=sum(x.energy_kwh for x in parts),
            cost=sum(costs, Decimal(0)) if costs else None,
            unpriced_gpu_hours=unpriced,
            service_units=sum(units) if units else None,
        )

    @property
    def idle_share(self) -> float:
        return self.idle_gpu_hours / self.gpu_hours if self.gpu_hours else 0.0


@dataclass(frozen=True, slots=True)
class ProjectStatement:
    project_id: int
    hub: str
    cluster: str
    namespace: str
    gpu_quota: float | None
    lines: list[StatementLine]
    totals: Totals


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """projects + unallocated + unaccounted = capacity, in GPU-hours, for one hub or for all (``hub`` None)."""

    hub: str | None
    projects_gpu_hours: float
    unallocated_gpu_hours: float
    unaccounted_gpu_hours: float
    capacity_gpu_hours: float
    accounted_hours: float
    """Source time of the period covered by the hub's windows (less than the period while it runs)."""
    unaccounted_hours: float
    """Of that, time in ``unaccounted`` windows (a gap past the back-fill horizon, or history the
    migration could not reconstruct)."""
    accounted_until: datetime | None = None
    scoped: bool = False
    """For a reader who does not read everything: ``projects_gpu_hours`` is their own projects and
    ``unallocated_gpu_hours`` also holds what every other project held (one figure, no names)."""

    @property
    def difference_gpu_hours(self) -> float:
        return self.capacity_gpu_hours - (
            self.projects_gpu_hours + self.unallocated_gpu_hours + self.unaccounted_gpu_hours
        )

    @property
    def balanced(self) -> bool:
        return abs(self.difference_gpu_hours) <= BALANCE_TOLERANCE_GPU_HOURS * max(1.0, self.capacity_gpu_hours)

    @property
    def line(self) -> str:
        """The line every statement prints."""
        scope = f"hub {self.hub}" if self.hub else "fleet"
        verdict = "balanced" if self.balanced else f"OUT BY {self.difference_gpu_hours:+,.6f}"
        held, rest = ("your projects", "others and unallocated") if self.scoped else ("projects", "unallocated")
        return (
            f"Reconciliation ({scope}, all projects): {held} {self.projects_gpu_hours:,.3f}"
            f" + {rest} {self.unallocated_gpu_hours:,.3f} + unaccounted {self.unaccounted_gpu_hours:,.3f}"
            f" = capacity {self.capacity_gpu_hours:,.3f} GPU-hours ({verdict})"
        )


@dataclass(frozen=True, slots=True)
class Statement:
    start: datetime
    end: datetime
    generated_at: datetime
    currency: str | None
    service_unit: ServiceUnit | None
    projects: list[ProjectStatement]
    totals: Totals
    reconciliation: list[Reconciliation]
    """One per hub shown, then the fleet line (all of them) last."""
    unpriced_models: list[str] = field(default_factory=list)

    @property
    def month(self) -> str:
        return self.start.strftime("%Y-%m")

    @property
    def fleet(self) -> Reconciliation:
        return self.reconciliation[-1]

    @property
    def provisional(self) -> bool:
        """The period is not fully accounted yet (a month in progress, or a hub behind)."""
        return any(r.accounted_until is None or r.accounted_until < self.end for r in self.reconciliation[:-1])


# --- queries ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sums:
    """The period's rows summed per hub, project (0: unallocated), GPU model and profile."""

    hub_id: int
    project_id: int
    model: str
    profile: str
    seconds: float
    idle: float
    unknown: float
    energy_wh: float


_PER_GPU: dict[int, Any] = {FINE: UsageRollup, HOUR: UsageRollupHourly, DAY: UsageRollupDaily}


def _period_sums(session: Session, start: datetime, end: datetime) -> list[_Sums]:
    """One pass over the period's rows, whole days from the daily tier, whole hours from the hourly, the
    rest from the fine (:func:`domain.ledger.tiers.pieces`): grouped first by their own keys (no join on
    many rows), then the few thousand groups are joined to their GPU, slice and hub."""
    parts = []
    for piece in pieces(start, end):
        r = _PER_GPU[piece.width]
        parts.append(
            select(
                r.gpu_id,
                r.slice_id,
                r.project_id,
                r.seconds,
                r.seconds_idle,
                (r.seconds - r.seconds_util_known).label("unknown"),
                r.energy_wh,
            ).where(r.bucket_start >= piece.start, r.bucket_start < piece.end)
        )
    if not parts:
        return []
    rows = union_all(*parts).subquery("rows")
    per_key = (
        select(
            rows.c.gpu_id,
            rows.c.slice_id,
            rows.c.project_id,
            func.sum(rows.c.seconds).label("seconds"),
            func.sum(rows.c.seconds_idle).label("idle"),
            func.sum(rows.c.unknown).label("unknown"),
            func.sum(rows.c.energy_wh).label("energy"),
        )
        .group_by(rows.c.gpu_id, rows.c.slice_id, rows.c.project_id)
        .subquery("per_key")
    )
    held_slice = aliased(GpuSlice)
    profile = func.coalesce(col(held_slice.profile), literal(WHOLE))
    stmt = (
        select(
            col(Cluster.hub_id),
            per_key.c.project_id,
            col(Gpu.model),
            profile,
            func.sum(per_key.c.seconds),
            func.sum(per_key.c.idle),
            func.sum(per_key.c.unknown),
            func.sum(per_key.c.energy),
        )
        .select_from(per_key)
        .join(Gpu, col(Gpu.id) == per_key.c.gpu_id)
        .join(Node, col(Node.id) == Gpu.node_id)
        .join(Cluster, col(Cluster.id) == Node.cluster_id)
        .outerjoin(held_slice, col(held_slice.id) == per_key.c.slice_id)
        .group_by(col(Cluster.hub_id), per_key.c.project_id, col(Gpu.model), profile)
    )
    return [
        _Sums(hub, project, model, prof, float(sec or 0), float(idle or 0), float(unknown or 0), float(energy or 0))
        for hub, project, model, prof, sec, idle, unknown, energy in session.execute(stmt).all()
    ]


def _projects(session: Session, scope: ReadScope, project_id: int | None) -> dict[int, tuple[str, str, str, Any]]:
    """The projects a statement may show: id -> (hub, cluster, namespace, quota)."""
    stmt = (
        select(
            col(ResearchProject.id),
            col(Hub.name),
            col(Cluster.name),
            col(ResearchProject.namespace),
            col(ResearchProject.gpu_quota),
        )
        .join(Cluster, col(Cluster.id) == ResearchProject.cluster_id)
        .join(Hub, col(Hub.id) == Cluster.hub_id)
        .where(projects_visible(scope))
    )
    if project_id is not None:
        stmt = stmt.where(col(ResearchProject.id) == project_id)
    return {pid: (hub, cluster, ns, quota) for pid, hub, cluster, ns, quota in session.execute(stmt).all()}


@dataclass
class _Windows:
    capacity: float = 0.0
    unaccounted: float = 0.0
    accounted: float = 0.0
    unaccounted_time: float = 0.0


def _window_sums(session: Session, start: datetime, end: datetime, hub_ids: list[int]) -> dict[int, _Windows]:
    """Per hub: capacity, unaccounted GPU-seconds and covered time of its windows, pro-rated to the period:
    whole days and hours from ``accounted_period`` (the windows summed per hour and day), the rest from
    the windows themselves."""
    sums: dict[int, _Windows] = defaultdict(_Windows)
    for piece in pieces(start, end):
        if piece.width == FINE:
            part = _raw_window_sums(session, piece.start, piece.end, hub_ids)
        else:
            part = _period_window_sums(session, piece.width, piece.start, piece.end, hub_ids)
        for hub, w in part.items():
            s = sums[hub]
            s.capacity += w.capacity
            s.unaccounted += w.unaccounted
            s.accounted += w.accounted
            s.unaccounted_time += w.unaccounted_time
    return sums


def _period_window_sums(
    session: Session, width: int, start: datetime, end: datetime, hub_ids: list[int]
) -> dict[int, _Windows]:
    p = AccountedPeriod
    stmt = (
        select(
            col(p.hub_id),
            func.sum(col(p.capacity_gpu_seconds)),
            func.sum(col(p.unaccounted_gpu_seconds)),
            func.sum(col(p.seconds)),
            func.sum(col(p.unaccounted_seconds)),
        )
        .where(
            col(p.width) == width, col(p.bucket_start) >= start, col(p.bucket_start) < end, col(p.hub_id).in_(hub_ids)
        )
        .group_by(col(p.hub_id))
    )
    return {
        hub: _Windows(float(capacity or 0), float(unaccounted or 0), float(accounted or 0), float(gap or 0))
        for hub, capacity, unaccounted, accounted, gap in session.execute(stmt).all()
    }


def _raw_window_sums(session: Session, start: datetime, end: datetime, hub_ids: list[int]) -> dict[int, _Windows]:
    """Per hub: capacity, unaccounted GPU-seconds and covered time of its windows, pro-rated to the period.

    PostgreSQL does the arithmetic in SQL (exact to the microsecond); SQLite keeps times as text
    and its date functions stop at milliseconds, so there the overlapping windows are summed here.
    """
    w = AccountedWindow
    overlapping = (col(w.start) < end, col(w.end) > start, col(w.hub_id).in_(hub_ids))
    sums: dict[int, _Windows] = defaultdict(_Windows)
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        lo = func.greatest(col(w.start), literal(start, UtcDateTime))
        hi = func.least(col(w.end), literal(end, UtcDateTime))
        overlap = func.extract("epoch", hi - lo)
        length = func.nullif(func.extract("epoch", col(w.end) - col(w.start)), 0)
        stmt = (
            select(
                col(w.hub_id),
                func.sum(col(w.gpu_count) * overlap),
                func.sum(col(w.gpu_seconds_unaccounted) * overlap / length),
                func.sum(overlap),
                func.sum(case((col(w.kind) == "unaccounted", overlap), else_=0)),
            )
            .where(*overlapping)
            .group_by(col(w.hub_id))
        )
        for hub, capacity, unaccounted, accounted, gap in session.execute(stmt).all():
            sums[hub] = _Windows(float(capacity or 0), float(unaccounted or 0), float(accounted or 0), float(gap or 0))
        return sums
    rows = session.execute(
        select(
            col(w.hub_id), col(w.start), col(w.end), col(w.gpu_count), col(w.gpu_seconds_unaccounted), col(w.kind)
        ).where(*overlapping)
    ).all()
    for hub, w_start, w_end, gpu_count, unaccounted, kind in rows:
        length = (w_end - w_start).total_seconds()
        overlap = (min(w_end, end) - max(w_start, start)).total_seconds()
        if length <= 0 or overlap <= 0:
            continue
        s = sums[hub]
        s.capacity += gpu_count * overlap
        s.unaccounted += unaccounted * overlap / length
        s.accounted += overlap
        if kind == "unaccounted":
            s.unaccounted_time += overlap
    return sums


def _reconciliation_hubs(session: Session, scope: ReadScope, project_id: int | None) -> list[tuple[int, str, Any]]:
    """The hubs a reconciliation covers: the asked-for project's hub; else every hub for whoever
    reads everything, and the hubs of the visible projects for everyone else."""
    stmt = select(col(Hub.id), col(Hub.name), col(Hub.accounted_until)).order_by(col(Hub.name))
    if project_id is not None or not scope.everything:
        of_visible = (
            select(col(Cluster.hub_id))
            .join(ResearchProject, col(ResearchProject.cluster_id) == Cluster.id)
            .where(projects_visible(scope))
        )
        if project_id is not None:
            of_visible = of_visible.where(col(ResearchProject.id) == project_id)
        stmt = stmt.where(col(Hub.id).in_(of_visible))
    return [(hub_id, name, until) for hub_id, name, until in session.execute(stmt).all()]


def reconcile(
    session: Session,
    start: datetime,
    end: datetime,
    hubs: list[tuple[int, str, Any]],
    sums: list[_Sums],
    own: set[int] | None = None,
) -> list[Reconciliation]:
    """The reconciliation of ``hubs`` over ``[start, end)``, one per hub and the total last.

    ``own``: the reader's visible projects, when they do not read everything (a *scoped* line)."""
    ids = [hub_id for hub_id, _, _ in hubs]
    windows = _window_sums(session, start, end, ids) if ids else {}
    held: dict[int, float] = defaultdict(float)
    unallocated: dict[int, float] = defaultdict(float)
    for row in sums:
        counted = row.project_id and (own is None or row.project_id in own)
        (held if counted else unallocated)[row.hub_id] += row.seconds
    out = []
    for hub_id, name, accounted_until in hubs:
        win = windows.get(hub_id, _Windows())
        out.append(
            Reconciliation(
                hub=name,
                projects_gpu_hours=held[hub_id] / 3600,
                unallocated_gpu_hours=unallocated[hub_id] / 3600,
                unaccounted_gpu_hours=win.unaccounted / 3600,
                capacity_gpu_hours=win.capacity / 3600,
                accounted_hours=win.accounted / 3600,
                unaccounted_hours=win.unaccounted_time / 3600,
                accounted_until=accounted_until,
                scoped=own is not None,
            )
        )
    out.append(
        Reconciliation(
            hub=None,
            projects_gpu_hours=sum(r.projects_gpu_hours for r in out),
            unallocated_gpu_hours=sum(r.unallocated_gpu_hours for r in out),
            unaccounted_gpu_hours=sum(r.unaccounted_gpu_hours for r in out),
            capacity_gpu_hours=sum(r.capacity_gpu_hours for r in out),
            accounted_hours=max((r.accounted_hours for r in out), default=0.0),
            unaccounted_hours=max((r.unaccounted_hours for r in out), default=0.0),
            scoped=own is not None,
        )
    )
    return out


def _line(model: str, profile: str, sums: _Sums, rate_card: RateCard | None) -> StatementLine:
    gpu_hours = sums.seconds / 3600
    price = rate_card.price(model, profile) if rate_card else None
    cost = None if price is None else (Decimal(repr(gpu_hours)) * Decimal(repr(price))).quantize(CENT, ROUND_HALF_EVEN)
    return StatementLine(
        model=model,
        profile=profile,
        gpu_hours=gpu_hours,
        idle_gpu_hours=sums.idle / 3600,
        unknown_util_gpu_hours=sums.unknown / 3600,
        energy_kwh=sums.energy_wh / 1000,
        price_per_gpu_hour=price,
        cost=cost,
        service_units=rate_card.service_units(gpu_hours) if rate_card else None,
    )


def build_statement(
    session: Session,
    scope: ReadScope,
    *,
    start: datetime,
    end: datetime,
    rate_card: RateCard | None = None,
    project_id: int | None = None,
    now: datetime | None = None,
) -> Statement:
    """The statement of ``[start, end)`` for the projects ``scope`` may read (or one of them).

    A ``project_id`` the scope cannot read is a filter like any other: it matches nothing, so the
    statement is empty (its reconciliation too); a caller cannot tell someone else's project from
    one that does not exist.
    """
    if end <= start:
        raise StatementError("the period ends before it starts")
    sums = _period_sums(session, start, end)
    shown = _projects(session, scope, project_id)
    merged: dict[tuple[int, str, str], _Sums] = {}
    for row in sums:  # a project's GPUs of one model and profile on several hubs: one line
        if row.project_id in shown:
            key = (row.project_id, row.model, row.profile)
            was = merged.get(key)
            merged[key] = (
                row
                if was is None
                else _Sums(
                    was.hub_id,
                    row.project_id,
                    row.model,
                    row.profile,
                    was.seconds + row.seconds,
                    was.idle + row.idle,
                    was.unknown + row.unknown,
                    was.energy_wh + row.energy_wh,
                )
            )
    grouped: dict[int, list[StatementLine]] = defaultdict(list)
    for (pid, model, profile), row in sorted(merged.items(), key=lambda item: item[0]):
        grouped[pid].append(_line(model, profile, row, rate_card))
    projects = [ProjectStatement(pid, *shown[pid], lines, Totals.of_lines(lines)) for pid, lines in grouped.items()]
    projects.sort(key=lambda p: (-p.totals.gpu_hours, p.hub, p.cluster, p.namespace))
    unpriced = sorted({f"{line.model} {line.profile}" for p in projects for line in p.lines if line.cost is None})
    return Statement(
        start=start,
        end=end,
        generated_at=now or datetime.now(UTC),
        currency=rate_card.currency if rate_card else None,
        service_unit=rate_card.service_unit if rate_card else None,
        projects=projects,
        totals=Totals.of_totals([p.totals for p in projects]),
        reconciliation=reconcile(
            session,
            start,
            end,
            _reconciliation_hubs(session, scope, project_id),
            sums,
            own=None if scope.everything else set(_projects(session, scope, None)),
        ),
        unpriced_models=unpriced if rate_card else [],
    )


def monthly_statement(
    engine_or_session: Engine | Session,
    scope: ReadScope,
    month: str,
    *,
    rate_card: RateCard | None = None,
    project_id: int | None = None,
) -> Statement:
    """The statement of calendar month ``YYYY-MM`` (UTC)."""
    start, end = month_bounds(month)
    if isinstance(engine_or_session, Session):
        return build_statement(
            engine_or_session, scope, start=start, end=end, rate_card=rate_card, project_id=project_id
        )
    with Session(engine_or_session) as session:
        return build_statement(session, scope, start=start, end=end, rate_card=rate_card, project_id=project_id)
