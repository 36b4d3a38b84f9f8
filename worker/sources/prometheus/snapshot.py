"""Building one poll's :class:`~domain.telemetry.readings.Snapshot` from the decoded answers of a
Prometheus-compatible source (see :mod:`worker.sources.prometheus`).

Impossible readings (NaN, ±Inf, negative, absurd) become None and are counted per family
(:class:`~domain.telemetry.dcgm.ReadingCheck`).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern

from domain.telemetry.dcgm import (
    ENGINE_ACTIVE,
    FB_FREE,
    FB_RESERVED,
    FB_USED,
    GPU_UTIL,
    POWER,
    PROFILING,
    TEMPERATURE,
    XID,
    XID_COUNT,
    ReadingCheck,
    utilization_percent,
)
from domain.telemetry.labels import (
    NODE_LABELS,
    LabelReader,
    container_of,
    gpu_index,
    has_exported_labels,
    mig_instance,
    namespace_of,
    pod_of,
)
from domain.telemetry.readings import (
    ClusterGpuCount,
    GpuReading,
    PodRef,
    PodRequest,
    ProfilingReading,
    ProjectQuota,
    SliceReading,
    Snapshot,
)
from worker.sources.prometheus.answers import QueryResult
from worker.sources.prometheus.queries import PRODUCT_LABEL, PROFILING_QUERY, TAG, VALUES_QUERY

log = logging.getLogger(__name__)


@dataclass(slots=True)  # one per GPU and slice: no instance dict
class _Slot:
    """What the dcgm answer says about one GPU (instance None) or one MIG slice."""

    values: dict[str, float | None] = field(default_factory=dict)
    identified: bool = False
    """Whether the identity answer listed it; its workloads are read from its series' labels."""
    workloads: tuple[PodRef, ...] = ()
    profile: str = "unknown"


@dataclass(slots=True)
class _Gpu:
    cluster: str
    uuid: str
    whole: _Slot = field(default_factory=_Slot)
    slices: dict[int, _Slot] = field(default_factory=dict)
    index: int | None = None
    """From the identity answer (None until it is read)."""
    model: str = ""
    pci_bus_id: str | None = None
    driver_version: str | None = None
    node_labels: Mapping[str, str] | None = None
    any_values: dict[str, float | None] = field(default_factory=dict)
    """Device-wide families as seen on any series (real MIG GPUs repeat them on every slice)."""
    xid_counts: dict[int, float] = field(default_factory=dict)


_DEVICE_WIDE = (POWER, TEMPERATURE, XID)


def _pod_order(pod: PodRef) -> tuple[str, str, str]:
    return (pod.namespace, pod.pod, pod.container or "")


_STAT_FAMILIES = {"rule": GPU_UTIL, "util": GPU_UTIL, "engine": ENGINE_ACTIVE}
"""Where a utilisation answer came from (its tag's second part) and the family it is checked as."""


