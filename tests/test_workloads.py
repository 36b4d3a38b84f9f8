"""Workloads from polls and alerts: open, accumulate, close, merge the two views, survive restarts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from domain.database import create_db_engine, session_scope
from domain.models import Workload
from domain.settings import DatabaseSettings, SchedulerSettings
from tests.test_inventory import T0, reading, snapshot
from worker.inventory import apply_snapshot
from worker.polling import SourcePoller, ensure_hub
from worker.sources import GpuReading, PodRef, SliceReading, Snapshot
from worker.tracing import OtelWorkloadTracer
from worker.workloads.jobs import apply_alerts, apply_poll, load_open
from worker.workloads.rules import AlertObservation, WorkloadKey, new_trace_id

INTERVAL = 30.0
SCHEDULER = SchedulerSettings(poll_interval_seconds=INTERVAL, missing_after_seconds=120)
POD = PodRef("team-a", "train-0", "trainer")


class Fleet:
    """A source whose GPUs the test changes between polls."""

    kind = "simulated"
    url = None

    def __init__(self, gpus: Sequence[GpuReading]) -> None:
        self.name = "hub-a"
        self.gpus = tuple(gpus)

    def poll(self, now: datetime, window_seconds: float) -> Snapshot:
        return snapshot(self.gpus, at=now, window=window_seconds)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rows(engine: Engine) -> list[Workload]:
    with Session(engine) as db:
        return list(db.exec(select(Workload).order_by(Workload.id)))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def poller_for(engine: Engine, source: Fleet, spans: InMemorySpanExporter) -> SourcePoller:
    return SourcePoller(source, engine, SCHEDULER, tracer=OtelWorkloadTracer(spans, batch=False))


def usage_alert(status: str, starts: float, ends: float | None = None, **key: object) -> AlertObservation:
    values: dict[str, object] = {
        "cluster": "c1",
        "namespace": POD.namespace,
        "pod": POD.pod,
        "gpu_uuid": "GPU-c1-00000",
    }
    values.update(key)
    return AlertObservation(
        kind="usage",
        status=status,
        key=WorkloadKey(**values),  # type: ignore[arg-type]
        starts_at=at(starts),
        ends_at=None if ends is None else at(ends),
        fingerprint="f00dfeedf00dfeed",
        container="trainer",
        node="c1-node-0",
        gpu_model="NVIDIA A100-SXM4-80GB",
        summary="GPU in use",
    )


def alerts(engine: Engine, spans: InMemorySpanExporter, *observations: AlertObservation) -> None:
    """What the receiver does with new receipts: apply them, commit, then emit spans."""
    with session_scope(engine) as db:
        changes = apply_alerts(db, observations)
    OtelWorkloadTracer(spans, batch=False).emit(changes.closed)


def test_a_pod_appearing_opens_polls_accumulate_and_its_leaving_closes(db_engine: Engine, spans) -> None:
    source = Fleet([reading(0), reading(1)])
    poller = poller_for(db_engine, source, spans)
    poller.poll_once(at(0))
    assert rows(db_engine) == []

    source.gpus = (
        reading(0, workloads=(POD,), utilization=40.0, utilization_max=70.0, memory_used_mib=1000.0),
        reading(1),
    )
    outcome = poller.poll_once(at(30))
    assert outcome.workloads is not None and outcome.workloads.opened == 1
    source.gpus = (
        reading(0, workloads=(POD,), utilization=80.0, utilization_max=95.0, memory_used_mib=3000.0, power_watts=360.0),
        reading(1),
    )
    poller.poll_once(at(60))
    source.gpus = (reading(0), reading(1))
    closing = poller.poll_once(at(90))

    assert closing.workloads is not None and len(closing.workloads.closed) == 1
    [row] = rows(db_engine)
    assert (row.cluster, row.namespace, row.pod, row.container) == ("c1", "team-a", "train-0", "trainer")
    assert (row.gpu_uuid, row.node, row.gpu_model) == ("GPU-c1-00000", "c1-node-0", "NVIDIA A100-SXM4-80GB")
    assert (row.started_at, row.ended_at, row.source) == (at(30), at(90), "poll")
    assert (row.samples, row.util_avg, row.util_max, row.memory_max_mib) == (2, 60.0, 95.0, 3000.0)
    assert row.energy_wh == pytest.approx((200 + 360) * 30 / 3600)
    [span] = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == row.trace_id
    assert span.attributes["ai_telemetry.gpu.utilization.avg_percent"] == 60.0


def test_a_poll_opening_many_workloads_writes_each_with_its_first_sample(
    db_engine: Engine, spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New workloads are written as plain rows, a document at a time (the first poll of a large
    fleet opens thousands): each still carries its first sample and a trace id of its own."""
    monkeypatch.setattr("worker.workloads.jobs.DOCUMENT_ROWS", 2)  # five workloads: three writes
    source = Fleet([reading(n, workloads=(PodRef("team-a", f"job-{n}"),), utilization=10.0 * n) for n in range(5)])
    outcome = poller_for(db_engine, source, spans).poll_once(at(0))

    assert outcome.workloads is not None and outcome.workloads.opened == 5
    opened = sorted(rows(db_engine), key=lambda r: r.pod)
    assert [(r.pod, r.samples, r.util_avg, r.ended_at) for r in opened] == [
        (f"job-{n}", 1, 10.0 * n, None) for n in range(5)
    ]
    assert all(r.started_at == at(0) and r.source == "poll" for r in opened)
    assert len({r.trace_id for r in opened}) == 5


