"""The worker's own Prometheus metrics: how polling goes, per source and per cluster.

Each :class:`WorkerMetrics` owns a private :class:`~prometheus_client.CollectorRegistry` (never the
process-global default), so tests and embedded runs can build several workers side by side. The
pollers record into it; the receiver's ``/metrics`` renders it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from domain.statuses import ClusterStatus
from worker.ledger import WindowResult

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""``text/plain; version=0.0.4; charset=utf-8``: the text format every Prometheus scrapes."""

POLL_OUTCOMES = ("success", "source_error", "db_error", "skipped", "locked")
"""``skipped``: a scheduled poll not attempted because the source is backing off; ``locked``: not
attempted because another worker replica is polling the source or just did."""

ERROR_REASON_MAX_LENGTH = 200
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class WorkerMetrics:
    """Metric families of one worker, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.polls = Counter(
            "ai_telemetry_source_polls",
            "Polls of a source by outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.poll_duration = Histogram(
            "ai_telemetry_source_poll_duration_seconds",
            "Time a poll took: reading the source and writing the database.",
            ["source"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rows_written = Counter(
            "ai_telemetry_rows_written",
            "Database rows inserted or updated by polls (kind: inventory or rollup).",
            ["source", "kind"],
            registry=self.registry,
        )
        self.source_up = Gauge(
            "ai_telemetry_source_up",
            "1 when the last poll of the source succeeded.",
            ["source"],
            registry=self.registry,
        )
        self.consecutive_failures = Gauge(
            "ai_telemetry_source_consecutive_failures",
            "Failed polls since the last success.",
            ["source"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "ai_telemetry_source_last_success_timestamp_seconds",
            "Unix time of the source's last successful poll.",
            ["source"],
            registry=self.registry,
        )
        self.notifications_decided = Counter(
            "ai_telemetry_notifications_decided",
            "Idle-GPU notices decided into the outbox, by kind (notice, reminder, escalation).",
            ["kind"],
            registry=self.registry,
        )
        self.notification_attempts = Counter(
            "ai_telemetry_notification_attempts",
            "Outbox delivery attempts by channel and outcome (sent, retrying, failed).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.cluster_status = Gauge(
            "ai_telemetry_source_cluster_status",
            "1 for the cluster's status as of its source's last poll, 0 for the other statuses.",
            ["source", "cluster", "status"],
            registry=self.registry,
        )
        self.source_error = Gauge(
            "ai_telemetry_source_error_info",
            "1 while the source's polls fail, with the reason of the last failure (absent when healthy).",
            ["source", "reason"],
            registry=self.registry,
        )
        self._error_reasons: dict[str, str] = {}
        self.retention_deleted = Counter(
            "ai_telemetry_retention_deleted_rows",
            "Rollup, ledger window and allocation rows removed by retention.",
            registry=self.registry,
        )
        self.webhook_requests = Counter(
            "ai_telemetry_webhook_requests",
            "Alertmanager webhooks by HTTP status answered.",
            ["code"],
            registry=self.registry,
        )
        self.webhook_alerts = Counter(
            "ai_telemetry_webhook_alerts",
            "Alerts received by webhook (outcome: new receipt, or duplicate of a stored one).",
            ["outcome"],
            registry=self.registry,
        )
        self.truncated_alerts = Counter(
            "ai_telemetry_webhook_truncated_alerts",
            "Alerts Alertmanager left out of webhooks (truncatedAlerts; raise max_alerts).",
            registry=self.registry,
        )
        self.workloads = Counter(
            "ai_telemetry_workloads",
            "Workloads opened and closed, by the view (alert or poll).",
            ["event", "view"],
            registry=self.registry,
        )
        self._ledger_counters()
        for code in ("200", "400", "401", "403", "413", "503"):
            self.webhook_requests.labels(code=code)
        for outcome in ("new", "duplicate"):
            self.webhook_alerts.labels(outcome=outcome)
        for event in ("opened", "closed"):
            for view in ("alert", "poll"):
                self.workloads.labels(event=event, view=view)

    def _ledger_counters(self) -> None:
        """The ledger's counters (docs/ledger.md): each accounted window's split, added once."""
        by_project = ["hub", "cluster", "project", "model", "profile"]

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(f"ai_telemetry_ledger_{name}", doc, labels, registry=self.registry)

        self.ledger_allocated = counter(
            "allocated_gpu_seconds", "GPU-seconds held by a project's pods (MIG slices by their share).", by_project
        )
        self.ledger_idle = counter(
            "idle_gpu_seconds",
            "Of the allocated GPU-seconds, those with a known utilisation below the idle threshold.",
            by_project,
        )
        self.ledger_unknown = counter(
            "unknown_utilization_gpu_seconds",
            "Of the allocated GPU-seconds, those without a utilisation reading.",
            by_project,
        )
        self.ledger_energy = counter(
            "energy_joules", "Energy attributed by the ledger's split (project empty: unallocated).", by_project
        )
        self.ledger_unallocated = counter(
            "unallocated_gpu_seconds",
            "GPU-seconds of reported GPUs nobody held.",
            ["hub", "cluster", "model", "profile"],
        )
        self.ledger_unaccounted = counter(
            "unaccounted_gpu_seconds",
            "GPU-seconds no rollup holds: silent GPUs, gaps past the back-fill horizon.",
            ["hub"],
        )
        self.ledger_capacity = counter(
            "capacity_gpu_seconds", "GPU-seconds of the hub's accounted windows (GPUs x window length).", ["hub"]
        )
        self.ledger_accounted_until = Gauge(
            "ai_telemetry_ledger_accounted_until_timestamp_seconds",
            "End of the hub's last accounted window (source time, Unix seconds).",
            ["hub"],
            registry=self.registry,
        )

    def record_ledger_window(self, hub: str, result: WindowResult) -> None:
        """Add one accounted window's split to the counters."""
        split = result.split
        for (cluster, project, model, profile), seconds in split.allocated.items():
            self.ledger_allocated.labels(hub, cluster, project, model, profile).inc(seconds)
        for (cluster, project, model, profile), seconds in split.idle.items():
            self.ledger_idle.labels(hub, cluster, project, model, profile).inc(seconds)
        for (cluster, project, model, profile), seconds in split.unknown_utilization.items():
            self.ledger_unknown.labels(hub, cluster, project, model, profile).inc(seconds)
        for (cluster, project, model, profile), joules in split.energy_joules.items():
            self.ledger_energy.labels(hub, cluster, project, model, profile).inc(joules)
        for (cluster, model, profile), seconds in split.unallocated.items():
            self.ledger_unallocated.labels(hub, cluster, model, profile).inc(seconds)
        self.ledger_unaccounted.labels(hub).inc(result.gpu_seconds_unaccounted)
        self.ledger_capacity.labels(hub).inc(result.capacity)
        self.ledger_accounted_until.labels(hub).set(result.window.end.timestamp())

    def register_source(self, source: str) -> None:
        """Create the source's series at zero, so dashboards see it before its first poll."""
        for outcome in POLL_OUTCOMES:
            self.polls.labels(source=source, outcome=outcome)
        for kind in ("inventory", "rollup"):
            self.rows_written.labels(source=source, kind=kind)
        self.poll_duration.labels(source=source)
        self.source_up.labels(source=source).set(0)
        self.consecutive_failures.labels(source=source).set(0)
        self.ledger_unaccounted.labels(source)
        self.ledger_capacity.labels(source)

    def record_poll(
        self,
        source: str,
        outcome: str,
        *,
        duration_seconds: float | None = None,
        consecutive_failures: int | None = None,
        success_timestamp: float | None = None,
    ) -> None:
        self.polls.labels(source=source, outcome=outcome).inc()
        if duration_seconds is not None:
            self.poll_duration.labels(source=source).observe(duration_seconds)
        if outcome in ("skipped", "locked"):
            return
        self.source_up.labels(source=source).set(1 if outcome == "success" else 0)
        if consecutive_failures is not None:
            self.consecutive_failures.labels(source=source).set(consecutive_failures)
        if success_timestamp is not None:
            self.last_success.labels(source=source).set(success_timestamp)

    def record_error(self, source: str, reason: str | None) -> None:
        """Show why the source's last poll failed (``None``: it succeeded, the series goes away)."""
        previous = self._error_reasons.pop(source, None)
        if previous is not None:
            self.source_error.remove(source, previous)
        if reason:
            shown = reason[:ERROR_REASON_MAX_LENGTH]
            self.source_error.labels(source=source, reason=shown).set(1)
            self._error_reasons[source] = shown

    def record_rows(self, source: str, *, inventory: int, rollup: int) -> None:
        self.rows_written.labels(source=source, kind="inventory").inc(inventory)
        self.rows_written.labels(source=source, kind="rollup").inc(rollup)

    def record_clusters(self, source: str, statuses: Iterable[tuple[str, str]]) -> None:
        """``statuses``: (cluster name, status) pairs."""
        for cluster, status in statuses:
            for candidate in ClusterStatus:
                value = 1 if candidate.value == status else 0
                self.cluster_status.labels(source=source, cluster=cluster, status=candidate.value).set(value)

    def record_webhook_alerts(self, *, new: int, duplicates: int) -> None:
        self.webhook_alerts.labels(outcome="new").inc(new)
        self.webhook_alerts.labels(outcome="duplicate").inc(duplicates)

    def record_workloads(self, view: str, *, opened: int, closed: int) -> None:
        self.workloads.labels(event="opened", view=view).inc(opened)
        self.workloads.labels(event="closed", view=view).inc(closed)

    def render(self) -> bytes:
        """The registry in Prometheus text format 0.0.4, for ``/metrics``."""
        return generate_latest(self.registry)
