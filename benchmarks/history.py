# ruff: noqa: S608 - the SQL is assembled from this module's constants and integers, never from input
"""History that stays fast for years (issue 16): a 10,000-GPU fleet with 400 days of tiers on PostgreSQL.

The fleet and its first 5-minute bucket are written through the worker's own ledger
(benchmarks/fleet_data.py); the tiers are then filled set-based (``INSERT ... SELECT`` over
``generate_series``, every bucket a copy of the first, scaled to the tier's width, so every coarser
row is the exact sum of the finer ones it stands for). The fill is not the figure. Filled:

- the daily tier, per GPU, slice and project: ``DAYS`` days (default 400);
- the per-cluster tier: hourly and daily over the same days; the hubs' accounted periods likewise;
- the hourly tier per GPU: the 395 days (13 months) it keeps, month partition by month partition;
- the fine tier: the 7 days it keeps and the 2 before them (the partitions the retention step drops),
  day partition by day partition, and 30-second windows over those 9 days.

Partitions are built as plain tables, indexed once full and then attached (an index insert per row
would take hours); rows go in bucket by bucket, the order the polls write them in.

Timed in the same run, each beside the bare SQL of the same answer (p50 of 3 after a warm-up): the
monthly statement, the fleet, cluster, project and GPU charts over 30 days and a year, the usage API's
work over 30 days (the series and its JSON), and one retention step (partition drop and row deletes).
Targets at 10,000 GPUs x 400 days: statement <= 1 s, a 30-day chart <= 300 ms, a 1-year chart
<= 500 ms, the retention step <= 1 s. ``AI_TELEMETRY_BENCH_HISTORY_DAYS`` shortens the fill.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlmodel import Session

from benchmarks.fleet_data import BUCKET_SECONDS, GPUS, populate
from benchmarks.measure import Timing, report, timed
from domain.access import ReadScope
from domain.database import create_db_engine, upgrade
from domain.inventory.usage import usage_series
from domain.ledger.partitions import (
    PARTITIONED,
    ROLLUP_FILLFACTOR,
    ensure_partitions,
    next_period,
    partition_name,
    partitions,
    period_start,
)
from domain.ledger.retention import RetentionPolicy, apply_retention
from domain.ledger.statements import monthly_statement
from domain.settings import load_settings
from tests.services import find_postgres_bin, running_postgres
from web.api.schemas import UsagePointRead  # the API's own schema: the JSON it would send

END = datetime(2026, 12, 6, tzinfo=UTC)
"""The benchmark's "now": the tiers end here."""
MONTH = "2026-11"
WINDOW_SECONDS = 30
REPEAT = 3
POLICY = RetentionPolicy(fine_days=7, hourly_days=395, daily_days=0)
TARGETS = {"statement": 1.0, "30 days": 0.3, "1 year": 0.5, "retention": 1.0}
SUMS = ("seconds", "seconds_idle", "seconds_util_known", "util_seconds", "memory_mib_seconds", "energy_wh")
SUMS += ("power_seconds_known",)
PEAKS = ("util_max", "memory_max_mib", "temperature_max_c")
TABLES = ("usage_rollup", "usage_rollup_hourly", "usage_rollup_daily", "cluster_rollup", "accounted_period")


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _scaled(alias: str, factor: int) -> str:
    return ", ".join([*(f"{alias}.{c} * {factor}" for c in SUMS), *(f"{alias}.{c}" for c in PEAKS)])


def _cluster_scaled(factor: int) -> str:
    return ", ".join([*(f"sum(t.{c}) * {factor}" for c in SUMS), *(f"max(t.{c})" for c in PEAKS)])


def _parent_shape(connection: Connection, table: str) -> list[str]:
    """The statements giving a plain copy of partitioned ``table`` its key and indexes, built after
    its rows are in (one sorted build, not an index insert per row); ``{child}`` marks the copy."""
    keys = connection.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(:t) "
            "AND contype IN ('p', 'u')"
        ),
        {"t": table},
    ).all()
    indexes = connection.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:t) AND i.indexrelid NOT IN "
            "(SELECT conindid FROM pg_constraint WHERE conrelid = to_regclass(:t))"
        ),
        {"t": table},
    ).all()
    statements = [f"ALTER TABLE {{child}} ADD CONSTRAINT {{child}}_{name} {definition}" for name, definition in keys]
    for name, definition in indexes:
        statements.append(
            re.sub(
                rf"^CREATE (UNIQUE )?INDEX {name} ON ONLY \S+",
                rf"CREATE \1INDEX {{child}}_{name} ON {{child}}",
                definition,
            )
        )
    return statements


