"""Usage rollups: every poll adds one sample per GPU or slice to its time bucket; retention trims history.

Raw metrics history stays in Prometheus/Thanos; the database keeps only these buckets, which is
what the site needs for allocation-versus-use, GPU-hours and idle GPU-hours per project.

One row per (GPU, slice or 0, project or 0, bucket). Averages are running averages over the
bucket's samples; ``energy_wh`` and the GPU-seconds add up. For a GPU in MIG mode each slice has
its own row carrying the slice's utilisation and memory, with the GPU's power and energy
attributed by the slice's fraction (``3g.40gb`` gets 3/7); the GPU's own row (slice 0, project 0)
keeps the GPU-level readings and the energy of the part not cut into slices. Summing a GPU's rows
therefore gives the GPU's energy, and summing a project's rows gives its share.

The bucket's existing rows are read in one query and then updated or inserted; nothing here
commits, the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session, col, delete, select

from domain.models import Allocation, Cluster, Gpu, GpuSlice, Hub, Node, ResearchProject, UsageRollup
from worker.inventory import slice_fraction
from worker.sources.snapshot import GpuReading, PodRef, Snapshot

RollupKey = tuple[int, int, int]
"""(gpu id, slice id or 0, project id or 0), the rollup's identity within a bucket."""


@dataclass(frozen=True, slots=True)
class _Sample:
    utilization: float | None
    utilization_max: float | None
    memory_used_mib: float | None
    power_watts: float | None
    temperature_c: float | None
    energy_wh: float
    seconds: float
    idle_seconds: float


@dataclass
class _Ids:
    """Database ids of the source's GPUs, slices and projects, looked up once per poll."""

    gpus: dict[str, int]
    slices: dict[tuple[int, int], int]
    projects: dict[tuple[str, str], int]


def bucket_start(at: datetime, bucket_seconds: int) -> datetime:
    """The start of the bucket holding ``at``, aligned to the Unix epoch so every process agrees."""
    seconds = int(at.timestamp()) // bucket_seconds * bucket_seconds
    return datetime.fromtimestamp(seconds, UTC)


def _load_ids(session: Session, source: str) -> _Ids:
    gpu_rows = session.exec(
        select(Gpu.id, Gpu.uuid)
        .join(Node, col(Gpu.node_id) == col(Node.id))
        .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
        .join(Hub, col(Cluster.hub_id) == col(Hub.id))
        .where(Hub.name == source)
    )
    gpus = {uuid: gpu_id for gpu_id, uuid in gpu_rows if gpu_id is not None}
    slice_rows = session.exec(
        select(GpuSlice.id, GpuSlice.gpu_id, GpuSlice.mig_instance_id)
        .join(Gpu, col(GpuSlice.gpu_id) == col(Gpu.id))
        .join(Node, col(Gpu.node_id) == col(Node.id))
        .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
        .join(Hub, col(Cluster.hub_id) == col(Hub.id))
        .where(Hub.name == source)
    )
    slices = {(gpu_id, mig_id): slice_id for slice_id, gpu_id, mig_id in slice_rows if slice_id is not None}
    project_rows = session.exec(
        select(ResearchProject.id, Cluster.name, ResearchProject.namespace)
        .join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
        .join(Hub, col(Cluster.hub_id) == col(Hub.id))
        .where(Hub.name == source)
    )
    projects = {(cluster, ns): project_id for project_id, cluster, ns in project_rows if project_id is not None}
    return _Ids(gpus, slices, projects)


def _samples(snapshot: Snapshot, ids: _Ids, idle_threshold_percent: float) -> Iterator[tuple[RollupKey, _Sample]]:
    window = snapshot.window_seconds

    def sample(
        utilization: float | None,
        utilization_max: float | None,
        memory: float | None,
        power: float | None,
        share: float,
        project_id: int,
        temperature: float | None = None,
    ) -> _Sample:
        attributed = None if power is None else power * share
        seconds = window * share
        idle = seconds if utilization is not None and utilization < idle_threshold_percent else 0.0
        return _Sample(
            utilization=utilization,
            utilization_max=utilization if utilization_max is None else utilization_max,
            memory_used_mib=memory,
            power_watts=attributed,
            temperature_c=temperature,
            energy_wh=(attributed or 0.0) * window / 3600,
            seconds=seconds,
            idle_seconds=idle,
        )

    def project_of(reading: GpuReading, workload: PodRef | None) -> int:
        if workload is None:
            return 0
        return ids.projects.get((reading.cluster, workload.namespace), 0)

    seen: set[int] = set()
    for reading in snapshot.gpus:
        gpu_id = ids.gpus.get(reading.uuid)
        if gpu_id is None or gpu_id in seen:  # unknown, or reported twice (the inventory keeps the first)
            continue
        seen.add(gpu_id)
        if not reading.slices:
            project_id = project_of(reading, reading.workload)
            yield (
                (gpu_id, 0, project_id),
                sample(
                    reading.utilization,
                    reading.utilization_max,
                    reading.memory_used_mib,
                    reading.power_watts,
                    1.0,
                    project_id,
                    reading.temperature_c,
                ),
            )
            continue
        sliced = 0.0
        for reported in reading.slices:
            slice_id = ids.slices.get((gpu_id, reported.mig_instance_id))
            if slice_id is None:
                continue
            fraction = slice_fraction(reported.profile)
            sliced += fraction
            project_id = project_of(reading, reported.workload)
            yield (
                (gpu_id, slice_id, project_id),
                sample(
                    reported.utilization,
                    reported.utilization_max,
                    reported.memory_used_mib,
                    reading.power_watts,
                    fraction,
                    project_id,
                ),
            )
        yield (
            (gpu_id, 0, 0),
            sample(
                reading.utilization,
                reading.utilization_max,
                reading.memory_used_mib,
                reading.power_watts,
                max(0.0, 1.0 - sliced),
                0,
                reading.temperature_c,
            ),
        )


