"""Inventory upsert: one snapshot of one source becomes cluster, node, GPU, slice, project and allocation rows.

Why it is shaped this way:

* A poll runs every few seconds for fleets of thousands of GPUs, so the hub's existing rows are
  read in a fixed handful of bulk queries (never one SELECT per GPU), compared in memory, and only
  rows whose values differ are written. A second poll of an unchanged fleet writes no inventory row;
  only each cluster's poll heartbeat (``last_poll_at``/``last_success_at``) is refreshed. GPUs and
  slices, whose latest readings change at nearly every poll, are written in one UPDATE per table
  (:class:`_BulkUpdate`), not one per row: the ORM would group them by which columns changed and
  send thousands of small statements.
* GPUs and open allocations, nearly all of the hub's rows (~19,000 at 10,000 GPUs), are loaded as
  plain slotted rows (:class:`GpuRow`, :class:`AllocationRow`), not ORM objects: they are only
  compared, and the few that change are written by primary key in bulk statements. The ORM objects
  cost several times the memory, and the poll holds them while the source's answers are decoded.
* ``last_seen`` is kept coarse: it is refreshed when a row is written anyway or when it is older
  than a quarter of the missing grace period. Something that stops reporting is therefore marked
  missing between 0.75 and 1 times ``missing_after`` after its last report, never earlier.
* Inventory is never deleted. A node, GPU or slice that a present cluster no longer reports is
  marked ``missing`` once the grace period has passed, and its open allocations close. A cluster
  the source no longer answers for goes ``stale``; its rows are left as they were.
* Allocations are history: a pod appearing on a GPU or slice opens one, the pod disappearing or
  changing closes it (``until``); there is never more than one open allocation per slot and pod.

Nothing here commits: the caller owns the transaction, so a failure leaves no half-applied poll.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from domain.inventory.health import DEGRADED_TEMPERATURE_C, gpu_health
from domain.ledger.mig import slice_fraction
from domain.models import Allocation, Cluster, Gpu, GpuSlice, Hub, Node, ResearchProject
from domain.models.base import table_of
from domain.statuses import ClusterStatus, Health
from domain.telemetry.readings import GpuReading, PodRef, Snapshot
from worker.bulk import is_postgresql, naive_utc, update_rows

log = logging.getLogger(__name__)

UNREACHABLE_AFTER_FAILURES = 3
"""Consecutive failed polls after which a cluster is shown unreachable rather than stale."""
REASON_MAX_LENGTH = 512
_CHUNK = 500
"""Bind parameters per IN list; well under SQLite's and PostgreSQL's limits."""
_HEALTH_RANK = {Health.HEALTHY.value: 0, Health.DEGRADED.value: 1, Health.FAILING.value: 2}

Slot = tuple[int, int | None]
"""An allocatable slot: (gpu id, slice id or None for the whole GPU)."""


@dataclass
class InventoryChanges:
    """What one :func:`apply_snapshot` wrote; ``rows_written`` is zero for an unchanged fleet."""

    inserted: int = 0
    updated: int = 0
    allocations_opened: int = 0
    allocations_closed: int = 0
    marked_missing: int = 0
    clusters_polled: int = 0
    """Clusters whose poll heartbeat was refreshed; not counted as inventory writes."""

    @property
    def rows_written(self) -> int:
        """Inventory rows inserted or updated (allocations included, heartbeats not)."""
        return self.inserted + self.updated


@dataclass(slots=True, eq=False)
class GpuRow:
    """A ``gpu`` row as loaded for comparison: its columns, no ORM state. Writes go by ``id``."""

    id: int
    uuid: str
    node_id: int
    index: int
    model: str
    pci_bus_id: str | None
    memory_total_mib: float | None
    mig_mode: bool
    utilization: float | None
    memory_used_mib: float | None
    power_watts: float | None
    temperature_c: float | None
    last_xid: int | None
    health: str
    first_seen: datetime
    last_seen: datetime


@dataclass(slots=True, eq=False)
class AllocationRow:
    """An open ``allocation`` row as loaded for comparison; closing it is written by ``id``."""

    id: int
    gpu_id: int
    slice_id: int | None
    project_id: int
    pod: str
    container: str | None
    since: datetime
    until: datetime | None


def _columns_of(row_class: type, model: Any) -> Select[Any]:
    """``SELECT`` of the model's columns in the order of ``row_class``'s fields (``row_class(*row)``)."""
    table = model.__table__
    return select(*(table.c[f.name] for f in fields(row_class)))


def _gpu_rows(session: Session, query: Select[Any]) -> Iterator[GpuRow]:
    for row in session.execute(query):
        yield GpuRow(*row)


def _allocation_rows(session: Session, query: Select[Any]) -> Iterator[AllocationRow]:
    for row in session.execute(query):
        yield AllocationRow(*row)


@dataclass
class _Existing:
    """The hub's rows as loaded by a fixed number of bulk queries."""

    clusters: dict[str, Cluster]
    nodes: dict[tuple[int, str], Node]
    gpus: dict[str, GpuRow]
    slices: dict[tuple[int, int], GpuSlice]
    projects: dict[tuple[int, str], ResearchProject]
    open_allocations: dict[Slot, list[AllocationRow]] = field(default_factory=dict)


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _of_hub(column: Any, hub_id: int) -> ColumnElement[bool]:
    """Condition on a ``gpu_id`` column: a GPU of the hub."""
    of_hub = (
        select(Gpu.id)
        .join(Node, col(Gpu.node_id) == col(Node.id))
        .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
        .where(Cluster.hub_id == hub_id)
        .correlate(None)
    )
    return col(column).in_(of_hub)


