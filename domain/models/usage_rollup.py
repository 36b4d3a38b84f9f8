from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime


class UsageRollupBase(SQLModel):
    bucket_start: datetime = Field(sa_type=UtcDateTime, index=True)
    samples: int = 0
    util_avg: float = 0
    util_max: float = 0
    memory_avg_mib: float = 0
    memory_max_mib: float = 0
    power_avg_watts: float = 0
    temperature_max_c: float = Field(default=0, description="Hottest reading of the GPU in the bucket.")
    energy_wh: float = 0
    gpu_seconds_allocated: float = 0
    gpu_seconds_idle: float = Field(default=0, description="Allocated with utilisation below the idle threshold.")


class UsageRollup(UsageRollupBase, table=True):
    """Usage of one GPU or slice by one project (0: unallocated) in one time bucket.

    ``slice_id`` and ``project_id`` use 0 for "none" rather than NULL so that the unique key,
    and with it the upsert, works the same on SQLite and PostgreSQL.
    """

    __tablename__ = "usage_rollup"
    __table_args__ = (UniqueConstraint("gpu_id", "slice_id", "project_id", "bucket_start"),)
    id: int | None = Field(default=None, primary_key=True)
    gpu_id: int = Field(foreign_key="gpu.id")
    slice_id: int = 0
    project_id: int = Field(default=0, index=True)


class UsageRollupRead(UsageRollupBase):
    gpu_id: int
    slice_id: int
    project_id: int
