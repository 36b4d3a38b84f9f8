"""Label normalisation on crafted series: every way real exporters and Prometheus setups label things."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.pipeline.signals import signals_from_alert
from domain.telemetry.labels import (
    NODE_LABELS,
    LabelReader,
    gpu_index,
    has_exported_labels,
    mig_instance,
    namespace_of,
    node_of,
)
from domain.telemetry.readings import PodRef
from worker.alerts.payload import AlertRecord
from worker.alerts.rules import observe
from worker.sources.prometheus.queries import DCGM_LABELS

NOW = datetime(2026, 12, 6, tzinfo=UTC)

FIXED = LabelReader(cluster="prod")
HUB = LabelReader(cluster_label="cluster")
GPU = {"UUID": "GPU-1", "gpu": "0", "device": "nvidia0", "modelName": "NVIDIA A100-SXM4-80GB", "Hostname": "gpu-01"}
EXPORTER = {
    "namespace": "nvidia-gpu-operator",
    "pod": "nvidia-dcgm-exporter-x7k2p",
    "container": "nvidia-dcgm-exporter",
}


def test_the_cluster_is_fixed_or_read_from_the_configured_label() -> None:
    assert FIXED.cluster({**GPU, "cluster": "other"}) == "prod"
    assert HUB.cluster({**GPU, "cluster": "edu"}) == "edu"
    assert HUB.cluster(GPU) is None
    assert HUB.cluster({**GPU, "cluster": ""}) is None
    assert LabelReader(cluster_label="managed_cluster").cluster({"managed_cluster": "a", "cluster": "b"}) == "a"
    with pytest.raises(ValueError, match="exactly one"):
        LabelReader(cluster="a", cluster_label="cluster")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param(
            {"namespace": "team-a", "pod": "train-0", "container": "trainer"},
            PodRef("team-a", "train-0", "trainer"),
            id="plain",
        ),
        pytest.param(
            {"exported_namespace": "team-a", "exported_pod": "train-0", "exported_container": "trainer", **EXPORTER},
            PodRef("team-a", "train-0", "trainer"),
            id="exported-over-the-exporters-own",
        ),
        pytest.param(
            {"pod_namespace": "team-a", "pod_name": "train-0", "container_name": "trainer"},
            PodRef("team-a", "train-0", "trainer"),
            id="legacy",
        ),
        pytest.param(
            {"namespace": "team-a", "pod": "train-0", "pod_namespace": "old", "pod_name": "old-0"},
            PodRef("team-a", "train-0", None),
            id="plain-before-legacy-no-container",
        ),
        pytest.param(EXPORTER, None, id="exporter-own-labels-are-not-a-workload"),
        pytest.param({"namespace": "gpu-ops", "pod": "dcgm-exporter-abcde"}, None, id="exporter-pod-by-name"),
        pytest.param(
            {"namespace": "team-a", "pod": "", "container": ""},
            None,
            id="empty-values-are-absent",
        ),
        pytest.param({"namespace": "team-a"}, None, id="namespace-without-pod"),
        pytest.param({}, None, id="idle"),
    ],
)
def test_workload_labels(labels: dict[str, str], expected: PodRef | None) -> None:
    assert FIXED.workload({**GPU, **labels}) == expected


def test_on_an_exported_cluster_plain_pod_labels_are_never_a_workload() -> None:
    # OpenShift monitoring: an idle GPU carries only the target's own pod labels, whatever they are called.
    own = {"namespace": "monitoring-ns", "pod": "gpu-metrics-7f9c", "container": "exporter"}
    assert FIXED.workload({**GPU, **own}) == PodRef("monitoring-ns", "gpu-metrics-7f9c", "exporter")
    assert FIXED.workload({**GPU, **own}, exported_cluster=True) is None
    busy = {**own, "exported_namespace": "team-a", "exported_pod": "p", "exported_container": "c"}
    assert FIXED.workload({**GPU, **busy}, exported_cluster=True) == PodRef("team-a", "p", "c")
    assert FIXED.workload({**GPU, "pod_namespace": "t", "pod_name": "p"}, exported_cluster=True) == PodRef("t", "p")
    assert has_exported_labels(busy) and not has_exported_labels(own)


def test_the_exporter_pattern_is_configurable() -> None:
    reader = LabelReader(cluster="prod", exporter_pod_pattern="gpu-metrics-.*")
    assert reader.workload({"namespace": "ops", "pod": "gpu-metrics-7f9c"}) is None
    assert reader.workload({"namespace": "ops", "pod": "nvidia-dcgm-exporter-x"}) == PodRef(
        "ops", "nvidia-dcgm-exporter-x"
    )


@pytest.mark.parametrize(
    ("labels", "pod_nodes", "expected"),
    [
        pytest.param({"Hostname": "gpu-01", "hostname": "x", "node": "y"}, None, "gpu-01", id="Hostname-first"),
        pytest.param({"hostname": "gpu-02", "node": "y"}, None, "gpu-02", id="hostname-newer-exporters"),
        pytest.param({"node": "gpu-03"}, None, "gpu-03", id="node"),
        pytest.param({"Hostname": ""}, None, None, id="none"),
        pytest.param(
            {"Hostname": "nvidia-dcgm-exporter-x7k2p"},
            {"nvidia-dcgm-exporter-x7k2p": "gpu-04"},
            "gpu-04",
            id="exporter-pod-mapped-by-kube_pod_info",
        ),
        pytest.param(
            {"Hostname": "nvidia-dcgm-exporter-x7k2p", "node": "gpu-05"},
            {},
            "gpu-05",
            id="exporter-pod-unmapped-falls-back-to-node",
        ),
        pytest.param(
            {"Hostname": "nvidia-dcgm-exporter-x7k2p"},
            {},
            "nvidia-dcgm-exporter-x7k2p",
            id="exporter-pod-unmapped",
        ),
        pytest.param({"Hostname": "gpu-06"}, {"other-pod": "gpu-99"}, "gpu-06", id="real-hostname-kept"),
        pytest.param({"kubernetes_node": "gpu-07", "instance": "10.0.0.7:9100"}, None, "gpu-07", id="kubernetes_node"),
        pytest.param({"instance": "gpu-08:9100"}, None, "gpu-08:9100", id="instance-last"),
        pytest.param(
            {"Hostname": "nvidia-dcgm-exporter-x7k2p", "kubernetes_node": "gpu-09"},
            {},
            "gpu-09",
            id="exporter-pod-unmapped-falls-back-to-kubernetes_node",
        ),
    ],
)
def test_node_labels(labels: dict[str, str], pod_nodes: dict[str, str] | None, expected: str | None) -> None:
    assert FIXED.node(labels, pod_nodes) == expected


def test_gpu_identity_and_mig_slices() -> None:
    assert gpu_index({"gpu": "3"}) == 3
    assert gpu_index({"device": "nvidia5"}) == 5
    assert gpu_index({}) == 0
    assert mig_instance(GPU) is None
    assert mig_instance({**GPU, "GPU_I_ID": "", "GPU_I_PROFILE": ""}) is None
    assert mig_instance({**GPU, "GPU_I_ID": "7", "GPU_I_PROFILE": "1g.10gb"}) == (7, "1g.10gb")
    assert mig_instance({**GPU, "GPU_I_ID": "2"}) == (2, "unknown")


def test_kube_state_metrics_namespace_prefers_the_exported_label() -> None:
    assert namespace_of({"namespace": "openshift-monitoring", "exported_namespace": "team-a"}) == "team-a"
    assert namespace_of({"namespace": "team-a"}) == "team-a"
    assert namespace_of({}) is None


# --- one node rule for every reader ----------------------------------------------------------------

NODE_VALUES = st.sampled_from(["", "gpu-01", "gpu-02", "nvidia-dcgm-exporter-x7k2p", "10.0.0.7:9400", "Gpu-01"])
LABEL_SETS = st.dictionaries(st.sampled_from([*NODE_LABELS, "pod", "cluster_name"]), NODE_VALUES, max_size=6)


@given(labels=LABEL_SETS)
def test_every_reader_names_the_same_node(labels: dict[str, str]) -> None:
    """The sources, the alert receiver and the signal pipeline read the node by one rule."""
    expected = node_of(labels)
    alert_labels = {**labels, "cluster": "prod", "event": "gpu-xid", "alertname": "GPUXidError"}
    record = AlertRecord("f", NOW, "firing", None, alert_labels, {}, "GPUXidError", {})
    observation = observe(record, None)
    [signal] = signals_from_alert(alert_labels, {}, "firing", NOW)
    assert FIXED.node(labels) == expected
    assert observation is not None and observation.node == expected
    assert signal.labels.get("node") == expected
    if expected is not None:
        assert expected in labels.values()


@given(labels=LABEL_SETS)
def test_node_precedence_is_the_first_label_but_an_exporter_pod(labels: dict[str, str]) -> None:
    named = [labels[name] for name in NODE_LABELS if labels.get(name)]
    hosts = [labels[name] for name in NODE_LABELS[:2] if labels.get(name)]
    if hosts and "dcgm-exporter" in hosts[0]:  # a pod's name gives way to the labels after the host names
        rest = [labels[name] for name in NODE_LABELS[2:] if labels.get(name)]
        assert node_of(labels) == (rest[0] if rest else hosts[0])
    else:
        assert node_of(labels) == (named[0] if named else None)


def test_the_prometheus_source_keeps_every_node_label_but_the_scrape_target() -> None:
    """``instance`` differs between HA replicas of one series: the queries aggregate it away."""
    assert set(NODE_LABELS) - set(DCGM_LABELS) == {"instance"}
