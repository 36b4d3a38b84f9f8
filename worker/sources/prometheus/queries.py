"""The PromQL of one poll of a Prometheus-compatible source (see :mod:`worker.sources.prometheus`).

Sub-expressions are tagged with a ``ai_telemetry_query`` label by ``label_replace``, so several
families travel in one answer without ``or`` dropping series whose label sets coincide.
ACM Observability forwards one sample per series every 300 s: there ``query_window_seconds`` (300
or more) widens the windows, and latest values come from ``last_over_time`` over that window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from domain.settings import SourceSettings
from domain.telemetry.dcgm import (
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
)

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
    "kubernetes_node",
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
(:data:`~domain.telemetry.dcgm.PROFILING`) feed the report cards, where a cluster exports them."""
_PROFILING_FAMILIES = frozenset(PROFILING.values())
LATEST_FAMILIES = tuple(
    name for name, how in DCGM_FAMILIES.items() if how == "latest" and name != XID and name not in _PROFILING_FAMILIES
)
"""The device's latest values, read by the ``values-N`` queries; XID codes are read apart, only where
nonzero (most GPUs report 0)."""
VALUES_PER_QUERY = 3
VALUES_QUERIES = tuple(
    LATEST_FAMILIES[i : i + VALUES_PER_QUERY] for i in range(0, len(LATEST_FAMILIES), VALUES_PER_QUERY)
)
""":data:`LATEST_FAMILIES` a few per query (``values-1``, ...; the nonzero XID codes travel with the
last): in one answer they were the poll's largest (51,000 series at 10,000 GPUs), and the largest
answer, decoded whole, sets the worker's peak memory."""
VALUES_QUERY = "values-"
PROFILING_PER_QUERY = 3
PROFILING_QUERIES = tuple(
    tuple(sorted(_PROFILING_FAMILIES))[i : i + PROFILING_PER_QUERY]
    for i in range(0, len(_PROFILING_FAMILIES), PROFILING_PER_QUERY)
)
"""The profiling families' latest values, a few families per query (``profiling-1``, ...): together
they are two thirds of a poll's series, and an answer is decoded whole, so smaller answers keep the
worker's peak memory down (each is folded into the snapshot and dropped before the next is decoded)."""
PROFILING_QUERY = "profiling-"

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


class PromQl:
    """Writes a source's queries from its settings (cluster label, matchers, windows, recording rules)."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings

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

        def latest_values(families: Iterable[str]) -> str:
            if acm:
                return " or ".join(latest(name, by=values_by) for name in families)
            # one selector for the families; grouping by __name__ keeps each series' family
            read = selector("", [("__name__", "=~", "|".join(families)), *self._matchers()])
            return f"max {self._by('__name__', 'UUID', 'GPU_I_ID', 'xid')} ({read})"

        if acm:
            every = " or ".join(latest(name, by=dcgm_by) for name in identified)
            nonzero_xid = f"last_over_time({nonzero_xid}[{window}])"
        else:
            every = selector("", [("__name__", "=~", "|".join(identified)), *self._matchers()])
        out = {
            "identity": f"count {identity_by} ({every})",
            "utilization": self._utilization_query(window, acm=acm),
        }
        for number, families in enumerate(VALUES_QUERIES, start=1):
            out[f"{VALUES_QUERY}{number}"] = latest_values(families)
        out[f"{VALUES_QUERY}{len(VALUES_QUERIES)}"] += " or " + tagged(f"max {values_by} ({nonzero_xid} != 0)", XID)
        for number, families in enumerate(PROFILING_QUERIES, start=1):
            out[f"{PROFILING_QUERY}{number}"] = latest_values(families)

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
