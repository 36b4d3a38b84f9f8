"""The history tiers (docs/ledger.md, "Tiers"): exact sums, retention that keeps what statements need,
charts within their point budget, a lossless migration and PostgreSQL partitions made ahead and dropped.

Windows are written the way the worker writes them (attribution, the fine rows, the tiers and the
hub's accounted period in one transaction); hypothesis varies their lengths, holders and readings
across hour, day, month and partition boundaries, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, select, text
from sqlmodel import Session

import domain.json_parameter
from domain.access import ReadScope
from domain.database import upgrade
from domain.inventory.usage import MAX_POINTS, resolution, usage_series
from domain.ledger import GpuUse, Holder, Part, attribute
from domain.ledger.attribution import MEASURES, PEAKS
from domain.ledger.partitions import (
    ROLLUP_FILLFACTOR,
    ensure_partitions,
    is_partitioned,
    partition_name,
    partitions,
)
from domain.ledger.retention import RetentionPolicy, apply_retention
from domain.ledger.statements import monthly_statement
from domain.ledger.tiers import FINE, floor_to, period_rows, rebuild_tiers, write_period
from domain.models import (
    AccountedPeriod,
    AccountedWindow,
    ClusterRollup,
    Node,
    UsageRollup,
    UsageRollupDaily,
    UsageRollupHourly,
)
from domain.models.history import DAY, HOUR
from tests.test_statements import BOUNDARY, CARD, Fleet, build_fleet, write_ledger
from worker.ledger import write_rows

BUCKET = 300
MONTH_END = datetime(2026, 12, 1, tzinfo=UTC)
"""The windows below start before midnight of November 30 and run into December: hour, day, month and
partition boundaries in one ledger."""
TIERS = (UsageRollupHourly, UsageRollupDaily, ClusterRollup, AccountedPeriod)


def clear(session: Session) -> None:
    for model in (UsageRollup, AccountedWindow, *TIERS):
        session.execute(delete(model))


window_strategy = st.fixed_dictionaries(
    {
        "seconds": st.integers(1_000, 9_000_000_000).map(lambda us: us / 1_000_000),  # up to 2.5 h, microsecond ends
        "holders": st.lists(st.integers(0, 2), min_size=5, max_size=5),  # per GPU: 0 free, else a project
        "util": st.none() | st.floats(0, 100),
        "power": st.none() | st.floats(50, 700),
        "temperature": st.none() | st.floats(20, 95),
        "silent": st.integers(0, 5),
    }
)


def write_windows(session: Session, fleet: Fleet, start: datetime, windows: list[dict]) -> list[tuple]:
    """Account ``windows`` back to back from ``start`` as the worker does; the windows written."""
    gpus = sorted(fleet.gpus)
    at = start
    written = []
    for w in windows:
        end = at + timedelta(seconds=w["seconds"])
        for hub_id in sorted(set(fleet.hubs.values())):
            projects = sorted(p for p, h in fleet.projects.items() if h == hub_id)
            uses = []
            for i, gpu in enumerate(gpus):
                if fleet.gpus[gpu][0] != hub_id or i < w["silent"] - 3:
                    continue
                choice = w["holders"][i]
                holders = () if choice == 0 else (Holder(projects[(choice - 1) % len(projects)], "ns"),)
                part = Part(0, "whole", 1.0, holders, w["util"], w["util"], None if w["util"] is None else 1000.0)
                uses.append(GpuUse(gpu, "c", fleet.gpus[gpu][1], (part,), w["power"], w["temperature"]))
            rows = attribute(uses, at, end, bucket_seconds=BUCKET, idle_threshold_percent=5)
            write_rows(session, rows)
            count = len([g for g in gpus if fleet.gpus[g][0] == hub_id])
            unaccounted = (count - len(uses)) * w["seconds"]
            write_period(session, hub_id, at, end, count, unaccounted, "polled")
            session.add(
                AccountedWindow(
                    hub_id=hub_id,
                    start=at,
                    end=end,
                    kind="polled",
                    gpu_count=count,
                    gpu_seconds_unaccounted=unaccounted,
                )
            )
            written.append((hub_id, at, end, count, unaccounted))
        at = end
    session.flush()
    return written


def _gpu_node() -> Any:
    from domain.models import Gpu

    return Gpu.__table__.join(Node.__table__, Node.id == Gpu.node_id)  # type: ignore[attr-defined]


def expected_tiers(session: Session) -> dict[tuple, list[Any]]:
    """Every tier's rows computed here from the fine rows: key -> measures."""
    expected: dict[tuple, list[Any]] = {}
    for row, cluster_id in session.execute(
        select(UsageRollup, Node.cluster_id).join_from(UsageRollup.__table__, _gpu_node())  # type: ignore[attr-defined]
    ).all():
        values = [getattr(row, m) for m in MEASURES]
        for width in (HOUR, DAY):
            bucket = floor_to(row.bucket_start, width)
            for key in (
                ("gpu", width, row.gpu_id, row.slice_id, row.project_id, bucket),
                ("cluster", width, cluster_id, row.project_id, bucket),
            ):
                into = expected.setdefault(key, [0.0, 0.0, 0.0, 0.0, None, 0.0, None, 0.0, 0.0, None])
                for i, value in enumerate(values):
                    if i in PEAKS:
                        into[i] = value if into[i] is None or (value is not None and value > into[i]) else into[i]
                    else:
                        into[i] += value
    return expected


