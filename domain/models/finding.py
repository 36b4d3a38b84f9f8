from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import FindingStatus


class FindingBase(SQLModel):
    kind: str = Field(max_length=64)
    subject: str = Field(max_length=512, description="What it is about, e.g. gpu:GPU-..., node:cluster/host.")
    severity: str = Field(max_length=16)
    status: str = Field(default=FindingStatus.OPEN, max_length=16)
    first_seen: datetime = Field(sa_type=UtcDateTime)
    last_seen: datetime = Field(sa_type=UtcDateTime)
    count: int = 1
    summary: str | None = Field(default=None, max_length=1024)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Finding(FindingBase, table=True):
    __tablename__ = "finding"
    __table_args__ = (Index("ix_finding_kind_subject", "kind", "subject"),)
    id: int | None = Field(default=None, primary_key=True)
    cluster_id: int | None = Field(default=None, foreign_key="cluster.id", index=True)
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)


class FindingRead(FindingBase):
    id: int
    cluster_id: int | None
    project_id: int | None
