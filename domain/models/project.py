from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime


class ResearchProjectBase(SQLModel):
    namespace: str = Field(max_length=253)
    display_name: str = Field(max_length=253)
    gpu_quota: float | None = Field(default=None, description="requests.nvidia.com/gpu quota, if any.")
    allocated_gpus: float = Field(default=0, description="GPUs (slices count as fractions) allocated now.")
    owners: str | None = Field(default=None, max_length=512, description="Comma-separated owners.")
    first_seen: datetime = Field(sa_type=UtcDateTime)
    last_seen: datetime = Field(sa_type=UtcDateTime)


class ResearchProject(ResearchProjectBase, table=True):
    """A namespace of a cluster that has a GPU series or a GPU quota."""

    __tablename__ = "research_project"
    __table_args__ = (UniqueConstraint("cluster_id", "namespace"),)
    id: int | None = Field(default=None, primary_key=True)
    cluster_id: int = Field(foreign_key="cluster.id", index=True)


class ResearchProjectRead(ResearchProjectBase):
    id: int
    cluster_id: int
    cluster: str
    hub: str
