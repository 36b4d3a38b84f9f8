"""The signal pipeline's families in the worker's ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from worker.metrics import WorkerMetrics


class PipelineMetrics:
    """The pipeline's families in the worker's registry (per process; the database has the cumulative ones)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        registry = metrics.registry
        self.counters = Counter(
            "ai_telemetry_pipeline_events",
            "Pipeline counters of this worker process, by name "
            "(raw, kept, <stage>.dropped, findings, escalations, safety.*, straggler.*).",
            ["counter"],
            registry=registry,
        )
        self.open_findings = Gauge(
            "ai_telemetry_pipeline_open_findings", "Findings the worker's pipeline holds open.", registry=registry
        )
        self.failures = Counter(
            "ai_telemetry_pipeline_failures",
            "Pipeline batches that failed (logged; the poll still succeeded).",
            ["step"],
            registry=registry,
        )
        for step in ("pipeline", "database", "analysis"):
            self.failures.labels(step=step)
        for name in ("raw", "kept", "findings", "escalations", "safety.critical_suppressed"):
            self.counters.labels(counter=name)
