"""The ledger's maintenance area: create the partitions ahead, then trim each tier to its retention, hourly."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine

from domain.database import session_scope
from domain.ledger.partitions import ensure_partitions
from domain.ledger.retention import RetentionPolicy, apply_retention
from domain.models import utcnow
from domain.settings import SchedulerSettings
from worker.areas import ScheduledJob, WorkerContext
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

RETENTION_INTERVAL = timedelta(hours=1)
RETENTION_FIRST_DELAY = timedelta(minutes=1)
"""Retention first runs shortly after start, out of the way of the first polls."""


def run_retention(
    engine: Engine, scheduler: SchedulerSettings, metrics: WorkerMetrics, now: datetime | None = None
) -> int:
    """The ledger's maintenance: create the partitions ahead, then trim each tier to its retention
    (rows, or whole partitions on PostgreSQL); the rows deleted. Never raises."""
    now = now or utcnow()
    policy = RetentionPolicy(scheduler.retention_days, scheduler.hourly_retention_days, scheduler.daily_retention_days)
    try:
        with session_scope(engine) as session:
            created = ensure_partitions(session.connection(), now)
        with session_scope(engine) as session:
            result = apply_retention(session, now, policy)
    except Exception:  # a failed run is retried next hour; the scheduler must keep going
        log.exception("retention failed")
        return 0
    metrics.retention_deleted.inc(result.rows_deleted)
    if created or result.rows_deleted or result.partitions_dropped:
        log.info(
            "retention: %d partition(s) created ahead, %d dropped, %d row(s) deleted",
            len(created),
            result.partitions_dropped,
            result.rows_deleted,
        )
    return result.rows_deleted


def jobs(context: WorkerContext) -> list[ScheduledJob]:
    """Hourly, first a minute after start."""
    interval = RETENTION_INTERVAL.total_seconds()
    return [
        ScheduledJob(
            id="retention",
            name="apply retention",
            run=context.run_retention,
            interval_seconds=interval,
            first_run_after=RETENTION_FIRST_DELAY,
            misfire_grace_seconds=int(interval),
        )
    ]
