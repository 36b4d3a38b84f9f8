"""Operational endpoints: liveness, readiness (database reachable; Keycloak reported) and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlmodel import Session, col

from domain.database import ping
from domain.models import Cluster, Finding, Gpu, Hub, Node
from domain.pipeline.findings import LIVE_STATUSES, read_counters
from domain.probes import OK, readiness
from domain.statuses import ClusterStatus, Health
from web.identity import site_context


@get("/healthz", media_type=MediaType.JSON, include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", sync_to_thread=True, include_in_schema=False)
def readyz(state: State) -> Response[dict[str, Any]]:
    """503 only without the database. Keycloak down is ``degraded`` (200): every replica shares one Keycloak,
    so failing readiness would empty the load balancer at once, and the site already answers 503 itself."""
    site = site_context(state)
    checks = {"database": OK if ping(site.engine) else "unreachable"}
    checks.update((name, check()) for name, check in site.access_checks.items())  # Keycloak mode: keycloak
    status, body = readiness(checks)
    return Response(body, status_code=status)


def _fleet_registry(state: State) -> CollectorRegistry:
    """Fleet gauges read at scrape time, in a registry of their own so replicas never disagree."""
    registry = CollectorRegistry()
    gpus = Gauge(
        "ai_telemetry_gpus",
        "GPUs in the inventory by cluster and health.",
        ["hub", "cluster", "health"],
        registry=registry,
    )
    clusters = Gauge(
        "ai_telemetry_cluster_status",
        "1 for the cluster's current status.",
        ["hub", "cluster", "status"],
        registry=registry,
    )
    with Session(site_context(state).engine) as session:
        for hub, cluster, health, count in session.execute(
            select(col(Hub.name), col(Cluster.name), col(Gpu.health), func.count())
            .join(Cluster, col(Cluster.hub_id) == Hub.id)
            .join(Node, col(Node.cluster_id) == Cluster.id)
            .join(Gpu, col(Gpu.node_id) == Node.id)
            .group_by(Hub.name, Cluster.name, Gpu.health)
        ).all():
            gpus.labels(hub, cluster, health).set(count)
        for hub, cluster, status in session.execute(
            select(col(Hub.name), col(Cluster.name), col(Cluster.status)).join(Hub, col(Hub.id) == Cluster.hub_id)
        ).all():
            for candidate in ClusterStatus:
                clusters.labels(hub, cluster, candidate.value).set(1 if candidate == status else 0)
    for health in Health:  # every series exists even at zero, so alerts on absence work
        gpus.labels("", "", health.value)
    return registry


class _PipelineCollector:
    """The signal pipeline's cumulative counters and open findings, read from the database at scrape time."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:  # prometheus_client's collector protocol
        with Session(site_context(self.state).engine) as session:
            counters = read_counters(session)
            open_by = session.execute(
                select(col(Finding.severity), func.count())
                .where(col(Finding.status).in_(LIVE_STATUSES))
                .group_by(Finding.severity)
            ).all()
        family = CounterMetricFamily(
            "ai_telemetry_pipeline",
            "Signal pipeline counters, cumulative across worker restarts "
            "(raw, kept, <stage>.dropped, findings, escalations, safety.*, straggler.*, llm.*).",
            labels=["counter"],
        )
        for name in ("raw", "kept", "findings", "escalations", "safety.critical_suppressed"):
            counters.setdefault(name, 0)
        for name, value in sorted(counters.items()):
            family.add_metric([name], value)
        yield family
        ratio = GaugeMetricFamily(
            "ai_telemetry_pipeline_compression_ratio", "Raw signals per escalation, cumulative (0 before the first)."
        )
        ratio.add_metric([], counters["raw"] / counters["escalations"] if counters["escalations"] else 0.0)
        yield ratio
        findings = GaugeMetricFamily(
            "ai_telemetry_findings_active", "Open and acknowledged findings by severity.", labels=["severity"]
        )
        found = dict(open_by)
        for severity in ("critical", "warning", "info"):
            findings.add_metric([severity], found.get(severity, 0))
        yield findings


def _pipeline_registry(state: State) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_PipelineCollector(state))
    return registry


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def metrics(state: State) -> Response[bytes]:
    body = generate_latest(REGISTRY)
    try:
        body += generate_latest(_fleet_registry(state))
    except Exception:  # the database being down must not hide the process metrics
        body += b"# fleet gauges unavailable: database unreachable\n"
    try:
        body += generate_latest(_pipeline_registry(state))
    except Exception:  # likewise for the pipeline's figures
        body += b"# pipeline counters unavailable: database unreachable\n"
    return Response(body, headers={"content-type": "text/plain; version=0.0.4; charset=utf-8"})


OPS_ROUTES = [healthz, readyz, metrics]
