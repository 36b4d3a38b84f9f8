"""The outside probe of issue 13, kept: the demo fleet, each demo researcher, every route and every link.

An outside probe of the running demo (as a researcher, with cookies and tokens, over every route of the
route table and every page and fragment link) found a co-tenant's project name on a shared MIG GPU, 500s
for ids beyond 64 bits, 405 for HEAD and a CSV with two charsets. These tests repeat it on every run:

- the leak scan: for ``alice`` and ``bob``, every GET route (JSON, NGSI-LD, pages, htmx fragments, CSV)
  with ids they may see, then every same-site link and htmx link those pages contain, each answer
  scanned for the names of the projects they may not see (exact tokens: a name that is part of a longer
  name or word does not count), and for a cache that may keep it;
- ids out of range (2**63, -1, 0, huge) on every route with an id in its path, and in id filters and forms;
- HEAD on every GET route of the site and the receiver.

The figures of each category are recorded for docs/reliability.md.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from ai_telemetry.demo import backfill
from domain.access import ReadScope
from domain.access.demo import DEMO_IDENTITIES, seed_demo_identities
from domain.database import create_db_engine
from domain.inventory import PageRequest
from domain.inventory.queries import list_gpus
from domain.models import AccessGrant, Allocation, ResearchProject, Workload
from domain.settings import DEMO_SOURCE, DatabaseSettings
from tests.conftest import settings_for, sqlite_copy, sqlite_template
from tests.reliability.security_support import csrf_token
from tests.reliability.test_authorization_matrix import (
    ID_FILTERS,
    Route,
    _requires,
    query_parameters,
    required_query,
    routes_of,
)
from web.app import create_app
from worker.pipeline.processor import SignalProcessor
from worker.receiver import create_receiver_app
from worker.sources.simulated import SimulatedSource

RESEARCHERS = ("alice", "bob")
HISTORY_HOURS = 2
CRAWL_LIMIT = 400
"""New same-site links (pages and htmx fragments) followed per researcher beyond the route table's calls."""
OUT_OF_RANGE = (2**63, 2**63 - 1, 2**31, -1, 0, 10**30)
"""Beyond SQLite's and PostgreSQL's integers, at their edges, and below the first row id."""
LINK = re.compile(r'(?:href|hx-get)="(/[^"]*)"')
SKIP_LINKS = ("/static/", "/logout", "/schema")


def password(username: str) -> str:
    return next(i.password for i in DEMO_IDENTITIES if i.username == username)


def build_demo(engine: Engine) -> None:
    """The demo as ``make demo`` starts it: hours of the built-in fleet through the pipeline, then the logins."""
    settings = settings_for(engine)
    backfill(
        settings,
        engine,
        [SimulatedSource.from_settings(DEMO_SOURCE)],
        HISTORY_HOURS,
        signals=SignalProcessor(settings, engine),
    )
    assert seed_demo_identities(engine) == []


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("probe-demo")
    return sqlite_template(directory / "demo.db", build_demo)


@pytest.fixture
def demo(template: Path, tmp_path: Path) -> Iterator[tuple[Engine, Litestar]]:
    engine = sqlite_copy(template, tmp_path)
    try:
        yield engine, create_app(settings_for(engine), engine)
    finally:
        engine.dispose()


