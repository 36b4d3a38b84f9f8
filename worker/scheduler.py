"""The worker's clock: one APScheduler job per source, plus retention, on a UTC background scheduler.

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
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from domain.access import ProjectSync
from domain.access.factory import build_project_sync
from domain.database import session_scope
from domain.ledger.partitions import ensure_partitions
from domain.ledger.retention import RetentionPolicy, apply_retention
from domain.models import utcnow
from domain.settings import Settings
from worker.metrics import WorkerMetrics
from worker.notifications.jobs import NotificationJobs, create_notification_jobs
from worker.polling import SourcePoller
from worker.signals import SignalProcessor
from worker.sources import Source
from worker.tracing import SessionTracer, create_session_tracer

log = logging.getLogger(__name__)

RETENTION_INTERVAL = timedelta(hours=1)
RETENTION_FIRST_DELAY = timedelta(minutes=1)
"""Retention first runs shortly after start, out of the way of the first polls."""
PROJECT_SYNC_FIRST_DELAY = timedelta(seconds=20)
"""Keycloak mode: the first project sync runs once the first polls have found the projects."""


class WorkerScheduler:
    """The background scheduler together with the pollers and metrics it drives."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        pollers: Sequence[SourcePoller],
        metrics: WorkerMetrics,
        tracer: SessionTracer | None = None,
        signals: SignalProcessor | None = None,
        notifications: NotificationJobs | None = None,
    ) -> None:
        self.settings = settings
        self.notifications = notifications
        """Decides and sends notices about idle GPUs, if enabled."""
        self.engine = engine
        self.metrics = metrics
        self.tracer = tracer
        """Spans of closed workload sessions; shut down with the scheduler."""
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
        for poller in self._pollers.values():
            interval = poller.interval_seconds
            self._scheduler.add_job(
                self._poll,
                IntervalTrigger(seconds=interval, timezone=UTC),
                args=[poller],
                id=f"poll:{poller.name}",
                name=f"poll source {poller.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
                next_run_time=now,
                replace_existing=True,
            )
        self._scheduler.add_job(
            self.run_retention,
            IntervalTrigger(seconds=RETENTION_INTERVAL.total_seconds(), timezone=UTC),
            id="retention",
            name="apply retention",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(RETENTION_INTERVAL.total_seconds()),
            next_run_time=now + RETENTION_FIRST_DELAY,
            replace_existing=True,
        )
        if self.signals is not None and self.signals.analyzer.enabled:
            interval = self.settings.llm.interval_seconds
            self._scheduler.add_job(
                self.signals.analyse_pending,
                IntervalTrigger(seconds=interval, timezone=UTC),
                id="llm-analysis",
                name="LLM analysis of escalated findings",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
                next_run_time=now + timedelta(seconds=interval),
                replace_existing=True,
            )
        if self.notifications is not None:
            interval = self.settings.notify.interval_seconds
            self._scheduler.add_job(
                self.notifications.run,
                IntervalTrigger(seconds=interval, timezone=UTC),
                id="notifications",
                name="decide and send notices about idle GPUs",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
                next_run_time=now + timedelta(seconds=min(interval, 10)),
                replace_existing=True,
            )
        if self.settings.auth.mode == "keycloak":
            interval = self.settings.keycloak.sync_interval_seconds
            self._scheduler.add_job(
                self.run_project_sync,
                IntervalTrigger(seconds=interval, timezone=UTC),
                id="keycloak-project-sync",
                name="create Keycloak resources for new projects",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval)),
                next_run_time=now + PROJECT_SYNC_FIRST_DELAY,
                replace_existing=True,
            )
        self._scheduler.start()
        log.info("worker scheduler started: %d source(s)", len(self._pollers))

    def _tick_skipped(self, event: JobSubmissionEvent) -> None:
        with self._overran_lock:
            self._overran.add(event.job_id)

    def _poll(self, poller: SourcePoller) -> None:
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
        """The ledger's maintenance: create the partitions ahead, then trim each tier to its retention
        (rows, or whole partitions on PostgreSQL); the rows deleted. Never raises."""
        now = now or utcnow()
        scheduler = self.settings.scheduler
        policy = RetentionPolicy(
            scheduler.retention_days, scheduler.hourly_retention_days, scheduler.daily_retention_days
        )
        try:
            with session_scope(self.engine) as session:
                created = ensure_partitions(session.connection(), now)
            with session_scope(self.engine) as session:
                result = apply_retention(session, now, policy)
        except Exception:  # a failed run is retried next hour; the scheduler must keep going
            log.exception("retention failed")
            return 0
        self.metrics.retention_deleted.inc(result.rows_deleted)
        if created or result.rows_deleted or result.partitions_dropped:
            log.info(
                "retention: %d partition(s) created ahead, %d dropped, %d row(s) deleted",
                len(created),
                result.partitions_dropped,
                result.rows_deleted,
            )
        return result.rows_deleted

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
    tracer: SessionTracer | None = None,
) -> WorkerScheduler:
    """Build (not start) the worker's scheduler with one poller per source.

    Sessions closed by polls become spans through ``tracer``, or one built from the settings.
    """
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate source name(s): {', '.join(duplicates)}")
    metrics = metrics or WorkerMetrics()
    tracer = tracer or create_session_tracer(settings.otel)
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
            )
        )
    notifications = create_notification_jobs(settings, engine, metrics) if settings.notify.enabled else None
    return WorkerScheduler(settings, engine, pollers, metrics, tracer, signals=signals, notifications=notifications)
