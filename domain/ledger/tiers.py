"""The ledger's tiers: which table answers which range, and how a window's rows reach every tier.

Fine (``usage_rollup``, the rollup bucket, default 5 minutes), hourly and daily per GPU, slice and
project (``usage_rollup_hourly``, ``usage_rollup_daily``), hourly and daily per cluster and project
(``cluster_rollup``), and the hubs' windows per hour and day (``accounted_period``). A window's
pieces are added to all of them in its own transaction (:func:`write_tiers`), so every coarser row
is the exact sum of the finer rows it covers, maxima by max (docs/ledger.md, "Tiers").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import msgspec
from psycopg.types.json import Json
from sqlalchemy import Connection, Dialect, Table, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, col

from domain.json_parameter import json_parameter
from domain.ledger.attribution import MEASURES, PEAKS, RowKey
from domain.models import (
    AccountedPeriod,
    AccountedWindow,
    UsageRollupHourly,
)
from domain.models.base import naive_utc, table_of
from domain.models.history import DAY, HOUR, WIDTHS

FINE = 0
"""Stands for the fine tier's width (the rollup bucket) where a width is expected."""
_CHUNK = 500
_UNACCOUNTED = "unaccounted"


def floor_to(moment: datetime, width: int) -> datetime:
    """The start of the ``width``-second bucket (aligned to the Unix epoch, so to UTC days) holding ``moment``."""
    seconds = int(moment.timestamp() // width * width)
    return datetime.fromtimestamp(seconds, UTC)


def ceil_to(moment: datetime, width: int) -> datetime:
    start = floor_to(moment, width)
    return start if start == moment else start + timedelta(seconds=width)


@dataclass(frozen=True, slots=True)
class Piece:
    """Part ``[start, end)`` of a period, read from the tier of ``width`` (FINE, HOUR or DAY)."""

    width: int
    start: datetime
    end: datetime


def pieces(start: datetime, end: datetime) -> list[Piece]:
    """``[start, end)`` cut into whole days (daily tier), whole hours (hourly) and the rest (fine).

    The fine tier is needed only for the parts of a period that are not whole hours; the tiers are
    sums of the same rows, so the pieces add up to what the fine tier alone would answer.
    """
    if end <= start:
        return []
    out: list[Piece] = []
    day_lo, day_hi = ceil_to(start, DAY), floor_to(end, DAY)
    if day_lo < day_hi:
        out.append(Piece(DAY, day_lo, day_hi))
        hour_spans = [(start, day_lo), (day_hi, end)]
    else:
        hour_spans = [(start, end)]
    for lo, hi in hour_spans:
        hour_lo, hour_hi = ceil_to(lo, HOUR), floor_to(hi, HOUR)
        if hour_lo < hour_hi:
            out.append(Piece(HOUR, hour_lo, hour_hi))
            fine = [(lo, hour_lo), (hour_hi, hi)]
        else:
            fine = [(lo, hi)]
        out.extend(Piece(FINE, a, b) for a, b in fine if a < b)
    return sorted(out, key=lambda p: p.start)


def measure_values(measures: list[float | None]) -> dict[str, float | None]:
    """A row's measures by column name, unknown sums as 0 (maxima stay unknown)."""
    return {
        name: (value if i in PEAKS else float(value or 0.0))
        for i, (name, value) in enumerate(zip(MEASURES, measures, strict=True))
    }


def upsert_sums(session: Session, table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` to ``table``: a new key is inserted, an existing one gets the sums added and the maxima
    raised (unknown never wins). Safe against a concurrent writer of the same key."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        _upsert_sums_sqlite(session, table, keys, rows)
        return
    insert = postgresql.insert(table)
    updates: dict[str, Any] = {}
    for name in (c.name for c in table.columns if c.name not in keys):
        old, new = table.c[name], insert.excluded[name]
        updates[name] = func.greatest(old, new) if name in _PEAK_NAMES else old + new  # greatest() skips NULLs
    statement = insert.on_conflict_do_update(index_elements=list(keys), set_=updates)
    for start in range(0, len(rows), _CHUNK):
        session.execute(statement, rows[start : start + _CHUNK])


_PEAK_NAMES = frozenset(MEASURES[i] for i in PEAKS)


def _sqlite_added(table: str, name: str) -> str:
    """SQLite's SET clause adding ``excluded.name`` to ``table``'s row: sums add, peaks keep the larger
    (SQLite's two-argument max() is NULL if either is: unknown never wins)."""
    if name in _PEAK_NAMES:
        return f"{name} = coalesce(max({table}.{name}, excluded.{name}), {table}.{name}, excluded.{name})"
    return f"{name} = {table}.{name} + excluded.{name}"


def _upsert_sums_sqlite(session: Session, table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """SQLite: one ``executemany`` of plain tuples straight to the driver. Through SQLAlchemy's
    parameter handling the same upsert cost ~25 us a row, most of a 10,000-GPU window's write."""
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    convert = [(i, p) for i, n in enumerate(names) if (p := _stored(table.c[n].type, dialect)) is not None]
    updates = ", ".join(_sqlite_added(table.name, n) for n in names if n not in keys)
    statement = (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"  # names are the table's columns, never input
    )
    values = []
    of = itemgetter(*names)
    for row in rows:
        value = list(of(row))
        for i, process in convert:
            value[i] = process(value[i])
        values.append(tuple(value))
    connection.exec_driver_sql(statement, values)


def _stored(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy turns a value of ``column_type`` into for the driver (a datetime: SQLite's text
    ``2026-12-06 20:40:00.000000``): the dialect's processor, not only the type's own, so rows
    written straight to the driver compare equal to rows written through SQLAlchemy."""
    return column_type.dialect_impl(dialect).bind_processor(dialect)


_GPU_KEYS = ("gpu_id", "slice_id", "project_id", "bucket_start")
_CLUSTER_KEYS = ("width", "cluster_id", "project_id", "bucket_start")
_PERIOD_KEYS = ("width", "hub_id", "bucket_start")


def write_tiers(session: Session, rows: Mapping[RowKey, list[float | None]], document: Json | None = None) -> None:
    """Add a window's fine rows to the hourly and daily tiers, per GPU and per cluster.

    ``document``: the rows' :func:`rows_document`, when the caller has it already (PostgreSQL).
    """
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(_TIERS_STATEMENT), {"rows": document or rows_document(rows)})
        return
    _write_tiers_sqlite(session, rows)


_STAGED = "tier_window_rows"
"""SQLite: the temporary table a window's fine rows are staged in for the tiers' set-based upserts."""


def _write_tiers_sqlite(session: Session, rows: Mapping[RowKey, list[float | None]]) -> None:
    """SQLite: the window's rows staged in a temporary table (one driver ``executemany`` of plain tuples,
    the values bound exactly), then added to each tier by one upsert that groups in SQL, as on
    PostgreSQL; one upsert per row through SQLAlchemy took ~0.3 s of a 10,000-GPU window."""
    connection = session.connection()
    stored = _stored(table_of(UsageRollupHourly).c.bucket_start.type, connection.dialect)
    as_stored = stored if stored is not None else str
    connection.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGED} ({', '.join(_ROW_COLUMNS)})")
    connection.exec_driver_sql(
        f"INSERT INTO {_STAGED} VALUES ({', '.join('?' * len(_ROW_COLUMNS))})",  # noqa: S608  (constants)
        [(gpu, piece, project, as_stored(bucket), *m) for (gpu, piece, project, bucket), m in rows.items()],
    )
    for statement in _SQLITE_TIER_STATEMENTS:
        connection.exec_driver_sql(statement)
    connection.exec_driver_sql(f"DELETE FROM {_STAGED}")  # noqa: S608  (in the transaction: a failure rolls it back)


def _sqlite_tier_statements() -> tuple[str, ...]:
    sums = [MEASURES[i] for i in range(len(MEASURES)) if i not in PEAKS]
    peaks = [MEASURES[i] for i in sorted(PEAKS)]
    measures = ", ".join([*sums, *peaks])
    aggregates = ", ".join([*(f"sum(coalesce(r.{m}, 0))" for m in sums), *(f"max(r.{m})" for m in peaks)])
    out = []
    for unit, width in (("%H", HOUR), ("00", DAY)):
        bucket = f"strftime('%Y-%m-%d {unit}:00:00.000000', r.bucket_start)"  # the stored text, floored
        for table, keys, select_keys, source, group in (
            (
                "usage_rollup_hourly" if width == HOUR else "usage_rollup_daily",
                ", ".join(_GPU_KEYS),
                f"r.gpu_id, r.slice_id, r.project_id, {bucket}",
                f"{_STAGED} r",
                "1, 2, 3, 4",
            ),
            (
                "cluster_rollup",
                ", ".join(_CLUSTER_KEYS),
                f"{width}, n.cluster_id, r.project_id, {bucket}",
                # a GPU deleted from the inventory meanwhile has no cluster to add to
                f"{_STAGED} r JOIN gpu g ON g.id = r.gpu_id JOIN node n ON n.id = g.node_id",
                "2, 3, 4",
            ),
        ):
            updates = ", ".join(_sqlite_added(table, m) for m in (*sums, *peaks))
            out.append(
                # table and column names are this module's constants; WHERE true: SQLite's upsert after a SELECT
                f"INSERT INTO {table} ({keys}, {measures}) SELECT {select_keys}, {aggregates} "  # noqa: S608
                f"FROM {source} WHERE true GROUP BY {group} ON CONFLICT ({keys}) DO UPDATE SET {updates}"
            )
    return tuple(out)


def _tier_upsert(cte: str, table: str, keys: str, select_keys: str, source: str, group: str) -> str:
    sums = [MEASURES[i] for i in range(len(MEASURES)) if i not in PEAKS]
    peaks = [MEASURES[i] for i in sorted(PEAKS)]
    measures = ", ".join([*sums, *peaks])
    aggregates = ", ".join([*(f"sum(coalesce(r.{m}, 0))" for m in sums), *(f"max(r.{m})" for m in peaks)])
    updates = ", ".join(
        [
            *(f"{m} = {table}.{m} + excluded.{m}" for m in sums),
            *(f"{m} = greatest({table}.{m}, excluded.{m})" for m in peaks),  # greatest() skips NULLs
        ]
    )
    return (
        # table and column names are this module's constants
        f"{cte} AS (INSERT INTO {table} ({keys}, {measures}) SELECT {select_keys}, {aggregates} FROM {source} "  # noqa: S608
        f"GROUP BY {group} ON CONFLICT ({keys}) DO UPDATE SET {updates} RETURNING 1)"
    )


WINDOW_ROWS = "json_populate_recordset(NULL::usage_rollup, CAST(:rows AS json))"
"""The window's rows in SQL, from the ``rows`` parameter (:func:`rows_document`)."""


def _tiers_statement() -> str:
    """One statement for PostgreSQL: the window's rows arrive as one JSON document (:func:`rows_document`,
    the one the fine tier's add reads too) and four data-modifying CTEs add them to the hourly and
    daily tiers per GPU and per cluster, grouping in the database."""
    parts = [f"r AS (SELECT * FROM {WINDOW_ROWS})"]  # noqa: S608  (a constant of this module)
    gpu_keys = "gpu_id, slice_id, project_id, bucket_start"
    with_cluster = "r JOIN gpu g ON g.id = r.gpu_id JOIN node n ON n.id = g.node_id"
    for unit, width in (("hour", HOUR), ("day", DAY)):
        bucket = f"date_trunc('{unit}', r.bucket_start)"
        table = "usage_rollup_hourly" if width == HOUR else "usage_rollup_daily"
        parts.append(
            _tier_upsert(
                f"gpu_{unit}", table, gpu_keys, f"r.gpu_id, r.slice_id, r.project_id, {bucket}", "r", "1, 2, 3, 4"
            )
        )
        parts.append(
            _tier_upsert(
                f"cluster_{unit}",
                "cluster_rollup",
                "width, cluster_id, project_id, bucket_start",
                f"{width}, n.cluster_id, r.project_id, {bucket}",
                with_cluster,
                "n.cluster_id, r.project_id, 4",
            )
        )
    return "WITH " + ", ".join(parts) + " SELECT 1"


_TIERS_STATEMENT = _tiers_statement()
_SQLITE_TIER_STATEMENTS = _sqlite_tier_statements()
_ROW_COLUMNS = (*_GPU_KEYS, *MEASURES)
_WindowRow = msgspec.defstruct("_WindowRow", [(name, Any) for name in _ROW_COLUMNS])
"""A fine row as msgspec encodes it: the same JSON object as a dict, built and encoded ~4x faster."""


def rows_document(rows: Mapping[RowKey, list[float | None]]) -> Json:
    """A window's fine rows as the JSON array of ``usage_rollup`` records PostgreSQL expands with
    ``json_populate_recordset``: one parameter, encoded once for the fine tier and the coarser ones
    (an array per column costs the driver more to send than the server to add)."""
    stored: dict[datetime, datetime] = {}  # a window has one or two buckets: each converted once
    records = []
    for (gpu, piece, project, bucket), measures in rows.items():
        at = stored.get(bucket)
        if at is None:
            at = stored[bucket] = naive_utc(bucket)
        records.append(_WindowRow(gpu, piece, project, at, *measures))
    return json_parameter(records)


def period_rows(
    hub_id: int, start: datetime, end: datetime, gpu_count: int, unaccounted: float, kind: str
) -> list[dict[str, Any]]:
    """A window's ``accounted_period`` rows: its time, capacity and unaccounted GPU-seconds pro-rated
    to each hour and day it overlaps (exact: both are uniform over the window)."""
    length = (end - start).total_seconds()
    if length <= 0:
        return []
    out = []
    for width in WIDTHS:
        bucket = floor_to(start, width)
        while bucket < end:
            overlap = (min(end, bucket + timedelta(seconds=width)) - max(start, bucket)).total_seconds()
            out.append(
                {
                    "width": width,
                    "hub_id": hub_id,
                    "bucket_start": bucket,
                    "seconds": overlap,
                    "capacity_gpu_seconds": gpu_count * overlap,
                    "unaccounted_gpu_seconds": unaccounted * overlap / length,
                    "unaccounted_seconds": overlap if kind == _UNACCOUNTED else 0.0,
                }
            )
            bucket += timedelta(seconds=width)
    return out


def write_period(
    session: Session, hub_id: int, start: datetime, end: datetime, gpu_count: int, unaccounted: float, kind: str
) -> None:
    """Add one window to the hub's hourly and daily ``accounted_period`` rows."""
    upsert_sums(
        session,
        table_of(AccountedPeriod),
        _PERIOD_KEYS,
        period_rows(hub_id, start, end, gpu_count, unaccounted, kind),
    )


def _floor_sql(dialect: str, width: int, column: str) -> str:
    if dialect == "postgresql":
        return f"date_trunc('{'hour' if width == HOUR else 'day'}', {column})"
    # SQLite keeps times as text in SQLAlchemy's format: keep it, or keys would not compare equal
    return f"strftime('{'%Y-%m-%d %H' if width == HOUR else '%Y-%m-%d 00'}:00:00.000000', {column})"


def rebuild_tiers(connection: Connection) -> None:
    """Recompute every tier from the fine rows and the windows (the migration to tiers, and a repair):
    the same sums :func:`write_tiers` and :func:`write_period` add window by window."""
    dialect = connection.dialect.name
    for table in ("usage_rollup_hourly", "usage_rollup_daily", "cluster_rollup", "accounted_period"):
        connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608
    sums = [MEASURES[i] for i in range(len(MEASURES)) if i not in PEAKS]
    peaks = [MEASURES[i] for i in sorted(PEAKS)]
    measures = ", ".join([*sums, *peaks])
    aggregates = ", ".join([*(f"SUM(r.{m})" for m in sums), *(f"MAX(r.{m})" for m in peaks)])
    for width, table in ((HOUR, "usage_rollup_hourly"), (DAY, "usage_rollup_daily")):
        bucket = _floor_sql(dialect, width, "r.bucket_start")
        connection.execute(
            text(
                f"INSERT INTO {table} (gpu_id, slice_id, project_id, bucket_start, {measures}) "  # noqa: S608
                f"SELECT r.gpu_id, r.slice_id, r.project_id, {bucket}, {aggregates} FROM usage_rollup r "
                f"GROUP BY r.gpu_id, r.slice_id, r.project_id, {bucket}"
            )
        )
        connection.execute(
            text(
                f"INSERT INTO cluster_rollup (width, cluster_id, project_id, bucket_start, {measures}) "  # noqa: S608
                f"SELECT {width}, n.cluster_id, r.project_id, {bucket}, {aggregates} FROM usage_rollup r "
                "JOIN gpu g ON g.id = r.gpu_id JOIN node n ON n.id = g.node_id "
                f"GROUP BY n.cluster_id, r.project_id, {bucket}"
            )
        )
    periods: dict[tuple[int, int, datetime], dict[str, Any]] = {}
    windows = connection.execute(
        select(
            col(AccountedWindow.hub_id),
            col(AccountedWindow.start),
            col(AccountedWindow.end),
            col(AccountedWindow.gpu_count),
            col(AccountedWindow.gpu_seconds_unaccounted),
            col(AccountedWindow.kind),
        )
    )
    for hub, start, end, gpu_count, unaccounted, kind in windows:
        for row in period_rows(hub, start, end, gpu_count, unaccounted, kind):
            key = (row["width"], row["hub_id"], row["bucket_start"])
            into = periods.get(key)
            if into is None:
                periods[key] = row
            else:
                for name in ("seconds", "capacity_gpu_seconds", "unaccounted_gpu_seconds", "unaccounted_seconds"):
                    into[name] += row[name]
    rows = list(periods.values())
    for offset in range(0, len(rows), _CHUNK):
        connection.execute(table_of(AccountedPeriod).insert(), rows[offset : offset + _CHUNK])
