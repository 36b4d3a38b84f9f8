"""Site latency with a 10,000-GPU fleet on PostgreSQL: main pages and API routes over real HTTP
(uvicorn on loopback), each beside the bare SQL for the same rows timed in the same run.

Targets (issue 7): pages p95 <= 150 ms, API p95 <= 75 ms, at most 3x the bare SQL.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn
from litestar import Litestar, get
from sqlalchemy import Engine, text

from benchmarks.fleet_data import populate
from benchmarks.measure import Timing, report, timed
from domain.access.accounts import ensure_user, find_project, grant_project
from domain.database import create_db_engine, session_scope, upgrade
from domain.models import utcnow
from domain.settings import load_settings
from tests.services import find_postgres_bin, free_port, running_postgres
from web.app import create_app

REPEAT = 60

# The bare SQL a hand-written endpoint would run for the same rows (page and count where the route pages).
BARE = {
    "gpus": "SELECT g.*, n.hostname, c.id, c.name, h.name FROM gpu g JOIN node n ON n.id = g.node_id "
    "JOIN cluster c ON c.id = n.cluster_id JOIN hub h ON h.id = c.hub_id ORDER BY n.hostname, g.id LIMIT 50; "
    "SELECT count(*) FROM gpu",
    "projects": "SELECT p.*, c.name, h.name FROM research_project p JOIN cluster c ON c.id = p.cluster_id "
    "JOIN hub h ON h.id = c.hub_id ORDER BY p.namespace, p.id LIMIT 50; SELECT count(*) FROM research_project",
    "clusters": "SELECT c.*, h.name FROM cluster c JOIN hub h ON h.id = c.hub_id ORDER BY c.name LIMIT 50",
    "overview": "SELECT c.id, c.name, g.model, count(*), count(*) FILTER (WHERE g.utilization >= 5) FROM gpu g "
    "JOIN node n ON n.id = g.node_id JOIN cluster c ON c.id = n.cluster_id GROUP BY c.id, c.name, g.model",
    "usage": "SELECT bucket_start, sum(util_seconds) / sum(seconds_util_known), sum(seconds) FROM usage_rollup "
    "WHERE bucket_start >= now() - interval '1 hour' GROUP BY bucket_start ORDER BY bucket_start",
}


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    bare: str
    page: bool


ROUTES = [
    Route("overview page /", "/", "overview", True),
    Route("GPU table page /gpus", "/gpus", "gpus", True),
    Route("GPU table, page 100 /gpus?offset=5000", "/gpus?offset=5000", "gpus", True),
    Route("projects page /projects", "/projects", "projects", True),
    Route("clusters page /clusters", "/clusters", "clusters", True),
    Route("API /api/v1/gpus", "/api/v1/gpus", "gpus", False),
    Route("API /api/v1/gpus?q=GPU-00042", "/api/v1/gpus?q=GPU-00042", "gpus", False),
    Route("API /api/v1/projects", "/api/v1/projects", "projects", False),
    Route("API /api/v1/clusters", "/api/v1/clusters", "clusters", False),
]


def _serve(app: object, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("site did not start")
        time.sleep(0.05)
    return server


def _bare_app(engine: Engine) -> Litestar:
    """The least a web endpoint can do: run the bare SQL and return its rows as JSON, no auth, no templates."""

    @get("/bare/{name:str}", sync_to_thread=True)
    def bare(name: str) -> list[list[str]]:
        with engine.connect() as connection:
            return [[str(v) for v in row] for s in BARE[name].split("; ") for row in connection.execute(text(s))]

    return Litestar([bare], logging_config=None)


def _login(base: str, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    csrf = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"username": user, "password": password, "_csrf_token": csrf})
    return client


def run() -> None:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        print("PostgreSQL not installed: run scripts/install-test-services first")
        return
    with running_postgres(bin_dir) as url:
        settings = load_settings({"database": {"url": url}, "site": {"session_secret": "s" * 40}})
        engine = create_db_engine(settings.database)
        upgrade(engine)
        started = time.perf_counter()
        populate(engine, now=utcnow())
        with engine.connect() as connection:
            gpus = connection.execute(text("SELECT count(*) FROM gpu")).scalar_one()
            rollups = connection.execute(text("SELECT count(*) FROM usage_rollup")).scalar_one()
            connection.execute(text("ANALYZE"))
            connection.commit()
        print(f"\n  populated {gpus} GPUs, {rollups} rollup rows in {time.perf_counter() - started:.0f} s")
        with session_scope(engine) as session:
            ensure_user(session, "admin", display_name="Admin", password="admin-bench", is_admin=True)
            ensure_user(session, "researcher", display_name="Researcher", password="researcher-bench", is_admin=False)
            grant_project(session, "researcher", find_project(session, "cluster-03", "project-07"), granted_by="bench")

        with engine.connect() as connection:
            cluster_id = connection.execute(text("SELECT id FROM cluster WHERE name = 'cluster-03'")).scalar_one()
        routes = [  # a filter by name resolves it first (one indexed lookup in the caller's scope)
            *ROUTES,
            Route(f"API /api/v1/gpus?cluster={cluster_id}", f"/api/v1/gpus?cluster={cluster_id}", "gpus", False),
            Route("API /api/v1/gpus?cluster=cluster-03", "/api/v1/gpus?cluster=cluster-03", "gpus", False),
        ]

        port, bare_port = free_port(), free_port()
        server = _serve(create_app(settings, engine), port)
        bare_server = _serve(_bare_app(engine), bare_port)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{bare_port}") as plain:
                bare_http = {
                    name: timed(lambda name=name: plain.get(f"/bare/{name}").raise_for_status(), repeat=REPEAT)
                    for name in BARE
                }
            with engine.connect() as connection:
                bare = {
                    name: timed(
                        lambda sql=sql: [connection.execute(text(s)).all() for s in sql.split("; ")], repeat=REPEAT
                    )
                    for name, sql in BARE.items()
                }
            for user, password in (("admin", "admin-bench"), ("researcher", "researcher-bench")):
                client = _login(base, user, password)
                rows: list[tuple[str, str]] = []
                for route in routes:

                    def fetch(route: Route = route, client: httpx.Client = client) -> None:
                        client.get(route.path).raise_for_status()

                    timing: Timing = timed(fetch, repeat=REPEAT)
                    target = 150 if route.page else 75
                    ratio = timing.p50 / bare[route.bare].p50
                    http_ratio = timing.p50 / bare_http[route.bare].p50
                    rows.append(
                        (
                            route.name,
                            f"p50 {timing.p50:6.1f} ms  p95 {timing.p95:6.1f} ms "
                            f"({'within' if timing.p95 <= target else 'OVER'} {target} ms)  "
                            f"bare SQL {bare[route.bare].p50:5.1f} ms ({ratio:4.1f}x)  "
                            f"bare endpoint {bare_http[route.bare].p50:5.1f} ms ({http_ratio:4.1f}x)",
                        )
                    )
                report(f"Site over HTTP, 10,000 GPUs, PostgreSQL, as {user}", rows)
                client.close()
        finally:
            server.should_exit = True
            bare_server.should_exit = True
            engine.dispose()
