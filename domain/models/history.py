"""The ledger's coarser tiers: exact sums of the 5-minute rollups and of the accounted windows.

See docs/ledger.md ("Tiers"). Every row here is written in the transaction that writes the window
and its 5-minute rows, by adding the same pieces, so a tier's row is the exact sum of the finer rows
it covers (maxima by max). Readers pick the tier by the range they draw or total.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.models.usage_rollup import UsageRollupBase

HOUR = 3_600
DAY = 86_400
WIDTHS = (HOUR, DAY)
"""Widths of the aggregated tiers, in seconds; the fine tier is ``usage_rollup`` itself."""


class UsageRollupHourly(UsageRollupBase, table=True):
    """``usage_rollup`` summed per hour: one GPU or slice, one project (0: unallocated)."""

    __tablename__ = "usage_rollup_hourly"
    gpu_id: int = Field(foreign_key="gpu.id", primary_key=True)
    slice_id: int = Field(default=0, primary_key=True)
    project_id: int = Field(default=0, primary_key=True, index=True)
    bucket_start: datetime = Field(sa_type=UtcDateTime, primary_key=True, index=True)


class UsageRollupDaily(UsageRollupBase, table=True):
    """``usage_rollup`` summed per UTC day: what statements of whole days read."""

    __tablename__ = "usage_rollup_daily"
    gpu_id: int = Field(foreign_key="gpu.id", primary_key=True)
    slice_id: int = Field(default=0, primary_key=True)
    project_id: int = Field(default=0, primary_key=True, index=True)
    bucket_start: datetime = Field(sa_type=UtcDateTime, primary_key=True, index=True)


class ClusterRollup(UsageRollupBase, table=True):
    """``usage_rollup`` summed per cluster, project (0: unallocated) and hour or day (``width``).

    What the fleet, cluster and project charts and the top-projects table read past the fine tier:
    about a hundred rows per bucket however many GPUs the fleet has.
    """

    __tablename__ = "cluster_rollup"
    width: int = Field(primary_key=True, description="3600 (hourly) or 86400 (daily).")
    cluster_id: int = Field(foreign_key="cluster.id", primary_key=True)
    project_id: int = Field(default=0, primary_key=True)
    bucket_start: datetime = Field(sa_type=UtcDateTime, primary_key=True, index=True)


class AccountedPeriod(SQLModel, table=True):
    """A hub's accounted windows summed per hour or day (``width``), pro-rated to the bucket.

    Capacity and unaccounted GPU-seconds are uniform over a window, so the pro-rated parts add up to
    the windows' exactly: statements of old months reconcile from these rows once the windows are
    trimmed, and charts take a hub's covered time from them.
    """

    __tablename__ = "accounted_period"
    width: int = Field(primary_key=True, description="3600 (hourly) or 86400 (daily).")
    hub_id: int = Field(foreign_key="hub.id", primary_key=True)
    bucket_start: datetime = Field(sa_type=UtcDateTime, primary_key=True, index=True)
    seconds: float = Field(default=0, description="Source time of the bucket covered by the hub's windows.")
    capacity_gpu_seconds: float = Field(default=0, description="Σ gpu_count x overlap.")
    unaccounted_gpu_seconds: float = Field(default=0, description="Σ gpu_seconds_unaccounted, pro-rated.")
    unaccounted_seconds: float = Field(default=0, description="Of seconds, those in unaccounted windows.")