def _bulk_partition(engine: Engine, table: str, span: str, start: datetime, select: str, params: dict[str, Any]) -> str:
    """Fill one partition's rows into a plain table, then give it the parent's key and indexes; the
    table's name, to attach. ``select`` gives the rows for ``[:lo, :hi)``."""
    child = partition_name(table, span, start)
    bounds = {"lo": _naive(max(start, params["first"])), "hi": _naive(min(next_period(span, start), END))}
    with engine.begin() as c:
        shape = _parent_shape(c, table)
        c.execute(
            text(f"CREATE TABLE {child} (LIKE {table} INCLUDING DEFAULTS) WITH (fillfactor = {ROLLUP_FILLFACTOR})")
        )
        c.execute(text(f"INSERT INTO {child} {select}"), params | bounds)
        for statement in shape:
            c.execute(text(statement.format(child=child)))
    return child


def _fill_partitioned(engine: Engine, columns: str, days: int) -> None:
    """The fine tier (the 7 days kept and the 2 before them, which the retention step drops) and the
    hourly tier (its 13 months), partition by partition on two connections, bucket by bucket as the
    polls write them; attached when all are built."""
    step = f"CAST('{BUCKET_SECONDS} seconds' AS interval)"
    fine = (
        f"(gpu_id, slice_id, project_id, bucket_start, {columns}) SELECT t.gpu_id, t.slice_id, t.project_id, b, "
        f"{_scaled('t', 1)} FROM generate_series(CAST(:lo AS timestamp), CAST(:hi AS timestamp) - {step}, {step}) b, "
        "LATERAL (SELECT * FROM bench_seed WHERE b IS NOT NULL OFFSET 0) t"
    )
    hour = "CAST('1 hour' AS interval)"
    hourly = (
        f"(gpu_id, slice_id, project_id, bucket_start, {columns}) SELECT t.gpu_id, t.slice_id, t.project_id, b, "
        f"{_scaled('t', 3600 // BUCKET_SECONDS)} FROM generate_series(CAST(:lo AS timestamp), "
        f"CAST(:hi AS timestamp) - {hour}, {hour}) b, LATERAL (SELECT * FROM bench_seed WHERE b IS NOT NULL OFFSET 0) t"
    )
    jobs = []
    for table, span, first, select in (
        ("usage_rollup", "day", END - timedelta(days=POLICY.fine_days + 2), fine),
        ("usage_rollup_hourly", "month", END - timedelta(days=min(POLICY.hourly_days, days)), hourly),
    ):
        start = period_start(span, first)
        while start < END:
            jobs.append((table, span, start, select, {"first": first}))
            start = next_period(span, start)
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda job: (job[0], job[2], job[1], _bulk_partition(engine, *job)), jobs))
    with engine.begin() as c:
        for table, start, span, child in built:
            c.execute(
                text(
                    f"ALTER TABLE {table} ATTACH PARTITION {child} FOR VALUES FROM ('{_naive(start)}') "
                    f"TO ('{_naive(next_period(span, start))}')"
                )
            )


