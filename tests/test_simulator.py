"""The simulator: fleet file, deterministic engine, dcgm-exporter exposition and the HTTP exporter.

The exposition is parsed back with prometheus_client's parser and checked against the fleet, so the
tests see what a Prometheus scrape would see.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from simulator import (
    CONTENT_TYPE,
    Fleet,
    FleetError,
    FleetState,
    Simulation,
    Workload,
    load_fleet,
    make_server,
    parse_fleet,
    render,
)
from simulator.exposition import FAMILIES
from simulator.fleet import gpu_uuid

# 12:25 UTC is 1500 s into the default fleet's hourly cycle: bert-finetune (600-2400), isaac-sim-0
# (1200-3000), render-batch (300-1800) and student-04 (900-2700) run, eval-harness (1800-3300)
# does not, and video-encoder's XID (from 900 s) has fired.
T = datetime(2025, 3, 1, 12, 25, 3, tzinfo=UTC)
UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PCI_RE = re.compile(r"^00000000:[0-9A-F]{2}:00\.0$")
STYLE_KEYS = {
    "plain": ("namespace", "pod", "container"),
    "exported": ("exported_namespace", "exported_pod", "exported_container"),
    "legacy": ("pod_namespace", "pod_name", "container_name"),
}

Row = tuple[str, dict[str, str], float]


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(None)


@pytest.fixture(scope="module")
def state(fleet: Fleet) -> FleetState:
    return Simulation(fleet, 42).state_at(T)


def rows(text: str, name: str | None = None) -> list[Row]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if name is None or sample.name == name:
                out.append((sample.name, dict(sample.labels), sample.value))
    return out


def by_uuid(text: str, name: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for _, labels, _ in rows(text, name):
        out[labels["UUID"]].append(labels)
    return out


def value_of(text: str, name: str, uuid: str, instance: int | None = None) -> float:
    found = [
        v
        for _, labels, v in rows(text, name)
        if labels["UUID"] == uuid and labels.get("GPU_I_ID") == (None if instance is None else str(instance))
    ]
    assert len(found) == 1, (name, uuid, instance, found)
    return found[0]


# --- The fleet ----------------------------------------------------------------------------------


def test_default_fleet_has_the_clusters_the_demo_grants(fleet: Fleet) -> None:
    assert fleet.cluster_names == ("moc-prod", "nerc-ocp", "edu-shared")
    assert sum(len(c.nodes) for c in fleet.clusters) == 10
    assert len(list(fleet.gpus())) == 40
    moc, nerc, edu = fleet.clusters
    assert moc.pod_labels == "exported"
    assert nerc.pod_labels == "plain"
    assert {n.model.name for n in moc.nodes} == {"NVIDIA A100-SXM4-80GB"}
    assert {n.model.name for n in nerc.nodes} == {"NVIDIA H100 80GB HBM3"}
    assert {n.model.name for n in edu.nodes} == {"NVIDIA L40S", "NVIDIA A100-SXM4-80GB"}
    assert any(g.mig_mode for g in moc.gpus()) and any(g.mig_mode for g in nerc.gpus())
    assert {w.namespace for w in moc.workloads} >= {"ml-team-a"}
    assert {w.namespace for w in nerc.workloads} >= {"vision-lab"}
    behaviours = Counter(w.behaviour for w in fleet.workloads())
    assert all(behaviours[b] >= 1 for b in ("idle", "straggler", "xid", "thermal"))
    # Namespaces with a quota and no workload, and GPUs nobody holds.
    for cluster in fleet.clusters:
        used = {w.namespace for w in cluster.workloads}
        assert any(n.gpu_quota and n.name not in used for n in cluster.namespaces)
        held = {(d.node, d.gpu) for w in cluster.workloads for d in w.devices}
        assert any((g.node, g.index) not in held for g in cluster.gpus())


def test_gpu_identities_are_stable_and_realistic(fleet: Fleet) -> None:
    gpus = list(fleet.gpus())
    assert len({g.uuid for g in gpus}) == len(gpus)
    for gpu in gpus:
        assert UUID_RE.match(gpu.uuid), gpu.uuid
        assert gpu.uuid == gpu_uuid(gpu.cluster, gpu.node, gpu.index)
        assert PCI_RE.match(gpu.pci_bus_id), gpu.pci_bus_id
        ids = [s.instance_id for s in gpu.slices]
        assert len(set(ids)) == len(ids)
    assert load_fleet(None) == fleet  # loading twice resolves identically
    node = fleet.cluster("moc-prod").node("moc-a100-01")
    assert [s.profile for s in node.gpus[0].slices] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert node.gpus[0].pci_bus_id == "00000000:07:00.0"


# --- The exposition -----------------------------------------------------------------------------


def test_every_family_has_help_and_type(state: FleetState) -> None:
    text = render(state)
    assert text.endswith("\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == set(FAMILIES)
    for name, family in families.items():
        assert family.type == "gauge"
        assert family.documentation == FAMILIES[name]
        assert family.samples, name


@pytest.mark.parametrize("cluster", ["moc-prod", "nerc-ocp", "edu-shared"])
def test_one_cluster_has_exactly_its_gpus_per_node(fleet: Fleet, state: FleetState, cluster: str) -> None:
    text = render(state, cluster=cluster)
    seen: dict[str, set[str]] = defaultdict(set)
    for _, labels, _ in rows(text, "DCGM_FI_DEV_POWER_USAGE"):
        assert "cluster" not in labels
        seen[labels["Hostname"]].add(labels["UUID"])
    spec = fleet.cluster(cluster)
    assert seen == {n.hostname: {g.uuid for g in n.gpus} for n in spec.nodes}
    assert all("cluster" not in labels for _, labels, _ in rows(text))


def test_all_clusters_label_every_series(fleet: Fleet, state: FleetState) -> None:
    text = render(state)
    all_rows = rows(text)
    assert all_rows and all("cluster" in labels for _, labels, _ in all_rows)
    per_cluster = Counter(labels["cluster"] for _, labels, _ in rows(text, "DCGM_FI_DEV_GPU_TEMP"))
    # one series per GPU, or per pod of a time-sliced GPU (as dcgm-exporter reports it)
    series = {g.uuid: max(1, len(g.pods)) for g in state.gpus}
    assert per_cluster == {c.name: sum(series[g.uuid] for g in c.gpus()) for c in fleet.clusters}


def test_whole_gpus_have_device_rows_and_mig_gpus_have_slice_rows(fleet: Fleet, state: FleetState) -> None:
    text = render(state)
    util = by_uuid(text, "DCGM_FI_DEV_GPU_UTIL")
    engine = by_uuid(text, "DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    used = by_uuid(text, "DCGM_FI_DEV_FB_USED")
    power = by_uuid(text, "DCGM_FI_DEV_POWER_USAGE")
    for gpu in fleet.gpus():
        sharers = max(1, len(state.gpu(gpu.uuid).pods))  # a time-sliced GPU: one series per pod
        assert len(power[gpu.uuid]) == sharers and "GPU_I_ID" not in power[gpu.uuid][0]
        assert power[gpu.uuid][0]["modelName"] == gpu.model.name
        assert power[gpu.uuid][0]["pci_bus_id"] == gpu.pci_bus_id
        assert power[gpu.uuid][0]["DCGM_FI_DRIVER_VERSION"] == gpu.driver_version
        assert power[gpu.uuid][0]["device"] == f"nvidia{gpu.index}"
        profiled = fleet.cluster(gpu.cluster).profiling  # edu-shared exports no DCGM_FI_PROF_* at all
        if not gpu.mig_mode:
            assert len(util[gpu.uuid]) == sharers
            assert len(engine.get(gpu.uuid, [])) == (sharers if profiled else 0)
            assert "GPU_I_PROFILE" not in util[gpu.uuid][0]
            continue
        assert gpu.uuid not in util  # MIG GPUs have no GPU_UTIL
        assert (gpu.uuid in engine) == profiled
        expected = {(s.profile, str(s.instance_id)) for s in gpu.slices}
        for family in (engine, used) if profiled else (used,):
            got = [(labels["GPU_I_PROFILE"], labels["GPU_I_ID"]) for labels in family[gpu.uuid]]
            assert sorted(got) == sorted(expected)
            assert all(labels["modelName"] == "" and labels["pci_bus_id"] == "" for labels in family[gpu.uuid])
            assert all(labels["gpu"] == str(gpu.index) for labels in family[gpu.uuid])


def test_pod_labels_are_named_per_cluster_style(fleet: Fleet, state: FleetState) -> None:
    text = render(state)
    checked = Counter()
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"):
        for _, labels, _ in rows(text, name):
            cluster = fleet.cluster(labels["cluster"])
            gpu = state.gpu(labels["UUID"])
            pods = gpu.pods
            if "GPU_I_ID" in labels:
                pods = next(s.pods for s in gpu.slices if str(s.instance_id) == labels["GPU_I_ID"])
            # a time-sliced device has one series per pod: this series names one of them
            pod = next((p for p in pods if labels.get(STYLE_KEYS[cluster.pod_labels][1]) == p.pod), None)
            assert (pod is None) == (not pods)
            keys = STYLE_KEYS[cluster.pod_labels]
            if pod is None:
                assert not any(k in labels for k in keys if k.startswith(("exported_", "pod_", "container_")))
                if cluster.pod_labels == "plain":
                    assert "namespace" not in labels and "pod" not in labels
                continue
            assert (labels[keys[0]], labels[keys[1]], labels[keys[2]]) == (pod.namespace, pod.pod, pod.container)
            other_styles = {k for style, ks in STYLE_KEYS.items() if style != cluster.pod_labels for k in ks}
            if cluster.pod_labels == "exported":
                assert labels["namespace"] == "nvidia-gpu-operator"
                assert labels["pod"].startswith("nvidia-dcgm-exporter-")
                other_styles -= {"namespace", "pod", "container"}
            assert not other_styles & set(labels)
            checked[cluster.pod_labels] += 1
    assert set(checked) == {"plain", "exported", "legacy"}


def test_quotas_and_pod_requests_follow_the_fleet(fleet: Fleet, state: FleetState) -> None:
    text = render(state)
    hard = {
        (labels["cluster"], labels["namespace"]): v
        for _, labels, v in rows(text, "kube_resourcequota")
        if labels["type"] == "hard"
    }
    expected = {(c.name, n.name): n.gpu_quota for c in fleet.clusters for n in c.namespaces if n.gpu_quota is not None}
    assert hard == expected
    assert {labels["resource"] for _, labels, _ in rows(text, "kube_resourcequota")} == {"requests.nvidia.com/gpu"}
    elapsed = Simulation(fleet).schedule_seconds(state.step)
    requests: Counter[tuple[str, str, str, str, str]] = Counter()
    for w in fleet.workloads():
        if w.active_at(elapsed):
            for d in w.devices:
                requests[(w.cluster, w.namespace, w.pod, w.node, d.resource)] += 1
    got = {
        (labels["cluster"], labels["namespace"], labels["pod"], labels["node"], labels["resource"]): v
        for _, labels, v in rows(text, "kube_pod_container_resource_requests")
    }
    assert got == dict(requests)
    used = {
        (labels["cluster"], labels["namespace"]): v
        for _, labels, v in rows(text, "kube_resourcequota")
        if labels["type"] == "used"
    }
    for (cluster, namespace), value in used.items():
        whole = sum(
            n for (c, ns, _, _, r), n in requests.items() if (c, ns, r) == (cluster, namespace, "nvidia_com_gpu")
        )
        assert value == whole


def test_label_values_are_escaped(tmp_path: Path) -> None:
    container = 'say "hi"\\ there'
    fleet = parse_fleet(
        {
            "clusters": [
                {
                    "name": "c1",
                    "nodes": [{"hostname": "n1", "model": "l40s", "gpus": 1}],
                    "workloads": [{"namespace": "ns", "pod": "p", "container": container, "count": 1}],
                }
            ]
        }
    )
    text = render(Simulation(fleet).state_at(T), cluster="c1")
    assert {labels["container"] for _, labels, _ in rows(text, "DCGM_FI_DEV_GPU_UTIL")} == {container}


def test_unknown_cluster_is_refused(fleet: Fleet, state: FleetState) -> None:
    with pytest.raises(ValueError, match="nerc-ocp"):
        render(state, cluster="nope")
    with pytest.raises(ValueError, match="unknown cluster"):
        make_server(fleet, port=0, cluster="nope")


# --- Determinism --------------------------------------------------------------------------------


def test_same_seed_and_step_give_identical_text(fleet: Fleet) -> None:
    first = render(Simulation(fleet, 7).state_at(T))
    same_step = T.replace(second=14) if T.second < 15 else T
    assert render(Simulation(fleet, 7).state_at(same_step)) == first
    # A pure function of the step: computing other steps first changes nothing.
    sim = Simulation(fleet, 7)
    for minutes in (-90, 30, 5):
        sim.state_at(T + timedelta(minutes=minutes))
    assert render(sim.state_at(T)) == first


def test_different_seed_or_step_gives_different_values(fleet: Fleet) -> None:
    base = rows(render(Simulation(fleet, 1).state_at(T)))
    other_seed = rows(render(Simulation(fleet, 2).state_at(T)))
    next_step = rows(render(Simulation(fleet, 1).state_at(T + timedelta(seconds=15))))
    assert [(n, sorted(labels.items())) for n, labels, _ in base] == [
        (n, sorted(labels.items())) for n, labels, _ in other_seed
    ]
    assert [v for *_, v in base] != [v for *_, v in other_seed]
    assert [v for *_, v in base] != [v for *_, v in next_step]


def test_naive_times_are_utc(fleet: Fleet) -> None:
    sim = Simulation(fleet)
    assert sim.step_at(T.replace(tzinfo=None)) == sim.step_at(T)
    assert sim.step_at(T) == int(T.timestamp() // 15)
    assert sim.time_of(sim.step_at(T)) == T.replace(second=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), step=st.integers(0, 10**9))
def test_values_stay_realistic(seed: int, step: int) -> None:
    fleet = load_fleet(None)
    sim = Simulation(fleet, seed)
    state = sim.state_at_step(step)
    elapsed = sim.schedule_seconds(step)
    levels: dict[tuple[str, int, int | None], list[Workload]] = defaultdict(list)
    for w in fleet.workloads():
        for d in w.devices if w.active_at(elapsed) else ():
            levels[(d.node, d.gpu, d.instance_id)].append(w)
    models = {g.uuid: g for g in fleet.gpus()}
    for gpu in state.gpus:
        spec = models[gpu.uuid]
        if gpu.temperature_c <= 90:
            assert 28 <= gpu.temperature_c <= 85
        assert spec.model.idle_watts * 0.9 <= gpu.power_watts <= spec.model.max_watts
        for part in gpu.slices:
            assert part.memory_used_mib + part.memory_free_mib == spec.slice(part.instance_id).memory_mib
            profiled = fleet.cluster(gpu.cluster).profiling
            assert (
                (part.engine_active is not None and 0 <= part.engine_active <= 1)
                if profiled
                else part.engine_active is None
            )
        if gpu.mig_mode:
            assert gpu.utilization is None and gpu.memory_used_mib is None
            continue
        assert gpu.memory_used_mib is not None and gpu.memory_free_mib is not None
        assert gpu.memory_used_mib + gpu.memory_free_mib + (gpu.memory_reserved_mib or 0) == spec.model.memory_mib
        assert gpu.utilization is not None and 0 <= gpu.utilization <= 100
        holders = levels.get((gpu.node, gpu.index, None), [])
        if not holders:
            assert gpu.utilization == 0 and gpu.memory_used_mib == 0
        elif all(
            w.behaviour in ("normal", "thermal", "xid")
            and not (w.kind == "over-requested" and w.devices[0].gpu != gpu.index)  # its resting GPUs
            for w in holders
        ):
            level = min(100, sum(w.utilization for w in holders))  # time-sliced: the pods' sum
            assert abs(gpu.utilization - level) <= 16 * len(holders)
            assert gpu.memory_used_mib > 0.3 * gpu.memory_free_mib


# --- Behaviours ---------------------------------------------------------------------------------


def _steps(n: int = 12) -> list[datetime]:
    return [T + timedelta(seconds=15 * i) for i in range(n)]


def test_idle_allocated_gpus_stay_below_five_percent(fleet: Fleet) -> None:
    sim = Simulation(fleet)
    idle = [w for w in fleet.workloads() if w.behaviour == "idle"]
    assert len(idle) >= 2
    for t in _steps():
        state = sim.state_at(t)
        for w in idle:
            for d in w.devices:
                gpu = next(g for g in state.gpus if (g.cluster, g.node, g.index) == (w.cluster, d.node, d.gpu))
                if d.instance_id is None:
                    assert [p.pod for p in gpu.pods] == [w.pod]
                    assert gpu.utilization is not None and gpu.utilization < 5
                else:
                    part = next(s for s in gpu.slices if s.instance_id == d.instance_id)
                    assert [p.pod for p in part.pods] == [w.pod]
                    assert part.utilization < 5


def test_straggler_is_far_below_its_peers(fleet: Fleet) -> None:
    sim = Simulation(fleet)
    workload = next(w for w in fleet.workloads() if w.behaviour == "straggler")
    assert workload.straggler_device is not None
    uuids = [gpu_uuid(workload.cluster, d.node, d.gpu) for d in workload.devices]
    for t in _steps():
        text = render(sim.state_at(t), cluster=workload.cluster)
        utils = [value_of(text, "DCGM_FI_DEV_GPU_UTIL", u) for u in uuids]
        slow = utils.pop(workload.straggler_device)
        assert slow < 0.5 * statistics.median(utils)
        assert min(utils) >= 70


def test_xid_appears_after_its_delay_with_code_and_message(fleet: Fleet) -> None:
    workload = next(w for w in fleet.workloads() if w.behaviour == "xid")
    device = workload.devices[workload.xid_device]
    uuid = gpu_uuid(workload.cluster, device.node, device.gpu)
    sim = Simulation(fleet)
    text = render(sim.state_at(T), cluster=workload.cluster)
    [(_, labels, value)] = [r for r in rows(text, "DCGM_FI_DEV_XID_ERRORS") if r[1]["UUID"] == uuid]
    assert value == workload.xid_code == 79
    assert labels["err_code"] == "79" and labels["err_msg"] == "GPU has fallen off the bus"
    others = [r for r in rows(text, "DCGM_FI_DEV_XID_ERRORS") if r[1]["UUID"] != uuid]
    assert others and all(v == 0 and "err_code" not in labels for _, labels, v in others)
    before = T.replace(minute=10)  # 600 s into the cycle, before xid_after_seconds=900
    assert value_of(render(sim.state_at(before), cluster=workload.cluster), "DCGM_FI_DEV_XID_ERRORS", uuid) == 0


def test_thermal_gpus_run_hot_and_power_capped(fleet: Fleet) -> None:
    workload = next(w for w in fleet.workloads() if w.behaviour == "thermal")
    sim = Simulation(fleet)
    for t in _steps():
        state = sim.state_at(t)
        for d in workload.devices:
            gpu = state.gpu(gpu_uuid(workload.cluster, d.node, d.gpu))
            cap = fleet.cluster(workload.cluster).node(d.node).model.max_watts * 0.7
            assert gpu.temperature_c > 90
            assert abs(gpu.power_watts - cap) <= 2
        assert all(g.temperature_c <= 85 for g in state.gpus if workload.pod not in {p.pod for p in g.pods})


def test_workloads_start_and_stop_on_schedule_from_the_epoch() -> None:
    epoch = datetime(2025, 1, 1, tzinfo=UTC)
    fleet = parse_fleet(
        {
            "epoch": epoch,
            "clusters": [
                {
                    "name": "lab",
                    "nodes": [{"hostname": "n1", "model": "h100", "gpus": 2}],
                    "namespaces": [{"name": "team", "gpu_quota": 2}],
                    "workloads": [
                        {
                            "namespace": "team",
                            "pod": "job",
                            "count": 2,
                            "starts_after_seconds": 60,
                            "stops_after_seconds": 120,
                        }
                    ],
                }
            ],
        }
    )
    sim = Simulation(fleet)

    def pods_at(offset: float) -> tuple[set[str], float]:
        text = render(sim.state_at(epoch + timedelta(seconds=offset)), cluster="lab")
        pods = {labels["pod"] for _, labels, _ in rows(text, "DCGM_FI_DEV_GPU_UTIL") if "pod" in labels}
        requested = {labels["pod"] for _, labels, _ in rows(text, "kube_pod_container_resource_requests")}
        assert pods == requested
        [used] = [v for _, labels, v in rows(text, "kube_resourcequota") if labels["type"] == "used"]
        return pods, used

    assert pods_at(-300) == (set(), 0)
    assert pods_at(30) == (set(), 0)
    assert pods_at(60) == ({"job"}, 2)
    assert pods_at(119) == ({"job"}, 2)
    assert pods_at(120) == (set(), 0)
    assert pods_at(100_000) == (set(), 0)


def test_default_fleet_schedules_repeat_every_cycle(fleet: Fleet) -> None:
    sim = Simulation(fleet)

    def running(t: datetime) -> bool:
        return any(p.pod == "bert-finetune" for p in sim.state_at(t).pods)

    assert running(T) and running(T + timedelta(hours=5))
    assert not running(T.replace(minute=5)) and not running(T.replace(minute=45))


# --- The HTTP exporter --------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str, str]:
    response = httpx.get(url, timeout=5)
    return response.status_code, response.headers["Content-Type"], response.text


def test_server_answers_metrics_and_health_over_loopback(fleet: Fleet) -> None:
    server = make_server(fleet, port=0, seed=42, cluster="nerc-ocp", clock=lambda: T)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, content_type, body = _get(f"{server.url}/metrics")
        assert status == 200 and content_type == CONTENT_TYPE
        assert body == render(Simulation(fleet, 42).state_at(T), cluster="nerc-ocp")
        hosts = {labels["Hostname"] for _, labels, _ in rows(body, "DCGM_FI_DEV_GPU_TEMP")}
        assert hosts == {"nerc-h100-01", "nerc-h100-02", "nerc-h100-03"}
        assert _get(f"{server.url}/healthz")[::2] == (200, "ok\n")
        assert _get(f"{server.url}/other")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert not thread.is_alive()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_stops_cleanly_on_sigterm() -> None:
    port = _free_port()
    code = f"from simulator import load_fleet, serve; serve(load_fleet(None), port={port}, cluster='moc-prod')"
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _, body = _get(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "exporter did not start"
                time.sleep(0.05)
        assert status == 200 and "moc-a100-01" in body
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


# --- Fleet file errors --------------------------------------------------------------------------

GOOD_NODE = '[[clusters.nodes]]\nhostname = "n1"\nmodel = "NVIDIA A100-SXM4-80GB"\ngpus = 2\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[clusters]\nname = "c"\n', "is not valid TOML"),
        (
            '[[clusters]]\nname = "c"\n' + GOOD_NODE.replace("A100-SXM4-80GB", "B200"),
            r"clusters\[0\]\.nodes\[0\]\.model",
        ),
        ('[[clusters]]\nname = "c"\n' + GOOD_NODE + "gpu_count = 3\n", r"clusters\[0\]\.nodes\[0\]\.gpu_count"),
        (
            '[[clusters]]\nname = "c"\n' + GOOD_NODE + 'mig = [{gpu = 0, profiles = ["7g.80gb", "1g.10gb"]}]\n',
            "7 compute",
        ),
        ('[[clusters]]\nname = "c"\n' + GOOD_NODE + 'mig = [{gpu = 5, profiles = ["1g.10gb"]}]\n', r"mig\[0\]\.gpu"),
        (
            '[[clusters]]\nname = "c"\n' + GOOD_NODE + '[[clusters.workloads]]\nnamespace = "a"\npod = "p"\n'
            'devices = [{node = "n9", gpu = 0}]\n',
            r"clusters\[0\]\.workloads\[0\]\.devices\[0\]\.node: no node 'n9'",
        ),
        (
            '[[clusters]]\nname = "c"\n' + GOOD_NODE + '[[clusters.workloads]]\nnamespace = "a"\npod = "p"\ncount = 1\n'
            '[[clusters.workloads]]\nnamespace = "a"\npod = "q"\ndevices = [{node = "n1", gpu = 0}]\n'
            '[[clusters.workloads]]\nnamespace = "a"\npod = "r"\ncount = 1\n',
            r"workloads\[2\]\.count: no node has 1 free whole GPUs",
        ),
        (
            '[[clusters]]\nname = "c"\n' + GOOD_NODE + '[[clusters.workloads]]\nnamespace = "a"\npod = "p"\n'
            'behaviour = "straggler"\ncount = 1\n',
            "straggler needs",
        ),
        (
            '[[clusters]]\nname = "c"\n' + GOOD_NODE + '[[clusters.workloads]]\nnamespace = "a"\npod = "p"\n'
            "count = 1\nstarts_after_seconds = 60\n",
            "epoch or cycle_seconds",
        ),
        ('[[clusters]]\nname = "c"\n' + GOOD_NODE + '[[clusters]]\nname = "c"\n' + GOOD_NODE, "duplicate cluster"),
    ],
)
def test_broken_fleet_files_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(FleetError, match=expected) as caught:
        load_fleet(path)
    assert str(path) in str(caught.value)


def test_missing_fleet_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=re.escape(f"fleet file not found: {tmp_path / 'nope.toml'}")):
        load_fleet(tmp_path / "nope.toml")


def test_shared_device_at_different_times_is_allowed_and_overlap_is_not() -> None:
    def fleet(second_start: int) -> dict[str, Any]:
        return {
            "cycle_seconds": 600,
            "clusters": [
                {
                    "name": "c",
                    "nodes": [{"hostname": "n1", "model": "l40s", "gpus": 1}],
                    "workloads": [
                        {"namespace": "a", "pod": "early", "count": 1, "stops_after_seconds": 300},
                        {"namespace": "a", "pod": "late", "count": 1, "starts_after_seconds": second_start},
                    ],
                }
            ],
        }

    shared = parse_fleet(fleet(300))
    assert [w.devices for w in shared.workloads()] == [w.devices for w in reversed(list(shared.workloads()))]
    with pytest.raises(FleetError, match="no node has 1 free"):
        parse_fleet(fleet(200))


# --- Exporter variants ---------------------------------------------------------------------------

VARIANTS = """
name = "variants"
step_seconds = 15

