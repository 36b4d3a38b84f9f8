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

from sqlalchemy import ColumnElement, Table, delete
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
from domain.models.base import table_of
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


def _trim(
    session: Session, table: Table, cutoff: datetime, result: RetentionResult, *where: ColumnElement[bool]
) -> None:
    connection = session.connection()
    if is_partitioned(connection, table.name):
        result.partitions_dropped += drop_partitions_before(connection, table.name, cutoff)
        return
    deleted = session.exec(delete(table).where(table.c.bucket_start < cutoff, *where))
    result.rows_deleted += deleted.rowcount or 0


def apply_retention(session: Session, now: datetime, policy: RetentionPolicy) -> RetentionResult:
    """Trim every tier to its retention. Open allocations are kept however old: they describe the present."""
    cut = policy.cutoffs(now)
    result = RetentionResult()
    fine, hourly, daily = cut["fine"], cut["hourly"], cut["daily"]
    assert fine is not None and hourly is not None
    _trim(session, table_of(UsageRollup), fine, result)
    windows = session.exec(delete(AccountedWindow).where(col(AccountedWindow.end) <= fine))
    result.rows_deleted += windows.rowcount or 0
    _trim(session, table_of(UsageRollupHourly), hourly, result)
    for model in (ClusterRollup, AccountedPeriod):
        _trim(session, table_of(model), hourly, result, table_of(model).c.width == HOUR)
    allocations = session.exec(
        delete(Allocation).where(col(Allocation.until).is_not(None), col(Allocation.until) < hourly)
    )
    result.rows_deleted += allocations.rowcount or 0
    if daily is not None:
        _trim(session, table_of(UsageRollupDaily), daily, result)
        for model in (ClusterRollup, AccountedPeriod):
            _trim(session, table_of(model), daily, result, table_of(model).c.width == DAY)
    return result
