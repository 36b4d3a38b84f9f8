"""Workloads on the site: the /workloads page and /api/v1/workloads, scoped per caller, with
filters, paging and trace links; workloads on the project and GPU pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.access.demo import seed_demo_identities
from domain.database import session_scope
from domain.models import Gpu, Workload
from domain.settings import DEMO_SOURCE
from tests.test_access_end_to_end import api_all, identity, login
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource
from worker.workloads.rules import WorkloadKey, new_trace_id

NOW = datetime(2026, 11, 23, 9, 0, 7, tzinfo=UTC)
MIDDLE, LATER = NOW + timedelta(minutes=25), NOW + timedelta(minutes=50)
TEMPLATE = "https://tracing.example.org/trace/{trace_id}?view=spans"


@pytest.fixture
def site(db_engine: Engine, make_settings) -> Iterator[tuple[TestClient, Engine]]:
    settings = make_settings(db_engine, otel={"trace_url_template": TEMPLATE})
    poller = SourcePoller(SimulatedSource.from_settings(DEMO_SOURCE), db_engine, settings.scheduler)
    for moment in (NOW, MIDDLE, LATER):  # workloads of the demo fleet start and stop in between
        assert poller.poll_once(now=moment, force=True).outcome == "success"
    assert seed_demo_identities(db_engine) == []
    with session_scope(db_engine) as db:  # a session from an alert of a cluster no source polls
        key = WorkloadKey("unpolled", "ml-team-a", "ghost-0", "GPU-unknown")
        db.add(
            Workload(
                trace_id=new_trace_id(),
                workload_key=key.digest,
                cluster="unpolled",
                namespace="ml-team-a",
                pod="ghost-0",
                gpu_uuid="GPU-unknown",
                started_at=NOW,
                source="alert",
            )
        )
    with TestClient(create_app(settings, db_engine)) as client:
        yield client, db_engine


def stored(engine: Engine) -> list[Workload]:
    with Session(engine) as db:
        return list(db.exec(select(Workload)))


def test_admin_sees_every_workload_with_trace_links(site) -> None:
    client, engine = site
    login(client, "admin", identity("admin").password)

    items = api_all(client, "/api/v1/workloads")

    rows = stored(engine)
    assert {i["trace_id"] for i in items} == {r.trace_id for r in rows}
    assert any(r.ended_at is not None for r in rows) and any(r.ended_at is None for r in rows)
    closed = next(i for i in items if i["ended_at"])
    assert closed["trace_url"] == f"https://tracing.example.org/trace/{closed['trace_id']}?view=spans"
    assert closed["duration_seconds"] == pytest.approx(
        (datetime.fromisoformat(closed["ended_at"]) - datetime.fromisoformat(closed["started_at"])).total_seconds()
    )
    assert [i["started_at"] for i in items] == sorted((i["started_at"] for i in items), reverse=True)


@pytest.mark.parametrize("username", ["alice", "bob"])
def test_researchers_see_only_their_projects_workloads(site, username: str) -> None:
    client, engine = site
    me = identity(username)
    cluster, namespace = me.project
    login(client, username, me.password)

    items = api_all(client, "/api/v1/workloads")

    expected = {r.trace_id for r in stored(engine) if (r.cluster, r.namespace) == (cluster, namespace)}
    assert expected and {i["trace_id"] for i in items} == expected
    html = client.get("/workloads?limit=500").text
    assert "ghost-0" not in html  # same namespace name, but on a cluster they hold no grant for
    for other in stored(engine):
        if other.namespace != namespace:
            assert f"{other.namespace}/{other.pod}" not in html
    foreign = next(r for r in stored(engine) if r.namespace != namespace)
    assert client.get(f"/api/v1/workloads/{foreign.id}").status_code == 404
    assert client.get(f"/workloads/{foreign.id}").status_code == 404


def test_filters_and_paging(site) -> None:
    client, engine = site
    login(client, "admin", identity("admin").password)
    rows = stored(engine)
    some = next(r for r in rows if r.project_id is not None and r.gpu_uuid and r.cluster == "moc-prod")
    with Session(engine) as db:
        gpu_id = db.exec(select(Gpu.id).where(Gpu.uuid == some.gpu_uuid)).one()

    def trace_ids(query: str) -> set[str]:
        return {i["trace_id"] for i in api_all(client, f"/api/v1/workloads{query}")}

    assert trace_ids("?state=open&") == {r.trace_id for r in rows if r.ended_at is None}
    assert trace_ids("?state=closed&") == {r.trace_id for r in rows if r.ended_at is not None}
    assert trace_ids(f"?project={some.project_id}&") == {r.trace_id for r in rows if r.project_id == some.project_id}
    assert trace_ids(f"?gpu={gpu_id}&") == {r.trace_id for r in rows if r.gpu_uuid == some.gpu_uuid}
    assert trace_ids(f"?since={(LATER + timedelta(seconds=1)).isoformat().replace('+00:00', 'Z')}&") == {
        r.trace_id for r in rows if r.ended_at is None
    }
    assert trace_ids("?until=2026-11-23T08:00:00%2B00:00&") == set()
    assert client.get("/api/v1/workloads?until=2026-11-23T08:00:00").status_code == 400  # no offset: ambiguous
    page = client.get("/api/v1/workloads?limit=2&offset=1").json()
    assert (len(page["items"]), page["total"], page["offset"]) == (2, len(rows), 1)
    assert client.get("/api/v1/workloads?state=maybe").status_code == 400
    empty = client.get("/api/v1/workloads?since=2026-11-24T00:00:00Z&until=2026-11-23T00:00:00Z")
    assert (empty.status_code, empty.json()["total"]) == (200, 0)  # an empty range
    assert client.get("/api/v1/workloads?sort=nonsense").status_code == 400


def test_pages_list_workloads(site) -> None:
    client, engine = site
    login(client, "alice", identity("alice").password)
    mine = [r for r in stored(engine) if r.namespace == "ml-team-a" and r.cluster == "moc-prod"]
    closed = next(r for r in mine if r.ended_at is not None)

    index = client.get("/workloads")
    fragment = client.get("/workloads?state=closed", headers={"HX-Request": "true", "HX-Target": "table"})
    detail = client.get(f"/workloads/{closed.id}")
    project = client.get(f"/projects/{closed.project_id}")

    assert index.status_code == 200 and 'href="/workloads" aria-current="page"' in index.text
    assert f"/workloads/{closed.id}" in index.text
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert f"{closed.namespace}/{closed.pod}" in fragment.text and "running" not in fragment.text
    assert detail.status_code == 200 and closed.trace_id in detail.text
    assert TEMPLATE.replace("{trace_id}", closed.trace_id) in detail.text.replace("&amp;", "&")
    assert "<h2>Workloads</h2>" in project.text and f"/workloads/{closed.id}" in project.text
    with Session(engine) as db:
        gpu_id = db.exec(select(Gpu.id).where(Gpu.uuid == closed.gpu_uuid)).one()
    gpu_page = client.get(f"/gpus/{gpu_id}")
    assert gpu_page.status_code == 200 and "<h2>Workloads</h2>" in gpu_page.text


def test_anonymous_callers_get_nothing(site) -> None:
    client, _ = site
    assert client.get("/api/v1/workloads").status_code == 401
    assert client.get("/workloads", follow_redirects=False).status_code in (302, 303, 307)
