"""Right-sizing: the smallest MIG profile or GPU count that fits what a workload was seen to use.

The rule, for the devices one workload held (all of one kind: whole GPUs of one model, or slices of
one profile):

* **Headroom** (:data:`HEADROOM`, 20 %): the recommendation must hold the observed peak memory x 1.2
  and the observed peak compute x 1.2. Peak compute is a device's peak SM activity
  (``DCGM_FI_PROF_SM_ACTIVE``), else its peak utilisation; peak memory is the framebuffer used at its
  highest. The headroom also covers the gap between a MIG profile's nominal memory (``1g.10gb``:
  10 GiB) and what it makes usable (9.5 GiB).
* **GPU count** (more than one device held): ``k = max(ceil(Σ peak compute x 1.2),
  ceil(Σ peak memory x 1.2 / one device's memory))``, at least 1, at most what was held.
* **MIG profile** (one device, on a MIG-capable model, :func:`domain.ledger.mig.mig_profiles`): the
  smallest profile (fewest compute slices, then least memory) with memory >= peak x 1.2 and compute
  slices >= peak compute x 1.2 x the device's slices, if it is smaller than the device held.
* Nothing is recommended when peak memory, the device's memory or its compute peak is unknown:
  nothing is guessed. The recommendation never holds less memory than the observed peak (a property
  test checks it).

What it returns: :attr:`RightSizing.gpu_hours_per_month`, the GPU-hours a 30-day month the change
gives back at the pace observed (GPU-hours held / hours elapsed x 720 x the share given back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from domain.ledger.mig import MigProfileError, compute_slices, mig_profiles, profile_memory_mib, profile_slices
from domain.report_cards.usage import DeviceUsage

HEADROOM = 0.2
MONTH_HOURS = 30 * 24


@dataclass(frozen=True, slots=True)
class RightSizing:
    kind: str
    """``keep`` (already the smallest that fits), ``gpus`` (fewer GPUs) or ``mig`` (a smaller MIG profile);
    ``unknown`` when a figure it needs was not read."""
    text: str
    held_units: float
    """GPUs held (a slice counts its share)."""
    recommended_units: float
    recommended_memory_mib: float | None
    """Memory the recommendation holds (all its devices)."""
    peak_memory_mib: float | None
    """Observed peak memory (all devices)."""
    gpu_hours_per_month: float
    gpu_count: int | None = None
    profile: str | None = None


def right_size(devices: Sequence[DeviceUsage], elapsed_hours: float) -> RightSizing:
    """The recommendation for one workload's devices (see the module's rule)."""
    held = sum(d.share for d in devices)
    peaks = [d.memory_max_mib for d in devices]
    capacities = [d.memory_total_mib for d in devices]
    computes = [d.compute_peak() for d in devices]
    if not devices or any(v is None for v in (*peaks, *capacities, *computes)):
        missing = "peak memory" if any(p is None for p in peaks) else "device memory"
        if any(c is None for c in computes):
            missing = "compute activity" if missing == "device memory" else missing
        return RightSizing("unknown", f"No recommendation: {missing} was not read.", held, held, None, None, 0.0)
    peak_memory = sum(p or 0.0 for p in peaks)
    capacity = max(c or 0.0 for c in capacities)
    need_memory = peak_memory * (1 + HEADROOM)
    need_compute = sum(c or 0.0 for c in computes) * (1 + HEADROOM)
    gpu_hours = sum(d.gpu_seconds for d in devices) / 3600
    share = devices[0].share
    n = len(devices)

    def returned(units: float) -> float:
        if not held or elapsed_hours <= 0:
            return 0.0
        return round(gpu_hours / elapsed_hours * MONTH_HOURS * (1 - units / held), 1)

    def keep(reason: str) -> RightSizing:
        return RightSizing("keep", reason, held, held, capacity * n, peak_memory, 0.0, gpu_count=n)

    if n > 1:
        k = max(1, math.ceil(need_compute - 1e-9), math.ceil(need_memory / capacity - 1e-9)) if capacity else n
        if k >= n:
            return keep(f"Keep {n} devices: peak compute and memory with {HEADROOM:.0%} headroom need all of them.")
        units = k * share
        text = (
            f"Request {k} instead of {n}: peak compute {sum(c or 0 for c in computes):.2f} device(s) and peak memory "
            f"{peak_memory / 1024:.1f} GiB fit in {k} with {HEADROOM:.0%} headroom."
        )
        return RightSizing("gpus", text, held, units, k * capacity, peak_memory, returned(units), gpu_count=k)
    device = devices[0]
    model = device.gpu_model or ""
    total_slices = compute_slices(model)
    held_slices = share * total_slices
    best: tuple[str, int, float] | None = None
    for profile in mig_profiles(model):
        try:
            slices, memory = profile_slices(profile), profile_memory_mib(profile)
        except MigProfileError:
            continue
        fits = memory >= need_memory and slices >= need_compute * held_slices - 1e-9
        if fits and slices < held_slices - 1e-9 and (best is None or (slices, memory) < (best[1], best[2])):
            best = (profile, slices, memory)
    if best is None:
        return keep(f"Keep it: no smaller MIG profile holds peak memory and compute with {HEADROOM:.0%} headroom.")
    profile, slices, memory = best
    units = slices / total_slices
    text = (
        f"A {profile} MIG slice fits: peak memory {peak_memory / 1024:.1f} GiB and peak compute "
        f"{need_compute / (1 + HEADROOM) * held_slices:.1f} of {total_slices} compute slices, "
        f"with {HEADROOM:.0%} headroom."
    )
    return RightSizing("mig", text, held, units, memory, peak_memory, returned(units), gpu_count=1, profile=profile)
