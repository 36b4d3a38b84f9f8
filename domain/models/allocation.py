from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime


class AllocationBase(SQLModel):
    pod: str = Field(max_length=253)
    container: str | None = Field(default=None, max_length=253)
    since: datetime = Field(sa_type=UtcDateTime)
    until: datetime | None = Field(default=None, sa_type=UtcDateTime, description="Open while null.")


class Allocation(AllocationBase, table=True):
    """A GPU or MIG slice held by a pod of a research project."""

    __tablename__ = "allocation"
    __table_args__ = (
        Index("ix_allocation_gpu_open", "gpu_id", "until"),
        Index("ix_allocation_project_open", "project_id", "until"),
    )
    id: int | None = Field(default=None, primary_key=True)
    gpu_id: int = Field(foreign_key="gpu.id")
    slice_id: int | None = Field(default=None, foreign_key="gpu_slice.id", index=True)
    project_id: int = Field(foreign_key="research_project.id")


class AllocationRead(AllocationBase):
    id: int
    gpu_id: int
    gpu_uuid: str
    slice_id: int | None
    project_id: int
    namespace: str
