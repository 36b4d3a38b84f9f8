"""Pollers, the scheduler and the source registry: failure isolation, backoff, recovery, clean start/stop."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.database import create_db_engine
from domain.models import Cluster, Gpu, Hub, UsageRollup, Workload
from domain.settings import DatabaseSettings, SchedulerSettings, Settings, SettingsError, SourceSettings
from domain.statuses import ClusterStatus
from domain.telemetry.readings import PodRef
from tests.services import free_port
from tests.test_inventory import T0, count, fleet, reading, snapshot
from worker import polling
from worker.metrics import WorkerMetrics
from worker.polling import SourcePoller, backoff_seconds
from worker.scheduler import create_scheduler
from worker.sources import GpuReading, Snapshot, SourceError

INTERVAL = 30.0
SCHEDULER = SchedulerSettings(poll_interval_seconds=INTERVAL)


class StandInSource:
    """A stand-in for a real source: answers with a fixed fleet, or fails the way it is told to."""

    kind = "simulated"

    def __init__(self, name: str, gpus: Sequence[GpuReading] = (), *, cluster: str | None = None) -> None:
        self.name = name
        self.url: str | None = f"http://{name}.example:9090"
        self.cluster = cluster or f"{name}-cluster"
        self.gpus = tuple(gpus) or fleet(4, cluster=self.cluster)
        self.failure: Exception | None = None
        self.answer: Callable[[], object] | None = None
        self.calls = 0
        self.poll_interval_seconds: float | None = None

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        if self.answer is not None:
            return self.answer()  # type: ignore[return-value]
        return snapshot(self.gpus, at=now, source=self.name, window=window_seconds)


def clusters_of(engine: Engine, hub: str) -> list[Cluster]:
    with Session(engine) as session:
        return list(session.exec(select(Cluster).join(Hub).where(Hub.name == hub)))


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_backoff_doubles_from_the_interval_and_is_capped() -> None:
    assert [backoff_seconds(30, n) for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]
    assert backoff_seconds(120, 4) == 600  # ten minutes at most ...
    assert backoff_seconds(900, 3) == 900  # ... unless one interval is longer


def test_successful_poll_writes_inventory_and_rollups(db_engine: Engine) -> None:
    metrics = WorkerMetrics()
    poller = SourcePoller(StandInSource("a"), db_engine, SCHEDULER, metrics=metrics)

    result = poller.poll_once(T0)

    assert result.outcome == "success" and result.changes is not None
    assert result.changes.inserted > 0 and result.rollup_rows == 4
    with Session(db_engine) as session:
        hub = session.exec(select(Hub)).one()
    assert (hub.name, hub.kind, hub.url) == ("a", "simulated", "http://a.example:9090")
    assert count(db_engine, Gpu) == 4 and count(db_engine, UsageRollup) == 4
    state = poller.state
    assert (state.consecutive_failures, state.last_success_at, state.next_attempt_at, state.polls) == (0, T0, None, 1)
    assert state.last_rows_written == result.changes.rows_written + 4
    assert sample(metrics, "ai_telemetry_source_polls_total", source="a", outcome="success") == 1
    assert sample(metrics, "ai_telemetry_source_up", source="a") == 1
    assert sample(metrics, "ai_telemetry_source_last_success_timestamp_seconds", source="a") == T0.timestamp()
    assert sample(metrics, "ai_telemetry_rows_written_total", source="a", kind="rollup") == 4
    assert sample(metrics, "ai_telemetry_source_poll_duration_seconds_count", source="a") == 1
    assert sample(metrics, "ai_telemetry_source_cluster_status", source="a", cluster="a-cluster", status="ok") == 1

    assert poller.poll_once(at(INTERVAL)).changes.rows_written == 0  # type: ignore[union-attr]


def test_failing_source_goes_stale_backs_off_and_recovers(db_engine: Engine) -> None:
    metrics = WorkerMetrics()
    broken, healthy = StandInSource("broken"), StandInSource("healthy")
    pollers = [SourcePoller(s, db_engine, SCHEDULER, metrics=metrics) for s in (broken, healthy)]

    def tick(seconds: float) -> list[str]:
        return [p.poll_once(at(seconds)).outcome for p in pollers]

    assert tick(0) == ["success", "success"]
    broken.failure = SourceError("HTTP 503 from Prometheus")
    outcomes = {seconds: tick(seconds)[0] for seconds in range(30, 271, 30)}

    # fails at 30 (retry after 30 s), 60 (after 60 s), 120 (after 120 s), then waits until 240
    assert outcomes == {
        30: "source_error",
        60: "source_error",
        90: "skipped",
        120: "source_error",
        150: "skipped",
        180: "skipped",
        210: "skipped",
        240: "source_error",
        270: "skipped",
    }
    assert broken.calls == 1 + 4
    assert pollers[0].state.consecutive_failures == 4
    assert pollers[0].state.next_attempt_at == at(240 + 240)
    (cluster,) = clusters_of(db_engine, "broken")
    assert (cluster.status, cluster.status_reason) == (ClusterStatus.UNREACHABLE, "HTTP 503 from Prometheus")
    assert (cluster.last_poll_at, cluster.last_success_at) == (at(240), T0)
    assert count(db_engine, Gpu) == 8  # nothing deleted
    assert [c.status for c in clusters_of(db_engine, "healthy")] == [ClusterStatus.OK]
    assert healthy.calls == 1 + 9
    assert sample(metrics, "ai_telemetry_source_polls_total", source="broken", outcome="source_error") == 4
    assert sample(metrics, "ai_telemetry_source_polls_total", source="broken", outcome="skipped") == 5
    assert sample(metrics, "ai_telemetry_source_up", source="broken") == 0
    assert sample(metrics, "ai_telemetry_source_consecutive_failures", source="broken") == 4
    assert (
        sample(
            metrics,
            "ai_telemetry_source_cluster_status",
            source="broken",
            cluster="broken-cluster",
            status="unreachable",
        )
        == 1
    )

    broken.failure = None
    assert pollers[0].poll_once(at(480)).outcome == "success"
    (cluster,) = clusters_of(db_engine, "broken")
    assert (cluster.status, cluster.status_reason, cluster.last_success_at) == (ClusterStatus.OK, None, at(480))
    assert (pollers[0].state.consecutive_failures, pollers[0].state.next_attempt_at) == (0, None)
    assert sample(metrics, "ai_telemetry_source_up", source="broken") == 1


def test_first_failure_is_stale_until_the_third(db_engine: Engine) -> None:
    source = StandInSource("a")
    poller = SourcePoller(source, db_engine, SCHEDULER)
    poller.poll_once(T0)
    source.failure = SourceError("timeout")

    poller.poll_once(at(30))

    assert [c.status for c in clusters_of(db_engine, "a")] == [ClusterStatus.STALE]


@pytest.mark.parametrize(
    ("failure", "answer", "reason"),
    [
        pytest.param(TimeoutError("read timed out"), None, "TimeoutError: read timed out", id="exception"),
        pytest.param(None, lambda: "<html>garbage</html>", "source returned str, not a Snapshot", id="garbage"),
    ],
)
def test_any_exception_from_the_source_is_a_failed_poll(
    sqlite_engine: Engine, failure: Exception | None, answer: Callable[[], object] | None, reason: str
) -> None:
    source = StandInSource("a")
    poller = SourcePoller(source, sqlite_engine, SCHEDULER)
    poller.poll_once(T0)
    source.failure, source.answer = failure, answer

    result = poller.poll_once(at(30))

    assert (result.outcome, result.error) == ("source_error", reason)
    assert clusters_of(sqlite_engine, "a")[0].status_reason == reason


def test_database_errors_are_counted_never_raised() -> None:
    engine = create_db_engine(DatabaseSettings(url=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"))
    metrics = WorkerMetrics()
    source = StandInSource("a")
    poller = SourcePoller(source, engine, SCHEDULER, metrics=metrics)
    try:
        assert poller.poll_once(T0).outcome == "db_error"
        assert (poller.state.last_error or "").startswith("database: OperationalError")
        source.failure = SourceError("down too")
        assert poller.poll_once(at(30)).outcome == "source_error"  # recording the failure fails quietly
    finally:
        engine.dispose()
    assert sample(metrics, "ai_telemetry_source_polls_total", source="a", outcome="db_error") == 1


def test_manual_polls_never_overlap(sqlite_engine: Engine) -> None:
    active, most = 0, 0
    guard = threading.Lock()

    class SlowStandIn(StandInSource):
        """A stand-in source that takes its time, to catch overlapping polls."""

        def poll(self, now: datetime, window_seconds: float) -> Snapshot:
            nonlocal active, most
            with guard:
                active += 1
                most = max(most, active)
            time.sleep(0.02)
            with guard:
                active -= 1
            return super().poll(now, window_seconds)

    poller = SourcePoller(SlowStandIn("a"), sqlite_engine, SCHEDULER)
    threads = [threading.Thread(target=poller.poll_once, kwargs={"force": True}) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert most == 1
    assert poller.state.polls == 4 and poller.state.failures == 0


# --- scheduler ---------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def test_scheduler_polls_at_once_and_stops_cleanly(db_engine: Engine, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(db_engine, scheduler={"poll_interval_seconds": 0.2})
    good, bad = StandInSource("good"), StandInSource("bad")
    bad.failure = SourceError("connection refused")
    scheduler = create_scheduler(settings, db_engine, [good, bad])
    scheduler.start()
    try:
        assert scheduler.running
        wait_for(lambda: all(p.state.polls >= 1 for p in scheduler.pollers.values()))
        jobs = {job.id: job for job in scheduler.jobs}
        assert set(jobs) == {"poll:good", "poll:bad", "retention"}
        assert (jobs["poll:good"].max_instances, jobs["poll:good"].coalesce) == (1, True)
    finally:
        scheduler.shutdown(wait=True)
    assert not scheduler.running
    scheduler.shutdown()  # twice is harmless
    assert [c.status for c in clusters_of(db_engine, "good")] == [ClusterStatus.OK]
    assert scheduler.pollers["bad"].state.last_error == "connection refused"
    polls_after_stop = good.calls
    time.sleep(0.3)
    assert good.calls == polls_after_stop


class SlowFirstPoll(StandInSource):
    """Its first poll lasts until released; the start of every poll is noted."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.starts: list[float] = []

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        self.starts.append(time.monotonic())
        if len(self.starts) == 1:
            self.release.wait(timeout=30)
        return super().poll(now, window_seconds)


