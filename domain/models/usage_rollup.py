from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime


class UsageRollupBase(SQLModel):
    """Sums only (docs/ledger.md): a coarser tier or any period is the exact sum of its rows."""

    bucket_start: datetime = Field(sa_type=UtcDateTime, index=True)
    seconds: float = Field(default=0, description="GPU-seconds held (project > 0) or unallocated (project 0).")
    seconds_idle: float = Field(
        default=0, description="Of seconds, those with a known utilisation below the idle threshold."
    )
    seconds_util_known: float = Field(default=0, description="Of seconds, those with a known utilisation.")
    util_seconds: float = Field(default=0, description="Utilisation % x seconds over the known part.")
    util_max: float | None = Field(default=None, description="Peak utilisation; NULL when none was known.")
    memory_mib_seconds: float = Field(default=0, description="Framebuffer used (MiB) x seconds.")
    memory_max_mib: float | None = Field(default=None, description="Peak framebuffer used; NULL when unknown.")
    energy_wh: float = Field(default=0, description="Energy attributed to the row.")
    power_seconds_known: float = Field(default=0, description="Of seconds, those with a known power reading.")
    temperature_max_c: float | None = Field(default=None, description="Hottest reading of the GPU; NULL when none.")


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