def test_a_sample_writes_only_the_columns_it_changed(db_engine: Engine, spans) -> None:
    """A running workload's names, model, node and unchanged figures are not rewritten by every poll."""
    source = Fleet([reading(0, workloads=(POD,), utilization=40.0, utilization_max=70.0)])
    poller = poller_for(db_engine, source, spans)
    poller.poll_once(at(0))  # opens the workload
    statements: list[str] = []

    def capture(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if re.match(r'\s*UPDATE\s+"?workload"?\s', statement, re.IGNORECASE):
            statements.append(statement)

    event.listen(db_engine, "before_cursor_execute", capture)
    try:
        # the same average, a lower peak, the same memory: only the sample count, energy and seconds move
        source.gpus = (reading(0, workloads=(POD,), utilization=40.0, utilization_max=50.0),)
        poller.poll_once(at(30))
    finally:
        event.remove(db_engine, "before_cursor_execute", capture)
    written = set(re.findall(r'"?(\w+)"?\s*=\s*(?:v\.|\?|%|:)', " ".join(statements)))
    assert {"samples", "energy_wh"} <= written
    assert not written & {"util_avg", "util_max", "memory_max_mib", "gpu_model", "node", "container", "profiling"}
    [row] = rows(db_engine)
    assert (row.samples, row.util_avg, row.util_max, row.gpu_model) == (2, 40.0, 70.0, "NVIDIA A100-SXM4-80GB")


def test_each_mig_slice_is_a_workload_of_its_own(db_engine: Engine, spans) -> None:
    slices = (
        SliceReading(1, "1g.10gb", 30.0, 40.0, 2000.0, 9856.0, workloads=(PodRef("team-b", "nb-1"),)),
        SliceReading(2, "3g.40gb", 70.0, 90.0, 8000.0, 40192.0, workloads=(PodRef("team-a", "train-1"),)),
        SliceReading(3, "1g.10gb", 0.0, 0.0, 0.0, 9856.0),
    )
    source = Fleet([reading(4, slices=slices, power_watts=210.0)])
    poller_for(db_engine, source, spans).poll_once(at(0))

    found = {(r.namespace, r.pod, r.mig_instance_id): r for r in rows(db_engine)}
    assert set(found) == {("team-b", "nb-1", 1), ("team-a", "train-1", 2)}
    assert found[("team-a", "train-1", 2)].energy_wh == pytest.approx(210 * 3 / 7 * 30 / 3600)
    assert found[("team-b", "nb-1", 1)].util_max == 40.0


def test_each_pod_of_a_time_sliced_gpu_is_a_workload_of_its_own(db_engine: Engine, spans) -> None:
    other = PodRef("team-b", "infer-0", "server")
    source = Fleet([reading(0, workloads=(POD, other), power_watts=300.0)])
    poller = poller_for(db_engine, source, spans)
    outcome = poller.poll_once(at(0))
    assert outcome.workloads is not None and outcome.workloads.opened == 2
    found = {(r.namespace, r.pod): r for r in rows(db_engine)}
    assert set(found) == {("team-a", "train-0"), ("team-b", "infer-0")}
    assert {r.gpu_uuid for r in found.values()} == {"GPU-c1-00000"}
    for row in found.values():  # each pod's workload carries its half of the GPU's energy
        assert row.energy_wh == pytest.approx(300 / 2 * 30 / 3600)

    source.gpus = (reading(0, workloads=(other,), power_watts=300.0),)  # one pod leaves the shared GPU
    closing = poller.poll_once(at(30))
    assert closing.workloads is not None and len(closing.workloads.closed) == 1
    still_open = [(r.namespace, r.pod) for r in rows(db_engine) if r.ended_at is None]
    assert still_open == [("team-b", "infer-0")]


def test_xid_and_throttling_are_events_once_per_onset(db_engine: Engine, spans) -> None:
    source = Fleet([reading(0, workloads=(POD,))])
    poller = poller_for(db_engine, source, spans)
    poller.poll_once(at(0))
    source.gpus = (reading(0, workloads=(POD,), xid=79, temperature_c=93.0),)
    poller.poll_once(at(30))
    poller.poll_once(at(60))  # the same XID and heat: no new events
    source.gpus = (reading(0, workloads=(POD,), xid=0, temperature_c=60.0),)
    poller.poll_once(at(90))
    source.gpus = (reading(0, workloads=(POD,), xid=79, temperature_c=95.0),)
    poller.poll_once(at(120))
    source.gpus = (reading(0),)
    poller.poll_once(at(150))

    [row] = rows(db_engine)
    assert [(e["name"], e["time"]) for e in row.events] == [
        ("gpu.xid_error", at(30).isoformat()),
        ("gpu.thermal_throttling", at(30).isoformat()),
        ("gpu.xid_error", at(120).isoformat()),
        ("gpu.thermal_throttling", at(120).isoformat()),
    ]
    [span] = spans.get_finished_spans()
    assert [e.name for e in span.events] == ["gpu.xid_error", "gpu.thermal_throttling"] * 2
    assert span.events[0].timestamp == int(at(30).timestamp()) * 10**9
    assert span.events[0].attributes["gpu.xid.code"] == 79


@pytest.mark.parametrize("hot_threshold_c", [75.0, 85.0])
def test_throttling_follows_the_configured_hot_threshold(db_engine: Engine, spans, hot_threshold_c: float) -> None:
    """The workload's throttling event and the GPU's health badge turn at the same, configured temperature."""
    source = Fleet([reading(0, workloads=(POD,), temperature_c=80.0)])
    poller = SourcePoller(
        source, db_engine, SCHEDULER, tracer=OtelWorkloadTracer(spans, batch=False), hot_threshold_c=hot_threshold_c
    )
    poller.poll_once(at(0))
    poller.poll_once(at(30))
    [row] = rows(db_engine)
    throttled = hot_threshold_c <= 80.0
    assert row.throttled is throttled
    assert [e["name"] for e in row.events] == (["gpu.thermal_throttling"] if throttled else [])


def test_alert_first_then_polls_make_one_session(db_engine: Engine, spans) -> None:
    source = Fleet([reading(0)])
    poller = poller_for(db_engine, source, spans)
    poller.poll_once(at(0))
    alerts(db_engine, spans, usage_alert("firing", 10))
    source.gpus = (reading(0, workloads=(POD,)),)
    poller.poll_once(at(30))
    poller.poll_once(at(60))
    source.gpus = (reading(0),)
    poller.poll_once(at(90))  # the poll sees the pod gone first ...
    alerts(db_engine, spans, usage_alert("resolved", 10, ends=85))  # ... then the resolution arrives

    [row] = rows(db_engine)
    assert (row.source, row.started_at, row.ended_at, row.samples) == ("alert", at(10), at(90), 2)
    assert len(spans.get_finished_spans()) == 1


def test_poll_first_then_alert_joins_and_closes(db_engine: Engine, spans) -> None:
    source = Fleet([reading(0, workloads=(POD,))])
    poller = poller_for(db_engine, source, spans)
    poller.poll_once(at(30))
    alerts(db_engine, spans, usage_alert("firing", 12))
    poller.poll_once(at(60))
    alerts(db_engine, spans, usage_alert("resolved", 12, ends=70))
    poller.poll_once(at(90))  # the pod label is still there, within one window of the resolution

    [row] = rows(db_engine)
    assert (row.source, row.started_at, row.ended_at) == ("poll", at(12), at(70))
    assert row.alert_fingerprint == "f00dfeedf00dfeed"
    assert len(spans.get_finished_spans()) == 1

    poller.poll_once(at(120))  # still there a window later: the pod really uses the GPU again
    assert [r.ended_at for r in rows(db_engine)] == [at(70), None]


def test_a_fresh_alert_workload_is_not_closed_by_an_older_poll_view(db_engine: Engine, spans) -> None:
    source = Fleet([reading(0)])
    poller = poller_for(db_engine, source, spans)
    alerts(db_engine, spans, usage_alert("firing", 50))
    poller.poll_once(at(60))  # this poll's window began before the alert: it cannot contradict it

    assert [r.ended_at for r in rows(db_engine)] == [None]
    poller.poll_once(at(90))
    assert [r.ended_at for r in rows(db_engine)] == [at(90)]


def test_workloads_survive_a_restart(db_engine: Engine, spans) -> None:
    url = db_engine.url.render_as_string(hide_password=False)
    source = Fleet([reading(0, workloads=(POD,), utilization=20.0)])
    poller_for(db_engine, source, spans).poll_once(at(0))
    [before] = rows(db_engine)

    restarted = create_db_engine(DatabaseSettings(url=url))
    try:
        source.gpus = (reading(0, workloads=(POD,), utilization=60.0),)
        poller_for(restarted, source, spans).poll_once(at(30))
        source.gpus = (reading(0),)
        poller_for(restarted, source, spans).poll_once(at(60))
    finally:
        restarted.dispose()

    [after] = rows(db_engine)
    assert (after.id, after.trace_id) == (before.id, before.trace_id)
    assert (after.samples, after.util_avg, after.ended_at) == (2, 40.0, at(60))


def test_a_gpu_gone_missing_closes_its_session(db_engine: Engine, spans) -> None:
    source = Fleet([reading(0, workloads=(POD,)), reading(1)])
    poller = poller_for(db_engine, source, spans)
    poller.poll_once(at(0))
    source.gpus = (reading(1),)
    poller.poll_once(at(60))
    assert [r.ended_at for r in rows(db_engine)] == [None]  # silent, not yet missing

    poller.poll_once(at(150))  # past missing_after (120 s)

    assert [r.ended_at for r in rows(db_engine)] == [at(150)]


def test_one_open_row_per_workload_key_is_enforced_by_the_database(db_engine: Engine) -> None:
    key = WorkloadKey("c1", "team-a", "train-0", "GPU-x")

    def row() -> Workload:
        return Workload(
            trace_id=new_trace_id(),
            workload_key=key.digest,
            cluster="c1",
            namespace="team-a",
            pod="train-0",
            gpu_uuid="GPU-x",
            started_at=T0,
        )

    with session_scope(db_engine) as db:
        db.add(row())
    with session_scope(db_engine) as db:
        twin = row()
        twin.ended_at = at(1)
        db.add(twin)
    with pytest.raises(IntegrityError), session_scope(db_engine) as db:
        db.add(row())


def test_a_failing_workload_step_does_not_fail_the_poll(sqlite_engine: Engine, spans) -> None:
    with sqlite_engine.begin() as connection:
        connection.execute(
            text("CREATE TRIGGER no_workloads BEFORE INSERT ON workload BEGIN SELECT RAISE(ABORT, 'broken'); END")
        )
    outcome = poller_for(sqlite_engine, Fleet([reading(0, workloads=(POD,))]), spans).poll_once(at(0))

    assert outcome.outcome == "success" and outcome.workloads is None
    assert outcome.changes is not None and outcome.changes.allocations_opened == 1
    assert rows(sqlite_engine) == []


@pytest.mark.parametrize("preloaded", [(), ("c1",), ("c1", "elsewhere"), ("elsewhere",)])
def test_open_workloads_read_early_or_late_give_the_same_poll(db_engine: Engine, preloaded: tuple[str, ...]) -> None:
    """The poller reads the open workloads while the source answers (:func:`load_open`); any
    cluster it did not cover is read by :func:`apply_poll` itself, and rows of clusters the snapshot
    does not show are left alone."""
    first = snapshot((reading(0, workloads=(POD,), utilization=20.0), reading(1)), at=at(0), window=INTERVAL)
    later = snapshot(
        (reading(0, workloads=(POD,), utilization=60.0), reading(1, workloads=(PodRef("team-b", "eval-0", "e"),))),
        at=at(30),
        window=INTERVAL,
    )
    with session_scope(db_engine) as db:
        hub = ensure_hub(db, Fleet(()))
        apply_snapshot(db, hub, first, missing_after=timedelta(minutes=2))
        apply_poll(db, hub, first)
    with session_scope(db_engine) as db:
        hub = ensure_hub(db, Fleet(()))
        apply_snapshot(db, hub, later, missing_after=timedelta(minutes=2))
        changes = apply_poll(db, hub, later, loaded=load_open(db, preloaded))
    assert (changes.opened, changes.sampled, len(changes.closed)) == (1, 2, 0)
    by_pod = {row.pod: row for row in rows(db_engine)}
    assert by_pod["train-0"].samples == 2 and by_pod["train-0"].util_avg == 40.0
    assert by_pod["eval-0"].ended_at is None and by_pod["eval-0"].started_at == at(30)
