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
    node_count: int = 0
    gpu_count: int = 0
    slice_count: int = 0


class Cluster(ClusterBase, table=True):
    __tablename__ = "cluster"
    __table_args__ = (UniqueConstraint("hub_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    hub_id: int = Field(foreign_key="hub.id", index=True)


class ClusterRead(ClusterBase):
    id: int
    hub_id: int
    hub: str
