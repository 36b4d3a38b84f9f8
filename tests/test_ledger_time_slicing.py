"""Time-sliced GPUs in the ledger: k pods on one GPU or MIG slice hold 1/k of it each (docs/ledger.md).

* Property: whatever pods hold each device, the GPU's rows add up to the window, and each project
  gets (its pods / all the device's pods) x the device's share x the window, from the readings
  through :func:`worker.ledger.gpu_use` and the attribution.
* End to end: a real Prometheus scrapes the simulator, whose time-sliced GPU is held by pods of two
  projects (dcgm-exporter's one series per pod); each project gets half of that GPU in the rollups and
  in the statement, which reconciles; each pod has its own allocation and workload.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from domain.access import ReadScope
from domain.ledger import POLLED, attribute, bucket_pieces
from domain.ledger.attribution import SECONDS
from domain.ledger.statements import monthly_statement
from domain.models import AccountedWindow, Allocation, Gpu, GpuSlice, ResearchProject, UsageRollup, Workload
from domain.settings import SchedulerSettings, SourceSettings
from tests.prometheus_service import running_prometheus, running_simulators, scrape_config
from worker.inventory.rules import InventoryIds
from worker.ledger import gpu_use
from worker.polling import SourcePoller
from worker.sources import GpuReading, PodRef, SliceReading
from worker.sources.prometheus import PrometheusSource

BASE = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
BUCKET = 300
MODEL = "NVIDIA A100-SXM4-80GB"
NAMESPACES = ("alpha", "beta", "gamma", "stranger")
PROJECTS = {("c1", ns): n + 1 for n, ns in enumerate(NAMESPACES[:-1])}
"""``stranger`` is no project: its pods' part goes to unallocated (project 0)."""

pods = st.lists(
    st.builds(PodRef, st.sampled_from(NAMESPACES), st.sampled_from(["p0", "p1", "p2"])), max_size=4, unique=True
).map(tuple)


@st.composite
def readings(draw: st.DrawFn) -> list[GpuReading]:
    out = []
    for n in range(draw(st.integers(1, 4))):
        common = {"cluster": "c1", "node": "n1", "uuid": f"GPU-{n}", "index": n, "model": MODEL, "power_watts": 300.0}
        if draw(st.booleans()):
            out.append(GpuReading(**common, workloads=draw(pods)))  # type: ignore[arg-type]
        else:
            sizes = draw(st.lists(st.sampled_from([1, 2, 3, 4]), max_size=4).filter(lambda s: sum(s) <= 7))
            slices = tuple(
                SliceReading(i + 1, f"{size}g.{10 * size}gb", workloads=draw(pods)) for i, size in enumerate(sizes)
            )
            out.append(GpuReading(**common, slices=slices))  # type: ignore[arg-type]
    return out


def expected_shares(reading: GpuReading) -> dict[int, float]:
    """Project id -> share of the GPU, by counting pods (0: unallocated, unsliced rest included)."""
    shares: dict[int, float] = defaultdict(float)
    parts = [(1.0, reading.workloads)] if not reading.slices else []
    parts += [(int(s.profile[0]) / 7, s.workloads) for s in reading.slices]
    for share, holders in parts:
        for pod in holders:
            shares[PROJECTS.get((reading.cluster, pod.namespace), 0)] += share / len(holders)
        if not holders:
            shares[0] += share
    shares[0] += 1.0 - sum(share for share, _ in parts)
    return shares


@settings(max_examples=200)
@given(gpus=readings(), start=st.floats(0, 10_000), length=st.floats(0.5, 2_000))
def test_pods_of_a_device_split_it_evenly_and_the_gpu_adds_up(
    gpus: list[GpuReading], start: float, length: float
) -> None:
    ids = InventoryIds(
        gpus={g.uuid: n + 1 for n, g in enumerate(gpus)},
        slices={
            (n + 1, s.mig_instance_id): 10 * (n + 1) + s.mig_instance_id for n, g in enumerate(gpus) for s in g.slices
        },
        projects=dict(PROJECTS),
    )
    uses = [gpu_use(g, ids.gpus[g.uuid], ids, "hub-a") for g in gpus]
    begin = BASE + timedelta(seconds=start)
    end = begin + timedelta(seconds=length)
    rows = attribute(uses, begin, end, bucket_seconds=BUCKET, idle_threshold_percent=5)
    window = sum(seconds for _, seconds in bucket_pieces(begin, end, BUCKET))
    for reading in gpus:
        gpu_id = ids.gpus[reading.uuid]
        held: dict[int, float] = defaultdict(float)
        for (gpu, _, project, _), row in rows.items():
            if gpu == gpu_id:
                held[project] += row[SECONDS]  # type: ignore[operator]
        assert sum(held.values()) == pytest.approx(window)  # projects + unallocated = the window
        expected = expected_shares(reading)
        for project in set(held) | {p for p, share in expected.items() if share > 1e-12}:
            assert held.get(project, 0.0) == pytest.approx(expected.get(project, 0.0) * window, abs=1e-9)
        # every pod of a whole GPU in one project: that project holds the whole window, exactly
        if not reading.slices and reading.workloads:
            owners = {PROJECTS.get(("c1", pod.namespace), 0) for pod in reading.workloads}
            if len(owners) == 1:
                assert held == {owners.pop(): pytest.approx(window, rel=0, abs=0)}