def _fill(engine: Engine, days: int) -> float:
    """Every tier, set-based, from the first bucket the worker wrote; the seconds taken."""
    started = time.perf_counter()
    with engine.begin() as connection:  # the fill builds its own partitions, from the oldest day on
        for table in PARTITIONED:
            for partition in partitions(connection, table):
                connection.execute(text(f"DROP TABLE {partition.name}"))
    seed = END - timedelta(days=POLICY.fine_days + 2)
    populate(engine, now=seed + timedelta(seconds=BUCKET_SECONDS), buckets=0)
    columns = ", ".join((*SUMS, *PEAKS))
    step = f"CAST('{BUCKET_SECONDS} seconds' AS interval)"
    with engine.begin() as c:
        c.execute(
            text("CREATE UNLOGGED TABLE bench_seed AS SELECT * FROM usage_rollup WHERE bucket_start = :s"),
            {"s": _naive(seed)},
        )
        for table in TABLES:
            c.execute(text(f"DELETE FROM {table}"))
        c.execute(
            text(
                "CREATE TEMP TABLE seed_cluster AS SELECT n.cluster_id, t.project_id, "
                + ", ".join([*(f"sum(t.{x}) AS {x}" for x in SUMS), *(f"max(t.{x}) AS {x}" for x in PEAKS)])
                + " FROM bench_seed t JOIN gpu g ON g.id = t.gpu_id JOIN node n ON n.id = g.node_id GROUP BY 1, 2"
            )
        )
        params = {"seed": _naive(seed), "end": _naive(END)}
        per_hour, per_day = 3600 // BUCKET_SECONDS, 86400 // BUCKET_SECONDS
        c.execute(
            text(
                f"INSERT INTO usage_rollup_daily (gpu_id, slice_id, project_id, bucket_start, {columns}) "
                f"SELECT t.gpu_id, t.slice_id, t.project_id, b, {_scaled('t', per_day)} FROM "
                "generate_series(CAST(:first AS timestamp), CAST(:end AS timestamp) - CAST('1 day' AS interval), "
                "CAST('1 day' AS interval)) b, LATERAL (SELECT * FROM bench_seed WHERE b IS NOT NULL OFFSET 0) t"
            ),
            params | {"first": _naive(END - timedelta(days=days))},
        )
        window = c.execute(
            text(
                f"SELECT hub_id, gpu_count, gpu_seconds_unaccounted FROM accounted_window WHERE start < :seed + {step}"
            ),
            params,
        ).one()
        for width, factor in ((3600, per_hour), (86400, per_day)):
            interval = f"CAST('{width} seconds' AS interval)"
            series = f"generate_series(CAST(:first AS timestamp), CAST(:end AS timestamp) - {interval}, {interval}) b"
            bounds = params | {"first": _naive(END - timedelta(days=days))}
            c.execute(
                text(
                    f"INSERT INTO cluster_rollup (width, cluster_id, project_id, bucket_start, {columns}) "
                    f"SELECT {width}, t.cluster_id, t.project_id, b, {_scaled('t', factor)} FROM seed_cluster t "
                    f"CROSS JOIN {series}"
                ),
                bounds,
            )
            c.execute(
                text(
                    "INSERT INTO accounted_period (width, hub_id, bucket_start, seconds, capacity_gpu_seconds, "
                    f"unaccounted_gpu_seconds, unaccounted_seconds) SELECT {width}, :hub, b, {width}, "
                    f":count * {width}, :unaccounted * {factor}, 0 FROM {series}"
                ),
                bounds
                | {"hub": window.hub_id, "count": window.gpu_count, "unaccounted": window.gpu_seconds_unaccounted},
            )
        c.execute(
            text(
                'INSERT INTO accounted_window (hub_id, start, "end", kind, gpu_count, gpu_seconds_unaccounted, '
                "replica, recorded_at) SELECT :hub, s, s + CAST(:w AS interval), 'polled', :count, 0, 'benchmark', "
                "now() FROM generate_series(CAST(:seed AS timestamp) + " + step + ", CAST(:end AS timestamp) - "
                "CAST(:w AS interval), CAST(:w AS interval)) s"
            ),
            params | {"hub": window.hub_id, "count": window.gpu_count, "w": f"{WINDOW_SECONDS} seconds"},
        )
        c.execute(text("UPDATE hub SET accounted_until = :end"), params)
    _fill_partitioned(engine, columns, days)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE bench_seed"))
        ensure_partitions(connection, END)  # the ones ahead, as the worker's maintenance keeps them
    filled = time.perf_counter() - started
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    print(f"  filled in {filled:.0f} s, vacuumed in {time.perf_counter() - started - filled:.0f} s")
    return time.perf_counter() - started


def _sizes(connection: Connection) -> dict[str, tuple[int, int]]:
    """Per tier: (rows, bytes with indexes), partitions included."""
    out = {}
    for table in TABLES:
        rows = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        size = connection.execute(
            text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE c.oid = "
                "to_regclass(:t) OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(:t))"
            ),
            {"t": table},
        ).scalar_one()
        out[table] = (int(rows), int(size))
    return out


