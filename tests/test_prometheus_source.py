"""The Prometheus source against crafted answers (``httpx.MockTransport``): queries, label handling, errors.

The same source against a real Prometheus scraping simulated exporters is in
``test_prometheus_collector.py``; failures of real servers in ``test_prometheus_faults.py``.
"""

from __future__ import annotations

import gc
import itertools
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from domain.settings import SettingsError, SourceSettings, read_bearer_token
from domain.telemetry.dcgm import PROFILING
from worker.memory import gc_paused
from worker.sources import PodRef, SourceError
from worker.sources.prometheus import (
    IDENTITY_LABELS,
    LATEST_FAMILIES,
    PROFILING_QUERIES,
    TAG,
    VALUES_QUERIES,
    PrometheusSource,
    SnapshotBuilder,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A100 = "NVIDIA A100-SXM4-80GB"
EXPORTER = {
    "namespace": "nvidia-gpu-operator",
    "pod": "nvidia-dcgm-exporter-x7k2p",
    "container": "nvidia-dcgm-exporter",
}

Series = tuple[dict[str, str], float | str]


def gpu(uuid: str, index: int = 0, *, host: str = "gpu-01", model: str = A100, **extra: str) -> dict[str, str]:
    return {
        "UUID": uuid,
        "gpu": str(index),
        "device": f"nvidia{index}",
        "modelName": model,
        "pci_bus_id": f"00000000:0{index}:00.0",
        "Hostname": host,
        "DCGM_FI_DRIVER_VERSION": "550.54.15",
        **extra,
    }


def mig(uuid: str, instance: int, profile: str, index: int = 0, **extra: str) -> dict[str, str]:
    labels = gpu(uuid, index, **extra)
    return {**labels, "modelName": "", "pci_bus_id": "", "GPU_I_ID": str(instance), "GPU_I_PROFILE": profile}


def named(name: str, labels: dict[str, str]) -> dict[str, str]:
    return {"__name__": name, **labels}


def tag(name: str, labels: dict[str, str]) -> dict[str, str]:
    return {TAG: name, **labels}


def vector(series: list[Series], **extra: Any) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [NOW.timestamp(), str(v)]} for m, v in series],
        },
        **extra,
    }


def identity_answer(series: list[Series]) -> list[Series]:
    """What ``count by (<identity labels>)`` over the families answers: one series per label set."""
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    for labels, _ in series:
        kept = tuple(sorted((k, v) for k, v in labels.items() if k in (*IDENTITY_LABELS, "cluster") and v))
        seen[kept] = seen.get(kept, 0) + 1
    return [(dict(kept), count) for kept, count in seen.items()]


def values_answer(series: list[Series], families: Sequence[str] = LATEST_FAMILIES) -> list[Series]:
    """What ``max by (__name__, UUID, GPU_I_ID, xid)`` over ``families`` answers, with nonzero XID
    codes tagged with the last ``values-N`` query (a ``profiling-N`` query names profiling families only)."""
    keep = ("__name__", "cluster", "UUID", "GPU_I_ID", "xid")
    out: list[Series] = []
    for labels, value in series:
        kept = {k: v for k, v in labels.items() if k in keep and v}
        if kept["__name__"] == "DCGM_FI_DEV_XID_ERRORS":
            if float(value) != 0 and families in (LATEST_FAMILIES, VALUES_QUERIES[-1]):
                out.append((tag(kept.pop("__name__"), kept), value))
        elif kept["__name__"] in families:
            out.append((kept, value))
    return out


