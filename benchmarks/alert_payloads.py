"""Alertmanager webhook payloads for the load generators: the receiver benchmark and the reliability tests.

Each webhook is a realistic GPU-usage group: call it with ``status="firing"`` for a batch of new
workloads, then ``"resolved"`` for the same batch, so the receiver opens and closes sessions as it
would in production. Every (worker, batch, index) is a distinct alert (fingerprint and GPU UUID).
"""

from __future__ import annotations

from typing import Any


def webhook(worker: int, batch: int, alerts: int, status: str) -> dict[str, Any]:
    """A group of ``alerts`` GPU-usage alerts, each a distinct workload of this worker's batch."""
    starts = f"2026-11-23T08:{batch // 60 % 60:02d}:{batch % 60:02d}.{worker:03d}Z"
    items = []
    for i in range(alerts):
        labels = {
            "alertname": "GPUWorkloadStarted",
            "event": "gpu-usage",
            "severity": "info",
            "cluster": "bench",
            "namespace": f"team-{worker}",
            "pod": f"job-{batch}-{i}",
            "container": "main",
            "UUID": f"GPU-{worker:04d}-{batch:08d}-{i:04d}",
            "Hostname": f"node-{worker}",
            "gpu": str(i % 8),
            "modelName": "NVIDIA A100-SXM4-80GB",
        }
        items.append(
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": f"GPU in use by team-{worker}/job-{batch}-{i}"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else starts.replace("T08:", "T09:"),
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": f"{worker:04x}{batch:08x}{i:04x}",
            }
        )
    return {
        "receiver": "gpu-telemetry",
        "status": status,
        "alerts": items,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": f"bench-{worker}-{batch}",
        "truncatedAlerts": 0,
    }
