"""Sources of GPU telemetry, all behind one protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from domain.telemetry.readings import (
    ClusterGpuCount,
    GpuReading,
    PodRef,
    PodRequest,
    ProjectQuota,
    SliceReading,
    Snapshot,
    SourceError,
)


class Source(Protocol):
    name: str
    kind: str
    url: str | None

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        """Read the source; raise :class:`SourceError` when it cannot answer."""
        ...


__all__ = [
    "ClusterGpuCount",
    "GpuReading",
    "PodRef",
    "PodRequest",
    "ProjectQuota",
    "SliceReading",
    "Snapshot",
    "Source",
    "SourceError",
]
