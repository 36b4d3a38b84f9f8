"""The worker's areas: the scheduler and the receiver know them only through worker.registry.AREAS."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from domain.settings import Settings
from tests.test_polling import StandInSource
from worker.alerts.routes import WEBHOOK_PATH
from worker.receiver import create_receiver_app, ops_routes
from worker.registry import AREAS
from worker.scheduler import create_scheduler


def every_part_on(make_settings: Callable[..., Settings], engine: Engine) -> Settings:
    return make_settings(
        engine,
        auth={"mode": "keycloak"},
        keycloak={"url": "http://127.0.0.1:9", "client_secret": "s" * 20, "timeout_seconds": 1},
        notify={"enabled": True, "interval_seconds": 120},
        llm={"base_url": "http://127.0.0.1:9/v1", "model": "m", "interval_seconds": 45},
        scheduler={"poll_interval_seconds": 20},
    )


def test_every_area_schedules_its_jobs_in_area_order(
    sqlite_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = every_part_on(make_settings, sqlite_engine)
    scheduler = create_scheduler(settings, sqlite_engine, [StandInSource("a"), StandInSource("b")])
    scheduler.start()
    try:
        jobs = {job.id: job for job in scheduler.jobs}
    finally:
        scheduler.shutdown()

    expected = {  # id: (interval, misfire grace)
        "poll:a": (20, 20),
        "poll:b": (20, 20),
        "retention": (3600, 3600),
        "llm-analysis": (45, 45),
        "notifications": (120, 120),
        "keycloak-project-sync": (settings.keycloak.sync_interval_seconds, settings.keycloak.sync_interval_seconds),
    }
    got = {i: (j.trigger.interval.total_seconds(), j.misfire_grace_time) for i, j in jobs.items()}
    assert got == expected
    assert all((j.max_instances, j.coalesce) == (1, True) for j in jobs.values())
    assert jobs["poll:a"].args == (scheduler.pollers["a"],)


def test_area_names_and_job_ids_are_unique(sqlite_engine: Engine, make_settings: Callable[..., Settings]) -> None:
    names = [area.name for area in AREAS]
    assert len(names) == len(set(names))
    scheduler = create_scheduler(every_part_on(make_settings, sqlite_engine), sqlite_engine, [StandInSource("a")])
    ids = [job.id for area in AREAS for job in area.jobs(scheduler)]
    assert len(ids) == len(set(ids)) == 5  # one poll, retention, LLM, notifications, Keycloak sync


def test_the_receiver_mounts_its_own_routes_then_each_areas(
    sqlite_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    app = create_receiver_app(make_settings(sqlite_engine), sqlite_engine)
    paths = {route.path for route in app.routes}
    own = {path for handler in ops_routes() for path in handler.paths}
    assert own <= paths
    assert paths - own == {WEBHOOK_PATH}  # the alerts area's webhook, and nothing else
