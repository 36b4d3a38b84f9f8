"""The monthly statement of a 10,000-GPU fleet on PostgreSQL, beside the bare SQL of the same answer.

The fleet and its first 5-minute bucket are written through the worker's own ledger
(benchmarks/fleet_data.py); the rest of the month is filled set-based (``INSERT ... SELECT`` over
``generate_series``: every bucket a copy of the first, and 30-second accounted windows tiling the
month), with the table's indexes dropped during the fill and rebuilt after it. The fill is not the
figure. Then, timed in the same run:

- the statement as the product builds it (``monthly_statement``: lines per project, model and
  profile, and the reconciliation), for an admin and for a researcher; since issue 16 it reads the
  daily tier (filled here from the rows, as the worker fills it window by window);
- the bare SQL of the same answer over the 5-minute rows and the windows (what the statement read
  before the tiers), no Python around it;
- the same bare SQL over a daily aggregate built here, for comparison with the product's tier.

Target (issue 14): the statement in at most 2 s. ``AI_TELEMETRY_BENCH_STATEMENT_DAYS`` (default 30)
shortens the month for a dry run.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session

from benchmarks.fleet_data import BUCKET_SECONDS, populate
from benchmarks.measure import report, timed
from domain.access import ReadScope
from domain.database import create_db_engine, upgrade
from domain.ledger.partitions import ensure_partitions
from domain.ledger.rate_card import parse_rate_card
from domain.ledger.statements import month_bounds, monthly_statement
from domain.ledger.tiers import rebuild_tiers
from domain.settings import load_settings
from tests.services import find_postgres_bin, running_postgres

MONTH = "2026-11"
WINDOW_SECONDS = 30
REPEAT = 3
TARGET_SECONDS = 2.0
CARD = parse_rate_card(
    'currency = "EUR"\n'
    '[[rates]]\nmodel = "NVIDIA H100 80GB HBM3"\nprice_per_gpu_hour = 3.9\n'
    '[[rates]]\nmodel = "NVIDIA A100-SXM4-80GB"\nprice_per_gpu_hour = 2.4\n',
    origin="benchmark rate card",
)

SUMS = (
    "seconds, seconds_idle, seconds_util_known, util_seconds, util_max, memory_mib_seconds, memory_max_mib, "
    "energy_wh, power_seconds_known, temperature_max_c"
)
BARE_LINES = """
SELECT c.hub_id, r.project_id, g.model, coalesce(s.profile, 'whole'), sum(r.seconds), sum(r.seconds_idle),
       sum(r.seconds - r.seconds_util_known), sum(r.energy_wh)
FROM {table} r JOIN gpu g ON g.id = r.gpu_id JOIN node n ON n.id = g.node_id JOIN cluster c ON c.id = n.cluster_id
LEFT JOIN gpu_slice s ON s.id = r.slice_id
WHERE r.{time} >= :start AND r.{time} < :end
GROUP BY c.hub_id, r.project_id, g.model, coalesce(s.profile, 'whole')
"""
BARE_WINDOWS = """
SELECT hub_id, sum(gpu_count * extract(epoch FROM least("end", :end) - greatest(start, :start))),
       sum(gpu_seconds_unaccounted * extract(epoch FROM least("end", :end) - greatest(start, :start))
           / nullif(extract(epoch FROM "end" - start), 0))
FROM accounted_window WHERE start < :end AND "end" > :start GROUP BY hub_id
"""


def _naive(moment: datetime) -> datetime:
    """Raw SQL compares with ``timestamp without time zone`` columns holding UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _fill(engine: Engine, days: int) -> tuple[int, int, float]:
    """The month's rows and windows, set-based; returns (rollup rows, windows, seconds taken)."""
    start, end = month_bounds(MONTH)
    end = min(end, start + timedelta(days=days))
    started = time.perf_counter()
    with engine.begin() as connection:  # the month's day partitions (issue 16), so no row lands in DEFAULT
        ensure_partitions(connection, end, since=start)
    populate(engine, now=start + timedelta(seconds=BUCKET_SECONDS), buckets=0)  # the fleet and bucket one
    with engine.begin() as connection:
        indexes = connection.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_rollup' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            )
        ).all()
        constraints = connection.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'usage_rollup'::regclass AND contype = 'u'"
            )
        ).all()
        for name, _ in indexes:
            connection.execute(text(f'DROP INDEX "{name}"'))
        for name, _ in constraints:
            connection.execute(text(f'ALTER TABLE usage_rollup DROP CONSTRAINT "{name}"'))
        params = {"start": _naive(start), "end": _naive(end), "step": f"{BUCKET_SECONDS} seconds"}
        copied = ", ".join("t." + c.strip() for c in SUMS.split(","))
        connection.execute(
            text(  # the column lists are this module's constants
                f"INSERT INTO usage_rollup (gpu_id, slice_id, project_id, bucket_start, {SUMS}) "  # noqa: S608
                f"SELECT t.gpu_id, t.slice_id, t.project_id, b, {copied} "
                "FROM usage_rollup t CROSS JOIN generate_series(CAST(:start AS timestamp) + CAST(:step AS interval), "
                "CAST(:end AS timestamp) - CAST(:step AS interval), CAST(:step AS interval)) AS b "
                "WHERE t.bucket_start = :start"
            ),
            params,
        )
        connection.execute(
            text(
                'INSERT INTO accounted_window (hub_id, start, "end", kind, gpu_count, gpu_seconds_unaccounted, '
                "replica, recorded_at) SELECT w.hub_id, s, s + CAST(:window AS interval), 'polled', w.gpu_count, 0, "
                "'benchmark', now() FROM accounted_window w CROSS JOIN generate_series(CAST(:start AS timestamp) "
                "+ CAST(:step AS interval), CAST(:end AS timestamp) - CAST(:window AS interval), "
                "CAST(:window AS interval)) AS s WHERE w.start = :start"
            ),
            {**params, "window": f"{WINDOW_SECONDS} seconds"},
        )
        connection.execute(text("UPDATE hub SET accounted_until = :end"), {"end": end})
        for name, definition in constraints:
            connection.execute(text(f'ALTER TABLE usage_rollup ADD CONSTRAINT "{name}" {definition}'))
        for _, definition in indexes:
            connection.execute(text(definition))
        rebuild_tiers(connection)  # what the worker writes with each window: the hourly and daily tiers
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        rows = connection.execute(text("SELECT count(*) FROM usage_rollup")).scalar_one()
        windows = connection.execute(text("SELECT count(*) FROM accounted_window")).scalar_one()
    return rows, windows, time.perf_counter() - started


