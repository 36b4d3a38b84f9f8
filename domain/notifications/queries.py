"""The site's side of notifications: the outbox, exemptions and policies a caller may see, and their answers.

Every read is filtered by the caller's :class:`ReadScope` in SQL. An exemption may be set by anyone
who may read the workload's project (it is their workload, or their team's); policies are set by
admins only (the page checks). Every change writes a ``notification_audit`` row in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import false, func, or_, select, true
from sqlmodel import Session, col

from domain.access import Forbidden, Principal, ReadScope
from domain.inventory.paging import Page, PageRequest
from domain.inventory.queries import NotFound
from domain.models import (
    Cluster,
    Finding,
    Hub,
    NotificationAudit,
    NotificationExemption,
    NotificationOutbox,
    NotificationPolicyOverride,
    ResearchProject,
    Workload,
)
from domain.notifications.policies import load_policies
from domain.notifications.rules import Policy, exemption_expiry
from domain.pipeline.findings import LIVE_STATUSES
from domain.pipeline.signals import IDLE_ALLOCATED, workload_subject
from domain.settings import NotificationPolicies, PolicySettings

OUTBOX_STATUSES = ("pending", "sent", "failed", "all")


class ExemptionError(ValueError):
    """The answer cannot be taken (unknown workload, empty reason); the message says why."""


def _project_filter(column: Any, scope: ReadScope) -> Any:
    if scope.everything:
        return true()
    if scope.is_empty:
        return false()
    visible = select(col(ResearchProject.id)).where(
        or_(
            col(ResearchProject.id).in_(scope.project_ids),
            col(ResearchProject.cluster_id).in_(scope.cluster_ids),
        )
    )
    return col(column).in_(visible)


@dataclass(frozen=True)
class OutboxRow:
    row: NotificationOutbox
    project: str | None


def list_outbox(session: Session, scope: ReadScope, page: PageRequest, *, status: str = "all") -> Page[OutboxRow]:
    where = [_project_filter(NotificationOutbox.project_id, scope)]
    if status != "all":
        where.append(NotificationOutbox.status == status)
    total = session.execute(select(func.count()).select_from(NotificationOutbox).where(*where)).scalar_one()
    rows = session.execute(
        select(NotificationOutbox, col(ResearchProject.namespace))
        .join(ResearchProject, col(ResearchProject.id) == col(NotificationOutbox.project_id), isouter=True)
        .where(*where)
        .order_by(col(NotificationOutbox.created_at).desc(), col(NotificationOutbox.id).desc())
        .limit(page.limit)
        .offset(page.offset)
    ).all()
    return Page([OutboxRow(r, ns) for r, ns in rows], total, page.limit, page.offset)


def outbox_counts(session: Session, scope: ReadScope) -> dict[str, int]:
    rows = session.execute(
        select(col(NotificationOutbox.status), func.count())
        .where(_project_filter(NotificationOutbox.project_id, scope))
        .group_by(NotificationOutbox.status)
    ).all()
    return {status: count for status, count in rows}


@dataclass(frozen=True)
class ExemptionRow:
    row: NotificationExemption
    project: str
    cluster: str


def list_exemptions(session: Session, scope: ReadScope) -> list[ExemptionRow]:
    stmt = (
        select(NotificationExemption, col(ResearchProject.namespace), col(Cluster.name))
        .join(ResearchProject, col(ResearchProject.id) == col(NotificationExemption.project_id))
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id))
        .where(_project_filter(NotificationExemption.project_id, scope))
        .order_by(col(NotificationExemption.created_at).desc())
        .limit(500)
    )
    return [ExemptionRow(r, ns, cluster) for r, ns, cluster in session.execute(stmt).all()]


def _audit(
    session: Session,
    principal: Principal,
    action: str,
    project_id: int,
    now: datetime,
    detail: dict[str, Any],
    subject: str | None = None,
) -> None:
    """The ``notification_audit`` row of a change, in the caller's transaction."""
    session.add(
        NotificationAudit(
            at=now, actor=principal.subject, action=action, project_id=project_id, subject=subject, detail=detail
        )
    )


POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class ProjectPod:
    project_id: int
    hub: str
    cluster: str
    namespace: str
    pod: str

    @property
    def subject(self) -> str:
        return workload_subject(self.cluster, self.namespace, self.pod)


def workload_of(session: Session, scope: ReadScope, project_id: int, pod: str) -> ProjectPod:
    """A pod of a project the caller may read; NotFound for a project they may not (the same answer as unknown)."""
    if not POD_NAME.fullmatch(pod):
        raise ExemptionError("not a pod name (lower-case letters, digits, '-' and '.')")
    row = session.execute(
        select(col(ResearchProject.namespace), col(Cluster.name), col(Hub.name))
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id))
        .join(Hub, col(Hub.id) == col(Cluster.hub_id))
        .where(col(ResearchProject.id) == project_id, _project_filter(col(ResearchProject.id), scope))
    ).first()
    if row is None:
        raise NotFound(f"project {project_id}")
    namespace, cluster, hub = row
    return ProjectPod(project_id, hub, cluster, namespace, pod)


def is_present(session: Session, workload: ProjectPod) -> bool:
    """Whether the pod has an open workload or a live idle finding in its project: only pods that
    exist can be exempted (a pre-silenced name would also silence the operators' GPUAllocatedIdle alert)."""
    open_workload = session.execute(
        select(col(Workload.id))
        .where(
            col(Workload.ended_at).is_(None),
            col(Workload.cluster) == workload.cluster,
            col(Workload.namespace) == workload.namespace,
            col(Workload.pod) == workload.pod,
            or_(col(Workload.project_id).is_(None), col(Workload.project_id) == workload.project_id),
        )
        .limit(1)
    ).first()
    if open_workload is not None:
        return True
    findings = session.execute(
        select(col(Finding.evidence)).where(
            col(Finding.project_id) == workload.project_id,
            col(Finding.kind) == IDLE_ALLOCATED,
            col(Finding.status).in_(LIVE_STATUSES),
        )
    ).scalars()
    return any(((evidence or {}).get("labels") or {}).get("pod") == workload.pod for evidence in findings)


def policy_for(session: Session, configured: NotificationPolicies, project_id: int) -> Policy:
    return load_policies(session, configured).for_project(project_id)


def exempt(
    session: Session,
    scope: ReadScope,
    principal: Principal,
    project_id: int,
    pod: str,
    reason: str,
    requested: timedelta,
    configured: NotificationPolicies,
    now: datetime,
) -> NotificationExemption:
    """ "Still using it": no notices for this workload until the (capped) expiry; audited."""
    workload = workload_of(session, scope, project_id, pod)
    if not is_present(session, workload):
        raise ExemptionError(
            f"no running workload {workload.namespace}/{pod} in this project: only a pod that is running "
            "(or was seen idle) can be exempted"
        )
    subject = workload.subject
    reason = reason.strip()
    if not reason:
        raise ExemptionError("say briefly why the GPUs are still needed")
    policy = policy_for(session, configured, project_id)
    expires = exemption_expiry(requested, policy, now)
    if expires <= now:
        raise ExemptionError("the exemption must last a while")
    exemption = NotificationExemption(
        hub=workload.hub,
        subject=subject,
        project_id=project_id,
        reason=reason[:1024],
        created_by=principal.subject,
        created_at=now,
        expires_at=expires,
    )
    session.add(exemption)
    session.flush()
    detail = {
        "exemption_id": exemption.id,
        "hub": workload.hub,
        "reason": exemption.reason,
        "requested_hours": round(requested / timedelta(hours=1), 2),
        "expires_at": expires.isoformat(),
        "capped": expires < now + requested,
    }
    _audit(session, principal, "exemption.create", project_id, now, detail, subject)
    return exemption