_COLUMNS = (
    "seconds",
    "seconds_idle",
    "seconds_util_known",
    "util_seconds",
    "util_max",
    "memory_mib_seconds",
    "memory_max_mib",
    "energy_wh",
    "power_seconds_known",
    "temperature_max_c",
)
_EMPTY = dict.fromkeys(_COLUMNS, 0.0) | {"util_max": None, "memory_max_mib": None, "temperature_max_c": None}


def _peak(current: float | None, value: float | None) -> float | None:
    """The larger of two readings; unknown (None) never wins over a known one."""
    if value is None:
        return current
    return value if current is None else max(current, value)


def _accumulated(row: Mapping[str, Any], sample: _Sample) -> dict[str, Any]:
    """The bucket row's sums after adding one sample."""
    seconds = sample.seconds
    util_known = seconds if sample.utilization is not None else 0.0
    return {
        "seconds": row["seconds"] + seconds,
        "seconds_idle": row["seconds_idle"] + sample.idle_seconds,
        "seconds_util_known": row["seconds_util_known"] + util_known,
        "util_seconds": row["util_seconds"] + (sample.utilization or 0.0) * util_known,
        "util_max": _peak(row["util_max"], sample.utilization_max),
        "memory_mib_seconds": row["memory_mib_seconds"] + (sample.memory_used_mib or 0.0) * seconds,
        "memory_max_mib": _peak(row["memory_max_mib"], sample.memory_used_mib),
        "energy_wh": row["energy_wh"] + sample.energy_wh,
        "power_seconds_known": row["power_seconds_known"] + (seconds if sample.power_watts is not None else 0.0),
        "temperature_max_c": _peak(row["temperature_max_c"], sample.temperature_c),
    }


def record_usage(session: Session, snapshot: Snapshot, *, bucket_seconds: int, idle_threshold_percent: float) -> int:
    """Add the snapshot's readings to their rollup bucket; returns rows inserted or updated.

    Expects :func:`worker.inventory.apply_snapshot` to have run for the snapshot in the same
    transaction, so every GPU, slice and project has an id. The bucket's rows are read as plain
    tuples in one query and written back with one bulk UPDATE (by primary key) and one bulk
    INSERT: a poll of 10,000 GPUs writes 10,000 rows without building an ORM object for each.
    """
    if not snapshot.gpus:
        return 0
    bucket = bucket_start(snapshot.taken_at, bucket_seconds)
    ids = _load_ids(session, snapshot.source)
    if not ids.gpus:
        return 0
    session.flush()
    of_source = (
        select(Gpu.id)
        .join(Node, col(Gpu.node_id) == col(Node.id))
        .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
        .join(Hub, col(Cluster.hub_id) == col(Hub.id))
        .where(Hub.name == snapshot.source)
        .correlate(None)
    )
    table = UsageRollup.__table__  # type: ignore[attr-defined]
    query = select(table.c.id, table.c.gpu_id, table.c.slice_id, table.c.project_id, *(table.c[c] for c in _COLUMNS))
    existing: dict[RollupKey, Any] = {
        (row.gpu_id, row.slice_id, row.project_id): row
        for row in session.execute(query.where(table.c.bucket_start == bucket, table.c.gpu_id.in_(of_source)))
    }
    updates: dict[RollupKey, dict[str, Any]] = {}
    inserts: dict[RollupKey, dict[str, Any]] = {}
    for key, sample in _samples(snapshot, ids, idle_threshold_percent):
        if key in inserts:
            inserts[key].update(_accumulated(inserts[key], sample))
        elif key in updates:
            updates[key].update(_accumulated(updates[key], sample))
        elif key in existing:
            row = existing[key]
            updates[key] = {"row_id": row.id, **_accumulated(row._mapping, sample)}
        else:
            inserts[key] = {
                "gpu_id": key[0],
                "slice_id": key[1],
                "project_id": key[2],
                "bucket_start": bucket,
                **_accumulated(_EMPTY, sample),
            }
    if updates:
        session.execute(update(table).where(table.c.id == bindparam("row_id")), list(updates.values()))
    if inserts:
        session.execute(insert(table), list(inserts.values()))
    return len(updates) + len(inserts)


def apply_retention(session: Session, now: datetime, retention_days: int) -> int:
    """Delete rollups whose bucket started, and allocations that ended, before the retention window.

    Open allocations are kept however old they are: they describe the present.
    """
    cutoff = now - timedelta(days=retention_days)
    rollups = session.exec(delete(UsageRollup).where(col(UsageRollup.bucket_start) < cutoff))
    allocations = session.exec(
        delete(Allocation).where(col(Allocation.until).is_not(None), col(Allocation.until) < cutoff)
    )
    return (rollups.rowcount or 0) + (allocations.rowcount or 0)
