"""The Prometheus-compatible source: Prometheus, Thanos Query or ACM Observatorium's metrics API.

One poll sends four instant queries over the Prometheus HTTP API (``/api/v1/query``), at once:

* ``identity``: one series per GPU and MIG slice with the labels the collector reads (UUID, index,
  model, bus id, host, pod labels), counted over the families in :data:`DCGM_FAMILIES` but the
  profiling ones (all families of a device carry the same labels), so the labels travel once per
  device, not once per family.
* ``values``: the latest value of each family read for its latest value (:data:`DCGM_FAMILIES`,
  ``"latest"``) with only ``UUID``, ``GPU_I_ID``, ``xid`` and the metric name; XID codes only where
  nonzero. Families a deployment does not export are simply absent; the many other families a
  default dcgm-exporter exports (clocks, energy counters, remapped rows, ...) are never read. The
  profiling families (:data:`~worker.sources.readings.PROFILING`) are read here too, for report cards.
* ``utilization``: ``avg_over_time`` and ``max_over_time`` over the poll window, so a burst between
  two polls is not missed, chosen per device in PromQL by the rule of
  :func:`~worker.sources.readings.utilization_percent` (the source's recording rule when configured
  and ``DCGM_FI_DEV_GPU_UTIL`` only for whole GPUs, else ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``; the
  latest sample when the window holds none), each answer tagged with the family it came from, so
  the same rule is applied again to the answer.
* ``kube``: kube-state-metrics (GPU quotas, GPU requests, exporter pods' nodes, GPU node labels)
  and GPU Operator counts.

Sub-expressions are tagged with a ``ai_telemetry_query`` label by ``label_replace``, so several
families travel in one answer without ``or`` dropping series whose label sets coincide.
ACM Observability forwards one sample per series every 300 s: there ``query_window_seconds`` (300
or more) widens the windows, and latest values come from ``last_over_time`` over that window.

Answers are decoded by msgspec straight into small structs holding only the labels read, so a large
answer is never held twice (raw bytes and a full JSON document). Impossible readings (NaN, ±Inf,
negative, absurd) become None and are counted per family (:class:`~worker.sources.readings.ReadingCheck`).

Any failure of the HTTP exchange (timeout, refused connection, TLS, HTTP error status, a body that
is not the API's JSON, a partial answer flagged by Thanos with ``warnings``) raises
:class:`~worker.sources.SourceError` and nothing from that poll is used: the poller marks the
source's clusters stale and backs off.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

import httpx
import msgspec

from domain.settings import SettingsError, SourceSettings, read_bearer_token
from worker.memory import gc_paused
from worker.sources.labels import (
    HOSTNAME_LABELS,
    NODE_LABEL,
    LabelReader,
    container_of,
    gpu_index,
    has_exported_labels,
    mig_instance,
    namespace_of,
    pod_of,
)
from worker.sources.readings import (
    ENGINE_ACTIVE,
    FB_FREE,
    FB_RESERVED,
    FB_USED,
    GPU_UTIL,
    POWER,
    PROFILING,
    TEMPERATURE,
    XID,
    XID_COUNT,
    ReadingCheck,
    utilization_percent,
)
from worker.sources.snapshot import (
    ClusterGpuCount,
    GpuReading,
    PodRef,
    PodRequest,
    ProfilingReading,
    ProjectQuota,
    SliceReading,
    Snapshot,
    SourceError,
)

log = logging.getLogger(__name__)

QUERY_PATH = "/api/v1/query"
TAG = "ai_telemetry_query"
"""Label added by ``label_replace`` to tell sub-expressions of one query apart."""

DCGM_LABELS = (
    "UUID",
    "gpu",
    "GPU_I_ID",
    "GPU_I_PROFILE",
    "modelName",
    "pci_bus_id",
    "DCGM_FI_DRIVER_VERSION",
    "Hostname",
    "hostname",
    "node",
    "exported_namespace",
    "exported_pod",
    "exported_container",
    "namespace",
    "pod",
    "container",
    "pod_namespace",
    "pod_name",
    "container_name",
    "err_code",
    "xid",
)
"""The labels of dcgm-exporter series the collector reads; the others are aggregated away."""
IDENTITY_LABELS = tuple(label for label in DCGM_LABELS if label not in ("err_code", "xid"))
"""One series per GPU or MIG slice: every family of a device carries these same labels."""

DCGM_FAMILIES: dict[str, Literal["window", "latest"]] = {
    GPU_UTIL: "window",
    ENGINE_ACTIVE: "window",
    FB_USED: "latest",
    FB_FREE: "latest",
    FB_RESERVED: "latest",
    POWER: "latest",
    TEMPERATURE: "latest",
    XID: "latest",
    XID_COUNT: "latest",
    **{family: "latest" for family in PROFILING.values()},
}
"""The dcgm-exporter families the product reads, and how: ``window``, average and peak over the poll
window (the activity families, chosen per device by the utilisation rule); ``latest``, the latest
value (``_Slot.values[family]``). Every other exported family is never queried. To read one more
family, add it here as ``latest``; any may be absent. The profiling families
(:data:`~worker.sources.readings.PROFILING`) feed the report cards, where a cluster exports them."""
_PROFILING_FAMILIES = frozenset(PROFILING.values())
LATEST_FAMILIES = tuple(name for name, how in DCGM_FAMILIES.items() if how == "latest" and name != XID)
"""Read by one selector; XID codes are read apart, only where nonzero (most GPUs report 0)."""

QUOTA_RESOURCE = "requests.nvidia.com/gpu"
GPU_RESOURCES = "nvidia_com_.*|nvidia\\.com/.*"
"""kube-state-metrics v2 sanitises ``nvidia.com/gpu`` to ``nvidia_com_gpu``; older releases do not."""
PRODUCT_LABEL = "label_nvidia_com_gpu_product"


def promql_string(value: str) -> str:
    """A PromQL string literal (double-quoted, Go escapes, which JSON's are a subset of)."""
    return json.dumps(value)


def selector(name: str, matchers: Iterable[tuple[str, str, str]]) -> str:
    """``name{label op "value", ...}``."""
    inner = ",".join(f"{label}{op}{promql_string(value)}" for label, op, value in matchers)
    return f"{name}{{{inner}}}"


def tagged(expression: str, tag: str) -> str:
    return f'label_replace({expression}, "{TAG}", "{tag}", "", "")'


class DcgmRow(msgspec.Struct, frozen=True, gc=False):
    """The labels read from a ``values`` or ``utilization`` series (field names are label names)."""

    tag: str = msgspec.field(default="", name=TAG)
    family: str = msgspec.field(default="", name="__name__")
    cluster: str = ""
    """Renamed to the source's ``cluster_label`` by :func:`_row_type`."""
    uuid: str = msgspec.field(default="", name="UUID")
    instance: str = msgspec.field(default="", name="GPU_I_ID")
    xid: str = ""


def _row_type(cluster_label: str | None) -> type[DcgmRow]:
    """:class:`DcgmRow` with its ``cluster`` field read from the source's cluster label (if any)."""
    if not cluster_label or cluster_label == "cluster":
        return DcgmRow
    field = msgspec.field(default="", name=cluster_label)
    # cast: defstruct is typed as returning type[Struct]; with bases=(DcgmRow,) it makes a DcgmRow subclass
    return cast(
        type[DcgmRow],
        msgspec.defstruct("DcgmRowLabelled", [("cluster", str, field)], bases=(DcgmRow,), frozen=True, gc=False),
    )


@dataclass(frozen=True)
class QueryResult:
    """One decoded instant-vector answer: (labels, value) pairs; NaN and infinities kept for the checks."""

    name: str
    series: list[tuple[Any, float]]
    """(labels, value): labels a dict, or a :class:`DcgmRow` for the values and utilization answers."""


def answer_decoder(metric: type) -> msgspec.json.Decoder[Any]:
    """A decoder of ``/api/v1/query`` answers whose series' labels become ``metric`` (a struct or dict)."""
    sample = msgspec.defstruct("Sample", [("metric", metric), ("value", tuple[float, str])], gc=False)
    data = msgspec.defstruct("Data", [("resultType", str), ("result", list[sample])], gc=False)  # type: ignore[valid-type]  # a struct made at run time
    optional: list[tuple[str, Any, Any]] = [("data", data | None, None)]
    optional += [(key, Any, None) for key in ("warnings", "error", "errorType")]
    answer = msgspec.defstruct("Answer", [("status", str), *optional], gc=False)
    return msgspec.json.Decoder(answer)


def decode_vector(name: str, body: bytes, decoder: msgspec.json.Decoder[Any] | None = None) -> QueryResult:
    """Parse a ``/api/v1/query`` answer; anything but a complete, successful vector raises SourceError.

    ``decoder`` (:func:`answer_decoder`) decodes straight into the labels the collector reads; without
    one, labels are dicts. The body is parsed once, into the final shape.
    """
    try:
        document = (decoder or _DICT_DECODER).decode(body)
    except msgspec.ValidationError:
        raise SourceError(_diagnose(name, body)) from None
    except msgspec.DecodeError as exc:
        raise SourceError(f"query {name}: malformed JSON from the source ({exc})") from None
    if document.status != "success":
        error = document.error or document.errorType or "no error given"
        raise SourceError(f"query {name}: the source answered status {document.status!r}: {error}")
    warnings = document.warnings
    if warnings:
        shown = "; ".join(str(w) for w in warnings[:3]) if isinstance(warnings, list) else str(warnings)
        raise SourceError(f"query {name}: partial response: {shown}")
    data = document.data
    if data is None or data.resultType != "vector":
        raise SourceError(f"query {name}: answer is not an instant vector")
    try:
        series = [(sample.metric, float(sample.value[1])) for sample in data.result]
    except ValueError as exc:
        raise SourceError(f"query {name}: malformed series in the answer (ValueError: {exc})") from None
    return QueryResult(name, series)


_DICT_DECODER = answer_decoder(dict[str, str])


def _diagnose(name: str, body: bytes) -> str:
    """Why an answer that is JSON does not have the API's shape (the failure path only)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        return f"query {name}: malformed JSON from the source ({exc})"
    if not isinstance(document, dict):
        return f"query {name}: answer is not a JSON object"
    if document.get("status") != "success":
        error = document.get("error") or document.get("errorType") or "no error given"
        return f"query {name}: the source answered status {document.get('status')!r}: {error}"
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        return f"query {name}: answer is not an instant vector"
    return f"query {name}: malformed series in the answer"


def _ssl_context(source: SourceSettings) -> ssl.SSLContext | bool:
    if not (source.tls_ca_file or source.tls_cert_file):
        return True
    try:
        context = ssl.create_default_context(cafile=str(source.tls_ca_file) if source.tls_ca_file else None)
        if source.tls_cert_file and source.tls_key_file:
            context.load_cert_chain(str(source.tls_cert_file), str(source.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"source {source.name}: TLS files cannot be loaded: {exc}") from None
    return context


class PrometheusSource:
    """A :class:`~worker.sources.Source` reading a Prometheus HTTP API.

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests); ``token_reader``
    reads the bearer token at every poll (so a rotated token file is picked up).
    """

    kind = "prometheus"

    def __init__(
        self,
        settings: SourceSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        token_reader: Callable[[SourceSettings], str | None] = read_bearer_token,
    ) -> None:
        if settings.kind != "prometheus" or not settings.url:
            raise SettingsError(f"source {settings.name}: not a prometheus source with a url")
        self.settings = settings
        self.name = settings.name
        self.url: str | None = settings.url
        self.poll_interval_seconds = settings.poll_interval_seconds
        self._token_reader = token_reader
        token_reader(settings)  # a missing token stops start-up, naming it
        self.reader = LabelReader(
            cluster=settings.cluster,
            cluster_label=settings.cluster_label,
            exporter_pod_pattern=settings.exporter_pod_pattern,
        )
        self._client = httpx.Client(
            base_url=settings.url.rstrip("/"),
            timeout=settings.timeout_seconds,
            verify=_ssl_context(settings),
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": "ai-telemetry-collector"},
            follow_redirects=False,
        )
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"source-{settings.name}")
        self._decode_lock = threading.Lock()
        rows = answer_decoder(_row_type(settings.cluster_label))
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {"values": rows, "utilization": rows}
        """Values and utilization decode into :class:`DcgmRow`; identity and kube keep their labels as dicts."""

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> PrometheusSource:
        return cls(settings)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    # --- queries ----------------------------------------------------------------------------

    def _matchers(self, *extra: tuple[str, str, str]) -> list[tuple[str, str, str]]:
        matchers = list(extra)
        if self.settings.cluster_label:
            matchers.append((self.settings.cluster_label, "!=", ""))
        matchers.extend(self.settings.matcher_list())
        return matchers

    def query_window_seconds(self, window_seconds: float) -> float:
        return max(window_seconds, self.settings.query_window_seconds or 0.0, 1.0)

    def _by(self, *labels: str) -> str:
        """``by (...)`` keeping only ``labels`` (and the cluster label): what the collector reads."""
        keep = [self.settings.cluster_label] if self.settings.cluster_label else []
        return f"by ({', '.join([*keep, *labels])})"

    def queries(self, window_seconds: float) -> dict[str, str]:
        """The PromQL of one poll, by name. ``window_seconds`` is the poll interval.

        Every expression is aggregated ``by`` the labels the collector reads, so Prometheus drops
        the rest (``instance``, ``job``, ``err_msg``, and on ACM or Thanos many more) before
        encoding the answer, and replicas of one series (HA pairs) collapse into one.
        """
        window = f"{round(self.query_window_seconds(window_seconds) * 1000)}ms"
        acm = self.settings.query_window_seconds is not None
        dcgm_by = self._by(*DCGM_LABELS)  # ACM: per-family sub-expressions before counting identities
        # identities from the device families only: a device exporting profiling families exports those too,
        # and counting eleven more series per device would only make the answer slower
        identified = [name for name in DCGM_FAMILIES if name not in _PROFILING_FAMILIES]

        def latest(name: str, *extra: tuple[str, str, str], by: str, tag: str | None = None, op: str = "max") -> str:
            expression = selector(name, self._matchers(*extra))
            if acm:
                expression = f"last_over_time({expression}[{window}])"
            return tagged(f"{op} {by} ({expression})", tag or name)

        identity_by = self._by(*IDENTITY_LABELS)
        values_by = self._by("UUID", "GPU_I_ID", "xid")
        nonzero_xid = selector(XID, self._matchers())
        if acm:
            every = " or ".join(latest(name, by=dcgm_by) for name in identified)
            identity = f"count {identity_by} ({every})"
            values = " or ".join(latest(name, by=values_by) for name in LATEST_FAMILIES)
            nonzero_xid = f"last_over_time({nonzero_xid}[{window}])"
        else:  # one selector for the families; grouping by __name__ keeps each series' family
            every = selector("", [("__name__", "=~", "|".join(identified)), *self._matchers()])
            identity = f"count {identity_by} ({every})"
            read = selector("", [("__name__", "=~", "|".join(LATEST_FAMILIES)), *self._matchers()])
            values = f"max {self._by('__name__', 'UUID', 'GPU_I_ID', 'xid')} ({read})"
        values += " or " + tagged(f"max {values_by} ({nonzero_xid} != 0)", XID)
        out = {"identity": identity, "values": values, "utilization": self._utilization_query(window, acm=acm)}

        if self.settings.kube_state_metrics:
            pattern = self.settings.exporter_pod_pattern
            namespace = ("exported_namespace", "namespace")
            pod = (*namespace, "exported_pod", "pod")
            kube = [
                latest(
                    "kube_resourcequota",
                    ("resource", "=", QUOTA_RESOURCE),
                    ("type", "=", "hard"),
                    by=self._by(*namespace, "resourcequota"),
                ),
                latest(
                    "kube_pod_container_resource_requests",
                    ("resource", "=~", GPU_RESOURCES),
                    by=self._by(*pod, "exported_container", "container", "node", "resource"),
                    op="sum",
                ),
                latest("kube_pod_info", ("pod", "=~", pattern), by=self._by(*pod, "node")),
                latest("kube_node_labels", (PRODUCT_LABEL, "!=", ""), by=self._by("node", PRODUCT_LABEL)),
                latest("gpu_operator_gpu_nodes_total", by=self._by()),
                latest("gpu_operator_nvidia_pci_devices_total", by=self._by("node")),
            ]
            out["kube"] = " or ".join(kube)
        return out

    def _utilization_query(self, window: str, *, acm: bool) -> str:
        """Average and peak utilisation per GPU and slice over the window, by the rule of
        :func:`utilization_percent`: per statistic, the first of these a device has (``or on`` its
        identity), each tagged ``<statistic>:<source>`` so the answer says which family it came from:

        the recording rule (whole GPUs), ``GPU_UTIL`` (whole GPUs only: ``GPU_I_ID=""``, so a MIG
        instance's absent-or-0 never wins), engine activity (any device, a ratio), and, for the
        average, the latest sample when the window holds none (``last:``; not on ACM, whose windows
        always hold one).
        """
        slot_by = self._by("UUID", "GPU_I_ID")
        on = (
            "on ("
            + ", ".join([*([self.settings.cluster_label] if self.settings.cluster_label else []), "UUID", "GPU_I_ID"])
            + ")"
        )
        whole = ("GPU_I_ID", "=", "")
        rules = {"avg": self.settings.utilization_avg_rule, "max": self.settings.utilization_max_rule}
        chains = []
        for stat, rule in rules.items():
            chain = []
            if rule:
                expression = f"last_over_time({selector(rule, self._matchers(whole))}[{window}])"
                chain.append(tagged(f"max {slot_by} ({expression})", f"{stat}:rule"))
            for source, family, extra in (("util", GPU_UTIL, (whole,)), ("engine", ENGINE_ACTIVE, ())):
                expression = f"{stat}_over_time({selector(family, self._matchers(*extra))}[{window}])"
                chain.append(tagged(f"max {slot_by} ({expression})", f"{stat}:{source}"))
            if stat == "avg" and not acm:
                for source, family, extra in (("util", GPU_UTIL, (whole,)), ("engine", ENGINE_ACTIVE, ())):
                    chain.append(
                        tagged(f"max {slot_by} ({selector(family, self._matchers(*extra))})", f"last:{source}")
                    )
            chains.append(f" or {on} ".join(chain))
        return " or ".join(f"({chain})" for chain in chains)

    # --- HTTP -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        try:
            token = self._token_reader(self.settings)
        except SettingsError as exc:
            raise SourceError(str(exc)) from None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _query(self, name: str, promql: str, at: float, headers: Mapping[str, str]) -> QueryResult:
        params = {"query": promql, "time": f"{at:.3f}", "partial_response": "false"}
        timeout = self.settings.timeout_seconds
        try:
            response = self._client.post(QUERY_PATH, data=params, headers=headers)
            body = response.content
        except httpx.TimeoutException:
            raise SourceError(f"query {name}: no answer within {timeout:g} s (timeout)") from None
        except httpx.ConnectError as exc:
            raise SourceError(f"query {name}: cannot connect to {self.url}: {_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"query {name}: HTTP exchange failed: {type(exc).__name__}: {_reason(exc)}") from None
        if response.status_code >= 300:
            detail = ""
            try:
                detail = str(json.loads(body).get("error") or "")
            except (ValueError, AttributeError):
                detail = body[:200].decode("utf-8", "replace").strip()
            what = "not authorised" if response.status_code in (401, 403) else "from the source"
            raise SourceError(f"query {name}: HTTP {response.status_code} {what}: {detail or 'no detail'}")
        with self._decode_lock:  # one decoded document in memory at a time
            return decode_vector(name, body, self._decoders.get(name))

    def answers(self, now: datetime, window_seconds: float) -> Iterator[QueryResult]:
        """Run the poll's queries concurrently; yield each decoded answer as soon as it is in.

        The first failure is raised once every query has finished, so none is left running.
        """
        headers = self._headers()
        at = now.timestamp()
        futures = [
            self._pool.submit(self._query, name, promql, at, headers)
            for name, promql in self.queries(window_seconds).items()
        ]
        failure: BaseException | None = None
        for future in as_completed(futures):
            try:
                result = future.result()
            except BaseException as exc:  # keep collecting, so no query is left running
                failure = failure or exc
                continue
            if failure is None:
                yield result
        if failure is not None:
            raise failure

    def fetch(self, now: datetime, window_seconds: float) -> dict[str, QueryResult]:
        """Every decoded answer of one poll, by query name."""
        return {result.name: result for result in self.answers(now, window_seconds)}

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        """Each answer goes into the snapshot as it arrives (and is dropped then), so building it
        overlaps with waiting for the slower queries and no two large answers are held at once."""
        builder = SnapshotBuilder(self.name, self.reader, self.settings.cluster)
        with gc_paused():
            for result in self.answers(now, window_seconds):
                builder.add(result)
            return builder.finish(now, window_seconds)


def _reason(exc: BaseException) -> str:
    """The innermost cause's message (an SSL verification error rather than httpx's wrapper)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc) or type(exc).__name__


