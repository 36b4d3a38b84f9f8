"""The Prometheus-compatible source: Prometheus, Thanos Query or ACM Observatorium's metrics API.

One poll sends its instant queries over the Prometheus HTTP API (``/api/v1/query``), at once:

* ``identity``: one series per GPU and MIG slice with the labels the collector reads (UUID, index,
  model, bus id, host, pod labels), counted over the families in :data:`DCGM_FAMILIES` but the
  profiling ones (all families of a device carry the same labels), so the labels travel once per
  device, not once per family.
* ``values-1``, ``values-2``: the latest value of each family read for its latest value
  (:data:`DCGM_FAMILIES`, ``"latest"``), three families per query (:data:`VALUES_QUERIES`), with
  only ``UUID``, ``GPU_I_ID``, ``xid`` and the metric name; XID codes only where nonzero. Families a
  deployment does not export are simply absent; the many other families a default dcgm-exporter
  exports (clocks, energy counters, remapped rows, ...) are never read.
* ``profiling-1`` ... ``profiling-4``: the same for the profiling families
  (:data:`~domain.telemetry.dcgm.PROFILING`, read for report cards), three families per query
  (:data:`PROFILING_QUERIES`): two thirds of a poll's series, in answers small enough that only one
  is held decoded at a time.
* ``utilization``: ``avg_over_time`` and ``max_over_time`` over the poll window, so a burst between
  two polls is not missed, chosen per device in PromQL by the rule of
  :func:`~domain.telemetry.dcgm.utilization_percent` (the source's recording rule when configured
  and ``DCGM_FI_DEV_GPU_UTIL`` only for whole GPUs, else ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``; the
  latest sample when the window holds none), each answer tagged with the family it came from, so
  the same rule is applied again to the answer.
* ``kube``: kube-state-metrics (GPU quotas, GPU requests, exporter pods' nodes, GPU node labels)
  and GPU Operator counts.

Sub-expressions are tagged with a ``ai_telemetry_query`` label by ``label_replace``, so several
families travel in one answer without ``or`` dropping series whose label sets coincide.
ACM Observability forwards one sample per series every 300 s: there ``query_window_seconds`` (300
or more) widens the windows, and latest values come from ``last_over_time`` over that window.

Answers are decoded by msgspec straight into small structs holding only the labels read, one answer
at a time, each folded into the snapshot and dropped before the next is decoded. Impossible readings (NaN, ±Inf,
negative, absurd) become None and are counted per family (:class:`~domain.telemetry.dcgm.ReadingCheck`).

The parts, one job each: :mod:`~worker.sources.prometheus.queries` writes the PromQL,
:mod:`~worker.sources.prometheus.answers` decodes answers, :mod:`~worker.sources.prometheus.snapshot`
builds the snapshot, and :mod:`~worker.sources.prometheus.source` runs the HTTP exchange.

Any failure of the HTTP exchange (timeout, refused connection, TLS, HTTP error status, a body that
is not the API's JSON, a partial answer flagged by Thanos with ``warnings``) raises
:class:`~domain.telemetry.readings.SourceError` and nothing from that poll is used: the poller marks the
source's clusters stale and backs off.
"""

from worker.sources.prometheus.answers import DcgmRow, QueryResult, decode_vector
from worker.sources.prometheus.queries import (
    DCGM_FAMILIES,
    DCGM_LABELS,
    IDENTITY_LABELS,
    LATEST_FAMILIES,
    PROFILING_QUERIES,
    QUERY_PATH,
    TAG,
    VALUES_QUERIES,
    PromQl,
)
from worker.sources.prometheus.snapshot import SnapshotBuilder
from worker.sources.prometheus.source import PrometheusSource

__all__ = [
    "DCGM_FAMILIES",
    "DCGM_LABELS",
    "IDENTITY_LABELS",
    "LATEST_FAMILIES",
    "PROFILING_QUERIES",
    "QUERY_PATH",
    "TAG",
    "VALUES_QUERIES",
    "DcgmRow",
    "PromQl",
    "PrometheusSource",
    "QueryResult",
    "SnapshotBuilder",
    "decode_vector",
]
