"""Straggler math edge cases, signal extraction from polls, alerts as signals, placement ranking."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.pipeline.extract import PollObservation, SignalExtractor, decode_poll, encode_poll
from domain.pipeline.inference import MAD_SCALE, NodeCapacity, StragglerDetector, rank_nodes
from domain.pipeline.signals import (
    CRITICAL,
    HEALTH,
    IDLE_ALLOCATED,
    INFO,
    MEMORY_FULL,
    MISSING,
    OK,
    STALE,
    STRAGGLER,
    THERMAL,
    WARNING,
    XID,
    Signal,
    signals_from_alert,
)
from domain.settings import PipelineSettings
from domain.telemetry.readings import GpuReading, PodRef, SliceReading

T0 = 1_767_607_200.0
INTERVAL = 30.0
COHORT = ("c1", "H100", "team", "job")


def detector(**options: float) -> StragglerDetector:
    return StragglerDetector(**{"alpha": 1.0, **options})  # type: ignore[arg-type]


def judge(d: StragglerDetector, scores: list[float], tick: int = 0) -> dict[str, bool]:
    t = T0 + tick * INTERVAL
    for i, score in enumerate(scores):
        d.observe(COHORT, f"gpu:{i}", score, t)
    return {v.subject: v.straggler for v in d.evaluate(t, INTERVAL)}


# --- stragglers ---------------------------------------------------------------------------------------


def test_a_gpu_far_below_its_peers_is_a_straggler() -> None:
    d = detector()
    verdict = judge(d, [0.90, 0.92, 0.91, 0.89, 0.93, 0.90, 0.23, 0.92])
    assert [s for s, bad in verdict.items() if bad] == ["gpu:6"]
    assert d.flagged == 1 and d.verdicts == 1


def test_the_threshold_is_median_minus_k_scaled_mad_never_closer_than_the_minimum_gap() -> None:
    d = detector(k=2, min_gap=0.0)
    scores = [0.5, 0.6, 0.7, 0.8, 0.9]
    median, mad, threshold = d.threshold(scores)
    assert median == 0.7 and mad == pytest.approx(0.1)
    assert threshold == pytest.approx(0.7 - 2 * MAD_SCALE * 0.1)
    assert d.threshold(scores)[2] == pytest.approx(detector(k=2, min_gap=0.0).threshold(scores)[2])
    assert detector(k=2, min_gap=0.3).threshold(scores)[2] == pytest.approx(0.4)


def test_identical_peers_mad_zero_flag_nobody_but_still_catch_a_real_straggler() -> None:
    d = detector()
    assert not any(judge(d, [0.8] * 6).values())
    assert d.mad_zero == 1
    # MAD is 0 again (most peers identical): the minimum gap, not the median itself, is the threshold
    verdict = judge(d, [0.8, 0.8, 0.8, 0.8, 0.79, 0.2], tick=1)
    assert [s for s, bad in verdict.items() if bad] == ["gpu:5"]
    assert d.mad_zero == 2


def test_below_quorum_there_is_no_verdict() -> None:
    d = detector(quorum=5)
    assert judge(d, [0.9, 0.9, 0.9, 0.1]) == {}
    assert d.no_quorum == 1 and d.flagged == 0


def test_implausible_thresholds_give_no_verdict() -> None:
    d = detector(k=4)
    assert judge(d, [0.05, 0.95, 0.1, 0.9, 0.5, 0.3, 0.7]) == {}  # too dispersed: threshold below 0
    assert judge(d, [0.01, 0.02, 0.0, 0.01, 0.03], tick=1) == {}  # an idle cohort is not the straggler test's
    assert d.implausible == 2


def test_hysteresis_keeps_a_straggler_until_it_is_clearly_back() -> None:
    d = detector(hysteresis=0.02, min_gap=0.15)
    peers = [0.9, 0.9, 0.9, 0.9, 0.9]
    assert judge(d, [*peers, 0.5])["gpu:5"]
    threshold = 0.9 - 0.15
    assert judge(d, [*peers, threshold + 0.01], tick=1)["gpu:5"]  # above the threshold, within the hysteresis
    assert not judge(d, [*peers, threshold + 0.03], tick=2)["gpu:5"]
    assert d.recovered == 1


def test_ema_smoothing_ignores_a_single_bad_poll() -> None:
    d = StragglerDetector(alpha=0.2)
    for tick in range(5):
        judge(d, [0.9] * 8, tick=tick)
    verdict = judge(d, [0.9] * 7 + [0.3], tick=5)  # one poll at 0.3: EMA 0.78, above 0.75
    assert not verdict["gpu:7"]
    for tick in range(6, 10):
        verdict = judge(d, [0.9] * 7 + [0.3], tick=tick)
    assert verdict["gpu:7"]


def test_peers_without_data_expire_and_can_break_the_quorum() -> None:
    d = detector(quorum=5, expiry_polls=5)
    judge(d, [0.9, 0.9, 0.9, 0.9, 0.9, 0.2])
    for tick in range(1, 6):  # only four devices keep reporting
        t = T0 + tick * INTERVAL
        for i in range(4):
            d.observe(COHORT, f"gpu:{i}", 0.9, t)
        verdicts = d.evaluate(t, INTERVAL)
    assert verdicts == [] and d.expired == 2 and d.no_quorum >= 1
    assert set(d.cohorts[COHORT]) == {f"gpu:{i}" for i in range(4)}


# --- extraction ---------------------------------------------------------------------------------------


def poll(gpus: list[GpuReading], tick: int = 0, clusters: tuple[str, ...] = ("c1",)) -> PollObservation:
    return PollObservation("src", T0 + tick * INTERVAL, INTERVAL, clusters, tuple(gpus))


def obs(
    i: int,
    *,
    namespace: str | None = "team",
    pod: str | None = "job",
    memory_used_mib: float | None = 1000.0,
    memory_total_mib: float | None = 80000.0,
    **values: Any,
) -> GpuReading:
    """A reading of GPU ``i`` with one pod (``namespace``/``pod``) and a memory total, as a poll gives it."""
    base: dict[str, Any] = {
        "cluster": "c1",
        "node": "n1",
        "uuid": f"GPU-{i}",
        "index": i,
        "model": "H100",
        "utilization": 80.0,
        "utilization_max": 90.0,
        "temperature_c": 50.0,
        "power_watts": 300.0,
        "xid": 0,
    }
    free = None if memory_used_mib is None or memory_total_mib is None else memory_total_mib - memory_used_mib
    workloads = (PodRef(namespace, pod),) if namespace and pod else ()
    return GpuReading(**{**base, **values}, memory_used_mib=memory_used_mib, memory_free_mib=free, workloads=workloads)


def part(
    instance: int,
    profile: str,
    utilization: float | None,
    used: float,
    total: float,
    namespace: str | None,
    pod: str | None,
) -> SliceReading:
    workloads = (PodRef(namespace, pod),) if namespace and pod else ()
    return SliceReading(instance, profile, utilization, None, used, total, workloads=workloads)


def kinds(signals: list[Signal]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in signals:
        out.setdefault(s.subject, set()).add(s.kind)
    return out


def test_each_condition_of_a_reading_becomes_its_signal() -> None:
    extractor = SignalExtractor(PipelineSettings(), idle_threshold_percent=5)
    signals = extractor.extract(
        poll(
            [
                obs(0),
                obs(1, xid=79),
                obs(2, temperature_c=93.0),
                obs(3, utilization=1.0),
                obs(4, memory_used_mib=79000.0),
                obs(
                    5,
                    utilization=None,
                    utilization_max=None,
                    memory_used_mib=None,
                    temperature_c=None,
                    power_watts=None,
                ),
                obs(6, namespace=None, pod=None, utilization=0.0),  # idle but held by nobody: healthy
            ]
        )
    )
    assert kinds(signals) == {
        "gpu:GPU-0": {HEALTH},
        "gpu:GPU-1": {XID},
        "gpu:GPU-2": {THERMAL},
        "gpu:GPU-3": {IDLE_ALLOCATED},
        "gpu:GPU-4": {MEMORY_FULL},
        "gpu:GPU-5": {STALE},
        "gpu:GPU-6": {HEALTH},
    }
    severity = {s.kind: s.severity for s in signals}
    assert severity[XID] == CRITICAL and severity[THERMAL] == WARNING and severity[MEMORY_FULL] == INFO
    assert severity[HEALTH] == OK
    xid = next(s for s in signals if s.kind == XID)
    assert xid.value == 79 and xid.labels["xid_message"] == "GPU has fallen off the bus"
    assert xid.labels["node"] == "n1" and xid.labels["pod"] == "job"


def test_mig_slices_are_subjects_of_their_own_with_their_share_of_a_gpu() -> None:
    extractor = SignalExtractor(PipelineSettings(), idle_threshold_percent=5)
    gpu = obs(
        0,
        utilization=None,
        memory_used_mib=None,
        memory_total_mib=None,
        namespace=None,
        pod=None,
        slices=(
            part(1, "3g.40gb", 70.0, 1000.0, 40000.0, "team", "train"),
            part(7, "1g.10gb", 0.5, 100.0, 9728.0, "team", "notebook"),
        ),
    )
    signals = extractor.extract(poll([gpu]))
    assert kinds(signals) == {"gpu:GPU-0": {HEALTH}, "slice:GPU-0/1": {HEALTH}, "slice:GPU-0/7": {IDLE_ALLOCATED}}
    idle = next(s for s in signals if s.kind == IDLE_ALLOCATED)
    assert float(idle.labels["gpus"]) == pytest.approx(1 / 7, abs=1e-3) and idle.labels["profile"] == "1g.10gb"


def test_a_gpu_its_cluster_stops_reporting_is_lost_after_the_grace_period() -> None:
    extractor = SignalExtractor(PipelineSettings(missing_forget_seconds=600), missing_after_seconds=90)
    extractor.extract(poll([obs(0), obs(1)]))
    assert MISSING not in {s.kind for s in extractor.extract(poll([obs(0)], tick=2))}  # 60 s: within grace
    lost = [s for s in extractor.extract(poll([obs(0)], tick=3)) if s.kind == MISSING]
    assert [(s.subject, s.severity, s.value) for s in lost] == [("gpu:GPU-1", CRITICAL, 90.0)]
    # a cluster that did not answer says nothing about its GPUs
    assert not [s for s in extractor.extract(poll([], tick=4, clusters=("other",))) if s.kind == MISSING]
    assert not [s for s in extractor.extract(poll([obs(0)], tick=30)) if s.kind == MISSING]  # forgotten
    assert "GPU-1" not in extractor.known


def test_a_straggler_verdict_becomes_a_signal_with_its_numbers() -> None:
    extractor = SignalExtractor(PipelineSettings(straggler_alpha=1.0))
    gpus = [obs(i, utilization=90.0) for i in range(7)] + [obs(7, utilization=20.0)]
    signals = extractor.extract(poll(gpus))
    [straggler] = [s for s in signals if s.kind == STRAGGLER]
    assert straggler.subject == "gpu:GPU-7" and straggler.value == pytest.approx(0.2)
    assert float(straggler.labels["median"]) == pytest.approx(0.9) and straggler.labels["cohort"] == "c1/H100/team/job"
    assert "gpu:GPU-7" not in {s.subject for s in signals if s.kind == HEALTH}


def test_recorded_polls_round_trip() -> None:
    original = poll([obs(0), obs(1, slices=(part(3, "2g.20gb", 10.0, 5.0, 20000.0, None, None),))])
    assert decode_poll(encode_poll(original)) == original
    assert len(encode_poll(original)) < 400


# --- alerts ----------------------------------------------------------------------------------------------


def test_an_xid_alert_is_the_same_signal_as_the_poll_would_give() -> None:
    [signal] = signals_from_alert(
        {
            "alertname": "GpuXidError",
            "cluster": "c1",
            "Hostname": "n1",
            "UUID": "GPU-1",
            "xid": "79",
            "exported_namespace": "team",
            "exported_pod": "job",
            "severity": "warning",
        },
        {"summary": "XID 79 on GPU 1"},
        "firing",
        "2026-01-05T10:00:00Z",
    )
    assert (signal.kind, signal.subject, signal.severity, signal.value) == (XID, "gpu:GPU-1", CRITICAL, 79.0)
    assert signal.time == T0 and signal.labels["namespace"] == "team" and signal.labels["node"] == "n1"


def test_alert_subjects_severities_and_unknown_kinds() -> None:
    resolved = signals_from_alert({"alertname": "GpuXidError", "UUID": "GPU-1", "xid": "79"}, {}, "resolved", T0)[0]
    assert resolved.severity == OK
    node = signals_from_alert(
        {"alertname": "NodeGpuDown", "cluster": "c1", "node": "n1", "severity": "critical"}, {}, "firing", T0
    )[0]
    assert (node.kind, node.subject, node.severity) == ("alert:NodeGpuDown", "node:c1/n1", CRITICAL)
    workload = signals_from_alert(
        {"alertname": "GpuIdle", "cluster": "c1", "namespace": "team", "pod": "job"}, {"value": "0.5"}, "firing", T0
    )[0]
    assert (workload.kind, workload.subject, workload.value) == (IDLE_ALLOCATED, "workload:c1/team/job", 0.5)
    mig = signals_from_alert({"alertname": "X", "UUID": "GPU-1", "GPU_I_ID": "7", "severity": "info"}, {}, "firing", T0)
    assert (mig[0].subject, mig[0].severity) == ("slice:GPU-1/7", INFO)
    bare = signals_from_alert({"alertname": "Weird"}, None, "firing", None)[0]
    assert bare.subject == "alert:Weird" and bare.severity == WARNING


# --- placement ----------------------------------------------------------------------------------------------


def node(
    name: str,
    free: int,
    *,
    total: int = 8,
    critical: int = 0,
    warning: int = 0,
    util: float = 50,
    healthy: int | None = None,
    model: str = "NVIDIA H100 80GB HBM3",
) -> NodeCapacity:
    return NodeCapacity(
        node_id=hash(name) % 1000,
        hostname=name,
        cluster_id=1,
        cluster="c1",
        model=model,
        gpus_total=total,
        gpus_free=free,
        gpus_healthy=total if healthy is None else healthy,
        gpus_allocated=float(total - free),
        utilization_allocated=util,
        warning_findings=warning,
        critical_findings=critical,
    )


def test_placement_ranks_fitting_healthy_quiet_nodes_first() -> None:
    ranked = rank_nodes(
        [
            node("tight", 2, util=95),
            node("roomy", 6, util=10),
            node("broken", 8, critical=1, healthy=7),
            node("too-small", 1),
            node("other-model", 8, model="NVIDIA L40S"),
        ],
        "h100",
        2,
    )
    assert [p.node.hostname for p in ranked] == ["roomy", "tight", "too-small", "broken"]
    assert [p.fits for p in ranked] == [True, True, False, False]
    broken = ranked[-1]
    assert broken.health == 0 and any("critical" in r for r in broken.reasons)
    assert rank_nodes([node("x", 8)], "NVIDIA H100 80GB HBM3", 8)[0].fits


@settings(max_examples=60, deadline=None)
@given(
    polls=st.lists(
        st.lists(st.one_of(st.none(), st.floats(0, 100)), min_size=8, max_size=8),  # whole GPUs 0..3, slices 0..3
        min_size=1,
        max_size=12,
    )
)
def test_unknown_utilisation_is_never_idle_nor_a_straggler(polls: list[list[float | None]]) -> None:
    """Idle-while-allocated and straggler verdicts only ever concern a device whose utilisation is known
    in that poll; a MIG slice or GPU without an activity metric (None) is neither idle nor slow."""
    extractor = SignalExtractor(PipelineSettings(straggler_quorum=3), idle_threshold_percent=5)
    for tick, figures in enumerate(polls):
        whole = [obs(i, utilization=figures[i], utilization_max=figures[i], pod="ddp") for i in range(4)]
        parts = tuple(part(k + 1, "1g.10gb", figures[4 + k], 100.0, 9728.0, "team", "ddp") for k in range(4))
        mig = obs(9, utilization=None, utilization_max=None, namespace=None, pod=None, slices=parts)
        known = {f"gpu:GPU-{i}": figures[i] for i in range(4)}
        known |= {f"slice:GPU-9/{k + 1}": figures[4 + k] for k in range(4)}
        for signal in extractor.extract(poll([*whole, mig], tick)):
            if signal.kind == IDLE_ALLOCATED:
                figure = known[signal.subject]
                assert figure is not None and figure < 5, (signal.subject, figure)
            if signal.kind == STRAGGLER:
                assert known[signal.subject] is not None, signal.subject