class SnapshotBuilder:
    """Turns the decoded answers of one poll into a :class:`Snapshot`."""

    def __init__(self, source: str, reader: LabelReader, fixed_cluster: str | None) -> None:
        self.source = source
        self.reader = reader
        self.fixed_cluster = fixed_cluster
        self.warnings: list[str] = []
        self.check = ReadingCheck(source)
        """Impossible readings become None, counted per family; reported once per poll."""
        self.clusters: dict[str, None] = {fixed_cluster: None} if fixed_cluster else {}
        self.xid_counted: set[str] = set()
        """Clusters exporting DCGM_EXP_XID_ERRORS_COUNT: there a GPU without a recent count has no XID."""
        self.gpus: dict[tuple[str, str], _Gpu] = {}
        self.kube = _Kube()
        self.stats: dict[tuple[str, str, int | None], dict[str, tuple[str, float]]] = {}

    def _cluster(self, labels: Mapping[str, str]) -> str | None:
        cluster = self.reader.cluster(labels)
        if cluster is None:
            return None
        if cluster not in self.clusters:
            self.clusters[cluster] = None
        return intern(cluster)

    def build(self, now: datetime, window_seconds: float, results: dict[str, QueryResult]) -> Snapshot:
        """The snapshot of a whole poll's answers (consumed: each is dropped once read)."""
        for name in list(results):
            self.add(results.pop(name))
        return self.finish(now, window_seconds)

    def add(self, result: QueryResult) -> None:
        """Fold one answer in; answers may come in any order."""
        if result.name == "kube":
            self.kube = self._kube(result)
        elif result.name == "identity":
            self._identities(result, self.gpus)
        elif result.name.startswith((VALUES_QUERY, PROFILING_QUERY)):
            self._values(result, self.gpus)
        elif result.name == "utilization":
            self.stats = self._stats(result)

    def finish(self, now: datetime, window_seconds: float) -> Snapshot:
        kube, stats, gpus = self.kube, self.stats, self.gpus
        # each GPU's answers are dropped once its reading is made: the two are never all held at once
        readings = tuple(self._reading(gpus.pop(key), stats, kube) for key in list(gpus))
        self.warnings.extend(self.check.report(log))
        return Snapshot(
            source=self.source,
            taken_at=now,
            window_seconds=window_seconds,
            clusters=tuple(self.clusters),
            gpus=readings,
            quotas=tuple(ProjectQuota(c, ns, hard) for (c, ns), hard in kube.quotas.items()),
            requests=tuple(kube.requests),
            gpu_counts=tuple(
                ClusterGpuCount(c, kube.gpu_nodes.get(c), kube.pci_devices.get(c))
                for c in dict.fromkeys([*kube.gpu_nodes, *kube.pci_devices])
            ),
            warnings=tuple(self.warnings),
        )

    # --- dcgm -------------------------------------------------------------------------------

    def _gpu(self, gpus: dict[tuple[str, str], _Gpu], labels: Mapping[str, str]) -> _Gpu | None:
        uuid = labels.get("UUID")
        cluster = self._cluster(labels)
        if not uuid or cluster is None:
            return None
        gpu = gpus.get((cluster, uuid))
        if gpu is None:
            gpu = gpus[(cluster, uuid)] = _Gpu(cluster, uuid, index=gpu_index(labels))
        elif gpu.index is None:  # first seen in the values answer
            gpu.index = gpu_index(labels)
        return gpu

    def _identities(self, result: QueryResult, gpus: dict[tuple[str, str], _Gpu]) -> None:
        """GPUs and slices with their identity and workload (pod labels read per cluster: OpenShift's
        relabelled clusters name the exporter in plain pod labels)."""
        exported: set[str] = set()
        unlabelled = 0
        pods: list[tuple[_Gpu, _Slot, Mapping[str, str]]] = []
        for labels, _ in result.series:
            gpu = self._gpu(gpus, labels)
            if gpu is None:
                unlabelled += 1
                continue
            if has_exported_labels(labels):
                exported.add(gpu.cluster)
            instance = mig_instance(labels)
            if instance is None:
                slot = gpu.whole
                # MIG rows have empty modelName and pci_bus_id: identity comes from whole-GPU rows.
                gpu.model = gpu.model or intern(labels.get("modelName") or "")
                gpu.pci_bus_id = gpu.pci_bus_id or labels.get("pci_bus_id") or None
            else:
                slot = gpu.slices.get(instance[0]) or gpu.slices.setdefault(instance[0], _Slot(profile=instance[1]))
                if slot.profile == "unknown":  # first seen in the values answer
                    slot.profile = instance[1]
                gpu.model = gpu.model or intern(labels.get("modelName") or "")
            gpu.driver_version = gpu.driver_version or intern(labels.get("DCGM_FI_DRIVER_VERSION") or "") or None
            if gpu.node_labels is None:  # only what the node is read from: the label dicts are dropped
                gpu.node_labels = {name: intern(labels[name]) for name in NODE_LABELS if labels.get(name)}
            slot.identified = True
            pods.append((gpu, slot, labels))
        self._workloads(pods, exported)
        if unlabelled:
            what = f"the {self.reader.cluster_label} label" if self.reader.cluster_label else "a UUID"
            self.warnings.append(f"{unlabelled} dcgm series without {what} were ignored")

    def _workloads(self, pods: list[tuple[_Gpu, _Slot, Mapping[str, str]]], exported: set[str]) -> None:
        """Every pod of each device, once, in a stable order: a time-sliced device has one series per
        pod using it (same UUID and GPU_I_ID, other pod labels; the device's readings are the same)."""
        shared: list[_Slot] = []
        for gpu, slot, labels in pods:
            workload = self.reader.workload(labels, exported_cluster=gpu.cluster in exported)
            if workload is not None and workload not in slot.workloads:
                slot.workloads = (*slot.workloads, workload)
                if len(slot.workloads) == 2:
                    shared.append(slot)
        for slot in shared:
            slot.workloads = tuple(sorted(slot.workloads, key=_pod_order))

    def _values(self, result: QueryResult, gpus: dict[tuple[str, str], _Gpu]) -> None:
        """Latest values, one :class:`DcgmRow` per family and device."""
        check = self.check.value
        for row, raw in result.series:
            cluster = self.fixed_cluster or row.cluster
            uuid = row.uuid
            if not uuid or not cluster:
                continue
            if cluster not in self.clusters:
                self.clusters[cluster] = None
            gpu = gpus.get((cluster, uuid))
            if gpu is None:
                gpu = gpus[(cluster, uuid)] = _Gpu(intern(cluster), uuid)
            # one string per family name, not one per series (~170,000 keys of the values dicts at 10,000
            # GPUs); likewise clusters, models, nodes and namespaces, which the snapshot keeps per GPU
            family = intern(row.tag or row.family)
            value = check(family, raw)
            if family == XID_COUNT:
                self.xid_counted.add(cluster)
                if row.xid.isdigit():
                    code = int(row.xid)
                    gpu.xid_counts[code] = gpu.xid_counts.get(code, 0.0) + (value or 0.0)
                continue
            instance = row.instance
            if instance.isdigit():
                slot = gpu.slices.get(int(instance)) or gpu.slices.setdefault(int(instance), _Slot())
            else:
                slot = gpu.whole
            if family in _DEVICE_WIDE and gpu.any_values.get(family) is None:
                gpu.any_values[family] = value
            if slot.values.get(family) is None:
                slot.values[family] = value

    def _stats(self, result: QueryResult) -> dict[tuple[str, str, int | None], dict[str, tuple[str, float]]]:
        """Per device, ``{"avg" | "max" | "last": (source, value)}`` from the tagged utilization answer."""
        stats: dict[tuple[str, str, int | None], dict[str, tuple[str, float]]] = defaultdict(dict)
        for row, value in result.series:
            cluster = self.fixed_cluster or row.cluster
            stat, _, source = row.tag.partition(":")
            stat, source = intern(stat), intern(source)
            if not row.uuid or not cluster or source not in _STAT_FAMILIES:
                continue
            instance = row.instance
            stats[(cluster, row.uuid, int(instance) if instance.isdigit() else None)][stat] = (source, value)
        return stats

    def _utilization(
        self, entry: Mapping[str, tuple[str, float]] | None, *, mig: bool
    ) -> tuple[float | None, float | None]:
        """(average, peak) percent over the window by :func:`utilization_percent`, else the latest sample."""
        if not entry:
            return None, None
        average, peak = self._stat(entry.get("avg"), mig), self._stat(entry.get("max"), mig)
        if average is None:
            average = peak = self._stat(entry.get("last"), mig)
        return average, peak

    def _stat(self, answer: tuple[str, float] | None, mig: bool) -> float | None:
        if answer is None:
            return None
        source, raw = answer
        family = _STAT_FAMILIES[source]
        value = self.check.value(family, raw)
        if family == ENGINE_ACTIVE:
            percent = utilization_percent(None, value, mig=mig)
        else:
            percent = utilization_percent(value, None, mig=mig)
        return None if percent is None else round(percent, 3)

    def _reading(
        self,
        gpu: _Gpu,
        stats: Mapping[tuple[str, str, int | None], Mapping[str, tuple[str, float]]],
        kube: _Kube,
    ) -> GpuReading:
        node = self.reader.node(gpu.node_labels or {}, kube.pod_nodes.get(gpu.cluster)) or "unknown"
        model = gpu.model or kube.products.get((gpu.cluster, node)) or "unknown"
        whole = gpu.whole.values
        slices = tuple(self._slice(gpu, instance, slot, stats) for instance, slot in sorted(gpu.slices.items()))
        # a GPU in MIG mode is judged by the MIG rule too: its usage lives on its slices
        utilization, peak = self._utilization(stats.get((gpu.cluster, gpu.uuid, None)), mig=bool(slices))
        if gpu.cluster in self.xid_counted:
            active = [code for code, count in gpu.xid_counts.items() if count > 0]
            xid = max(active, key=lambda code: (gpu.xid_counts[code], code)) if active else 0
        else:
            raw = whole.get(XID, gpu.any_values.get(XID))
            xid = int(raw) if raw else 0
        return GpuReading(
            cluster=gpu.cluster,
            node=node,
            uuid=gpu.uuid,
            index=gpu.index or 0,
            model=model,
            pci_bus_id=gpu.pci_bus_id,
            driver_version=gpu.driver_version,
            utilization=utilization,
            utilization_max=peak,
            memory_used_mib=whole.get(FB_USED),
            memory_free_mib=whole.get(FB_FREE),
            memory_reserved_mib=whole.get(FB_RESERVED),
            power_watts=whole.get(POWER, gpu.any_values.get(POWER)),
            temperature_c=whole.get(TEMPERATURE, gpu.any_values.get(TEMPERATURE)),
            xid=xid,
            workloads=() if slices else gpu.whole.workloads,
            slices=slices,
            profiling=_profiling(whole),
        )

    def _slice(
        self,
        gpu: _Gpu,
        instance: int,
        slot: _Slot,
        stats: Mapping[tuple[str, str, int | None], Mapping[str, tuple[str, float]]],
    ) -> SliceReading:
        values = slot.values
        utilization, peak = self._utilization(stats.get((gpu.cluster, gpu.uuid, instance)), mig=True)
        used, free, reserved = values.get(FB_USED), values.get(FB_FREE), values.get(FB_RESERVED)
        total = None if used is None or free is None else used + free + (reserved or 0.0)
        return SliceReading(
            mig_instance_id=instance,
            profile=slot.profile,
            utilization=utilization,
            utilization_max=peak,
            memory_used_mib=used,
            memory_total_mib=total,
            workloads=slot.workloads,
            profiling=_profiling(values),
        )

    # --- kube-state-metrics and GPU Operator ------------------------------------------------

    def _kube(self, result: QueryResult) -> _Kube:
        kube = _Kube()
        for labels, value in result.series:
            cluster = self._cluster(labels)
            tag = labels.get(TAG)
            if cluster is None or not math.isfinite(value):
                continue
            if tag == "kube_resourcequota":
                namespace = namespace_of(labels)
                if namespace:
                    key = (cluster, namespace)
                    # Several quota objects in one namespace: the tightest one applies.
                    kube.quotas[key] = min(kube.quotas.get(key, value), value)
            elif tag == "kube_pod_container_resource_requests":
                namespace, pod = namespace_of(labels), pod_of(labels)
                if namespace and pod and value > 0:
                    kube.requests.append(
                        PodRequest(
                            cluster,
                            namespace,
                            pod,
                            labels.get("resource", ""),
                            value,
                            container=container_of(labels),
                            node=labels.get("node") or None,
                        )
                    )
            elif tag == "kube_pod_info":
                pod, node = pod_of(labels), labels.get("node")
                if pod and node:
                    kube.pod_nodes[cluster][pod] = node
            elif tag == "kube_node_labels":
                node, product = labels.get("node"), labels.get(PRODUCT_LABEL)
                if node and product:
                    kube.products[(cluster, node)] = product
            elif tag == "gpu_operator_gpu_nodes_total":
                kube.gpu_nodes[cluster] = max(kube.gpu_nodes.get(cluster, 0), int(value))
            elif tag == "gpu_operator_nvidia_pci_devices_total" and value >= 0:  # -1: the operator failed to count
                kube.pci_devices[cluster] = kube.pci_devices.get(cluster, 0) + int(value)
        return kube


@dataclass
class _Kube:
    quotas: dict[tuple[str, str], float] = field(default_factory=dict)
    requests: list[PodRequest] = field(default_factory=list)
    pod_nodes: defaultdict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    products: dict[tuple[str, str], str] = field(default_factory=dict)
    gpu_nodes: dict[str, int] = field(default_factory=dict)
    pci_devices: dict[str, int] = field(default_factory=dict)


def _profiling(values: Mapping[str, float | None]) -> ProfilingReading | None:
    """A device's profiling families from its latest values; None when it reported none."""
    return ProfilingReading.of({key: values.get(family) for key, family in PROFILING.items()})
