from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import SessionSource


class WorkloadSessionBase(SQLModel):
    trace_id: str = Field(max_length=32, unique=True, description="OpenTelemetry trace id, 32 hex digits.")
    cluster: str = Field(max_length=128)
    namespace: str = Field(max_length=253)
    pod: str = Field(max_length=253)
    container: str | None = Field(default=None, max_length=253)
    node: str | None = Field(default=None, max_length=253)
    gpu_uuid: str | None = Field(default=None, max_length=64)
    mig_instance_id: int | None = None
    started_at: datetime = Field(sa_type=UtcDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    source: str = Field(default=SessionSource.POLL, max_length=16)
    summary: str | None = Field(default=None, max_length=1024)
    samples: int = 0
    util_avg: float = 0
    util_max: float = 0
    memory_max_mib: float = 0
    energy_wh: float = 0


class WorkloadSession(WorkloadSessionBase, table=True):
    """A pod using a GPU or slice, from start to end; becomes one span when it closes."""

    __tablename__ = "workload_session"
    __table_args__ = (Index("ix_session_workload", "cluster", "namespace", "pod", "gpu_uuid", "ended_at"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)


class WorkloadSessionRead(WorkloadSessionBase):
    id: int
    project_id: int | None
