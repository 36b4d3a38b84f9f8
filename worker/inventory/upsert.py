"""One snapshot compared with a hub's rows: what to insert, update, mark missing, open and close."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session

from domain.inventory.health import gpu_health
from domain.models import Allocation, Cluster, Gpu, GpuSlice, Hub, Node, ResearchProject
from domain.models.base import table_of
from domain.statuses import ClusterStatus, Health
from domain.telemetry.readings import GpuReading, Snapshot
from worker.inventory.rules import HEALTH_RANK, InventoryChanges, InventoryIds, pod_shares
from worker.inventory.store import (
    GPU_COLUMNS,
    SLICE_COLUMNS,
    AllocationRow,
    BulkUpdate,
    Existing,
    GpuRow,
    Slot,
    assign,
    chunks,
)

log = logging.getLogger(__name__)


class Upsert:
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
        changed = assign(row, values)
        if (changed or self.now - row.last_seen >= self.refresh_after) and row.last_seen != self.now:
            row.last_seen = self.now
            changed = True
        if changed:
            self.changes.updated += 1
        return changed

    def _update_bulk(self, row: Any, values: Mapping[str, Any], bulk: BulkUpdate) -> None:
        """What :meth:`_update` does, with the write left to ``bulk``."""
        changed = {name: value for name, value in values.items() if getattr(row, name) != value}
        if (changed or self.now - row.last_seen >= self.refresh_after) and row.last_seen != self.now:
            changed["last_seen"] = self.now
        if changed:
            bulk.stage(row, changed)
            self.changes.updated += 1

    # --- stages ----------------------------------------------------------------------------

    def run(self, existing: Existing) -> InventoryChanges:
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
        cluster_names = {cluster.id: name for name, cluster in clusters.items()}
        self.changes.ids = InventoryIds(
            {uuid: gpu.id or 0 for uuid, gpu in gpus.items()},
            {key: row.id or 0 for key, row in slices.items()},
            {(cluster_names[cluster_id], namespace): p.id or 0 for (cluster_id, namespace), p in projects.items()},
        )
        return self.changes

    def _write_plain(self) -> None:
        """Closings and missing marks of plain rows, by id (before the flush inserts the new allocations)."""
        with self.session.no_autoflush:
            for chunk in chunks(self.closed_allocations):
                self.session.execute(
                    update(table_of(Allocation)).where(table_of(Allocation).c.id.in_(chunk)).values(until=self.now)
                )
            for chunk in chunks(self.missing_gpus):
                self.session.execute(
                    update(table_of(Gpu)).where(table_of(Gpu).c.id.in_(chunk)).values(health=Health.MISSING.value)
                )
        self.closed_allocations, self.missing_gpus = [], []

    def _clusters(self, existing: Existing) -> dict[str, Cluster]:
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
            elif assign(cluster, values):
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

    def _nodes(self, existing: Existing, clusters: Mapping[str, Cluster]) -> dict[tuple[int, str], Node]:
        by_node: dict[tuple[str, str], list[GpuReading]] = defaultdict(list)
        for reading in self.readings:
            by_node[(reading.cluster, reading.node)].append(reading)
        present: dict[tuple[int, str], Node] = {}
        for (cluster_name, hostname), readings in by_node.items():
            cluster_id = clusters[cluster_name].id or 0
            models = Counter(r.model for r in readings if r.model)
            drivers = [r.driver_version for r in readings if r.driver_version]
            health = max((gpu_health(r, self.hot_threshold_c).value for r in readings), key=HEALTH_RANK.__getitem__)
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

    def _projects(self, existing: Existing, clusters: Mapping[str, Cluster]) -> dict[tuple[int, str], ResearchProject]:
        allocated: dict[tuple[str, str], float] = defaultdict(float)
        for reading in self.readings:
            for workload, fraction in pod_shares(reading):
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
            if stale and assign(project, {"allocated_gpus": 0.0, "gpu_quota": None}):
                self.changes.updated += 1
        return present

    def _gpus(
        self, existing: Existing, clusters: Mapping[str, Cluster], nodes: Mapping[tuple[int, str], Node]
    ) -> dict[str, Gpu | GpuRow]:
        present: dict[str, Gpu | GpuRow] = {}
        bulk = BulkUpdate(Gpu, GPU_COLUMNS)
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

    def _slices(self, existing: Existing, gpus: Mapping[str, Gpu | GpuRow]) -> dict[tuple[int, int], GpuSlice]:
        present: dict[tuple[int, int], GpuSlice] = {}
        bulk = BulkUpdate(GpuSlice, SLICE_COLUMNS)
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
        existing: Existing,
        clusters: Mapping[str, Cluster],
        gpus: Mapping[str, Gpu | GpuRow],
        slices: Mapping[tuple[int, int], GpuSlice],
        projects: Mapping[tuple[int, str], ResearchProject],
    ) -> None:
        # one open allocation per pod of a slot (several on a time-sliced GPU or slice)
        desired: dict[Slot, dict[tuple[int, str, str | None], None]] = {}
        reported: set[Slot] = set()
        # ids read once: an ORM attribute costs a descriptor call, and there is one per pod of 10,000 GPUs
        cluster_ids = {name: cluster.id or 0 for name, cluster in clusters.items()}
        project_ids = {key: project.id or 0 for key, project in projects.items()}
        for reading in self.readings:
            gpu_id = gpus[reading.uuid].id or 0
            cluster_id = cluster_ids[reading.cluster]
            reported.add((gpu_id, None))
            for pod in () if reading.slices else reading.workloads:
                project_id = project_ids[(cluster_id, pod.namespace)]
                desired.setdefault((gpu_id, None), {})[(project_id, pod.pod, pod.container)] = None
            for reported_slice in reading.slices:
                slice_id = slices[(gpu_id, reported_slice.mig_instance_id)].id
                reported.add((gpu_id, slice_id))
                for pod in reported_slice.workloads:
                    project_id = project_ids[(cluster_id, pod.namespace)]
                    desired.setdefault((gpu_id, slice_id), {})[(project_id, pod.pod, pod.container)] = None
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
        existing: Existing,
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