def stored_tiers(session: Session) -> dict[tuple, list[Any]]:
    stored: dict[tuple, list[Any]] = {}
    for width, model in ((HOUR, UsageRollupHourly), (DAY, UsageRollupDaily)):
        for row in session.execute(select(model)).scalars():
            stored[("gpu", width, row.gpu_id, row.slice_id, row.project_id, row.bucket_start)] = [
                getattr(row, m) for m in MEASURES
            ]
    for row in session.execute(select(ClusterRollup)).scalars():
        stored[("cluster", row.width, row.cluster_id, row.project_id, row.bucket_start)] = [
            getattr(row, m) for m in MEASURES
        ]
    return stored


def assert_same(expected: dict[tuple, list[Any]], stored: dict[tuple, list[Any]]) -> None:
    assert set(stored) == set(expected)
    for key, values in expected.items():
        for i, value in enumerate(values):
            if i in PEAKS:
                assert stored[key][i] == value, (key, MEASURES[i])
            else:
                assert stored[key][i] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, MEASURES[i])


def expected_periods(windows: list[tuple]) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for hub_id, start, end, count, unaccounted in windows:
        for width in (HOUR, DAY):
            bucket = floor_to(start, width)
            while bucket < end:
                overlap = (min(end, bucket + timedelta(seconds=width)) - max(start, bucket)).total_seconds()
                into = out[(width, hub_id, bucket)]
                into[0] += overlap
                into[1] += count * overlap
                into[2] += unaccounted * overlap / (end - start).total_seconds()
                bucket += timedelta(seconds=width)
    return out


def test_every_tier_is_the_exact_sum_of_its_fine_rows_and_windows(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain.json_parameter, "DOCUMENT_ROWS", 4)  # a window's rows in several documents
    with Session(db_engine) as session:
        fleet = build_fleet(session)
        ensure_partitions(session.connection(), MONTH_END, since=MONTH_END - timedelta(days=2))
        session.commit()

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        windows=st.lists(window_strategy, min_size=1, max_size=8),
        before=st.integers(0, 6 * 3600),
    )
    def check(windows: list[dict], before: int) -> None:
        with Session(db_engine) as session:
            clear(session)
            written = write_windows(session, fleet, MONTH_END - timedelta(seconds=before), windows)
            assert_same(expected_tiers(session), stored_tiers(session))
            periods = {
                (p.width, p.hub_id, p.bucket_start): [p.seconds, p.capacity_gpu_seconds, p.unaccounted_gpu_seconds]
                for p in session.execute(select(AccountedPeriod)).scalars()
            }
            expected = expected_periods(written)
            assert set(periods) == set(expected)
            for key, values in expected.items():
                assert periods[key] == pytest.approx(values, rel=1e-9, abs=1e-6)
            if is_partitioned(session.connection(), "usage_rollup"):  # the rows sit in their day's partition
                stray = session.execute(text("SELECT count(*) FROM usage_rollup_default")).scalar()
                assert stray == 0
            session.rollback()

    check()


