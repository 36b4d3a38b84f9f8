"""The worker's areas, in the order the scheduler adds their jobs and the receiver mounts their routes.

Adding an area: give it ``jobs(context)`` and/or ``routes(context)`` (see :mod:`worker.areas`) and
list it here. The pipeline's, alerts' and access's entry points are wrapped here, thinly, until
those areas are packages declaring their own ``AREA``.
"""

from __future__ import annotations

from datetime import timedelta

from worker import polling, retention
from worker.alerts import STATE_KEY as ALERTS_STATE_KEY
from worker.alerts import AlertIntake, webhook_routes
from worker.areas import AreaRoutes, RouteContext, ScheduledJob, WorkerArea, WorkerContext
from worker.notifications import jobs as notification_jobs

PROJECT_SYNC_FIRST_DELAY = timedelta(seconds=20)
"""Keycloak mode: the first project sync runs once the first polls have found the projects."""


def pipeline_jobs(context: WorkerContext) -> list[ScheduledJob]:
    """The LLM analysis of escalated findings, when the pipeline runs and an analyzer is configured."""
    signals = context.signals
    if signals is None or not signals.analyzer.enabled:
        return []
    interval = context.settings.llm.interval_seconds
    return [
        ScheduledJob(
            id="llm-analysis",
            name="LLM analysis of escalated findings",
            run=signals.analyse_pending,
            interval_seconds=interval,
            first_run_after=timedelta(seconds=interval),
        )
    ]


def access_jobs(context: WorkerContext) -> list[ScheduledJob]:
    """Keycloak mode: create the Keycloak resources of newly discovered projects."""
    if context.settings.auth.mode != "keycloak":
        return []
    return [
        ScheduledJob(
            id="keycloak-project-sync",
            name="create Keycloak resources for new projects",
            run=context.run_project_sync,
            interval_seconds=context.settings.keycloak.sync_interval_seconds,
            first_run_after=PROJECT_SYNC_FIRST_DELAY,
        )
    ]


def alert_routes(context: RouteContext) -> AreaRoutes:
    """The Alertmanager webhook and the intake its handler reads from the app state."""
    intake = AlertIntake(
        context.settings, context.engine, metrics=context.metrics, tracer=context.tracer, signals=context.signals
    )
    return AreaRoutes(handlers=webhook_routes(), state={ALERTS_STATE_KEY: intake}, on_shutdown=(intake.close,))


AREAS: tuple[WorkerArea, ...] = (
    WorkerArea("polling", jobs=polling.jobs),
    WorkerArea("retention", jobs=retention.jobs),
    WorkerArea("pipeline", jobs=pipeline_jobs),
    WorkerArea("notifications", jobs=notification_jobs.jobs),
    WorkerArea("access", jobs=access_jobs),
    WorkerArea("alerts", routes=alert_routes),
)
"""Every area of the worker, in order; the receiver's own health, readiness and metrics routes come first."""
