"""End to end: simulator runs with injected faults through the poller, the pipeline and the database.

Every injected fault must yield exactly one finding (the expected kind, on the expected subject) and
nothing else may; a healthy fleet yields none. The runs use the fleet files in tests/data/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import simulator
from benchmarks.pipeline import run_once
from domain.models import Finding
from domain.pipeline.findings import read_counters
from domain.pipeline.signals import gpu_subject, node_subject, slice_subject, workload_subject
from simulator.fleet import gpu_uuid
from worker.metrics import WorkerMetrics
from worker.pipeline.processor import SignalProcessor
from worker.polling import SourcePoller
from worker.sources import Snapshot
from worker.sources.simulated import SimulatedSource

DATA = Path(__file__).parent / "data"
START = datetime(2026, 1, 5, 10, 0, 7, tzinfo=UTC)
INTERVAL = 30.0
LOST_AT = START + timedelta(minutes=20)
LOST_GPU = gpu_uuid("lab", "gpu-c", 3)


class LosingSource(SimulatedSource):
    """The simulated fleet, except that one GPU stops reporting at LOST_AT (an injected lost GPU)."""

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        snapshot = super().poll(now, window_seconds)
        if now < LOST_AT:
            return snapshot
        return dataclasses.replace(snapshot, gpus=tuple(g for g in snapshot.gpus if g.uuid != LOST_GPU))


def run(engine: Engine, settings, source: SimulatedSource, minutes: int, *, start: datetime = START) -> SignalProcessor:
    signals = SignalProcessor(settings, engine, metrics=WorkerMetrics())
    poller = SourcePoller(source, engine, settings.scheduler, interval_seconds=INTERVAL, signals=signals)
    for step in range(int(minutes * 60 / INTERVAL)):
        outcome = poller.poll_once(now=start + timedelta(seconds=INTERVAL * step), force=True)
        assert outcome.outcome == "success", outcome
    return signals


def findings(engine: Engine) -> list[Finding]:
    with Session(engine) as session:
        return list(session.exec(select(Finding).order_by(col(Finding.id))))


@pytest.fixture
def fault_fleet() -> simulator.Fleet:
    return simulator.load_fleet(DATA / "pipeline_faults.toml")


def expected_faults(fleet: simulator.Fleet) -> set[tuple[str, str]]:
    mig_gpu = gpu_uuid("lab", "gpu-d", 0)
    idle_slice = next(d.instance_id for w in fleet.workloads() if w.pod == "mig-notebook" for d in w.devices)
    return {
        ("straggler", gpu_subject(gpu_uuid("lab", "gpu-a", 5))),
        ("thermal", node_subject("lab", "gpu-b")),
        ("xid_error", gpu_subject(gpu_uuid("lab", "gpu-b", 2))),
        ("idle_allocated", workload_subject("lab", "data-team", "notebook")),
        ("idle_allocated", slice_subject(mig_gpu, idle_slice or 0)),
        ("gpu_missing", gpu_subject(LOST_GPU)),
    }


def test_every_injected_fault_yields_exactly_one_finding(db_engine: Engine, make_settings, fault_fleet) -> None:
    settings = make_settings(db_engine)
    run(db_engine, settings, LosingSource("faults", fault_fleet), minutes=40)

    rows = findings(db_engine)
    keys = [(f.kind, f.subject) for f in rows]
    assert sorted(keys) == sorted(expected_faults(fault_fleet)), "\n".join(f"{f.kind} {f.subject}" for f in rows)
    assert len(keys) == len(set(keys))
    by_kind = {f.kind: f for f in rows}
    assert all(f.status == "open" and f.escalated for f in rows if f.kind != "memory_full")
    assert by_kind["xid_error"].severity == "critical" and "XID 79" in (by_kind["xid_error"].summary or "")
    assert by_kind["gpu_missing"].severity == "critical"
    # the XID started 10 minutes in, the GPU was lost 20 minutes in (plus the grace period)
    assert by_kind["xid_error"].first_seen >= START + timedelta(minutes=10) - timedelta(seconds=INTERVAL)
    assert by_kind["gpu_missing"].first_seen >= LOST_AT
    thermal = by_kind["thermal"]
    assert thermal.level == "node" and thermal.evidence["member_count"] == 2
    idle = next(f for f in rows if f.kind == "idle_allocated" and f.level == "workload")
    assert idle.waste_gpu_hours == pytest.approx(2 * 40 / 60, rel=0.1)  # two GPUs idle for 40 minutes
    assert idle.project_id is not None
    straggler = by_kind["straggler"]
    assert float(straggler.evidence["members"][0]["median"]) > 0.8 > straggler.evidence["members"][0]["value"]

    with Session(db_engine) as session:
        counters = read_counters(session)
    assert counters.get("safety.critical_suppressed", 0) == 0
    assert counters["escalations"] == len(rows)
    assert counters["raw"] > 50 * counters["escalations"]
    assert (
        counters["raw"]
        == counters["drop_healthy.dropped"]
        + sum(counters.get(f"{stage}.dropped", 0) for stage in ("dedupe", "persistence", "flap_damping", "rate_limit"))
        + counters["kept"]
    )


def test_a_healthy_fleet_yields_no_finding(sqlite_engine: Engine, make_settings) -> None:
    settings = make_settings(sqlite_engine)
    fleet = simulator.load_fleet(DATA / "pipeline_healthy.toml")
    signals = run(sqlite_engine, settings, SimulatedSource("healthy", fleet), minutes=40)

    assert findings(sqlite_engine) == []
    counters = signals.pipeline.counters()
    assert counters["raw"] > 1000 and counters["kept"] == 0
    straggler = signals.extractors["healthy"].counters()
    assert straggler["straggler.verdicts"] > 0, "the 8-GPU job must have been judged, not skipped"
    assert straggler["straggler.flagged"] == 0


def test_findings_resolve_when_the_fault_ends_and_a_restart_continues_them(
    sqlite_engine: Engine, make_settings, fault_fleet
) -> None:
    settings = make_settings(sqlite_engine)
    run(sqlite_engine, settings, SimulatedSource("faults", fault_fleet), minutes=15)
    before = {(f.kind, f.subject): f for f in findings(sqlite_engine)}
    assert ("xid_error", gpu_subject(gpu_uuid("lab", "gpu-b", 2))) in before

    # a new worker process (fresh pipeline) continues the open findings instead of duplicating them
    later = START + timedelta(minutes=15)
    run(sqlite_engine, settings, SimulatedSource("faults", fault_fleet), minutes=10, start=later)
    after = findings(sqlite_engine)
    assert len(after) == len(before)
    assert all(f.last_seen > START + timedelta(minutes=20) for f in after)

    # the broken job is gone an hour later: a fleet without it resolves the XID finding
    healthy = simulator.load_fleet(DATA / "pipeline_healthy.toml")
    healthy = dataclasses.replace(healthy, clusters=tuple(dataclasses.replace(c) for c in healthy.clusters))
    run(sqlite_engine, settings, SimulatedSource("faults", healthy), minutes=5, start=START + timedelta(minutes=25))
    statuses = {(f.kind, f.subject): f.status for f in findings(sqlite_engine)}
    assert statuses[("xid_error", gpu_subject(gpu_uuid("lab", "gpu-b", 2)))] == "resolved"
    assert set(statuses.values()) == {"resolved"}


def test_a_failing_pipeline_never_fails_the_poll(sqlite_engine: Engine, make_settings, fault_fleet) -> None:
    settings = make_settings(sqlite_engine)
    metrics = WorkerMetrics()
    signals = SignalProcessor(settings, sqlite_engine, metrics=metrics)

    def broken(poll):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in a stage")

    signals._extractor("faults").extract = broken  # type: ignore[method-assign]
    poller = SourcePoller(
        SimulatedSource("faults", fault_fleet),
        sqlite_engine,
        settings.scheduler,
        interval_seconds=INTERVAL,
        metrics=metrics,
        signals=signals,
    )
    assert poller.poll_once(now=START, force=True).outcome == "success"
    assert metrics.registry.get_sample_value("ai_telemetry_pipeline_failures_total", {"step": "pipeline"}) == 1


def test_a_failed_write_is_made_good_by_the_next_batch(
    sqlite_engine: Engine, make_settings, fault_fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.pipeline.processor

    settings = make_settings(sqlite_engine)
    signals = SignalProcessor(settings, sqlite_engine, metrics=WorkerMetrics())
    poller = SourcePoller(
        SimulatedSource("faults", fault_fleet),
        sqlite_engine,
        settings.scheduler,
        interval_seconds=INTERVAL,
        signals=signals,
    )
    for step in range(3):
        poller.poll_once(now=START + timedelta(seconds=INTERVAL * step), force=True)
    assert findings(sqlite_engine)  # the persistent conditions were reported by the third poll

    real = worker.pipeline.processor.add_counters

    def down(*args: object, **kwargs: object) -> None:
        raise OSError("database went away")

    monkeypatch.setattr(worker.pipeline.processor, "add_counters", down)
    for step in range(3, 8):
        assert poller.poll_once(now=START + timedelta(seconds=INTERVAL * step), force=True).outcome == "success"
    opened_while_down = signals.pipeline.counters()["findings"]
    monkeypatch.setattr(worker.pipeline.processor, "add_counters", real)
    poller.poll_once(now=START + timedelta(seconds=INTERVAL * 8), force=True)

    with Session(sqlite_engine) as session:
        counters = read_counters(session)
    assert counters == {k: v for k, v in signals._counters().items() if v and k != "findings.open"}
    assert len(findings(sqlite_engine)) == opened_while_down
    assert all(
        f.last_seen == START + timedelta(seconds=INTERVAL * 8) for f in findings(sqlite_engine) if f.kind != "xid_error"
    )


def test_alerts_and_polls_about_one_fault_meet_in_one_finding(
    sqlite_engine: Engine, make_settings, fault_fleet
) -> None:
    """The entry point the Alertmanager receiver calls: ``signals_from_alert`` then ``process_alert``."""
    from domain.pipeline.records import iter_inputs
    from domain.pipeline.signals import signals_from_alert

    settings = make_settings(sqlite_engine)
    signals = run(sqlite_engine, settings, SimulatedSource("faults", fault_fleet), minutes=12)
    xid_gpu = gpu_uuid("lab", "gpu-b", 2)
    labels = {
        "alertname": "GpuXidError",
        "cluster": "lab",
        "Hostname": "gpu-b",
        "UUID": xid_gpu,
        "xid": "79",
        "namespace": "ml-team",
        "pod": "broken-job",
        "severity": "critical",
    }
    at = START + timedelta(minutes=12)
    outcome = signals.process_alert(signals_from_alert(labels, {"summary": "XID 79"}, "firing", at))
    assert outcome is not None and outcome.saved
    xids = [f for f in findings(sqlite_engine) if f.kind == "xid_error"]
    assert len(xids) == 1 and xids[0].subject == gpu_subject(xid_gpu)
    new_kind = signals.process_alert(
        signals_from_alert(
            {"alertname": "GpuPcieReplayStorm", "cluster": "lab", "Hostname": "gpu-a", "severity": "warning"},
            {},
            "firing",
            at,
        )
    )
    assert new_kind is not None and new_kind.kept == 1  # a kind never seen before passes at once
    assert any(f.kind == "alert:GpuPcieReplayStorm" and f.subject == "node:lab/gpu-a" for f in findings(sqlite_engine))
    with Session(sqlite_engine) as session:
        assert [i.kind for i in iter_inputs(session, since=at)] == ["alert", "alert"]


def test_a_disabled_pipeline_is_not_wired(sqlite_engine: Engine, make_settings) -> None:
    from worker.scheduler import create_scheduler

    on = create_scheduler(make_settings(sqlite_engine), sqlite_engine, [])
    off = create_scheduler(make_settings(sqlite_engine, pipeline={"enabled": False}), sqlite_engine, [])
    assert on.signals is not None and off.signals is None


@pytest.fixture
def benchmark_run() -> Iterator[dict]:
    yield run_once(300_000)


def test_the_benchmark_stream_finds_every_critical_fault_and_little_else(benchmark_run) -> None:
    """A small run of the benchmark's generator: the quality targets hold, whatever the speed."""
    score = benchmark_run["score"]
    counters = benchmark_run["counters"]
    assert score.critical_faults > 0 and score.critical_found == score.critical_faults
    assert score.exactly_one == score.faults
    assert score.true_escalations / score.escalations >= 0.95
    assert counters["safety.critical_suppressed"] == 0
    assert counters["escalations"] <= 2 * score.distinct_fault_subjects