def test_rebuilding_the_tiers_from_the_fine_rows_gives_what_the_writer_wrote(db_engine: Engine) -> None:
    """The migration's fill (``rebuild_tiers``) and the writer agree: the same sums, the same keys."""
    with Session(db_engine) as session:
        fleet = build_fleet(session)
        rng = random.Random(16)
        windows = [
            {
                "seconds": rng.uniform(1, 9000),
                "holders": [rng.randint(0, 2) for _ in range(5)],
                "util": rng.choice([None, rng.uniform(0, 100)]),
                "power": rng.choice([None, 300.0]),
                "temperature": rng.choice([None, 60.0]),
                "silent": rng.randint(0, 5),
            }
            for _ in range(30)
        ]
        write_windows(session, fleet, MONTH_END - timedelta(hours=20), windows)
        by_writer = stored_tiers(session)
        periods = sorted(
            (p.width, p.hub_id, p.bucket_start, p.seconds, p.capacity_gpu_seconds)
            for p in session.execute(select(AccountedPeriod)).scalars()
        )
        session.flush()
        rebuild_tiers(session.connection())
        assert_same(by_writer, stored_tiers(session))
        rebuilt = sorted(
            (p.width, p.hub_id, p.bucket_start, p.seconds, p.capacity_gpu_seconds)
            for p in session.execute(select(AccountedPeriod)).scalars()
        )
        assert [r[:3] for r in rebuilt] == [r[:3] for r in periods]
        for a, b in zip(rebuilt, periods, strict=True):
            assert a[3:] == pytest.approx(b[3:], rel=1e-9)
        assert len(periods) > 0


# --- retention ------------------------------------------------------------------------------------------


policies = st.integers(2, 40).flatmap(
    lambda fine: st.integers(fine, 420).flatmap(
        lambda hourly: st.tuples(
            st.just(fine), st.just(hourly), st.just(0) | st.integers(max(hourly, 62), max(hourly, 62) + 400)
        )
    )
)


def test_retention_never_drops_a_tier_a_statement_still_needs(db_engine: Engine) -> None:
    """Statements of the months around a simulated month, issued any time later under any valid retention,
    read the same after every tier was trimmed (on PostgreSQL: partitions dropped)."""
    rng = random.Random(16)
    plan = {}
    for hub in ("hub-a", "hub-b"):
        lengths: list[float] = []
        while sum(lengths) < 31.3 * 86400:
            lengths.append(rng.randint(600_000_000, 10_800_000_000) / 1_000_000)
        kinds = [rng.choice(["polled", "polled", "backfilled", "unaccounted"]) for _ in lengths]
        plan[hub] = {"lengths": lengths, "before": 2 * 3600 / sum(lengths), "kinds": kinds, "seed": rng.randint(0, 999)}
    months = ("2026-10", "2026-11", "2026-12")
    with Session(db_engine) as session:
        fleet = build_fleet(session)
        ensure_partitions(session.connection(), MONTH_END, since=BOUNDARY - timedelta(days=2))
        write_ledger(session, fleet, plan)
        session.commit()
        before = [monthly_statement(session, ReadScope.all(), m, rate_card=CARD) for m in months]

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(policy=policies, later=st.integers(1, 800))
    def check(policy: tuple[int, int, int], later: int) -> None:
        now = MONTH_END + timedelta(days=later)
        retention = RetentionPolicy(*policy)
        with Session(db_engine) as session:
            apply_retention(session, now, retention)
            fine_left = session.execute(select(func.count()).select_from(UsageRollup)).scalar()
            after = [monthly_statement(session, ReadScope.all(), m, rate_card=CARD) for m in months]
            session.rollback()
        daily_cut = retention.cutoffs(now)["daily"]
        if later > policy[0] + 1:
            assert fine_left == 0  # the fine tier did go: the statements below read the daily tier alone
        for was, now_ in zip(before, after, strict=True):
            if daily_cut is not None and was.start < daily_cut:
                continue  # a month the daily retention let go: no promise
            assert now_.totals.gpu_hours == pytest.approx(was.totals.gpu_hours, rel=1e-9)
            assert now_.totals.energy_kwh == pytest.approx(was.totals.energy_kwh, rel=1e-9)
            assert now_.totals.cost == was.totals.cost
            for a, b in zip(was.reconciliation, now_.reconciliation, strict=True):
                assert b.capacity_gpu_hours == pytest.approx(a.capacity_gpu_hours, rel=1e-9)
                assert b.unaccounted_gpu_hours == pytest.approx(a.unaccounted_gpu_hours, rel=1e-9, abs=1e-9)
                assert b.balanced

    check()


