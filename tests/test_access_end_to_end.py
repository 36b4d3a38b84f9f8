"""End to end in-process: the demo fleet polled into a real database, then each demo identity logs
in and must see exactly what it may, in pages, fragments and the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine

from domain.access.accounts import create_token
from domain.access.demo import DEMO_IDENTITIES, seed_demo_identities
from domain.database import session_scope
from domain.settings import DEMO_SOURCE
from web.app import create_app
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

NOW = datetime(2026, 11, 23, 9, 0, 7, tzinfo=UTC)


@dataclass(frozen=True)
class Truth:
    """What the simulator says is where, independent of the site's queries."""

    projects: set[tuple[str, str]]
    gpus_of: dict[str, set[str]]
    """namespace -> GPU UUIDs it holds (whole GPUs or a slice of them)."""
    slices_of: dict[str, int]
    all_gpus: set[str]


@pytest.fixture
def demo(db_engine: Engine, make_settings) -> Iterator[tuple[TestClient, Truth, Engine]]:
    settings = make_settings(db_engine)
    source = SimulatedSource.from_settings(DEMO_SOURCE)
    outcome = SourcePoller(source, db_engine, settings.scheduler).poll_once(now=NOW, force=True)
    assert outcome.outcome == "success", outcome
    assert seed_demo_identities(db_engine) == []

    state = source.simulation.state_at(NOW)
    gpus_of: dict[str, set[str]] = {}
    slices_of: dict[str, int] = {}
    for gpu in state.gpus:
        holders = [*gpu.pods, *(p for s in gpu.slices for p in s.pods)]
        for pod in holders:
            gpus_of.setdefault(pod.namespace, set()).add(gpu.uuid)
        for s in gpu.slices:
            for pod in s.pods:
                slices_of[pod.namespace] = slices_of.get(pod.namespace, 0) + 1
    projects = {(q.cluster, q.namespace) for q in state.quotas}
    projects |= {
        (g.cluster, p.namespace) for g in state.gpus for p in [*g.pods, *(p for s in g.slices for p in s.pods)]
    }
    truth = Truth(projects, gpus_of, slices_of, {g.uuid for g in state.gpus})
    with TestClient(create_app(settings, db_engine)) as client:
        yield client, truth, db_engine


