"""The poll view's pure rules: which workloads a snapshot shows, what one more sample changes in each,
and what one poll does to each open workload (sample, close, or leave to alerts).

Nothing here reads or writes the database; :mod:`worker.workloads.jobs` applies the plan.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from domain.inventory.health import DEGRADED_TEMPERATURE_C
from domain.ledger.mig import slice_fraction
from domain.models import Workload
from domain.statuses import WorkloadSource
from domain.telemetry.readings import GpuReading, PodRef, SliceReading, Snapshot
from worker.workloads.rules import THROTTLING_EVENT, XID_EVENT, WorkloadChanges, WorkloadKey, add_event
from worker.workloads.sums import IDLE_PERCENT, SUMMED, add_window, profiled_clusters


@dataclass(frozen=True, slots=True)
class Seen:
    key: WorkloadKey
    reading: GpuReading
    part: SliceReading | None
    workload: PodRef
    cluster_profiled: bool = True
    """Whether the cluster reported profiling families in this window (see :mod:`worker.workloads.sums`)."""
    sharers: int = 1
    """Pods using the GPU or slice (time-slicing): the workload's energy is its 1/k part."""
    idle_threshold_percent: float = IDLE_PERCENT
    """Below this the window's held seconds count as idle, as in the ledger."""
    hot_threshold_c: float = DEGRADED_TEMPERATURE_C
    """From this temperature the GPU is throttling: the configured hot threshold, as the health badge's."""

    @property
    def hot(self) -> bool:
        temperature = self.reading.temperature_c
        return temperature is not None and temperature >= self.hot_threshold_c


def seen_workloads(
    snapshot: Snapshot, idle_threshold_percent: float, hot_threshold_c: float = DEGRADED_TEMPERATURE_C
) -> dict[str, Seen]:
    seen: dict[str, Seen] = {}
    profiled = profiled_clusters(snapshot.gpus)
    for reading in snapshot.gpus:  # one workload per pod per GPU or slice, time-sliced ones included
        on = reading.cluster in profiled
        for pod in () if reading.slices else reading.workloads:
            key = WorkloadKey(reading.cluster, pod.namespace, pod.pod, reading.uuid)
            seen.setdefault(
                key.digest,
                Seen(key, reading, None, pod, on, len(reading.workloads), idle_threshold_percent, hot_threshold_c),
            )
        for part in reading.slices:
            for pod in part.workloads:
                key = WorkloadKey(reading.cluster, pod.namespace, pod.pod, reading.uuid, part.mig_instance_id)
                seen.setdefault(
                    key.digest,
                    Seen(key, reading, part, pod, on, len(part.workloads), idle_threshold_percent, hot_threshold_c),
                )
    return seen


SAMPLED = (
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
OPEN_COLUMNS = (
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
    *SAMPLED,
)
"""What the poll view reads of each open workload (not its events: most polls add none)."""
_PROFILING_SUMS = msgspec.json.Decoder()  # untyped, as the ORM reads the column (domain/database.py)
_JSON = msgspec.json.Encoder()
OpenRow = namedtuple("OpenRow", OPEN_COLUMNS)  # type: ignore[misc]  # the columns are a constant
"""One open workload as the poll view reads it: a named tuple, whose fields read ten times faster than a
SQLAlchemy ``Row``'s (a 10,000-GPU poll reads about sixty of each of 9,000 rows)."""


def sampled(current: Any, seen: Seen, snapshot: Snapshot) -> dict[str, Any]:
    """The workload's figures after one more poll sample (``current``: a row or an ORM object)."""
    reading, part = seen.reading, seen.part
    utilization = part.utilization if part is not None else reading.utilization
    peak = part.utilization_max if part is not None else reading.utilization_max
    memory = part.memory_used_mib if part is not None else reading.memory_used_mib
    share = (slice_fraction(part.profile, reading.model) if part is not None else 1.0) / seen.sharers
    out = {name: getattr(current, name) for name in SAMPLED}
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


def sample(row: Workload, seen: Seen, snapshot: Snapshot, changes: WorkloadChanges) -> None:
    for name, value in sampled(row, seen, snapshot).items():
        if getattr(row, name) != value:
            setattr(row, name, value)
    changes.sampled += 1
    note_events(row, seen, snapshot.taken_at, changes)


def makes_event(current: Any, seen: Seen) -> bool:
    """Whether sampling ``seen`` adds an event to the workload (:func:`note_events`)."""
    xid = seen.reading.xid or 0
    return bool(xid and xid != current.last_xid) or (seen.hot and not current.throttled)


def note_events(row: Workload, seen: Seen, at: datetime, changes: WorkloadChanges) -> None:
    reading = seen.reading
    xid = reading.xid or 0
    if xid and xid != row.last_xid:
        add_event(row, XID_EVENT, at, {"source": "poll", "gpu.xid.code": xid})
        changes.events += 1
    if (row.last_xid or 0) != xid:
        row.last_xid = xid
    hot = seen.hot
    if hot and not row.throttled:
        add_event(row, THROTTLING_EVENT, at, {"source": "poll", "gpu.temperature": reading.temperature_c})
        changes.events += 1
    if hot != row.throttled:
        row.throttled = hot


class PollPlan:
    """What one poll does to each open workload, decided from its plain row."""

    def __init__(
        self,
        seen: dict[str, Seen],
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
        """Plain samples (and project ids found late): written in bulk, only the columns that changed."""
        self.to_sample: dict[int, Seen] = {}
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
            if makes_event(row, current):
                self.to_sample[row.id] = current
            else:
                self._sample(row, current, snapshot, project_id)
            return
        if row.gpu_uuid not in self.reported:
            self.unreported.append(row)
        elif not (row.source == WorkloadSource.ALERT and row.started_at > self.alerted_after):
            self.to_close.append(row.id)
            return
        if project_id != row.project_id:
            self.updates.append({"id": row.id, "project_id": project_id})

    def _sample(self, row: Any, current: Seen, snapshot: Snapshot, project_id: int | None) -> None:
        """A sample without events: what :func:`sample` and :func:`note_events` would set.

        The row's profiling sums are JSON text (:func:`~worker.workloads.store.open_plain_rows`), decoded
        here for the sum and kept encoded in the update: held as objects, 9,000 workloads' sums were
        ~20 MB of a 10,000-GPU poll's memory, twice (as read and as written)."""
        row = row._replace(profiling=_PROFILING_SUMS.decode(row.profiling) if row.profiling else None)
        xid = current.reading.xid or 0
        values = sampled(row, current, snapshot)
        values["last_xid"] = xid if (row.last_xid or 0) != xid else row.last_xid
        values["throttled"] = current.hot
        values["project_id"] = project_id
        self.sampled += 1
        # only the columns that changed: the names, model and node of a running workload rarely do
        changed = {name: value for name, value in values.items() if value != getattr(row, name)}
        if changed:
            if "profiling" in changed:
                changed["profiling"] = msgspec.Raw(_JSON.encode(changed["profiling"]))
            self.updates.append({"id": row.id, **changed})
