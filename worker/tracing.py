"""Workloads as OpenTelemetry spans: one span per closed workload, exported over OTLP/HTTP.

Each span starts and ends when the workload did (explicit timestamps, not when the span object was
made), carries the workload's stored trace id (so the site can link to the trace before any
tracing backend is asked), Kubernetes and hardware semantic-convention attributes, the usage
figures, and one span event per notable moment (XID error, thermal throttling).

:class:`WorkloadTracer` is the interface; :class:`OtelWorkloadTracer` is the real one, built with the
OTLP/HTTP exporter by :func:`create_workload_tracer` when ``AI_TELEMETRY_OTLP_ENDPOINT`` is set, and
:class:`NullWorkloadTracer` does nothing (the embedded default). Emitting never raises: a tracing
backend that is down costs spans (the exporter retries, then logs), never a webhook or a poll.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from domain.models import Workload
from domain.settings import OtelSettings
from worker.workloads.rules import XID_EVENT

log = logging.getLogger(__name__)

SERVICE_NAME = "ai-telemetry-worker"
SPAN_NAME = "gpu.workload"
INSTRUMENTATION_SCOPE = "ai_telemetry.worker.workloads"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class WorkloadTracer(Protocol):
    """Turns closed workloads into spans."""

    def emit(self, workloads: Sequence[Workload]) -> int:
        """Record a span per closed workload; returns how many were recorded. Never raises."""
        ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool: ...

    def shutdown(self) -> None: ...


class NullWorkloadTracer:
    """No tracing backend configured: workloads keep their trace ids, no span leaves the process."""

    def emit(self, workloads: Sequence[Workload]) -> int:
        return 0

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


_chosen_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("workload_span_ids", default=None)


class _WorkloadTraceIds(RandomIdGenerator):
    """Gives a span the trace id stored on its workload (and a span id derived from it)."""

    def generate_trace_id(self) -> int:
        chosen = _chosen_ids.get()
        return chosen[0] if chosen else super().generate_trace_id()

    def generate_span_id(self) -> int:
        chosen = _chosen_ids.get()
        return chosen[1] if chosen else super().generate_span_id()


@contextmanager
def _ids_of(trace_id: str) -> Iterator[None]:
    token = _chosen_ids.set((int(trace_id, 16), span_id_for(trace_id)))
    try:
        yield
    finally:
        _chosen_ids.reset(token)


def span_id_for(trace_id: str) -> int:
    """The span's id, derived from the trace id, so a span emitted twice is the same span to a backend."""
    value = int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:8], "big")
    return value or 1


def unix_nanos(moment: datetime) -> int:
    """Exact nanoseconds since the epoch (no float rounding)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def traces_url(endpoint: str) -> str:
    """An endpoint given without a path gets the OTLP/HTTP traces path."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def span_attributes(row: Workload) -> dict[str, Any]:
    """Semantic-convention attributes (k8s.*, hw.*) plus the workload's own figures (ai_telemetry.*)."""
    attributes: dict[str, Any] = {
        "k8s.cluster.name": row.cluster,
        "k8s.namespace.name": row.namespace,
        "k8s.pod.name": row.pod,
        "k8s.container.name": row.container,
        "k8s.node.name": row.node,
        "hw.id": row.gpu_uuid,
        "hw.type": "gpu",
        "hw.vendor": "NVIDIA",
        "hw.model": row.gpu_model,
        "ai_telemetry.workload.id": row.id,
        "ai_telemetry.workload.source": row.source,
        "ai_telemetry.workload.samples": row.samples,
        "ai_telemetry.project.id": row.project_id,
        "ai_telemetry.alert.fingerprint": row.alert_fingerprint,
        "ai_telemetry.gpu.mig_instance_id": row.mig_instance_id,
        "ai_telemetry.gpu.utilization.avg_percent": round(row.util_avg, 3),
        "ai_telemetry.gpu.utilization.max_percent": round(row.util_max, 3),
        "ai_telemetry.gpu.memory.max_mib": round(row.memory_max_mib, 3),
        "ai_telemetry.gpu.energy_wh": round(row.energy_wh, 6),
    }
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


def _event_time(event: dict[str, Any], fallback: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        return fallback
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class OtelWorkloadTracer:
    """A tracer provider of its own (never the process-global one) around one span exporter."""

    def __init__(self, exporter: SpanExporter, *, batch: bool = True, schedule_delay_millis: int = 1000) -> None:
        resource = Resource.create({"service.name": SERVICE_NAME, "service.namespace": "ai-telemetry"})
        self.provider = TracerProvider(resource=resource, id_generator=_WorkloadTraceIds(), shutdown_on_exit=False)
        processor = (
            BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_millis)
            if batch
            else SimpleSpanProcessor(exporter)
        )
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer(INSTRUMENTATION_SCOPE)

    def emit(self, workloads: Sequence[Workload]) -> int:
        emitted = 0
        for row in workloads:
            if row.ended_at is None:
                continue
            try:
                self._emit_one(row)
                emitted += 1
            except Exception:  # a span is never worth a failed webhook or poll
                log.exception("could not record the span of workload %s", row.trace_id)
        return emitted

    def _emit_one(self, row: Workload) -> None:
        assert row.ended_at is not None
        with _ids_of(row.trace_id):
            span = self._tracer.start_span(
                SPAN_NAME,
                context=trace.set_span_in_context(trace.INVALID_SPAN),
                kind=SpanKind.INTERNAL,
                attributes=span_attributes(row),
                start_time=unix_nanos(row.started_at),
            )
        xids = []
        for event in row.events or []:
            attributes = {
                k: v for k, v in (event.get("attributes") or {}).items() if isinstance(v, str | bool | int | float)
            }
            moment = _event_time(event, row.started_at)
            span.add_event(str(event.get("name", "event")), attributes=attributes, timestamp=unix_nanos(moment))
            if event.get("name") == XID_EVENT and "gpu.xid.code" in attributes:
                xids.append(str(attributes["gpu.xid.code"]))
        if xids:
            span.set_status(Status(StatusCode.ERROR, "XID " + ", ".join(dict.fromkeys(xids))))
        span.end(end_time=unix_nanos(row.ended_at))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self.provider.shutdown()


def create_workload_tracer(settings: OtelSettings) -> WorkloadTracer:
    """The OTLP/HTTP tracer when an endpoint is configured, the null one otherwise."""
    if not settings.endpoint:
        return NullWorkloadTracer()
    endpoint = traces_url(settings.endpoint)
    log.info("workloads are exported as spans to %s", endpoint)
    return OtelWorkloadTracer(OTLPSpanExporter(endpoint=endpoint, timeout=10))
