"""The Prometheus source's snapshot building alone: decoded answers of 10,000 GPUs to a Snapshot.

Synthetic answers as a hub source receives them (1,250 nodes of 8 GPUs over 20 clusters, OpenShift's
``exported_*`` pod labels, five latest-value families and two utilisation statistics per GPU) are
folded into a :class:`~domain.telemetry.readings.Snapshot` by
:class:`~worker.sources.prometheus.SnapshotBuilder`, beside the floor: one pass over the same answers
reading each row's labels. No network, no Prometheus: this isolates the per-series and per-GPU work
of the source (label rules, checks, utilisation rule). ``python -m benchmarks snapshot_builder``.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from benchmarks.measure import report
from domain.telemetry.labels import LabelReader
from worker.sources.prometheus import DcgmRow, QueryResult, SnapshotBuilder

NODES = 1250
GPUS_PER_NODE = 8
CLUSTERS = 20
REPEAT = 7
FAMILIES = (
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
)
AT = datetime(2026, 12, 6, tzinfo=UTC)


def answers() -> list[QueryResult]:
    """The identity, values and utilization answers of one poll, decoded."""
    identity: list[tuple[object, float]] = []
    values: list[tuple[object, float]] = []
    utilization: list[tuple[object, float]] = []
    for n in range(NODES):
        cluster = f"c{n % CLUSTERS}"
        for g in range(GPUS_PER_NODE):
            uuid = f"GPU-{n}-{g}"
            labels = {
                "cluster": cluster,
                "UUID": uuid,
                "gpu": str(g),
                "modelName": "NVIDIA A100-SXM4-80GB",
                "Hostname": f"node-{n}",
                "exported_namespace": "team",
                "exported_pod": f"job-{n}",
                "namespace": "nvidia-gpu-operator",
                "pod": "nvidia-dcgm-exporter-x7k2p",
            }
            identity.append((labels, 1.0))
            values.extend((DcgmRow(family=family, cluster=cluster, uuid=uuid), 50.0) for family in FAMILIES)
            utilization.append((DcgmRow(tag="avg:util", cluster=cluster, uuid=uuid), 70.0))
            utilization.append((DcgmRow(tag="max:util", cluster=cluster, uuid=uuid), 90.0))
    return [QueryResult("identity", identity), QueryResult("values-1", values), QueryResult("utilization", utilization)]


def build(results: list[QueryResult]) -> int:
    builder = SnapshotBuilder("hub", LabelReader(cluster_label="cluster"), None)
    for result in results:
        builder.add(result)
    return len(builder.finish(AT, 30.0).gpus)


def floor(results: list[QueryResult]) -> int:
    """One pass over every row, reading the labels the builder keys on."""
    seen = 0
    for result in results:
        for labels, _ in result.series:
            seen += bool(labels.get("UUID") if isinstance(labels, dict) else labels.uuid)
    return seen


def run() -> None:
    results = answers()
    series = sum(len(r.series) for r in results)
    built, passed = [], []
    for _ in range(REPEAT):  # alternated, so the machine's drift touches both alike
        started = time.perf_counter()
        floor(results)
        passed.append(time.perf_counter() - started)
        started = time.perf_counter()
        gpus = build(results)
        built.append(time.perf_counter() - started)
    assert gpus == NODES * GPUS_PER_NODE
    snapshot, baseline = statistics.median(built) * 1000, statistics.median(passed) * 1000
    report(
        f"Snapshot building, {gpus:,} GPUs ({series:,} decoded series)",
        [
            (f"SnapshotBuilder, median of {REPEAT}", f"{snapshot:,.0f} ms (best {min(built) * 1000:,.0f} ms)"),
            ("one pass over the answers (floor)", f"{baseline:,.0f} ms"),
            ("ratio", f"{snapshot / baseline:.1f}x"),
        ],
    )