def signed_in(app: Litestar, username: str) -> TestClient:
    client = TestClient(app)
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={"username": username, "password": password(username), "next": "/", "_csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


# --- who may see which project names -----------------------------------------------------------------


def hidden_names(engine: Engine, username: str) -> set[str]:
    """Namespaces of the projects ``username`` may not read, from the grants (not from the site's queries).

    A namespace that is also the name of a project they may read cannot be told apart, so it is left out.
    """
    with Session(engine) as session:
        grants = session.exec(select(AccessGrant).where(AccessGrant.principal == f"user:{username}")).all()
        projects = session.exec(select(ResearchProject)).all()
    projects_granted = {g.project_id for g in grants if g.project_id is not None}
    clusters_granted = {g.cluster_id for g in grants if g.cluster_id is not None}
    mine = {p.namespace for p in projects if p.id in projects_granted or p.cluster_id in clusters_granted}
    assert mine, f"{username} may read no project: the demo grants changed"
    return {p.namespace for p in projects} - mine


def token_pattern(names: set[str]) -> re.Pattern[str]:
    """Exact tokens: ``ml-team-a`` is not found in ``ml-team-ab`` nor ``robotics`` in ``robotics-sim-0``."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-]|\.\w)")


def test_token_pattern_matches_exact_names_only() -> None:
    pattern = token_pattern({"ml-team-a", "robotics", "vision-lab"})
    for text in ('"allocated_to": ["ml-team-a"]', "<td>robotics</td>", "held by vision-lab.", "q=robotics&x"):
        assert pattern.search(text), text
    for text in ("ml-team-ab", "robotics-sim-0", "xrobotics", "vision-lab-2", "a.robotics", "ml-team-a.example"):
        assert not pattern.search(text), text


def shared_gpus(engine: Engine) -> dict[int, set[str]]:
    """GPUs held now by more than one project (whole or by slices), with the namespaces holding them."""
    held: dict[int, set[str]] = {}
    with Session(engine) as session:
        rows = session.exec(
            select(Allocation.gpu_id, ResearchProject.namespace)
            .join(ResearchProject, ResearchProject.id == Allocation.project_id)
            .where(Allocation.until.is_(None))  # type: ignore[union-attr]
        ).all()
    for gpu_id, namespace in rows:
        held.setdefault(gpu_id, set()).add(namespace)
    return {gpu_id: names for gpu_id, names in held.items() if len(names) > 1}


# --- the calls the route table asks for -----------------------------------------------------------------


@dataclass
class Probe:
    """What one researcher's probe sent and found."""

    client: TestClient
    hidden: re.Pattern[str]
    categories: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seen: set[tuple[str, bool]] = field(default_factory=set)

    def get(self, url: str, *, htmx: bool = False) -> Any:
        headers = {"HX-Request": "true", "HX-Target": "table"} if htmx else {}
        response = self.client.get(url, headers=headers, follow_redirects=False)
        self.seen.add((url, htmx))
        self.categories[category(url, response, htmx)] += 1
        self.inspect(url, response, htmx)
        return response

    def inspect(self, url: str, response: Any, htmx: bool) -> None:
        where = f"{url}{' (htmx)' if htmx else ''}"
        if response.status_code >= 500:
            self.problems.append(f"{where}: {response.status_code}")
        leaked = {m.group(0) for m in self.hidden.finditer(response.text)}
        leaked |= {m.group(0) for m in self.hidden.finditer(str(dict(response.headers)))}
        if leaked:
            self.problems.append(f"{where}: names {sorted(leaked)}")
        if response.headers.get("cache-control") != "no-store":
            self.problems.append(f"{where}: Cache-Control {response.headers.get('cache-control')!r}")


def category(url: str, response: Any, htmx: bool) -> str:
    content_type = response.headers.get("content-type", "")
    if url.startswith("/ngsi-ld/"):
        return "NGSI-LD"
    if url.startswith("/api/"):
        return "JSON API"
    if "text/csv" in content_type:
        return "CSV"
    return "htmx fragments" if htmx else "HTML pages"


def visible_ids(client: TestClient) -> dict[str, list[Any]]:
    """Ids the researcher may use in paths, from the lists the site gives them."""

    def ids(path: str, key: str = "id", **params: str) -> list[Any]:
        response = client.get(path, params={"limit": 500, **params})
        assert response.status_code == 200, (path, response.status_code)
        body = response.json()
        items = body["items"] if isinstance(body, dict) else body
        return [item[key] for item in items]

    found = {
        "cluster_id": ids("/api/v1/clusters"),
        "node_id": ids("/api/v1/nodes"),
        "gpu_id": ids("/api/v1/gpus"),
        "project_id": ids("/api/v1/projects"),
        "finding_id": client.get("/api/v1/findings", params={"status": "all", "limit": 500}).json()["items"],
        "workload_id": ids("/api/v1/workloads"),
        "entity_id": [
            entity
            for kind in ("Cluster", "Node", "GPU", "GPUSlice", "ResearchProject")
            for entity in ids("/ngsi-ld/v1/entities", "id", type=kind)[:3]
        ],
    }
    found["finding_id"] = [f["id"] for f in found["finding_id"]]
    for name, values in found.items():
        assert values, f"the researcher sees no {name}: the demo fleet changed"
    return found


def route_urls(route: Route, ids: dict[str, list[Any]]) -> list[str]:
    """``route`` with each visible id in its path (a few of each), and each required query value."""
    urls = [route.path]
    for param in route.params:
        values = ids[param][:3] if param in ids else []
        if not values:
            return []
        urls = [re.sub(r"\{" + param + r":[^}]+\}", str(v), u) for u in urls for v in values]
    query = [n for n, p in route.handler.parsed_fn_signature.parameters.items() if n in ("since", "model", "type")]
    for name in query:
        if route.handler.parsed_fn_signature.parameters[name].has_default:
            continue
        urls = [f"{u}{'&' if '?' in u else '?'}{name}={v}" for u in urls for v in required_query(name)]
    return urls


def probe(app: Litestar, engine: Engine, username: str) -> Probe:
    client = signed_in(app, username)
    run = Probe(client, token_pattern(hidden_names(engine, username)))
    ids = visible_ids(client)
    routes = [r for r in routes_of(app) if r.method == "GET" and not r.path.startswith(("/static", "/schema"))]
    queue: list[tuple[str, bool]] = []
    for route in routes:
        for url in route_urls(route, ids):
            queue.append((url, False))
            if not route.api:
                queue.append((url, True))
            filters = [n for n in query_parameters(route.handler) if n in ID_FILTERS]
            for name in filters:  # the lists filtered by each visible id of that kind
                for value in ids[ID_FILTERS[name]][:2]:
                    queue.append((f"{url}{'&' if '?' in url else '?'}{name}={value}", False))
    crawled = 0
    queued = set(queue)
    while queue:
        url, htmx = queue.pop(0)
        if (url, htmx) in run.seen:
            continue
        response = run.get(url, htmx=htmx)
        if "html" not in response.headers.get("content-type", ""):
            continue
        for match in LINK.finditer(response.text):
            link = (html.unescape(match.group(1)), match.group(0).startswith("hx-get"))
            if link[0].startswith(SKIP_LINKS) or link in queued or crawled >= CRAWL_LIMIT:
                continue
            crawled += 1
            queued.add(link)
            queue.append(link)
    run.categories["links followed"] = crawled
    return run


def test_no_researcher_sees_the_name_of_a_project_they_may_not_read(demo, reliability) -> None:  # type: ignore[no-untyped-def]
    engine, app = demo
    shared = shared_gpus(engine)
    assert any("ml-team-a" in names for names in shared.values()), "the demo has no shared GPU of alice's project"
    totals: Counter[str] = Counter()
    problems: list[str] = []
    for username in RESEARCHERS:
        run = probe(app, engine, username)
        totals.update(run.categories)
        problems += [f"{username}: {p}" for p in run.problems]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])

    # the shared GPU says it is shared, not with whom
    alice = signed_in(app, "alice")
    gpu_id = next(g for g, names in shared.items() if "ml-team-a" in names)
    gpu = alice.get(f"/api/v1/gpus/{gpu_id}").json()
    assert gpu["allocated_to"] == ["ml-team-a"] and gpu["other_projects"] == len(shared[gpu_id]) - 1
    page = alice.get(f"/gpus/{gpu_id}").text
    others = len(shared[gpu_id]) - 1
    assert f"ml-team-a and {others} other project" in page
    requests = sum(v for k, v in totals.items() if k != "links followed")
    reliability.record(
        area="Security",
        tried="The outside probe as each demo researcher (alice, bob) on the demo fleet, which has GPUs shared by "
        "several projects' MIG slices: every GET route of the route table with the ids they may see, filtered by "
        "each, then every page and htmx link those pages hold; each answer scanned for the exact names of the "
        "projects they may not read",
        held=f"no name of another project in any of {requests} answers (before: a shared GPU named its co-tenants "
        "in the API, NGSI-LD, the GPU page and the node page), no 5xx, Cache-Control: no-store on every answer; "
        "a shared GPU shows 'and N other projects'",
        requests=requests,
        **{name.replace(" ", "_").replace("-", "_").lower(): count for name, count in sorted(totals.items())},
    )


