"""The entry points the receiver and the poll call: :func:`apply_alerts` and :func:`apply_poll`.

Nothing here commits: the caller owns the transaction and emits spans for ``changes.closed``
once it has committed. The rules are in :mod:`worker.workloads.rules` and
:mod:`worker.workloads.samples`, the SQL in :mod:`worker.workloads.store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from domain.inventory.health import DEGRADED_TEMPERATURE_C
from domain.json_parameter import DOCUMENT_ROWS
from domain.models import Hub
from domain.statuses import WorkloadSource
from domain.telemetry.readings import Snapshot
from worker.bulk import is_postgresql
from worker.inventory.store import hub_project_ids
from worker.workloads import store
from worker.workloads.rules import (
    XID_EVENT,
    AlertObservation,
    Candidate,
    Pending,
    WorkloadChanges,
    add_event,
    close_candidate,
    close_workload,
    covering,
    join_alert,
    new_row,
    xid_attributes,
)
from worker.workloads.samples import PollPlan, Seen, sample, seen_workloads
from worker.workloads.sums import IDLE_PERCENT

# --- the alert view ---------------------------------------------------------------------------------


def apply_alerts(db: Session, observations: Sequence[AlertObservation]) -> WorkloadChanges:
    """Open, join or close workloads for new alert receipts, oldest first."""
    changes = WorkloadChanges()
    usage = [o for o in observations if o.kind == "usage" and o.key.fits()]
    xids = [o for o in observations if o.kind == "xid" and o.key.gpu_uuid]
    if usage:
        _apply_usage_alerts(db, usage, changes)
    if xids:
        _apply_xid_alerts(db, xids, changes)
    db.flush()
    return changes


def _apply_usage_alerts(db: Session, observations: list[AlertObservation], changes: WorkloadChanges) -> None:
    digests = sorted({o.key.digest for o in observations})
    earliest = min(o.starts_at for o in observations)
    postgresql = is_postgresql(db)
    if postgresql:
        store.lock_workloads(db, digests)
    by_key: dict[str, list[Candidate]] = store.rows_by_key(db, digests, earliest, postgresql)
    projects = store.project_ids(db, {(o.key.cluster, o.key.namespace) for o in observations})
    pending: list[Pending] = []
    closing: dict[datetime, list[int]] = {}
    # firing before resolved at the same start, so a batch holding both opens and then closes
    for observation in sorted(observations, key=lambda o: (o.starts_at, o.status != "firing")):
        rows = by_key.setdefault(observation.key.digest, [])
        project_id = projects.get((observation.key.cluster, observation.key.namespace))
        existing = covering(rows, observation.starts_at)
        if existing is not None:
            join_alert(existing, observation, project_id)
            if observation.status == "firing":
                changes.joined += 1
            elif existing.ended_at is None:
                close_candidate(existing, observation.ends_at or observation.starts_at, changes, closing)
            continue
        # a new workload; for a resolved alert the firing notification never reached us, so the
        # whole workload arrives at once
        new = Pending(
            observation.key,
            observation.starts_at,
            observation.fingerprint,
            observation.container,
            observation.node,
            observation.gpu_model,
            observation.summary,
            project_id,
        )
        pending.append(new)
        rows.append(new)
        changes.opened += 1
        if observation.status == "resolved":
            close_candidate(new, observation.ends_at or observation.starts_at, changes, closing)
    store.write_ends(db, closing)
    store.insert_pending(db, pending, changes)


def _apply_xid_alerts(db: Session, observations: list[AlertObservation], changes: WorkloadChanges) -> None:
    firing = [o for o in observations if o.status == "firing"]
    if not firing:
        return
    uuids = sorted({o.key.gpu_uuid for o in firing if o.key.gpu_uuid})
    open_rows = store.open_on_gpus(db, uuids)
    for observation in sorted(firing, key=lambda o: o.starts_at):
        for row in open_rows.get((observation.key.cluster, observation.key.gpu_uuid or ""), []):
            add_event(row, XID_EVENT, max(observation.starts_at, row.started_at), xid_attributes(observation))
            if observation.xid_code is not None:
                row.last_xid = observation.xid_code
            changes.events += 1


# --- the poll view ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenWorkloads:
    """The open workloads of some clusters as plain rows, read before the poll's snapshot is in."""

    clusters: frozenset[str]
    rows: Sequence[Any]


def load_open(db: Session, clusters: Iterable[str]) -> OpenWorkloads:
    """What :func:`apply_poll` compares against, read while the source is still answering."""
    names = frozenset(clusters)
    return OpenWorkloads(names, store.open_plain_rows(db, sorted(names)) if names else ())


@dataclass(frozen=True)
class PollReads:
    """What planning a poll's workloads needs from the database: the open workloads of the snapshot's
    clusters and the hub's project ids by (cluster name, namespace)."""

    open_rows: Sequence[Any]
    projects: dict[tuple[str, str], int]


