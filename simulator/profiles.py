"""The DCGM profiling families a workload's kind makes its devices report, per step.

Each kind is a shape of activity, scaled by the device's utilisation at the step (``activity``, 0..1):
ratios of cycles for the pipes and SMs, bytes per second for the buses. Values are pure functions
of (kind, activity, position, random stream), like every other gauge of the simulator.

=====================  ==========================================================================
kind                   what the profiling metrics show
=====================  ==========================================================================
balanced (default)     SMs mostly busy, some tensor-core and FP16 work, modest PCIe
compute-bound          SMs saturated with FP32, tensor cores idle (no mixed precision)
tensor-heavy           SMs busy, tensor cores and FP16 busy: a well-used training job
memory-hoarding        framebuffer nearly full, SMs barely active (a framework reserving memory)
data-loader-bound      SMs starved while PCIe receives at a large share of the link (data loading)
over-requested         several GPUs held, only the first one works; the others sit near zero
idle-notebook          one GPU held with nearly no activity at all
=====================  ==========================================================================
"""

from __future__ import annotations

import random
from typing import Literal

from domain.report_cards.usage import PROFILING_FAMILIES

Kind = Literal[
    "balanced",
    "compute-bound",
    "tensor-heavy",
    "memory-hoarding",
    "data-loader-bound",
    "over-requested",
    "idle-notebook",
]
KINDS: tuple[Kind, ...] = (
    "balanced",
    "compute-bound",
    "tensor-heavy",
    "memory-hoarding",
    "data-loader-bound",
    "over-requested",
    "idle-notebook",
)

FAMILY_NAMES: dict[str, str] = PROFILING_FAMILIES
"""dcgm-exporter's name of each family the simulator serves, by value key."""

_RATIOS: dict[str, dict[str, float]] = {
    # per kind: each ratio family as a fraction of the device's activity
    "balanced": {"sm_active": 0.75, "sm_occupancy": 0.45, "tensor_active": 0.3, "dram_active": 0.35,
                 "fp64_active": 0.0, "fp32_active": 0.35, "fp16_active": 0.25},
    "compute-bound": {"sm_active": 0.95, "sm_occupancy": 0.7, "tensor_active": 0.01, "dram_active": 0.3,
                      "fp64_active": 0.0, "fp32_active": 0.8, "fp16_active": 0.01},
    "tensor-heavy": {"sm_active": 0.93, "sm_occupancy": 0.6, "tensor_active": 0.62, "dram_active": 0.45,
                     "fp64_active": 0.0, "fp32_active": 0.12, "fp16_active": 0.55},
    "memory-hoarding": {"sm_active": 0.12, "sm_occupancy": 0.05, "tensor_active": 0.01, "dram_active": 0.04,
                        "fp64_active": 0.0, "fp32_active": 0.05, "fp16_active": 0.0},
    "data-loader-bound": {"sm_active": 0.3, "sm_occupancy": 0.15, "tensor_active": 0.12, "dram_active": 0.1,
                          "fp64_active": 0.0, "fp32_active": 0.1, "fp16_active": 0.1},
    "idle-notebook": {"sm_active": 0.5, "sm_occupancy": 0.2, "tensor_active": 0.0, "dram_active": 0.05,
                      "fp64_active": 0.0, "fp32_active": 0.2, "fp16_active": 0.0},
}  # fmt: skip
_RATIOS["over-requested"] = _RATIOS["balanced"]

_PCIE: dict[str, tuple[float, float]] = {
    # (transmit, receive) bytes per second at full activity; data loading receives regardless of activity
    "balanced": (0.6e9, 1.5e9),
    "compute-bound": (0.1e9, 0.2e9),
    "tensor-heavy": (0.4e9, 1.2e9),
    "memory-hoarding": (0.05e9, 0.1e9),
    "data-loader-bound": (1.0e9, 13.0e9),
    "over-requested": (0.6e9, 1.5e9),
    "idle-notebook": (0.0, 0.01e9),
}
_STEADY_PCIE = {"data-loader-bound"}
"""Kinds whose PCIe traffic does not follow SM activity (the loader runs flat out while the GPU waits)."""


def profiling_values(kind: str, activity: float, rng: random.Random, *, nvlink: bool) -> dict[str, float]:
    """The profiling families of one device at one step, by :class:`~domain.telemetry.readings.ProfilingReading`
    field name. ``activity`` is the device's utilisation (0..1); ``nvlink`` whether the device has links
    that carry traffic (a multi-GPU workload on an SXM board)."""
    ratios = _RATIOS.get(kind, _RATIOS["balanced"])
    out = {key: round(min(1.0, share * activity * rng.uniform(0.97, 1.03)), 4) for key, share in ratios.items()}
    tx, rx = _PCIE.get(kind, _PCIE["balanced"])
    scale = 1.0 if kind in _STEADY_PCIE else activity
    out["pcie_tx_bytes"] = round(tx * scale * rng.uniform(0.95, 1.05))
    out["pcie_rx_bytes"] = round(rx * scale * rng.uniform(0.95, 1.05))
    link = 20e9 * activity if nvlink else 0.0
    out["nvlink_tx_bytes"] = round(link * rng.uniform(0.95, 1.05))
    out["nvlink_rx_bytes"] = round(link * rng.uniform(0.95, 1.05))
    return out
