"""The worker's areas, in the order the scheduler adds their jobs and the receiver mounts their routes.

Adding an area: give it ``jobs(context)`` and/or ``routes(context)`` (see :mod:`worker.areas`) and
list it here. Access (the Keycloak project sync) is wrapped here: its job is the scheduler's own.
"""

from __future__ import annotations

from datetime import timedelta

from worker import polling, retention
from worker.alerts import routes as alert_routes
from worker.areas import ScheduledJob, WorkerArea, WorkerContext
from worker.notifications import jobs as notification_jobs
from worker.pipeline import jobs as pipeline_jobs

PROJECT_SYNC_FIRST_DELAY = timedelta(seconds=20)
"""Keycloak mode: the first project sync runs once the first polls have found the projects."""


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


AREAS: tuple[WorkerArea, ...] = (
    WorkerArea("polling", jobs=polling.jobs),
    WorkerArea("retention", jobs=retention.jobs),
    WorkerArea("pipeline", jobs=pipeline_jobs.jobs),
    WorkerArea("notifications", jobs=notification_jobs.jobs),
    WorkerArea("access", jobs=access_jobs),
    WorkerArea("alerts", routes=alert_routes.routes),
)
"""Every area of the worker, in order; the receiver's own health, readiness and metrics routes come first."""