[[clusters]]
name = "full"
counters = "default"
mig_gpu_util = "zero"
nodes = [{ hostname = "full-01", model = "a100", gpus = 2, mig = [{ gpu = 0, profiles = ["3g.40gb", "1g.10gb"] }] }]

[[clusters.workloads]]
namespace = "lab"
pod = "steady"
behaviour = "steady"
utilization = 37
devices = [{ node = "full-01", gpu = 1 }]

[[clusters.workloads]]
namespace = "lab"
pod = "slice"
behaviour = "steady"
utilization = 52
devices = [{ node = "full-01", gpu = 0, profile = "3g.40gb" }]

[[clusters]]
name = "bare"
counters = "default"
profiling = false
nodes = [{ hostname = "bare-01", model = "a100", gpus = 2, mig = [{ gpu = 0, profiles = ["3g.40gb"] }] }]
"""


def test_exporter_variants_serve_the_default_counter_set_and_both_mig_gpu_util_behaviours(tmp_path: Path) -> None:
    from simulator.exposition import DEFAULT_COUNTERS

    (tmp_path / "variants.toml").write_text(VARIANTS)
    fleet = load_fleet(tmp_path / "variants.toml")
    state = Simulation(fleet).state_at(T)
    full = {f.name: f for f in text_string_to_metric_families(render(state, cluster="full"))}
    bare = {f.name: f for f in text_string_to_metric_families(render(state, cluster="bare"))}
    # every family of the default set, with its type, on a cluster that serves it
    assert set(DEFAULT_COUNTERS) <= set(full)
    assert all(full[name].type == kind for name, (kind, _) in DEFAULT_COUNTERS.items())
    # no profiling: no DCGM_FI_PROF_* family has a sample
    assert not [name for name, family in bare.items() if name.startswith("DCGM_FI_PROF_") and family.samples]
    # mig_gpu_util: "zero" reports GPU_UTIL 0 on every slice; "absent" (the default) none
    text = render(state)
    zero = [(labels.get("GPU_I_ID"), value) for _, labels, value in rows(text, "DCGM_FI_DEV_GPU_UTIL")]
    slice_rows = [entry for entry in zero if entry[0] is not None]
    assert sorted(slice_rows) == [("1", 0.0), ("7", 0.0)]  # only the "full" cluster's two slices
    # a steady workload reads exactly its level, as GPU_UTIL and as engine activity
    whole = state.gpu(gpu_uuid("full", "full-01", 1))
    assert (whole.utilization, whole.engine_active) == (37, 0.37)
    (busy,) = [s for s in state.gpu(gpu_uuid("full", "full-01", 0)).slices if s.pods]
    assert (busy.engine_active, busy.gpu_util) == (0.52, 0.0)


SHARED = """
name = "time-slicing"
[[clusters]]
name = "ts"
counters = "default"
nodes = [{ hostname = "ts-01", model = "a100", gpus = 1 }]

