"""The in-process simulated source: its snapshot matches the fleet and agrees with the exporter."""

from __future__ import annotations

import dataclasses
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from domain.settings import SourceSettings
from domain.telemetry.readings import GpuReading, Snapshot
from simulator import Fleet, FleetError, Simulation, load_fleet, render
from worker.sources import Source
from worker.sources.simulated import SimulatedSource

NOW = datetime(2025, 3, 1, 12, 25, 3, tzinfo=UTC)  # 1500 s into the default fleet's hourly cycle


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(None)


@pytest.fixture(scope="module")
def source() -> SimulatedSource:
    return SimulatedSource.from_settings(SourceSettings(name="demo", kind="simulated"))


@pytest.fixture(scope="module")
def snapshot(source: SimulatedSource) -> Snapshot:
    return source.poll(NOW, 300)


def test_from_settings_builds_a_source(source: SimulatedSource, snapshot: Snapshot) -> None:
    typed: Source = source
    assert (typed.name, typed.kind, typed.url) == ("demo", "simulated", None)
    assert snapshot.source == "demo"
    assert snapshot.taken_at == NOW and snapshot.window_seconds == 300
    assert snapshot.clusters == ("moc-prod", "nerc-ocp", "edu-shared")
    assert snapshot.warnings == ()


def test_snapshot_lists_every_gpu_and_slice(fleet: Fleet, snapshot: Snapshot) -> None:
    assert len(snapshot.gpus) == 40
    readings = {g.uuid: g for g in snapshot.gpus}
    for gpu in fleet.gpus():
        reading = readings[gpu.uuid]
        assert (reading.cluster, reading.node, reading.index) == (gpu.cluster, gpu.node, gpu.index)
        assert (reading.model, reading.pci_bus_id, reading.driver_version) == (
            gpu.model.name,
            gpu.pci_bus_id,
            gpu.driver_version,
        )
        assert reading.mig_mode == gpu.mig_mode
        assert [(s.mig_instance_id, s.profile, s.memory_total_mib) for s in reading.slices] == [
            (s.instance_id, s.profile, s.memory_mib) for s in gpu.slices
        ]


def test_memory_adds_up(fleet: Fleet, snapshot: Snapshot) -> None:
    models = {g.uuid: g.model for g in fleet.gpus()}
    for reading in snapshot.gpus:
        if reading.mig_mode:
            assert reading.memory_total_mib is None  # dcgm-exporter reports MIG memory per slice
            for part in reading.slices:
                assert part.memory_used_mib is not None and part.memory_total_mib is not None
                assert 0 <= part.memory_used_mib <= part.memory_total_mib
            continue
        parts = (reading.memory_used_mib, reading.memory_free_mib, reading.memory_reserved_mib)
        assert all(p is not None for p in parts)
        assert reading.memory_total_mib == sum(p or 0 for p in parts) == models[reading.uuid].memory_mib
    a100 = next(r for r in snapshot.gpus if r.model == "NVIDIA A100-SXM4-80GB" and not r.mig_mode)
    assert a100.memory_total_mib == 81920


def test_workloads_are_the_active_ones(fleet: Fleet, snapshot: Snapshot) -> None:
    elapsed = Simulation(fleet).schedule_seconds(Simulation(fleet).step_at(NOW))
    expected = {
        (w.cluster, w.namespace, w.pod, w.container, d.node, d.gpu, d.instance_id)
        for w in fleet.workloads()
        if w.active_at(elapsed)
        for d in w.devices
    }
    got = set()
    for g in snapshot.gpus:
        for w in g.workloads:
            got.add((g.cluster, w.namespace, w.pod, w.container, g.node, g.index, None))
        for s in g.slices:
            for w in s.workloads:
                got.add((g.cluster, w.namespace, w.pod, w.container, g.node, g.index, s.mig_instance_id))
    assert got == expected
    pods = {(c, ns, pod) for c, ns, pod, *_ in got}
    assert ("moc-prod", "ml-team-a", "bert-finetune") in pods  # scheduled 600-2400 s: running
    assert ("moc-prod", "nlp-research", "eval-harness") not in pods  # scheduled 1800-3300 s: not yet


def test_quotas_come_from_the_fleet(fleet: Fleet, snapshot: Snapshot) -> None:
    expected = {(c.name, n.name, n.gpu_quota) for c in fleet.clusters for n in c.namespaces if n.gpu_quota is not None}
    assert {(q.cluster, q.namespace, q.gpu_quota) for q in snapshot.quotas} == expected
    assert ("nerc-ocp", "climate-sim", 4) in expected  # a quota without a workload is still reported


