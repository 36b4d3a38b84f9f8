"""What one poll of one source returns: readings in dcgm-exporter's terms, already label-normalised.

Every source (the in-process simulator, Prometheus, Thanos, ACM Observability) produces a
:class:`Snapshot`; the inventory, the ledger, workloads and the signal pipeline
(:class:`~domain.pipeline.extract.PollObservation` holds these very readings) only ever see this
shape, and the simulator names its pods with :class:`PodRef` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class PodRef:
    """The workload a GPU or slice is attached to (dcgm-exporter's pod labels)."""

    namespace: str
    pod: str
    container: str | None = None


@dataclass(frozen=True, slots=True)
class ProfilingReading:
    """The DCGM profiling families of one device (:data:`~domain.telemetry.dcgm.PROFILING`), each the
    latest reading of the window: ratios 0..1, bus rates in bytes per second; None where not exported."""

    sm_active: float | None = None
    sm_occupancy: float | None = None
    tensor_active: float | None = None
    dram_active: float | None = None
    fp64_active: float | None = None
    fp32_active: float | None = None
    fp16_active: float | None = None
    pcie_tx_bytes: float | None = None
    pcie_rx_bytes: float | None = None
    nvlink_tx_bytes: float | None = None
    nvlink_rx_bytes: float | None = None

    @classmethod
    def of(cls, values: Mapping[str, float | None]) -> ProfilingReading | None:
        """From ``{field: value}``; None when no family was read at all."""
        known = {key: value for key, value in values.items() if value is not None}
        return cls(**known) if known else None


@dataclass(frozen=True, slots=True)
class SliceReading:
    """One MIG instance (``GPU_I_ID`` / ``GPU_I_PROFILE``)."""

    mig_instance_id: int
    profile: str
    utilization: float | None = None
    utilization_max: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    workloads: tuple[PodRef, ...] = ()
    """Every pod using the slice (several when it is time-sliced), none when idle."""
    profiling: ProfilingReading | None = None
    """None when the exporter reported no profiling family for the instance."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    cluster: str
    node: str
    uuid: str
    index: int
    model: str
    pci_bus_id: str | None = None
    driver_version: str | None = None
    utilization: float | None = None
    """Average over the poll window, percent."""
    utilization_max: float | None = None
    memory_used_mib: float | None = None
    memory_free_mib: float | None = None
    memory_reserved_mib: float | None = None
    power_watts: float | None = None
    temperature_c: float | None = None
    xid: int | None = None
    """Last XID error code (``DCGM_FI_DEV_XID_ERRORS``), 0 or None when there is none."""
    workloads: tuple[PodRef, ...] = ()
    """Every pod using the whole GPU (several when it is time-sliced: dcgm-exporter then reports one
    series per pod); MIG GPUs carry workloads on their slices instead."""
    slices: tuple[SliceReading, ...] = ()
    profiling: ProfilingReading | None = None
    """The whole GPU's profiling families; None when none was reported (MIG GPUs carry them on slices)."""

    @property
    def mig_mode(self) -> bool:
        return bool(self.slices)

    @property
    def memory_total_mib(self) -> float | None:
        used, free = self.memory_used_mib, self.memory_free_mib
        if used is None or free is None:
            return None
        return used + free + (self.memory_reserved_mib or 0)


@dataclass(frozen=True, slots=True)
class ProjectQuota:
    """``kube_resourcequota`` for ``requests.nvidia.com/gpu`` of one namespace."""

    cluster: str
    namespace: str
    gpu_quota: float


@dataclass(frozen=True, slots=True)
class PodRequest:
    """``kube_pod_container_resource_requests`` for an NVIDIA resource (whole GPUs or MIG slices)."""

    cluster: str
    namespace: str
    pod: str
    resource: str
    """As kube-state-metrics names it: ``nvidia_com_gpu``, ``nvidia_com_mig_1g_10gb``, ..."""
    count: float
    container: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterGpuCount:
    """The GPU Operator's counts for a cluster: what is known where the DCGM exporter is missing."""

    cluster: str
    gpu_nodes: int | None = None
    """``gpu_operator_gpu_nodes_total``."""
    gpus: int | None = None
    """Sum of ``gpu_operator_nvidia_pci_devices_total`` over the cluster's nodes."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    source: str
    taken_at: datetime
    window_seconds: float
    """The span the averages cover, normally the poll interval."""
    clusters: tuple[str, ...]
    """Every cluster the source answered for, even one that has no GPUs left."""
    gpus: tuple[GpuReading, ...] = ()
    quotas: tuple[ProjectQuota, ...] = ()
    requests: tuple[PodRequest, ...] = ()
    """GPU requests of running pods; their namespaces are research projects too."""
    gpu_counts: tuple[ClusterGpuCount, ...] = ()
    """GPU Operator counts, used for clusters that report no DCGM series."""
    warnings: tuple[str, ...] = field(default=())
    """Partial data: families that were absent or queries that failed without failing the poll."""


class SourceError(Exception):
    """A poll failed as a whole (timeout, 5xx, garbage); the source's clusters go stale."""