def login(client: TestClient, username: str, password: str, next_url: str = "/") -> None:
    page = client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login",
        data={"username": username, "password": password, "next": next_url, "_csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def api_all(client: TestClient, path: str, **headers: str) -> list[dict]:
    items: list[dict] = []
    offset = 0
    while True:
        body = client.get(f"{path}?limit=500&offset={offset}", headers=headers).json()
        items += body["items"]
        offset += body["limit"]
        if offset >= body["total"]:
            assert len(items) == body["total"]
            return items


def identity(username: str):  # type: ignore[no-untyped-def]
    return next(i for i in DEMO_IDENTITIES if i.username == username)


def test_admin_sees_the_whole_fleet(demo) -> None:
    client, truth, _ = demo
    login(client, "admin", identity("admin").password)
    assert {g["uuid"] for g in api_all(client, "/api/v1/gpus")} == truth.all_gpus
    assert {(p["cluster"], p["namespace"]) for p in api_all(client, "/api/v1/projects")} == truth.projects
    assert {c["name"] for c in api_all(client, "/api/v1/clusters")} == {"moc-prod", "nerc-ocp", "edu-shared"}
    page = client.get("/projects?limit=500")
    for _, namespace in truth.projects:
        assert namespace in page.text


@pytest.mark.parametrize("username", ["alice", "bob"])
def test_researcher_sees_exactly_their_project(demo, username: str) -> None:
    client, truth, _ = demo
    me = identity(username)
    cluster, namespace = me.project
    other = next(i for i in DEMO_IDENTITIES if i.project and i.username != username)
    login(client, username, me.password)

    projects = api_all(client, "/api/v1/projects")
    assert [(p["cluster"], p["namespace"]) for p in projects] == [(cluster, namespace)]
    gpus = api_all(client, "/api/v1/gpus")
    assert {g["uuid"] for g in gpus} == truth.gpus_of[namespace]
    assert all(namespace in g["allocated_to"] for g in gpus)
    assert [c["name"] for c in api_all(client, "/api/v1/clusters")] == [cluster]
    nodes = api_all(client, "/api/v1/nodes")
    assert {n["hostname"] for n in nodes} == {g["node"] for g in gpus}
    slices = api_all(client, "/api/v1/slices")
    assert len(slices) == truth.slices_of.get(namespace, 0)
    assert all(s["allocated_to"] == namespace for s in slices)

    # pages and fragments show the same, and nothing of the other researcher's project
    for path in ("/", "/projects", "/clusters", "/gpus", "/nodes", "/slices"):
        html = client.get(path).text
        assert other.project[1] not in html, path
    assert namespace in client.get("/projects").text
    fragment = client.get("/projects?q=", headers={"HX-Request": "true", "HX-Target": "table"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and namespace in fragment.text

    # detail routes of what is not granted are indistinguishable from what does not exist
    login(client, "admin", identity("admin").password)
    everything = api_all(client, "/api/v1/projects")
    foreign = next(p for p in everything if p["namespace"] == other.project[1])
    foreign_gpu = next(g for g in api_all(client, "/api/v1/gpus") if g["uuid"] not in truth.gpus_of[namespace])
    login(client, username, me.password)
    assert client.get(f"/api/v1/projects/{foreign['id']}").status_code == 404
    assert client.get(f"/projects/{foreign['id']}").status_code == 404
    assert client.get(f"/api/v1/gpus/{foreign_gpu['id']}").status_code == 404
    assert client.get(f"/gpus/{foreign_gpu['id']}").status_code == 404
    assert client.get(f"/api/v1/projects/{projects[0]['id']}").status_code == 200


def test_api_tokens_carry_the_same_permissions(demo) -> None:
    client, truth, engine = demo
    with session_scope(engine) as session:
        token = create_token(session, "alice")
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"}
    gpus = api_all(client, "/api/v1/gpus", **headers)
    assert {g["uuid"] for g in gpus} == truth.gpus_of["ml-team-a"]
    assert client.get("/api/v1/gpus", headers={"Authorization": "Bearer ait_wrong"}).status_code == 401
    assert client.get("/api/v1/gpus", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_anonymous_callers_are_turned_away_by_audience(demo) -> None:
    client, _, _ = demo
    api = client.get("/api/v1/projects")
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/problem+json")
    assert api.json()["status"] == 401
    page = client.get("/gpus?model=x", follow_redirects=False)
    assert page.status_code in (302, 303, 307)
    assert page.headers["location"] == "/login?next=%2Fgpus%3Fmodel%3Dx"
    fragment = client.get("/gpus", headers={"HX-Request": "true", "HX-Target": "table"})
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"] == "/login" and fragment.text == ""


def test_login_rejects_bad_passwords_forged_forms_and_open_redirects(demo) -> None:
    client, _, _ = demo
    page = client.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text).group(1)
    wrong = client.post("/login", data={"username": "alice", "password": "nope", "_csrf_token": token})
    assert wrong.status_code == 401 and "wrong password" in wrong.text
    forged = client.post("/login", data={"username": "alice", "password": identity("alice").password})
    assert forged.status_code == 403
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        fresh = client.get("/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', fresh.text).group(1)
        response = client.post(
            "/login",
            data={"username": "alice", "password": identity("alice").password, "next": target, "_csrf_token": token},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/", target


def test_logout_ends_the_session(demo) -> None:
    client, _, _ = demo
    login(client, "bob", identity("bob").password)
    assert client.get("/api/v1/projects").status_code == 200
    token = client.cookies.get("csrftoken")
    assert client.post("/logout", headers={"x-csrftoken": token}, follow_redirects=False).status_code == 303
    assert client.get("/api/v1/projects").status_code == 401
