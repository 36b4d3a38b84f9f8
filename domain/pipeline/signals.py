"""The one signal schema every input speaks: kind, subject, severity, value, time, labels.

Polls (through :mod:`domain.pipeline.extract`) and Alertmanager alerts (through
:func:`signals_from_alert`) both become :class:`Signal` objects, so the filters, correlation and
findings never know where a signal came from.

Subjects name what a signal is about, one scheme for every level of the fleet::

    gpu:GPU-8f1c...               one GPU (by UUID, stable across reboots and index changes)
    slice:GPU-8f1c.../7           one MIG instance (GPU_I_ID) of a GPU
    node:moc-prod/moc-a100-02     a node of a cluster
    workload:moc-prod/ml-team-a/llm-pretrain-0   a pod (all the GPUs of one job)
    cluster:moc-prod              a whole cluster

Severities are small integers so the hot path compares ints: ``OK`` (healthy, dropped by the first
filter), ``INFO``, ``WARNING``, ``CRITICAL``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from domain.telemetry.labels import NAMESPACE_LABELS, POD_LABELS, first, node_of

OK = 0
INFO = 1
WARNING = 2
CRITICAL = 3
SEVERITY_NAMES = ("ok", "info", "warning", "critical")
SEVERITY_OF = {name: level for level, name in enumerate(SEVERITY_NAMES)}

# --- kinds ------------------------------------------------------------------------------------------

HEALTH = "health"
"""A subject with nothing wrong this poll (severity OK)."""
IDLE_ALLOCATED = "idle_allocated"
"""A GPU or slice held by a pod whose utilisation stayed below the idle threshold."""
STRAGGLER = "straggler"
"""A GPU far below its peers (the GPUs of one workload), by the robust median/MAD test."""
MEMORY_FULL = "memory_full"
"""Framebuffer nearly full."""
XID = "xid_error"
"""An XID error reported by the driver (critical)."""
THERMAL = "thermal"
"""Temperature at or above the thermal threshold (the GPU throttles there)."""
MISSING = "gpu_missing"
"""A GPU its cluster stopped reporting: a lost GPU (critical)."""
STALE = "stale"
"""A GPU reported without any fresh gauge value."""

BUILT_IN_KINDS = frozenset({HEALTH, IDLE_ALLOCATED, STRAGGLER, MEMORY_FULL, XID, THERMAL, MISSING, STALE})
"""Kinds the pipeline knows from the start; any other kind is "never seen before" until it arrives once."""
HARDWARE_KINDS = frozenset({XID, THERMAL, MISSING, STALE})
"""Correlated GPU > node > cluster (a broken node or cluster)."""
WORKLOAD_KINDS = frozenset({IDLE_ALLOCATED, STRAGGLER, MEMORY_FULL})
"""Correlated GPU > workload (one job's GPUs)."""

KIND_LABELS = {
    HEALTH: "Healthy",
    IDLE_ALLOCATED: "Idle while allocated",
    STRAGGLER: "Straggler",
    MEMORY_FULL: "Memory nearly full",
    XID: "XID error",
    THERMAL: "High temperature",
    MISSING: "GPU lost",
    STALE: "Stale readings",
}


def kind_label(kind: str) -> str:
    """A readable name for a kind; alert kinds show the alert's name."""
    if kind in KIND_LABELS:
        return KIND_LABELS[kind]
    return "Alert " + kind.removeprefix("alert:") if kind.startswith("alert:") else kind


class Signal:
    """One observation about one subject at one time. ``time`` is Unix seconds (float)."""

    __slots__ = ("kind", "labels", "severity", "subject", "time", "value")

    def __init__(
        self,
        kind: str,
        subject: str,
        severity: int,
        value: float | None,
        time: float,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.severity = severity
        self.value = value
        self.time = time
        self.labels: Mapping[str, str] = labels if labels is not None else {}

    def __repr__(self) -> str:
        return (
            f"Signal({self.kind!r}, {self.subject!r}, {SEVERITY_NAMES[self.severity]}, "
            f"value={self.value!r}, time={self.time!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signal):
            return NotImplemented
        return self.as_tuple() == other.as_tuple()

    __hash__ = None  # type: ignore[assignment]  # unhashable: the labels are mutable

    def as_tuple(self) -> tuple[str, str, int, float | None, float, dict[str, str]]:
        """A JSON-friendly form (see :meth:`from_tuple`), used to store alert signals for replay."""
        return (self.kind, self.subject, self.severity, self.value, self.time, dict(self.labels))

    @classmethod
    def from_tuple(cls, row: Any) -> Signal:
        kind, subject, severity, value, time, labels = row
        return cls(str(kind), str(subject), int(severity), value, float(time), dict(labels or {}))


# --- subjects ---------------------------------------------------------------------------------------


def gpu_subject(uuid: str) -> str:
    return f"gpu:{uuid}"


def slice_subject(uuid: str, instance_id: int | str) -> str:
    return f"slice:{uuid}/{instance_id}"


def node_subject(cluster: str, node: str) -> str:
    return f"node:{cluster}/{node}"


def workload_subject(cluster: str, namespace: str, pod: str) -> str:
    return f"workload:{cluster}/{namespace}/{pod}"


def cluster_subject(cluster: str) -> str:
    return f"cluster:{cluster}"


def subject_level(subject: str) -> str:
    """``gpu``, ``slice``, ``node``, ``workload``, ``cluster`` or whatever precedes the first colon."""
    return subject.partition(":")[0]


# --- alerts -----------------------------------------------------------------------------------------

_ALERT_SEVERITY = {
    "critical": CRITICAL,
    "page": CRITICAL,
    "error": CRITICAL,
    "high": CRITICAL,
    "warning": WARNING,
    "warn": WARNING,
    "medium": WARNING,
    "info": INFO,
    "informational": INFO,
    "low": INFO,
    "none": INFO,
}
_XID_LABELS = ("xid", "XID", "err_code")
# Alert names whose meaning is one of the built-in kinds (compared lowercased, without separators).
_ALERT_KINDS = {
    "gpuxiderror": XID,
    "gpuxiderrors": XID,
    "dcgmxiderrors": XID,
    "xiderror": XID,
    "gputemperaturehigh": THERMAL,
    "gpuhightemperature": THERMAL,
    "gputhermalthrottling": THERMAL,
    "gpuidle": IDLE_ALLOCATED,
    "gpuidleallocated": IDLE_ALLOCATED,
    "gpuallocatedidle": IDLE_ALLOCATED,
    "gpumemoryfull": MEMORY_FULL,
    "gpumissing": MISSING,
    "gpulost": MISSING,
    "gpufallenoffbus": MISSING,
}


def _as_time(value: datetime | str | float | None) -> float:
    if value is None:
        return datetime.now(UTC).timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _as_float(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def signals_from_alert(  # noqa: PLR0912  (one flat reading of the alert's labels)
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None,
    status: str,
    starts_at: datetime | str | float | None,
) -> list[Signal]:
    """The signals one Alertmanager alert (webhook v4 ``alerts[]`` entry) stands for.

    ``status`` ``resolved`` gives an OK signal (the condition cleared); ``firing`` a signal with the
    alert's ``severity`` label (warning when absent). Known alert names and an XID label map to the
    built-in kinds so an alert and a poll about the same fault meet in one finding; any other alert
    becomes kind ``alert:<alertname>``. The subject is the most specific thing the labels name:
    GPU (``UUID``, with ``GPU_I_ID`` a slice), node, workload, cluster, else the alert itself; node,
    namespace and pod are read by the rules of :mod:`domain.telemetry.labels`, as for polled series.
    """
    labels = {str(k): str(v) for k, v in labels.items()}
    annotations = dict(annotations or {})
    alertname = labels.get("alertname") or "unnamed"
    cluster = labels.get("cluster") or labels.get("cluster_name") or ""
    uuid = labels.get("UUID") or labels.get("uuid") or labels.get("gpu_uuid")
    instance = labels.get("GPU_I_ID")
    node = node_of(labels)
    namespace = first(labels, NAMESPACE_LABELS)
    pod = first(labels, POD_LABELS)

    xid_code = _as_float(first(labels, _XID_LABELS))
    kind = _ALERT_KINDS.get("".join(ch for ch in alertname.lower() if ch.isalnum()))
    if kind is None and xid_code:
        kind = XID
    kind = kind or f"alert:{alertname}"

    if status.strip().lower() == "resolved":
        severity = OK
    else:
        severity = _ALERT_SEVERITY.get(labels.get("severity", "").strip().lower(), WARNING)
        if kind in (XID, MISSING):
            severity = CRITICAL  # a driver fault or a lost GPU is critical whatever the rule says

    if uuid:
        subject = slice_subject(uuid, instance) if instance else gpu_subject(uuid)
    elif node and cluster:
        subject = node_subject(cluster, node)
    elif namespace and pod and cluster:
        subject = workload_subject(cluster, namespace, pod)
    elif cluster:
        subject = cluster_subject(cluster)
    else:
        subject = f"alert:{alertname}"

    value = xid_code if kind == XID else _as_float(annotations.get("value", labels.get("value")))
    out = {"source": "alert", "alertname": alertname}
    for key, found in (("cluster", cluster), ("node", node), ("gpu", uuid), ("namespace", namespace), ("pod", pod)):
        if found:
            out[key] = found
    if labels.get("modelName"):
        out["model"] = labels["modelName"]
    if instance:
        out["instance"] = instance
    summary = annotations.get("summary") or annotations.get("description")
    if summary:
        out["summary"] = str(summary)[:300]
    return [Signal(kind, subject, severity, value, _as_time(starts_at), out)]
