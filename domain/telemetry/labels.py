"""Label normalisation: the one place that knows how real exporters and Prometheus setups name things.

dcgm-exporter and kube-state-metrics series reach us labelled in several ways:

* **Cluster**: fixed per source (one Prometheus per cluster) or a label on every series
  (``cluster`` on ACM Observability and most Thanos setups).
* **Workload** (research project = namespace, pod, container): plain ``namespace``/``pod``/
  ``container``; OpenShift monitoring renames those to ``exported_namespace``/``exported_pod``/
  ``exported_container`` and then ``namespace``/``pod``/``container`` name the *exporter's own*
  pod, on every series, busy or idle; older exporters use ``pod_namespace``/``pod_name``/
  ``container_name``. Pod labels that name a dcgm-exporter pod are never a workload.
* **Node**: :data:`NODE_LABELS`, the first non-empty of ``Hostname``, ``hostname``, ``node``,
  ``kubernetes_node``, ``instance`` (:func:`node_of`), for polled series and alerts alike.
  ``Hostname`` is what dcgm-exporter sets (``hostname`` on some newer releases); ``node`` is what
  kube-state-metrics and most relabelling rules add; ``kubernetes_node`` is the older Prometheus
  Operator's name for the same; ``instance`` comes last because it names a scrape target, a node
  only for node-level exporters or host networking (the Prometheus source aggregates it away, so
  for polled series it is never reached). Without host networking dcgm-exporter's ``Hostname`` is
  its own pod's name: ``kube_pod_info`` maps that pod to its node, and without such a mapping an
  exporter pod's name gives way to the labels after it.
* **GPU**: ``UUID`` identifies a GPU (the ``gpu`` index can change across reboots); a MIG slice is
  ``GPU_I_ID`` + ``GPU_I_PROFILE`` on the parent's UUID, with empty ``modelName``/``pci_bus_id``.

Everything here is a pure function of a label mapping, so it is unit-tested on crafted series.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from sys import intern

from domain.telemetry.readings import PodRef

Labels = Mapping[str, str]

EXPORTED_LABELS = ("exported_namespace", "exported_pod", "exported_container")
PLAIN_LABELS = ("namespace", "pod", "container")
LEGACY_LABELS = ("pod_namespace", "pod_name", "container_name")
WORKLOAD_STYLES = (EXPORTED_LABELS, PLAIN_LABELS, LEGACY_LABELS)
"""(namespace, pod, container) label names, in order of precedence."""
NAMESPACE_LABELS = ("exported_namespace", "namespace", "pod_namespace")
POD_LABELS = ("exported_pod", "pod", "pod_name")
CONTAINER_LABELS = ("exported_container", "container", "container_name")
"""Namespace, pod and container of an alert, each the first non-empty spelling (alerts carry whatever
their rule kept; a polled series goes through :meth:`LabelReader.workload` instead)."""
NODE_LABELS = ("Hostname", "hostname", "node", "kubernetes_node", "instance")
"""The node of a series or alert, in order of precedence (see the module's docstring for why)."""
HOSTNAME_LABELS = NODE_LABELS[:2]
"""The exporter's own idea of its host: a pod's name when the exporter runs without host networking."""
DEFAULT_EXPORTER_POD_PATTERN = ".*dcgm-exporter.*"
_DEFAULT_EXPORTER = re.compile(DEFAULT_EXPORTER_POD_PATTERN)


def first(labels: Labels, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` with a non-empty value."""
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def is_default_exporter_pod(name: str) -> bool:
    """Whether ``name`` is a dcgm-exporter pod's by :data:`DEFAULT_EXPORTER_POD_PATTERN`."""
    return _DEFAULT_EXPORTER.fullmatch(name) is not None


def node_of(
    labels: Labels,
    pod_nodes: Mapping[str, str] | None = None,
    is_exporter_pod: Callable[[str], bool] = is_default_exporter_pod,
) -> str | None:
    """The node a series or alert is about, by :data:`NODE_LABELS`; None when no label names one.

    A host name that is a pod known to ``kube_pod_info`` (``pod_nodes``: pod -> node) is that pod's
    node; an exporter pod's name with no such mapping gives way to the labels after the host names
    (and is kept when there is none).
    """
    hostname = first(labels, HOSTNAME_LABELS)
    if hostname:
        if pod_nodes:
            mapped = pod_nodes.get(hostname)
            if mapped:
                return mapped
        if is_exporter_pod(hostname):
            return first(labels, NODE_LABELS[2:]) or hostname
        return hostname
    return first(labels, NODE_LABELS[2:])


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
            # namespaces and containers repeat across a fleet's pods: one string each, not one per series
            return PodRef(intern(namespace), pod, intern(container) if container else None)
        return None

    def node(self, labels: Labels, pod_nodes: Mapping[str, str] | None = None) -> str | None:
        """The node by :func:`node_of`, exporter pods recognised by this source's pattern."""
        return node_of(labels, pod_nodes, self.is_exporter_pod)
