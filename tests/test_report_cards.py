"""Report cards (issue 17): each simulated workload kind yields its notes and recommendation and no
others; right-sizing never holds less memory than the observed peak; a card without profiling says why.

The simulated fleet is read through the simulated source (the same readings a Prometheus poll gives),
summed per window by the worker's :func:`worker.workloads.sums.add_window`, and carded by the domain.
"""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger.mig import profile_memory_mib
from domain.report_cards.cards import NOT_EXPORTED_ON_CLUSTER, group_workloads, project_card, workload_card
from domain.report_cards.rightsizing import right_size
from domain.report_cards.rules import grade, notes
from domain.report_cards.usage import PROFILING_FAMILIES, DeviceUsage, FamilySums, usage_from_row
from domain.settings import SourceSettings
from worker.sources.simulated import SimulatedSource
from worker.workloads.sums import add_window, profiled_clusters

START = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)  # an evening: eight hours through the night
WINDOW = 300
HOURS = 8

EXPECTED = {
    # pod: (kind in the fleet, notes, right-sizing)
    "bert-finetune": ("tensor-heavy", set(), "keep"),
    "detr-train-0": ("tensor-heavy", set(), "keep"),
    "inference-api": ("compute-bound", {"tensor-cores-idle"}, "keep"),
    "tokenize-batch": ("data-loader-bound", {"pcie-bound"}, "keep"),
    "policy-eval": ("memory-hoarding", {"memory-hoarding"}, "keep"),
    "isaac-sim-0": ("over-requested", {"gpus-unused"}, "gpus"),
    "jupyter-alice": ("idle-notebook", {"idle-held"}, "keep"),
    "rstudio-gpu": ("balanced, edu-shared without profiling", {"idle-held"}, "keep"),
}


def _session(cluster: str, namespace: str, pod: str, uuid: str, instance: int | None, model: str, at: datetime):
    return types.SimpleNamespace(
        id=None, cluster=cluster, namespace=namespace, pod=pod, gpu_uuid=uuid, mig_instance_id=instance,
        gpu_model=model, started_at=at, ended_at=None, project_id=None, seconds=0.0, gpu_seconds=0.0,
        idle_gpu_seconds=0.0, util_seconds=0.0, util_known_seconds=0.0, util_max=0.0, memory_max_mib=0.0,
        memory_total_mib=None, energy_wh=0.0, profiling={}, profiling_missing=None,
    )  # fmt: skip