# --- a real Prometheus scraping the simulator ----------------------------------------------------------

FLEET = """
name = "time-slicing"
step_seconds = 1

[[clusters]]
name = "lab"
namespaces = [{ name = "team-a", gpu_quota = 2 }, { name = "team-b", gpu_quota = 2 }]

[[clusters.nodes]]
hostname = "lab-01"
model = "a100"
gpus = 3
mig = [{ gpu = 2, profiles = ["3g.40gb"] }]

[[clusters.workloads]]
namespace = "team-a"
pod = "train-a"
utilization = 40
shared = true
devices = [{ node = "lab-01", gpu = 0 }]

[[clusters.workloads]]
namespace = "team-b"
pod = "train-b"
utilization = 30
shared = true
devices = [{ node = "lab-01", gpu = 0 }]

[[clusters.workloads]]
namespace = "team-a"
pod = "notebook-1"
shared = true
devices = [{ node = "lab-01", gpu = 2, profile = "3g.40gb" }]

[[clusters.workloads]]
namespace = "team-a"
pod = "notebook-2"
shared = true
devices = [{ node = "lab-01", gpu = 2, profile = "3g.40gb" }]
"""
SCHEDULER = SchedulerSettings(poll_interval_seconds=2, rollup_bucket_seconds=60)


def test_a_time_sliced_gpu_of_two_projects_is_halved_in_rollups_and_statement(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(FLEET, encoding="utf-8")
    with (
        running_simulators(fleet_file, ["lab"]) as sims,
        running_prometheus(tmp_path, [scrape_config("lab", [sims[0].target])]) as prometheus,
    ):
        prometheus.wait_for_scrape(["lab"], targets=1)
        prometheus.wait_for('count(DCGM_FI_DEV_GPU_TEMP{pod=~"train-.*"})', at_least=2)  # one series per pod
        source = PrometheusSource(
            SourceSettings(name="lab", url=prometheus.url, cluster="lab", matchers={"job": "lab"})
        )
        poller = SourcePoller(source, sqlite_engine, SCHEDULER)
        try:
            snapshot = source.poll(datetime.now(UTC), 2.0)
            by_index = {g.index: g for g in snapshot.gpus}
            assert [(p.namespace, p.pod) for p in by_index[0].workloads] == [
                ("team-a", "train-a"),
                ("team-b", "train-b"),
            ]
            assert by_index[1].workloads == ()
            assert [p.pod for p in by_index[2].slices[0].workloads] == ["notebook-1", "notebook-2"]
            for _ in range(3):
                assert poller.poll_once(datetime.now(UTC), force=True).outcome == "success"
                time.sleep(1.0)
        finally:
            source.close()

    with Session(sqlite_engine) as session:
        windows = list(session.exec(select(AccountedWindow).order_by(col(AccountedWindow.start))))
        assert windows and all(w.kind == POLLED for w in windows)
        covered = sum((w.end - w.start).total_seconds() for w in windows)
        projects = {p.namespace: p.id for p in session.exec(select(ResearchProject))}
        gpus = {g.index: g.id for g in session.exec(select(Gpu))}
        held: dict[tuple[int, int], float] = defaultdict(float)
        for row in session.exec(select(UsageRollup)):
            held[(row.gpu_id, row.project_id)] += row.seconds
        shared, whole_idle, mig = gpus[0], gpus[1], gpus[2]
        assert held[(shared, projects["team-a"])] == pytest.approx(covered / 2)
        assert held[(shared, projects["team-b"])] == pytest.approx(covered / 2)
        assert held[(shared, 0)] == 0.0 and held[(whole_idle, 0)] == pytest.approx(covered)
        # two pods of one project on a 3g.40gb slice: the project holds the slice's whole share
        assert held[(mig, projects["team-a"])] == pytest.approx(covered * 3 / 7)
        assert held[(mig, 0)] == pytest.approx(covered * 4 / 7)

        statement = monthly_statement(session, ReadScope.all(), windows[0].start.strftime("%Y-%m"))
        hours = {p.namespace: p.totals.gpu_hours for p in statement.projects}
        assert hours == {
            "team-a": pytest.approx((covered / 2 + covered * 3 / 7) / 3600),
            "team-b": pytest.approx(covered / 2 / 3600),
        }
        assert all(line.balanced for line in statement.reconciliation)

        # one open allocation and one workload per pod of each shared device
        open_allocations = session.exec(
            select(Allocation.gpu_id, Allocation.slice_id, Allocation.pod).where(col(Allocation.until).is_(None))
        ).all()
        slice_id, instance = session.exec(
            select(GpuSlice.id, GpuSlice.mig_instance_id).where(GpuSlice.gpu_id == mig)
        ).one()
        assert sorted(open_allocations, key=lambda a: a[2]) == [
            (mig, slice_id, "notebook-1"),
            (mig, slice_id, "notebook-2"),
            (shared, None, "train-a"),
            (shared, None, "train-b"),
        ]
        sessions = session.exec(
            select(Workload.namespace, Workload.pod, Workload.mig_instance_id).where(col(Workload.ended_at).is_(None))
        ).all()
        assert sorted(sessions, key=lambda s: s[1]) == [
            ("team-a", "notebook-1", instance),
            ("team-a", "notebook-2", instance),
            ("team-a", "train-a", None),
            ("team-b", "train-b", None),
        ]