# --- charts ---------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    since=st.integers(0, 4_000_000_000).map(lambda s: datetime.fromtimestamp(s, UTC)),
    span=st.integers(1, 6 * 365 * 86400),
    fine=st.sampled_from([60, 120, 300, 600, 900, 1800, 3600]),
    policy=st.none() | policies,
    age=st.integers(0, 3000),
)
def test_every_range_draws_within_the_point_budget_from_a_tier_that_holds_it(
    since: datetime, span: int, fine: int, policy: tuple[int, int, int] | None, age: int
) -> None:
    until = since + timedelta(seconds=span)
    now = until + timedelta(days=age)
    retention = RetentionPolicy(*policy) if policy else None
    cut = retention.cutoffs(now) if retention else {}
    res = resolution(since, until, fine, oldest={"fine": cut["fine"], "hourly": cut["hourly"]} if cut else None)
    width = fine if res.tier == FINE else res.tier
    assert res.step % width == 0
    first = int(since.timestamp()) // res.step
    last = (int(until.timestamp()) - 1) // res.step
    assert last - first + 1 <= MAX_POINTS
    if retention is not None and res.tier != DAY:  # the daily tier is the one kept longest
        oldest = cut["fine" if res.tier == FINE else "hourly"]
        assert oldest is None or since >= oldest


def test_charts_over_every_range_stay_within_the_budget_and_total_the_fine_rows(db_engine: Engine) -> None:
    """A year and a half of sparse rows: every range's chart has at most MAX_POINTS points, and its
    GPU-seconds and energy total what the fine rows of the range hold, whichever tier drew it."""
    with Session(db_engine) as session:
        fleet = build_fleet(session)
        rng = random.Random(5)
        start = MONTH_END - timedelta(days=540)
        gpus = sorted(fleet.gpus)
        projects = sorted(fleet.projects)
        bucket = start
        while bucket < MONTH_END:
            for gpu in rng.sample(gpus, 2):
                project = rng.choice([0, *[p for p in projects if fleet.projects[p] == fleet.gpus[gpu][0]]])
                session.add(
                    UsageRollup(
                        gpu_id=gpu,
                        project_id=project,
                        bucket_start=bucket,
                        seconds=BUCKET,
                        seconds_util_known=BUCKET,
                        util_seconds=BUCKET * rng.uniform(0, 100),
                        energy_wh=rng.uniform(1, 30),
                        power_seconds_known=BUCKET,
                    )
                )
            bucket += timedelta(seconds=rng.choice([BUCKET, 3 * 3600, 7 * 3600]))
        for hub_id in set(fleet.hubs.values()):  # the hubs were accounted all along (their windows: one each)
            count = len([g for g in gpus if fleet.gpus[g][0] == hub_id])
            session.add(AccountedWindow(hub_id=hub_id, start=start, end=MONTH_END, kind="polled", gpu_count=count))
        session.flush()
        rebuild_tiers(session.connection())
        rows = [
            (r.bucket_start, r.project_id, r.seconds, r.energy_wh)
            for r in session.execute(select(UsageRollup)).scalars()
        ]
        for days in (0.5, 1, 2, 7, 30, 90, 365, 540):
            until = MONTH_END
            since = until - timedelta(days=days)
            for subject in ({}, {"project_id": projects[0]}, {"gpu_id": gpus[0]}):
                points = usage_series(
                    session, ReadScope.all(), since=since, until=until, bucket_seconds=BUCKET, **subject
                )
                assert 0 < len(points) <= MAX_POINTS, (days, subject)
                lo = since  # every tier counts the buckets starting in the range
                mine = [r for r in rows if lo <= r[0] < until and r[1] != 0 and subject.get("project_id", r[1]) == r[1]]
                if "gpu_id" not in subject:
                    assert sum(p.gpu_seconds_allocated for p in points) == pytest.approx(sum(r[2] for r in mine))
                    assert sum(p.energy_wh for p in points) == pytest.approx(
                        sum(r[3] for r in rows if lo <= r[0] < until and subject.get("project_id", r[1]) == r[1])
                    )
        # once retention trimmed the fine tier, a day before its oldest bucket is drawn hourly, not left empty
        apply_retention(session, MONTH_END + timedelta(days=3), RetentionPolicy(2, 600))
        since = MONTH_END - timedelta(days=5)
        points = usage_series(
            session, ReadScope.all(), since=since, until=since + timedelta(days=1), bucket_seconds=BUCKET
        )
        held = [r[2] for r in rows if since <= r[0] < since + timedelta(days=1) and r[1] != 0]
        assert len(points) <= 24 and sum(p.gpu_seconds_allocated for p in points) == pytest.approx(sum(held))
        session.rollback()