def latest_utilization(series: list[Series], stats: list[Series]) -> list[Series]:
    """The ``last:`` answers the utilization query adds for devices without window statistics."""
    covered = {(labels.get("UUID"), labels.get("GPU_I_ID")) for labels, _ in stats}
    out: list[Series] = []
    for source, family in (("util", "DCGM_FI_DEV_GPU_UTIL"), ("engine", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")):
        for labels, value in series:
            key = (labels.get("UUID"), labels.get("GPU_I_ID"))
            if labels["__name__"] != family or key in covered or (source == "util" and labels.get("GPU_I_ID")):
                continue
            covered.add(key)
            kept = {k: v for k, v in labels.items() if k in ("cluster", "UUID", "GPU_I_ID") and v}
            out.append((tag(f"last:{source}", kept), value))
    return out


class FakeApi:
    """Answers the source's queries from canned series and records what it was asked.

    ``stats`` is the utilization query's window answer (tags ``avg:util``, ``max:engine``, ...)."""

    def __init__(self, dcgm: list[Series], stats: list[Series] = (), kube: list[Series] = ()) -> None:  # type: ignore[assignment]
        self.answers = {
            "identity": vector(identity_answer(list(dcgm))),
            **{
                f"values-{number}": vector(values_answer(list(dcgm), families))
                for number, families in enumerate(VALUES_QUERIES, start=1)
            },
            "utilization": vector([*stats, *latest_utilization(list(dcgm), list(stats))]),
            "kube": vector(list(kube)),
            **{
                f"profiling-{number}": vector(values_answer(list(dcgm), families))
                for number, families in enumerate(PROFILING_QUERIES, start=1)
            },
        }
        self.requests: list[httpx.Request] = []
        self.override: Callable[[httpx.Request], httpx.Response] | None = None

    @staticmethod
    def kind(query: str) -> str:
        if "kube_" in query:
            return "kube"
        if query.startswith("count by"):
            return "identity"
        if "_over_time(DCGM_FI_DEV_GPU_UTIL" in query:
            return "utilization"
        named = set(re.findall(r"DCGM_\w+", query)) - {"DCGM_FI_DEV_XID_ERRORS"}
        for number, families in enumerate(PROFILING_QUERIES, start=1):
            if named == set(families):
                return f"profiling-{number}"
        for number, families in enumerate(VALUES_QUERIES, start=1):
            if named == set(families):
                return f"values-{number}"
        raise AssertionError(f"not a query of the source: {query}")

    def form(self, request: httpx.Request) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.override is not None:
            return self.override(request)
        return httpx.Response(200, json=self.answers[self.kind(self.form(request)["query"])])


def source(api: FakeApi, **settings: Any) -> PrometheusSource:
    values: dict[str, Any] = {"name": "prom", "url": "http://prometheus.test:9090", "cluster": "prod", **settings}
    if "cluster_label" in settings:
        values.pop("cluster")
    return PrometheusSource(SourceSettings(**values), transport=httpx.MockTransport(api))


# --- queries ----------------------------------------------------------------------------------


def test_one_poll_sends_its_queries_with_time_matchers_and_no_partial_responses() -> None:
    api = FakeApi([])
    hub = source(api, cluster_label="cluster", matchers={"job": "dcgm", "prometheus": "=~openshift-.*"})
    hub.poll(NOW, 30)
    forms = [api.form(r) for r in api.requests]
    assert len(forms) == 3 + len(VALUES_QUERIES) + len(PROFILING_QUERIES)
    assert all(r.url.path == "/api/v1/query" for r in api.requests)
    assert {f["time"] for f in forms} == {f"{NOW.timestamp():.3f}"}
    assert {f["partial_response"] for f in forms} == {"false"}
    queries = {FakeApi.kind(f["query"]): f["query"] for f in forms}
    identity = queries["identity"]
    assert identity.startswith("count by (cluster, UUID, gpu, GPU_I_ID, GPU_I_PROFILE, modelName, pci_bus_id,")
    assert '({__name__=~"DCGM_FI_DEV_GPU_UTIL|' in identity and "DCGM_EXP_XID_ERRORS_COUNT" in identity
    # latest values only of the families read that way, a few per answer, each family in exactly one;
    # XID codes only where nonzero, with the last
    by_number = [queries[f"values-{n}"] for n in range(1, len(VALUES_QUERIES) + 1)]
    values = " ".join(by_number)
    assert all(query.startswith("max by (cluster, __name__, UUID, GPU_I_ID, xid) (") for query in by_number)
    assert '({__name__=~"DCGM_FI_DEV_FB_USED|' in by_number[0] and "DCGM_EXP_XID_ERRORS_COUNT" in by_number[-1]
    read = [name for query in by_number for name in re.findall(r"DCGM_\w+", query) if name != "DCGM_FI_DEV_XID_ERRORS"]
    assert sorted(read) == sorted(LATEST_FAMILIES)
    assert "DCGM_FI_DEV_GPU_UTIL" not in values and "DCGM_FI_PROF_GR_ENGINE_ACTIVE" not in values
    assert 'DCGM_FI_DEV_XID_ERRORS{cluster!="",job="dcgm",prometheus=~"openshift-.*"} != 0' in by_number[-1]
    # the profiling families travel in small answers of their own, each family in exactly one
    profiling = [queries[f"profiling-{n}"] for n in range(1, len(PROFILING_QUERIES) + 1)]
    read = [name for query in profiling for name in re.findall(r"DCGM_\w+", query)]
    assert sorted(read) == sorted(PROFILING.values()) and not any(name in values for name in PROFILING.values())
    for query in (identity, *by_number, *profiling):
        assert "instance" not in query and "err_msg" not in query  # aggregated away before Prometheus encodes them
        assert 'cluster!=""' in query and 'job="dcgm"' in query and 'prometheus=~"openshift-.*"' in query
    utilization = queries["utilization"]
    # GPU_UTIL only for whole GPUs; engine activity for any device; the first a device has wins
    assert 'max by (cluster, UUID, GPU_I_ID) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{GPU_I_ID="",' in utilization
    assert (
        " or on (cluster, UUID, GPU_I_ID) label_replace(max by (cluster, UUID, GPU_I_ID) (max_over_time(" in utilization
    )
    assert '"ai_telemetry_query", "avg:engine"' in utilization and '"ai_telemetry_query", "last:util"' in utilization
    assert "[30000ms]" in utilization
    assert 'kube_resourcequota{resource="requests.nvidia.com/gpu",type="hard"' in queries["kube"]
    assert 'kube_pod_info{pod=~".*dcgm-exporter.*"' in queries["kube"]
    hub.close()


def test_acm_windows_and_recording_rules_change_the_queries() -> None:
    api = FakeApi([])
    acm = source(
        api,
        cluster_label="cluster",
        query_window_seconds=600,
        kube_state_metrics=False,
        utilization_avg_rule="nerc:dcgm_gpu_util:avg5m",
        utilization_max_rule="nerc:dcgm_gpu_util:max5m",
    )
    queries = acm.queries(30)
    profiling = {f"profiling-{n}" for n in range(1, len(PROFILING_QUERIES) + 1)}
    values = {f"values-{n}" for n in range(1, len(VALUES_QUERIES) + 1)}
    assert set(queries) == {"identity", "utilization", *values, *profiling}
    for name in (*values, *profiling):
        assert "last_over_time(DCGM_" in queries[name] and "[600000ms]" in queries[name]
    assert "last_over_time(DCGM_FI_DEV_FB_USED{" in queries["values-1"]
    assert queries["identity"].startswith("count by (cluster, UUID,") and "last_over_time(" in queries["identity"]
    # the rule first, then the raw families for what it does not cover (MIG slices)
    assert queries["utilization"].index("last_over_time(nerc:dcgm_gpu_util:avg5m{") < queries["utilization"].index(
        "avg_over_time(DCGM_FI_DEV_GPU_UTIL{"
    )
    assert "last_over_time(nerc:dcgm_gpu_util:max5m{" in queries["utilization"]
    acm.close()


# --- readings ---------------------------------------------------------------------------------


def test_a_whole_gpu_reading_from_every_family() -> None:
    workload = {"namespace": "team-a", "pod": "train-0", "container": "trainer"}
    labels = gpu("GPU-a", 1, **workload)
    api = FakeApi(
        dcgm=[
            (named("DCGM_FI_DEV_GPU_UTIL", labels), 40),
            (named("DCGM_FI_DEV_FB_USED", labels), 1000),
            (named("DCGM_FI_DEV_FB_FREE", labels), 80000),
            (named("DCGM_FI_DEV_FB_RESERVED", labels), 920),
            (named("DCGM_FI_DEV_POWER_USAGE", labels), 250.5),
            (named("DCGM_FI_DEV_GPU_TEMP", labels), 61),
            (named("DCGM_FI_DEV_XID_ERRORS", {**labels, "err_code": "0"}), 0),
        ],
        stats=[(tag("avg:util", labels), 37.25), (tag("max:util", labels), 96)],
    )
    snapshot = source(api).poll(NOW, 30)
    (reading,) = snapshot.gpus
    assert snapshot.clusters == ("prod",) and snapshot.source == "prom" and snapshot.window_seconds == 30
    assert (reading.cluster, reading.node, reading.uuid, reading.index, reading.model) == (
        "prod",
        "gpu-01",
        "GPU-a",
        1,
        A100,
    )
    assert (reading.pci_bus_id, reading.driver_version) == ("00000000:01:00.0", "550.54.15")
    assert (reading.utilization, reading.utilization_max) == (37.25, 96)  # the window's, not the latest 40
    assert reading.memory_total_mib == 1000 + 80000 + 920  # there is no FB_TOTAL: used + free + reserved
    assert (reading.power_watts, reading.temperature_c, reading.xid) == (250.5, 61, 0)
    assert reading.workloads == (PodRef("team-a", "train-0", "trainer"),) and not reading.slices


def test_mig_slices_take_model_and_bus_from_the_parent_and_usage_from_engine_activity() -> None:
    parent = gpu("GPU-m", 0)
    small = mig("GPU-m", 7, "1g.10gb", namespace="course", pod="student-1", container="nb")
    big = mig("GPU-m", 1, "3g.40gb")
    api = FakeApi(
        dcgm=[
            (named("DCGM_FI_PROF_GR_ENGINE_ACTIVE", small), 0.5),
            (named("DCGM_FI_DEV_FB_USED", small), 2000),
            (named("DCGM_FI_DEV_FB_FREE", small), 7728),
            (named("DCGM_FI_PROF_GR_ENGINE_ACTIVE", big), 0.0),
            (named("DCGM_FI_DEV_POWER_USAGE", parent), 120),
            (named("DCGM_FI_DEV_GPU_TEMP", parent), 50),
        ],
        stats=[(tag("avg:engine", small), 0.4567), (tag("max:engine", small), 0.9)],
    )
    (reading,) = source(api).poll(NOW, 30).gpus
    assert (reading.model, reading.pci_bus_id, reading.mig_mode) == (A100, "00000000:00:00.0", True)
    assert reading.utilization is None and reading.workloads == ()  # usage lives on the slices
    assert [s.mig_instance_id for s in reading.slices] == [1, 7]
    big_slice, small_slice = reading.slices
    assert (small_slice.profile, small_slice.utilization, small_slice.utilization_max) == ("1g.10gb", 45.67, 90)
    assert (small_slice.memory_used_mib, small_slice.memory_total_mib) == (2000, 9728)
    assert small_slice.workloads == (PodRef("course", "student-1", "nb"),)
    assert (big_slice.profile, big_slice.utilization, big_slice.workloads) == ("3g.40gb", 0.0, ())  # latest value
    assert (reading.power_watts, reading.temperature_c) == (120, 50)


def test_mig_only_exporters_repeat_device_fields_on_slices_and_the_model_comes_from_node_labels() -> None:
    only = mig("GPU-x", 2, "2g.20gb", host="gpu-09")
    api = FakeApi(
        dcgm=[(named("DCGM_FI_DEV_POWER_USAGE", only), 90), (named("DCGM_FI_DEV_XID_ERRORS", only), 48)],
        kube=[
            (tag("kube_node_labels", {"node": "gpu-09", "label_nvidia_com_gpu_product": "NVIDIA-H100-80GB-HBM3"}), 1)
        ],
    )
    (reading,) = source(api).poll(NOW, 30).gpus
    assert (reading.model, reading.power_watts, reading.xid) == ("NVIDIA-H100-80GB-HBM3", 90, 48)


def test_exported_clusters_never_count_the_exporter_as_a_workload_and_map_exporter_pods_to_nodes() -> None:
    pod = EXPORTER["pod"]
    busy = gpu("GPU-b", 0, host=pod, exported_namespace="team-a", exported_pod="p", exported_container="c", **EXPORTER)
    # an idle GPU on the same cluster, exported by an exporter whose pod name the pattern does not catch
    idle = gpu("GPU-i", 1, host=pod, namespace="gpu-monitoring", pod="metrics-abcde", container="collector")
    api = FakeApi(
        dcgm=[(named("DCGM_FI_DEV_GPU_UTIL", busy), 90), (named("DCGM_FI_DEV_GPU_UTIL", idle), 0)],
        kube=[(tag("kube_pod_info", {"namespace": "nvidia-gpu-operator", "pod": pod, "node": "gpu-07"}), 1)],
    )
    readings = {r.uuid: r for r in source(api).poll(NOW, 30).gpus}
    assert readings["GPU-b"].workloads == (PodRef("team-a", "p", "c"),)
    assert readings["GPU-i"].workloads == ()
    assert {r.node for r in readings.values()} == {"gpu-07"}


def test_xid_count_when_enabled_overrides_the_sticky_last_xid() -> None:
    labels = gpu("GPU-x")
    last = named("DCGM_FI_DEV_XID_ERRORS", {**labels, "err_code": "79", "err_msg": "GPU has fallen off the bus"})
    cleared = FakeApi(dcgm=[(last, 79), (named("DCGM_EXP_XID_ERRORS_COUNT", {**labels, "xid": "79"}), 0)])
    assert source(cleared).poll(NOW, 30).gpus[0].xid == 0
    recent = FakeApi(
        dcgm=[
            (last, 79),
            (named("DCGM_EXP_XID_ERRORS_COUNT", {**labels, "xid": "79"}), 1),
            (named("DCGM_EXP_XID_ERRORS_COUNT", {**labels, "xid": "13"}), 3),
        ]
    )
    assert source(recent).poll(NOW, 30).gpus[0].xid == 13
    sticky = FakeApi(dcgm=[(last, 79)])
    assert source(sticky).poll(NOW, 30).gpus[0].xid == 79


def test_a_hub_answers_for_many_clusters_and_series_without_the_label_are_reported() -> None:
    a, b = gpu("GPU-1", cluster="edu"), gpu("GPU-2", cluster="prod")
    api = FakeApi(
        dcgm=[
            (named("DCGM_FI_DEV_GPU_UTIL", a), 1),
            (named("DCGM_FI_DEV_GPU_UTIL", b), 2),
            (named("DCGM_FI_DEV_GPU_UTIL", gpu("GPU-3")), 3),
        ],
        kube=[
            (tag("kube_resourcequota", {"cluster": "quiet", "namespace": "lab", "type": "hard"}), 4),
            (tag("kube_resourcequota", {"cluster": "quiet", "namespace": "lab", "type": "hard"}), 2),
            (
                tag(
                    "kube_resourcequota", {"cluster": "edu", "exported_namespace": "course", "namespace": "openshift-x"}
                ),
                8,
            ),
            (
                tag(
                    "kube_pod_container_resource_requests",
                    {
                        "cluster": "edu",
                        "namespace": "course",
                        "pod": "p",
                        "container": "c",
                        "node": "n1",
                        "resource": "nvidia_com_mig_1g_10gb",
                    },
                ),
                1,
            ),
            (tag("gpu_operator_gpu_nodes_total", {"cluster": "dark"}), 3),
            (tag("gpu_operator_nvidia_pci_devices_total", {"cluster": "dark", "node": "n1"}), 8),
            (tag("gpu_operator_nvidia_pci_devices_total", {"cluster": "dark", "node": "n2"}), 4),
            (tag("gpu_operator_nvidia_pci_devices_total", {"cluster": "dark", "node": "n3"}), -1),
        ],
    )
    snapshot = source(api, cluster_label="cluster").poll(NOW, 30)
    assert set(snapshot.clusters) == {"edu", "prod", "quiet", "dark"}
    assert {(r.cluster, r.uuid) for r in snapshot.gpus} == {("edu", "GPU-1"), ("prod", "GPU-2")}
    assert snapshot.warnings == ("1 dcgm series without the cluster label were ignored",)
    assert {(q.cluster, q.namespace, q.gpu_quota) for q in snapshot.quotas} == {
        ("quiet", "lab", 2),
        ("edu", "course", 8),
    }
    (request,) = snapshot.requests
    assert (request.cluster, request.namespace, request.pod, request.resource, request.count, request.node) == (
        "edu",
        "course",
        "p",
        "nvidia_com_mig_1g_10gb",
        1,
        "n1",
    )
    (counts,) = snapshot.gpu_counts
    assert (counts.cluster, counts.gpu_nodes, counts.gpus) == ("dark", 3, 12)


# --- authentication and TLS settings ----------------------------------------------------------


def test_the_bearer_token_is_sent_and_a_token_file_is_read_at_every_poll(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    api = FakeApi([])
    prom = source(api, bearer_token_file=token)
    prom.poll(NOW, 30)
    token.write_text("rotated-token")
    prom.poll(NOW, 30)
    sent = [r.headers["Authorization"] for r in api.requests]
    per_poll = len(prom.queries(30))
    assert sent == ["Bearer first-token"] * per_poll + ["Bearer rotated-token"] * per_poll
    token.unlink()
    with pytest.raises(SourceError, match=r"bearer_token_file .* No such file"):
        prom.poll(NOW, 30)


def test_tokens_from_the_environment_and_their_absence() -> None:
    settings = SourceSettings(name="t", url="https://thanos", cluster_label="cluster", bearer_token_env="THANOS_TOKEN")
    assert read_bearer_token(settings, {"THANOS_TOKEN": " s3cret\n"}) == "s3cret"
    with pytest.raises(SettingsError, match="source t: environment variable THANOS_TOKEN is not set"):
        read_bearer_token(settings, {})
    assert read_bearer_token(SourceSettings(name="u", url="http://p", cluster="c")) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cluster": "a", "cluster_label": "cluster"}, "exactly one of cluster or cluster_label"),
        ({"cluster": "a", "url": "prometheus:9090"}, "url must start with http"),
        ({"cluster": "a", "tls_cert_file": "/c.pem"}, "tls_cert_file and tls_key_file go together"),
        ({"cluster": "a", "bearer_token_env": "X", "bearer_token_file": "/t"}, "at most one of bearer_token"),
        ({"cluster": "a", "matchers": {"bad-label": "x"}}, "is not a label name"),
        ({"cluster": "a", "exporter_pod_pattern": "("}, "not a regular expression"),
        ({"cluster_label": "not a label"}, "String should match pattern"),
    ],
)
def test_bad_source_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SourceSettings(name="s", **{"url": "http://p:9090", **settings})


def test_unreadable_tls_files_stop_start_up(tmp_path: Path) -> None:
    settings = SourceSettings(name="s", url="https://p", cluster="c", tls_ca_file=tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match="source s: TLS files cannot be loaded"):
        PrometheusSource(settings)


# --- failures ---------------------------------------------------------------------------------


def respond(status: int, body: bytes | str | dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return lambda request: httpx.Response(status, content=content)


def raise_(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        pytest.param(respond(503, "Service Unavailable"), "HTTP 503 from the source: Service Unavailable", id="5xx"),
        pytest.param(
            respond(422, {"status": "error", "errorType": "execution", "error": "query timed out"}),
            "HTTP 422 from the source: query timed out",
            id="api-error",
        ),
        pytest.param(respond(401, "bad token"), "HTTP 401 not authorised: bad token", id="401"),
        pytest.param(respond(200, "<html>login</html>"), "malformed JSON", id="garbage"),
        pytest.param(
            respond(200, '{"status": "success", "data": {"resultType": "vec'), "malformed JSON", id="truncated"
        ),
        pytest.param(
            respond(200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
            "not an instant vector",
            id="not-a-vector",
        ),
        pytest.param(
            respond(200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": 1}]}}),
            "malformed series",
            id="bad-series",
        ),
        pytest.param(
            respond(200, vector([], warnings=["No StoreAPIs matched for this query"])),
            "partial response: No StoreAPIs matched",
            id="thanos-partial",
        ),
        pytest.param(raise_(httpx.ReadTimeout("timed out")), "no answer within 10 s (timeout)", id="timeout"),
        pytest.param(
            raise_(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")),
            "cannot connect to http://prometheus.test:9090: [SSL: CERTIFICATE_VERIFY_FAILED]",
            id="tls",
        ),
        pytest.param(
            raise_(httpx.RemoteProtocolError("peer closed connection without sending complete message body")),
            "HTTP exchange failed: RemoteProtocolError: peer closed",
            id="cut-off",
        ),
    ],
)
def test_every_failure_is_a_source_error_with_a_reason(
    handler: Callable[[httpx.Request], httpx.Response], reason: str
) -> None:
    api = FakeApi([])
    api.override = handler
    with pytest.raises(SourceError, match=r"^query (identity|(values|profiling)-[0-9]+|utilization|kube): ") as caught:
        source(api).poll(NOW, 30)
    assert reason in str(caught.value)


def test_answers_make_the_same_snapshot_in_whatever_order_they_arrive() -> None:
    """The source folds each answer in as it arrives; every one of the 24 orders gives one snapshot."""
    workload = {"namespace": "course", "pod": "student-1", "container": "nb"}
    parent, small = gpu("GPU-m", 3, cluster="edu"), mig("GPU-m", 7, "1g.10gb", index=3, cluster="edu", **workload)
    whole = gpu("GPU-w", 1, cluster="prod", namespace="team", pod="train", container="t")
    api = FakeApi(
        dcgm=[
            (named("DCGM_FI_PROF_GR_ENGINE_ACTIVE", small), 0.5),
            (named("DCGM_FI_DEV_FB_USED", small), 2000),
            (named("DCGM_FI_DEV_FB_FREE", small), 7728),
            (named("DCGM_FI_DEV_POWER_USAGE", parent), 120),
            (named("DCGM_FI_DEV_GPU_TEMP", parent), 50),
            (named("DCGM_FI_DEV_GPU_UTIL", whole), 70),
            (named("DCGM_FI_DEV_FB_USED", whole), 100),
            (named("DCGM_FI_DEV_XID_ERRORS", whole), 79),
        ],
        kube=[(tag("kube_resourcequota", {"cluster": "edu", "namespace": "course", "type": "hard"}), 4)],
    )
    prom = source(api, cluster_label="cluster")
    answers = prom.fetch(NOW, 30)
    snapshots = set()
    for order in itertools.permutations(answers):
        builder = SnapshotBuilder(prom.name, prom.reader, None)
        for name in order:
            builder.add(answers[name])
        snapshot = builder.finish(NOW, 30)
        snapshots.add((frozenset(snapshot.clusters), frozenset(snapshot.gpus), snapshot.quotas))
    (only,) = snapshots
    readings = {r.uuid: r for r in only[1]}
    assert (readings["GPU-m"].index, readings["GPU-m"].slices[0].profile) == (3, "1g.10gb")
    assert (readings["GPU-w"].index, readings["GPU-w"].utilization, readings["GPU-w"].xid) == (1, 70, 79)
    prom.close()


def test_the_collector_pause_ends_with_the_last_poll_and_restores_what_was() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer poll is still building
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
    with pytest.raises(SourceError):  # a failing poll resumes it too
        failing = FakeApi([])
        failing.override = respond(503, "down")
        source(failing).poll(NOW, 30)
    assert gc.isenabled()


def test_no_answer_outlives_its_decoding_in_a_reference_cycle() -> None:
    """The collector is paused for a whole poll, so a body held by a cycle would stay resident until the
    poll ends; httpx's response sits in one (with its stream), so the body must never be stored on it."""
    labels = gpu("GPU-a", 0)
    api = FakeApi(dcgm=[(named("DCGM_FI_DEV_FB_USED", labels), 1000)], stats=[(tag("avg:util", labels), 5)])

    def streamed(request: httpx.Request) -> httpx.Response:  # unread, as a network transport's answer arrives
        answer = api.answers[api.kind(api.form(request)["query"])]
        return httpx.Response(200, stream=httpx.ByteStream(json.dumps(answer).encode()))

    api.override = streamed
    prom = source(api)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with gc_paused():
            prom.poll(NOW, 30)
        gc.collect()
        responses = [o for o in gc.garbage if isinstance(o, httpx.Response)]
        holding = [r for r in responses if getattr(r, "_content", None) is not None]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        prom.close()
    assert responses, "httpx's responses are no longer cyclic: this test no longer guards anything"
    assert not holding, f"{len(holding)} answer bodies were held by reference cycles"
