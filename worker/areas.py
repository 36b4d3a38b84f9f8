"""What a worker area is: a name, the jobs it schedules and the HTTP routes it answers.

An area (polling, the ledger, the signal pipeline, notifications, alerts, access) declares
``AREA = WorkerArea(...)`` or, while it is one module, a plain ``jobs(context)`` function that
:mod:`worker.registry` wraps. The scheduler and the receiver read :data:`worker.registry.AREAS` in
order and know no area by name.

This module is a leaf: it imports no area, so every area can import it (the ordered tuple lives in
:mod:`worker.registry`, which imports them all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from litestar.types import ControllerRouterHandler
from sqlalchemy import Engine

from domain.settings import Settings

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics
    from worker.notifications.jobs import NotificationJobs
    from worker.pipeline.processor import SignalProcessor
    from worker.polling import SourcePoller
    from worker.tracing import WorkloadTracer


@dataclass(frozen=True)
class ScheduledJob:
    """One interval job, as the scheduler adds it: ``max_instances=1`` and ``coalesce=True`` always."""

    id: str
    """Stable: the command line lists it and tests look it up."""
    name: str
    run: Callable[..., object]
    interval_seconds: float
    first_run_after: timedelta = timedelta(0)
    """From the scheduler's start; zero runs the job at once."""
    args: tuple[object, ...] = ()
    misfire_grace_seconds: int | None = None
    """How late a run may start; by default one interval (at least a second)."""

    @property
    def misfire_grace(self) -> int:
        if self.misfire_grace_seconds is not None:
            return self.misfire_grace_seconds
        return max(1, int(self.interval_seconds))


class WorkerContext(Protocol):
    """What an area's jobs may use: the worker's settings, database and shared parts (the scheduler)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def metrics(self) -> WorkerMetrics: ...

    @property
    def pollers(self) -> Mapping[str, SourcePoller]: ...

    @property
    def signals(self) -> SignalProcessor | None: ...

    @property
    def notifications(self) -> NotificationJobs | None: ...

    def catch_up_poll(self, poller: SourcePoller) -> None:
        """Poll, and again at once for each tick the scheduler skipped meanwhile."""

    def run_retention(self, now: datetime | None = None) -> int: ...

    def run_project_sync(self) -> int: ...


@dataclass(frozen=True)
class RouteContext:
    """What an area's HTTP handlers are built with (the receiver's app is built once per process)."""

    settings: Settings
    engine: Engine
    metrics: WorkerMetrics
    tracer: WorkloadTracer
    signals: SignalProcessor | None


@dataclass(frozen=True)
class AreaRoutes:
    """An area's handlers, the app state they read, and what to close when the app stops."""

    handlers: Sequence[ControllerRouterHandler]
    state: Mapping[str, object] = field(default_factory=dict)
    on_shutdown: Sequence[Callable[[], None]] = ()


def _no_jobs(context: WorkerContext) -> list[ScheduledJob]:
    return []


def _no_routes(context: RouteContext) -> AreaRoutes:
    return AreaRoutes(handlers=())


@dataclass(frozen=True)
class WorkerArea:
    """One area of the worker: its name, its scheduled jobs and its routes (either may be none)."""

    name: str
    jobs: Callable[[WorkerContext], list[ScheduledJob]] = _no_jobs
    routes: Callable[[RouteContext], AreaRoutes] = _no_routes
