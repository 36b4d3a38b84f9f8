"""The grade and the advice notes of a report card: pure rules over time-weighted figures.

**Grade** (:func:`grade`), from the *activity* of the GPU-seconds held: the time-weighted average of
``DCGM_FI_PROF_SM_ACTIVE`` (the share of cycles the SMs had work), each device weighted by the share
of a GPU it is; where no device reported SM activity, the average utilisation instead, flagged as
such (``DCGM_FI_DEV_GPU_UTIL`` counts any kernel running as busy, so it flatters). A >= 60 %,
B >= 40 %, C >= 20 %, D >= 5 %, F below; no grade when neither was read.

**Notes** (:func:`notes`), each with the evidence that triggered it:

=====================  ========================================================================
note                   triggered when
=====================  ========================================================================
memory-hoarding        peak memory >= 90 % of the device's and SM activity < 20 %
tensor-cores-idle      a tensor-core GPU, SM activity >= 30 % and tensor pipe activity < 5 %
fp64-on-ai-gpu         FP64 pipe activity >= 10 % on a GPU with reduced-rate FP64 (L4, L40S, A10, ...)
pcie-bound             PCIe receive or transmit >= 25 % of the link and SM activity < 50 %
gpus-unused            2 or more devices held, some with SM activity (or utilisation) < 5 %
idle-held              held >= 2 hours with >= 90 % of its GPU-seconds idle (utilisation < 5 %)
=====================  ========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from domain.report_cards.usage import DeviceUsage

GRADES = ((0.60, "A"), (0.40, "B"), (0.20, "C"), (0.05, "D"))
HOARD_MEMORY, HOARD_SM = 0.90, 0.20
TENSOR_SM, TENSOR_IDLE = 0.30, 0.05
FP64_BUSY = 0.10
PCIE_SHARE, PCIE_SM = 0.25, 0.50
UNUSED = 0.05
IDLE_HELD_HOURS, IDLE_HELD_SHARE = 2.0, 0.90

_NO_TENSOR_CORES = re.compile(r"\b(K\d+|M\d+|P\d+|P100|GTX)\b")
"""Pre-Volta models: no tensor cores."""
_REDUCED_FP64 = re.compile(r"\b(L4|L20|L40S?|A2|A10G?|A16|A40|T4|RTX)\b")
"""AI and graphics GPUs whose FP64 runs at 1/32 to 1/64 of FP32."""
_PCIE_GEN5 = re.compile(r"\b(H100|H200|H20|GH200|B200|GB200)\b")
_PCIE_GEN3 = re.compile(r"\b(V100|T4|P100|P40|P4)\b")


def pcie_link_bytes(model: str) -> float:
    """One direction of the GPU's x16 link in bytes per second: Gen5 64 GB/s, Gen4 32, Gen3 16."""
    upper = model.upper()
    if _PCIE_GEN5.search(upper):
        return 64e9
    if _PCIE_GEN3.search(upper):
        return 16e9
    return 32e9


@dataclass(frozen=True, slots=True)
class Grade:
    letter: str | None
    activity: float | None
    basis: str
    """``sm_active`` or ``utilization``; ``none`` when there is no grade."""
    text: str


@dataclass(frozen=True, slots=True)
class Note:
    kind: str
    advice: str
    evidence: str


def weighted(devices: Sequence[DeviceUsage], key: str) -> float | None:
    """The time-weighted average of a profiling family over the devices, each weighted by its share."""
    total = known = 0.0
    for d in devices:
        sums = d.profiling.get(key)
        if sums and sums.known_seconds:
            total += sums.total * d.share
            known += sums.known_seconds * d.share
    return total / known if known else None


def utilization(devices: Sequence[DeviceUsage]) -> float | None:
    """Average utilisation 0..1 over the known seconds, weighted by share."""
    total = sum(d.util_seconds * d.share for d in devices)
    known = sum(d.util_known_seconds * d.share for d in devices)
    return total / known / 100 if known else None


def grade(devices: Sequence[DeviceUsage]) -> Grade:
    activity, basis = weighted(devices, "sm_active"), "sm_active"
    if activity is None:
        activity, basis = utilization(devices), "utilization"
    if activity is None:
        return Grade(None, None, "none", "No grade: neither SM activity nor utilisation was read.")
    letter = next((g for floor, g in GRADES if activity >= floor), "F")
    what = "SM activity" if basis == "sm_active" else "utilisation (no SM activity read; it overstates use)"
    return Grade(letter, activity, basis, f"{letter}: {what} averaged {activity:.0%} of the GPU time held.")


