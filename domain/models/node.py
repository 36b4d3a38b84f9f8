from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import Health


class NodeBase(SQLModel):
    hostname: str = Field(max_length=253)
    gpu_model: str | None = Field(default=None, max_length=128)
    gpu_count: int = 0
    driver_version: str | None = Field(default=None, max_length=64)
    health: str = Field(default=Health.HEALTHY, max_length=16)
    first_seen: datetime = Field(sa_type=UtcDateTime)
    last_seen: datetime = Field(sa_type=UtcDateTime)


class Node(NodeBase, table=True):
    __tablename__ = "node"
    __table_args__ = (UniqueConstraint("cluster_id", "hostname"),)
    id: int | None = Field(default=None, primary_key=True)
    cluster_id: int = Field(foreign_key="cluster.id", index=True)


class NodeRead(NodeBase):
    id: int
    cluster_id: int
    cluster: str
    hub: str
