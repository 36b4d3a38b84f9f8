"""What a snapshot means for the inventory, without reading or writing it (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from domain.ledger.mig import slice_fraction
from domain.statuses import Health
from domain.telemetry.readings import GpuReading, PodRef

HEALTH_RANK = {Health.HEALTHY.value: 0, Health.DEGRADED.value: 1, Health.FAILING.value: 2}


@dataclass
class InventoryIds:
    """Database ids of the GPUs (by UUID), slices (by GPU id and MIG instance) and projects (by cluster
    name and namespace) a window's attribution needs."""

    gpus: dict[str, int]
    slices: dict[tuple[int, int], int]
    projects: dict[tuple[str, str], int]


@dataclass
class InventoryChanges:
    """What one :func:`apply_snapshot` wrote; ``rows_written`` is zero for an unchanged fleet."""

    inserted: int = 0
    updated: int = 0
    allocations_opened: int = 0
    allocations_closed: int = 0
    marked_missing: int = 0
    clusters_polled: int = 0
    """Clusters whose poll heartbeat was refreshed; not counted as inventory writes."""
    ids: InventoryIds | None = field(default=None, repr=False, compare=False)
    """The snapshot's GPUs, slices and projects with the ids they have now: the ledger attributes the
    poll's window to them without reading 10,000 ids back."""

    @property
    def rows_written(self) -> int:
        """Inventory rows inserted or updated (allocations included, heartbeats not)."""
        return self.inserted + self.updated


def pod_shares(reading: GpuReading) -> Iterator[tuple[PodRef, float]]:
    """The pods on a GPU with the share each holds: a whole GPU counts 1, a MIG slice its fraction,
    split evenly among the pods of a time-sliced GPU or slice (as the ledger does).

    A GPU in MIG mode carries its workloads on its slices; a GPU-level pod label is then ignored.
    """
    if not reading.slices:
        for pod in reading.workloads:
            yield pod, 1.0 / len(reading.workloads)
        return
    for reported in reading.slices:
        for pod in reported.workloads:
            yield pod, slice_fraction(reported.profile, reading.model) / len(reported.workloads)
