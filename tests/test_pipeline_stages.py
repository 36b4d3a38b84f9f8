"""Each filter stage and the correlation on crafted sequences, including the safety rules."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from domain.pipeline.engine import Pipeline
from domain.pipeline.signals import (
    CRITICAL,
    HEALTH,
    IDLE_ALLOCATED,
    MISSING,
    OK,
    THERMAL,
    WARNING,
    XID,
    Signal,
    gpu_subject,
)
from domain.settings import PipelineSettings

T0 = 1_767_607_200.0
INTERVAL = 30.0


def gpu(i: int, *, node: str | None = None, cluster: str = "c1", pod: str | None = None) -> dict[str, str]:
    labels = {"cluster": cluster, "node": node or f"n{i // 8}", "gpu": f"G{i}", "index": str(i % 8)}
    if pod:
        labels.update(namespace="team", pod=pod, gpus="1")
    return labels


def sig(
    kind: str, i: int, tick: int, severity: int = WARNING, value: float | None = 1.0, **labels: str | None
) -> Signal:
    return Signal(kind, gpu_subject(f"G{i}"), severity, value, T0 + tick * INTERVAL, gpu(i, **labels))


class Run:
    """A pipeline fed tick by tick; remembers every finding it ever reported."""

    def __init__(self, **settings: object) -> None:
        self.pipeline = Pipeline(PipelineSettings(**settings), interval_seconds=INTERVAL)
        self.findings: dict[int, object] = {}

    def tick(self, tick: int, signals: Iterable[Signal]) -> None:
        result = self.pipeline.process(list(signals), now=T0 + tick * INTERVAL, interval_seconds=INTERVAL)
        for finding in result.changed:
            self.findings[id(finding)] = finding

    @property
    def counters(self) -> dict[str, int]:
        return self.pipeline.counters()

    def all(self) -> list:  # type: ignore[type-arg]
        return [f for f in self.findings.values() if f.merged_into is None]  # type: ignore[attr-defined]


# --- filters ------------------------------------------------------------------------------------------


def test_healthy_signals_are_dropped_and_counted() -> None:
    run = Run()
    for tick in range(5):
        run.tick(tick, [sig(HEALTH, i, tick, OK, None) for i in range(10)])
    assert run.counters["raw"] == 50
    assert run.counters["drop_healthy.dropped"] == 50
    assert run.counters["kept"] == 0 and run.all() == []


def test_persistence_holds_a_condition_until_it_held_for_n_polls() -> None:
    run = Run(persistence_polls=3)
    run.tick(0, [sig(THERMAL, 1, 0)])
    run.tick(1, [sig(THERMAL, 1, 1)])
    assert run.all() == [] and run.counters["persistence.dropped"] == 2
    run.tick(2, [sig(THERMAL, 1, 2)])
    [finding] = run.all()
    assert finding.kind == THERMAL and finding.first_seen == T0  # dated from when it began
    assert finding.count == 3


def test_a_gap_breaks_the_run_so_blips_never_add_up() -> None:
    run = Run(persistence_polls=3, flap_threshold=10)  # (with the default, this would be flapping: see below)
    for tick in (0, 1, 3, 4, 6, 7, 9):  # never three polls in a row
        run.tick(tick, [sig(THERMAL, 1, tick)])
    assert run.all() == []
    assert run.counters["persistence.dropped"] == 7


def test_persistence_by_duration_counts_too() -> None:
    run = Run(persistence_polls=10, persistence_seconds=60)
    for tick in range(3):
        run.tick(tick, [sig(THERMAL, 1, tick)])
    assert len(run.all()) == 1  # 60 s held at the third poll, long before ten polls


def test_dedupe_drops_repeats_of_an_open_finding_within_the_window() -> None:
    run = Run(persistence_polls=1, dedupe_window_seconds=300)
    for tick in range(20):
        run.tick(tick, [sig(THERMAL, 1, tick), sig(THERMAL, 2, tick, node="other")])
    assert len(run.all()) == 2  # different subjects are never duplicates of each other
    assert run.counters["kept"] == 2 * 2  # each passes once, and again after the 300 s window
    assert run.counters["dedupe.dropped"] == 40 - 4
    assert all(f.count == 20 for f in run.all())  # dropped repeats still count on the finding


def test_flap_damping_reports_a_flapping_condition_once() -> None:
    run = Run(persistence_polls=3, flap_threshold=3, flap_window_seconds=1800)
    for tick in range(0, 40, 2):  # on, off, on, off ... never three polls in a row
        run.tick(tick, [sig(THERMAL, 1, tick)])
        run.tick(tick + 1, [sig(HEALTH, 1, tick + 1, OK, None)])
    [finding] = run.all()
    assert finding.flapping and finding.is_open
    assert "flapping" in finding.summary()
    assert run.counters["flap_damping.notices"] == 1
    assert run.counters["escalations"] == 1


def test_the_rate_limit_caps_a_subject_but_not_its_critical_signals() -> None:
    run = Run(persistence_polls=1, dedupe_window_seconds=0, rate_limit_per_subject=3, rate_limit_window_seconds=3600)
    for tick in range(10):
        run.tick(tick, [sig(THERMAL, 1, tick)])
    assert run.counters["rate_limit.dropped"] == 7
    for tick in range(10, 20):
        run.tick(tick, [sig(XID, 1, tick, CRITICAL, 79)])
    assert run.counters["rate_limit.dropped"] == 7  # critical signals are exempt
    assert run.counters["safety.critical_exempted"] >= 9
    assert run.counters["safety.critical_suppressed"] == 0


# --- safety rules -------------------------------------------------------------------------------------


def test_a_critical_signal_counts_at_once_despite_persistence() -> None:
    run = Run(persistence_polls=5)
    run.tick(0, [sig(XID, 1, 0, CRITICAL, 79)])
    [finding] = run.all()
    assert finding.kind == XID and finding.escalated
    assert run.counters["safety.critical_exempted"] == 1


def test_critical_signals_are_never_deduplicated_across_subjects() -> None:
    run = Run()
    run.tick(0, [sig(MISSING, i, 0, CRITICAL, 90, node="n0") for i in range(8)])
    [node] = run.all()
    assert node.subject == "node:c1/n0" and node.level == "node"
    assert set(node.members) == {gpu_subject(f"G{i}") for i in range(8)}  # all eight kept, none merged away
    assert run.counters["safety.critical_distinct_subjects"] == 7
    assert run.counters["kept"] == 8
    again = [sig(MISSING, i, 1, CRITICAL, 90, node="n0") for i in range(8)]
    run.tick(1, again + again)  # every lost GPU twice (poll and alert)
    assert run.counters["dedupe.critical_same_subject"] == 16  # only ever against their own subject
    assert node.count == 24
    assert run.counters["safety.critical_suppressed"] == 0


def test_a_kind_never_seen_before_is_never_suppressed() -> None:
    run = Run(persistence_polls=5)
    odd = Signal("alert:GpuPcieReplay", gpu_subject("G1"), WARNING, 3.0, T0, gpu(1))
    run.tick(0, [odd])
    [finding] = run.all()
    assert finding.kind == "alert:GpuPcieReplay"
    assert run.counters["safety.unseen_kind_passed"] == 1
    # once seen, the kind is filtered like any other
    other = Signal("alert:GpuPcieReplay", gpu_subject("G9"), WARNING, 3.0, T0 + INTERVAL, gpu(9, node="far"))
    run.tick(1, [other])
    assert len(run.all()) == 1 and run.counters["persistence.dropped"] == 1


def test_a_storm_of_critical_signals_suppresses_none() -> None:
    run = Run(rate_limit_per_subject=1, persistence_polls=10)
    for tick in range(30):
        run.tick(tick, [sig(XID, i, tick, CRITICAL, 48) for i in range(16)])
    counters = run.counters
    assert counters["safety.critical_suppressed"] == 0
    assert counters["kept"] + counters["dedupe.dropped"] == 30 * 16
    assert {f.subject for f in run.all()} == {"node:c1/n0", "node:c1/n1"}


# --- correlation ---------------------------------------------------------------------------------------


def test_xid_on_several_gpus_of_one_node_is_one_node_finding() -> None:
    run = Run()
    run.tick(0, [sig(XID, i, 0, CRITICAL, 79) for i in (0, 3, 5)])
    [finding] = run.all()
    assert (finding.kind, finding.subject, finding.level) == (XID, "node:c1/n0", "node")
    assert "XID 79" in finding.summary() and "3 GPUs" in finding.summary()
    assert run.counters["escalations"] == 1


def test_a_node_finding_absorbs_an_earlier_gpu_finding_without_a_second_alarm() -> None:
    run = Run()
    run.tick(0, [sig(XID, 0, 0, CRITICAL, 79)])
    run.tick(1, [sig(XID, 0, 1, CRITICAL, 79), sig(XID, 1, 1, CRITICAL, 79)])
    [node] = run.all()
    assert node.subject == "node:c1/n0" and set(node.members) == {gpu_subject("G0"), gpu_subject("G1")}
    gpu_finding = next(f for f in run.findings.values() if f.subject == gpu_subject("G0"))  # type: ignore[attr-defined]
    assert gpu_finding.merged_into is node and not gpu_finding.is_open
    assert run.counters["escalations"] == 1 and run.counters["correlation.absorbed"] == 1


def test_idle_gpus_of_one_job_across_nodes_are_one_workload_finding() -> None:
    run = Run(persistence_polls=2)
    for tick in range(3):
        run.tick(tick, [sig(IDLE_ALLOCATED, i, tick, value=0.5, pod="ddp-16") for i in range(16)])
    [finding] = run.all()
    assert (finding.subject, finding.level) == ("workload:c1/team/ddp-16", "workload")
    assert len(finding.members) == 16
    assert finding.waste_gpu_seconds == pytest.approx(16 * 2 * INTERVAL)


def test_many_nodes_lost_at_once_is_one_cluster_finding() -> None:
    run = Run(cluster_min_nodes=3)
    run.tick(0, [sig(MISSING, i, 0, CRITICAL, 90) for i in range(32)])  # nodes n0..n3
    [finding] = run.all()
    assert (finding.subject, finding.level) == ("cluster:c1", "cluster")
    assert len(finding.members) == 32 and "4 nodes" in finding.summary()


def test_unrelated_faults_hours_apart_are_not_a_cluster_incident() -> None:
    run = Run(cluster_min_nodes=3)
    for n, start in enumerate((0, 100, 200)):
        for tick in range(start, start + 3):
            run.tick(tick, [sig(XID, 8 * m, tick, CRITICAL, 79) for m in range(n + 1) if tick < [3, 103, 203][m]])
    assert {f.level for f in run.all()} == {"gpu"}


def test_a_finding_resolves_after_silence_and_a_recurrence_opens_a_new_one() -> None:
    run = Run(resolve_after_polls=3)
    run.tick(0, [sig(XID, 1, 0, CRITICAL, 79)])
    for tick in range(1, 4):
        run.tick(tick, [sig(HEALTH, 1, tick, OK, None)])
    [first] = run.all()
    assert first.is_open
    run.tick(4, [sig(HEALTH, 1, 4, OK, None)])
    assert not first.is_open and run.counters["findings.resolved"] == 1
    run.tick(10, [sig(XID, 1, 10, CRITICAL, 79)])
    assert len(run.all()) == 2 and run.counters["escalations"] == 2


def test_a_severity_rise_escalates_again() -> None:
    run = Run(persistence_polls=1, dedupe_window_seconds=0)
    where = {"cluster": "c1", "node": "n0"}
    run.tick(0, [Signal("alert:GpuHealth", "node:c1/n0", WARNING, None, T0, where)])
    run.tick(1, [Signal("alert:GpuHealth", "node:c1/n0", CRITICAL, None, T0 + INTERVAL, where)])
    [finding] = run.all()
    assert finding.escalations == 2 and run.counters["escalations"] == 2


def test_the_compression_ratio_is_cumulative() -> None:
    run = Run()
    for tick in range(100):
        run.tick(tick, [sig(HEALTH, i, tick, OK, None) for i in range(1, 10)] + [sig(XID, 0, tick, CRITICAL, 79)])
    assert run.counters["raw"] == 1000 and run.counters["escalations"] == 1
    assert run.pipeline.compression() == 1000.0


def test_streaming_feed_matches_batches() -> None:
    signals = [sig(XID, i, tick, CRITICAL, 79) for tick in range(5) for i in (0, 1)]
    signals += [sig(THERMAL, 9, tick, node="hot") for tick in range(5)]
    signals.sort(key=lambda s: s.time)
    streamed = Pipeline(PipelineSettings(), interval_seconds=INTERVAL)
    streamed.feed(iter(signals))
    streamed.finish()
    batched = Run()
    for tick in range(5):
        batched.tick(tick, [s for s in signals if s.time == T0 + tick * INTERVAL])
    assert streamed.counters() == batched.counters


def test_an_alert_finding_lasts_until_the_alert_resolves() -> None:
    from domain.pipeline.signals import signals_from_alert

    run = Run()
    labels = {"alertname": "NodeGpuDown", "cluster": "c1", "node": "n0", "severity": "critical"}
    run.tick(0, signals_from_alert(labels, {}, "firing", T0))
    [finding] = run.all()
    assert finding.kind == "alert:NodeGpuDown" and finding.subject == "node:c1/n0"
    for tick in range(1, 120):  # an hour of polls of the same cluster; Alertmanager repeats nothing meanwhile
        run.tick(tick, [sig(HEALTH, 1, tick, OK, None)])
    assert finding.is_open
    run.tick(120, signals_from_alert(labels, {}, "resolved", T0 + 120 * INTERVAL))
    assert not finding.is_open and run.counters["findings.resolved"] == 1
