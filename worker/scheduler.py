"""The worker's clock: the jobs of every worker area (:data:`worker.registry.AREAS`) on a UTC background scheduler.

Each source has its own interval job with ``max_instances=1`` (a slow poll is never overlapped by
the next one of the same source) and ``coalesce=True``; polls missed while one ran collapse into
one, started as soon as it ends (APScheduler itself would drop the tick it overran, so a poll a
little longer than the interval would halve the polling rate). The thread pool has a worker per
source, so a slow or failing source never delays another. In Keycloak mode a further job creates
the Keycloak resources of newly discovered projects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from domain.access import ProjectSync
from domain.access.factory import build_project_sync
from domain.settings import Settings
from worker.metrics import WorkerMetrics
from worker.notifications.jobs import NotificationJobs, create_notification_jobs
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.registry import AREAS
from worker.retention import run_retention
from worker.sources import Source
from worker.tracing import WorkloadTracer, create_workload_tracer

log = logging.getLogger(__name__)


class WorkerScheduler:
    """The background scheduler together with the pollers and metrics it drives."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        pollers: Sequence[SourcePoller],
        metrics: WorkerMetrics,
        tracer: WorkloadTracer | None = None,
        signals: SignalProcessor | None = None,
        notifications: NotificationJobs | None = None,
    ) -> None:
        self.settings = settings
        self.notifications = notifications
        """Decides and sends notices about idle GPUs, if enabled."""
        self.engine = engine
        self.metrics = metrics
        self.tracer = tracer
        """Spans of closed workloads; shut down with the scheduler."""
        self.signals = signals
        """The signal pipeline the pollers feed (and the alert receiver may feed), if enabled."""
        self._pollers = MappingProxyType({p.name: p for p in pollers})
        self._keycloak: ProjectSync | None = None
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=len(pollers) + 3)},
            job_defaults={"max_instances": 1, "coalesce": True},
        )
        self._overran: set[str] = set()
        """Ids of the jobs whose tick the scheduler skipped while they ran: they run again at once."""
        self._overran_lock = threading.Lock()
        self._scheduler.add_listener(self._tick_skipped, EVENT_JOB_MAX_INSTANCES)

    @property
    def pollers(self) -> Mapping[str, SourcePoller]:
        """Pollers by source name."""
        return self._pollers

    @property
    def jobs(self) -> list[Job]:
        """The scheduled jobs (after :meth:`start`), for the command line and tests."""
        return list(self._scheduler.get_jobs())

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Add the jobs and start the scheduler thread; every source is polled at once."""
        if self.running:
            return
        now = datetime.now(UTC)
        for area in AREAS:
            for job in area.jobs(self):
                self._scheduler.add_job(
                    job.run,
                    IntervalTrigger(seconds=job.interval_seconds, timezone=UTC),
                    args=list(job.args),
                    id=job.id,
                    name=job.name,
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=job.misfire_grace,
                    next_run_time=now + job.first_run_after,
                    replace_existing=True,
                )
        self._scheduler.start()
        log.info("worker scheduler started: %d source(s)", len(self._pollers))

    def _tick_skipped(self, event: JobSubmissionEvent) -> None:
        with self._overran_lock:
            self._overran.add(event.job_id)

    def catch_up_poll(self, poller: SourcePoller) -> None:
        """The poll job: poll, and poll again at once for each tick the scheduler skipped meanwhile."""
        job_id = f"poll:{poller.name}"
        while True:
            with self._overran_lock:
                self._overran.discard(job_id)
            poller.poll_once()
            with self._overran_lock:
                overran = job_id in self._overran
            if not overran or not self.running:
                return
            log.info(
                "poll of source %s took longer than its interval (%gs): polling again now",
                poller.name,
                poller.interval_seconds,
            )

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler; with ``wait`` the polls in progress finish first. Safe to call twice."""
        if self.running:
            self._scheduler.shutdown(wait=wait)
            log.info("worker scheduler stopped")
        if self.tracer is not None:
            self.tracer.shutdown()

    def run_retention(self, now: datetime | None = None) -> int:
        """The ledger's maintenance (:func:`worker.retention.run_retention`); the rows deleted. Never raises."""
        return run_retention(self.engine, self.settings.scheduler, self.metrics, now)

    def run_project_sync(self) -> int:
        """Create the Keycloak resources of projects the pollers discovered; never raises."""
        try:
            if self._keycloak is None:
                self._keycloak = build_project_sync(self.settings)
            report = self._keycloak.sync_projects(self.engine)
        except Exception as exc:  # Keycloak down or misconfigured: retried next interval, polling goes on
            log.warning("Keycloak project sync failed: %s", exc)
            return 0
        return report.created


def create_scheduler(
    settings: Settings,
    engine: Engine,
    sources: Sequence[Source],
    *,
    metrics: WorkerMetrics | None = None,
    tracer: WorkloadTracer | None = None,
) -> WorkerScheduler:
    """Build (not start) the worker's scheduler with one poller per source.

    Sessions closed by polls become spans through ``tracer``, or one built from the settings.
    """
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate source name(s): {', '.join(duplicates)}")
    metrics = metrics or WorkerMetrics()
    tracer = tracer or create_workload_tracer(settings.otel)
    signals = SignalProcessor(settings, engine, metrics=metrics) if settings.pipeline.enabled else None
    configured = {s.name: s for s in settings.sources}
    pollers = []
    for source in sources:
        source_settings = configured.get(source.name)
        interval = getattr(source, "poll_interval_seconds", None) or (
            source_settings.poll_interval_seconds if source_settings else None
        )
        pollers.append(
            SourcePoller(
                source,
                engine,
                settings.scheduler,
                interval_seconds=interval,
                metrics=metrics,
                tracer=tracer,
                signals=signals,
                hot_threshold_c=settings.pipeline.thermal_threshold_c,
            )
        )
    notifications = create_notification_jobs(settings, engine, metrics) if settings.notify.enabled else None
    return WorkerScheduler(settings, engine, pollers, metrics, tracer, signals=signals, notifications=notifications)
