"""A large synthetic fleet written through the worker's own code paths, for the scale benchmarks.

20 clusters x 62-63 nodes x 8 GPUs = 10,000 GPUs (every tenth node in MIG mode with 7 slices per
GPU), about 400 research projects, most GPUs allocated, and an hour of 5-minute usage rollups.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import Engine

from domain.database import session_scope
from domain.ledger import POLLED, Window
from domain.models import Hub
from domain.telemetry.readings import GpuReading, PodRef, ProjectQuota, SliceReading, Snapshot
from worker.inventory import apply_snapshot
from worker.ledger import account_window, known_before

CLUSTERS = 20
GPUS = 10_000
GPUS_PER_NODE = 8
PROJECTS_PER_CLUSTER = 20
BUCKET_SECONDS = 300


def _gpus(rng: random.Random) -> Iterator[GpuReading]:
    nodes = GPUS // GPUS_PER_NODE
    for n in range(nodes):
        cluster = f"cluster-{n % CLUSTERS:02d}"
        node = f"{cluster}-gpu-{n // CLUSTERS:03d}"
        mig = n % 10 == 0
        for index in range(GPUS_PER_NODE):

            def pod(k: int, n: int = n, index: int = index) -> tuple[PodRef, ...]:
                if rng.random() < 0.15:
                    return ()
                project = (n * 7 + index + k) % PROJECTS_PER_CLUSTER
                return (PodRef(f"project-{project:02d}", f"job-{n}-{index}-{k}", "main"),)

            util = rng.uniform(0, 100)
            slices = (
                tuple(
                    SliceReading(
                        i + 7, "1g.10gb", rng.uniform(0, 100), None, rng.uniform(0, 9000), 9856, workloads=pod(i)
                    )
                    for i in range(7)
                )
                if mig
                else ()
            )
            yield GpuReading(
                cluster=cluster,
                node=node,
                uuid=f"GPU-{n:05d}-{index}",
                index=index,
                model="NVIDIA H100 80GB HBM3" if n % 3 else "NVIDIA A100-SXM4-80GB",
                pci_bus_id=f"00000000:{index + 7:02x}:00.0",
                driver_version="550.54.15",
                utilization=None if mig else util,
                utilization_max=None if mig else min(100, util + 5),
                memory_used_mib=None if mig else rng.uniform(0, 80000),
                memory_free_mib=None if mig else 1000.0,
                memory_reserved_mib=None if mig else 500.0,
                power_watts=rng.uniform(60, 700),
                temperature_c=rng.uniform(30, 85),
                xid=0,
                workloads=() if mig else pod(0),
                slices=slices,
            )


def snapshot(at: datetime, seed: int) -> Snapshot:
    rng = random.Random(seed)
    quotas = tuple(
        ProjectQuota(f"cluster-{c:02d}", f"project-{p:02d}", 32.0)
        for c in range(CLUSTERS)
        for p in range(PROJECTS_PER_CLUSTER)
    )
    return Snapshot(
        source="scale",
        taken_at=at,
        window_seconds=BUCKET_SECONDS,
        clusters=tuple(f"cluster-{c:02d}" for c in range(CLUSTERS)),
        gpus=tuple(_gpus(rng)),
        quotas=quotas,
    )


def populate(engine: Engine, *, now: datetime, buckets: int = 12) -> None:
    """Write the fleet and ``buckets`` rollup buckets ending at ``now`` (same fleet, fresh readings),
    one ledger window per bucket, through the worker's own ledger."""
    start = now - timedelta(seconds=BUCKET_SECONDS * buckets)
    cursor: datetime | None = None
    for b in range(buckets + 1):
        at = start + timedelta(seconds=BUCKET_SECONDS * b)
        snap = snapshot(at, seed=0 if b == 0 else b)
        with session_scope(engine) as session:
            hub = session.query(Hub).filter_by(name="scale").one_or_none()
            if hub is None:
                hub = Hub(name="scale", kind="simulated")
                session.add(hub)
                session.flush()
            known = known_before(session, hub, {}, snap, missing_after=timedelta(hours=2))
            changes = apply_snapshot(session, hub, snap, missing_after=timedelta(hours=2))
            window = Window(at - timedelta(seconds=BUCKET_SECONDS), at, POLLED)
            account_window(
                session,
                hub,
                window,
                cursor,
                snap,
                known,
                bucket_seconds=BUCKET_SECONDS,
                idle_threshold_percent=5,
                replica="benchmark",
                ids=changes.ids,
            )
            cursor = at
