"""Spans of closed sessions over real OTLP/HTTP: the exporter built from the settings, decoded by an
endpoint inside the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.models import Workload
from domain.settings import OtelSettings
from tests.otlp_endpoint import otlp_endpoint
from worker.tracing import (
    NullWorkloadTracer,
    OtelWorkloadTracer,
    create_workload_tracer,
    span_id_for,
    traces_url,
    unix_nanos,
)
from worker.workloads.rules import new_trace_id

START = datetime(2026, 11, 23, 8, 55, 35, 656123, tzinfo=UTC)


def closed_session(**changes: object) -> Workload:
    values: dict[str, object] = {
        "id": 7,
        "trace_id": new_trace_id(),
        "workload_key": "k" * 40,
        "cluster": "moc-prod",
        "namespace": "ml-team-a",
        "pod": "train-0",
        "container": "trainer",
        "node": "moc-a100-02",
        "gpu_uuid": "GPU-31b5485b",
        "mig_instance_id": 7,
        "gpu_model": "NVIDIA A100-SXM4-80GB",
        "started_at": START,
        "ended_at": START + timedelta(minutes=42, microseconds=1),
        "source": "poll",
        "samples": 84,
        "util_avg": 71.25,
        "util_max": 99.0,
        "memory_max_mib": 61440.0,
        "energy_wh": 210.5,
        "project_id": 3,
        "events": [
            {
                "name": "gpu.thermal_throttling",
                "time": (START + timedelta(minutes=5)).isoformat(),
                "attributes": {"source": "poll", "gpu.temperature": 93.0},
            },
        ],
    }
    values.update(changes)
    return Workload(**values)  # type: ignore[arg-type]


def test_the_endpoint_setting_exports_each_closed_session_as_a_span() -> None:
    session = closed_session()
    still_open = closed_session(ended_at=None)
    with otlp_endpoint() as endpoint:
        tracer = create_workload_tracer(OtelSettings(endpoint=endpoint.url.removesuffix("/v1/traces")))
        assert isinstance(tracer, OtelWorkloadTracer)
        try:
            assert tracer.emit([session, still_open]) == 1
            assert tracer.force_flush(10_000)
        finally:
            tracer.shutdown()
        [span] = endpoint.wait_for(1, 10)

    assert endpoint.content_types == {"application/x-protobuf"}
    assert span.trace_id == session.trace_id
    assert span.span_id == f"{span_id_for(session.trace_id):016x}"
    assert (span.start_unix_nano, span.end_unix_nano) == (unix_nanos(START), unix_nanos(session.ended_at))
    assert span.end_unix_nano - span.start_unix_nano == (42 * 60 * 10**6 + 1) * 1000  # exact to the microsecond
    assert span.attributes == {
        "k8s.cluster.name": "moc-prod",
        "k8s.namespace.name": "ml-team-a",
        "k8s.pod.name": "train-0",
        "k8s.container.name": "trainer",
        "k8s.node.name": "moc-a100-02",
        "hw.id": "GPU-31b5485b",
        "hw.type": "gpu",
        "hw.vendor": "NVIDIA",
        "hw.model": "NVIDIA A100-SXM4-80GB",
        "ai_telemetry.workload.id": 7,
        "ai_telemetry.workload.source": "poll",
        "ai_telemetry.workload.samples": 84,
        "ai_telemetry.project.id": 3,
        "ai_telemetry.gpu.mig_instance_id": 7,
        "ai_telemetry.gpu.utilization.avg_percent": 71.25,
        "ai_telemetry.gpu.utilization.max_percent": 99.0,
        "ai_telemetry.gpu.memory.max_mib": 61440.0,
        "ai_telemetry.gpu.energy_wh": 210.5,
    }
    assert span.events == [
        (
            "gpu.thermal_throttling",
            unix_nanos(START + timedelta(minutes=5)),
            {"source": "poll", "gpu.temperature": 93.0},
        ),
    ]
    assert span.status_code == 0  # unset: no XID
    assert span.resource["service.name"] == "ai-telemetry-worker"
    assert span.scope == "ai_telemetry.worker.workloads"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example.org/custom/traces", "https://otlp.example.org/custom/traces"),
    ],
)
def test_endpoint_without_a_path_gets_the_traces_path(given: str, expected: str) -> None:
    assert traces_url(given) == expected


def test_no_endpoint_means_no_exporter() -> None:
    tracer = create_workload_tracer(OtelSettings())
    assert isinstance(tracer, NullWorkloadTracer)
    assert tracer.emit([closed_session()]) == 0
