from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, text
from sqlmodel import Field, SQLModel

from domain.models.base import UtcDateTime
from domain.statuses import WorkloadSource


class WorkloadBase(SQLModel):
    trace_id: str = Field(max_length=32, unique=True, description="OpenTelemetry trace id, 32 hex digits.")
    cluster: str = Field(max_length=128)
    namespace: str = Field(max_length=253)
    pod: str = Field(max_length=253)
    container: str | None = Field(default=None, max_length=253)
    node: str | None = Field(default=None, max_length=253)
    gpu_uuid: str | None = Field(default=None, max_length=64)
    mig_instance_id: int | None = None
    gpu_model: str | None = Field(default=None, max_length=128, description="modelName of the GPU.")
    started_at: datetime = Field(sa_type=UtcDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime, description="Open while null.")
    source: str = Field(default=WorkloadSource.POLL, max_length=16, description="What opened it: alert or poll.")
    alert_fingerprint: str | None = Field(
        default=None, max_length=64, description="Fingerprint of the GPU-usage alert that opened or confirmed it."
    )
    summary: str | None = Field(default=None, max_length=1024)
    samples: int = Field(default=0, description="Poll samples accumulated into the usage figures.")
    util_avg: float = 0
    util_max: float = 0
    memory_max_mib: float = 0
    energy_wh: float = 0
    events: list[dict[str, Any]] = Field(
        default_factory=list, sa_type=JSON, description="Notable moments (XID error, throttling), oldest first."
    )
    # Time-weighted sums over the ledger's windows (each window's readings x its seconds), for report cards.
    seconds: float = Field(default=0, description="Seconds of accounted windows the workload held its device.")
    gpu_seconds: float = Field(default=0, description="GPU-seconds held: seconds x the device's share of its GPU.")
    idle_gpu_seconds: float = Field(default=0, description="Of gpu_seconds, those with a known utilisation below 5 %.")
    util_seconds: float = Field(default=0, description="Σ utilisation % x seconds over the seconds it was known.")
    util_known_seconds: float = Field(default=0, description="Seconds with a known utilisation.")
    memory_total_mib: float | None = Field(default=None, description="Framebuffer of the device (GPU or slice).")
    profiling: dict[str, list[float]] = Field(
        default_factory=dict,
        sa_type=JSON,
        description="Per profiling family (sm_active, tensor_active, ...): [Σ value x seconds, seconds known, peak].",
    )
    profiling_missing: str | None = Field(
        default=None,
        max_length=16,
        description="Why windows lacked every profiling family: 'cluster' (none on the cluster) or 'device'.",
    )


class Workload(WorkloadBase, table=True):
    """A pod using a GPU or slice, from start to end; becomes one span when it closes."""

    __tablename__ = "workload"
    __table_args__ = (
        Index("ix_workload_identity", "cluster", "namespace", "pod", "gpu_uuid", "ended_at"),
        # At most one open row per workload key: a poll and an alert racing to open one cannot both win.
        Index(
            "uq_workload_open_key",
            "workload_key",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
        Index("ix_workload_started_at", "started_at"),
        Index("ix_workload_key_ended", "workload_key", "ended_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int | None = Field(default=None, foreign_key="research_project.id", index=True)
    workload_key: str = Field(
        max_length=40, description="Hash of cluster, namespace, pod, GPU UUID and MIG instance: one workload."
    )
    last_xid: int | None = Field(default=None, description="Last XID seen during the workload (event onset).")
    throttled: bool = Field(default=False, description="Whether the GPU was throttling at the last poll.")


class WorkloadRead(WorkloadBase):
    id: int
    project_id: int | None
    gpu_id: int | None = Field(default=None, description="The GPU's id in this inventory, when known.")
    duration_seconds: float | None = Field(default=None, description="Ended workloads only.")
    trace_url: str | None = Field(default=None, description="The trace in the configured tracing UI.")