# --- ids out of range ------------------------------------------------------------------------------------


def _rows_of(response: httpx.Response) -> object:
    """What a list answer lists: its JSON items (or a statement's projects), or an HTML page's table rows."""
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return body.get("items", body.get("projects")) if isinstance(body, dict) else body
    return response.text.count("<tr")


def test_ids_out_of_range_are_refused_on_every_route(demo, reliability) -> None:  # type: ignore[no-untyped-def]
    _, app = demo
    for username in ("alice", "admin"):
        client = signed_in(app, username)
        token = csrf_token(client)
        outcomes: Counter[int] = Counter()
        failures = []
        routes = [r for r in routes_of(app) if re.search(r":int\}", r.path)]
        assert routes, "no route with an integer path parameter"
        for route in routes:
            for value in OUT_OF_RANGE:
                url = re.sub(r"\{\w+:int\}", str(value), route.path)
                url = re.sub(r"\{(\w+):str\}", "urn:ngsi-ld:GPU:x", url)
                response = client.request(route.method, url, headers={"x-csrftoken": token}, follow_redirects=False)
                outcomes[response.status_code] += 1
                # an admin-only route refuses everyone else before it looks at its arguments
                refused = {400, 404} | ({403} if username != "admin" and _requires(route.handler, "admin") else set())
                if response.status_code not in refused:
                    failures.append(f"{route.method} {url}: {response.status_code}")
        filters = 0
        for route in routes_of(app):
            parameters = query_parameters(route.handler)
            names = [n for n in parameters if n in ID_FILTERS]
            if route.method != "GET" or not names or route.params:
                continue
            required = "".join(f"&{n}={required_query(n)[0]}" for n in ("since", "model") if n in parameters)
            for name in names:
                # a filter takes an id or a name: an impossible id is an unknown reference, answered as one
                unknown = client.get(f"{route.path}?{name}=no-such-{name}{required}", follow_redirects=False)
                for value in (2**63, 10**30, -1):
                    url = f"{route.path}?{name}={value}{required}"
                    response = client.get(url, follow_redirects=False)
                    filters += 1
                    refused = {400, 403} if username != "admin" else {400}  # admin pages: 403 first
                    if response.status_code in refused:
                        continue
                    if response.status_code != 200 or _rows_of(response) != _rows_of(unknown):
                        failures.append(f"GET {url}: {response.status_code}, not answered as an unknown {name}")
        assert not failures, f"{username}:\n" + "\n".join(failures)
    admin = signed_in(app, "admin")
    token = csrf_token(admin)
    for form in (
        {"project_id": str(2**63), "kind": "user", "name": "alice"},
        {"team": "probe", "projects": str(2**63)},
    ):
        path = "/admin/access/grant" if "kind" in form else "/admin/access/clients"
        answer = admin.post(path, data=form, headers={"x-csrftoken": token}, follow_redirects=False)
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
    reliability.record(
        area="Bad input",
        tried=f"ids {', '.join(str(v) for v in OUT_OF_RANGE)} in the path of every route with an id "
        f"({len(routes)}, GET and POST, as a researcher and as the admin), 2**63, 10**30 and -1 in every id filter "
        f"({filters} calls), and 2**63 in the admin forms' project ids",
        held="400 (out of range) or 404 in every path, an id filter answered as an unknown reference (no rows), "
        "never a 5xx (before: 500 from SQLite's OverflowError on /findings/{id} and its acknowledge and resolve "
        "posts)",
        routes=len(routes),
        statuses=" ".join(f"{k}:{v}" for k, v in sorted(outcomes.items())),
        filter_calls=filters,
    )


