"""Report cards on the site, the API and the terminal: built from workloads the worker accumulated from
the simulated fleet's windows, on SQLite and PostgreSQL; researchers see only their projects' cards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from ai_telemetry.cli import main
from domain.access.demo import seed_demo_identities
from domain.models import Workload
from domain.report_cards.cards import NOT_EXPORTED_ON_CLUSTER
from domain.settings import DEMO_SOURCE
from tests.test_access_end_to_end import identity, login
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

NOW = datetime(2026, 11, 23, 9, 0, 7, tzinfo=UTC)


@pytest.fixture
def site(db_engine: Engine, make_settings) -> Iterator[tuple[TestClient, Engine]]:
    settings = make_settings(db_engine)
    poller = SourcePoller(SimulatedSource.from_settings(DEMO_SOURCE), db_engine, settings.scheduler)
    for minutes in range(0, 20, 5):
        assert poller.poll_once(now=NOW + timedelta(minutes=minutes), force=True).outcome == "success"
    assert seed_demo_identities(db_engine) == []
    with TestClient(create_app(settings, db_engine)) as client:
        yield client, db_engine


def workload_of(engine: Engine, pod: str) -> Workload:
    with Session(engine) as db:
        return db.exec(select(Workload).where(Workload.pod == pod).order_by(Workload.id)).first()


def test_workloads_accumulate_time_weighted_sums_per_window(site) -> None:
    _, engine = site
    row = workload_of(engine, "inference-api")
    assert row.seconds > 0 and row.gpu_seconds == pytest.approx(row.seconds)  # a whole GPU: share 1
    sm, known, peak = row.profiling["sm_active"]
    assert known == pytest.approx(row.seconds) and 0 < sm / known <= peak <= 1
    assert row.profiling_missing is None and row.memory_total_mib
    slice_row = workload_of(engine, "tokenize-batch")
    assert slice_row.gpu_seconds == pytest.approx(slice_row.seconds / 7)  # a 1g slice of an A100: 1/7
    blind = workload_of(engine, "rstudio-gpu")
    assert blind.profiling == {} and blind.profiling_missing == "cluster"


def test_card_api_page_and_terminal_agree(site, capsys) -> None:
    client, engine = site
    login(client, "admin", identity("admin").password)
    row = workload_of(engine, "inference-api")
    card = client.get(f"/api/v1/report-cards/workloads/{row.id}").json()
    assert card["title"] == "ml-team-a/inference-api" and card["devices"] == 2
    assert [n["kind"] for n in card["notes"]] == ["tensor-cores-idle"]
    assert card["grade"]["basis"] == "sm_active" and card["grade"]["letter"] in "ABCDF"
    page = client.get(f"/workloads/{row.id}/report-card")
    assert page.status_code == 200 and 'data-kind="tensor-cores-idle"' in page.text
    assert f'href="/workloads/{row.id}/report-card"' in client.get(f"/workloads/{row.id}").text
    blind = client.get(f"/api/v1/report-cards/workloads/{workload_of(engine, 'rstudio-gpu').id}").json()
    reason = NOT_EXPORTED_ON_CLUSTER.format(cluster="edu-shared")
    assert {f["not_collected"] for f in blind["figures"]} == {reason}
    assert blind["grade"]["basis"] == "utilization"

    url = engine.url.render_as_string(hide_password=False)
    assert main(["report-card", "ml-team-a/inference-api", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "Report card: ml-team-a/inference-api on moc-prod" in out and "[tensor-cores-idle]" in out
    assert f"Grade: {card['grade']['letter']}" in out
    assert main(["report-card", "ml-team-a/inference-api", "--database-url", url, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["grade"], printed["notes"]) == (card["grade"], card["notes"])  # the terminal and the API agree
    assert main(["report-card", "ml-team-a/no-such-pod", "--database-url", url]) == 1
    assert main(["report-card", "no-slash", "--database-url", url]) == 2


def test_project_month_card_on_the_project_page_and_api(site) -> None:
    client, engine = site
    login(client, "admin", identity("admin").password)
    row = workload_of(engine, "inference-api")
    card = client.get(f"/api/v1/report-cards/projects/{row.project_id}?month=2026-11").json()
    assert card["scope"] == "project-month" and card["namespace"] == "ml-team-a"
    assert "tensor-cores-idle" in {n["kind"] for n in card["notes"]}
    assert client.get(f"/api/v1/report-cards/projects/{row.project_id}?month=2026-13").status_code == 400
    empty = client.get(f"/api/v1/report-cards/projects/{row.project_id}?month=2026-10").json()
    assert (empty["workloads"], empty["grade"]["letter"]) == (0, None)
    page = client.get(f"/projects/{row.project_id}/report-card?month=2026-11")
    assert page.status_code == 200 and 'data-kind="tensor-cores-idle"' in page.text


@pytest.mark.parametrize("username", ["alice", "bob"])
def test_researchers_see_only_their_projects_cards(site, username: str) -> None:
    client, engine = site
    me = identity(username)
    login(client, username, me.password)
    with Session(engine) as db:
        rows = list(db.exec(select(Workload)))
    for row in rows:
        mine = (row.cluster, row.namespace) == me.project
        api = client.get(f"/api/v1/report-cards/workloads/{row.id}")
        page = client.get(f"/workloads/{row.id}/report-card")
        assert (api.status_code, page.status_code) == ((200, 200) if mine else (404, 404)), row.pod
        if mine:
            others = {r.pod for r in rows if r.namespace != row.namespace}
            assert not [pod for pod in others if pod in api.text or pod in page.text]
        if row.project_id is not None:
            project = client.get(f"/api/v1/report-cards/projects/{row.project_id}?month=2026-11")
            assert project.status_code == (200 if mine else 404)


def test_workload_idle_seconds_follow_the_configured_idle_threshold(db_engine: Engine, make_settings) -> None:
    """The card's idle GPU-hours are judged by the scheduler's threshold, as the ledger's are."""
    settings = make_settings(db_engine, scheduler={"idle_threshold_percent": 99.5})
    poller = SourcePoller(SimulatedSource.from_settings(DEMO_SOURCE), db_engine, settings.scheduler)
    for minutes in range(0, 10, 5):
        assert poller.poll_once(now=NOW + timedelta(minutes=minutes), force=True).outcome == "success"
    row = workload_of(db_engine, "inference-api")  # busy, far above the default 5 %, below 99.5 %
    assert row.util_known_seconds > 0 and row.util_seconds / row.util_known_seconds < 99.5
    assert row.idle_gpu_seconds == pytest.approx(row.gpu_seconds) and row.gpu_seconds > 0
