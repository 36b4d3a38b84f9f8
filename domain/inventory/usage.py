"""Usage over time from the rollups: per GPU and per research project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from domain.models import UsageRollup


@dataclass(frozen=True, slots=True)
class UsagePoint:
    bucket_start: datetime
    util_avg: float
    util_max: float
    gpus_allocated: float
    """Average number of GPUs held in the bucket (slices count as fractions)."""
    gpu_seconds_allocated: float
    gpu_seconds_idle: float
    energy_wh: float


@dataclass(frozen=True, slots=True)
class UsageTotals:
    gpu_hours: float
    idle_gpu_hours: float
    energy_kwh: float

    @property
    def idle_share(self) -> float:
        return self.idle_gpu_hours / self.gpu_hours if self.gpu_hours else 0.0


def _series(session: Session, condition: object, since: datetime, bucket_seconds: int) -> list[UsagePoint]:
    weight = func.sum(UsageRollup.samples)
    stmt = (
        select(
            UsageRollup.bucket_start,
            func.sum(UsageRollup.util_avg * UsageRollup.samples) / func.nullif(weight, 0),
            func.max(UsageRollup.util_max),
            func.sum(UsageRollup.gpu_seconds_allocated),
            func.sum(UsageRollup.gpu_seconds_idle),
            func.sum(UsageRollup.energy_wh),
        )
        .where(condition, UsageRollup.bucket_start >= since)  # type: ignore[arg-type]
        .group_by(UsageRollup.bucket_start)
        .order_by(UsageRollup.bucket_start)
    )
    return [
        UsagePoint(bucket, avg or 0.0, peak or 0.0, (allocated or 0.0) / bucket_seconds, allocated or 0.0,
                   idle or 0.0, energy or 0.0)
        for bucket, avg, peak, allocated, idle, energy in session.execute(stmt).all()
    ]


def gpu_usage(session: Session, gpu_id: int, since: datetime, bucket_seconds: int) -> list[UsagePoint]:
    return _series(session, UsageRollup.gpu_id == gpu_id, since, bucket_seconds)


def project_usage(session: Session, project_id: int, since: datetime, bucket_seconds: int) -> list[UsagePoint]:
    return _series(session, UsageRollup.project_id == project_id, since, bucket_seconds)


def totals(points: list[UsagePoint]) -> UsageTotals:
    return UsageTotals(
        gpu_hours=sum(p.gpu_seconds_allocated for p in points) / 3600,
        idle_gpu_hours=sum(p.gpu_seconds_idle for p in points) / 3600,
        energy_kwh=sum(p.energy_wh for p in points) / 1000,
    )
