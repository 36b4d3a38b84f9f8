"""Workload sessions: a pod using a GPU or MIG slice, from start to end, seen by alerts and by polls.

Two views of one thing:

* **alerts** (``GPUWorkloadStarted`` from the rules in ``alertmanager/``): firing opens a session,
  resolved closes it; ``GPUXidError`` adds an event to the sessions on that GPU.
* **polls**: a pod label appearing on a GPU or slice opens a session, its disappearing closes it,
  and every poll adds a usage sample (average and peak utilisation, peak memory, energy) and notes
  XID errors and thermal throttling as events.

Both address a workload by the same key (cluster, namespace, pod, GPU UUID, MIG instance), so the
views merge: whichever sees the workload first opens the session, the other joins it. At most one
session per key is open (a partial unique index), so a poll and a webhook racing to open one cannot
both succeed; the loser's transaction fails and is retried by its caller. Webhooks touching the same
workloads (a group's firing and resolved notifications, or two Alertmanager replicas) take turns on
PostgreSQL: each holds a transaction-level advisory lock per workload key, so the second sees what the
first wrote; otherwise a resolved alert racing its firing one would record a closed session beside an
open one that nothing closes.

Each view lags the other (by up to a poll interval, or an alert's evaluation and notification
round-trip), so they may disagree for a moment. The rules:

* alert firing at S joins the key's open session; or, when a session of the key ended at or after
  S (the poll saw the pod go before the delayed alert arrived), that one; otherwise it opens one at S.
* alert resolved (S, E) closes the key's open session at E; when none is open and none ended at or
  after S, it records the closed session [S, E] (the firing notification never arrived).
* a poll that sees a pod samples into its open session; it opens one unless an alert closed the
  key's session within the poll window (the poll's data is older than the alert).
* a poll that no longer sees a pod on a GPU it reports closes the session, unless an alert opened
  it within the poll window. Sessions on a GPU the poll does not report are left to alerts, until
  the GPU is marked missing.

A repeated firing notification (Alertmanager re-sends on every repeat interval) is never a new
session: the receiver drops it as a duplicate receipt, and even if it got here it would join.

Nothing here commits: the caller owns the transaction and emits spans for ``changes.closed``
once it has committed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, any_, bindparam, insert, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, or_, select

from domain.inventory.health import DEGRADED_TEMPERATURE_C
from domain.ledger.mig import slice_fraction
from domain.models import Cluster, Gpu, Hub, ResearchProject, WorkloadSession
from domain.models.base import table_of
from domain.statuses import Health, SessionSource
from domain.telemetry.readings import GpuReading, PodRef, SliceReading, Snapshot
from worker.bulk import insert_rows, is_postgresql, naive_utc, update_rows
from worker.session_sums import IDLE_PERCENT, SUMMED, add_window, profiled_clusters

log = logging.getLogger(__name__)

MAX_EVENTS = 100
"""Events kept per session; later ones are counted in the last event instead of stored."""
SUMMARY_LENGTH = 1024
_LIMITS = {"cluster": 128, "namespace": 253, "pod": 253, "container": 253, "node": 253, "gpu_uuid": 64}
_CHUNK = 500
WORKLOAD_LOCK_CLASS = 0x5E55
"""First key of the two-key advisory locks on workload keys (the pollers' source locks use the one-key form)."""

XID_EVENT = "gpu.xid_error"
THROTTLING_EVENT = "gpu.thermal_throttling"


@dataclass(frozen=True, slots=True)
class WorkloadKey:
    """One pod on one GPU (or MIG slice) of one cluster."""

    cluster: str
    namespace: str
    pod: str
    gpu_uuid: str | None
    mig_instance_id: int | None = None

    @property
    def digest(self) -> str:
        """The ``workload_key`` column: a fixed-width hash, so long names still index well."""
        parts = (self.cluster, self.namespace, self.pod, self.gpu_uuid or "", str(self.mig_instance_id or ""))
        return hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()

    def fits(self) -> bool:
        """Whether every part fits its column (labels of foreign alerts may not)."""
        return all(
            value is None or len(value) <= _LIMITS[name]
            for name, value in (
                ("cluster", self.cluster),
                ("namespace", self.namespace),
                ("pod", self.pod),
                ("gpu_uuid", self.gpu_uuid),
            )
        ) and bool(self.cluster and self.namespace and self.pod)


@dataclass(frozen=True, slots=True)
class AlertObservation:
    """What one new alert receipt says about a workload, already label-normalised by the receiver."""

    kind: Literal["usage", "xid"]
    status: Literal["firing", "resolved"]
    key: WorkloadKey
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    container: str | None = None
    node: str | None = None
    gpu_model: str | None = None
    summary: str | None = None
    xid_code: int | None = None
    xid_message: str | None = None


@dataclass
class SessionChanges:
    """What one application of alerts or of a poll did to the sessions."""

    opened: int = 0
    joined: int = 0
    sampled: int = 0
    events: int = 0
    closed: list[WorkloadSession] = field(default_factory=list)
    """Sessions closed in this transaction: each becomes a span once the caller has committed."""

    def merge(self, other: SessionChanges) -> None:
        self.opened += other.opened
        self.joined += other.joined
        self.sampled += other.sampled
        self.events += other.events
        self.closed.extend(other.closed)


def new_trace_id() -> str:
    """A random, valid (nonzero) OpenTelemetry trace id: 32 lowercase hex digits."""
    while True:
        value = secrets.token_hex(16)
        if int(value, 16):
            return value


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


def _open_row(
    key: WorkloadKey,
    started_at: datetime,
    source: SessionSource,
    *,
    container: str | None,
    node: str | None,
    gpu_model: str | None,
    summary: str | None,
    fingerprint: str | None,
    project_id: int | None,
) -> WorkloadSession:
    return WorkloadSession(
        trace_id=new_trace_id(),
        workload_key=key.digest,
        cluster=key.cluster,
        namespace=key.namespace,
        pod=key.pod,
        container=_clip(container, 253),
        node=_clip(node, 253),
        gpu_uuid=key.gpu_uuid,
        mig_instance_id=key.mig_instance_id,
        gpu_model=_clip(gpu_model or None, 128),
        started_at=started_at,
        source=source.value,
        alert_fingerprint=fingerprint,
        summary=_clip(summary, SUMMARY_LENGTH),
        project_id=project_id,
        events=[],
    )


def close_session(row: WorkloadSession, at: datetime, changes: SessionChanges) -> None:
    """End an open session at ``at`` (never before it started)."""
    if row.ended_at is not None:
        return
    row.ended_at = max(at, row.started_at)
    changes.closed.append(row)


def add_event(row: WorkloadSession, name: str, at: datetime, attributes: dict[str, Any]) -> bool:
    """Append an event (kept in time order); past :data:`MAX_EVENTS` only a counter grows."""
    events = list(row.events or [])
    if len(events) >= MAX_EVENTS:
        last = dict(events[-1])
        last["dropped_after"] = int(last.get("dropped_after", 0)) + 1
        events[-1] = last
    else:
        events.append({"name": name, "time": at.isoformat(), "attributes": attributes})
        events.sort(key=lambda e: e["time"])
    row.events = events  # a new list, so the JSON column is seen as changed
    return True


def _project_ids(
    db: Session, pairs: Iterable[tuple[str, str]], hub_id: int | None = None
) -> dict[tuple[str, str], int]:
    """Research project ids by (cluster name, namespace)."""
    wanted = set(pairs)
    if not wanted:
        return {}
    stmt = (
        select(ResearchProject.id, Cluster.name, ResearchProject.namespace)
        .join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
        .where(
            col(Cluster.name).in_({c for c, _ in wanted}),
            col(ResearchProject.namespace).in_({n for _, n in wanted}),
        )
        .order_by(col(ResearchProject.id))
    )
    if hub_id is not None:
        stmt = stmt.where(Cluster.hub_id == hub_id)
    found: dict[tuple[str, str], int] = {}
    for project_id, cluster, namespace in db.exec(stmt):
        if (cluster, namespace) in wanted and project_id is not None:
            found.setdefault((cluster, namespace), project_id)
    return found


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


# --- the alert view ---------------------------------------------------------------------------------


def apply_alerts(db: Session, observations: Sequence[AlertObservation]) -> SessionChanges:
    """Open, join or close sessions for new alert receipts, oldest first."""
    changes = SessionChanges()
    usage = [o for o in observations if o.kind == "usage" and o.key.fits()]
    xids = [o for o in observations if o.kind == "xid" and o.key.gpu_uuid]
    if usage:
        _apply_usage_alerts(db, usage, changes)
    if xids:
        _apply_xid_alerts(db, xids, changes)
    db.flush()
    return changes


@dataclass
class _Pending:
    """A session an alert opens, kept as plain values until the batch is done: most are inserted
    in one statement, without building an ORM object per row (webhooks carry many alerts)."""

    key: WorkloadKey
    started_at: datetime
    alert_fingerprint: str
    container: str | None
    node: str | None
    gpu_model: str | None
    summary: str | None
    project_id: int | None
    ended_at: datetime | None = None

    def row(self) -> WorkloadSession:
        row = _open_row(
            self.key,
            self.started_at,
            SessionSource.ALERT,
            container=self.container,
            node=self.node,
            gpu_model=self.gpu_model,
            summary=self.summary,
            fingerprint=self.alert_fingerprint,
            project_id=self.project_id,
        )
        row.ended_at = self.ended_at
        return row

    def values(self) -> dict[str, Any]:
        key = self.key
        return {
            "trace_id": new_trace_id(),
            "workload_key": key.digest,
            "cluster": key.cluster,
            "namespace": key.namespace,
            "pod": key.pod,
            "container": _clip(self.container, 253),
            "node": _clip(self.node, 253),
            "gpu_uuid": key.gpu_uuid,
            "mig_instance_id": key.mig_instance_id,
            "gpu_model": _clip(self.gpu_model or None, 128),
            "started_at": self.started_at,
            "ended_at": None,
            "source": SessionSource.ALERT.value,
            "alert_fingerprint": self.alert_fingerprint,
            "summary": _clip(self.summary, SUMMARY_LENGTH),
            "samples": 0,
            "util_avg": 0.0,
            "util_max": 0.0,
            "memory_max_mib": 0.0,
            "energy_wh": 0.0,
            "seconds": 0.0,
            "gpu_seconds": 0.0,
            "idle_gpu_seconds": 0.0,
            "util_seconds": 0.0,
            "util_known_seconds": 0.0,
            "memory_total_mib": None,
            "profiling": {},
            "profiling_missing": None,
            "events": [],
            "project_id": self.project_id,
            "last_xid": None,
            "throttled": False,
        }


Candidate = WorkloadSession | _Pending


def workload_lock_ids(digests: Iterable[str]) -> list[int]:
    """The second keys (signed 32 bits) of the advisory locks of these workload keys, sorted: every
    transaction takes them in the same order, so two never wait for each other in a cycle."""
    return sorted(
        {int.from_bytes(hashlib.blake2b(d.encode(), digest_size=4).digest(), "big", signed=True) for d in digests}
    )


def _lock_workloads(db: Session, digests: Sequence[str]) -> None:
    """Wait for any other transaction touching these workloads to end (PostgreSQL; held until commit)."""
    db.execute(
        text("SELECT pg_advisory_xact_lock(:class, k) FROM unnest(CAST(:keys AS integer[])) AS k"),
        {"class": WORKLOAD_LOCK_CLASS, "keys": workload_lock_ids(digests)},
    )


def _apply_usage_alerts(db: Session, observations: list[AlertObservation], changes: SessionChanges) -> None:
    digests = sorted({o.key.digest for o in observations})
    earliest = min(o.starts_at for o in observations)
    by_key: dict[str, list[Candidate]] = {}
    postgresql = is_postgresql(db)
    if postgresql:
        _lock_workloads(db, digests)
    for chunk in _chunks(digests):
        stmt = select(WorkloadSession).where(
            _key_in(chunk, postgresql),
            or_(col(WorkloadSession.ended_at).is_(None), col(WorkloadSession.ended_at) >= earliest),
        )
        for row in db.exec(stmt):
            by_key.setdefault(row.workload_key, []).append(row)
    projects = _project_ids(db, {(o.key.cluster, o.key.namespace) for o in observations})
    pending: list[_Pending] = []
    closing: dict[datetime, list[int]] = {}
    # firing before resolved at the same start, so a batch holding both opens and then closes
    for observation in sorted(observations, key=lambda o: (o.starts_at, o.status != "firing")):
        rows = by_key.setdefault(observation.key.digest, [])
        project_id = projects.get((observation.key.cluster, observation.key.namespace))
        existing = _covering(rows, observation.starts_at)
        if existing is not None:
            _join(existing, observation, project_id)
            if observation.status == "firing":
                changes.joined += 1
            elif existing.ended_at is None:
                _close(existing, observation.ends_at or observation.starts_at, changes, closing)
            continue
        # a new session; for a resolved alert the firing notification never reached us, so the
        # whole session arrives at once
        new = _Pending(
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
            _close(new, observation.ends_at or observation.starts_at, changes, closing)
    table = table_of(WorkloadSession)
    for ended_at, ids in closing.items():  # a group resolves together: usually one UPDATE for all
        db.execute(update(table).where(table.c.id.in_(ids), table.c.ended_at.is_(None)).values(ended_at=ended_at))
    _insert_pending(db, pending, changes)


def _key_in(digests: Sequence[str], postgresql: bool) -> ColumnElement[bool]:
    """``workload_key IN (...)``; on PostgreSQL ``= ANY(array)``: one parameter, so once the driver
    prepares the statement the server's generic plan still uses the index (a long IN list may not)."""
    if postgresql:
        return col(WorkloadSession.workload_key) == any_(bindparam("keys", list(digests), type_=ARRAY(String)))
    return col(WorkloadSession.workload_key).in_(digests)


def _close(candidate: Candidate, at: datetime, changes: SessionChanges, closing: dict[datetime, list[int]]) -> None:
    ended_at = max(at, candidate.started_at)
    if isinstance(candidate, _Pending):
        candidate.ended_at = ended_at
    elif candidate.id is None:  # an ORM row not flushed yet
        close_session(candidate, at, changes)
    else:  # written by one UPDATE per end time rather than one per row
        set_committed_value(candidate, "ended_at", ended_at)
        closing.setdefault(ended_at, []).append(candidate.id)
        changes.closed.append(candidate)


def _insert_pending(db: Session, pending: list[_Pending], changes: SessionChanges) -> None:
    still_open = [p.values() for p in pending if p.ended_at is None]
    if still_open:
        table = table_of(WorkloadSession)
        if is_postgresql(db):
            for values in still_open:
                values["started_at"] = naive_utc(values["started_at"])
            insert_rows(db, table, still_open, columns=tuple(still_open[0]))
        else:  # RETURNING makes SQLAlchemy send multi-row INSERTs rather than one statement per row
            db.execute(insert(table).returning(table.c.id), still_open)
    for done in (p for p in pending if p.ended_at is not None):  # rare: ORM rows, so spans can be made of them
        row = done.row()
        db.add(row)
        changes.closed.append(row)


def _covering(rows: list[Candidate], starts_at: datetime) -> Candidate | None:
    """The key's open session, else the latest one that ended at or after ``starts_at``."""
    open_rows = [r for r in rows if r.ended_at is None]
    if open_rows:
        return open_rows[0]
    ended = [r for r in rows if r.ended_at is not None and r.ended_at >= starts_at]
    return max(ended, key=lambda r: r.ended_at or starts_at) if ended else None


def _join(row: Candidate, observation: AlertObservation, project_id: int | None) -> None:
    """Another view confirms the session: note the alert, keep the earliest start, fill what is missing."""
    if row.alert_fingerprint != observation.fingerprint:
        row.alert_fingerprint = observation.fingerprint
    if observation.starts_at < row.started_at:  # noqa: PLR1730  (assigned only on change: no needless UPDATE)
        row.started_at = observation.starts_at
    for name, value, length in (
        ("container", observation.container, 253),
        ("node", observation.node, 253),
        ("gpu_model", observation.gpu_model, 128),
        ("summary", observation.summary, SUMMARY_LENGTH),
    ):
        if value and not getattr(row, name):
            setattr(row, name, value[:length])
    if row.project_id is None and project_id is not None:
        row.project_id = project_id


def _apply_xid_alerts(db: Session, observations: list[AlertObservation], changes: SessionChanges) -> None:
    firing = [o for o in observations if o.status == "firing"]
    if not firing:
        return
    uuids = sorted({o.key.gpu_uuid for o in firing if o.key.gpu_uuid})
    open_rows: dict[tuple[str, str], list[WorkloadSession]] = {}
    for chunk in _chunks(uuids):
        stmt = select(WorkloadSession).where(
            col(WorkloadSession.ended_at).is_(None), col(WorkloadSession.gpu_uuid).in_(chunk)
        )
        for row in db.exec(stmt):
            open_rows.setdefault((row.cluster, row.gpu_uuid or ""), []).append(row)
    for observation in sorted(firing, key=lambda o: o.starts_at):
        for row in open_rows.get((observation.key.cluster, observation.key.gpu_uuid or ""), []):
            attributes: dict[str, Any] = {"source": "alert", "alert.fingerprint": observation.fingerprint}
            if observation.xid_code is not None:
                attributes["gpu.xid.code"] = observation.xid_code
            if observation.xid_message:
                attributes["gpu.xid.message"] = observation.xid_message[:256]
            add_event(row, XID_EVENT, max(observation.starts_at, row.started_at), attributes)
            if observation.xid_code is not None:
                row.last_xid = observation.xid_code
            changes.events += 1


# --- the poll view ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Seen:
    key: WorkloadKey
    reading: GpuReading
    part: SliceReading | None
    workload: PodRef
    cluster_profiled: bool = True
    """Whether the cluster reported profiling families in this window (see :mod:`worker.session_sums`)."""
    sharers: int = 1
    """Pods using the GPU or slice (time-slicing): the session's energy is its 1/k part."""
    idle_threshold_percent: float = IDLE_PERCENT
    """Below this the window's held seconds count as idle, as in the ledger."""


def _seen(snapshot: Snapshot, idle_threshold_percent: float) -> dict[str, _Seen]:
    seen: dict[str, _Seen] = {}
    profiled = profiled_clusters(snapshot.gpus)
    for reading in snapshot.gpus:  # one session per pod per GPU or slice, time-sliced ones included
        on = reading.cluster in profiled
        for pod in () if reading.slices else reading.workloads:
            key = WorkloadKey(reading.cluster, pod.namespace, pod.pod, reading.uuid)
            seen.setdefault(
                key.digest, _Seen(key, reading, None, pod, on, len(reading.workloads), idle_threshold_percent)
            )
        for part in reading.slices:
            for pod in part.workloads:
                key = WorkloadKey(reading.cluster, pod.namespace, pod.pod, reading.uuid, part.mig_instance_id)
                seen.setdefault(
                    key.digest, _Seen(key, reading, part, pod, on, len(part.workloads), idle_threshold_percent)
                )
    return seen


_SAMPLED = (
    "util_avg",
    "samples",
    "util_max",
    "memory_max_mib",
    "energy_wh",
    "gpu_model",
    "node",
    "container",
    *SUMMED,
)
"""The usage figures and identity details one poll sample may change."""
_OPEN_COLUMNS = (
    "id",
    "workload_key",
    "cluster",
    "namespace",
    "gpu_uuid",
    "source",
    "started_at",
    "project_id",
    "last_xid",
    "throttled",
    *_SAMPLED,
)
"""What the poll view reads of each open session (not its events: most polls add none)."""


def _sampled(current: Any, seen: _Seen, snapshot: Snapshot) -> dict[str, Any]:
    """The session's figures after one more poll sample (``current``: a row or an ORM object)."""
    reading, part = seen.reading, seen.part
    utilization = part.utilization if part is not None else reading.utilization
    peak = part.utilization_max if part is not None else reading.utilization_max
    memory = part.memory_used_mib if part is not None else reading.memory_used_mib
    share = (slice_fraction(part.profile) if part is not None else 1.0) / seen.sharers
    out = {name: getattr(current, name) for name in _SAMPLED}
    if utilization is not None:  # unknown utilisation is no sample: it is neither 0 nor idle
        out["util_avg"] = (current.util_avg * current.samples + utilization) / (current.samples + 1)
        out["samples"] = current.samples + 1
        out["util_max"] = max(current.util_max, peak if peak is not None else utilization)
    if memory is not None:
        out["memory_max_mib"] = max(current.memory_max_mib, memory)
    if reading.power_watts is not None:
        out["energy_wh"] = current.energy_wh + reading.power_watts * share * snapshot.window_seconds / 3600
    if reading.model and not current.gpu_model:
        out["gpu_model"] = reading.model[:128]
    if not current.node:
        out["node"] = reading.node[:253]
    if not current.container and seen.workload.container:
        out["container"] = seen.workload.container[:253]
    out.update(
        add_window(
            current,
            reading,
            part,
            snapshot.window_seconds,
            cluster_profiled=seen.cluster_profiled,
            sharers=seen.sharers,
            idle_threshold_percent=seen.idle_threshold_percent,
        )
    )
    return out


def _sample(row: WorkloadSession, seen: _Seen, snapshot: Snapshot, changes: SessionChanges) -> None:
    for name, value in _sampled(row, seen, snapshot).items():
        if getattr(row, name) != value:
            setattr(row, name, value)
    changes.sampled += 1
    _note_events(row, seen.reading, snapshot.taken_at, changes)


def _is_hot(reading: GpuReading) -> bool:
    return reading.temperature_c is not None and reading.temperature_c >= DEGRADED_TEMPERATURE_C


def _makes_event(current: Any, reading: GpuReading) -> bool:
    """Whether sampling ``reading`` adds an event to the session (:func:`_note_events`)."""
    xid = reading.xid or 0
    return bool(xid and xid != current.last_xid) or (_is_hot(reading) and not current.throttled)


def _note_events(row: WorkloadSession, reading: GpuReading, at: datetime, changes: SessionChanges) -> None:
    xid = reading.xid or 0
    if xid and xid != row.last_xid:
        add_event(row, XID_EVENT, at, {"source": "poll", "gpu.xid.code": xid})
        changes.events += 1
    if (row.last_xid or 0) != xid:
        row.last_xid = xid
    hot = _is_hot(reading)
    if hot and not row.throttled:
        add_event(row, THROTTLING_EVENT, at, {"source": "poll", "gpu.temperature": reading.temperature_c})
        changes.events += 1
    if hot != row.throttled:
        row.throttled = hot


def apply_poll(
    db: Session, hub: Hub, snapshot: Snapshot, *, idle_threshold_percent: float = IDLE_PERCENT
) -> SessionChanges:
    """Bring the sessions of the snapshot's clusters in line with the pods it saw.

    Expects :func:`worker.inventory.apply_snapshot` to have run in the same transaction (projects
    exist, missing GPUs are marked).

    A fleet of thousands of GPUs has thousands of open sessions, nearly all of which only take a
    usage sample: those are read as plain rows (without their events) and written in one bulk
    UPDATE, and only when a figure changed. Sessions that gain an event, close or open go through
    the ORM as before.
    """
    changes = SessionChanges()
    now = snapshot.taken_at
    window = timedelta(seconds=snapshot.window_seconds)
    seen = _seen(snapshot, idle_threshold_percent)
    clusters = sorted(set(snapshot.clusters) | {r.cluster for r in snapshot.gpus})
    if not clusters:
        return changes
    reported = {r.uuid for r in snapshot.gpus}
    table = table_of(WorkloadSession)
    open_rows = db.execute(
        select(*(table.c[name] for name in _OPEN_COLUMNS)).where(
            table.c.ended_at.is_(None), table.c.cluster.in_(clusters)
        )
    ).all()
    projects = _project_ids(
        db,
        {(s.key.cluster, s.key.namespace) for s in seen.values()} | {(r.cluster, r.namespace) for r in open_rows},
        hub.id,
    )
    plan = _PollPlan(seen, reported, projects, now - window)
    for row in open_rows:
        plan.consider(row, snapshot)
    changes.sampled += plan.sampled
    plan.to_close.extend(_on_missing_gpus(db, plan.unreported))
    _write_samples(db, table, plan.updates)
    for orm_row in _load(db, [*plan.to_sample, *plan.to_close]):
        if orm_row.project_id is None:
            orm_row.project_id = projects.get((orm_row.cluster, orm_row.namespace))
        if orm_row.id in plan.to_sample:
            _sample(orm_row, plan.to_sample[orm_row.id], snapshot, changes)
        else:
            close_session(orm_row, now, changes)
    _open_seen(db, seen, plan.open_keys, projects, snapshot, window, changes)
    db.flush()
    return changes


class _PollPlan:
    """What one poll does to each open session, decided from its plain row."""

    def __init__(
        self,
        seen: dict[str, _Seen],
        reported: set[str],
        projects: dict[tuple[str, str], int],
        alerted_after: datetime,
    ) -> None:
        self.seen = seen
        self.reported = reported
        self.projects = projects
        self.alerted_after = alerted_after
        self.open_keys: set[str] = set()
        self.updates: list[dict[str, Any]] = []
        """Plain samples (and project ids found late): written in bulk, only where something changed."""
        self.to_sample: dict[int, _Seen] = {}
        """Samples that add an event: through the ORM."""
        self.to_close: list[int] = []
        self.unreported: list[Any] = []
        self.sampled = 0

    def consider(self, row: Any, snapshot: Snapshot) -> None:
        project_id = row.project_id
        if project_id is None:
            project_id = self.projects.get((row.cluster, row.namespace))
        current = self.seen.get(row.workload_key)
        if current is not None:
            self.open_keys.add(row.workload_key)
            if _makes_event(row, current.reading):
                self.to_sample[row.id] = current
            else:
                self._sample(row, current, snapshot, project_id)
            return
        if row.gpu_uuid not in self.reported:
            self.unreported.append(row)
        elif not (row.source == SessionSource.ALERT and row.started_at > self.alerted_after):
            self.to_close.append(row.id)
            return
        if project_id != row.project_id:
            self.updates.append({"id": row.id, "project_id": project_id})

    def _sample(self, row: Any, current: _Seen, snapshot: Snapshot, project_id: int | None) -> None:
        """A sample without events: what :func:`_sample` and :func:`_note_events` would set."""
        xid = current.reading.xid or 0
        values = _sampled(row, current, snapshot)
        values["last_xid"] = xid if (row.last_xid or 0) != xid else row.last_xid
        values["throttled"] = _is_hot(current.reading)
        values["project_id"] = project_id
        self.sampled += 1
        if any(value != getattr(row, name) for name, value in values.items()):
            self.updates.append({"id": row.id, **values})


def _write_samples(db: Session, table: Any, updates: list[dict[str, Any]]) -> None:
    """One bulk UPDATE by primary key per shape of row (full samples; project ids alone)."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in updates:
        shapes.setdefault(tuple(values), []).append(values)
    for shape, rows in shapes.items():
        columns = [name for name in shape if name != "id"]
        if is_postgresql(db):
            update_rows(db, table, rows, columns=columns)
        else:
            stmt = update(table).where(table.c.id == bindparam("_id")).values({c: bindparam(f"_{c}") for c in columns})
            db.execute(stmt, [{f"_{name}": value for name, value in r.items()} for r in rows])


def _load(db: Session, ids: list[int]) -> list[WorkloadSession]:
    rows: list[WorkloadSession] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows.extend(db.exec(select(WorkloadSession).where(col(WorkloadSession.id).in_(chunk))))
    return sorted(rows, key=lambda r: r.id or 0)


def _on_missing_gpus(db: Session, rows: list[Any]) -> list[int]:
    """Ids of the open sessions on GPUs the poll did not report and the inventory marked missing."""
    uuids = sorted({r.gpu_uuid for r in rows if r.gpu_uuid})
    missing: set[str] = set()
    for chunk in _chunks(uuids):
        missing.update(db.exec(select(Gpu.uuid).where(col(Gpu.uuid).in_(chunk), Gpu.health == Health.MISSING.value)))
    return [r.id for r in rows if r.gpu_uuid in missing]


def _open_seen(
    db: Session,
    seen: dict[str, _Seen],
    open_keys: set[str],
    projects: dict[tuple[str, str], int],
    snapshot: Snapshot,
    window: timedelta,
    changes: SessionChanges,
) -> None:
    new = sorted(k for k in seen if k not in open_keys)
    if not new:
        return
    now = snapshot.taken_at
    just_closed: set[str] = set()
    for chunk in _chunks(new):
        just_closed.update(
            db.exec(
                select(WorkloadSession.workload_key).where(
                    col(WorkloadSession.workload_key).in_(chunk),
                    col(WorkloadSession.alert_fingerprint).is_not(None),
                    col(WorkloadSession.ended_at) > now - window,
                )
            )
        )
    for digest in new:
        if digest in just_closed:
            continue  # an alert closed it more recently than this poll's data: no reopening
        current = seen[digest]
        where = f"GPU {current.reading.index}" + (
            f" MIG {current.part.profile} #{current.part.mig_instance_id}" if current.part is not None else ""
        )
        key = current.key
        row = _open_row(
            key,
            now,
            SessionSource.POLL,
            container=current.workload.container,
            node=current.reading.node,
            gpu_model=current.reading.model,
            project_id=projects.get((key.cluster, key.namespace)),
            summary=f"{key.namespace}/{key.pod} on {key.cluster}/{current.reading.node} {where}",
            fingerprint=None,
        )
        db.add(row)
        changes.opened += 1
        _sample(row, current, snapshot, changes)
