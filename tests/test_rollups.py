"""Usage rollups: accumulation within a bucket, rolling to the next, MIG attribution, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from domain.database import session_scope
from domain.models import Allocation, GpuSlice, ResearchProject, UsageRollup
from tests.test_inventory import MISSING_AFTER, T0, allocations, count, hub_row, reading, snapshot, statements
from worker.inventory import apply_snapshot
from worker.rollups import apply_retention, bucket_start, record_usage
from worker.sources.snapshot import GpuReading, PodRef, SliceReading, Snapshot

BUCKET = 300
IDLE_BELOW = 5.0


def poll(engine: Engine, snap: Snapshot) -> int:
    """Inventory then rollups in one transaction, as the poller does."""
    with session_scope(engine) as session:
        apply_snapshot(session, hub_row(session, snap.source), snap, missing_after=MISSING_AFTER)
        return record_usage(session, snap, bucket_seconds=BUCKET, idle_threshold_percent=IDLE_BELOW)


def rollups(engine: Engine) -> list[UsageRollup]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(UsageRollup).order_by(
                    col(UsageRollup.bucket_start), col(UsageRollup.gpu_id), col(UsageRollup.slice_id)
                )
            )
        )


def used(n: int, utilization: float, utilization_max: float, power: float, memory: float) -> GpuReading:
    return reading(
        n,
        workload=PodRef("team-a", "job"),
        utilization=utilization,
        utilization_max=utilization_max,
        power_watts=power,
        memory_used_mib=memory,
    )


def test_bucket_start_is_epoch_aligned() -> None:
    assert bucket_start(datetime(2025, 3, 3, 12, 7, 59, tzinfo=UTC), 300) == datetime(2025, 3, 3, 12, 5, tzinfo=UTC)


def test_two_polls_accumulate_in_one_bucket(db_engine: Engine) -> None:
    assert poll(db_engine, snapshot((used(0, 2.0, 10.0, 100.0, 1000.0),))) == 1
    assert poll(db_engine, snapshot((used(0, 40.0, 60.0, 300.0, 3000.0),), at=T0 + timedelta(seconds=30))) == 1

    (row,) = rollups(db_engine)
    with Session(db_engine) as session:
        project = session.exec(select(ResearchProject)).one()
    assert (row.bucket_start, row.slice_id, row.project_id, row.seconds) == (T0, 0, project.id, 60.0)
    assert row.util_seconds / row.seconds_util_known == pytest.approx(21.0)
    assert row.util_max == 60.0
    assert (row.memory_mib_seconds / row.seconds, row.memory_max_mib) == (2000.0, 3000.0)
    assert row.energy_wh * 3600 / row.power_seconds_known == pytest.approx(200.0)
    assert row.energy_wh == pytest.approx((100 + 300) * 30 / 3600)
    assert row.seconds_idle == 30.0  # only the first poll was below the threshold


def test_unallocated_gpu_counts_no_allocated_or_idle_seconds(db_engine: Engine) -> None:
    poll(db_engine, snapshot((reading(0, utilization=0.0),)))

    (row,) = rollups(db_engine)
    assert (row.project_id, row.seconds) == (0, 30.0)  # unallocated seconds
    assert row.energy_wh == pytest.approx(200 * 30 / 3600)


def test_next_bucket_gets_new_rows(db_engine: Engine) -> None:
    poll(db_engine, snapshot((used(0, 10.0, 10.0, 100.0, 1.0),)))
    poll(db_engine, snapshot((used(0, 90.0, 90.0, 100.0, 1.0),), at=T0 + timedelta(seconds=BUCKET)))

    first, second = rollups(db_engine)
    assert (first.bucket_start, first.seconds, first.util_seconds) == (T0, 30.0, 300.0)
    assert (second.bucket_start, second.seconds, second.util_seconds) == (T0 + timedelta(seconds=BUCKET), 30.0, 2700.0)


def test_mig_slices_are_attributed_their_fraction(db_engine: Engine) -> None:
    mig = reading(
        0,
        power_watts=350.0,
        utilization=None,
        slices=(
            SliceReading(1, "1g.10gb", 1.0, 3.0, 100.0, 9856.0, PodRef("team-b", "nb")),
            SliceReading(2, "3g.40gb", 80.0, 95.0, 20000.0, 40192.0, PodRef("team-a", "train")),
        ),
    )
    assert poll(db_engine, snapshot((mig,))) == 3

    with Session(db_engine) as session:
        slice_ids = {s.mig_instance_id: s.id or 0 for s in session.exec(select(GpuSlice))}
    rows = {r.slice_id: r for r in rollups(db_engine)}
    small, large, rest = rows[slice_ids[1]], rows[slice_ids[2]], rows[0]
    assert small.seconds == pytest.approx(30 / 7)
    assert small.seconds_idle == pytest.approx(30 / 7)
    assert (large.seconds, large.seconds_idle) == (pytest.approx(30 * 3 / 7), 0.0)
    assert large.util_max == 95.0
    assert rest.project_id == 0 and rest.seconds == pytest.approx(30 * 3 / 7)
    total_energy = sum(r.energy_wh for r in rows.values())
    assert total_energy == pytest.approx(350 * 30 / 3600)
    assert large.energy_wh == pytest.approx(350 * 3 / 7 * 30 / 3600)


def test_record_usage_reads_the_bucket_once(db_engine: Engine) -> None:
    gpus = tuple(used(n, 50.0, 50.0, 200.0, 1.0) for n in range(40))
    poll(db_engine, snapshot(gpus))
    later = snapshot(gpus, at=T0 + timedelta(seconds=30))
    with session_scope(db_engine) as session:
        apply_snapshot(session, hub_row(session), later, missing_after=MISSING_AFTER)
        with statements(db_engine) as sent:
            written = record_usage(session, later, bucket_seconds=BUCKET, idle_threshold_percent=IDLE_BELOW)
    assert written == 40
    assert sum(s.startswith("SELECT") for s in sent) == 4  # GPU, slice and project ids, then the bucket


def test_retention_deletes_only_old_rows(db_engine: Engine) -> None:
    old = T0 - timedelta(days=40)
    poll(db_engine, snapshot((used(0, 50.0, 50.0, 1.0, 1.0),), at=old))
    poll(db_engine, snapshot((reading(0),), at=old + timedelta(minutes=1)))  # the pod leaves: closed long ago
    poll(db_engine, snapshot((used(0, 50.0, 50.0, 1.0, 1.0),), at=T0))  # a new pod, still running
    assert count(db_engine, UsageRollup) == 3
    assert len(allocations(db_engine)) == 2

    with session_scope(db_engine) as session:
        deleted = apply_retention(session, T0, retention_days=30)

    assert deleted == 2 + 1
    assert [r.bucket_start for r in rollups(db_engine)] == [T0]
    (kept,) = allocations(db_engine)
    assert kept.until is None and kept.since == T0
    with session_scope(db_engine) as session:
        assert apply_retention(session, T0, retention_days=30) == 0
    assert count(db_engine, Allocation) == 1
