"""The findings, pipeline and placement pages and API: scoping per demo identity, CSRF-protected actions,
the worker letting go of what a person resolved, counters on /metrics, replay for admins only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.access.demo import DEMO_IDENTITIES, seed_demo_identities
from domain.models import Finding, PipelineInput, utcnow
from domain.settings import DEMO_SOURCE
from tests.conftest import settings_for, sqlite_copy, sqlite_template
from tests.test_access_end_to_end import api_all, login
from web.app import create_app
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

INTERVAL = 30.0


def password(username: str) -> str:
    return next(i.password for i in DEMO_IDENTITIES if i.username == username)


@dataclass
class Demo:
    client: TestClient
    engine: Engine
    poller: SourcePoller
    last: object

    def poll(self, times: int = 1) -> None:
        for _ in range(times):
            self.last = self.last + timedelta(seconds=INTERVAL)  # type: ignore[operator]
            assert self.poller.poll_once(now=self.last, force=True).outcome == "success"  # type: ignore[arg-type]


HOUR = utcnow().replace(minute=0, second=7, microsecond=0) - timedelta(hours=2)
"""The start of a recent hour: the demo fleet's XID starts at :15, replay looks back hours from now."""
POLLS = 60


def _poll_demo(engine: Engine) -> None:
    settings = settings_for(engine)
    poller = SourcePoller(
        SimulatedSource.from_settings(DEMO_SOURCE),
        engine,
        settings.scheduler,
        interval_seconds=INTERVAL,
        signals=SignalProcessor(settings, engine),
    )
    for step in range(POLLS):
        assert poller.poll_once(now=HOUR + timedelta(seconds=INTERVAL * step), force=True).outcome == "success"
    assert seed_demo_identities(engine) == []


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet polled for 30 minutes of a recent hour through the pipeline, built once per module."""
    return sqlite_template(tmp_path_factory.mktemp("demo") / "demo.db", _poll_demo)


@pytest.fixture
def demo(demo_template: Path, tmp_path: Path) -> Iterator[Demo]:
    engine = sqlite_copy(demo_template, tmp_path)
    settings = settings_for(engine)
    # a fresh worker process on the same database: it continues the open findings
    poller = SourcePoller(
        SimulatedSource.from_settings(DEMO_SOURCE),
        engine,
        settings.scheduler,
        interval_seconds=INTERVAL,
        signals=SignalProcessor(settings, engine),
    )
    try:
        with TestClient(create_app(settings, engine)) as client:
            yield Demo(client, engine, poller, HOUR + timedelta(seconds=INTERVAL * (POLLS - 1)))
    finally:
        engine.dispose()


def csrf(client: TestClient) -> str:
    page = client.get("/findings")
    return re.search(r'"x-csrftoken": "([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def all_findings(engine: Engine) -> list[Finding]:
    with Session(engine) as session:
        return list(session.exec(select(Finding).order_by(Finding.id)))  # type: ignore[arg-type]


def test_findings_are_scoped_to_what_each_identity_may_see(demo: Demo) -> None:
    client = demo.client
    login(client, "admin", password("admin"))
    everything = api_all(client, "/api/v1/findings")
    assert {f["kind"] for f in everything} >= {"idle_allocated", "thermal", "xid_error"}
    assert len(everything) == len(all_findings(demo.engine))
    by_project = {f["id"]: f["project"] for f in everything}

    login(client, "alice", password("alice"))
    mine = api_all(client, "/api/v1/findings")
    assert mine and {f["project"] for f in mine} == {"ml-team-a"}
    login(client, "bob", password("bob"))
    bobs = api_all(client, "/api/v1/findings")
    assert {f["project"] for f in bobs} == {"vision-lab"}
    assert {f["kind"] for f in bobs} >= {"thermal", "xid_error"}

    foreign = next(i for i, p in by_project.items() if p == "ml-team-a")
    assert client.get(f"/api/v1/findings/{foreign}").status_code == 404
    assert client.get(f"/findings/{foreign}").status_code == 404
    page = client.get("/findings").text
    assert "ml-team-a" not in page and "vision-lab" in page
    fragment = client.get("/findings?severity=critical", headers={"HX-Request": "true", "HX-Target": "table"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "XID 79" in fragment.text
    waste = client.get("/api/v1/findings/waste").json()
    assert all(w["namespace"] == "vision-lab" for w in waste)


def test_anonymous_callers_get_nothing(demo: Demo) -> None:
    client = demo.client
    assert client.get("/api/v1/findings").status_code == 401
    assert client.get("/api/v1/pipeline").status_code == 401
    assert client.get("/api/v1/placement?model=h100").status_code == 401
    for path in ("/findings", "/pipeline", "/placement"):
        assert client.get(path, follow_redirects=False).status_code in (302, 303, 307)


def test_acknowledge_and_resolve_need_csrf_and_visibility(demo: Demo) -> None:
    client = demo.client
    login(client, "bob", password("bob"))
    xid = next(f for f in api_all(client, "/api/v1/findings") if f["kind"] == "xid_error")
    assert client.post(f"/findings/{xid['id']}/acknowledge").status_code == 403  # no CSRF token
    token = csrf(client)
    htmx = {"x-csrftoken": token, "HX-Request": "true", "HX-Target": f"finding-{xid['id']}"}
    row = client.post(f"/findings/{xid['id']}/acknowledge", headers=htmx)
    assert row.status_code == 200 and row.text.lstrip().startswith("<tr") and "Acknowledged" in row.text
    detail = client.get(f"/api/v1/findings/{xid['id']}").json()
    assert detail["status"] == "acknowledged" and detail["acknowledged_by"].startswith("Bob")

    login(client, "alice", password("alice"))
    token = csrf(client)
    assert client.post(f"/findings/{xid['id']}/resolve", headers={"x-csrftoken": token}).status_code == 404

    # an acknowledged finding stays acknowledged while the worker keeps updating it
    demo.poll(2)
    with Session(demo.engine) as session:
        row = session.get(Finding, xid["id"])
        assert row is not None and row.status == "acknowledged" and row.last_seen == demo.last

    login(client, "bob", password("bob"))
    token = csrf(client)
    plain = client.post(f"/findings/{xid['id']}/resolve", headers={"x-csrftoken": token}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == f"/findings/{xid['id']}"

    # the worker lets go of what a person resolved; the XID persists, so a new finding opens at once
    demo.poll()
    rows = {f.id: f for f in all_findings(demo.engine)}
    resolved = rows[xid["id"]]
    assert resolved.status == "resolved" and resolved.last_seen < demo.last
    reopened = [f for f in rows.values() if f.kind == "xid_error" and f.status == "open"]
    assert len(reopened) == 1 and reopened[0].id != xid["id"] and reopened[0].last_seen == demo.last


def test_pipeline_page_api_and_metrics_show_the_stored_counters(demo: Demo) -> None:
    client = demo.client
    login(client, "alice", password("alice"))
    figures = client.get("/api/v1/pipeline").json()
    assert figures["raw"] > figures["kept"] > 0 and figures["escalations"] >= 3
    assert figures["compression"] == pytest.approx(figures["raw"] / figures["escalations"])
    assert figures["safety"]["critical_suppressed"] == 0
    assert [s["name"] for s in figures["stages"]] == [
        "drop_healthy",
        "dedupe",
        "persistence",
        "flap_damping",
        "rate_limit",
    ]
    page = client.get("/pipeline").text
    assert f"{figures['raw']:,}" in page and "Critical signals suppressed" in page
    assert "Replay with other settings" not in page  # admins only
    metrics = client.get("/metrics").text
    assert f'ai_telemetry_pipeline_total{{counter="raw"}} {float(figures["raw"])}' in metrics
    assert 'ai_telemetry_findings_active{severity="critical"} 1.0' in metrics


def test_placement_ranks_the_callers_nodes(demo: Demo) -> None:
    client = demo.client
    login(client, "admin", password("admin"))
    ranked = client.get("/api/v1/placement?model=h100&count=1").json()
    assert ranked[0]["hostname"] == "nerc-h100-03"  # the only H100 node with a GPU free and healthy
    assert {p["hostname"] for p in ranked} == {"nerc-h100-01", "nerc-h100-02", "nerc-h100-03"}
    assert ranked[0]["fits"] and ranked[0]["gpus_free"] >= 1
    assert not any(p["fits"] for p in client.get("/api/v1/placement?model=h100&count=2").json())
    xid_node = next(p for p in ranked if p["hostname"] == "nerc-h100-02")
    assert xid_node["health"] == 0 and not xid_node["fits"]
    assert client.get("/api/v1/placement?model=&count=2").status_code == 400
    page = client.get("/placement?model=h100&count=1")
    assert page.status_code == 200 and "nerc-h100-03" in page.text
    login(client, "alice", password("alice"))
    assert client.get("/api/v1/placement?model=h100&count=1").json() == []  # no H100 node of hers


def test_replay_is_for_admins_and_leaves_live_findings_alone(demo: Demo) -> None:
    client = demo.client
    with Session(demo.engine) as session:
        assert len(list(session.exec(select(PipelineInput)))) == 60
    before = [(f.id, f.status, f.last_seen, f.count) for f in all_findings(demo.engine)]
    login(client, "alice", password("alice"))
    token = csrf(client)
    assert client.post("/pipeline/replay", data={"hours": "6"}, headers={"x-csrftoken": token}).status_code == 403

    login(client, "admin", password("admin"))
    token = csrf(client)
    form = {"hours": "6", "straggler_quorum": "4"}
    answer = client.post(
        "/pipeline/replay", data=form, headers={"x-csrftoken": token, "HX-Request": "true", "HX-Target": "replay"}
    )
    assert answer.status_code == 200 and answer.text.startswith('<div id="replay">')
    assert "Replayed 60 polls" in answer.text and "Straggler on GPU 2 of moc-a100-02" in answer.text
    bad = client.post(
        "/pipeline/replay",
        data={"hours": "6", "straggler_k": "9"},
        headers={"x-csrftoken": token, "HX-Request": "true", "HX-Target": "replay"},
    )
    assert "invalid override" in bad.text and "straggler_k" in bad.text
    assert [(f.id, f.status, f.last_seen, f.count) for f in all_findings(demo.engine)] == before