def simulate_workloads() -> list[types.SimpleNamespace]:
    """Workloads as the worker accumulates them: opened when a pod appears on a device, closed when it goes."""
    source = SimulatedSource.from_settings(SourceSettings(name="demo", kind="simulated"))
    open_: dict[tuple, types.SimpleNamespace] = {}
    done: list[types.SimpleNamespace] = []
    at = START
    for _ in range(HOURS * 3600 // WINDOW):
        at += timedelta(seconds=WINDOW)
        snapshot = source.poll(at, WINDOW)
        profiled = profiled_clusters(snapshot.gpus)
        seen = set()
        for gpu in snapshot.gpus:
            holders = [(None, gpu.workloads)] if not gpu.slices else [(s, s.workloads) for s in gpu.slices]
            for part, pod in ((part, pod) for part, pods in holders for pod in pods):
                key = (gpu.cluster, pod.namespace, pod.pod, gpu.uuid, part.mig_instance_id if part else None)
                seen.add(key)
                row = open_.get(key) or open_.setdefault(key, _session(*key, gpu.model, at))
                sums = add_window(row, gpu, part, WINDOW, cluster_profiled=gpu.cluster in profiled)
                memory = part.memory_used_mib if part else gpu.memory_used_mib
                utilization_max = part.utilization_max if part else gpu.utilization_max
                row.__dict__.update(sums)
                row.memory_max_mib = max(row.memory_max_mib, memory or 0.0)
                row.util_max = max(row.util_max, utilization_max or 0.0)
        for key in [k for k in open_ if k not in seen]:
            row = open_.pop(key)
            row.ended_at = at
            done.append(row)
    return done + list(open_.values())


@pytest.fixture(scope="module")
def runs() -> dict[str, list[list[DeviceUsage]]]:
    usages = [usage_from_row(row) for row in simulate_workloads()]
    out: dict[str, list[list[DeviceUsage]]] = {}
    for run in group_workloads(usages, START + timedelta(hours=HOURS)):
        out.setdefault(run[0].pod, []).append(run)
    return out


@pytest.mark.parametrize("pod", sorted(EXPECTED))
def test_each_simulated_kind_yields_its_notes_and_recommendation_and_no_others(runs, pod: str) -> None:
    _, expected_notes, expected_sizing = EXPECTED[pod]
    assert runs.get(pod), f"{pod} never ran in the simulated night"
    for run in runs[pod]:
        card = workload_card(run, START + timedelta(hours=HOURS))
        assert {note.kind for note in card.notes} == expected_notes, (pod, card.notes)
        assert all(note.evidence for note in card.notes)
        assert card.right_sizing is not None and card.right_sizing.kind == expected_sizing, card.right_sizing
        if expected_sizing == "gpus":
            assert card.right_sizing.gpu_count == 1 and card.gpu_hours_returned_per_month > 0


def test_a_card_without_profiling_metrics_says_so_and_why(runs) -> None:
    (run, *_) = runs["rstudio-gpu"]
    card = workload_card(run, START + timedelta(hours=HOURS))
    assert len(card.figures) == len(PROFILING_FAMILIES)
    for figure in card.figures:
        assert figure.average is None and figure.peak is None
        assert figure.not_collected == NOT_EXPORTED_ON_CLUSTER.format(cluster="edu-shared")
    # graded on utilisation, and saying so: nothing was guessed from absent profiling
    assert card.grade.basis == "utilization" and card.grade.letter == "F"
    profiled = workload_card(runs["detr-train-0"][0], START + timedelta(hours=HOURS))
    assert all(f.not_collected is None for f in profiled.figures if not f.key.startswith("nvlink"))
    assert profiled.grade.basis == "sm_active" and profiled.grade.letter == "A"


def test_project_month_card_sums_its_workloads(runs) -> None:
    devices = [d for name in ("inference-api", "jupyter-alice", "bert-finetune") for run in runs[name] for d in run]
    card = project_card("ml-team-a", "2026-11", devices, START + timedelta(hours=HOURS))
    assert card.workloads == sum(len(runs[name]) for name in ("inference-api", "jupyter-alice", "bert-finetune"))
    assert card.gpu_hours == pytest.approx(sum(d.gpu_seconds for d in devices) / 3600, abs=1e-3)
    assert {note.kind for note in card.notes} == {"tensor-cores-idle", "idle-held"}
    assert all("workload(s)" in note.evidence for note in card.notes)


MODELS = ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB", "NVIDIA H100 80GB HBM3", "NVIDIA L40S", "NVIDIA A30"]


@st.composite
def workloads(draw) -> list[DeviceUsage]:
    model = draw(st.sampled_from(MODELS))
    capacity = draw(st.floats(1024, 190_000))
    n = draw(st.integers(1, 8))
    share = draw(st.sampled_from([1.0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 1 / 4]))
    seconds = draw(st.floats(60, 40 * 86400))
    out = []
    for _ in range(n):
        peak = draw(st.floats(0, 1)) * capacity
        sm = draw(st.floats(0, 1))
        out.append(
            DeviceUsage(
                workload_id=None, cluster="c", namespace="ns", pod="p", gpu_uuid=None, mig_instance_id=None,
                gpu_model=model, started_at=START, ended_at=START + timedelta(seconds=seconds), seconds=seconds,
                gpu_seconds=seconds * share, idle_gpu_seconds=0.0, util_seconds=0.0, util_known_seconds=0.0,
                util_max=None, memory_max_mib=peak, memory_total_mib=capacity, energy_wh=0.0,
                profiling={"sm_active": FamilySums(sm * seconds / 2, seconds, sm)},
            )
        )  # fmt: skip
    return out


@settings(max_examples=400, deadline=None)
@given(workloads(), st.floats(0.1, 2000))
def test_right_sizing_never_recommends_less_memory_than_the_observed_peak(devices, elapsed_hours) -> None:
    sizing = right_size(devices, elapsed_hours)
    assert sizing.kind in ("keep", "gpus", "mig")
    peak = sum(d.memory_max_mib or 0 for d in devices)
    assert sizing.recommended_memory_mib is not None and sizing.recommended_memory_mib >= peak
    assert sizing.recommended_units <= sizing.held_units + 1e-9
    assert sizing.gpu_hours_per_month >= 0
    if sizing.kind == "mig":
        assert profile_memory_mib(sizing.profile or "") >= peak
        assert len(devices) == 1
    if sizing.kind == "gpus":
        assert (sizing.gpu_count or 0) * max(d.memory_total_mib or 0 for d in devices) >= peak


@settings(max_examples=200, deadline=None)
@given(workloads())
def test_no_recommendation_and_no_note_rests_on_an_unknown_reading(devices) -> None:
    blind = [DeviceUsage(**{**{f: getattr(d, f) for f in d.__slots__}, "memory_max_mib": None}) for d in devices]
    assert right_size(blind, 10).kind == "unknown"
    assert "memory-hoarding" not in {n.kind for n in notes(blind)}


def _device(model: str, seconds: float, **averages: float) -> DeviceUsage:
    return DeviceUsage(
        workload_id=None, cluster="c", namespace="ns", pod="p", gpu_uuid=None, mig_instance_id=None, gpu_model=model,
        started_at=START, ended_at=START + timedelta(seconds=seconds), seconds=seconds, gpu_seconds=seconds,
        idle_gpu_seconds=0.0, util_seconds=50.0 * seconds, util_known_seconds=seconds, util_max=60.0,
        memory_max_mib=1000.0, memory_total_mib=81_920.0, energy_wh=0.0,
        profiling={key: FamilySums(value * seconds, seconds, value) for key, value in averages.items()},
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*MODELS, "NVIDIA L4", "Tesla T4", "NVIDIA A40"]), st.floats(0, 1), st.floats(0, 1))
def test_fp64_note_only_on_reduced_rate_gpus_with_fp64_busy(model: str, fp64: float, sm: float) -> None:
    kinds = {n.kind for n in notes([_device(model, 3600.0, fp64_active=fp64, sm_active=sm, tensor_active=0.5)])}
    reduced = any(name in model for name in ("L40S", "L4", "T4", "A40"))
    assert ("fp64-on-ai-gpu" in kinds) == (reduced and fp64 >= 0.10)
    assert kinds <= {"fp64-on-ai-gpu"}  # nothing else here is out of line (tensor cores busy, memory low)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_the_grade_follows_sm_activity_and_never_improves_as_it_falls(low: float, high: float) -> None:
    low, high = sorted((low, high))
    worse = grade([_device("NVIDIA A100-SXM4-80GB", 3600.0, sm_active=low)])
    better = grade([_device("NVIDIA A100-SXM4-80GB", 3600.0, sm_active=high)])
    order = "ABCDF"
    assert worse.basis == better.basis == "sm_active"
    assert order.index(worse.letter or "F") >= order.index(better.letter or "F")
    assert worse.activity == pytest.approx(low)
