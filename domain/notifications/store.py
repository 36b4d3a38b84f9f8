"""The notification tables: idle allocations read from findings, decisions, the outbox and its leases.

Deciding is idempotent: each decided notice has a unique ``idle_notice.notice_key`` and each outbox
row a unique ``idempotency_key``, both inserted with ON CONFLICT DO NOTHING in one transaction. The
notices are inserted first and a message carries only the notices its own insert added, so a worker
that decides the same notice again (a restart, a second replica) adds nothing.

Sending claims rows with a lease in one conditional UPDATE (``... WHERE lease_until IS NULL OR
lease_until < now``): on PostgreSQL a concurrent claimer re-checks the condition after the first
commits, on SQLite writers are serialised, so two replicas never hold the same row. Results are
written only by the holder of the lease (``lease_owner`` is a token unique to the claim).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from domain.models import (
    Cluster,
    Finding,
    Hub,
    IdleNotice,
    NotificationExemption,
    NotificationOutbox,
    ResearchProject,
    Workload,
)
from domain.notifications.rules import History, IdleAllocation
from domain.pipeline.findings import LIVE_STATUSES
from domain.pipeline.signals import IDLE_ALLOCATED, workload_subject
from domain.statuses import OutboxStatus


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# --- what is idle --------------------------------------------------------------------------------


def idle_allocations(session: Session, now: datetime, stale_after: timedelta) -> list[IdleAllocation]:
    """Workloads with a live idle-while-allocated finding, one per pod, from the pipeline's findings.

    A finding not refreshed within ``stale_after`` has unknown current utilisation (the poll stopped
    seeing it, or the source went quiet): it is returned with ``utilisation=None``, which never counts
    as idle.
    """
    rows = session.execute(
        select(Finding, col(Hub.name))
        .join(ResearchProject, col(ResearchProject.id) == col(Finding.project_id), isouter=True)
        .join(Cluster, col(Cluster.id) == col(ResearchProject.cluster_id), isouter=True)
        .join(Hub, col(Hub.id) == col(Cluster.hub_id), isouter=True)
        .where(col(Finding.kind) == IDLE_ALLOCATED, col(Finding.status).in_(LIVE_STATUSES))
    ).all()
    grouped: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    hubs: dict[int, str] = {}
    for finding, hub in rows:
        if finding.project_id is not None and hub is not None:
            hubs[finding.project_id] = hub
        labels = (finding.evidence or {}).get("labels") or {}
        cluster, namespace, pod = labels.get("cluster"), labels.get("namespace"), labels.get("pod")
        if cluster and namespace and pod:
            grouped[(cluster, namespace, pod)].append(finding)
    workloads = _open_workloads(session, grouped.keys())
    out = []
    for (cluster, namespace, pod), findings in grouped.items():
        values: list[float] = []
        gpus: list[str] = []
        nodes: set[str] = set()
        for finding in findings:
            for member in (finding.evidence or {}).get("members") or []:
                if isinstance(member.get("value"), int | float):
                    values.append(float(member["value"]))
                gpus.append(str(member.get("gpu") or member.get("subject", "")))
                if member.get("node"):
                    nodes.add(str(member["node"]))
            node = (finding.evidence or {}).get("labels", {}).get("node")
            if node:
                nodes.add(str(node))
        last_seen = max(f.last_seen for f in findings)
        fresh = now - last_seen <= stale_after
        project_id = next((f.project_id for f in findings if f.project_id is not None), None)
        out.append(
            IdleAllocation(
                subject=workload_subject(cluster, namespace, pod),
                project_id=project_id,
                cluster=cluster,
                namespace=namespace,
                pod=pod,
                idle_since=min(f.first_seen for f in findings),
                utilisation=round(sum(values) / len(values), 2) if values and fresh else None,
                idle_gpu_hours=round(sum(f.waste_gpu_hours for f in findings), 3),
                gpus=tuple(sorted(set(gpus))),
                node=",".join(sorted(nodes)) or None,
                workload_id=workloads.get((cluster, namespace, pod)),
                hub=hubs.get(project_id) if project_id is not None else None,
            )
        )
    return sorted(out, key=lambda a: a.subject)


def _open_workloads(session: Session, pods: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    wanted = set(pods)
    if not wanted:
        return {}
    namespaces = {ns for _c, ns, _p in wanted}
    out: dict[tuple[str, str, str], int] = {}
    for sid, cluster, namespace, pod in session.execute(
        select(
            col(Workload.id),
            col(Workload.cluster),
            col(Workload.namespace),
            col(Workload.pod),
        ).where(col(Workload.ended_at).is_(None), col(Workload.namespace).in_(namespaces))
    ).all():
        if (cluster, namespace, pod) in wanted:
            out.setdefault((cluster, namespace, pod), sid)
    return out


def histories(session: Session, allocations: Sequence[IdleAllocation]) -> dict[str, History]:
    """What was decided so far for each allocation's current idle episode."""
    if not allocations:
        return {}
    since = {a.subject: a.idle_since for a in allocations}
    out: dict[str, History] = {}
    subjects = list(since)
    for start in range(0, len(subjects), 500):
        chunk = subjects[start : start + 500]
        rows = session.execute(
            select(
                col(IdleNotice.subject), col(IdleNotice.idle_since), col(IdleNotice.kind), col(IdleNotice.decided_at)
            ).where(col(IdleNotice.subject).in_(chunk))
        ).all()
        for subject, idle_since, kind, decided_at in rows:
            if idle_since < since[subject]:
                continue  # an earlier episode: the workload was busy in between
            # (a later idle_since is this episode seen before its finding's start moved earlier)
            before = out.get(subject, History())
            last = max(filter(None, (before.last_notice_at, decided_at)))
            out[subject] = History(before.notices + 1, last, before.escalated or kind == "escalation")
    return out


