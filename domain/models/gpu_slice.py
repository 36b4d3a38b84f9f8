from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import Health


class GpuSliceBase(SQLModel):
    mig_instance_id: int = Field(description="The GPU_I_ID label.")
    profile: str = Field(max_length=32, description="MIG profile, e.g. 1g.10gb (GPU_I_PROFILE).")
    utilization: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    health: str = Field(default=Health.HEALTHY, max_length=16)
    first_seen: datetime = Field(sa_type=UtcDateTime)
    last_seen: datetime = Field(sa_type=UtcDateTime)


class GpuSlice(GpuSliceBase, table=True):
    """A MIG instance of a GPU."""

    __tablename__ = "gpu_slice"
    __table_args__ = (UniqueConstraint("gpu_id", "mig_instance_id"),)
    id: int | None = Field(default=None, primary_key=True)
    gpu_id: int = Field(foreign_key="gpu.id", index=True)


class GpuSliceRead(GpuSliceBase):
    id: int
    gpu_id: int
    gpu_uuid: str
    node: str
    cluster: str
    allocated_to: str | None = Field(default=None, description="Namespace holding it now, if the caller may see it.")
    other_projects: int = Field(
        default=0, description="Further projects holding it now that the caller may not see: counted, never named."
    )
