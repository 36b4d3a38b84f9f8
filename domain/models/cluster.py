from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import ClusterStatus


class ClusterBase(SQLModel):
    name: str = Field(max_length=128)
    status: str = Field(default=ClusterStatus.OK, max_length=16, description="ok, stale or unreachable.")
    status_reason: str | None = Field(default=None, max_length=512, description="Why the last poll failed.")
    last_poll_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_success_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    node_count: int = Field(default=0, description="Nodes of the whole cluster (capacity).")
    gpu_count: int = Field(default=0, description="GPUs of the whole cluster (capacity).")
    slice_count: int = Field(default=0, description="MIG slices of the whole cluster (capacity).")


class Cluster(ClusterBase, table=True):
    __tablename__ = "cluster"
    __table_args__ = (UniqueConstraint("hub_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    hub_id: int = Field(foreign_key="hub.id", index=True)


class ClusterRead(ClusterBase):
    id: int
    hub_id: int
    hub: str
    visible_node_count: int = Field(default=0, description="Nodes of this cluster the caller may see.")
    visible_gpu_count: int = Field(default=0, description="GPUs of this cluster the caller may see.")
    visible_slice_count: int = Field(default=0, description="MIG slices of this cluster the caller may see.")
