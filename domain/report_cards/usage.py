"""What a report card is built from: each device a workload held, as time-weighted sums.

A :class:`DeviceUsage` is one workload (a pod on one GPU or MIG slice), read from the sums the
worker adds per accounted window (``workload``: ``seconds``, ``gpu_seconds``, ``profiling``,
...). Averages are ratios of sums; unknown stays None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PROFILING_FAMILIES: dict[str, str] = {
    "sm_active": "DCGM_FI_PROF_SM_ACTIVE",
    "sm_occupancy": "DCGM_FI_PROF_SM_OCCUPANCY",
    "tensor_active": "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "dram_active": "DCGM_FI_PROF_DRAM_ACTIVE",
    "fp64_active": "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
    "fp32_active": "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
    "fp16_active": "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
    "pcie_tx_bytes": "DCGM_FI_PROF_PCIE_TX_BYTES",
    "pcie_rx_bytes": "DCGM_FI_PROF_PCIE_RX_BYTES",
    "nvlink_tx_bytes": "DCGM_FI_PROF_NVLINK_TX_BYTES",
    "nvlink_rx_bytes": "DCGM_FI_PROF_NVLINK_RX_BYTES",
}
"""The profiling families a card shows, by the key the sums are stored under."""


@dataclass(frozen=True, slots=True)
class FamilySums:
    total: float
    """Σ value x seconds."""
    known_seconds: float
    peak: float


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    """One workload: a pod on one device, with its sums over the windows it held the device."""

    workload_id: int | None
    cluster: str
    namespace: str
    pod: str
    gpu_uuid: str | None
    mig_instance_id: int | None
    gpu_model: str | None
    started_at: datetime
    ended_at: datetime | None
    seconds: float
    gpu_seconds: float
    idle_gpu_seconds: float
    util_seconds: float
    util_known_seconds: float
    util_max: float | None
    memory_max_mib: float | None
    memory_total_mib: float | None
    energy_wh: float
    profiling: Mapping[str, FamilySums] = field(default_factory=dict)
    profiling_missing: str | None = None
    project_id: int | None = None
    profile: str | None = None
    """The MIG profile of a slice, when known."""

    @property
    def share(self) -> float:
        """The share of its GPU the device is (1 whole, 3/7 for a 3g slice), from the sums."""
        return self.gpu_seconds / self.seconds if self.seconds else 1.0

    def average(self, key: str) -> float | None:
        sums = self.profiling.get(key)
        return sums.total / sums.known_seconds if sums and sums.known_seconds else None

    def compute_peak(self) -> float | None:
        """Peak activity of the device, 0..1: SM activity when profiled, else utilisation."""
        sums = self.profiling.get("sm_active")
        if sums and sums.known_seconds:
            return sums.peak
        if self.util_known_seconds and self.util_max is not None:
            return self.util_max / 100
        return None


def usage_from_row(row: Any) -> DeviceUsage:
    """A :class:`DeviceUsage` from a ``workload`` row (ORM object or plain row)."""
    profiling = {
        key: FamilySums(float(v[0]), float(v[1]), float(v[2]))
        for key, v in (row.profiling or {}).items()
        if key in PROFILING_FAMILIES and isinstance(v, Sequence) and len(v) == 3
    }
    return DeviceUsage(
        workload_id=row.id,
        cluster=row.cluster,
        namespace=row.namespace,
        pod=row.pod,
        gpu_uuid=row.gpu_uuid,
        mig_instance_id=row.mig_instance_id,
        gpu_model=row.gpu_model,
        started_at=row.started_at,
        ended_at=row.ended_at,
        seconds=row.seconds or 0.0,
        gpu_seconds=row.gpu_seconds or 0.0,
        idle_gpu_seconds=row.idle_gpu_seconds or 0.0,
        util_seconds=row.util_seconds or 0.0,
        util_known_seconds=row.util_known_seconds or 0.0,
        util_max=row.util_max if row.util_known_seconds else None,
        memory_max_mib=row.memory_max_mib if row.memory_total_mib is not None else None,
        memory_total_mib=row.memory_total_mib,
        energy_wh=row.energy_wh or 0.0,
        profiling=profiling,
        profiling_missing=row.profiling_missing,
        project_id=row.project_id,
    )
