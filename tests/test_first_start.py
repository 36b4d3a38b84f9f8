"""A first start without history: a fresh worker on the simulated source has polled once.

Every page with charts says that history starts with the worker's first poll (instead of an empty
chart area); once the rollups hold history, the charts are drawn and the note is gone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from ai_telemetry import demo as embedded
from domain.access.demo import seed_demo_identities
from domain.models import utcnow
from domain.settings import DEMO_SOURCE
from tests.test_access_end_to_end import api_all, identity, login
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.registry import build_sources
from worker.sources.simulated import SimulatedSource

NOTE = "History starts with the worker's first poll"


@pytest.fixture
def fresh(sqlite_engine: Engine, make_settings) -> Iterator[tuple[TestClient, Engine]]:  # type: ignore[no-untyped-def]
    settings = make_settings(sqlite_engine, demo=True)
    source = SimulatedSource.from_settings(DEMO_SOURCE)
    outcome = SourcePoller(source, sqlite_engine, settings.scheduler).poll_once(now=utcnow(), force=True)
    assert outcome.outcome == "success", outcome
    assert seed_demo_identities(sqlite_engine) == []
    with TestClient(create_app(settings, sqlite_engine)) as client:
        login(client, "admin", identity("admin").password)
        yield client, sqlite_engine


def chart_pages(client: TestClient) -> list[str]:
    first = {kind: api_all(client, f"/api/v1/{kind}")[0]["id"] for kind in ("clusters", "nodes", "gpus", "projects")}
    return ["/", *(f"/{kind}/{entity}" for kind, entity in first.items())]


def test_pages_with_charts_say_that_history_starts_with_the_first_poll(fresh) -> None:  # type: ignore[no-untyped-def]
    client, _ = fresh
    for path in chart_pages(client):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.text.count(NOTE) == 1, path
        assert '<svg class="chart"' not in page.text, path


def test_the_note_goes_once_there_is_history_to_chart(sqlite_engine: Engine, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(sqlite_engine, demo=True)
    embedded.backfill(settings, sqlite_engine, build_sources(settings), hours=1)  # what `make demo` does
    assert seed_demo_identities(sqlite_engine) == []
    with TestClient(create_app(settings, sqlite_engine)) as client:
        login(client, "admin", identity("admin").password)
        for path in chart_pages(client):
            page = client.get(path)
            assert page.status_code == 200, path
            assert NOTE not in page.text and '<svg class="chart"' in page.text, path