def test_a_poll_longer_than_its_interval_is_followed_at_once_by_the_next(
    sqlite_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """APScheduler drops the tick a running poll overran; the worker polls again as soon as the slow poll ends.

    The interval is long so the check is about order, not speed: without the catch-up, the second poll
    would wait for the next tick, a whole interval after the skipped one.
    """
    interval = 10.0
    settings = make_settings(sqlite_engine, scheduler={"poll_interval_seconds": interval})
    source = SlowFirstPoll("slow")
    scheduler = create_scheduler(settings, sqlite_engine, [source])
    scheduler.start()
    try:
        wait_for(lambda: len(source.starts) == 1)
        time.sleep(interval + 0.5)  # the tick at one interval comes and is skipped: the poll still runs
        released = time.monotonic()
        source.release.set()
        wait_for(lambda: len(source.starts) >= 2)
    finally:
        source.release.set()
        scheduler.shutdown(wait=True)

    # the next tick is 9.5 s after the release: without the catch-up the second poll would wait for it
    assert source.starts[1] - released < interval / 2


def test_poll_interval_comes_from_the_source_then_the_settings(
    sqlite_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    configured = SourceSettings(name="configured", kind="simulated", poll_interval_seconds=12)
    settings = make_settings(sqlite_engine).model_copy(update={"sources": (configured,)})
    own = StandInSource("own")
    own.poll_interval_seconds = 7

    scheduler = create_scheduler(settings, sqlite_engine, [own, StandInSource("configured"), StandInSource("x")])

    assert {n: p.interval_seconds for n, p in scheduler.pollers.items()} == {
        "own": 7,
        "configured": 12,
        "x": settings.scheduler.poll_interval_seconds,
    }
    with pytest.raises(ValueError, match="duplicate source name"):
        create_scheduler(settings, sqlite_engine, [own, own])


def test_retention_job_reports_deleted_rows(sqlite_engine: Engine, make_settings: Callable[..., Settings]) -> None:
    scheduler = create_scheduler(make_settings(sqlite_engine), sqlite_engine, [StandInSource("a")])
    scheduler.pollers["a"].poll_once(T0 - timedelta(days=60))

    assert scheduler.run_retention(T0) == 4 + 1  # 4 rollups and the poll's ledger window
    assert scheduler.metrics.registry.get_sample_value("ai_telemetry_retention_deleted_rows_total") == 5


# --- source registry ---------------------------------------------------------------------------------


def test_prometheus_sources_are_built(make_settings: Callable[..., Settings]) -> None:
    from worker.sources.prometheus import PrometheusSource
    from worker.sources.registry import build_sources

    prometheus = SourceSettings(name="thanos", kind="prometheus", url="http://thanos:9090", cluster_label="cluster")
    settings = make_settings("sqlite://").model_copy(update={"sources": (prometheus,)})

    (source,) = build_sources(settings)
    assert isinstance(source, PrometheusSource) and (source.name, source.kind) == ("thanos", "prometheus")
    source.close()

    missing = prometheus.model_copy(update={"bearer_token_env": "AIT_TEST_UNSET_TOKEN_VARIABLE"})
    with pytest.raises(SettingsError, match="source thanos: environment variable AIT_TEST_UNSET_TOKEN"):
        build_sources(settings.model_copy(update={"sources": (missing,)}))


def test_simulated_sources_are_built(make_settings: Callable[..., Settings]) -> None:
    from worker.sources.registry import build_sources
    from worker.sources.simulated import SimulatedSource

    settings = make_settings("sqlite://", demo=True)

    (source,) = build_sources(settings)
    assert isinstance(source, SimulatedSource) and source.name == "demo"


def busy_source(name: str) -> StandInSource:
    """Four GPUs, each used by a pod of its own."""
    cluster = f"{name}-cluster"
    gpus = [reading(n, cluster=cluster, workloads=(PodRef("team", f"train-{n}"),)) for n in range(4)]
    return StandInSource(name, gpus, cluster=cluster)


def test_the_workloads_plan_runs_beside_the_caller_and_its_failure_spares_the_poll(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan runs on the poller's own thread while the ledger writes; when it fails, the inventory and
    rollups still commit, and the next poll catches the workloads up."""
    poller = SourcePoller(busy_source("a"), db_engine, SCHEDULER)
    planned_on: list[str] = []

    def failing_plan(*args: object, **kwargs: object) -> None:
        planned_on.append(threading.current_thread().name)
        raise RuntimeError("the plan failed")

    with monkeypatch.context() as patched:
        patched.setattr(polling, "plan_poll", failing_plan)
        failed = poller.poll_once(T0)
    assert failed.outcome == "success" and failed.workloads is None
    assert planned_on and planned_on[0] != threading.current_thread().name
    assert (count(db_engine, Gpu), count(db_engine, UsageRollup), count(db_engine, Workload)) == (4, 4, 0)

    caught_up = poller.poll_once(at(INTERVAL))
    assert caught_up.workloads is not None and caught_up.workloads.opened == 4
    assert count(db_engine, Workload) == 4


def test_the_cyclic_collector_is_paused_for_the_whole_poll_and_resumed_after(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = busy_source("a")
    poller = SourcePoller(source, db_engine, SCHEDULER)
    collecting: dict[str, bool] = {}

    def spying(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def spied(*args: Any, **kwargs: Any) -> Any:
            collecting[name] = gc.isenabled()
            return step(*args, **kwargs)

        return spied

    for name in ("apply_snapshot", "account_window", "plan_poll", "apply_plan"):
        monkeypatch.setattr(polling, name, spying(name, getattr(polling, name)))
    assert gc.isenabled()
    assert poller.poll_once(T0).outcome == "success"
    assert collecting == dict.fromkeys(("apply_snapshot", "account_window", "plan_poll", "apply_plan"), False)
    assert gc.isenabled()

    source.failure = RuntimeError("down")
    assert poller.poll_once(at(INTERVAL)).outcome == "source_error"
    assert gc.isenabled()
