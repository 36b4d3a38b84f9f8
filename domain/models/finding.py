from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Text
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
    level: str = Field(default="gpu", max_length=16, description="gpu, slice, node, workload or cluster.")
    escalated: bool = Field(default=False, description="Opened (or worsened) at or above the escalation severity.")
    escalations: int = Field(default=0, description="Times it was escalated (opened, or its severity rose).")
    waste_gpu_hours: float = Field(default=0, description="Idle-while-allocated GPU-hours it stands for.")
    resolved_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=253, description="Who acknowledged or resolved it.")
    analysis: str | None = Field(default=None, sa_type=Text, description="Root-cause analysis by the LLM, if enabled.")
    analysis_status: str | None = Field(
        default=None, max_length=16, description="pending, done, failed or skipped; null when never asked."
    )
    analysis_model: str | None = Field(default=None, max_length=128)
    analysis_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    analysis_tokens: int | None = None


class Finding(FindingBase, table=True):
    __tablename__ = "finding"
    __table_args__ = (
        Index("ix_finding_kind_subject", "kind", "subject"),
        Index("ix_finding_status_last_seen", "status", "last_seen"),
    )
    id: int | None = Field(default=None, primary_key=True)
    cluster_id: int | None = Field(default=None, foreign_key="cluster.id", index=True)
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)


class FindingRead(FindingBase):
    id: int
    cluster_id: int | None
    project_id: int | None
    cluster: str | None = None
    project: str | None = Field(default=None, description="The research project's namespace, if any.")
