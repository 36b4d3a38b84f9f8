"""What one accounted window adds to a workload's report-card sums (issue 17).

Every figure is a time-weighted sum over the ledger's windows, never a per-poll count: a window of
``seconds`` adds ``value x seconds`` where the value was read, and the seconds to the family's
known seconds, so an average is always ``sum / seconds known`` and a missing reading is neither zero
nor idle. Peaks are maxima of what was read. Profiling families are kept per field of
:class:`~domain.telemetry.readings.ProfilingReading`: ``[Σ value x seconds, seconds known, peak]``.
"""

from __future__ import annotations

from typing import Any

from domain.ledger.mig import MigProfileError, profile_share
from domain.telemetry.dcgm import PROFILING
from domain.telemetry.readings import GpuReading, SliceReading

IDLE_PERCENT = 5.0
"""The scheduler's default idle threshold; the poller passes the configured one."""
SUMMED = (
    "seconds",
    "gpu_seconds",
    "idle_gpu_seconds",
    "util_seconds",
    "util_known_seconds",
    "memory_total_mib",
    "profiling",
    "profiling_missing",
)
"""The workload columns :func:`add_window` changes."""


def device_share(reading: GpuReading, part: SliceReading | None) -> float:
    """The share of its GPU the device is: 1 for a whole GPU, the MIG profile's share for a slice."""
    if part is None:
        return 1.0
    try:
        return profile_share(reading.model, part.profile)
    except MigProfileError:
        return 0.0  # the ledger gives an unknown profile's share to the GPU's rest: so do the cards


def add_window(
    current: Any,
    reading: GpuReading,
    part: SliceReading | None,
    seconds: float,
    *,
    cluster_profiled: bool,
    sharers: int = 1,
    idle_threshold_percent: float = IDLE_PERCENT,
) -> dict[str, Any]:
    """The workload's :data:`SUMMED` columns after one more window of ``seconds`` held.

    ``cluster_profiled``: whether any device of the workload's cluster reported a profiling family in
    this window; it tells "not exported on the cluster" from "not reported for this device".
    ``sharers``: pods time-slicing the device; the workload holds its 1/k part, as in the ledger.
    """
    share = device_share(reading, part) / sharers
    utilization = part.utilization if part is not None else reading.utilization
    total = part.memory_total_mib if part is not None else reading.memory_total_mib
    profile = part.profiling if part is not None else reading.profiling
    out: dict[str, Any] = {
        "seconds": (current.seconds or 0.0) + seconds,
        "gpu_seconds": (current.gpu_seconds or 0.0) + seconds * share,
        "idle_gpu_seconds": current.idle_gpu_seconds or 0.0,
        "util_seconds": current.util_seconds or 0.0,
        "util_known_seconds": current.util_known_seconds or 0.0,
        "memory_total_mib": current.memory_total_mib,
        "profiling": current.profiling or {},
        "profiling_missing": current.profiling_missing,
    }
    if utilization is not None:
        out["util_seconds"] += utilization * seconds
        out["util_known_seconds"] += seconds
        if utilization < idle_threshold_percent:
            out["idle_gpu_seconds"] += seconds * share
    if total is not None:
        out["memory_total_mib"] = max(total, current.memory_total_mib or 0.0)
    if profile is None:
        if out["profiling_missing"] != "device":
            out["profiling_missing"] = "device" if cluster_profiled else "cluster"
        return out
    sums = dict(out["profiling"])  # each entry read is replaced by a new list, so the current row is never changed
    for key in PROFILING:
        value = getattr(profile, key)
        if value is None:
            continue
        total_sum, known, peak = sums.get(key, (0.0, 0.0, value))
        sums[key] = [total_sum + value * seconds, known + seconds, max(peak, value)]
    out["profiling"] = sums
    return out


def profiled_clusters(readings: tuple[GpuReading, ...]) -> set[str]:
    """Clusters at least one of whose devices reported a profiling family."""
    return {
        r.cluster for r in readings if r.profiling is not None or any(part.profiling is not None for part in r.slices)
    }