def test_utilization_is_the_average_over_the_window(fleet: Fleet, source: SimulatedSource, snapshot: Snapshot) -> None:
    sim = Simulation(fleet, 42)
    first = int((NOW.timestamp() - 300) // 15) + 1
    last = int(NOW.timestamp() // 15)
    states = [sim.state_at_step(step) for step in range(first, last + 1)]
    assert len(states) == 20
    readings = {g.uuid: g for g in snapshot.gpus}
    varied = 0
    for gpu in states[-1].gpus:
        reading = readings[gpu.uuid]
        if gpu.mig_mode:
            for k, part in enumerate(reading.slices):
                if not fleet.cluster(gpu.cluster).profiling:  # no engine activity exported: unknown, never 0
                    assert part.utilization is None
                    continue
                samples = [s.gpu(gpu.uuid).slices[k].utilization for s in states]
                assert part.utilization == pytest.approx(statistics.fmean(samples), abs=1e-3)
                assert part.utilization_max == max(samples)
            continue
        samples = [float(s.gpu(gpu.uuid).utilization or 0) for s in states]
        assert reading.utilization == pytest.approx(statistics.fmean(samples), abs=1e-3)
        assert reading.utilization_max == max(samples)
        varied += max(samples) > min(samples)
        # The other gauges are the latest values, not averages.
        assert (reading.power_watts, reading.temperature_c, reading.xid) == (
            gpu.power_watts,
            gpu.temperature_c,
            gpu.xid,
        )
    assert varied > 10  # the averages really span several different samples


def test_short_window_agrees_with_the_exporter(fleet: Fleet, source: SimulatedSource) -> None:
    snapshot = source.poll(NOW, 5)
    text = render(Simulation(fleet, 42).state_at(NOW))
    exported: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"):
            for sample in family.samples:
                instance = sample.labels.get("GPU_I_ID")
                if family.name == "DCGM_FI_DEV_GPU_UTIL":
                    exported[(sample.labels["UUID"], None)] = sample.value
                elif instance is not None:
                    exported[(sample.labels["UUID"], instance)] = sample.value * 100
    mine: dict[tuple[str, str | None], float] = {}
    for g in snapshot.gpus:
        if g.utilization is not None:
            mine[(g.uuid, None)] = g.utilization
        for s in g.slices:
            if s.utilization is None:  # a cluster without profiling metrics: a slice's activity is unknown
                continue
            mine[(g.uuid, str(s.mig_instance_id))] = s.utilization
    assert mine.keys() == exported.keys()
    for key, value in exported.items():
        assert mine[key] == pytest.approx(value, abs=1e-6)


def _reading(snapshot: Snapshot, pod: str) -> list[GpuReading]:
    return [g for g in snapshot.gpus if pod in {w.pod for w in g.workloads}]


def test_behaviours_show_in_the_snapshot(snapshot: Snapshot) -> None:
    [idle] = _reading(snapshot, "rstudio-gpu")
    assert idle.utilization is not None and idle.utilization < 5
    idle_slices = [s for g in snapshot.gpus for s in g.slices if "jupyter-alice" in {w.pod for w in s.workloads}]
    assert len(idle_slices) == 1 and (idle_slices[0].utilization or 0) < 5
    straggling = sorted(g.utilization or 0 for g in _reading(snapshot, "llm-pretrain-0"))
    assert len(straggling) == 4 and straggling[0] < 0.5 * statistics.median(straggling)
    assert [g.xid for g in _reading(snapshot, "video-encoder")] == [79]
    assert all((g.temperature_c or 0) > 90 for g in _reading(snapshot, "sam-finetune"))
    healthy = [g for g in snapshot.gpus if not {w.pod for w in g.workloads} & {"sam-finetune", "video-encoder"}]
    assert all(g.xid == 0 and (g.temperature_c or 0) <= 85 for g in healthy)


def test_long_windows_stay_cheap_and_bounded(source: SimulatedSource) -> None:
    started = time.perf_counter()
    snapshot = source.poll(NOW, 86_400)
    assert time.perf_counter() - started < 5
    for g in snapshot.gpus:
        if g.utilization is not None:
            assert g.utilization_max is not None and 0 <= g.utilization <= g.utilization_max <= 100


def test_custom_fleet_file_and_seed(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        'step_seconds = 30\n[[clusters]]\nname = "solo"\n'
        '[[clusters.nodes]]\nhostname = "box"\nmodel = "l40s"\ngpus = 2\n'
        '[[clusters.namespaces]]\nname = "team"\ngpu_quota = 1\n'
        '[[clusters.workloads]]\nnamespace = "team"\npod = "job"\ncount = 1\nutilization = 70\n'
    )
    one = SimulatedSource.from_settings(SourceSettings(name="lab", kind="simulated", fleet=str(path), seed=1))
    two = SimulatedSource.from_settings(SourceSettings(name="lab", kind="simulated", fleet=str(path), seed=2))
    first, second = one.poll(NOW, 120), two.poll(NOW, 120)
    assert first.clusters == ("solo",) and len(first.gpus) == 2
    assert [q.gpu_quota for q in first.quotas] == [1]
    assert [[w.pod for w in g.workloads] for g in first.gpus] == [["job"], []]
    assert first.gpus[0].utilization != second.gpus[0].utilization
    later = one.poll(NOW + timedelta(seconds=1), 120)  # same 30 s step, same samples in the window
    assert dataclasses.replace(later, taken_at=NOW) == first


def test_a_broken_fleet_file_fails_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[[clusters]]\nname = "x"\n')
    with pytest.raises(FleetError, match=r"clusters\[0\]\.nodes"):
        SimulatedSource.from_settings(SourceSettings(name="lab", kind="simulated", fleet=str(path)))
