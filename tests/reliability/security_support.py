"""Shared ground for the security checks: a fleet where every object belongs to researcher A or B.

Two clusters, one research project each: ``cluster-alpha``/``team-alpha`` (alice, researcher A) and
``cluster-beta``/``team-beta`` (bob, researcher B). Every node, GPU, MIG slice, workload and
finding therefore has exactly one owner, known from the fleet file rather than from the site's own
queries, so the authorization matrix can say what each caller must and must not see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.access.accounts import create_token, ensure_user, find_project, grant_project
from domain.database import session_scope
from domain.models import Cluster, Finding, Gpu, GpuSlice, Node, ResearchProject, Workload, utcnow
from domain.settings import SourceSettings
from tests.conftest import settings_for, sqlite_template
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.sources.simulated import SimulatedSource

FLEET = """
name = "security-matrix"
step_seconds = 15
cycle_seconds = 3600
{clusters}
"""

CLUSTER = """
[[clusters]]
name = "cluster-{team}"
pod_labels = "plain"
xid_errors_count = true

[[clusters.nodes]]
hostname = "node-{team}-1"
model = "NVIDIA A100-SXM4-80GB"
gpus = 3
driver_version = "550.54.15"
mig = [{{ gpu = 2, profiles = ["3g.40gb", "4g.40gb"] }}]

[[clusters.namespaces]]
name = "team-{team}"
gpu_quota = 4

[[clusters.workloads]]
namespace = "team-{team}"
pod = "{team}-train"
container = "trainer"
utilization = 80
behaviour = "xid"
xid_code = 79
xid_after_seconds = 300
devices = [{{ node = "node-{team}-1", gpu = 0 }}]

[[clusters.workloads]]
namespace = "team-{team}"
pod = "{team}-notebook"
container = "notebook"
behaviour = "idle"
devices = [{{ node = "node-{team}-1", gpu = 1 }}]

