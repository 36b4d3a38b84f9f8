"""Label normalisation: the one place that knows how real exporters and Prometheus setups name things.

dcgm-exporter and kube-state-metrics series reach us labelled in several ways:

* **Cluster**: fixed per source (one Prometheus per cluster) or a label on every series
  (``cluster`` on ACM Observability and most Thanos setups).
* **Workload** (research project = namespace, pod, container): plain ``namespace``/``pod``/
  ``container``; OpenShift monitoring renames those to ``exported_namespace``/``exported_pod``/
  ``exported_container`` and then ``namespace``/``pod``/``container`` name the *exporter's own*
  pod, on every series, busy or idle; older exporters use ``pod_namespace``/``pod_name``/
  ``container_name``. Pod labels that name a dcgm-exporter pod are never a workload.
* **Node**: ``Hostname``, then ``hostname``, then ``node``. Without host networking dcgm-exporter's
  ``Hostname`` is its own pod's name; ``kube_pod_info`` maps that pod to its node.
* **GPU**: ``UUID`` identifies a GPU (the ``gpu`` index can change across reboots); a MIG slice is
  ``GPU_I_ID`` + ``GPU_I_PROFILE`` on the parent's UUID, with empty ``modelName``/``pci_bus_id``.

Everything here is a pure function of a label mapping, so it is unit-tested on crafted series.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from worker.sources.snapshot import PodRef

Labels = Mapping[str, str]

EXPORTED_LABELS = ("exported_namespace", "exported_pod", "exported_container")
PLAIN_LABELS = ("namespace", "pod", "container")
LEGACY_LABELS = ("pod_namespace", "pod_name", "container_name")
WORKLOAD_STYLES = (EXPORTED_LABELS, PLAIN_LABELS, LEGACY_LABELS)
"""(namespace, pod, container) label names, in order of precedence."""
HOSTNAME_LABELS = ("Hostname", "hostname")
NODE_LABEL = "node"
DEFAULT_EXPORTER_POD_PATTERN = ".*dcgm-exporter.*"


def first(labels: Labels, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` with a non-empty value."""
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def has_exported_labels(labels: Labels) -> bool:
    """True for a series relabelled by OpenShift monitoring (its plain pod labels are the exporter's)."""
    return bool(labels.get("exported_namespace") or labels.get("exported_pod"))


def gpu_index(labels: Labels) -> int:
    """The ``gpu`` label, else the number in ``device`` (``nvidia3``), else 0."""
    raw = labels.get("gpu") or ""
    if raw.isdigit():
        return int(raw)
    digits = re.sub(r"\D", "", labels.get("device") or "")
    return int(digits) if digits else 0


def mig_instance(labels: Labels) -> tuple[int, str] | None:
    """(``GPU_I_ID``, ``GPU_I_PROFILE``) of a MIG slice's series; None for a whole GPU's."""
    raw = labels.get("GPU_I_ID")
    if not raw or not raw.isdigit():
        return None
    return int(raw), labels.get("GPU_I_PROFILE") or "unknown"


def namespace_of(labels: Labels) -> str | None:
    """The namespace of a kube-state-metrics series: ``exported_namespace`` first, then ``namespace``."""
    return first(labels, ("exported_namespace", "namespace"))


def pod_of(labels: Labels) -> str | None:
    """The pod of a kube-state-metrics series: ``exported_pod`` first, then ``pod``."""
    return first(labels, ("exported_pod", "pod"))


def container_of(labels: Labels) -> str | None:
    return first(labels, ("exported_container", "container"))


class LabelReader:
    """Reads cluster, node and workload from a series' labels, configured per source."""

    def __init__(
        self,
        *,
        cluster: str | None = None,
        cluster_label: str | None = None,
        exporter_pod_pattern: str = DEFAULT_EXPORTER_POD_PATTERN,
    ) -> None:
        if bool(cluster) == bool(cluster_label):
            raise ValueError("give exactly one of cluster and cluster_label")
        self.fixed_cluster = cluster
        self.cluster_label = cluster_label
        self._exporter = re.compile(exporter_pod_pattern)

    def cluster(self, labels: Labels) -> str | None:
        """The series' cluster; None when a hub's series lacks the cluster label."""
        if self.fixed_cluster:
            return self.fixed_cluster
        return labels.get(self.cluster_label or "") or None

    def is_exporter_pod(self, name: str | None) -> bool:
        """Whether a pod or container name is a dcgm-exporter's own."""
        return bool(name) and self._exporter.fullmatch(name or "") is not None

    def workload(self, labels: Labels, *, exported_cluster: bool = False) -> PodRef | None:
        """The pod using the GPU or slice, or None when idle.

        ``exported_cluster``: some series of this cluster carry ``exported_*`` labels, so plain
        ``namespace``/``pod`` there always name the exporter (also on idle GPUs, which have no
        ``exported_*`` labels). Plain labels naming a dcgm-exporter pod are ignored everywhere.
        """
        for style in WORKLOAD_STYLES:
            namespace_label, pod_label, container_label = style
            namespace = labels.get(namespace_label)
            pod = labels.get(pod_label)
            if not namespace or not pod:
                continue
            container = labels.get(container_label) or None
            if style is PLAIN_LABELS and (
                exported_cluster or self.is_exporter_pod(pod) or self.is_exporter_pod(container)
            ):
                continue
            return PodRef(namespace, pod, container)
        return None

    def node(self, labels: Labels, pod_nodes: Mapping[str, str] | None = None) -> str | None:
        """The node: ``Hostname``, then ``hostname``, then ``node``.

        A host name that is a pod known to ``kube_pod_info`` (``pod_nodes``: pod -> node) is that
        pod's node; an exporter pod's name with no such mapping falls back to a ``node`` label.
        """
        hostname = first(labels, HOSTNAME_LABELS)
        if hostname:
            if pod_nodes:
                mapped = pod_nodes.get(hostname)
                if mapped:
                    return mapped
            if self.is_exporter_pod(hostname) and labels.get(NODE_LABEL):
                return labels[NODE_LABEL]
            return hostname
        return labels.get(NODE_LABEL) or None