def revoke_exemptions(
    session: Session, scope: ReadScope, principal: Principal, project_id: int, pod: str, now: datetime
) -> int:
    """End the exemptions in force for one workload (notices resume); audited. Returns how many."""
    workload = workload_of(session, scope, project_id, pod)
    rows = list(
        session.execute(
            select(NotificationExemption).where(
                col(NotificationExemption.hub) == workload.hub,
                col(NotificationExemption.subject) == workload.subject,
                col(NotificationExemption.project_id) == project_id,
                col(NotificationExemption.revoked_at).is_(None),
                col(NotificationExemption.expires_at) > now,
            )
        ).scalars()
    )
    for row in rows:
        row.revoked_at, row.revoked_by = now, principal.subject
        session.add(row)
        _audit(session, principal, "exemption.revoke", project_id, now, {"exemption_id": row.id}, row.subject)
    return len(rows)


@dataclass(frozen=True)
class ProjectPolicy:
    project_id: int
    namespace: str
    cluster: str
    policy: Policy
    override: NotificationPolicyOverride | None


def list_policies(
    session: Session, scope: ReadScope, configured: NotificationPolicies
) -> tuple[Policy, list[ProjectPolicy]]:
    book = load_policies(session, configured)
    overrides = {o.project_id: o for o in session.execute(select(NotificationPolicyOverride)).scalars()}
    rows = session.execute(
        select(col(ResearchProject.id), col(ResearchProject.namespace), col(Cluster.name))
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id))
        .where(_project_filter(ResearchProject.id, scope))
        .order_by(Cluster.name, ResearchProject.namespace)
        .limit(2000)
    ).all()
    return book.default, [
        ProjectPolicy(pid, ns, cluster, book.for_project(pid), overrides.get(pid)) for pid, ns, cluster in rows
    ]


POLICY_FIELDS = (
    "enabled",
    "idle_threshold_percent",
    "grace_minutes",
    "reminder_interval_minutes",
    "escalate_after_minutes",
    "quiet_hours",
    "timezone",
    "max_exemption_days",
)
"""The fields of a project's override; each None inherits."""


def set_override(
    session: Session, principal: Principal, project_id: int, changes: dict[str, Any], now: datetime
) -> NotificationPolicyOverride:
    """Change the named fields of an admin's per-project policy (None: inherit); the others stay as they
    were. Validated as a whole (quiet hours and time zone together); audited with the old and new values."""
    if not principal.is_admin:
        raise Forbidden("administrators only")
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"not a policy field: {', '.join(sorted(unknown))}")
    if session.get(ResearchProject, project_id) is None:
        raise NotFound(f"project {project_id}")
    row = session.execute(
        select(NotificationPolicyOverride).where(col(NotificationPolicyOverride.project_id) == project_id)
    ).scalar_one_or_none()
    before = {f: getattr(row, f) for f in POLICY_FIELDS} if row is not None else None
    after = {**(before or dict.fromkeys(POLICY_FIELDS)), **changes}
    try:
        PolicySettings(**after)
    except ValidationError as exc:
        raise ValueError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    if row is None:
        row = NotificationPolicyOverride(project_id=project_id, updated_by=principal.subject, updated_at=now)
    for name, value in after.items():
        setattr(row, name, value)
    row.updated_by, row.updated_at = principal.subject, now
    session.add(row)
    _audit(session, principal, "policy.set", project_id, now, {"before": before, "after": after})
    return row


def list_audit(session: Session, scope: ReadScope, limit: int = 200) -> list[NotificationAudit]:
    return list(
        session.execute(
            select(NotificationAudit)
            .where(_project_filter(NotificationAudit.project_id, scope))
            .order_by(col(NotificationAudit.at).desc(), col(NotificationAudit.id).desc())
            .limit(limit)
        ).scalars()
    )
