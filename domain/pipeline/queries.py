"""Read side of the pipeline for the site and API: findings, idle waste, counters, placement.

Findings are scoped like everything else: a finding is visible when its research project or its
cluster is in the caller's :class:`ReadScope` (admins see all); a finding outside the scope is
indistinguishable from one that does not exist. The pipeline's counters say nothing about any
project and are shown to every signed-in caller.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, false, func, or_, select, true
from sqlmodel import Session, col

from domain.access import ReadScope
from domain.inventory.paging import InvalidQuery, Page, PageRequest, fetch_page, like_pattern, order_by_key
from domain.inventory.queries import NotFound
from domain.inventory.visibility import nodes_visible
from domain.models import Allocation, Cluster, Finding, FindingRead, Gpu, Node, ResearchProject
from domain.pipeline.engine import compression
from domain.pipeline.filters import STAGES
from domain.pipeline.findings import LIVE_STATUSES, read_counters
from domain.pipeline.inference import NodeCapacity, Placement, rank_nodes
from domain.pipeline.records import input_span
from domain.statuses import FindingStatus, Health

STATUS_FILTERS = ("active", "open", "acknowledged", "resolved", "all")
"""``active``: open or acknowledged (the default view)."""
SEVERITY_RANK = case(
    (col(Finding.severity) == "critical", 3),
    (col(Finding.severity) == "warning", 2),
    (col(Finding.severity) == "info", 1),
    else_=0,
)


def findings_visible(scope: ReadScope) -> ColumnElement[bool]:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    return or_(
        col(Finding.project_id).in_(scope.project_ids),
        col(Finding.cluster_id).in_(scope.cluster_ids),
    )


_SORT: dict[str, Any] = {
    "last_seen": Finding.last_seen,
    "first_seen": Finding.first_seen,
    "severity": SEVERITY_RANK,
    "kind": Finding.kind,
    "subject": Finding.subject,
    "count": Finding.count,
    "status": Finding.status,
    "waste": Finding.waste_gpu_hours,
    "_tiebreak": (col(Finding.id).desc(),),
}


SORT_KEYS = tuple(key for key in _SORT if not key.startswith("_"))


def _stmt(scope: ReadScope) -> Select[Finding, str, str]:
    return (
        select(Finding, col(Cluster.name), col(ResearchProject.namespace))
        .outerjoin(Cluster, col(Cluster.id) == col(Finding.cluster_id))
        .outerjoin(ResearchProject, col(ResearchProject.id) == col(Finding.project_id))
        .where(findings_visible(scope))
    )


def _read(row: Any) -> FindingRead:
    finding, cluster, project = row
    return FindingRead.model_validate(finding, update={"cluster": cluster, "project": project})


def list_findings(
    session: Session,
    scope: ReadScope,
    page: PageRequest,
    *,
    status: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    cluster_id: int | None = None,
    project_id: int | None = None,
    q: str | None = None,
    sort: str | None = None,
) -> Page[FindingRead]:
    stmt = _stmt(scope)
    status = status or "active"
    if status not in STATUS_FILTERS:
        raise InvalidQuery(f"status: one of {', '.join(STATUS_FILTERS)}")
    if status == "active":
        stmt = stmt.where(col(Finding.status).in_(LIVE_STATUSES))
    elif status != "all":
        stmt = stmt.where(col(Finding.status) == status)
    if kind:
        stmt = stmt.where(col(Finding.kind) == kind)
    if severity:
        stmt = stmt.where(col(Finding.severity) == severity)
    if cluster_id is not None:
        stmt = stmt.where(col(Finding.cluster_id) == cluster_id)
    if project_id is not None:
        stmt = stmt.where(col(Finding.project_id) == project_id)
    if q:
        like = like_pattern(q)
        stmt = stmt.where(
            or_(col(Finding.subject).ilike(like, escape="\\"), col(Finding.summary).ilike(like, escape="\\"))
        )
    rows, total = fetch_page(session, order_by_key(stmt, sort, _SORT, "-last_seen"), page)
    return Page([_read(r) for r in rows], total, page.limit, page.offset)


def get_finding(session: Session, scope: ReadScope, finding_id: int) -> FindingRead:
    row = session.execute(_stmt(scope).where(col(Finding.id) == finding_id)).first()
    if row is None:
        raise NotFound(f"finding {finding_id}")
    return _read(row)


def get_finding_row(session: Session, scope: ReadScope, finding_id: int) -> Finding:
    """The table row, for the acknowledge and resolve actions (same scope as reading it)."""
    finding = session.execute(select(Finding).where(col(Finding.id) == finding_id, findings_visible(scope))).scalar()
    if finding is None:
        raise NotFound(f"finding {finding_id}")
    return finding


def finding_counts(session: Session, scope: ReadScope) -> dict[str, int]:
    """Visible findings by status, and the open ones by severity (``open:critical`` ...)."""
    out = {status.value: 0 for status in FindingStatus}
    for status, count in session.execute(
        select(col(Finding.status), func.count()).where(findings_visible(scope)).group_by(col(Finding.status))
    ).all():
        out[status] = count
    for severity, count in session.execute(
        select(col(Finding.severity), func.count())
        .where(findings_visible(scope), col(Finding.status).in_(LIVE_STATUSES))
        .group_by(Finding.severity)
    ).all():
        out[f"active:{severity}"] = count
    return out


@dataclass(frozen=True)
class ProjectWaste:
    project_id: int
    namespace: str
    cluster: str
    idle_gpu_hours: float
    findings: int


def waste_by_project(session: Session, scope: ReadScope, *, since: datetime | None = None) -> list[ProjectWaste]:
    """Idle-while-allocated GPU-hours per research project, from its findings (most wasteful first)."""
    stmt = (
        select(
            col(ResearchProject.id),
            col(ResearchProject.namespace),
            col(Cluster.name),
            func.sum(col(Finding.waste_gpu_hours)),
            func.count(),
        )
        .join(ResearchProject, col(ResearchProject.id) == col(Finding.project_id))
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id))
        .where(findings_visible(scope), col(Finding.kind) == "idle_allocated")
        .group_by(col(ResearchProject.id), col(ResearchProject.namespace), col(Cluster.name))
    )
    if since is not None:
        stmt = stmt.where(col(Finding.last_seen) >= since)
    rows = session.execute(stmt).all()
    out = [ProjectWaste(pid, ns, cluster, round(float(hours or 0), 3), n) for pid, ns, cluster, hours, n in rows]
    return sorted(out, key=lambda w: (-w.idle_gpu_hours, w.cluster, w.namespace))


# --- the pipeline's own figures -------------------------------------------------------------------


@dataclass(frozen=True)
class StageFigure:
    name: str
    description: str
    dropped: int


@dataclass(frozen=True)
class PipelineOverview:
    counters: dict[str, int]
    stages: list[StageFigure]
    safety: dict[str, int]
    straggler: dict[str, int]
    llm: dict[str, int]
    correlation: dict[str, int]
    open_findings: int
    input_oldest: datetime | None
    input_newest: datetime | None
    input_rows: int
    funnel: list[tuple[str, int]] = field(default_factory=list)

    @property
    def raw(self) -> int:
        return self.counters.get("raw", 0)

    @property
    def escalations(self) -> int:
        return self.counters.get("escalations", 0)

    @property
    def compression(self) -> float | None:
        return compression(self.raw, self.escalations)


def pipeline_overview(session: Session, scope: ReadScope) -> PipelineOverview:
    """Cumulative counters as the worker stored them, grouped for the pipeline page and API.

    The counters are the whole fleet's pipeline throughput (they name no project); ``open_findings`` is
    of the caller's ``scope``, like every list of findings.
    """
    counters = read_counters(session)

    def prefixed(prefix: str) -> dict[str, int]:
        return {k.removeprefix(prefix): v for k, v in sorted(counters.items()) if k.startswith(prefix)}

    stages = [StageFigure(name, description, counters.get(f"{name}.dropped", 0)) for name, description in STAGES]
    safety = {
        "critical_suppressed": 0,
        "critical_exempted": 0,
        "critical_distinct_subjects": 0,
        "unseen_kind_passed": 0,
        **prefixed("safety."),
    }
    open_findings = session.execute(
        select(func.count()).select_from(Finding).where(col(Finding.status).in_(LIVE_STATUSES), findings_visible(scope))
    ).scalar_one()
    oldest, newest, rows = input_span(session)
    funnel = [
        (label, counters.get(name, 0))
        for label, name in (
            ("raw signals", "raw"),
            ("kept", "kept"),
            ("findings", "findings"),
            ("escalations", "escalations"),
        )
    ]
    return PipelineOverview(
        counters=counters,
        stages=stages,
        safety=safety,
        straggler=prefixed("straggler."),
        llm=prefixed("llm."),
        correlation=prefixed("correlation."),
        open_findings=int(open_findings),
        input_oldest=oldest,
        input_newest=newest,
        input_rows=rows,
        funnel=funnel,
    )


# --- placement ------------------------------------------------------------------------------------


def placement_candidates(session: Session, scope: ReadScope) -> list[NodeCapacity]:
    """Every visible node with its GPUs' capacity, health, contention and open findings."""
    nodes = session.execute(
        select(col(Node.id), col(Node.hostname), col(Node.cluster_id), col(Cluster.name), col(Node.gpu_model))
        .join(Cluster, col(Cluster.id) == col(Node.cluster_id))
        .where(nodes_visible(scope), col(Node.health) != Health.MISSING.value)
    ).all()
    if not nodes:
        return []
    node_ids = [n[0] for n in nodes]
    gpus = session.execute(
        select(
            col(Gpu.id), col(Gpu.node_id), col(Gpu.uuid), col(Gpu.health), col(Gpu.mig_mode), col(Gpu.utilization)
        ).where(col(Gpu.node_id).in_(node_ids), col(Gpu.health) != Health.MISSING.value)
    ).all()
    gpu_ids = [g[0] for g in gpus]
    held = (
        {
            gpu_id
            for (gpu_id,) in session.execute(
                select(col(Allocation.gpu_id))
                .where(col(Allocation.until).is_(None), col(Allocation.gpu_id).in_(gpu_ids))
                .distinct()
            ).all()
        }
        if gpus
        else set()
    )
    by_node: dict[int, list[Any]] = defaultdict(list)
    node_of_uuid: dict[str, int] = {}
    for gpu in gpus:
        by_node[gpu.node_id].append(gpu)
        node_of_uuid[gpu.uuid] = gpu.node_id
    subjects = {f"node:{cluster}/{host}": node_id for node_id, host, _, cluster, _ in nodes}
    findings: dict[int, dict[str, int]] = defaultdict(lambda: {"warning": 0, "critical": 0})
    for subject, severity in session.execute(
        select(col(Finding.subject), col(Finding.severity)).where(
            col(Finding.status).in_(LIVE_STATUSES),
            col(Finding.severity).in_(("warning", "critical")),
            or_(
                col(Finding.subject).startswith("gpu:"),
                col(Finding.subject).startswith("node:"),
                col(Finding.subject).startswith("slice:"),
            ),
        )
    ).all():
        if subject.startswith("node:"):
            node_id = subjects.get(subject)
        else:
            node_id = node_of_uuid.get(subject.split(":", 1)[1].split("/", 1)[0])
        if node_id is not None:
            findings[node_id][severity] += 1
    out = []
    for node_id, hostname, cluster_id, cluster, model in nodes:
        members = by_node.get(node_id, [])
        if not members:
            continue
        allocated = [g for g in members if g.id in held]
        busy = [g.utilization for g in allocated if g.utilization is not None]
        out.append(
            NodeCapacity(
                node_id=node_id,
                hostname=hostname,
                cluster_id=cluster_id,
                cluster=cluster,
                model=model or "",
                gpus_total=len(members),
                gpus_free=sum(1 for g in members if g.id not in held and not g.mig_mode and g.health == Health.HEALTHY),
                gpus_healthy=sum(1 for g in members if g.health == Health.HEALTHY),
                gpus_allocated=float(len(allocated)),
                utilization_allocated=sum(busy) / len(busy) if busy else None,
                warning_findings=findings[node_id]["warning"] if node_id in findings else 0,
                critical_findings=findings[node_id]["critical"] if node_id in findings else 0,
            )
        )
    return out


def placement(session: Session, scope: ReadScope, model: str, count: int) -> list[Placement]:
    if not model.strip():
        raise InvalidQuery("model: give a GPU model, e.g. a100, h100, l40s or a full modelName")
    if count < 1:
        raise InvalidQuery("count: at least 1")
    return rank_nodes(placement_candidates(session, scope), model, count)


def visible_models(session: Session, scope: ReadScope) -> list[str]:
    return [
        m
        for (m,) in session.execute(
            select(col(Node.gpu_model))
            .where(nodes_visible(scope), col(Node.gpu_model).is_not(None))
            .distinct()
            .order_by(Node.gpu_model)
        ).all()
    ]


def kinds_in_use(session: Session, scope: ReadScope) -> list[str]:
    return [
        k
        for (k,) in session.execute(
            select(col(Finding.kind)).where(findings_visible(scope)).distinct().order_by(col(Finding.kind))
        ).all()
    ]