BARE_STATEMENT = """
SELECT c.hub_id, r.project_id, g.model, coalesce(s.profile, 'whole'), sum(r.seconds), sum(r.seconds_idle),
       sum(r.seconds - r.seconds_util_known), sum(r.energy_wh)
FROM (SELECT gpu_id, slice_id, project_id, sum(seconds) AS seconds, sum(seconds_idle) AS seconds_idle,
             sum(seconds_util_known) AS seconds_util_known, sum(energy_wh) AS energy_wh
      FROM usage_rollup_daily WHERE bucket_start >= :start AND bucket_start < :end GROUP BY 1, 2, 3) r
JOIN gpu g ON g.id = r.gpu_id JOIN node n ON n.id = g.node_id JOIN cluster c ON c.id = n.cluster_id
LEFT JOIN gpu_slice s ON s.id = r.slice_id
GROUP BY c.hub_id, r.project_id, g.model, coalesce(s.profile, 'whole');
"""
BARE_PERIODS = """
SELECT hub_id, sum(capacity_gpu_seconds), sum(unaccounted_gpu_seconds) FROM accounted_period
WHERE width = 86400 AND bucket_start >= :start AND bucket_start < :end GROUP BY hub_id
"""
BARE_CLUSTER_CHART = """
SELECT date_bin(CAST(:step AS interval), r.bucket_start, TIMESTAMP '1970-01-01') AS b,
       sum(r.seconds) FILTER (WHERE r.project_id <> 0), sum(r.util_seconds) / nullif(sum(r.seconds_util_known), 0),
       sum(r.energy_wh), max(r.temperature_max_c)
FROM cluster_rollup r {join}
WHERE r.width = :width AND r.bucket_start >= :since AND r.bucket_start < :until {where}
GROUP BY 1 ORDER BY 1
"""
BARE_GPU_CHART = """
SELECT date_bin(CAST(:step AS interval), r.bucket_start, TIMESTAMP '1970-01-01') AS b,
       sum(r.seconds) FILTER (WHERE r.project_id <> 0), sum(r.util_seconds) / nullif(sum(r.seconds_util_known), 0),
       sum(r.energy_wh), max(r.temperature_max_c)
FROM {table} r WHERE r.gpu_id = :gpu AND r.bucket_start >= :since AND r.bucket_start < :until GROUP BY 1 ORDER BY 1
"""


def _verdict(timing: Timing, target: float) -> str:
    return "within" if timing.p50 <= target * 1000 else "OVER"


def run() -> None:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        print("PostgreSQL not installed: run scripts/install-test-services first")
        return
    days = int(os.environ.get("AI_TELEMETRY_BENCH_HISTORY_DAYS", "400"))
    with running_postgres(bin_dir) as url:
        engine = create_db_engine(load_settings({"database": {"url": url}}).database)
        try:
            upgrade(engine)
            fill = _fill(engine, days)
            rows: list[tuple[str, str]] = []
            with engine.connect() as connection:
                ids = connection.execute(
                    text(
                        "SELECT (SELECT min(id) FROM cluster), (SELECT min(id) FROM research_project), "
                        "(SELECT min(gpu_id) FROM usage_rollup_daily)"
                    )
                ).one()
            cluster_id, project_id, gpu_id = ids
            rows += _time_reads(engine, cluster_id, project_id, gpu_id)
            rows += _time_retention(engine)
            with engine.connect() as connection:  # after retention: what a deployment keeps, measured
                sizes = _sizes(connection)
            print(
                f"\n  {GPUS:,} GPUs x {days} days, filled and vacuumed in {fill:.0f} s; kept after retention: "
                + ", ".join(f"{t} {n:,} rows" for t, (n, _) in sizes.items())
            )
            rows += _storage(sizes, days)
            report(f"History, {GPUS:,} GPUs x {days} days, PostgreSQL", rows)
        finally:
            engine.dispose()