# --- HEAD ---------------------------------------------------------------------------------------------------


def test_head_answers_like_get_on_every_get_route(demo, reliability) -> None:  # type: ignore[no-untyped-def]
    engine, app = demo
    client = signed_in(app, "alice")
    ids = visible_ids(client)
    checked = 0
    for route in routes_of(app):
        if route.method != "GET":
            continue
        urls = route_urls(route, {**ids, "file_path": ["htmx.min.js"], "path": ["openapi.json"]})
        for url in urls[:1]:
            got, head = client.get(url, follow_redirects=False), client.head(url, follow_redirects=False)
            checked += 1
            assert head.status_code == got.status_code, (url, head.status_code, got.status_code)
            assert head.content == b"", url
            assert head.headers.get("content-type") == got.headers.get("content-type"), url
    receiver = create_receiver_app(settings_for(engine, receiver={"webhook_token": "t" * 32}), engine)
    with TestClient(receiver) as worker:
        for path in ("/healthz", "/readyz", "/metrics"):
            head = worker.head(path)
            checked += 1
            assert head.status_code == 200 and head.content == b"", (path, head.status_code)
    assert client.head("/healthz").status_code == 200
    reliability.record(
        area="Bad input",
        tried=f"HEAD on every GET route of the site and the receiver ({checked}), /healthz included, as a researcher",
        held="the status and headers of GET, no body (before: 405 on every route but static files)",
        routes=checked,
    )