[[clusters.workloads]]
namespace = "team-{team}"
pod = "{team}-sliced"
container = "worker"
utilization = 60
devices = [
    {{ node = "node-{team}-1", gpu = 2, profile = "3g.40gb" }},
    {{ node = "node-{team}-1", gpu = 2, profile = "4g.40gb" }},
]
"""

TEAMS = ("alpha", "beta")
OWNERS = {"alpha": "alice", "beta": "bob"}
PASSWORDS = {"alice": "alice-matrix-pw", "bob": "bob-matrix-pw", "admin": "admin-matrix-pw"}
INTERVAL = 30.0
POLLS = 40


def fleet_text() -> str:
    return FLEET.format(clusters="".join(CLUSTER.format(team=team) for team in TEAMS))


def source_settings(directory: Path) -> SourceSettings:
    path = directory / "security-fleet.toml"
    path.write_text(fleet_text())
    return SourceSettings(name="sec-hub", kind="simulated", fleet=str(path))


def build_fleet(engine: Engine, directory: Path) -> None:
    """Poll the two-team fleet through the signal pipeline (findings, sessions), then add the people."""
    settings = settings_for(engine)
    source = SimulatedSource.from_settings(source_settings(directory))
    start = utcnow().replace(minute=0, second=7, microsecond=0) - timedelta(hours=2)
    poller = SourcePoller(
        source, engine, settings.scheduler, interval_seconds=INTERVAL, signals=SignalProcessor(settings, engine)
    )
    for step in range(POLLS):
        assert poller.poll_once(now=start + timedelta(seconds=INTERVAL * step), force=True).outcome == "success"
    with session_scope(engine) as session:
        ensure_user(session, "admin", display_name="Matrix Admin", password=PASSWORDS["admin"], is_admin=True)
        for team, username in OWNERS.items():
            ensure_user(
                session, username, display_name=f"Researcher {team}", password=PASSWORDS[username], is_admin=False
            )
            grant_project(
                session, username, find_project(session, f"cluster-{team}", f"team-{team}"), granted_by="test"
            )


def fleet_template(directory: Path) -> Path:
    return sqlite_template(directory / "security.db", lambda engine: build_fleet(engine, directory))


@dataclass
class Owned:
    """One team's objects: ids for path parameters and names that must never leak to the other team."""

    team: str
    ids: dict[str, list[Any]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def first(self, kind: str) -> Any:
        values = self.ids.get(kind) or []
        if not values:
            raise LookupError(f"the fixture fleet has no {kind} of team {self.team}")
        return values[0]


def ownership(engine: Engine) -> dict[str, Owned]:
    """Who owns what, from the fleet's structure (cluster per team), not from the site's scoping."""
    owned = {team: Owned(team) for team in TEAMS}
    with Session(engine) as session:
        clusters = {c.id: c.name.removeprefix("cluster-") for c in session.exec(select(Cluster)).all()}
        assert set(clusters.values()) == set(TEAMS), clusters
        projects = session.exec(select(ResearchProject)).all()
        nodes = session.exec(select(Node)).all()
        gpus = session.exec(select(Gpu)).all()
        slices = session.exec(select(GpuSlice)).all()
        node_team = {n.id: clusters[n.cluster_id] for n in nodes}
        gpu_team = {g.id: node_team[g.node_id] for g in gpus}
        for cluster_id, team in clusters.items():
            owned[team].ids.setdefault("cluster_id", []).append(cluster_id)
            owned[team].names.add(f"cluster-{team}")
        for project in projects:
            team = clusters[project.cluster_id]
            assert project.namespace == f"team-{team}", f"unexpected project {project.namespace} on cluster-{team}"
            owned[team].ids.setdefault("project_id", []).append(project.id)
            owned[team].names.add(project.namespace)
        for node in nodes:
            owned[node_team[node.id]].ids.setdefault("node_id", []).append(node.id)
            owned[node_team[node.id]].names.add(node.hostname)
        for gpu in gpus:
            owned[gpu_team[gpu.id]].ids.setdefault("gpu_id", []).append(gpu.id)
            owned[gpu_team[gpu.id]].names.add(gpu.uuid)
        for piece in slices:
            gpu = next(g for g in gpus if g.id == piece.gpu_id)
            owned[gpu_team[gpu.id]].ids.setdefault("slice", []).append((gpu.uuid, piece.mig_instance_id))
        for finding in session.exec(select(Finding)).all():
            team = clusters[finding.cluster_id] if finding.cluster_id else None
            assert team is not None, f"finding {finding.id} has no cluster"
            owned[team].ids.setdefault("finding_id", []).append(finding.id)
        for workload in session.exec(select(Workload)).all():
            team = workload.cluster.removeprefix("cluster-")
            owned[team].ids.setdefault("workload_id", []).append(workload.id)
            owned[team].names.add(workload.pod)
            owned[team].names.add(workload.trace_id)
    for team in TEAMS:
        entities = owned[team].ids.setdefault("entity_id", [])
        cluster, namespace = f"cluster-{team}", f"team-{team}"
        entities.append(f"urn:ngsi-ld:Cluster:sec-hub:{cluster}")
        entities.append(f"urn:ngsi-ld:ResearchProject:sec-hub:{cluster}:{namespace}")
        entities += [f"urn:ngsi-ld:Node:sec-hub:{cluster}:node-{team}-1"]
        with Session(engine) as session:
            uuids = [g.uuid for g in session.exec(select(Gpu)).all() if g.id in owned[team].ids["gpu_id"]]
        entities += [f"urn:ngsi-ld:GPU:{uuid}" for uuid in uuids]
        entities += [f"urn:ngsi-ld:GPUSlice:{uuid}:{instance}" for uuid, instance in owned[team].ids["slice"]]
    return owned


CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


def csrf_token(client: TestClient) -> str:
    """The CSRF token the site hands this client (the login form carries it)."""
    match = CSRF_FIELD.search(client.get("/login").text)
    assert match, "the login form has no CSRF token"
    return match.group(1)


def login(client: TestClient, username: str, password: str | None = None, next_url: str = "/") -> Any:
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "next": next_url,
            "_csrf_token": token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return response


def token_for(engine: Engine, username: str) -> str:
    with session_scope(engine) as session:
        return create_token(session, username, name="matrix")


def client_of(app: Litestar) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