# --- migration and partitions ---------------------------------------------------------------------------


def test_migrating_existing_rollups_to_the_tiers_is_lossless(empty_db_engine: Engine) -> None:
    upgrade(empty_db_engine, "0009_ledger")
    with Session(empty_db_engine) as session:
        fleet = build_fleet(session)
        rng = random.Random(9)
        gpus = sorted(fleet.gpus)
        rows: dict[tuple, dict[str, Any]] = {}
        for n in range(400):
            key = (
                rng.choice(gpus),
                rng.choice([0, *fleet.projects]),
                MONTH_END - timedelta(seconds=BUCKET * rng.randint(0, 12 * 24 * 40)),
            )
            rows[key] = {
                "gpu_id": key[0],
                "slice_id": 0,
                "project_id": key[1],
                "bucket_start": key[2],
                "seconds": rng.uniform(1, BUCKET),
                "seconds_idle": 0.0,
                "seconds_util_known": 0.0,
                "util_seconds": 0.0,
                "util_max": rng.choice([None, rng.uniform(0, 100)]),
                "memory_mib_seconds": rng.uniform(0, 1e6),
                "memory_max_mib": None,
                "energy_wh": rng.uniform(0, 30),
                "power_seconds_known": float(n),
                "temperature_max_c": rng.choice([None, 70.0]),
            }
        session.execute(UsageRollup.__table__.insert(), list(rows.values()))  # type: ignore[attr-defined]
        windows = []
        at = MONTH_END - timedelta(days=41)
        for hub_id in sorted(set(fleet.hubs.values())):
            at = MONTH_END - timedelta(days=41)
            while at < MONTH_END:
                end = at + timedelta(seconds=rng.uniform(10, 20_000))
                session.add(AccountedWindow(hub_id=hub_id, start=at, end=end, kind="polled", gpu_count=3))
                windows.append((hub_id, at, end, 3, 0.0))
                at = end
        session.commit()
        ids_before = sorted(session.execute(text("SELECT id, bucket_start, seconds FROM usage_rollup")).all())
    upgrade(empty_db_engine)
    with Session(empty_db_engine) as session:
        assert sorted(session.execute(text("SELECT id, bucket_start, seconds FROM usage_rollup")).all()) == ids_before
        assert_same(expected_tiers(session), stored_tiers(session))
        periods = {
            (p.width, p.hub_id, p.bucket_start): [p.seconds, p.capacity_gpu_seconds, p.unaccounted_gpu_seconds]
            for p in session.execute(select(AccountedPeriod)).scalars()
        }
        for key, values in expected_periods(windows).items():
            assert periods[key] == pytest.approx(values, rel=1e-9, abs=1e-6)
        if empty_db_engine.dialect.name == "postgresql":
            assert is_partitioned(session.connection(), "usage_rollup")
            assert session.execute(text("SELECT count(*) FROM usage_rollup_default")).scalar() == 0


