"""The collector against a real Prometheus scraping simulated exporters, checked against the fleet file.

One Prometheus for the module (scrape interval 1 s) scrapes five ``ai-telemetry simulate``
processes: ``ocp-exported`` (OpenShift's exported_* pod labels, Hostname = the exporter pod's name),
``mig-lab`` (MIG slices, XID counts) each as a cluster of its own, and a hub job whose targets
``hub-a`` (legacy pod labels), ``hub-b`` and ``hub-dark`` (no DCGM exporter: GPU Operator counts
only) are told apart by a ``cluster`` target label, as on ACM or Thanos. Three sources poll it,
and the inventory must match the fleet exactly; utilisation within the range the simulator produced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from domain.ledger.mig import slice_fraction
from domain.models import Allocation, Cluster, Gpu, GpuSlice, Hub, Node, ResearchProject, UsageRollup
from domain.settings import SchedulerSettings, SourceSettings
from domain.statuses import ClusterStatus, Health
from simulator import Fleet, FleetState, Simulation, load_fleet
from tests.prometheus_service import (
    PrometheusServer,
    labelled_targets,
    running_prometheus,
    running_simulators,
    scrape_config,
)
from worker.polling import SourcePoller
from worker.sources.prometheus import PrometheusSource

WINDOW = 6.0
FLEET = """
name = "collector-test"
step_seconds = 1

[[clusters]]
name = "ocp-exported"
pod_labels = "exported"
exporter_hostname = "pod"
nodes = [
    { hostname = "ocp-gpu-01", model = "a100", gpus = 2 },
    { hostname = "ocp-gpu-02", model = "l40s", gpus = 2 },
]
namespaces = [{ name = "ml-team", gpu_quota = 4 }, { name = "quota-only", gpu_quota = 2 }]
workloads = [
    { namespace = "ml-team", pod = "train-0", utilization = 80, count = 2, node = "ocp-gpu-01" },
    { namespace = "ml-team", pod = "notebook", container = "nb", behaviour = "idle", count = 1, node = "ocp-gpu-02" },
]

[[clusters]]
name = "mig-lab"
xid_errors_count = true
namespaces = [{ name = "course", gpu_quota = 3 }]