def test_the_monthly_csv_has_one_charset(demo) -> None:  # type: ignore[no-untyped-def]
    _, app = demo
    client = signed_in(app, "bob")
    response = client.get("/reports/monthly.csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"


# --- aggregates: the researcher's scope, or labelled as capacity ------------------------------------------


def test_a_researchers_aggregates_are_of_their_scope_or_labelled_capacity(demo) -> None:  # type: ignore[no-untyped-def]
    _, app = demo
    admin = signed_in(app, "admin")
    capacity = {c["id"]: c for c in admin.get("/api/v1/clusters").json()["items"]}
    everything = admin.get("/api/v1/pipeline").json()["open_findings"]
    for username in RESEARCHERS:
        client = signed_in(app, username)
        for cluster in client.get("/api/v1/clusters").json()["items"]:
            whole = capacity[cluster["id"]]
            assert (cluster["node_count"], cluster["gpu_count"]) == (whole["node_count"], whole["gpu_count"])
            for kind, path in (("node", "nodes"), ("gpu", "gpus"), ("slice", "slices")):
                listed = client.get(f"/api/v1/{path}", params={"cluster": cluster["id"], "limit": 1}).json()["total"]
                assert cluster[f"visible_{kind}_count"] == listed, (username, kind)
            assert cluster["visible_gpu_count"] < cluster["gpu_count"]  # a researcher sees part of a cluster
            page = client.get(f"/clusters/{cluster['id']}").text
            assert f"{cluster['visible_gpu_count']} visible to you, of {cluster['gpu_count']}" in page
        mine = client.get("/api/v1/findings", params={"limit": 1}).json()["total"]
        assert client.get("/api/v1/pipeline").json()["open_findings"] == mine < everything
        assert re.search(
            rf'<span class="value">{mine}</span><span class="name">findings open now \(yours\)',
            (client.get("/pipeline").text),
        )
    for cluster in capacity.values():  # the admin sees all of it: both figures agree
        assert cluster["visible_gpu_count"] == cluster["gpu_count"]


# --- bidirectional controls in labels ------------------------------------------------------------------------

SPOOF = "train-job\u202egnp.exe"


def test_bidi_controls_in_labels_are_shown_not_obeyed(demo) -> None:  # type: ignore[no-untyped-def]
    engine, app = demo
    with Session(engine) as session:
        workload = session.exec(select(Workload).where(Workload.namespace == "ml-team-a")).first()
        assert workload is not None
        workload.pod = SPOOF
        session.add(workload)
        session.commit()
        workload_id = workload.id
    client = signed_in(app, "alice")
    for url, htmx in (("/workloads", False), ("/workloads", True), (f"/workloads/{workload_id}", False)):
        headers = {"HX-Request": "true", "HX-Target": "table"} if htmx else {}
        text = client.get(url, headers=headers).text
        assert "\u202e" not in text, url
        assert "train-job[U+202E]gnp.exe" in text, url
    assert client.get(f"/api/v1/workloads/{workload_id}").json()["pod"] == SPOOF  # the data itself is kept as is


# --- the invariant behind the leak fix, for any scope ----------------------------------------------------


def test_holders_of_a_gpu_are_named_only_within_the_scope_and_counted_otherwise(template: Path) -> None:
    """For any set of granted projects and clusters: each GPU names exactly the visible projects holding it,
    counts the others, and names plus count are all its holders (nothing lost, nothing leaked)."""
    engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{template}"))
    with Session(engine) as session:
        projects = {p.id: p for p in session.exec(select(ResearchProject)).all()}
        holders: dict[int, set[int]] = {}
        for gpu_id, project_id in session.exec(
            select(Allocation.gpu_id, Allocation.project_id).where(Allocation.until.is_(None))  # type: ignore[union-attr]
        ).all():
            holders.setdefault(gpu_id, set()).add(project_id)
    cluster_ids = sorted({p.cluster_id for p in projects.values()})

    @settings(max_examples=40, deadline=None)
    @given(
        granted=st.sets(st.sampled_from(sorted(projects))),
        clusters=st.sets(st.sampled_from(cluster_ids), max_size=1),
    )
    def check(granted: set[int], clusters: set[int]) -> None:
        scope = ReadScope(project_ids=frozenset(granted), cluster_ids=frozenset(clusters))
        visible = {pid for pid, p in projects.items() if pid in granted or p.cluster_id in clusters}
        with Session(engine) as session:
            gpus = list_gpus(session, scope, PageRequest(limit=500)).items
        for gpu in gpus:
            held = holders.get(gpu.id, set())
            assert sorted(gpu.allocated_to) == sorted({projects[p].namespace for p in held & visible})
            assert gpu.other_projects == len(held - visible)

    try:
        check()
    finally:
        engine.dispose()