def _time_reads(engine: Engine, cluster_id: int, project_id: int, gpu_id: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    month = {"start": datetime(2026, 11, 1), "end": datetime(2026, 12, 1)}
    with Session(engine) as session, engine.connect() as connection:
        statement = timed(lambda: monthly_statement(session, ReadScope.all(), MONTH), repeat=REPEAT, warmup=1)
        bare = timed(
            lambda: (
                connection.execute(text(BARE_STATEMENT), month).all(),
                connection.execute(text(BARE_PERIODS), month).all(),
            ),
            repeat=REPEAT,
            warmup=1,
        )
        result = monthly_statement(session, ReadScope.all(), MONTH)
        out.append(
            (
                "monthly statement",
                f"p50 {statement.p50:7.1f} ms ({_verdict(statement, TARGETS['statement'])} 1 s)  bare SQL "
                f"{bare.p50:7.1f} ms",
            )
        )
        out.append(("  its reconciliation", result.fleet.line))
        for label, span, step, width, table in (
            ("30 days", timedelta(days=30), "2 hours", 3600, "usage_rollup_hourly"),
            ("1 year", timedelta(days=365), "1 day", 86400, "usage_rollup_daily"),
        ):
            since, until = END - span, END
            naive = {"since": _naive(since), "until": _naive(until), "step": step, "width": width}
            for subject, kwargs, bare_sql, extra in (
                ("fleet", {}, BARE_CLUSTER_CHART.format(join="", where=""), {}),
                (
                    "cluster",
                    {"cluster_id": cluster_id},
                    BARE_CLUSTER_CHART.format(join="", where="AND r.cluster_id = :cluster"),
                    {"cluster": cluster_id},
                ),
                (
                    "project",
                    {"project_id": project_id},
                    BARE_CLUSTER_CHART.format(join="", where="AND r.project_id = :project"),
                    {"project": project_id},
                ),
                ("GPU", {"gpu_id": gpu_id}, BARE_GPU_CHART.format(table=table), {"gpu": gpu_id}),
            ):

                def chart(kwargs: dict[str, Any] = kwargs, since: datetime = since, until: datetime = until) -> Any:
                    return usage_series(
                        session, ReadScope.all(), since=since, until=until, bucket_seconds=BUCKET_SECONDS, **kwargs
                    )

                product = timed(chart, repeat=REPEAT, warmup=1)
                sql = timed(
                    lambda bare_sql=bare_sql, extra=extra, naive=naive: connection.execute(
                        text(bare_sql), naive | extra
                    ).all(),
                    repeat=REPEAT,
                    warmup=1,
                )
                points = len(chart())
                target = TARGETS[label]
                out.append(
                    (
                        f"{label} chart, {subject}",
                        f"p50 {product.p50:7.1f} ms ({_verdict(product, target)} {target * 1000:.0f} ms), "
                        f"{points} points  bare SQL {sql.p50:7.1f} ms",
                    )
                )

        def api() -> str:
            points = usage_series(
                session, ReadScope.all(), since=END - timedelta(days=30), until=END, bucket_seconds=BUCKET_SECONDS
            )
            return json.dumps([UsagePointRead.of(p).model_dump(mode="json") for p in points])

        usage = timed(api, repeat=REPEAT, warmup=1)
        naive = {"since": _naive(END - timedelta(days=30)), "until": _naive(END), "step": "2 hours", "width": 3600}
        bare_api = timed(
            lambda: connection.execute(text(BARE_CLUSTER_CHART.format(join="", where="")), naive).all(),
            repeat=REPEAT,
            warmup=1,
        )
        out.append(
            (
                "usage API work, fleet, 30 days",
                f"p50 {usage.p50:7.1f} ms, {len(api()) / 1024:.0f} KiB JSON  bare SQL {bare_api.p50:7.1f} ms",
            )
        )
    return out


def _time_retention(engine: Engine) -> list[tuple[str, str]]:
    """Bare SQL drops the older fine day (and deletes what the product's step deletes, a day earlier);
    then the product's step (partitions ahead, then every tier's retention) drops the next day."""
    day_before = END - timedelta(days=9)
    with engine.begin() as connection:
        started = time.perf_counter()
        connection.execute(text(f"DROP TABLE usage_rollup_p{day_before:%Y%m%d}"))
        cut = {"cut": _naive(END - timedelta(days=8))}
        connection.execute(text('DELETE FROM accounted_window WHERE "end" <= :cut'), cut)
        connection.execute(text("DELETE FROM usage_rollup_default WHERE bucket_start < :cut"), cut)
    bare = time.perf_counter() - started  # with the commit, where the partition's files go
    started = time.perf_counter()
    with Session(engine) as session:
        ensure_partitions(session.connection(), END)
        result = apply_retention(session, END, POLICY)
        session.commit()
    product = time.perf_counter() - started
    return [
        (
            "retention step",
            f"{product * 1000:7.1f} ms ({'within' if product <= TARGETS['retention'] else 'OVER'} 1 s): "
            f"{result.partitions_dropped} partition(s) dropped, {result.rows_deleted:,} rows deleted  "
            f"bare SQL (one day's partition and windows) {bare * 1000:7.1f} ms",
        )
    ]


def _storage(sizes: dict[str, tuple[int, int]], days: int) -> list[tuple[str, str]]:
    """Measured after the retention step: the fine tier's 7 days and the hourly tier's 13 months are
    what a GPU keeps for good; the daily and shared tiers grow by the year."""
    per_row = {t: (size / rows if rows else 0.0) for t, (rows, size) in sizes.items()}
    mib, gib = 1024**2, 1024**3
    steady = (sizes["usage_rollup"][1] + sizes["usage_rollup_hourly"][1]) / GPUS
    yearly = sum(sizes[t][1] for t in TABLES[2:]) / GPUS / days * 365
    total = sum(size for _, size in sizes.values())
    return [
        ("bytes per row (with indexes)", ", ".join(f"{t} {b:.0f}" for t, b in per_row.items())),
        (
            "storage per GPU",
            f"{steady / mib:.1f} MiB kept for good (fine 7 days, hourly {POLICY.hourly_days} days) + "
            f"{yearly / mib:.2f} MiB per GPU-year (daily and shared tiers)",
        ),
        (f"{GPUS:,} GPUs x {days} days, measured", f"{total / gib:.1f} GiB"),
    ]
