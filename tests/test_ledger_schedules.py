"""The ledger's invariants under random schedules, with the simulated source on SQLite (docs/ledger.md).

Schedules mix jittered polls, overruns and catch-up polls, failed polls and outages, stopped workers,
restarts, two replicas with skewed clocks sharing the database, and demo restarts, from just before
a month boundary. Whatever happens:

* the windows of the hub never overlap and leave no hole, and the cursor is the last one's end;
* per GPU and bucket, project seconds + unallocated seconds = the seconds of the bucket covered by
  windows the GPU was reported in;
* projects + unallocated + unaccounted = capacity, in the database and in the worker's counters;
* once the hub's GPUs are known, every window counts all of them: each GPU-second between the first
  window and the cursor is in the ledger exactly once.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from ai_telemetry import demo
from domain.ledger import BACKFILLED, POLLED, bucket_pieces
from domain.models import AccountedWindow, Gpu, Hub, UsageRollup
from domain.settings import SchedulerSettings, Settings
from simulator import load_fleet
from tests.conftest import settings_for, sqlite_copy, sqlite_template
from worker.metrics import WorkerMetrics
from worker.polling import SourcePoller
from worker.sources import Snapshot, SourceError
from worker.sources.simulated import SimulatedSource

FLEET = Path(__file__).parent / "data" / "ledger_fleet.toml"
GPUS = 4
BUCKET = 300
START = datetime(2026, 11, 30, 23, 40, tzinfo=UTC)  # the schedules cross into December
SCHEDULER = {
    "poll_interval_seconds": 30,
    "rollup_bucket_seconds": BUCKET,
    "backfill_horizon_seconds": 1800,
    "backfill_chunk_seconds": 600,
    "missing_after_seconds": 86_400,  # a silent GPU stays in the capacity (as unaccounted) all along
}


COUNTED = (
    "ai_telemetry_ledger_allocated_gpu_seconds",
    "ai_telemetry_ledger_unallocated_gpu_seconds",
    "ai_telemetry_ledger_unaccounted_gpu_seconds",
)


class FlakySource(SimulatedSource):
    """The simulated fleet, failing on the calls a pattern says (cycled): outages and failed chunks;
    and leaving out a GPU on the calls another pattern says (an exporter that missed a scrape)."""

    def __init__(self, pattern: list[bool], silences: list[bool] | None = None) -> None:
        super().__init__("lab-hub", load_fleet(FLEET))
        self.failures = itertools.cycle(pattern)
        self.silences = itertools.cycle(silences or [False])

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        if next(self.failures):
            raise SourceError("simulated outage")
        snapshot = super().poll(now, window_seconds)
        if next(self.silences):
            return dataclasses.replace(snapshot, gpus=snapshot.gpus[1:])
        return snapshot


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template(tmp_path_factory.mktemp("ledger") / "ledger.db", lambda _: None)


@pytest.fixture(scope="module")
def app_settings(template: Path) -> Settings:
    return settings_for(f"sqlite:///{template}", demo=True, scheduler=SCHEDULER)


@contextmanager
def fresh(template: Path) -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as directory:
        engine = sqlite_copy(template, Path(directory))
        try:
            yield engine
        finally:
            engine.dispose()


events = st.lists(
    st.tuples(
        st.sampled_from(["poll", "poll", "poll", "poll", "stop", "restart", "demo"]),
        st.integers(0, 1),  # which replica
        st.floats(0, 120),  # seconds since the previous event (jitter, overruns, catch-up polls at ~0)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    schedule=events,
    failures=st.lists(st.booleans(), min_size=1, max_size=6).map(lambda p: p if not all(p) else [*p, False]),
    silences=st.lists(st.booleans(), min_size=1, max_size=4),
    skew=st.floats(-45, 45),
)
def test_ledger_invariants_under_random_schedules(
    template: Path,
    app_settings: Settings,
    schedule: list[tuple[str, int, float]],
    failures: list[bool],
    silences: list[bool],
    skew: float,
) -> None:
    scheduler = SchedulerSettings(**SCHEDULER)
    with fresh(template) as engine:
        metrics = WorkerMetrics()
        source = FlakySource(failures, silences)
        offsets = (0.0, skew)  # the second replica's clock is off

        def poller(replica: int, engine: Engine = engine, source: FlakySource = source) -> SourcePoller:
            own = scheduler.model_copy(update={"replica": f"replica-{replica}"})
            return SourcePoller(source, engine, own, metrics=metrics)

        pollers = [poller(0), poller(1)]
        t = START
        for kind, replica, seconds in schedule:
            now = t + timedelta(seconds=offsets[replica])
            if kind == "poll":
                t += timedelta(seconds=seconds)
                pollers[replica].poll_once(t + timedelta(seconds=offsets[replica]), force=True)
            elif kind == "stop":  # the worker is stopped (or every replica is): time passes unpolled
                t += timedelta(seconds=seconds * 40)
            elif kind == "restart":
                pollers[replica] = poller(replica)
            else:  # the demo restarted on its database
                demo.backfill(app_settings, engine, [source], seconds / 120, metrics=metrics, now=now)
        check_ledger(engine, metrics)


def check_ledger(engine: Engine, metrics: WorkerMetrics, *, counters: bool = True) -> None:
    with Session(engine) as session:
        hub = session.exec(select(Hub)).first()
        if hub is None:
            return
        windows = list(session.exec(select(AccountedWindow).order_by(AccountedWindow.start)))
        rollups = session.exec(
            select(UsageRollup.gpu_id, UsageRollup.bucket_start, func.sum(UsageRollup.seconds)).group_by(
                UsageRollup.gpu_id, UsageRollup.bucket_start
            )
        ).all()
        held = session.exec(select(func.sum(UsageRollup.seconds))).one() or 0.0
        gpus = len(session.exec(select(Gpu.id)).all())
    if not windows:
        assert hub.accounted_until is None
        return
    # the windows tile time, the cursor is the last end
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start, (before, after)
    assert hub.accounted_until == windows[-1].end
    # per GPU and bucket: what the rollups hold = the bucket's seconds covered by windows that read
    # the GPU; a silent GPU's seconds are the window's unaccounted ones
    covered: dict[datetime, float] = defaultdict(float)
    reported: dict[datetime, float] = defaultdict(float)
    for window in windows:
        if window.kind in (POLLED, BACKFILLED):
            length = (window.end - window.start).total_seconds()
            read = window.gpu_count - window.gpu_seconds_unaccounted / length
            assert read == pytest.approx(round(read)) and round(read) in (GPUS - 1, GPUS)
            for bucket, seconds in bucket_pieces(window.start, window.end, BUCKET):
                covered[bucket] += seconds
                reported[bucket] += seconds * read
    assert gpus in (GPUS - 1, GPUS)  # the GPU the source leaves out may never have been reported
    per_bucket = {(gpu, bucket): seconds for gpu, bucket, seconds in rollups}
    for bucket, seconds in covered.items():
        for gpu in range(1, gpus + 1):
            assert per_bucket.get((gpu, bucket), 0.0) <= seconds + 1e-6, (gpu, bucket)
        in_bucket = sum(v for (_, b), v in per_bucket.items() if b == bucket)
        assert in_bucket == pytest.approx(reported[bucket], abs=1e-6), bucket
    assert {b for _, b in per_bucket} <= set(covered)
    # reconciliation: projects + unallocated + unaccounted = capacity
    capacity = sum(w.gpu_count * (w.end - w.start).total_seconds() for w in windows)
    unaccounted = sum(w.gpu_seconds_unaccounted for w in windows)
    assert held + unaccounted == pytest.approx(capacity, abs=1e-6)

    # once every GPU is known, every window counts all of them: no GPU-second dropped or doubled
    def read_all(window: AccountedWindow) -> bool:
        return window.kind in (POLLED, BACKFILLED) and window.gpu_seconds_unaccounted == 0 and window.gpu_count == GPUS

    assert all(w.gpu_count == GPUS for w in itertools.dropwhile(lambda w: not read_all(w), windows))
    if not counters:
        return
    # the counters saw every window exactly once
    sample = metrics.registry.get_sample_value
    assert sample("ai_telemetry_ledger_capacity_gpu_seconds_total", {"hub": "lab-hub"}) == pytest.approx(capacity)
    counted = sum(
        s.value
        for family in metrics.registry.collect()
        if family.name in COUNTED
        for s in family.samples
        if s.name.endswith("_total")
    )
    assert counted == pytest.approx(capacity, abs=1e-6)
    assert sample("ai_telemetry_ledger_accounted_until_timestamp_seconds", {"hub": "lab-hub"}) == pytest.approx(
        windows[-1].end.timestamp()
    )