def run() -> None:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        print("PostgreSQL not installed: run scripts/install-test-services first")
        return
    days = int(os.environ.get("AI_TELEMETRY_BENCH_STATEMENT_DAYS", "30"))
    with running_postgres(bin_dir) as url:
        settings = load_settings({"database": {"url": url}})
        engine = create_db_engine(settings.database)
        upgrade(engine)
        rows, windows, fill_seconds = _fill(engine, days)
        print(f"\n  filled {rows:,} rollup rows and {windows:,} windows ({days} days) in {fill_seconds:.0f} s")
        start, end = month_bounds(MONTH)
        params = {"start": _naive(start), "end": _naive(end)}
        try:
            with Session(engine) as session:
                researcher = ReadScope(
                    project_ids=frozenset({session.execute(text("SELECT min(id) FROM research_project")).scalar_one()})
                )

                def statement(scope: ReadScope) -> object:
                    return monthly_statement(session, scope, MONTH, rate_card=CARD)

                admin = timed(lambda: statement(ReadScope.all()), repeat=REPEAT, warmup=1)
                own = timed(lambda: statement(researcher), repeat=REPEAT, warmup=1)
                result = monthly_statement(session, ReadScope.all(), MONTH, rate_card=CARD)
            with engine.connect() as connection:

                def bare(table: str, column: str) -> None:
                    connection.execute(text(BARE_LINES.format(table=table, time=column)), params).all()
                    connection.execute(text(BARE_WINDOWS), params).all()

                bare_rows = timed(lambda: bare("usage_rollup", "bucket_start"), repeat=REPEAT, warmup=1)
                tier_started = time.perf_counter()
                connection.execute(
                    text(
                        "CREATE TABLE bench_daily AS SELECT gpu_id, slice_id, project_id, "
                        "date_trunc('day', bucket_start) AS day, sum(seconds) AS seconds, "
                        "sum(seconds_idle) AS seconds_idle, sum(seconds_util_known) AS seconds_util_known, "
                        "sum(energy_wh) AS energy_wh FROM usage_rollup GROUP BY 1, 2, 3, 4"
                    )
                )
                connection.execute(text("ANALYZE bench_daily"))
                connection.commit()
                tier_build = time.perf_counter() - tier_started
                tier = timed(lambda: bare("bench_daily", "day"), repeat=REPEAT, warmup=1)
        finally:
            engine.dispose()
        fleet = result.fleet
        verdict = "within" if admin.p50 <= TARGET_SECONDS * 1000 else "OVER"
        report(
            f"Monthly statement, 10,000 GPUs, {rows:,} rollup rows, PostgreSQL (target <= {TARGET_SECONDS:.0f} s)",
            [
                (
                    "statement, admin",
                    f"p50 {admin.p50 / 1000:6.2f} s  ({verdict} target)",
                ),
                ("statement, researcher", f"p50 {own.p50 / 1000:6.2f} s"),
                (
                    "bare SQL on 5-minute rows",
                    f"p50 {bare_rows.p50 / 1000:6.2f} s  (statement {admin.p50 / bare_rows.p50:4.2f}x)",
                ),
                (
                    "bare SQL on a daily tier",
                    f"p50 {tier.p50 * 1:6.1f} ms  (built here in {tier_build:.0f} s)",
                ),
                ("reconciliation", fleet.line),
            ],
        )
