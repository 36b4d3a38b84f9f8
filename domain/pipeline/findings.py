"""Findings and counters in the database: what the worker writes after each poll, and reads at start.

* :func:`save_findings` writes the findings a batch changed, in a few bulk queries, linking each
  to its cluster and research project so the site can scope it. A finding a person resolved in
  the meantime is let go (a condition that persists opens a new one); one a person acknowledged
  stays acknowledged while it is updated.
* :func:`load_open_findings` hands the open and acknowledged findings back to a fresh pipeline
  after a restart, so they are continued rather than duplicated.
* :func:`add_counters` adds a batch's counter increments to the cumulative counters
  (``UPDATE ... SET value = value + n``), so they survive restarts and every process reads them.
* :func:`acknowledge` and :func:`resolve` are the people's side (the site's buttons).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from domain.models import Cluster, Finding, PipelineCounter, ResearchProject
from domain.models.base import table_of
from domain.pipeline.correlation import OPEN, Correlator, FindingState
from domain.pipeline.signals import SEVERITY_NAMES, SEVERITY_OF
from domain.statuses import FindingStatus

LIVE_STATUSES = (FindingStatus.OPEN.value, FindingStatus.ACKNOWLEDGED.value)


def as_datetime(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass(frozen=True)
class SaveResult:
    inserted: int
    updated: int
    released: int
    """Findings a person had resolved meanwhile: no longer followed."""
    to_analyse: list[int]
    """Ids of findings escalated by this batch that should get an LLM analysis."""


def _cluster_ids(session: Session, names: Iterable[str]) -> dict[str, int]:
    wanted = sorted(set(names))
    if not wanted:
        return {}
    out: dict[str, int] = {}
    for cluster_id, name in session.execute(
        select(Cluster.id, Cluster.name).where(col(Cluster.name).in_(wanted)).order_by(col(Cluster.id))
    ).all():
        out.setdefault(name, cluster_id)
    return out


def _project_ids(session: Session, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
    wanted = set(keys)
    if not wanted:
        return {}
    cluster_ids = {c for c, _ in wanted}
    namespaces = {n for _, n in wanted}
    rows = session.execute(
        select(ResearchProject.id, ResearchProject.cluster_id, ResearchProject.namespace).where(
            col(ResearchProject.cluster_id).in_(cluster_ids), col(ResearchProject.namespace).in_(namespaces)
        )
    ).all()
    return {(cluster_id, namespace): project_id for project_id, cluster_id, namespace in rows}


def _namespace(finding: FindingState) -> str | None:
    """The one research project (namespace) a finding concerns; None when its members span several."""
    if finding.members:
        spaces = {m.labels.get("namespace") for m in finding.members.values()}
        return next(iter(spaces)) if len(spaces) == 1 else None
    return finding.labels.get("namespace")


class _FindingValues(TypedDict):
    """The columns of a finding row that the pipeline state decides."""

    severity: str
    first_seen: datetime
    last_seen: datetime
    count: int
    summary: str
    evidence: dict[str, Any]
    level: str
    escalated: bool
    escalations: int
    waste_gpu_hours: float


def _values(finding: FindingState) -> _FindingValues:
    return {
        "severity": SEVERITY_NAMES[finding.severity],
        "first_seen": as_datetime(finding.first_seen),
        "last_seen": as_datetime(finding.last_seen),
        "count": max(finding.count, 1),
        "summary": finding.summary(),
        "evidence": finding.evidence(),
        "level": finding.level,
        "escalated": finding.escalated,
        "escalations": finding.escalations,
        "waste_gpu_hours": round(finding.waste_gpu_seconds / 3600, 6),
    }


def save_findings(
    session: Session,
    changed: Sequence[FindingState],
    correlator: Correlator,
    *,
    analyse_from: int | None = None,
    escalations_before: Mapping[int, int] | None = None,
) -> SaveResult:
    """Write ``changed`` findings; ``analyse_from`` is the lowest severity the LLM looks at (None: off).

    ``escalations_before`` maps ``id(finding)`` to its escalation count at the last save, so only
    fresh escalations are queued for analysis.
    """
    if not changed:
        return SaveResult(0, 0, 0, [])
    escalations_before = escalations_before or {}
    clusters = _cluster_ids(session, (f.cluster for f in changed if f.cluster))
    projects = _project_ids(
        session,
        (
            (clusters[f.cluster], namespace)
            for f in changed
            if f.cluster in clusters and (namespace := _namespace(f)) is not None
        ),
    )
    ids = [f.id for f in changed if f.id is not None]
    rows = {row.id: row for row in session.exec(select(Finding).where(col(Finding.id).in_(ids)))} if ids else {}
    inserted = updated = released = 0
    fresh: list[tuple[FindingState, Finding]] = []
    for finding in changed:
        values = _values(finding)
        row = rows.get(finding.id) if finding.id is not None else None
        if finding.id is not None and (row is None or (row.status == FindingStatus.RESOLVED and finding.is_open)):
            correlator.close_externally(finding)  # a person resolved it (or it was deleted): let it go
            released += 1
            continue
        if row is None:
            cluster_id = clusters.get(finding.cluster or "")
            namespace = _namespace(finding)
            row = Finding(
                kind=finding.kind,
                subject=finding.subject,
                cluster_id=cluster_id,
                project_id=projects.get((cluster_id, namespace)) if cluster_id and namespace else None,
                **values,
            )
            session.add(row)
            inserted += 1
        else:
            for name, value in values.items():
                setattr(row, name, value)
            updated += 1
        if finding.is_open:
            if row.status not in LIVE_STATUSES:
                row.status = FindingStatus.OPEN.value
        else:
            row.status = FindingStatus.RESOLVED.value
            row.resolved_at = as_datetime(finding.resolved_at or finding.last_seen)
        fresh.append((finding, row))
    session.flush()
    to_analyse = []
    for finding, row in fresh:
        finding.id = row.id
        newly = finding.escalations > escalations_before.get(id(finding), 0)
        if (
            analyse_from is not None
            and newly
            and finding.is_open
            and finding.severity >= analyse_from
            and row.analysis_status in (None, "done", "failed", "skipped")
        ):
            row.analysis_status = "pending"
            to_analyse.append(row.id or 0)
    return SaveResult(inserted, updated, released, to_analyse)


def load_open_findings(session: Session, clusters: Iterable[str] | None = None) -> list[FindingState]:
    """Open and acknowledged findings as pipeline state (members come back as their signals do)."""
    stmt = (
        select(Finding, Cluster.name)
        .outerjoin(Cluster, col(Cluster.id) == col(Finding.cluster_id))
        .where(col(Finding.status).in_(LIVE_STATUSES))
    )
    if clusters is not None:
        stmt = stmt.where(col(Cluster.name).in_(list(clusters)))
    out = []
    for row, cluster in session.execute(stmt.order_by(col(Finding.id))).all():
        evidence = row.evidence or {}
        labels = dict(evidence.get("labels") or {})
        if cluster and "cluster" not in labels:
            labels["cluster"] = cluster
        state = FindingState(
            row.kind,
            row.subject,
            row.level or "gpu",
            labels=labels,
            severity=SEVERITY_OF.get(row.severity, 2),
            first_seen=row.first_seen.timestamp(),
            last_seen=row.last_seen.timestamp(),
        )
        state.id = row.id
        state.count = row.count
        state.status = OPEN
        state.escalations = row.escalations
        if row.escalated:
            state.escalated_severity = state.severity
        state.flapping = bool(evidence.get("flapping"))
        state.waste_gpu_seconds = (row.waste_gpu_hours or 0.0) * 3600
        out.append(state)
    return out


# --- counters -------------------------------------------------------------------------------------


def add_counters(session: Session, deltas: Mapping[str, int], now: datetime) -> None:
    """Add increments to the cumulative counters in one statement (a counter is created at its first)."""
    items = [(name, delta) for name, delta in sorted(deltas.items()) if delta]
    if not items:
        return
    names = [name for name, _ in items]
    existing = set(session.exec(select(PipelineCounter.name).where(col(PipelineCounter.name).in_(names))))
    for name in names:
        if name not in existing:
            session.add(PipelineCounter(name=name, value=0, updated_at=now))
    session.flush()
    table = table_of(PipelineCounter)
    session.connection().execute(
        update(table)
        .where(table.c.name == bindparam("counter"))
        .values(value=table.c.value + bindparam("delta"), updated_at=now),
        [{"counter": name, "delta": delta} for name, delta in items],
    )


def read_counters(session: Session) -> dict[str, int]:
    return {row.name: int(row.value) for row in session.exec(select(PipelineCounter))}


# --- people -------------------------------------------------------------------------------------


def acknowledge(session: Session, finding: Finding, who: str, now: datetime) -> Finding:
    if finding.status == FindingStatus.OPEN:
        finding.status = FindingStatus.ACKNOWLEDGED.value
        finding.acknowledged_at = now
        finding.acknowledged_by = who[:253]
    return finding


def resolve(session: Session, finding: Finding, who: str, now: datetime) -> Finding:
    if finding.status != FindingStatus.RESOLVED:
        finding.status = FindingStatus.RESOLVED.value
        finding.resolved_at = now
        finding.acknowledged_by = who[:253]
        if finding.acknowledged_at is None:
            finding.acknowledged_at = now
    return finding