def read_for_poll(db: Session, hub: Hub, snapshot: Snapshot, loaded: OpenWorkloads | None = None) -> PollReads:
    """The reads :func:`plan_poll` needs; ``loaded``: open workloads read beforehand (:func:`load_open`),
    clusters it does not cover are read here. Expects the inventory to be applied (projects exist)."""
    clusters = sorted(set(snapshot.clusters) | {r.cluster for r in snapshot.gpus})
    if not clusters:
        return PollReads((), {})
    known = loaded.clusters if loaded is not None else frozenset()
    unread = [c for c in clusters if c not in known]
    open_rows = [r for r in loaded.rows if r.cluster in clusters] if loaded is not None else []
    if unread:
        open_rows.extend(store.open_plain_rows(db, unread))
    return PollReads(open_rows, hub_project_ids(db, hub.id or 0))


def plan_poll(
    reads: PollReads,
    snapshot: Snapshot,
    *,
    idle_threshold_percent: float = IDLE_PERCENT,
    hot_threshold_c: float = DEGRADED_TEMPERATURE_C,
) -> PollPlan:
    """What the poll does to each workload; pure, so the poller runs it beside the ledger's writes."""
    seen = seen_workloads(snapshot, idle_threshold_percent, hot_threshold_c)
    plan = PollPlan(seen, {r.uuid for r in snapshot.gpus}, reads.projects, snapshot.taken_at - _window(snapshot))
    for row in reads.open_rows:
        plan.consider(row, snapshot)
    return plan


def apply_plan(db: Session, plan: PollPlan, snapshot: Snapshot) -> WorkloadChanges:
    """Write a :func:`plan_poll` plan: bulk samples, then the few workloads that gain an event, close
    or open through the ORM."""
    changes = WorkloadChanges()
    changes.sampled += plan.sampled
    plan.to_close.extend(store.on_missing_gpus(db, plan.unreported))
    store.write_samples(db, plan.updates)
    for orm_row in store.load(db, [*plan.to_sample, *plan.to_close]):
        if orm_row.project_id is None:
            orm_row.project_id = plan.projects.get((orm_row.cluster, orm_row.namespace))
        if orm_row.id in plan.to_sample:
            sample(orm_row, plan.to_sample[orm_row.id], snapshot, changes)
        else:
            close_workload(orm_row, snapshot.taken_at, changes)
    _open_seen(db, plan.seen, plan.open_keys, plan.projects, snapshot, changes)
    db.flush()
    return changes


def apply_poll(
    db: Session,
    hub: Hub,
    snapshot: Snapshot,
    *,
    idle_threshold_percent: float = IDLE_PERCENT,
    hot_threshold_c: float = DEGRADED_TEMPERATURE_C,
    loaded: OpenWorkloads | None = None,
) -> WorkloadChanges:
    """Bring the workloads of the snapshot's clusters in line with the pods it saw.

    Expects :func:`worker.inventory.apply_snapshot` to have run in the same transaction (projects
    exist, missing GPUs are marked).

    A fleet of thousands of GPUs has thousands of open workloads, nearly all of which only take a
    usage sample: those are read as plain rows (without their events) and written in one bulk
    UPDATE, and only when a figure changed. Workloads that gain an event, close or open go through
    the ORM. The three steps (:func:`read_for_poll`, :func:`plan_poll`, :func:`apply_plan`) are
    separate so the poller can plan while the ledger writes.
    """
    reads = read_for_poll(db, hub, snapshot, loaded)
    plan = plan_poll(reads, snapshot, idle_threshold_percent=idle_threshold_percent, hot_threshold_c=hot_threshold_c)
    return apply_plan(db, plan, snapshot)


def _window(snapshot: Snapshot) -> timedelta:
    return timedelta(seconds=snapshot.window_seconds)


def _open_seen(
    db: Session,
    seen: dict[str, Seen],
    open_keys: set[str],
    projects: dict[tuple[str, str], int],
    snapshot: Snapshot,
    changes: WorkloadChanges,
) -> None:
    new = sorted(k for k in seen if k not in open_keys)
    if not new:
        return
    now = snapshot.taken_at
    just_closed = store.alert_closed_since(db, new, now - _window(snapshot))
    opened: list[dict[str, Any]] = []  # written as plain rows, a document at a time (store.insert_open)
    for digest in new:
        if digest in just_closed:
            continue  # an alert closed it more recently than this poll's data: no reopening
        current = seen[digest]
        where = f"GPU {current.reading.index}" + (
            f" MIG {current.part.profile} #{current.part.mig_instance_id}" if current.part is not None else ""
        )
        key = current.key
        row = new_row(
            key,
            now,
            WorkloadSource.POLL,
            container=current.workload.container,
            node=current.reading.node,
            gpu_model=current.reading.model,
            project_id=projects.get((key.cluster, key.namespace)),
            summary=f"{key.namespace}/{key.pod} on {key.cluster}/{current.reading.node} {where}",
            fingerprint=None,
        )
        changes.opened += 1
        sample(row, current, snapshot, changes)
        opened.append(store.column_values(row))
        if len(opened) >= DOCUMENT_ROWS:
            store.insert_open(db, opened)
            opened = []
    store.insert_open(db, opened)