# --- Building the snapshot --------------------------------------------------------------------


@dataclass
class _Slot:
    """What the dcgm answer says about one GPU (instance None) or one MIG slice."""

    values: dict[str, float | None] = field(default_factory=dict)
    identified: bool = False
    """Whether the identity answer listed it; its workloads are read from its series' labels."""
    workloads: tuple[PodRef, ...] = ()
    profile: str = "unknown"


@dataclass
class _Gpu:
    cluster: str
    uuid: str
    whole: _Slot = field(default_factory=_Slot)
    slices: dict[int, _Slot] = field(default_factory=dict)
    index: int | None = None
    """From the identity answer (None until it is read)."""
    model: str = ""
    pci_bus_id: str | None = None
    driver_version: str | None = None
    node_labels: Mapping[str, str] | None = None
    any_values: dict[str, float | None] = field(default_factory=dict)
    """Device-wide families as seen on any series (real MIG GPUs repeat them on every slice)."""
    xid_counts: dict[int, float] = field(default_factory=dict)


_DEVICE_WIDE = (POWER, TEMPERATURE, XID)


def _pod_order(pod: PodRef) -> tuple[str, str, str]:
    return (pod.namespace, pod.pod, pod.container or "")


NODE_LABELS = (*HOSTNAME_LABELS, NODE_LABEL)
"""The labels :meth:`LabelReader.node` reads."""
_STAT_FAMILIES = {"rule": GPU_UTIL, "util": GPU_UTIL, "engine": ENGINE_ACTIVE}
"""Where a utilisation answer came from (its tag's second part) and the family it is checked as."""


