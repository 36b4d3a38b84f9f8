"""MIG utilisation with both dcgm-exporter behaviours, through a real Prometheus and in-process.

DCGM does not support ``DCGM_FI_DEV_GPU_UTIL`` on MIG instances: some dcgm-exporter versions leave
the series out, others report it as 0. Three simulated exporters serve the same MIG layout with
``mig_gpu_util = "zero"``, ``"absent"``, and (``profiling = false``) no engine activity at all;
one real Prometheus scrapes them. Busy slices whose ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` reads 0.52 and
0.28 must be reported 52 % and 28 % and never found idle; a slice with no activity metric is unknown
(None) and yields no idle finding; an idle slice still is one. The in-process simulated source
must say the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.pipeline.extract import PollObservation, SignalExtractor
from domain.pipeline.signals import IDLE_ALLOCATED, STRAGGLER, slice_subject
from domain.settings import PipelineSettings, SourceSettings
from domain.telemetry.readings import Snapshot
from simulator import load_fleet
from tests.prometheus_service import PrometheusServer, running_prometheus, running_simulators, scrape_config
from worker.sources.prometheus import PrometheusSource
from worker.sources.simulated import SimulatedSource

WINDOW = 6.0
CLUSTERS = ("mig-zero", "mig-absent", "no-profiling")


def cluster_block(name: str, options: str) -> str:
    return f"""
[[clusters]]
name = "{name}"
{options}
namespaces = [{{ name = "lab" }}]

[[clusters.nodes]]
hostname = "{name}-01"
model = "a100"
gpus = 2
mig = [{{ gpu = 0, profiles = ["3g.40gb", "2g.20gb", "1g.10gb"] }}]

[[clusters.workloads]]
namespace = "lab"
pod = "busy-52"
behaviour = "steady"
utilization = 52
devices = [{{ node = "{name}-01", gpu = 0, profile = "3g.40gb" }}]

[[clusters.workloads]]
namespace = "lab"
pod = "busy-28"
behaviour = "steady"
utilization = 28
devices = [{{ node = "{name}-01", gpu = 0, profile = "2g.20gb" }}]

[[clusters.workloads]]
namespace = "lab"
pod = "notebook"
behaviour = "idle"
devices = [{{ node = "{name}-01", gpu = 0, profile = "1g.10gb" }}]

[[clusters.workloads]]
namespace = "lab"
pod = "whole"
behaviour = "steady"
utilization = 40
devices = [{{ node = "{name}-01", gpu = 1 }}]
"""


FLEET = 'name = "mig-utilization"\nstep_seconds = 1\n' + "".join(
    [
        cluster_block("mig-zero", 'mig_gpu_util = "zero"'),
        cluster_block("mig-absent", 'mig_gpu_util = "absent"'),
        cluster_block("no-profiling", 'mig_gpu_util = "zero"\nprofiling = false'),
    ]
)


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mig") / "fleet.toml"
    path.write_text(FLEET, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prometheus(fleet_file: Path) -> Iterator[PrometheusServer]:
    with running_simulators(fleet_file, list(CLUSTERS)) as sims:
        configs = [
            scrape_config(sim.cluster or "", [sim.target], labels={"cluster": sim.cluster or ""}) for sim in sims
        ]
        with running_prometheus(fleet_file.parent, configs) as server:
            server.wait_for_scrape(list(CLUSTERS), targets=len(CLUSTERS))
            server.wait_for("count(DCGM_FI_DEV_FB_USED)", at_least=3 * (3 + 1))
            # a window's worth of samples, so averages cover it
            server.wait_for("min(count_over_time(DCGM_FI_DEV_FB_USED[1m]))", at_least=3, timeout=60)
            yield server


def prometheus_snapshot(prometheus: PrometheusServer) -> Snapshot:
    source = PrometheusSource(SourceSettings(name="hub", url=prometheus.url, cluster_label="cluster"))
    try:
        return source.poll(datetime.now(UTC), WINDOW)
    finally:
        source.close()


def slice_figures(snapshot: Snapshot) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(cluster, pod) -> (average, peak) utilisation of the slice or GPU the pod holds."""
    out = {}
    for gpu in snapshot.gpus:
        for pod in gpu.workloads:
            out[(gpu.cluster, pod.pod)] = (gpu.utilization, gpu.utilization_max)
        for part in gpu.slices:
            for pod in part.workloads:
                out[(gpu.cluster, pod.pod)] = (part.utilization, part.utilization_max)
    return out


def idle_and_straggler_subjects(snapshot: Snapshot) -> set[tuple[str, str]]:
    extractor = SignalExtractor(PipelineSettings(), idle_threshold_percent=5)
    signals = extractor.extract(PollObservation.of(snapshot))
    return {(s.kind, s.subject) for s in signals if s.kind in (IDLE_ALLOCATED, STRAGGLER)}


def check(snapshot: Snapshot) -> None:
    figures = slice_figures(snapshot)
    for cluster in ("mig-zero", "mig-absent"):  # both exporter behaviours: engine activity, never GPU_UTIL's 0
        assert figures[(cluster, "busy-52")] == (52.0, 52.0), cluster
        assert figures[(cluster, "busy-28")] == (28.0, 28.0), cluster
        assert 0 <= (figures[(cluster, "notebook")][0] or -1) <= 2, cluster
    # no activity metric on the slices: unknown, not 0; the whole GPU still has GPU_UTIL
    for pod in ("busy-52", "busy-28", "notebook"):
        assert figures[("no-profiling", pod)] == (None, None), pod
    assert {figures[(c, "whole")] for c in CLUSTERS} == {(40.0, 40.0)}
    for gpu in snapshot.gpus:
        if gpu.mig_mode:  # GPU_UTIL 0 on the MIG parent ("zero") is no utilisation either
            assert (gpu.utilization, gpu.utilization_max) == (None, None), gpu.cluster

    found = idle_and_straggler_subjects(snapshot)
    idle = {subject for kind, subject in found if kind == IDLE_ALLOCATED}
    by_pod = {
        (gpu.cluster, pod.pod): slice_subject(gpu.uuid, part.mig_instance_id)
        for gpu in snapshot.gpus
        for part in gpu.slices
        for pod in part.workloads
    }
    assert idle == {by_pod[("mig-zero", "notebook")], by_pod[("mig-absent", "notebook")]}


def test_a_real_prometheus_reads_mig_activity_with_both_exporter_behaviours(prometheus: PrometheusServer) -> None:
    # what the exporters really serve: GPU_UTIL as 0 on "zero" slices, none on "absent" ones
    zero = prometheus.query('DCGM_FI_DEV_GPU_UTIL{cluster="mig-zero", GPU_I_ID!=""}')
    absent = prometheus.query('DCGM_FI_DEV_GPU_UTIL{cluster="mig-absent", GPU_I_ID!=""}')
    assert len(zero) == 3 and {value for _, value in zero} == {0.0} and absent == []
    assert prometheus.query('DCGM_FI_PROF_GR_ENGINE_ACTIVE{cluster="no-profiling"}') == []
    check(prometheus_snapshot(prometheus))


def test_the_simulated_source_applies_the_same_rule(fleet_file: Path) -> None:
    source = SimulatedSource("hub", load_fleet(fleet_file))
    check(source.poll(datetime.now(UTC), WINDOW))
