"""The worker's HTTP app: liveness, readiness against a real database, metrics in Prometheus text format."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from benchmarks.alert_payloads import webhook
from domain.database import create_db_engine
from domain.settings import DatabaseSettings, Settings
from tests.services import free_port
from tests.test_inventory import T0
from tests.test_polling import StandInSource
from worker.alerts import STATE_KEY as ALERTS_STATE_KEY
from worker.alerts.routes import WEBHOOK_PATH
from worker.receiver import create_receiver_app, ops_routes
from worker.scheduler import create_scheduler
from worker.sources import SourceError

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def test_healthz_answers_ok_and_readyz_ready_as_the_site_does(
    db_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    app = create_receiver_app(make_settings(db_engine), db_engine)

    with TestClient(app) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "checks": {"database": "ok"}})


def test_readyz_is_503_when_the_database_is_unreachable(make_settings: Callable[..., Settings]) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"  # nothing listens there
    engine = create_db_engine(DatabaseSettings(url=url))
    app = create_receiver_app(make_settings(url), engine)
    try:
        with TestClient(app) as client:
            ready = client.get("/readyz")
            health = client.get("/healthz")
    finally:
        engine.dispose()

    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "reason": "database unreachable",
        "checks": {"database": "unreachable"},
    }
    assert health.status_code == 200  # a database outage is not a reason to restart the worker


def test_metrics_expose_the_pollers(sqlite_engine: Engine, make_settings: Callable[..., Settings]) -> None:
    good, bad = StandInSource("good"), StandInSource("bad")
    bad.failure = SourceError("connection refused")
    scheduler = create_scheduler(make_settings(sqlite_engine), sqlite_engine, [good, bad])
    for poller in scheduler.pollers.values():
        poller.poll_once(T0)
    app = create_receiver_app(make_settings(sqlite_engine), sqlite_engine, scheduler)

    with TestClient(app) as client:
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == PROMETHEUS_TEXT
    body = response.text
    assert 'ai_telemetry_source_polls_total{outcome="success",source="good"} 1.0' in body
    assert 'ai_telemetry_source_polls_total{outcome="source_error",source="bad"} 1.0' in body
    assert 'ai_telemetry_source_up{source="bad"} 0.0' in body
    assert 'ai_telemetry_source_consecutive_failures{source="bad"} 1.0' in body
    assert 'ai_telemetry_source_cluster_status{cluster="good-cluster",source="good",status="ok"} 1.0' in body
    assert "ai_telemetry_source_poll_duration_seconds_bucket" in body
    assert 'ai_telemetry_rows_written_total{kind="inventory",source="good"}' in body


def test_each_app_has_its_own_registry(sqlite_engine: Engine, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(sqlite_engine)
    first = create_scheduler(settings, sqlite_engine, [StandInSource("one")])
    second = create_scheduler(settings, sqlite_engine, [StandInSource("two")])

    with TestClient(create_receiver_app(settings, sqlite_engine, first)) as client:
        first_body = client.get("/metrics").text
    with TestClient(create_receiver_app(settings, sqlite_engine, second)) as client:
        second_body = client.get("/metrics").text
    with TestClient(create_receiver_app(settings, sqlite_engine)) as client:
        bare = client.get("/metrics")

    assert 'source="one"' in first_body and 'source="one"' not in second_body
    assert bare.status_code == 200 and "source=" not in bare.text


def test_app_can_own_the_scheduler_lifecycle(sqlite_engine: Engine, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(sqlite_engine, scheduler={"poll_interval_seconds": 60})
    scheduler = create_scheduler(settings, sqlite_engine, [StandInSource("a")])
    app = create_receiver_app(settings, sqlite_engine, scheduler, manage_scheduler=True)

    with TestClient(app):
        assert scheduler.running
    assert not scheduler.running


def test_routes_are_registered_by_area() -> None:
    paths = {path for handler in ops_routes() for path in handler.paths}  # type: ignore[union-attr]

    assert paths == {"/healthz", "/readyz", "/metrics"}


def test_webhooks_are_persisted_at_most_pool_size_at_once(
    sqlite_engine: Engine, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More threads than database connections would only queue for one, and take the GIL from the pollers."""
    token = "webhook-token-0123456789abcdef"
    settings = make_settings(sqlite_engine, database={"pool_size": 2}, receiver={"webhook_token": token})
    app = create_receiver_app(settings, sqlite_engine)
    intake = app.state[ALERTS_STATE_KEY]
    persist = intake.persist
    running, peak, lock = 0, 0, threading.Lock()

    def observed(parsed: Any) -> Any:  # the real persist, watched
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
            return persist(parsed)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(intake, "persist", observed)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

    with TestClient(app) as client, ThreadPoolExecutor(max_workers=8) as pool:
        bodies = [json.dumps(webhook(1, batch, 2, "firing")) for batch in range(8)]
        answers = list(pool.map(lambda body: client.post(WEBHOOK_PATH, content=body, headers=headers), bodies))

    assert [answer.status_code for answer in answers] == [200] * 8
    assert peak == 2