def load_inventory(session: Session, hub_id: int) -> _Existing:
    """The hub's rows in six bulk queries; :func:`apply_snapshot` takes them pre-loaded (``existing``),
    so a poller can read the database while the source is still answering."""
    with session.no_autoflush:
        clusters = {c.name: c for c in session.exec(select(Cluster).where(Cluster.hub_id == hub_id))}
        nodes = {
            (n.cluster_id, n.hostname): n
            for n in session.exec(
                select(Node).join(Cluster, col(Node.cluster_id) == col(Cluster.id)).where(Cluster.hub_id == hub_id)
            )
        }
        gpus = {
            g.uuid: g
            for g in _gpu_rows(
                session,
                _columns_of(GpuRow, Gpu)
                .join(Node, col(Gpu.node_id) == col(Node.id))
                .join(Cluster, col(Node.cluster_id) == col(Cluster.id))
                .where(col(Cluster.hub_id) == hub_id),
            )
        }
        slices = {
            (s.gpu_id, s.mig_instance_id): s
            for s in session.exec(select(GpuSlice).where(_of_hub(GpuSlice.gpu_id, hub_id)))
        }
        projects = {
            (p.cluster_id, p.namespace): p
            for p in session.exec(
                select(ResearchProject)
                .join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
                .where(Cluster.hub_id == hub_id)
            )
        }
        existing = _Existing(clusters, nodes, gpus, slices, projects)
        for allocation in _allocation_rows(
            session,
            _columns_of(AllocationRow, Allocation)
            .where(col(Allocation.until).is_(None), _of_hub(Allocation.gpu_id, hub_id))
            .order_by(col(Allocation.id)),
        ):
            existing.open_allocations.setdefault((allocation.gpu_id, allocation.slice_id), []).append(allocation)
    return existing


def _add_moved_in(session: Session, existing: _Existing, uuids: Sequence[str]) -> None:
    """GPUs first seen by this hub may already exist under another hub (the UUID is global)."""
    unknown = [u for u in uuids if u not in existing.gpus]
    moved_in: list[int] = []
    for chunk in _chunks(unknown):
        for gpu in _gpu_rows(session, _columns_of(GpuRow, Gpu).where(col(Gpu.uuid).in_(chunk))):
            existing.gpus[gpu.uuid] = gpu
            moved_in.append(gpu.id or 0)
    if not moved_in:
        return
    for part in session.exec(select(GpuSlice).where(col(GpuSlice.gpu_id).in_(moved_in))):
        existing.slices[(part.gpu_id, part.mig_instance_id)] = part
    for allocation in _allocation_rows(
        session,
        _columns_of(AllocationRow, Allocation)
        .where(col(Allocation.until).is_(None), col(Allocation.gpu_id).in_(moved_in))
        .order_by(col(Allocation.id)),
    ):
        existing.open_allocations.setdefault((allocation.gpu_id, allocation.slice_id), []).append(allocation)