[[clusters.nodes]]
hostname = "mig-01"
model = "a100"
gpus = 2
mig = [{ gpu = 0, profiles = ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"] }]

[[clusters.workloads]]
namespace = "course"
pod = "student-1"
container = "nb"
utilization = 50
devices = [{ node = "mig-01", gpu = 0, profile = "1g.10gb" }]

[[clusters.workloads]]
namespace = "course"
pod = "student-2"
container = "nb"
behaviour = "idle"
devices = [{ node = "mig-01", gpu = 0, profile = "3g.40gb" }]

[[clusters.workloads]]
namespace = "research"
pod = "xid-job"
container = "main"
utilization = 70
behaviour = "xid"
xid_code = 79
devices = [{ node = "mig-01", gpu = 1 }]

[[clusters]]
name = "hub-a"
pod_labels = "legacy"
nodes = [{ hostname = "hub-a-01", model = "h100", gpus = 2 }]
workloads = [{ namespace = "lab", pod = "sim", container = "sim", utilization = 60, count = 1 }]

[[clusters]]
name = "hub-b"
nodes = [{ hostname = "hub-b-01", model = "l40s", gpus = 1 }]
namespaces = [{ name = "empty-quota", gpu_quota = 1 }]

[[clusters]]
name = "hub-dark"
dcgm = false
nodes = [{ hostname = "hub-dark-01", model = "a100", gpus = 4 }, { hostname = "hub-dark-02", model = "l40s", gpus = 2 }]
"""
RULES = {
    "groups": [
        {
            "name": "nerc",
            "interval": "1s",
            "rules": [
                {"record": "nerc:dcgm_gpu_util:avg5m", "expr": "avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m])"},
                {"record": "nerc:dcgm_gpu_util:max5m", "expr": "max_over_time(DCGM_FI_DEV_GPU_UTIL[5m])"},
            ],
        }
    ]
}
DCGM_CLUSTERS = ("ocp-exported", "mig-lab", "hub-a", "hub-b")
HUB_CLUSTERS = ("hub-a", "hub-b", "hub-dark")


@dataclass(frozen=True)
class Setup:
    prometheus: PrometheusServer
    fleet: Fleet
    sources: dict[str, SourceSettings]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("collector")
    fleet_file = directory / "fleet.toml"
    fleet_file.write_text(FLEET, encoding="utf-8")
    rules = directory / "rules.yml"
    rules.write_text(json.dumps(RULES), encoding="utf-8")
    clusters = ["ocp-exported", "mig-lab", *HUB_CLUSTERS]
    with running_simulators(fleet_file, clusters) as sims:
        by_cluster = {s.cluster: s.target for s in sims}
        configs = [
            scrape_config("ocp", [by_cluster["ocp-exported"]]),
            scrape_config("mig", [by_cluster["mig-lab"]]),
            labelled_targets("hub", {name: by_cluster[name] for name in HUB_CLUSTERS}),
        ]
        with running_prometheus(directory, configs, rule_files=[rules]) as prometheus:
            prometheus.wait_for_scrape(["ocp", "mig", "hub"], targets=5)
            gpus = sum(1 for c in load_fleet(fleet_file).clusters if c.dcgm for _ in c.gpus())
            prometheus.wait_for("count(DCGM_FI_DEV_GPU_TEMP)", at_least=gpus)
            prometheus.wait_for("count(nerc:dcgm_gpu_util:avg5m)", at_least=1)
            url = prometheus.url
            sources = {
                "ocp": SourceSettings(name="ocp", url=url, cluster="ocp-exported", matchers={"job": "ocp"}),
                "mig": SourceSettings(name="mig", url=url, cluster="mig-lab", matchers={"job": "mig"}),
                "acm-hub": SourceSettings(name="acm-hub", url=url, cluster_label="cluster", matchers={"job": "hub"}),
            }
            yield Setup(prometheus, load_fleet(fleet_file), sources)


def now_utc() -> datetime:
    return datetime.now(UTC)


def poll_all(setup: Setup, engine: Engine, at: datetime) -> dict[str, SourcePoller]:
    scheduler = SchedulerSettings(poll_interval_seconds=WINDOW)
    pollers = {}
    for name, settings in setup.sources.items():
        poller = SourcePoller(PrometheusSource(settings), engine, scheduler)
        outcome = poller.poll_once(at, force=True)
        assert outcome.outcome == "success", (name, outcome.error)
        pollers[name] = poller
    return pollers


def simulated_range(fleet: Fleet, at: datetime, uuid: str, instance: int | None) -> tuple[float, float]:
    """Lowest and highest utilisation the simulator produced for a GPU or slice around the window."""
    simulation = Simulation(fleet, 42)
    values = []
    for step in simulation.steps_in_window(at, WINDOW + 3):
        gpu = simulation.state_at_step(step).gpu(uuid)
        if instance is None:
            values.append(float(gpu.utilization or 0))
        else:
            values.append(next(s.engine_active * 100 for s in gpu.slices if s.instance_id == instance))
    return min(values), max(values)


def test_the_inventory_matches_the_fleet_exactly(setup: Setup, sqlite_engine: Engine) -> None:
    at = now_utc()
    pollers = poll_all(setup, sqlite_engine, at)
    fleet = setup.fleet
    state = Simulation(fleet, 42).state_at(at)
    hubs = {"ocp-exported": "ocp", "mig-lab": "mig", "hub-a": "acm-hub", "hub-b": "acm-hub", "hub-dark": "acm-hub"}

    with Session(sqlite_engine) as session:
        clusters = {
            c.name: (hub, c)
            for c, hub in session.exec(select(Cluster, Hub.name).join(Hub, col(Cluster.hub_id) == col(Hub.id)))
        }
        assert {name: hub for name, (hub, _) in clusters.items()} == hubs
        for spec in fleet.clusters:
            _, cluster = clusters[spec.name]
            spec_gpus = list(spec.gpus())
            expected = (len(spec.nodes), len(spec_gpus), sum(len(g.slices) for g in spec_gpus) if spec.dcgm else 0)
            assert (cluster.node_count, cluster.gpu_count, cluster.slice_count) == expected, spec.name
            assert (cluster.status, cluster.status_reason) == (ClusterStatus.OK, None)

        gpus, slices = check_hardware(session, fleet)
        check_projects_and_allocations(session, fleet, state)
        check_usage(session, fleet, at, gpus, slices)

    # polling the same instant again: identical answers, nothing written
    for name, poller in pollers.items():
        outcome = poller.poll_once(at, force=True)
        assert outcome.changes is not None and outcome.changes.rows_written == 0, name


def check_hardware(
    session: Session, fleet: Fleet
) -> tuple[dict[str, tuple[Gpu, str]], dict[tuple[str, int], GpuSlice]]:
    """Nodes, GPUs and slices exactly as in the fleet file."""
    # nodes: real host names (ocp-exported reports exporter pods, mapped through kube_pod_info)
    nodes = {
        (cluster, n.hostname): n.gpu_count
        for n, cluster in session.exec(
            select(Node, Cluster.name).join(Cluster, col(Node.cluster_id) == col(Cluster.id))
        )
    }
    assert nodes == {(c.name, n.hostname): len(n.gpus) for c in fleet.clusters if c.dcgm for n in c.nodes}

    # GPUs by UUID, with identity from the parent rows also for MIG GPUs
    gpus = {
        g.uuid: (g, hostname)
        for g, hostname in session.exec(select(Gpu, Node.hostname).join(Node, col(Gpu.node_id) == col(Node.id)))
    }
    expected_gpus = {g.uuid: g for c in fleet.clusters if c.dcgm for g in c.gpus()}
    assert set(gpus) == set(expected_gpus)
    for uuid, spec_gpu in expected_gpus.items():
        gpu, hostname = gpus[uuid]
        assert (hostname, gpu.index, gpu.model, gpu.pci_bus_id, gpu.mig_mode) == (
            spec_gpu.node,
            spec_gpu.index,
            spec_gpu.model.name,
            spec_gpu.pci_bus_id,
            spec_gpu.mig_mode,
        )
        if not spec_gpu.mig_mode:
            assert gpu.memory_total_mib == spec_gpu.model.memory_mib  # used + free + reserved

    # MIG slices
    slices = {
        (uuid, s.mig_instance_id): s
        for s, uuid in session.exec(select(GpuSlice, Gpu.uuid).join(Gpu, col(GpuSlice.gpu_id) == col(Gpu.id)))
    }
    expected_slices = {(g.uuid, s.instance_id): s for g in expected_gpus.values() for s in g.slices}
    assert set(slices) == set(expected_slices)
    for key, spec_slice in expected_slices.items():
        assert (slices[key].profile, slices[key].memory_total_mib) == (spec_slice.profile, spec_slice.memory_mib)

    return gpus, slices


def check_projects_and_allocations(session: Session, fleet: Fleet, state: FleetState) -> None:
    # research projects: every namespace with a GPU series or a quota, never the exporter's own
    projects = {
        (cluster, p.namespace): p.gpu_quota
        for p, cluster in session.exec(
            select(ResearchProject, Cluster.name).join(Cluster, col(ResearchProject.cluster_id) == col(Cluster.id))
        )
    }
    expected_projects = {(c.name, n.name): n.gpu_quota for c in fleet.clusters for n in c.namespaces}
    for workload in fleet.workloads():
        expected_projects.setdefault((workload.cluster, workload.namespace), None)
    assert projects == expected_projects

    # open allocations: exactly the pods on each GPU or slice
    allocations = set()
    for allocation, uuid, instance, namespace in session.exec(
        select(Allocation, Gpu.uuid, GpuSlice.mig_instance_id, ResearchProject.namespace)
        .join(Gpu, col(Allocation.gpu_id) == col(Gpu.id))
        .join(GpuSlice, col(Allocation.slice_id) == col(GpuSlice.id), isouter=True)
        .join(ResearchProject, col(Allocation.project_id) == col(ResearchProject.id))
        .where(col(Allocation.until).is_(None))
    ):
        allocations.add((uuid, instance, namespace, allocation.pod, allocation.container))
    expected_allocations = set()
    for gpu_state in state.gpus:
        for pod in gpu_state.pods:
            expected_allocations.add((gpu_state.uuid, None, pod.namespace, pod.pod, pod.container))
        for part in gpu_state.slices:
            for pod in part.pods:
                expected_allocations.add((gpu_state.uuid, part.instance_id, pod.namespace, pod.pod, pod.container))
    assert allocations == expected_allocations and len(allocations) == 7


def check_usage(
    session: Session,
    fleet: Fleet,
    at: datetime,
    gpus: dict[str, tuple[Gpu, str]],
    slices: dict[tuple[str, int], GpuSlice],
) -> None:
    # utilisation: within what the simulator produced over the window
    for uuid, (gpu, _) in gpus.items():
        if not gpu.mig_mode:
            low, high = simulated_range(fleet, at, uuid, None)
            assert low - 1 <= (gpu.utilization or 0) <= high + 1, (uuid, gpu.utilization, low, high)
    for (uuid, instance), part in slices.items():
        low, high = simulated_range(fleet, at, uuid, instance)
        assert low - 1 <= (part.utilization or 0) <= high + 1, (uuid, instance, part.utilization, low, high)

    # the XID workload's GPU fails (DCGM_EXP_XID_ERRORS_COUNT is exported on mig-lab)
    xid_gpu = fleet.cluster("mig-lab").node("mig-01").gpus[1]
    assert (gpus[xid_gpu.uuid][0].last_xid, gpus[xid_gpu.uuid][0].health) == (79, Health.FAILING)

    # rollups: GPU-seconds allocated and idle per project for the one poll
    usage = {
        namespace: (allocated, idle)
        for namespace, allocated, idle in session.exec(
            select(
                ResearchProject.namespace,
                func.sum(UsageRollup.seconds),
                func.sum(UsageRollup.seconds_idle),
            )
            .join(ResearchProject, col(UsageRollup.project_id) == col(ResearchProject.id))
            .group_by(ResearchProject.namespace)
        )
    }
    assert usage["ml-team"] == pytest.approx((3 * WINDOW, 1 * WINDOW))  # 2 busy + 1 idle notebook
    course = (slice_fraction("1g.10gb") + slice_fraction("3g.40gb")) * WINDOW
    assert usage["course"] == pytest.approx((course, slice_fraction("3g.40gb") * WINDOW))
    assert usage["research"] == pytest.approx((WINDOW, 0.0))


def test_recording_rules_and_acm_windows_read_the_same_fleet(setup: Setup) -> None:
    for rule in ("nerc:dcgm_gpu_util:avg5m", "nerc:dcgm_gpu_util:max5m"):  # evaluated for every GPU by now
        setup.prometheus.wait_for(f'count({rule}{{job="ocp"}})', at_least=4)
    at = now_utc()
    plain = PrometheusSource(setup.sources["ocp"]).poll(at, WINDOW)
    ruled = PrometheusSource(
        setup.sources["ocp"].model_copy(
            update={
                "utilization_avg_rule": "nerc:dcgm_gpu_util:avg5m",
                "utilization_max_rule": "nerc:dcgm_gpu_util:max5m",
            }
        )
    ).poll(at, WINDOW)
    acm = PrometheusSource(setup.sources["ocp"].model_copy(update={"query_window_seconds": 300})).poll(at, WINDOW)

    def identity(snapshot: object) -> set[tuple[object, ...]]:
        return {(r.uuid, r.node, r.model, r.workloads) for r in snapshot.gpus}  # type: ignore[attr-defined]

    assert identity(plain) == identity(ruled) == identity(acm) and len(plain.gpus) == 4
    rule_values = {
        labels["UUID"]: value
        for labels, value in setup.prometheus.query('nerc:dcgm_gpu_util:avg5m{job="ocp"}', at=at.timestamp())
    }
    for reading in ruled.gpus:
        assert reading.utilization == pytest.approx(rule_values[reading.uuid], abs=0.001)
    busy = [r for r in ruled.gpus if "train-0" in {w.pod for w in r.workloads}]
    assert len(busy) == 2 and all(60 <= (r.utilization or 0) <= 100 for r in busy)


def test_a_cluster_missing_from_the_hub_goes_stale_and_keeps_its_inventory(setup: Setup, sqlite_engine: Engine) -> None:
    at = now_utc()
    hub = setup.sources["acm-hub"]
    scheduler = SchedulerSettings(poll_interval_seconds=WINDOW)
    assert SourcePoller(PrometheusSource(hub), sqlite_engine, scheduler).poll_once(at, force=True).outcome == "success"
    narrowed = hub.model_copy(update={"matchers": {"job": "hub", "cluster": "!=hub-a"}})

    later = at + timedelta(seconds=1)
    assert (
        SourcePoller(PrometheusSource(narrowed), sqlite_engine, scheduler).poll_once(later, force=True).outcome
        == "success"
    )

    with Session(sqlite_engine) as session:
        status = {c.name: (c.status, c.gpu_count) for c in session.exec(select(Cluster))}
        assert status == {
            "hub-a": (ClusterStatus.STALE, 2),
            "hub-b": (ClusterStatus.OK, 1),
            "hub-dark": (ClusterStatus.OK, 6),
        }
        hub_a_gpus = session.exec(
            select(Gpu).join(Node, col(Gpu.node_id) == col(Node.id)).join(Cluster).where(Cluster.name == "hub-a")
        ).all()
        assert len(hub_a_gpus) == 2 and all(g.health != Health.MISSING for g in hub_a_gpus)


def test_the_fleet_file_used_here_is_valid(tmp_path: Path) -> None:
    (tmp_path / "f.toml").write_text(FLEET)
    assert load_fleet(tmp_path / "f.toml").cluster_names == ("ocp-exported", "mig-lab", *HUB_CLUSTERS)


def test_profiling_families_travel_through_prometheus_per_device(setup: Setup) -> None:
    """Each GPU's and slice's profiling readings are values the simulator served for that device around
    the poll (the latest scraped sample); devices without a pod report theirs too."""
    at = now_utc()
    simulation = Simulation(setup.fleet, 42)
    steps = [simulation.state_at_step(s) for s in simulation.steps_in_window(at, WINDOW + 3)]
    checked = 0
    for name in ("ocp", "mig"):
        snapshot = PrometheusSource(setup.sources[name]).poll(at, WINDOW)
        for reading in snapshot.gpus:
            devices = [(None, reading.profiling)] if not reading.slices else [
                (s.mig_instance_id, s.profiling) for s in reading.slices
            ]  # fmt: skip
            for instance, profiling in devices:
                assert profiling is not None, (reading.uuid, instance)
                served = []
                for state in steps:
                    gpu = state.gpu(reading.uuid)
                    device = gpu if instance is None else next(s for s in gpu.slices if s.instance_id == instance)
                    served.append(device.profiling or {})
                for key in ("sm_active", "tensor_active", "pcie_rx_bytes", "nvlink_tx_bytes"):
                    value = getattr(profiling, key)
                    assert any(value == pytest.approx(s[key], abs=1e-6) for s in served), (reading.uuid, key, value)
                checked += 1
    assert checked >= 4
