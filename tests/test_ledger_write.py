"""The ledger's write side with the poller: bad input counted once, silent GPUs, month boundaries,
MIG attribution, and two replicas racing on PostgreSQL (docs/ledger.md)."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from ai_telemetry import demo
from domain.database import create_db_engine, upgrade
from domain.models import AccountedWindow, Gpu, GpuSlice, Hub, ResearchProject, UsageRollup
from domain.settings import SchedulerSettings
from simulator import load_fleet
from tests.conftest import settings_for
from tests.test_inventory import reading
from tests.test_ledger_schedules import BUCKET, FLEET, check_ledger
from tests.test_polling import StandInSource
from worker.metrics import WorkerMetrics
from worker.polling import SourcePoller
from worker.sources import PodRef, SliceReading
from worker.sources.simulated import SimulatedSource

SCHEDULER = SchedulerSettings(poll_interval_seconds=30, rollup_bucket_seconds=BUCKET)
MONTH = datetime(2026, 12, 1, tzinfo=UTC)
LEDGER_DOC = Path(__file__).parent.parent / "docs" / "ledger.md"


def windows_of(engine: Engine, hub: str) -> list[AccountedWindow]:
    with Session(engine) as session:
        return list(
            session.exec(select(AccountedWindow).join(Hub).where(Hub.name == hub).order_by(col(AccountedWindow.start)))
        )


def seconds_by_gpu(engine: Engine) -> dict[str, float]:
    with Session(engine) as session:
        rows = session.exec(
            select(Gpu.uuid, func.sum(UsageRollup.seconds)).join(Gpu, col(Gpu.id) == col(UsageRollup.gpu_id))
            .group_by(Gpu.uuid)
        )  # fmt: skip
        return dict(rows.all())


def test_a_uuid_reported_by_two_clusters_is_counted_once(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    twice = (reading(0, cluster="c1"), dataclasses.replace(reading(0, cluster="c2"), uuid="GPU-c1-00000"))
    poller = SourcePoller(StandInSource("hub-a", twice), sqlite_engine, SCHEDULER)

    with caplog.at_level(logging.WARNING):
        assert poller.poll_once(MONTH).outcome == "success"

    assert seconds_by_gpu(sqlite_engine) == {"GPU-c1-00000": 30.0}
    (window,) = windows_of(sqlite_engine, "hub-a")
    assert (window.gpu_count, window.gpu_seconds_unaccounted) == (1, 0.0)
    assert "GPU-c1-00000 reported by clusters c1 and c2 in one poll of hub hub-a; counted once, for c1" in caplog.text


def test_a_uuid_reported_by_two_hubs_is_counted_by_one(sqlite_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    shared = reading(0, cluster="c1")
    first = SourcePoller(StandInSource("hub-a", (shared, reading(1))), sqlite_engine, SCHEDULER)
    second = SourcePoller(
        StandInSource("hub-b", (dataclasses.replace(shared, cluster="b1", node="b1-node"),)), sqlite_engine, SCHEDULER
    )

    with caplog.at_level(logging.WARNING):
        for step in range(4):  # the hubs take turns; the inventory moves the GPU's row each time
            at = MONTH + timedelta(seconds=30 * step)
            assert first.poll_once(at).outcome == "success"
            assert second.poll_once(at + timedelta(seconds=5)).outcome == "success"

    by_gpu = seconds_by_gpu(sqlite_engine)
    assert by_gpu["GPU-c1-00000"] == pytest.approx(4 * 30.0)  # hub-a's four windows, never hub-b's too
    assert by_gpu["GPU-c1-00001"] == pytest.approx(4 * 30.0)
    assert all(w.gpu_count == 0 for w in windows_of(sqlite_engine, "hub-b"))
    assert "GPU GPU-c1-00000 is reported by hubs hub-a and hub-b; its seconds are counted once, by hub-a" in caplog.text


def test_silent_gpus_are_unaccounted_not_dropped(sqlite_engine: Engine) -> None:
    source = StandInSource("hub-a", tuple(reading(n) for n in range(3)))
    poller = SourcePoller(source, sqlite_engine, SCHEDULER)
    poller.poll_once(MONTH)
    source.gpus = source.gpus[:2]  # GPU 2 stops reporting, still known to the inventory

    poller.poll_once(MONTH + timedelta(seconds=30))

    _, second = windows_of(sqlite_engine, "hub-a")
    assert (second.gpu_count, second.gpu_seconds_unaccounted) == (3, 30.0)
    assert seconds_by_gpu(sqlite_engine)["GPU-c1-00002"] == 30.0  # the first window only


def test_a_window_crossing_a_month_boundary_is_split_at_it(sqlite_engine: Engine) -> None:
    poller = SourcePoller(StandInSource("hub-a", (reading(0, workload=PodRef("team-a", "job")),)), sqlite_engine,
                          SCHEDULER)  # fmt: skip
    poller.poll_once(MONTH - timedelta(seconds=10))
    poller.poll_once(MONTH + timedelta(seconds=20))

    with Session(sqlite_engine) as session:
        rows = session.exec(
            select(UsageRollup.bucket_start, UsageRollup.seconds).order_by(col(UsageRollup.bucket_start))
        ).all()
    november = [s for b, s in rows if b < MONTH]
    december = [s for b, s in rows if b >= MONTH]
    assert (sum(november), sum(december)) == (pytest.approx(30.0 + 10.0), pytest.approx(20.0))


def test_mig_slices_carry_their_share_and_the_rest_is_unallocated(sqlite_engine: Engine) -> None:
    mig = reading(
        0,
        power_watts=350.0,
        utilization=None,
        slices=(
            SliceReading(1, "1g.10gb", 1.0, 3.0, 100.0, 9856.0, PodRef("team-b", "nb")),
            SliceReading(2, "3g.40gb", None, None, 20000.0, 40192.0, PodRef("team-a", "train")),
        ),
    )
    SourcePoller(StandInSource("hub-a", (mig,)), sqlite_engine, SCHEDULER).poll_once(MONTH)

    with Session(sqlite_engine) as session:
        slices = {s.id: s.mig_instance_id for s in session.exec(select(GpuSlice))}
        projects = {p.id: p.namespace for p in session.exec(select(ResearchProject))}
        rows = {(slices.get(r.slice_id), projects.get(r.project_id)): r for r in session.exec(select(UsageRollup))}
    small, large, rest = rows[(1, "team-b")], rows[(2, "team-a")], rows[(None, None)]
    assert (small.seconds, small.seconds_idle, small.seconds_util_known) == pytest.approx((30 / 7, 30 / 7, 30 / 7))
    assert (large.seconds, large.seconds_util_known, large.util_max) == (pytest.approx(90 / 7), 0.0, None)
    assert rest.seconds == pytest.approx(30 * 3 / 7) and rest.seconds_util_known == 0
    assert sum(r.energy_wh for r in rows.values()) == pytest.approx(350 * 30 / 3600)
    assert large.temperature_max_c == 45.0  # a researcher's own rows carry the GPU's temperature


@pytest.mark.postgres
def test_two_replicas_racing_count_every_second_once(pg_engine: Engine) -> None:
    """Both replicas poll the same moments at once, past the advisory lock: the cursor's compare-and-set
    lets one account each window; the other rolls back (``locked``) or finds nothing left to account."""
    source = SimulatedSource("lab-hub", load_fleet(FLEET))
    metrics = WorkerMetrics()
    replicas = [
        SourcePoller(source, pg_engine, SCHEDULER.model_copy(update={"replica": f"r{i}"}), metrics=metrics)
        for i in range(2)
    ]
    with Session(pg_engine) as session:  # the hub exists (creating it is the advisory lock's to serialise)
        session.add(Hub(name="lab-hub", kind="simulated"))
        session.commit()
    outcomes: Counter[str] = Counter()
    start = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)
    for round_ in range(12):
        barrier = threading.Barrier(2)
        now = start + timedelta(seconds=45 * round_)

        def poll(poller: SourcePoller, skew: float, now: datetime = now, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            outcomes[poller._poll(now + timedelta(seconds=skew)).outcome] += 1  # past the advisory lock

        threads = [threading.Thread(target=poll, args=(p, skew)) for p, skew in zip(replicas, (0.0, 2.0), strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert set(outcomes) <= {"success", "locked"}, outcomes
    check_ledger(pg_engine, metrics)


def test_demo_fills_its_history_once_and_a_restart_only_the_gap(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'demo.db'}", demo=True, scheduler={"rollup_bucket_seconds": BUCKET})
    engine = create_db_engine(settings.database)
    try:
        upgrade(engine)
        source = SimulatedSource("lab-hub", load_fleet(FLEET))
        first = datetime(2026, 11, 30, 23, 30, 7, tzinfo=UTC)
        demo.backfill(settings, engine, [source], 1.0, now=first)
        windows = windows_of(engine, "lab-hub")
        assert (windows[0].start, windows[-1].end) == (first - timedelta(hours=1), first)

        restarted = first + timedelta(minutes=42, seconds=13)  # stopped for a while, then started again
        demo.backfill(settings, engine, [source], 1.0, now=restarted)
        demo.backfill(settings, engine, [source], 1.0, now=restarted)  # and once more at the same moment

        windows = windows_of(engine, "lab-hub")
        span = (restarted - windows[0].start).total_seconds()
        assert windows[-1].end == restarted and span == 3600 + 42 * 60 + 13
        assert all(seconds == pytest.approx(span) for seconds in seconds_by_gpu(engine).values())
        check_ledger(engine, WorkerMetrics(), counters=False)
    finally:
        engine.dispose()


def test_the_counters_docs_ledger_names_are_on_metrics(sqlite_engine: Engine) -> None:
    documented = re.findall(r"^\| `(ai_telemetry_ledger_\w+)`", LEDGER_DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(documented) == 8
    metrics = WorkerMetrics()
    job = PodRef("team-a", "job")
    gpus = (reading(0, workload=job), reading(1, utilization=1.0), reading(2, workload=job, utilization=1.0),
            reading(3, workload=job, utilization=None))  # fmt: skip
    source = StandInSource("hub-a", gpus)
    SourcePoller(source, sqlite_engine, SCHEDULER, metrics=metrics).poll_once(MONTH)

    exposed = {line.split("{")[0].split(" ")[0] for line in metrics.render().decode().splitlines()}
    assert set(documented) <= exposed
    sample = metrics.registry.get_sample_value
    labels = {"hub": "hub-a", "cluster": "c1", "model": "NVIDIA A100-SXM4-80GB", "profile": "whole"}
    held = labels | {"project": "team-a"}
    assert sample("ai_telemetry_ledger_allocated_gpu_seconds_total", held) == 3 * 30.0
    assert sample("ai_telemetry_ledger_idle_gpu_seconds_total", held) == 30.0
    assert sample("ai_telemetry_ledger_unknown_utilization_gpu_seconds_total", held) == 30.0
    assert sample("ai_telemetry_ledger_unallocated_gpu_seconds_total", labels) == 30.0
    assert sample("ai_telemetry_ledger_energy_joules_total", labels | {"project": ""}) == 200.0 * 30
    assert sample("ai_telemetry_ledger_capacity_gpu_seconds_total", {"hub": "hub-a"}) == 4 * 30.0
