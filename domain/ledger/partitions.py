"""PostgreSQL time-range partitions of the ledger's big tiers, so retention drops a partition.

``usage_rollup`` (the fine tier) is partitioned by UTC day and ``usage_rollup_hourly`` by UTC month,
both on ``bucket_start``, each with a DEFAULT partition that catches a row no partition was created
for (a worker stopped past the partitions made ahead): writes never fail for want of a partition,
and the next :func:`ensure_partitions` moves such rows into the partition it creates. The daily tier,
``cluster_rollup`` and ``accounted_period`` stay plain tables: a few rows per GPU per day at most.

SQLite has no partitions: there (and on a PostgreSQL table that is not partitioned) retention deletes rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, text

from domain.models.history import DAY

PARTITIONED = {"usage_rollup": "day", "usage_rollup_hourly": "month"}
"""Partitioned table -> the span of one partition."""
ROLLUP_FILLFACTOR = 70
"""Room left in each page of a partition for the in-place additions of the polls (migration
``0015_rollup_fillfactor``): the current buckets' rows are rewritten by every poll, and with room
on their page PostgreSQL does so without touching the indexes."""
AHEAD = {"day": 3, "month": 2}
"""Partitions created ahead of now by the worker's maintenance: days, months."""
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def period_start(span: str, moment: datetime) -> datetime:
    """The start of the day or month holding ``moment`` (UTC)."""
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if span == "day" else day.replace(day=1)


def next_period(span: str, start: datetime) -> datetime:
    if span == "day":
        return start + timedelta(seconds=DAY)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def partition_name(table: str, span: str, start: datetime) -> str:
    return f"{table}_p{start:%Y%m%d}" if span == "day" else f"{table}_p{start:%Y%m}"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime
    end: datetime


def is_partitioned(connection: Connection, table: str) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    found = connection.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = :table AND pg_table_is_visible(c.oid)"
        ),
        {"table": table},
    ).first()
    return found is not None


def partitions(connection: Connection, table: str) -> list[Partition]:
    """The range partitions of ``table``, oldest first (the DEFAULT partition is not listed)."""
    rows = connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = :table AND pg_table_is_visible(p.oid)"
        ),
        {"table": table},
    ).all()
    out = []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match:
            lo, hi = (datetime.fromisoformat(v).replace(tzinfo=UTC) for v in match.groups())
            out.append(Partition(name, lo, hi))
    return sorted(out, key=lambda p: p.start)


def _literal(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("'%Y-%m-%d %H:%M:%S'")


def create_partition(connection: Connection, table: str, span: str, start: datetime) -> str | None:
    """Create ``table``'s partition for the period starting at ``start``; None if it exists.

    Rows the DEFAULT partition caught for that period are moved into it in the same transaction.
    """
    name = partition_name(table, span, start)
    end = next_period(span, start)
    if connection.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
        return None
    lo, hi = _literal(start), _literal(end)
    default = f"{table}_default"
    stray = connection.execute(
        text(f"SELECT 1 FROM {default} WHERE bucket_start >= {lo} AND bucket_start < {hi} LIMIT 1")  # noqa: S608
    ).first()
    if stray:
        connection.execute(
            text(
                f"CREATE TEMP TABLE {name}_moving ON COMMIT DROP AS WITH moved AS ("  # noqa: S608
                f"DELETE FROM {default} WHERE bucket_start >= {lo} AND bucket_start < {hi} RETURNING *"
                ") SELECT * FROM moved"
            )
        )
    connection.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({hi}) "
            f"WITH (fillfactor = {ROLLUP_FILLFACTOR})"
        )
    )
    if stray:
        connection.execute(text(f"INSERT INTO {table} SELECT * FROM {name}_moving"))  # noqa: S608
    return name


def ensure_partitions(connection: Connection, now: datetime, since: datetime | None = None) -> list[str]:
    """Create the partitions from ``since`` (default: the current period) to :data:`AHEAD` periods past
    ``now``, for every partitioned table; the names created. A no-op on SQLite."""
    created: list[str] = []
    for table, span in PARTITIONED.items():
        if not is_partitioned(connection, table):
            continue
        start = period_start(span, since or now)
        last = period_start(span, now)
        for _ in range(AHEAD[span]):
            last = next_period(span, last)
        while start <= last:
            name = create_partition(connection, table, span, start)
            if name:
                created.append(name)
            start = next_period(span, start)
    return created


def drop_partitions_before(connection: Connection, table: str, cutoff: datetime) -> int:
    """Drop ``table``'s partitions that end at or before ``cutoff`` and delete what its DEFAULT
    partition holds before it; the number of partitions dropped."""
    dropped = 0
    for partition in partitions(connection, table):
        if partition.end <= cutoff:
            connection.execute(text(f"DROP TABLE {partition.name}"))
            dropped += 1
    connection.execute(text(f"DELETE FROM {table}_default WHERE bucket_start < {_literal(cutoff)}"))  # noqa: S608
    return dropped


_PARTITION_NAME = re.compile(rf"^({'|'.join(PARTITIONED)})_(p\d{{6}}|p\d{{8}}|default)$")


def include_name(name: str | None, type_: str, _parents: object = None) -> bool:
    """Alembic's filter: a partition is part of its table, not a table of the models."""
    return not (type_ == "table" and name is not None and _PARTITION_NAME.match(name))