class SnapshotBuilder:
    """Turns the decoded answers of one poll into a :class:`Snapshot`."""

    def __init__(self, source: str, reader: LabelReader, fixed_cluster: str | None) -> None:
        self.source = source
        self.reader = reader
        self.fixed_cluster = fixed_cluster
        self.warnings: list[str] = []
        self.check = ReadingCheck(source)
        """Impossible readings become None, counted per family; reported once per poll."""
        self.clusters: dict[str, None] = {fixed_cluster: None} if fixed_cluster else {}
        self.xid_counted: set[str] = set()
        """Clusters exporting DCGM_EXP_XID_ERRORS_COUNT: there a GPU without a recent count has no XID."""
        self.gpus: dict[tuple[str, str], _Gpu] = {}
        self.kube = _Kube()
        self.stats: dict[tuple[str, str, int | None], dict[str, tuple[str, float]]] = {}

    def _cluster(self, labels: Mapping[str, str]) -> str | None:
        cluster = self.reader.cluster(labels)
        if cluster is not None and cluster not in self.clusters:
            self.clusters[cluster] = None
        return cluster

    def build(self, now: datetime, window_seconds: float, results: dict[str, QueryResult]) -> Snapshot:
        """The snapshot of a whole poll's answers (consumed: each is dropped once read)."""
        for name in list(results):
            self.add(results.pop(name))
        return self.finish(now, window_seconds)

    def add(self, result: QueryResult) -> None:
        """Fold one answer in; answers may come in any order."""
        if result.name == "kube":
            self.kube = self._kube(result)
        elif result.name == "identity":
            self._identities(result, self.gpus)
        elif result.name == "values":
            self._values(result, self.gpus)
        elif result.name == "utilization":
            self.stats = self._stats(result)

    def finish(self, now: datetime, window_seconds: float) -> Snapshot:
        kube, stats = self.kube, self.stats
        readings = tuple(self._reading(gpu, stats, kube) for gpu in self.gpus.values())
        self.warnings.extend(self.check.report(log))
        return Snapshot(
            source=self.source,
            taken_at=now,
            window_seconds=window_seconds,
            clusters=tuple(self.clusters),
            gpus=readings,
            quotas=tuple(ProjectQuota(c, ns, hard) for (c, ns), hard in kube.quotas.items()),
            requests=tuple(kube.requests),
            gpu_counts=tuple(
                ClusterGpuCount(c, kube.gpu_nodes.get(c), kube.pci_devices.get(c))
                for c in dict.fromkeys([*kube.gpu_nodes, *kube.pci_devices])
            ),
            warnings=tuple(self.warnings),
        )

    # --- dcgm -------------------------------------------------------------------------------

    def _gpu(self, gpus: dict[tuple[str, str], _Gpu], labels: Mapping[str, str]) -> _Gpu | None:
        uuid = labels.get("UUID")
        cluster = self._cluster(labels)
        if not uuid or cluster is None:
            return None
        gpu = gpus.get((cluster, uuid))
        if gpu is None:
            gpu = gpus[(cluster, uuid)] = _Gpu(cluster, uuid, index=gpu_index(labels))
        elif gpu.index is None:  # first seen in the values answer
            gpu.index = gpu_index(labels)
        return gpu

    def _identities(self, result: QueryResult, gpus: dict[tuple[str, str], _Gpu]) -> None:
        """GPUs and slices with their identity and workload (pod labels read per cluster: OpenShift's
        relabelled clusters name the exporter in plain pod labels)."""
        exported: set[str] = set()
        unlabelled = 0
        pods: list[tuple[_Gpu, _Slot, Mapping[str, str]]] = []
        for labels, _ in result.series:
            gpu = self._gpu(gpus, labels)
            if gpu is None:
                unlabelled += 1
                continue
            if has_exported_labels(labels):
                exported.add(gpu.cluster)
            instance = mig_instance(labels)
            if instance is None:
                slot = gpu.whole
                # MIG rows have empty modelName and pci_bus_id: identity comes from whole-GPU rows.
                gpu.model = gpu.model or labels.get("modelName") or ""
                gpu.pci_bus_id = gpu.pci_bus_id or labels.get("pci_bus_id") or None
            else:
                slot = gpu.slices.get(instance[0]) or gpu.slices.setdefault(instance[0], _Slot(profile=instance[1]))
                if slot.profile == "unknown":  # first seen in the values answer
                    slot.profile = instance[1]
                gpu.model = gpu.model or labels.get("modelName") or ""
            gpu.driver_version = gpu.driver_version or labels.get("DCGM_FI_DRIVER_VERSION") or None
            if gpu.node_labels is None:  # only what the node is read from: the label dicts are dropped
                gpu.node_labels = {name: labels[name] for name in NODE_LABELS if labels.get(name)}
            slot.identified = True
            pods.append((gpu, slot, labels))
        self._workloads(pods, exported)
        if unlabelled:
            what = f"the {self.reader.cluster_label} label" if self.reader.cluster_label else "a UUID"
            self.warnings.append(f"{unlabelled} dcgm series without {what} were ignored")

    def _workloads(self, pods: list[tuple[_Gpu, _Slot, Mapping[str, str]]], exported: set[str]) -> None:
        """Every pod of each device, once, in a stable order: a time-sliced device has one series per
        pod using it (same UUID and GPU_I_ID, other pod labels; the device's readings are the same)."""
        shared: list[_Slot] = []
        for gpu, slot, labels in pods:
            workload = self.reader.workload(labels, exported_cluster=gpu.cluster in exported)
            if workload is not None and workload not in slot.workloads:
                slot.workloads = (*slot.workloads, workload)
                if len(slot.workloads) == 2:
                    shared.append(slot)
        for slot in shared:
            slot.workloads = tuple(sorted(slot.workloads, key=_pod_order))

    def _values(self, result: QueryResult, gpus: dict[tuple[str, str], _Gpu]) -> None:
        """Latest values, one :class:`DcgmRow` per family and device."""
        check = self.check.value
        for row, raw in result.series:
            cluster = self.fixed_cluster or row.cluster
            uuid = row.uuid
            if not uuid or not cluster:
                continue
            if cluster not in self.clusters:
                self.clusters[cluster] = None
            gpu = gpus.get((cluster, uuid))
            if gpu is None:
                gpu = gpus[(cluster, uuid)] = _Gpu(cluster, uuid)
            family = row.tag or row.family
            value = check(family, raw)
            if family == XID_COUNT:
                self.xid_counted.add(cluster)
                if row.xid.isdigit():
                    code = int(row.xid)
                    gpu.xid_counts[code] = gpu.xid_counts.get(code, 0.0) + (value or 0.0)
                continue
            instance = row.instance
            if instance.isdigit():
                slot = gpu.slices.get(int(instance)) or gpu.slices.setdefault(int(instance), _Slot())
            else:
                slot = gpu.whole
            if family in _DEVICE_WIDE and gpu.any_values.get(family) is None:
                gpu.any_values[family] = value
            if slot.values.get(family) is None:
                slot.values[family] = value

    def _stats(self, result: QueryResult) -> dict[tuple[str, str, int | None], dict[str, tuple[str, float]]]:
        """Per device, ``{"avg" | "max" | "last": (source, value)}`` from the tagged utilization answer."""
        stats: dict[tuple[str, str, int | None], dict[str, tuple[str, float]]] = defaultdict(dict)
        for row, value in result.series:
            cluster = self.fixed_cluster or row.cluster
            stat, _, source = row.tag.partition(":")
            if not row.uuid or not cluster or source not in _STAT_FAMILIES:
                continue
            instance = row.instance
            stats[(cluster, row.uuid, int(instance) if instance.isdigit() else None)][stat] = (source, value)
        return stats

    def _utilization(
        self, entry: Mapping[str, tuple[str, float]] | None, *, mig: bool
    ) -> tuple[float | None, float | None]:
        """(average, peak) percent over the window by :func:`utilization_percent`, else the latest sample."""
        if not entry:
            return None, None
        average, peak = self._stat(entry.get("avg"), mig), self._stat(entry.get("max"), mig)
        if average is None:
            average = peak = self._stat(entry.get("last"), mig)
        return average, peak

    def _stat(self, answer: tuple[str, float] | None, mig: bool) -> float | None:
        if answer is None:
            return None
        source, raw = answer
        family = _STAT_FAMILIES[source]
        value = self.check.value(family, raw)
        if family == ENGINE_ACTIVE:
            percent = utilization_percent(None, value, mig=mig)
        else:
            percent = utilization_percent(value, None, mig=mig)
        return None if percent is None else round(percent, 3)

    def _reading(
        self,
        gpu: _Gpu,
        stats: Mapping[tuple[str, str, int | None], Mapping[str, tuple[str, float]]],
        kube: _Kube,
    ) -> GpuReading:
        node = self.reader.node(gpu.node_labels or {}, kube.pod_nodes.get(gpu.cluster)) or "unknown"
        model = gpu.model or kube.products.get((gpu.cluster, node)) or "unknown"
        whole = gpu.whole.values
        slices = tuple(self._slice(gpu, instance, slot, stats) for instance, slot in sorted(gpu.slices.items()))
        # a GPU in MIG mode is judged by the MIG rule too: its usage lives on its slices
        utilization, peak = self._utilization(stats.get((gpu.cluster, gpu.uuid, None)), mig=bool(slices))
        if gpu.cluster in self.xid_counted:
            active = [code for code, count in gpu.xid_counts.items() if count > 0]
            xid = max(active, key=lambda code: (gpu.xid_counts[code], code)) if active else 0
        else:
            raw = whole.get(XID, gpu.any_values.get(XID))
            xid = int(raw) if raw else 0
        return GpuReading(
            cluster=gpu.cluster,
            node=node,
            uuid=gpu.uuid,
            index=gpu.index or 0,
            model=model,
            pci_bus_id=gpu.pci_bus_id,
            driver_version=gpu.driver_version,
            utilization=utilization,
            utilization_max=peak,
            memory_used_mib=whole.get(FB_USED),
            memory_free_mib=whole.get(FB_FREE),
            memory_reserved_mib=whole.get(FB_RESERVED),
            power_watts=whole.get(POWER, gpu.any_values.get(POWER)),
            temperature_c=whole.get(TEMPERATURE, gpu.any_values.get(TEMPERATURE)),
            xid=xid,
            workloads=() if slices else gpu.whole.workloads,
            slices=slices,
            profiling=_profiling(whole),
        )

    def _slice(
        self,
        gpu: _Gpu,
        instance: int,
        slot: _Slot,
        stats: Mapping[tuple[str, str, int | None], Mapping[str, tuple[str, float]]],
    ) -> SliceReading:
        values = slot.values
        utilization, peak = self._utilization(stats.get((gpu.cluster, gpu.uuid, instance)), mig=True)
        used, free, reserved = values.get(FB_USED), values.get(FB_FREE), values.get(FB_RESERVED)
        total = None if used is None or free is None else used + free + (reserved or 0.0)
        return SliceReading(
            mig_instance_id=instance,
            profile=slot.profile,
            utilization=utilization,
            utilization_max=peak,
            memory_used_mib=used,
            memory_total_mib=total,
            workloads=slot.workloads,
            profiling=_profiling(values),
        )

    # --- kube-state-metrics and GPU Operator ------------------------------------------------

    def _kube(self, result: QueryResult) -> _Kube:
        kube = _Kube()
        for labels, value in result.series:
            cluster = self._cluster(labels)
            tag = labels.get(TAG)
            if cluster is None or not math.isfinite(value):
                continue
            if tag == "kube_resourcequota":
                namespace = namespace_of(labels)
                if namespace:
                    key = (cluster, namespace)
                    # Several quota objects in one namespace: the tightest one applies.
                    kube.quotas[key] = min(kube.quotas.get(key, value), value)
            elif tag == "kube_pod_container_resource_requests":
                namespace, pod = namespace_of(labels), pod_of(labels)
                if namespace and pod and value > 0:
                    kube.requests.append(
                        PodRequest(
                            cluster,
                            namespace,
                            pod,
                            labels.get("resource", ""),
                            value,
                            container=container_of(labels),
                            node=labels.get("node") or None,
                        )
                    )
            elif tag == "kube_pod_info":
                pod, node = pod_of(labels), labels.get("node")
                if pod and node:
                    kube.pod_nodes[cluster][pod] = node
            elif tag == "kube_node_labels":
                node, product = labels.get("node"), labels.get(PRODUCT_LABEL)
                if node and product:
                    kube.products[(cluster, node)] = product
            elif tag == "gpu_operator_gpu_nodes_total":
                kube.gpu_nodes[cluster] = max(kube.gpu_nodes.get(cluster, 0), int(value))
            elif tag == "gpu_operator_nvidia_pci_devices_total" and value >= 0:  # -1: the operator failed to count
                kube.pci_devices[cluster] = kube.pci_devices.get(cluster, 0) + int(value)
        return kube


@dataclass
class _Kube:
    quotas: dict[tuple[str, str], float] = field(default_factory=dict)
    requests: list[PodRequest] = field(default_factory=list)
    pod_nodes: defaultdict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    products: dict[tuple[str, str], str] = field(default_factory=dict)
    gpu_nodes: dict[str, int] = field(default_factory=dict)
    pci_devices: dict[str, int] = field(default_factory=dict)


def _profiling(values: Mapping[str, float | None]) -> ProfilingReading | None:
    """A device's profiling families from its latest values; None when it reported none."""
    return ProfilingReading.of({key: values.get(family) for key, family in PROFILING.items()})