def active_exemptions(
    session: Session, allocations: Sequence[IdleAllocation], now: datetime
) -> dict[tuple[str | None, str], datetime]:
    """Latest expiry of the unrevoked exemptions in force, by (hub, workload subject): a cluster name
    is unique only within its hub, so an exemption never silences a namesake workload of another hub."""
    out: dict[tuple[str | None, str], datetime] = {}
    subjects = sorted({a.subject for a in allocations})
    for start in range(0, len(subjects), 500):
        chunk = subjects[start : start + 500]
        for hub, subject, expires in session.execute(
            select(
                col(NotificationExemption.hub),
                col(NotificationExemption.subject),
                func.max(col(NotificationExemption.expires_at)),
            )
            .where(
                col(NotificationExemption.subject).in_(chunk),
                col(NotificationExemption.revoked_at).is_(None),
                col(NotificationExemption.expires_at) > now,
            )
            .group_by(NotificationExemption.hub, NotificationExemption.subject)
        ).all():
            out[(hub, subject)] = expires if expires.tzinfo else expires.replace(tzinfo=now.tzinfo)
    return out


# --- deciding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeRecord:
    """One decided notice about one workload, part of a message."""

    key: str
    allocation: IdleAllocation
    kind: str
    number: int


@dataclass(frozen=True)
class OutboxMessage:
    idempotency_key: str
    channel: str
    kind: str
    project_id: int | None
    recipients: tuple[str, ...]
    subject: str
    body: str
    payload: dict[str, Any]


def claim_notices(session: Session, notices: Sequence[NoticeRecord], now: datetime) -> list[NoticeRecord]:
    """Put notices on record and return those this call inserted (not those another decider already had).

    Messages are built from what this returns only, so a second decider racing this one (a replica,
    a restart) finds nothing new: on PostgreSQL its conflicting insert waits for this transaction and
    then does nothing; on SQLite writers are serialised.
    """
    if not notices:
        return []
    inserted: set[str] = set()
    for start in range(0, len(notices), 500):
        chunk = notices[start : start + 500]
        inserted.update(
            session.execute(
                _insert(session, IdleNotice)
                .values(
                    [
                        {
                            "notice_key": notice.key,
                            "subject": notice.allocation.subject,
                            "project_id": notice.allocation.project_id,
                            "idle_since": notice.allocation.idle_since,
                            "kind": notice.kind,
                            "number": notice.number,
                            "decided_at": now,
                        }
                        for notice in chunk
                    ]
                )
                .on_conflict_do_nothing(index_elements=["notice_key"])
                .returning(IdleNotice.notice_key)
            ).scalars()
        )
    return [notice for notice in notices if notice.key in inserted]


