"""The pure rules of workloads: keys, what a change records, and how an alert merges with what is stored.

Each view lags the other (by up to a poll interval, or an alert's evaluation and notification
round-trip), so they may disagree for a moment. The rules:

* alert firing at S joins the key's open workload; or, when a workload of the key ended at or after
  S (the poll saw the pod go before the delayed alert arrived), that one; otherwise it opens one at S.
* alert resolved (S, E) closes the key's open workload at E; when none is open and none ended at or
  after S, it records the closed workload [S, E] (the firing notification never arrived).
* a poll that sees a pod samples into its open workload; it opens one unless an alert closed the
  key's workload within the poll window (the poll's data is older than the alert).
* a poll that no longer sees a pod on a GPU it reports closes the workload, unless an alert opened
  it within the poll window. Workloads on a GPU the poll does not report are left to alerts, until
  the GPU is marked missing.

A repeated firing notification (Alertmanager re-sends on every repeat interval) is never a new
workload: the receiver drops it as a duplicate receipt, and even if it got here it would join.

Nothing here reads or writes the database (:mod:`worker.workloads.store` does); the poll view's
per-sample rules are in :mod:`worker.workloads.samples`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm.attributes import set_committed_value

from domain.models import Workload
from domain.statuses import WorkloadSource

MAX_EVENTS = 100
"""Events kept per workload; later ones are counted in the last event instead of stored."""
SUMMARY_LENGTH = 1024
_LIMITS = {"cluster": 128, "namespace": 253, "pod": 253, "container": 253, "node": 253, "gpu_uuid": 64}

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
class WorkloadChanges:
    """What one application of alerts or of a poll did to the workloads."""

    opened: int = 0
    joined: int = 0
    sampled: int = 0
    events: int = 0
    closed: list[Workload] = field(default_factory=list)
    """Workloads closed in this transaction: each becomes a span once the caller has committed."""

    def merge(self, other: WorkloadChanges) -> None:
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


def clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


def new_row(
    key: WorkloadKey,
    started_at: datetime,
    source: WorkloadSource,
    *,
    container: str | None,
    node: str | None,
    gpu_model: str | None,
    summary: str | None,
    fingerprint: str | None,
    project_id: int | None,
) -> Workload:
    return Workload(
        trace_id=new_trace_id(),
        workload_key=key.digest,
        cluster=key.cluster,
        namespace=key.namespace,
        pod=key.pod,
        container=clip(container, 253),
        node=clip(node, 253),
        gpu_uuid=key.gpu_uuid,
        mig_instance_id=key.mig_instance_id,
        gpu_model=clip(gpu_model or None, 128),
        started_at=started_at,
        source=source.value,
        alert_fingerprint=fingerprint,
        summary=clip(summary, SUMMARY_LENGTH),
        project_id=project_id,
        events=[],
    )


def close_workload(row: Workload, at: datetime, changes: WorkloadChanges) -> None:
    """End an open workload at ``at`` (never before it started)."""
    if row.ended_at is not None:
        return
    row.ended_at = max(at, row.started_at)
    changes.closed.append(row)


def add_event(row: Workload, name: str, at: datetime, attributes: dict[str, Any]) -> bool:
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


def workload_lock_ids(digests: Iterable[str]) -> list[int]:
    """The second keys (signed 32 bits) of the advisory locks of these workload keys, sorted: every
    transaction takes them in the same order, so two never wait for each other in a cycle."""
    return sorted(
        {int.from_bytes(hashlib.blake2b(d.encode(), digest_size=4).digest(), "big", signed=True) for d in digests}
    )


# --- the alert view ---------------------------------------------------------------------------------


@dataclass
class Pending:
    """A workload an alert opens, kept as plain values until the batch is done: most are inserted
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

    def row(self) -> Workload:
        row = new_row(
            self.key,
            self.started_at,
            WorkloadSource.ALERT,
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
            "container": clip(self.container, 253),
            "node": clip(self.node, 253),
            "gpu_uuid": key.gpu_uuid,
            "mig_instance_id": key.mig_instance_id,
            "gpu_model": clip(self.gpu_model or None, 128),
            "started_at": self.started_at,
            "ended_at": None,
            "source": WorkloadSource.ALERT.value,
            "alert_fingerprint": self.alert_fingerprint,
            "summary": clip(self.summary, SUMMARY_LENGTH),
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


Candidate = Workload | Pending


def close_candidate(
    candidate: Candidate, at: datetime, changes: WorkloadChanges, closing: dict[datetime, list[int]]
) -> None:
    ended_at = max(at, candidate.started_at)
    if isinstance(candidate, Pending):
        candidate.ended_at = ended_at
    elif candidate.id is None:  # an ORM row not flushed yet
        close_workload(candidate, at, changes)
    else:  # written by one UPDATE per end time rather than one per row
        set_committed_value(candidate, "ended_at", ended_at)
        closing.setdefault(ended_at, []).append(candidate.id)
        changes.closed.append(candidate)


def covering(rows: list[Candidate], starts_at: datetime) -> Candidate | None:
    """The key's open workload, else the latest one that ended at or after ``starts_at``."""
    open_rows = [r for r in rows if r.ended_at is None]
    if open_rows:
        return open_rows[0]
    ended = [r for r in rows if r.ended_at is not None and r.ended_at >= starts_at]
    return max(ended, key=lambda r: r.ended_at or starts_at) if ended else None


def join_alert(row: Candidate, observation: AlertObservation, project_id: int | None) -> None:
    """Another view confirms the workload: note the alert, keep the earliest start, fill what is missing."""
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


def xid_attributes(observation: AlertObservation) -> dict[str, Any]:
    """The attributes of the event an XID alert adds to each open workload on its GPU."""
    attributes: dict[str, Any] = {"source": "alert", "alert.fingerprint": observation.fingerprint}
    if observation.xid_code is not None:
        attributes["gpu.xid.code"] = observation.xid_code
    if observation.xid_message:
        attributes["gpu.xid.message"] = observation.xid_message[:256]
    return attributes
