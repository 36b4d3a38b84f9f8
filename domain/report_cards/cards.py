"""Report cards: one per workload (a pod's devices over one run) and one per project and month.

Built from :class:`~domain.report_cards.usage.DeviceUsage` sums only: every average is a ratio of
time-weighted sums, a family nobody exported is "not collected" with the reason, never 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from domain.report_cards.rightsizing import RightSizing, right_size
from domain.report_cards.rules import Grade, Note, grade, notes, utilization, weighted
from domain.report_cards.usage import PROFILING_FAMILIES, DeviceUsage

NOT_EXPORTED_ON_CLUSTER = (
    "not collected: cluster {cluster} exports no profiling metrics (DCGM_FI_PROF_*): profiling is disabled in its "
    "dcgm-exporter, or its GPUs do not support DCGM profiling"
)
NOT_REPORTED_FOR_DEVICE = (
    "not collected: this device reported no profiling metrics while others on its cluster did (a time-sliced or "
    "vGPU device, which DCGM cannot profile per workload, or another tool holding the profiling session)"
)
NOT_IN_COUNTER_SET = (
    "not collected: {family} is not in this exporter's counter set (older dcgm-exporter releases and its default "
    "set export fewer profiling fields)"
)
NO_WINDOWS = "not collected: no accounted window recorded profiling metrics for this workload"

_LABELS = {
    "sm_active": "SM activity",
    "sm_occupancy": "SM occupancy",
    "tensor_active": "Tensor-core activity",
    "dram_active": "Memory bandwidth (DRAM) activity",
    "fp64_active": "FP64 pipe activity",
    "fp32_active": "FP32 pipe activity",
    "fp16_active": "FP16 pipe activity",
    "pcie_tx_bytes": "PCIe transmit",
    "pcie_rx_bytes": "PCIe receive",
    "nvlink_tx_bytes": "NVLink transmit",
    "nvlink_rx_bytes": "NVLink receive",
}


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    average: float | None
    """Ratio 0..1, or bytes per second for the bus families; None when not collected."""
    peak: float | None
    unit: str
    """``ratio`` or ``bytes_per_second``."""
    not_collected: str | None = None
    family: str | None = None


@dataclass(frozen=True, slots=True)
class ReportCard:
    scope: str
    """``workload`` or ``project-month``."""
    title: str
    cluster: str | None
    namespace: str
    pod: str | None
    month: str | None
    gpu_model: str | None
    started_at: datetime | None
    ended_at: datetime | None
    workload_ids: list[int]
    devices: int
    workloads: int
    gpu_hours: float
    idle_gpu_hours: float
    utilization: float | None
    """Average utilisation (0..1) over the seconds it was known."""
    memory_peak_mib: float | None
    memory_capacity_mib: float | None
    energy_kwh: float
    figures: list[Figure]
    grade: Grade
    notes: list[Note]
    right_sizing: RightSizing | None
    gpu_hours_returned_per_month: float
    recommendations: list[str] = field(default_factory=list)
    """Project cards: the workloads whose right-sizing returns GPU-hours, largest first."""


def _missing_reason(devices: Sequence[DeviceUsage], key: str) -> str:
    if any(d.profiling for d in devices):
        return NOT_IN_COUNTER_SET.format(family=PROFILING_FAMILIES[key])
    reasons = {d.profiling_missing for d in devices}
    if "device" in reasons:
        return NOT_REPORTED_FOR_DEVICE
    if "cluster" in reasons:
        clusters = ", ".join(sorted({d.cluster for d in devices}))
        return NOT_EXPORTED_ON_CLUSTER.format(cluster=clusters)
    return NO_WINDOWS


def figures(devices: Sequence[DeviceUsage]) -> list[Figure]:
    out = []
    for key, family in PROFILING_FAMILIES.items():
        unit = "bytes_per_second" if key.endswith("_bytes") else "ratio"
        average = weighted(devices, key)
        if average is None:
            reason = _missing_reason(devices, key)
            out.append(Figure(key, _LABELS[key], None, None, unit, reason, family))
            continue
        peak = max(d.profiling[key].peak for d in devices if key in d.profiling and d.profiling[key].known_seconds)
        out.append(Figure(key, _LABELS[key], round(average, 4), round(peak, 4), unit, None, family))
    return out


def _memory(devices: Sequence[DeviceUsage]) -> tuple[float | None, float | None]:
    """(peak, capacity) of the device nearest its capacity; None when memory was not read."""
    known = [d for d in devices if d.memory_max_mib is not None and d.memory_total_mib]
    if not known:
        return None, None
    top = max(known, key=lambda d: (d.memory_max_mib or 0) / (d.memory_total_mib or 1))
    return top.memory_max_mib, top.memory_total_mib


def _span_hours(devices: Sequence[DeviceUsage], now: datetime) -> float:
    start = min(d.started_at for d in devices)
    end = max((d.ended_at or now) for d in devices)
    return max((end - start).total_seconds() / 3600, max(d.seconds for d in devices) / 3600)


def workload_card(devices: Sequence[DeviceUsage], now: datetime | None = None) -> ReportCard:
    """The card of one workload run: the workloads of one pod (one per device) that overlap in time."""
    if not devices:
        raise ValueError("a report card needs at least one workload")
    now = now or datetime.now(UTC)
    first = devices[0]
    sizing = right_size(devices, _span_hours(devices, now))
    peak, capacity = _memory(devices)
    ended = None if any(d.ended_at is None for d in devices) else max(d.ended_at for d in devices if d.ended_at)
    return ReportCard(
        scope="workload",
        title=f"{first.namespace}/{first.pod}",
        cluster=first.cluster,
        namespace=first.namespace,
        pod=first.pod,
        month=None,
        gpu_model=first.gpu_model,
        started_at=min(d.started_at for d in devices),
        ended_at=ended,
        workload_ids=sorted(d.workload_id for d in devices if d.workload_id is not None),
        devices=len(devices),
        workloads=1,
        gpu_hours=round(sum(d.gpu_seconds for d in devices) / 3600, 3),
        idle_gpu_hours=round(sum(d.idle_gpu_seconds for d in devices) / 3600, 3),
        utilization=utilization(devices),
        memory_peak_mib=peak,
        memory_capacity_mib=capacity,
        energy_kwh=round(sum(d.energy_wh for d in devices) / 1000, 3),
        figures=figures(devices),
        grade=grade(devices),
        notes=notes(devices),
        right_sizing=sizing,
        gpu_hours_returned_per_month=sizing.gpu_hours_per_month,
    )


def group_workloads(devices: Iterable[DeviceUsage], now: datetime | None = None) -> list[list[DeviceUsage]]:
    """Workloads grouped into workload runs: same cluster, namespace and pod, overlapping in time."""
    now = now or datetime.now(UTC)
    by_pod: dict[tuple[str, str, str], list[DeviceUsage]] = defaultdict(list)
    for d in devices:
        by_pod[(d.cluster, d.namespace, d.pod)].append(d)
    groups: list[list[DeviceUsage]] = []
    for workloads in by_pod.values():
        workloads.sort(key=lambda d: d.started_at)
        current: list[DeviceUsage] = []
        end: datetime | None = None
        for d in workloads:
            if current and end is not None and d.started_at > end:
                groups.append(current)
                current = []
            current.append(d)
            stop = d.ended_at or now
            end = stop if end is None or not current[:-1] else max(end, stop)
        if current:
            groups.append(current)
    return groups


def project_card(namespace: str, month: str, devices: Sequence[DeviceUsage], now: datetime | None = None) -> ReportCard:
    """A project's card for one month: its workloads that started in the month, summed; notes name the
    workloads that triggered them; right-sizing adds up the workloads' recommendations."""
    now = now or datetime.now(UTC)
    runs = group_workloads(devices, now)
    cards = [workload_card(run, now) for run in runs]
    by_kind: dict[str, list[tuple[ReportCard, Note]]] = defaultdict(list)
    for card in cards:
        for note in card.notes:
            by_kind[note.kind].append((card, note))
    project_notes = []
    for kind, found in by_kind.items():
        shown = "; ".join(f"{card.title}: {note.evidence}" for card, note in found[:5])
        more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
        project_notes.append(Note(kind, found[0][1].advice, f"{len(found)} workload(s): {shown}{more}"))
    returned = sorted(
        (c for c in cards if c.right_sizing and c.right_sizing.gpu_hours_per_month > 0),
        key=lambda c: -(c.right_sizing.gpu_hours_per_month if c.right_sizing else 0.0),
    )
    peak, capacity = _memory(devices)
    return ReportCard(
        scope="project-month",
        title=f"{namespace}, {month}",
        cluster=None,
        namespace=namespace,
        pod=None,
        month=month,
        gpu_model=None,
        started_at=min((d.started_at for d in devices), default=None),
        ended_at=None,
        workload_ids=[],
        devices=len(devices),
        workloads=len(cards),
        gpu_hours=round(sum(d.gpu_seconds for d in devices) / 3600, 3),
        idle_gpu_hours=round(sum(d.idle_gpu_seconds for d in devices) / 3600, 3),
        utilization=utilization(devices),
        memory_peak_mib=peak,
        memory_capacity_mib=capacity,
        energy_kwh=round(sum(d.energy_wh for d in devices) / 1000, 3),
        figures=figures(devices) if devices else [],
        grade=grade(devices),
        notes=project_notes,
        right_sizing=None,
        gpu_hours_returned_per_month=round(sum(c.gpu_hours_returned_per_month for c in cards), 1),
        recommendations=[
            f"{c.title}: {c.right_sizing.text} ({c.right_sizing.gpu_hours_per_month:g} GPU-hours a month)"
            for c in returned[:10]
            if c.right_sizing
        ],
    )
