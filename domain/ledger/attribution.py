"""Attribution: a window of one hub becomes rollup sums per (GPU, slice, project, bucket).

Pure rules (docs/ledger.md). Each reported GPU's seconds in the window are split among what held
it: a whole GPU among its pods equally (1/k each, time-slicing), a MIG GPU by its slices' shares of
the compute slices (see :mod:`domain.ledger.mig`), each slice's share among its pods equally; the
part not cut into slices, slices nobody holds and GPUs nobody holds go to project 0 (unallocated).
So per GPU and window, project seconds + unallocated seconds = the window's length, and the GPU's
energy (power x seconds) is split the same way. A window crossing a bucket boundary is cut there.

Unknown is never zero: a part without a utilisation reading counts in ``seconds`` but not in
``seconds_util_known``, so it is neither idle nor 0 %.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from domain.ledger.windows import bucket_pieces

WHOLE = "whole"
"""Profile label of a GPU not in MIG mode."""
UNSLICED = "unsliced"
"""Profile label of the part of a MIG GPU not cut into slices."""


@dataclass(frozen=True, slots=True)
class Holder:
    """A pod holding a GPU or slice: its project (0 when the namespace is no project) and namespace."""

    project_id: int
    namespace: str


@dataclass(frozen=True, slots=True)
class Part:
    """An allocatable part of a GPU: the whole GPU (slice 0) or one MIG slice, with its readings."""

    slice_id: int
    profile: str
    share: float
    holders: tuple[Holder, ...] = ()
    utilization: float | None = None
    utilization_max: float | None = None
    memory_used_mib: float | None = None


@dataclass(frozen=True, slots=True)
class GpuUse:
    """One reported GPU in one window: its parts (shares summing to 1) and GPU-level readings."""

    gpu_id: int
    cluster: str
    model: str
    parts: tuple[Part, ...]
    power_watts: float | None = None
    temperature_c: float | None = None


RowKey = tuple[int, int, int, datetime]
"""(gpu id, slice id or 0, project id or 0, bucket start): a rollup row's identity."""

# Indexes into a row's measures (a list, for speed at 10,000 GPUs a poll).
SECONDS, IDLE, UTIL_KNOWN, UTIL_SECONDS, UTIL_MAX, MEMORY_SECONDS, MEMORY_MAX, ENERGY_WH, POWER_KNOWN, TEMP_MAX = range(
    10
)
MEASURES = (
    "seconds",
    "seconds_idle",
    "seconds_util_known",
    "util_seconds",
    "util_max",
    "memory_mib_seconds",
    "memory_max_mib",
    "energy_wh",
    "power_seconds_known",
    "temperature_max_c",
)
PEAKS = frozenset({UTIL_MAX, MEMORY_MAX, TEMP_MAX})


def empty_measures() -> list[float | None]:
    return [0.0, 0.0, 0.0, 0.0, None, 0.0, None, 0.0, 0.0, None]


def peak(current: float | None, value: float | None) -> float | None:
    """The larger reading; unknown (None) never wins over a known one."""
    if value is None:
        return current
    return value if current is None or value > current else current


def merge_measures(into: list[float | None], add: list[float | None]) -> None:
    """Add ``add``'s sums to ``into`` and keep the higher peaks."""
    for i, value in enumerate(add):
        if i in PEAKS:
            into[i] = peak(into[i], value)
        else:
            into[i] = (into[i] or 0.0) + (value or 0.0)


@dataclass
class Split:
    """A window's split for the ledger's counters, keyed by their labels (docs/ledger.md)."""

    allocated: dict[tuple[str, str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    """(cluster, project namespace, model, profile) -> GPU-seconds held."""
    idle: dict[tuple[str, str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    unknown_utilization: dict[tuple[str, str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    energy_joules: dict[tuple[str, str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    """Project namespace "" is the energy of unallocated parts."""
    unallocated: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    """(cluster, model, profile) -> GPU-seconds nobody held."""


def attribute(
    uses: Iterable[GpuUse],
    start: datetime,
    end: datetime,
    *,
    bucket_seconds: int,
    idle_threshold_percent: float,
    rows: dict[RowKey, list[float | None]] | None = None,
    split: Split | None = None,
) -> dict[RowKey, list[float | None]]:
    """Add the window ``[start, end)`` of every GPU in ``uses`` to ``rows`` (and to ``split``)."""
    rows = {} if rows is None else rows
    pieces = bucket_pieces(start, end, bucket_seconds)
    length = sum(seconds for _, seconds in pieces)
    nobody = (Holder(0, ""),)
    for use in uses:
        power = use.power_watts
        temperature = use.temperature_c
        energy_rate = 0.0 if power is None else power / 3600
        power_known = 0.0 if power is None else 1.0
        for part in use.parts:
            utilization = part.utilization
            known = utilization is not None
            idle = utilization is not None and utilization < idle_threshold_percent
            # per second held: idle, utilisation known, utilisation x 1, memory x 1
            per_second = (float(idle), float(known), utilization or 0.0, part.memory_used_mib or 0.0)
            util_peak = part.utilization_max if part.utilization_max is not None else utilization
            memory = part.memory_used_mib
            holders = part.holders or nobody
            # k pods (time-slicing) hold 1/k each; a project's pods are one row: its count / k
            held_by = {holders[0]: 1} if len(holders) == 1 else Counter(holders)  # one holder: most parts
            for holder, pods in held_by.items():
                fraction = part.share * pods / len(holders)
                for bucket, seconds in pieces:
                    held = seconds * fraction
                    key = (use.gpu_id, part.slice_id, holder.project_id, bucket)
                    row = rows.get(key)
                    if row is None:
                        rows[key] = [
                            held,
                            held * per_second[0],
                            held * per_second[1],
                            held * per_second[1] * per_second[2],
                            util_peak,
                            held * per_second[3],
                            memory,
                            held * energy_rate,
                            held * power_known,
                            temperature,
                        ]
                        continue
                    # ignores: a row is list[float | None] for its peaks (None: unknown); the sums
                    # at SECONDS..POWER_KNOWN are floats from the first write, never None
                    row[SECONDS] += held  # type: ignore[operator]
                    row[IDLE] += held * per_second[0]  # type: ignore[operator]
                    row[UTIL_KNOWN] += held * per_second[1]  # type: ignore[operator]
                    row[UTIL_SECONDS] += held * per_second[1] * per_second[2]  # type: ignore[operator]
                    row[UTIL_MAX] = peak(row[UTIL_MAX], util_peak)
                    row[MEMORY_SECONDS] += held * per_second[3]  # type: ignore[operator]
                    row[MEMORY_MAX] = peak(row[MEMORY_MAX], memory)
                    row[ENERGY_WH] += held * energy_rate  # type: ignore[operator]
                    row[POWER_KNOWN] += held * power_known  # type: ignore[operator]
                    row[TEMP_MAX] = peak(row[TEMP_MAX], temperature)
                if split is not None:
                    _count(split, use, part, holder, length * fraction, known, idle)
    return rows


def _count(split: Split, use: GpuUse, part: Part, holder: Holder, held: float, known: bool, idle: bool) -> None:
    energy = (use.power_watts or 0.0) * held
    if holder.project_id:
        labels = (use.cluster, holder.namespace, use.model, part.profile)
        split.allocated[labels] += held
        if idle:
            split.idle[labels] += held
        if not known:
            split.unknown_utilization[labels] += held
        split.energy_joules[labels] += energy
    else:
        split.unallocated[(use.cluster, use.model, part.profile)] += held
        split.energy_joules[(use.cluster, "", use.model, part.profile)] += energy
