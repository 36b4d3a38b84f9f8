"""Operational endpoints: liveness, readiness (database reachable) and Prometheus metrics."""

from __future__ import annotations

from litestar import MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select
from sqlmodel import Session

from domain.database import ping
from domain.models import Cluster, Gpu, Hub, Node
from domain.statuses import ClusterStatus, Health
from web.identity import site_context


@get("/healthz", media_type=MediaType.JSON, include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", sync_to_thread=True, include_in_schema=False)
def readyz(state: State) -> Response[dict[str, str]]:
    if ping(site_context(state).engine):
        return Response({"status": "ready"})
    return Response({"status": "unavailable", "reason": "database unreachable"}, status_code=503)


def _fleet_registry(state: State) -> CollectorRegistry:
    """Fleet gauges read at scrape time, in a registry of their own so replicas never disagree."""
    registry = CollectorRegistry()
    gpus = Gauge("ai_telemetry_gpus", "GPUs in the inventory by cluster and health.", ["hub", "cluster", "health"],
                 registry=registry)
    clusters = Gauge("ai_telemetry_cluster_status", "1 for the cluster's current status.", ["hub", "cluster", "status"],
                     registry=registry)
    with Session(site_context(state).engine) as session:
        for hub, cluster, health, count in session.execute(
            select(Hub.name, Cluster.name, Gpu.health, func.count())
            .join(Cluster, Cluster.hub_id == Hub.id).join(Node, Node.cluster_id == Cluster.id)
            .join(Gpu, Gpu.node_id == Node.id).group_by(Hub.name, Cluster.name, Gpu.health)
        ).all():
            gpus.labels(hub, cluster, health).set(count)
        for hub, cluster, status in session.execute(
            select(Hub.name, Cluster.name, Cluster.status).join(Hub, Hub.id == Cluster.hub_id)
        ).all():
            for candidate in ClusterStatus:
                clusters.labels(hub, cluster, candidate.value).set(1 if candidate == status else 0)
    for health in Health:  # every series exists even at zero, so alerts on absence work
        gpus.labels("", "", health.value)
    return registry


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def metrics(state: State) -> Response[bytes]:
    body = generate_latest(REGISTRY)
    try:
        body += generate_latest(_fleet_registry(state))
    except Exception:  # the database being down must not hide the process metrics
        body += b"# fleet gauges unavailable: database unreachable\n"
    return Response(body, headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"})


OPS_ROUTES = [healthz, readyz, metrics]
