"""Retention per tier (docs/ledger.md, "Tiers"): each tier is trimmed on its own schedule, never a
tier a statement still needs.

A statement of whole days reads only the daily tier and the daily ``accounted_period`` rows; the
hourly and fine tiers and the windows answer the parts of a range that are not whole days or hours,
and charts. So the fine tier and the windows go first (default 7 days), the hourly tier next
(13 months), and the daily tier is kept unless told otherwise (settings enforce that order). Cutoffs
are rounded down to a partition boundary (a day for the fine tier, a month for the hourly), so on
PostgreSQL retention drops whole partitions and on SQLite deletes exactly the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, delete
from sqlmodel import Session, col

from domain.ledger.partitions import PARTITIONED, drop_partitions_before, is_partitioned, period_start
from domain.models import (
    AccountedPeriod,
    AccountedWindow,
    Allocation,
    ClusterRollup,
    UsageRollup,
    UsageRollupDaily,
    UsageRollupHourly,
)
from domain.models.history import DAY, HOUR


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    fine_days: int
    hourly_days: int
    daily_days: int = 0
    """0: the daily tier is kept."""

    def cutoffs(self, now: datetime) -> dict[str, datetime | None]:
        """Per tier, the moment before which its rows go (None: kept)."""
        return {
            "fine": period_start(PARTITIONED["usage_rollup"], now - timedelta(days=self.fine_days)),
            "hourly": period_start(PARTITIONED["usage_rollup_hourly"], now - timedelta(days=self.hourly_days)),
            "daily": period_start("day", now - timedelta(days=self.daily_days)) if self.daily_days else None,
        }


@dataclass
class RetentionResult:
    rows_deleted: int = 0
    partitions_dropped: int = 0


def _trim(session: Session, table: Table, cutoff: datetime, result: RetentionResult, *where: object) -> None:
    connection = session.connection()
    if is_partitioned(connection, table.name):
        result.partitions_dropped += drop_partitions_before(connection, table.name, cutoff)
        return
    deleted = session.execute(delete(table).where(table.c.bucket_start < cutoff, *where))  # type: ignore[arg-type]
    result.rows_deleted += deleted.rowcount or 0  # type: ignore[attr-defined]


def apply_retention(session: Session, now: datetime, policy: RetentionPolicy) -> RetentionResult:
    """Trim every tier to its retention. Open allocations are kept however old: they describe the present."""
    cut = policy.cutoffs(now)
    result = RetentionResult()
    fine, hourly, daily = cut["fine"], cut["hourly"], cut["daily"]
    assert fine is not None and hourly is not None
    _trim(session, UsageRollup.__table__, fine, result)  # type: ignore[attr-defined]
    windows = session.execute(delete(AccountedWindow).where(col(AccountedWindow.end) <= fine))
    result.rows_deleted += windows.rowcount or 0  # type: ignore[attr-defined]
    _trim(session, UsageRollupHourly.__table__, hourly, result)  # type: ignore[attr-defined]
    for model in (ClusterRollup, AccountedPeriod):
        _trim(session, model.__table__, hourly, result, model.__table__.c.width == HOUR)  # type: ignore[attr-defined]
    allocations = session.execute(
        delete(Allocation).where(col(Allocation.until).is_not(None), col(Allocation.until) < hourly)
    )
    result.rows_deleted += allocations.rowcount or 0  # type: ignore[attr-defined]
    if daily is not None:
        _trim(session, UsageRollupDaily.__table__, daily, result)  # type: ignore[attr-defined]
        for model in (ClusterRollup, AccountedPeriod):
            _trim(session, model.__table__, daily, result, model.__table__.c.width == DAY)  # type: ignore[attr-defined]
    return result