def _device_activity(d: DeviceUsage) -> float | None:
    sm = d.average("sm_active")
    if sm is not None:
        return sm
    return d.util_seconds / d.util_known_seconds / 100 if d.util_known_seconds else None


def notes(devices: Sequence[DeviceUsage]) -> list[Note]:
    """Every note whose rule the devices' figures meet, in the order of the module's table."""
    out: list[Note] = []
    model = next((d.gpu_model for d in devices if d.gpu_model), "") or ""
    sm = weighted(devices, "sm_active")
    peak_share = max(
        (d.memory_max_mib / d.memory_total_mib for d in devices if d.memory_max_mib is not None and d.memory_total_mib),
        default=None,
    )
    if peak_share is not None and sm is not None and peak_share >= HOARD_MEMORY and sm < HOARD_SM:
        out.append(
            Note(
                "memory-hoarding",
                "Memory is nearly full while the SMs are mostly idle: the framework is reserving memory, not "
                "using compute. Cap its allocator (e.g. PyTorch's expandable segments, TensorFlow's "
                "memory growth) and a smaller MIG slice may do.",
                f"peak memory {peak_share:.0%} of the device; SM activity {sm:.0%}",
            )
        )
    tensor = weighted(devices, "tensor_active")
    if (
        tensor is not None
        and sm is not None
        and sm >= TENSOR_SM
        and tensor < TENSOR_IDLE
        and not _NO_TENSOR_CORES.search(model.upper())
    ):
        out.append(
            Note(
                "tensor-cores-idle",
                f"The {model} has tensor cores and they sat idle while the SMs worked: mixed precision "
                "(bf16/fp16 autocast) or TF32 would use them.",
                f"SM activity {sm:.0%}; tensor pipe activity {tensor:.1%}",
            )
        )
    fp64 = weighted(devices, "fp64_active")
    if fp64 is not None and fp64 >= FP64_BUSY and _REDUCED_FP64.search(model.upper()):
        out.append(
            Note(
                "fp64-on-ai-gpu",
                f"Double precision is busy on a {model}, whose FP64 runs at a small fraction of its FP32 rate: "
                "run FP64 work on an A100/H100, or check whether float64 is needed at all.",
                f"FP64 pipe activity {fp64:.0%}",
            )
        )
    link = pcie_link_bytes(model)
    rx, tx = weighted(devices, "pcie_rx_bytes"), weighted(devices, "pcie_tx_bytes")
    busiest = max((v for v in (rx, tx) if v is not None), default=None)
    if busiest is not None and busiest >= PCIE_SHARE * link and (sm is None or sm < PCIE_SM):
        out.append(
            Note(
                "pcie-bound",
                "The GPU waits on data over PCIe: more data-loader workers, pinned memory, caching the "
                "dataset on local disk or on the GPU, or larger batches would keep it fed.",
                f"PCIe receive {(rx or 0) / 1e9:.1f} GB/s, transmit {(tx or 0) / 1e9:.1f} GB/s of a "
                f"{link / 1e9:.0f} GB/s link; SM activity {'unknown' if sm is None else f'{sm:.0%}'}",
            )
        )
    if len(devices) >= 2:
        activities = [_device_activity(d) for d in devices]
        if all(a is not None for a in activities):
            used = sum(1 for a in activities if (a or 0.0) >= UNUSED)
            if used < len(devices):
                out.append(
                    Note(
                        "gpus-unused",
                        f"{len(devices)} devices held, {used} used: request {max(used, 1)} or make the code "
                        "use them all (DistributedDataParallel, a device map).",
                        "activity per device " + ", ".join(f"{a:.0%}" for a in activities if a is not None),
                    )
                )
    gpu_seconds = sum(d.gpu_seconds for d in devices)
    idle = sum(d.idle_gpu_seconds for d in devices)
    hours = max((d.seconds for d in devices), default=0.0) / 3600
    if gpu_seconds and hours >= IDLE_HELD_HOURS and idle / gpu_seconds >= IDLE_HELD_SHARE:
        out.append(
            Note(
                "idle-held",
                "Held for hours while idle, like a notebook left open overnight: stop it when done, or let "
                "an idle culler release the GPU for others.",
                f"held {hours:.1f} h; {idle / 3600:.1f} of {gpu_seconds / 3600:.1f} GPU-hours idle "
                f"({idle / gpu_seconds:.0%})",
            )
        )
    return out