def test_partitions_are_made_ahead_catch_strays_and_are_dropped_by_retention(pg_engine: Engine) -> None:
    now = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    with Session(pg_engine) as session:
        fleet = build_fleet(session)
        connection = session.connection()
        ensure_partitions(connection, now)
        names = {p.name for p in partitions(connection, "usage_rollup")}
        for day in range(4):  # today and three days ahead
            assert partition_name("usage_rollup", "day", floor_to(now, DAY) + timedelta(days=day)) in names
        assert {p.name for p in partitions(connection, "usage_rollup_hourly")} >= {
            "usage_rollup_hourly_p202612",
            "usage_rollup_hourly_p202701",
            "usage_rollup_hourly_p202702",
        }
        # a row older than every partition lands in DEFAULT; the partition made for it takes it over
        old = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
        gpu = min(fleet.gpus)
        rows = {(gpu, 0, 0, old): [300.0, 0.0, 0.0, 0.0, None, 0.0, None, 1.0, 300.0, None]}
        write_rows(session, rows)
        assert session.execute(text("SELECT count(*) FROM usage_rollup_default")).scalar() == 1
        assert "usage_rollup_p20261120" in ensure_partitions(connection, now, since=old)
        assert session.execute(text("SELECT count(*) FROM usage_rollup_default")).scalar() == 0
        assert session.execute(text("SELECT count(*) FROM usage_rollup_p20261120")).scalar() == 1
        assert session.execute(text("SELECT count(*) FROM usage_rollup_hourly_p202611")).scalar() == 1
        # retention drops whole partitions: the fine tier's days, the hourly tier's months
        result = apply_retention(session, now, RetentionPolicy(7, 395))
        assert result.partitions_dropped >= 1
        left = {p.name for p in partitions(connection, "usage_rollup")}
        assert "usage_rollup_p20261120" not in left and min(left) >= "usage_rollup_p20261129"
        assert session.execute(select(func.count()).select_from(UsageRollupHourly)).scalar() == 1
        later = now + timedelta(days=400)
        ensure_partitions(connection, later)
        apply_retention(session, later, RetentionPolicy(7, 395))
        assert "usage_rollup_hourly_p202611" not in {p.name for p in partitions(connection, "usage_rollup_hourly")}
        assert session.execute(select(func.count()).select_from(UsageRollupDaily)).scalar() == 1  # daily: kept
        assert period_rows(1, old, old, 1, 0, "polled") == []
        session.rollback()


def test_every_page_the_polls_rewrite_leaves_room_for_in_place_updates(pg_engine: Engine) -> None:
    """Every table and partition holding the tiers' rows has the fill factor that lets a poll's
    additions be HOT updates: those of the migration and those made later (issue 16)."""
    fillfactor = f"fillfactor={ROLLUP_FILLFACTOR}"

    def options() -> dict[str, list[str]]:
        rows = session.execute(
            text(
                "SELECT c.relname, coalesce(c.reloptions, '{}') FROM pg_class c WHERE c.relkind = 'r' "
                "AND (c.relname IN ('usage_rollup_daily', 'cluster_rollup', 'accounted_period') "
                "OR c.relname LIKE 'usage_rollup_p%' OR c.relname LIKE 'usage_rollup_hourly_p%' "
                "OR c.relname LIKE 'usage_rollup%default')"
            )
        )
        return {name: list(opts) for name, opts in rows}

    with Session(pg_engine) as session:
        migrated = options()
        assert {"usage_rollup_daily", "usage_rollup_default", "usage_rollup_hourly_default"} <= set(migrated)
        ensure_partitions(session.connection(), datetime(2027, 3, 1, tzinfo=UTC))
        later = options()
        assert set(later) > set(migrated)  # partitions made after the migration are checked too
        assert {name: fillfactor in opts for name, opts in later.items()} == dict.fromkeys(later, True)
        session.rollback()


@settings(max_examples=200, deadline=None)
@given(fine=st.integers(2, 500), hourly=st.integers(2, 800), daily=st.integers(0, 900))
def test_retention_settings_keep_the_tiers_in_order(fine: int, hourly: int, daily: int) -> None:
    """A coarser tier never goes before a finer one, and the daily tier (what statements read) is kept or
    outlives last month: anything else is refused with a clear error."""
    from pydantic import ValidationError

    from domain.settings import SchedulerSettings

    values = {"retention_days": fine, "hourly_retention_days": hourly, "daily_retention_days": daily}
    valid = hourly >= fine and (daily == 0 or daily >= max(hourly, 62))
    if valid:
        SchedulerSettings(**values)
    else:
        with pytest.raises(ValidationError, match="RETENTION_DAYS must"):
            SchedulerSettings(**values)