def _assign(row: Any, values: Mapping[str, Any]) -> bool:
    """Set only the attributes that differ, so the ORM emits an UPDATE only for real changes."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


class _BulkUpdate:
    """Existing rows of one table whose values changed in this poll, written in one statement.

    The new values are set on the ORM objects as already committed (so later stages see them and
    the ORM does not write them again); :meth:`write` sends every row's ``columns`` by primary key.
    """

    def __init__(self, model: Any, columns: Sequence[str]) -> None:
        self.table = model.__table__
        self.columns = tuple(columns)
        self.rows: list[Any] = []

    def stage(self, row: Any, changed: Mapping[str, Any]) -> None:
        orm = hasattr(row, "_sa_instance_state")  # plain rows (GpuRow) are not tracked by the ORM
        for name, value in changed.items():
            if orm:
                set_committed_value(row, name, value)
            else:
                setattr(row, name, value)
        self.rows.append(row)

    def write(self, session: Session) -> None:
        if not self.rows:
            return
        if is_postgresql(session):
            rows = [{"id": row.id, **{c: _plain(getattr(row, c)) for c in self.columns}} for row in self.rows]
            update_rows(session, self.table, rows, columns=self.columns)
        else:
            stmt = (
                update(self.table)
                .where(self.table.c.id == bindparam("_id"))
                .values({c: bindparam(f"_{c}") for c in self.columns})
            )
            rows = [{"_id": row.id, **{f"_{c}": getattr(row, c) for c in self.columns}} for row in self.rows]
            session.execute(stmt, rows)
        self.rows = []


def _plain(value: Any) -> Any:
    """A value as the JSON of :func:`worker.bulk.update_rows` carries it (datetimes naive UTC)."""
    return naive_utc(value) if isinstance(value, datetime) else value


_GPU_COLUMNS = (
    "node_id",
    "index",
    "model",
    "mig_mode",
    "utilization",
    "memory_used_mib",
    "power_watts",
    "temperature_c",
    "last_xid",
    "health",
    "pci_bus_id",
    "memory_total_mib",
    "last_seen",
)
_SLICE_COLUMNS = ("profile", "utilization", "memory_used_mib", "health", "memory_total_mib", "last_seen")


class _Upsert:
    """One application of one snapshot; keeps the counters and the rows created along the way."""

    def __init__(
        self, session: Session, hub: Hub, snapshot: Snapshot, missing_after: timedelta, hot_threshold_c: float
    ) -> None:
        self.hot_threshold_c = hot_threshold_c
        self.session = session
        self.hub_id = hub.id or 0
        self.hub_name = hub.name
        self.snapshot = snapshot
        self.now = snapshot.taken_at
        self.missing_after = missing_after
        self.refresh_after = missing_after / 4
        self.changes = InventoryChanges()
        self.readings = self._unique_readings(snapshot.gpus)
        self.closed_allocations: list[int] = []
        """Ids of loaded (plain) allocations this poll closes, written by :meth:`_write_plain`."""
        self.missing_gpus: list[int] = []
        """Ids of loaded (plain) GPUs this poll marks missing, written by :meth:`_write_plain`."""

    @staticmethod
    def _unique_readings(readings: Iterable[GpuReading]) -> list[GpuReading]:
        seen: dict[str, GpuReading] = {}
        for reading in readings:
            if reading.uuid in seen:
                log.warning("GPU %s reported twice in one snapshot; keeping the first", reading.uuid)
                continue
            seen[reading.uuid] = reading
        return list(seen.values())

    # --- writing helpers -------------------------------------------------------------------

    def _insert(self, row: Any) -> None:
        self.session.add(row)
        self.changes.inserted += 1

    def _update(self, row: Any, values: Mapping[str, Any]) -> bool:
        """Assign ``values``; refresh a coarse ``last_seen``; count one update if anything changed."""
        changed = _assign(row, values)
        if (changed or self.now - row.last_seen >= self.refresh_after) and row.last_seen != self.now:
            row.last_seen = self.now
            changed = True
        if changed:
            self.changes.updated += 1
        return changed

    def _update_bulk(self, row: Any, values: Mapping[str, Any], bulk: _BulkUpdate) -> None:
        """What :meth:`_update` does, with the write left to ``bulk``."""
        changed = {name: value for name, value in values.items() if getattr(row, name) != value}
        if (changed or self.now - row.last_seen >= self.refresh_after) and row.last_seen != self.now:
            changed["last_seen"] = self.now
        if changed:
            bulk.stage(row, changed)
            self.changes.updated += 1

    # --- stages ----------------------------------------------------------------------------

    def run(self, existing: _Existing) -> InventoryChanges:
        clusters = self._clusters(existing)
        self.session.flush()
        nodes = self._nodes(existing, clusters)
        projects = self._projects(existing, clusters)
        self.session.flush()
        gpus = self._gpus(existing, clusters, nodes)
        self.session.flush()
        slices = self._slices(existing, gpus)
        self.session.flush()
        self._allocations(existing, clusters, gpus, slices, projects)
        self._mark_missing(existing, {c.id or 0 for c in clusters.values()}, gpus, slices)
        self._write_plain()
        self.session.flush()
        return self.changes

    def _write_plain(self) -> None:
        """Closings and missing marks of plain rows, by id (before the flush inserts the new allocations)."""
        with self.session.no_autoflush:
            for chunk in _chunks(self.closed_allocations):
                self.session.execute(
                    update(table_of(Allocation)).where(table_of(Allocation).c.id.in_(chunk)).values(until=self.now)
                )
            for chunk in _chunks(self.missing_gpus):
                self.session.execute(
                    update(table_of(Gpu)).where(table_of(Gpu).c.id.in_(chunk)).values(health=Health.MISSING.value)
                )
        self.closed_allocations, self.missing_gpus = [], []

    def _clusters(self, existing: _Existing) -> dict[str, Cluster]:
        snapshot = self.snapshot
        named = [
            *snapshot.clusters,
            *(r.cluster for r in self.readings),
            *(q.cluster for q in snapshot.quotas),
            *(r.cluster for r in snapshot.requests),
            *(c.cluster for c in snapshot.gpu_counts),
        ]
        names = list(dict.fromkeys(named))
        operator_counts = {c.cluster: c for c in snapshot.gpu_counts}
        nodes: dict[str, set[str]] = defaultdict(set)
        gpu_count: Counter[str] = Counter()
        slice_count: Counter[str] = Counter()
        for reading in self.readings:
            nodes[reading.cluster].add(reading.node)
            gpu_count[reading.cluster] += 1
            slice_count[reading.cluster] += len(reading.slices)
        present: dict[str, Cluster] = {}
        for name in names:
            values: dict[str, Any] = {
                "status": ClusterStatus.OK.value,
                "status_reason": None,
                "node_count": len(nodes[name]),
                "gpu_count": gpu_count[name],
                "slice_count": slice_count[name],
            }
            counted = operator_counts.get(name)
            if not gpu_count[name] and counted is not None:  # no DCGM series: the GPU Operator's counts
                values["node_count"] = counted.gpu_nodes or 0
                values["gpu_count"] = counted.gpus or 0
            cluster = existing.clusters.get(name)
            if cluster is None:
                cluster = Cluster(hub_id=self.hub_id, name=name, **values)
                self._insert(cluster)
            elif _assign(cluster, values):
                self.changes.updated += 1
            cluster.last_poll_at = self.now
            cluster.last_success_at = self.now
            self.changes.clusters_polled += 1
            present[name] = cluster
        for name, cluster in existing.clusters.items():
            if name not in present and cluster.status == ClusterStatus.OK:
                cluster.status = ClusterStatus.STALE.value
                cluster.status_reason = f"not in the last answer of source {self.hub_name}"
                self.changes.updated += 1
        return present

    def _nodes(self, existing: _Existing, clusters: Mapping[str, Cluster]) -> dict[tuple[int, str], Node]:
        by_node: dict[tuple[str, str], list[GpuReading]] = defaultdict(list)
        for reading in self.readings:
            by_node[(reading.cluster, reading.node)].append(reading)
        present: dict[tuple[int, str], Node] = {}
        for (cluster_name, hostname), readings in by_node.items():
            cluster_id = clusters[cluster_name].id or 0
            models = Counter(r.model for r in readings if r.model)
            drivers = [r.driver_version for r in readings if r.driver_version]
            health = max((gpu_health(r, self.hot_threshold_c).value for r in readings), key=_HEALTH_RANK.__getitem__)
            node = existing.nodes.get((cluster_id, hostname))
            values: dict[str, Any] = {"gpu_count": len(readings), "health": health}
            if models:
                values["gpu_model"] = models.most_common(1)[0][0]
            if drivers:
                values["driver_version"] = drivers[0]
            if node is None:
                node = Node(cluster_id=cluster_id, hostname=hostname, first_seen=self.now, last_seen=self.now, **values)
                self._insert(node)
            else:
                self._update(node, values)
            present[(cluster_id, hostname)] = node
        return present

    def _projects(self, existing: _Existing, clusters: Mapping[str, Cluster]) -> dict[tuple[int, str], ResearchProject]:
        allocated: dict[tuple[str, str], float] = defaultdict(float)
        for reading in self.readings:
            for workload, fraction in _workloads(reading):
                allocated[(reading.cluster, workload.namespace)] += fraction
        quotas = {(q.cluster, q.namespace): q.gpu_quota for q in self.snapshot.quotas}
        requested = [(r.cluster, r.namespace) for r in self.snapshot.requests]
        wanted = list(dict.fromkeys([*allocated, *quotas, *requested]))
        present: dict[tuple[int, str], ResearchProject] = {}
        for cluster_name, namespace in wanted:
            cluster_id = clusters[cluster_name].id or 0
            values: dict[str, Any] = {
                "gpu_quota": quotas.get((cluster_name, namespace)),
                "allocated_gpus": round(allocated.get((cluster_name, namespace), 0.0), 6),
            }
            project = existing.projects.get((cluster_id, namespace))
            if project is None:
                project = ResearchProject(
                    cluster_id=cluster_id,
                    namespace=namespace,
                    display_name=namespace,
                    first_seen=self.now,
                    last_seen=self.now,
                    **values,
                )
                self._insert(project)
            else:
                self._update(project, values)
            present[(cluster_id, namespace)] = project
        # Projects of a present cluster that have neither workload nor quota any more hold nothing.
        present_cluster_ids = {c.id for c in clusters.values()}
        for key, project in existing.projects.items():
            stale = key not in present and key[0] in present_cluster_ids
            if stale and _assign(project, {"allocated_gpus": 0.0, "gpu_quota": None}):
                self.changes.updated += 1
        return present

    def _gpus(
        self, existing: _Existing, clusters: Mapping[str, Cluster], nodes: Mapping[tuple[int, str], Node]
    ) -> dict[str, Gpu | GpuRow]:
        present: dict[str, Gpu | GpuRow] = {}
        bulk = _BulkUpdate(Gpu, _GPU_COLUMNS)
        for reading in self.readings:
            node = nodes[(clusters[reading.cluster].id or 0, reading.node)]
            gpu = existing.gpus.get(reading.uuid)
            values: dict[str, Any] = {
                "node_id": node.id,
                "index": reading.index,
                "model": reading.model,
                "mig_mode": reading.mig_mode,
                "utilization": reading.utilization,
                "memory_used_mib": reading.memory_used_mib,
                "power_watts": reading.power_watts,
                "temperature_c": reading.temperature_c,
                "last_xid": reading.xid,
                "health": gpu_health(reading, self.hot_threshold_c).value,
            }
            # Static facts are kept when a poll lacks them (a family missing for one poll).
            if reading.pci_bus_id is not None or gpu is None:
                values["pci_bus_id"] = reading.pci_bus_id
            if reading.memory_total_mib is not None or gpu is None:
                values["memory_total_mib"] = reading.memory_total_mib
            if gpu is None:
                inserted = Gpu(uuid=reading.uuid, first_seen=self.now, last_seen=self.now, **values)
                self._insert(inserted)
                present[reading.uuid] = inserted
            else:
                self._update_bulk(gpu, values, bulk)
                present[reading.uuid] = gpu
        bulk.write(self.session)
        return present

    def _slices(self, existing: _Existing, gpus: Mapping[str, Gpu | GpuRow]) -> dict[tuple[int, int], GpuSlice]:
        present: dict[tuple[int, int], GpuSlice] = {}
        bulk = _BulkUpdate(GpuSlice, _SLICE_COLUMNS)
        for reading in self.readings:
            gpu = gpus[reading.uuid]
            gpu_id = gpu.id or 0
            for reported in reading.slices:
                key = (gpu_id, reported.mig_instance_id)
                if key in present:
                    continue
                row = existing.slices.get(key)
                values: dict[str, Any] = {
                    "profile": reported.profile,
                    "utilization": reported.utilization,
                    "memory_used_mib": reported.memory_used_mib,
                    "health": gpu.health,
                }
                if reported.memory_total_mib is not None or row is None:
                    values["memory_total_mib"] = reported.memory_total_mib
                if row is None:
                    row = GpuSlice(
                        gpu_id=gpu_id,
                        mig_instance_id=reported.mig_instance_id,
                        first_seen=self.now,
                        last_seen=self.now,
                        **values,
                    )
                    self._insert(row)
                else:
                    self._update_bulk(row, values, bulk)
                present[key] = row
        bulk.write(self.session)
        return present

    def _allocations(
        self,
        existing: _Existing,
        clusters: Mapping[str, Cluster],
        gpus: Mapping[str, Gpu | GpuRow],
        slices: Mapping[tuple[int, int], GpuSlice],
        projects: Mapping[tuple[int, str], ResearchProject],
    ) -> None:
        # one open allocation per pod of a slot (several on a time-sliced GPU or slice)
        desired: dict[Slot, dict[tuple[int, str, str | None], None]] = {}
        reported: set[Slot] = set()
        for reading in self.readings:
            gpu_id = gpus[reading.uuid].id or 0
            cluster_id = clusters[reading.cluster].id or 0
            reported.add((gpu_id, None))
            for pod in () if reading.slices else reading.workloads:
                project = projects[(cluster_id, pod.namespace)]
                desired.setdefault((gpu_id, None), {})[(project.id or 0, pod.pod, pod.container)] = None
            for reported_slice in reading.slices:
                slice_id = slices[(gpu_id, reported_slice.mig_instance_id)].id
                reported.add((gpu_id, slice_id))
                for pod in reported_slice.workloads:
                    project = projects[(cluster_id, pod.namespace)]
                    desired.setdefault((gpu_id, slice_id), {})[(project.id or 0, pod.pod, pod.container)] = None
        for slot in reported:
            wanted = desired.get(slot, {})
            kept: set[tuple[int, str, str | None]] = set()
            for allocation in existing.open_allocations.get(slot, []):
                holder = (allocation.project_id, allocation.pod, allocation.container)
                if holder in wanted and holder not in kept:
                    kept.add(holder)
                else:
                    self._close(allocation)
            for project_id, pod_name, container in wanted:
                if (project_id, pod_name, container) in kept:
                    continue
                self._insert(
                    Allocation(
                        gpu_id=slot[0],
                        slice_id=slot[1],
                        project_id=project_id,
                        pod=pod_name,
                        container=container,
                        since=self.now,
                    )
                )
                self.changes.allocations_opened += 1

    def _close(self, allocation: AllocationRow) -> None:
        allocation.until = self.now
        self.closed_allocations.append(allocation.id)
        self.changes.updated += 1
        self.changes.allocations_closed += 1

    def _is_overdue(self, row: Node | GpuRow | GpuSlice) -> bool:
        return row.health != Health.MISSING and self.now - row.last_seen >= self.missing_after

    def _mark(self, row: Node | GpuRow | GpuSlice) -> None:
        row.health = Health.MISSING.value
        if isinstance(row, GpuRow):
            self.missing_gpus.append(row.id)
        self.changes.updated += 1
        self.changes.marked_missing += 1

    def _mark_missing(
        self,
        existing: _Existing,
        present_cluster_ids: set[int],
        gpus: Mapping[str, Gpu | GpuRow],
        slices: Mapping[tuple[int, int], GpuSlice],
    ) -> None:
        """Rows of the answering clusters that were not reported and are past the grace period."""
        seen_nodes = {g.node_id for g in gpus.values()}
        for node in existing.nodes.values():
            if node.cluster_id in present_cluster_ids and node.id not in seen_nodes and self._is_overdue(node):
                self._mark(node)
        open_by_gpu: dict[int, list[AllocationRow]] = defaultdict(list)
        for (gpu_id, _), allocations in existing.open_allocations.items():
            open_by_gpu[gpu_id].extend(allocations)
        node_cluster = {node.id: cluster_id for (cluster_id, _), node in existing.nodes.items()}
        silent = [
            gpu
            for uuid, gpu in existing.gpus.items()
            if uuid not in gpus and node_cluster.get(gpu.node_id) in present_cluster_ids
        ]
        for gpu in silent:
            if self._is_overdue(gpu):
                self._mark(gpu)
                self._close_all(open_by_gpu.get(gpu.id or 0, []))
        # slices of a reported GPU that dropped out (MIG reconfigured), or of a silent GPU
        watched_gpu_ids = {g.id for g in gpus.values()} | {g.id for g in silent}
        for key, row in existing.slices.items():
            if key not in slices and row.gpu_id in watched_gpu_ids and self._is_overdue(row):
                self._mark(row)
                self._close_all(existing.open_allocations.get((row.gpu_id, row.id), []))

    def _close_all(self, allocations: Iterable[AllocationRow]) -> None:
        for allocation in allocations:
            if allocation.until is None:
                self._close(allocation)


def _workloads(reading: GpuReading) -> Iterator[tuple[PodRef, float]]:
    """The pods on a GPU with the share each holds: a whole GPU counts 1, a MIG slice its fraction,
    split evenly among the pods of a time-sliced GPU or slice (as the ledger does).

    A GPU in MIG mode carries its workloads on its slices; a GPU-level pod label is then ignored.
    """
    if not reading.slices:
        for pod in reading.workloads:
            yield pod, 1.0 / len(reading.workloads)
        return
    for reported in reading.slices:
        for pod in reported.workloads:
            yield pod, slice_fraction(reported.profile) / len(reported.workloads)


def apply_snapshot(
    session: Session,
    hub: Hub,
    snapshot: Snapshot,
    *,
    missing_after: timedelta,
    existing: _Existing | None = None,
    hot_threshold_c: float = DEGRADED_TEMPERATURE_C,
) -> InventoryChanges:
    """Bring the hub's inventory in line with ``snapshot``, writing only rows whose values changed.

    ``existing``: the hub's rows from :func:`load_inventory` in this session, if already loaded.
    ``hot_threshold_c``: the temperature from which a GPU is degraded (the pipeline's configured one).
    """
    if hub.id is None:
        session.flush()
    with session.no_autoflush:
        upsert = _Upsert(session, hub, snapshot, missing_after, hot_threshold_c)
        if existing is None:
            existing = load_inventory(session, hub.id or 0)
        _add_moved_in(session, existing, [r.uuid for r in upsert.readings])
    return upsert.run(existing)


def mark_source_failed(
    session: Session,
    hub: Hub,
    reason: str,
    now: datetime,
    *,
    consecutive_failures: int = 1,
    unreachable_after: int = UNREACHABLE_AFTER_FAILURES,
) -> list[Cluster]:
    """A poll failed as a whole: every cluster of the hub goes stale with the reason; nothing else changes.

    A cluster becomes unreachable after ``unreachable_after`` consecutive failures, or at once when
    it never had a successful poll. Returns the clusters, so the caller can report their status.
    """
    clusters = list(session.exec(select(Cluster).where(Cluster.hub_id == hub.id).order_by(col(Cluster.name))))
    for cluster in clusters:
        unreachable = consecutive_failures >= unreachable_after or cluster.last_success_at is None
        cluster.status = (ClusterStatus.UNREACHABLE if unreachable else ClusterStatus.STALE).value
        cluster.status_reason = reason[:REASON_MAX_LENGTH]
        cluster.last_poll_at = now
    session.flush()
    return clusters