def record(session: Session, message: OutboxMessage, now: datetime, notices: Sequence[NoticeRecord] = ()) -> bool:
    """Put a message in the outbox (linking ``notices``, already claimed, to it); False when it was already there."""
    result = session.execute(
        _insert(session, NotificationOutbox)
        .values(
            idempotency_key=message.idempotency_key,
            channel=message.channel,
            kind=message.kind,
            project_id=message.project_id,
            recipients=list(message.recipients),
            subject=message.subject[:512],
            body=message.body,
            payload=message.payload,
            status=OutboxStatus.PENDING.value,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(NotificationOutbox.id)
    ).first()
    if result is None:
        return False
    keys = [notice.key for notice in notices]
    for start in range(0, len(keys), 500):
        session.execute(
            update(IdleNotice)
            .where(col(IdleNotice.notice_key).in_(keys[start : start + 500]))
            .values(outbox_id=result[0])
            .execution_options(synchronize_session=False)
        )
    return True


# --- sending -------------------------------------------------------------------------------------


def claim(session: Session, owner: str, now: datetime, lease: timedelta, limit: int) -> list[NotificationOutbox]:
    """Lease up to ``limit`` due messages to ``owner``; only this claim can then record their results."""
    token = f"{owner[:90]}/{uuid.uuid4().hex}"
    free = or_(col(NotificationOutbox.lease_until).is_(None), col(NotificationOutbox.lease_until) < now)
    due = and_(
        col(NotificationOutbox.status) == OutboxStatus.PENDING.value,
        col(NotificationOutbox.next_attempt_at) <= now,
        free,
    )
    ids = (
        select(col(NotificationOutbox.id))
        .where(due)
        .order_by(col(NotificationOutbox.next_attempt_at), col(NotificationOutbox.id))
        .limit(limit)
    )
    lease_values = {"lease_owner": token, "lease_until": now + lease}
    if session.get_bind().dialect.name == "postgresql":
        # Two statements, not UPDATE ... IN (SELECT ... LIMIT): PostgreSQL may rescan such a subquery
        # and lease more than ``limit`` rows. SKIP LOCKED lets replicas claim side by side.
        chosen = list(session.execute(ids.with_for_update(skip_locked=True)).scalars())
        target = col(NotificationOutbox.id).in_(chosen) if chosen else None
    else:
        # SQLite: one statement, so the read never has to upgrade to a write lock (which can deadlock
        # between two connections); SQLite evaluates the IN list once.
        target = col(NotificationOutbox.id).in_(ids.scalar_subquery())
    if target is not None:
        session.execute(
            update(NotificationOutbox)
            .where(target, due)
            .values(**lease_values)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return list(
        session.execute(
            select(NotificationOutbox)
            .where(col(NotificationOutbox.lease_owner) == token)
            .order_by(col(NotificationOutbox.id))
            .execution_options(populate_existing=True)
        ).scalars()
    )


def finish(
    session: Session, row: NotificationOutbox, now: datetime, error: str | None, retry_at: datetime | None
) -> bool:
    """Record one attempt by the lease holder: sent, retry at ``retry_at``, or failed for good (no retry)."""
    values: dict[str, Any] = {
        "attempts": NotificationOutbox.attempts + 1,
        "lease_owner": None,
        "lease_until": None,
        "last_error": None if error is None else error[:1024],
    }
    if error is None:
        values.update(status=OutboxStatus.SENT.value, sent_at=now)
    elif retry_at is not None:
        values.update(next_attempt_at=retry_at)
    else:
        values.update(status=OutboxStatus.FAILED.value)
    result = session.execute(
        update(NotificationOutbox)
        .where(col(NotificationOutbox.id) == row.id, col(NotificationOutbox.lease_owner) == row.lease_owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def outbox_counts(session: Session) -> dict[str, int]:
    return {
        status: count
        for status, count in session.execute(
            select(col(NotificationOutbox.status), func.count()).group_by(col(NotificationOutbox.status))
        ).all()
    }
