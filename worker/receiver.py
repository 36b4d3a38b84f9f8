"""The worker's HTTP app, on its own port: liveness, readiness and the worker's metrics.

The receiver's own routes (operations: health, readiness, metrics) are here; every other route is an
area's, mounted in the order of :data:`worker.registry.AREAS` (the Alertmanager webhook of
:mod:`worker.alerts`). Handlers reach the engine, metrics and their area's parts through the app
state, set once by the factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler
from sqlalchemy import Engine

from domain.database import ping
from domain.http_headers import DATA_ONLY_HEADERS, security_headers
from domain.http_methods import answer_head
from domain.probes import OK, readiness
from domain.settings import Settings
from worker.areas import RouteContext
from worker.metrics import CONTENT_TYPE, WorkerMetrics
from worker.registry import AREAS
from worker.scheduler import WorkerScheduler
from worker.tracing import WorkloadTracer, create_workload_tracer

STATE_KEY = "receiver"


@dataclass(frozen=True)
class ReceiverContext:
    """What the receiver's handlers need, kept in ``app.state`` under :data:`STATE_KEY`."""

    settings: Settings
    engine: Engine
    metrics: WorkerMetrics
    scheduler: WorkerScheduler | None


def receiver_context(state: State) -> ReceiverContext:
    context: ReceiverContext = state[STATE_KEY]
    return context


@get("/healthz", media_type=MediaType.JSON, include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Deliberately checks nothing else, so a database outage is no restart."""
    return {"status": "ok"}


@get("/readyz", sync_to_thread=True, include_in_schema=False)
def readyz(state: State) -> Response[dict[str, Any]]:
    """Readiness: the database answers, so webhooks can be persisted before they are acknowledged."""
    status, body = readiness({"database": OK if ping(receiver_context(state).engine) else "unreachable"})
    return Response(body, status_code=status)


@get("/metrics", sync_to_thread=False, include_in_schema=False)
def metrics(state: State) -> Response[bytes]:
    """The worker's own metrics (polls, backoff, rows written, cluster status) in Prometheus text format."""
    # the header is given whole: as media_type, Litestar would append a second charset
    return Response(receiver_context(state).metrics.render(), headers={"content-type": CONTENT_TYPE})


SECURITY_HEADERS = DATA_ONLY_HEADERS
"""The receiver only answers JSON and metrics: nothing in it may load, run or be framed."""


def ops_routes() -> list[ControllerRouterHandler]:
    """Health, readiness and metrics."""
    return [healthz, readyz, metrics]


def create_receiver_app(
    settings: Settings,
    engine: Engine,
    scheduler: WorkerScheduler | None = None,
    *,
    manage_scheduler: bool = False,
    tracer: WorkloadTracer | None = None,
) -> Litestar:
    """The worker's HTTP app. Its metrics are the scheduler's when one is given, otherwise its own.

    With ``manage_scheduler`` the app starts the scheduler on start-up and stops it on shutdown, so a
    server's signal handling (uvicorn) also stops the polls cleanly. Spans of sessions closed by
    alerts go to ``tracer``, else the scheduler's, else one the app builds from the settings (and
    shuts down with itself).
    """
    context = ReceiverContext(
        settings=settings,
        engine=engine,
        metrics=scheduler.metrics if scheduler is not None else WorkerMetrics(),
        scheduler=scheduler,
    )
    on_startup: list[Callable[[], None]] = []
    on_shutdown: list[Callable[[], None]] = []
    if manage_scheduler and scheduler is not None:
        # zero-argument hooks: Litestar passes the app to a one-argument hook, and shutdown(wait) is one
        on_startup.append(scheduler.start)
        on_shutdown.append(lambda: scheduler.shutdown(wait=True))
    if tracer is None and scheduler is not None:
        tracer = scheduler.tracer
    if tracer is None:
        tracer = create_workload_tracer(settings.otel)
        on_shutdown.append(tracer.shutdown)
    signals = scheduler.signals if scheduler is not None else None
    route_context = RouteContext(settings, engine, context.metrics, tracer, signals)
    handlers = ops_routes()
    state: dict[str, object] = {STATE_KEY: context}
    for area in AREAS:
        routes = area.routes(route_context)
        handlers.extend(routes.handlers)
        state.update(routes.state)
        on_shutdown.extend(routes.on_shutdown)
    app = Litestar(
        route_handlers=handlers,
        state=State(state),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        request_max_body_size=settings.receiver.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the process (CLI or test runner) owns logging
        before_send=[security_headers(SECURITY_HEADERS)],
    )
    return answer_head(app)
