"""What an alert means to the receiver (pure: no I/O): which alerts are workload events, what
such a receipt says about a workload, and which alerts the signal pipeline takes in."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from domain.pipeline.signals import Signal, signals_from_alert
from domain.telemetry.labels import CONTAINER_LABELS, NAMESPACE_LABELS, POD_LABELS, first, node_of
from worker.alerts.payload import AlertRecord
from worker.workloads.rules import AlertObservation, WorkloadKey

log = logging.getLogger(__name__)

USAGE_ALERTS = frozenset({"GPUWorkloadStarted"})
XID_ALERTS = frozenset({"GPUXidError"})
USAGE_EVENT = "gpu-usage"
XID_EVENT = "gpu-xid"


def observe(record: AlertRecord, default_cluster: str | None) -> AlertObservation | None:
    """What a receipt says about a workload, or None when it is not a GPU alert the workloads use.

    Pod labels are taken in the three styles the collector meets (OpenShift's ``exported_*``,
    plain, legacy), in that order, so rules that do not normalise them still work; the node by the
    one precedence of :func:`domain.telemetry.labels.node_of`.
    """
    labels = record.labels
    event = labels.get("event")
    kind: Literal["usage", "xid"]
    if event == USAGE_EVENT or record.alertname in USAGE_ALERTS:
        kind = "usage"
    elif event == XID_EVENT or record.alertname in XID_ALERTS:
        kind = "xid"
    else:
        return None
    cluster = labels.get("cluster") or default_cluster
    if not cluster:
        log.debug("alert %s has no cluster label and no default cluster is set", record.fingerprint)
        return None
    mig = labels.get("GPU_I_ID") or None
    key = WorkloadKey(
        cluster=cluster,
        namespace=first(labels, NAMESPACE_LABELS) or "",
        pod=first(labels, POD_LABELS) or "",
        gpu_uuid=labels.get("UUID") or None,
        mig_instance_id=int(mig) if mig and mig.isdigit() and len(mig) < 9 else None,
    )
    if kind == "usage" and not key.fits():
        log.warning("alert %s names no usable workload (cluster/namespace/pod); no session", record.fingerprint)
        return None
    code = labels.get("err_code")
    return AlertObservation(
        kind=kind,
        status=record.status,
        key=key,
        starts_at=record.starts_at,
        ends_at=record.ends_at,
        fingerprint=record.fingerprint,
        container=first(labels, CONTAINER_LABELS),
        node=node_of(labels),
        gpu_model=labels.get("modelName") or None,
        summary=record.annotations.get("summary"),
        xid_code=int(code) if code and code.isdigit() and len(code) < 9 else None,
        xid_message=labels.get("err_msg"),
    )


def pipeline_signals(records: Sequence[AlertRecord]) -> list[Signal]:
    """The signal pipeline's view of new alerts. GPU-usage alerts are workloads, not faults."""
    signals: list[Signal] = []
    for record in records:
        if record.labels.get("event") == USAGE_EVENT or record.alertname in USAGE_ALERTS:
            continue
        signals.extend(signals_from_alert(record.labels, record.annotations, record.status, record.starts_at))
    return signals


def has_pipeline_signals(record: AlertRecord) -> bool:
    """Whether the signal pipeline takes the alert in (everything but GPU-usage events)."""
    return bool(pipeline_signals([record]))