[[clusters.workloads]]
namespace = "team-a"
pod = "a"
behaviour = "steady"
utilization = 30
shared = true
devices = [{ node = "ts-01", gpu = 0 }]

[[clusters.workloads]]
namespace = "team-b"
pod = "b"
behaviour = "steady"
utilization = 20
shared = true
devices = [{ node = "ts-01", gpu = 0 }]
"""


def test_a_time_sliced_gpu_is_held_by_its_shared_pods_and_exported_once_per_pod(tmp_path: Path) -> None:
    (tmp_path / "shared.toml").write_text(SHARED)
    state = Simulation(load_fleet(tmp_path / "shared.toml")).state_at(T)
    (gpu,) = state.gpus
    assert [(p.namespace, p.pod) for p in gpu.pods] == [("team-a", "a"), ("team-b", "b")]
    assert gpu.utilization == 50  # the device's activity is its pods' together
    text = render(state)
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_SM_CLOCK"):
        series = rows(text, name)
        assert sorted(labels["pod"] for _, labels, _ in series) == ["a", "b"], name
        assert len({value for _, _, value in series}) == 1  # the device's reading, once per pod
    # a device is shared only among shared workloads
    exclusive = SHARED.replace("shared = true\n", "", 1)
    (tmp_path / "exclusive.toml").write_text(exclusive)
    with pytest.raises(FleetError, match="already held by team-a/a"):
        load_fleet(tmp_path / "exclusive.toml")
