"""The worker's side of the signal pipeline: each successful poll's snapshot becomes signals, findings, counters.

One :class:`SignalProcessor` per worker, shared by every poller (a lock keeps batches apart). After
a poll has written the inventory, :meth:`SignalProcessor.after_poll`:

1. turns the snapshot into the pipeline's own :class:`~domain.pipeline.extract.PollObservation`;
2. extracts the signals and runs them through the pipeline (filters, correlation, findings);
3. in one transaction of its own: writes the findings that changed, adds the counters' increments
   to the cumulative ones, records the poll for replay, and applies the record's retention;
4. counts into the worker's ``/metrics``.

It never raises: a pipeline failure is logged and counted, and the poll it followed stays a
success. Findings and counter increments that could not be written are kept and written with the
next batch. :meth:`analyse_pending` (a scheduler job, when an LLM is configured) asks the LLM about
escalated findings, within its rate and budget.

Alerts come in through :meth:`SignalProcessor.process_alert`, after the receiver has committed their
receipts marked ``signals_pending``; the transaction that saves the batch clears the mark. A worker
killed in between leaves the mark set, and :meth:`SignalProcessor.replay_pending` (run with the polls,
every :data:`REPLAY_EVERY`) takes in the receipts left pending longer than :data:`REPLAY_AFTER`, so
an alert is never lost between its receipt and its finding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, tuple_, update
from sqlalchemy import select as core_select  # typed for any number of columns (sqlmodel's: up to 4)
from sqlmodel import Session, col, select

from domain.database import session_scope
from domain.models import AlertReceipt, Cluster, Finding, Gpu, Hub, Node, utcnow
from domain.models.base import table_of
from domain.pipeline.correlation import FindingState
from domain.pipeline.engine import Pipeline
from domain.pipeline.extract import GpuObservation, PollObservation, SignalExtractor, SliceObservation
from domain.pipeline.findings import add_counters, as_datetime, load_open_findings, save_findings
from domain.pipeline.llm import Analyzer, ChatCompletionsAnalyzer, LlmBudgetExceeded, LlmError, build_analyzer
from domain.pipeline.records import POLL, RecordedInput, apply_input_retention, record_alert_signals, record_poll
from domain.pipeline.signals import SEVERITY_OF, Signal, signals_from_alert
from domain.settings import Settings
from domain.statuses import Health
from worker.metrics import WorkerMetrics
from worker.sources import Source
from worker.sources.snapshot import GpuReading, Snapshot

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(minutes=10)
MAX_ANALYSIS_ATTEMPTS = 3
REPLAY_AFTER = timedelta(minutes=1)
"""A receipt still pending this long was left by a worker that died before saving its batch (a live
worker takes its receipts in within moments)."""
REPLAY_EVERY = timedelta(minutes=1)
REPLAY_BATCH = 500
"""Receipts replayed at most per run."""

ReceiptKey = tuple[str, datetime, str]
"""(fingerprint, startsAt, status): an alert receipt's identity."""


def observation_from_snapshot(snapshot: Snapshot) -> PollObservation:
    """The pipeline's copy of a snapshot (the domain never imports the worker's types)."""
    return PollObservation(
        source=snapshot.source,
        taken_at=snapshot.taken_at.timestamp(),
        window_seconds=snapshot.window_seconds,
        clusters=tuple(dict.fromkeys(snapshot.clusters)),
        gpus=tuple(_gpu(reading) for reading in snapshot.gpus),
    )


def _gpu(reading: GpuReading) -> GpuObservation:
    # an observation names one pod: the first of a time-sliced GPU's (signals judge the device)
    workload = reading.workloads[0] if reading.workloads else None
    return GpuObservation(
        cluster=reading.cluster,
        node=reading.node,
        uuid=reading.uuid,
        index=reading.index,
        model=reading.model,
        utilization=reading.utilization,
        utilization_max=reading.utilization_max,
        memory_used_mib=reading.memory_used_mib,
        memory_total_mib=reading.memory_total_mib,
        temperature_c=reading.temperature_c,
        power_watts=reading.power_watts,
        xid=reading.xid,
        namespace=workload.namespace if workload else None,
        pod=workload.pod if workload else None,
        slices=tuple(
            SliceObservation(
                instance_id=s.mig_instance_id,
                profile=s.profile,
                utilization=s.utilization,
                memory_used_mib=s.memory_used_mib,
                memory_total_mib=s.memory_total_mib,
                namespace=s.workloads[0].namespace if s.workloads else None,
                pod=s.workloads[0].pod if s.workloads else None,
            )
            for s in reading.slices
        ),
    )


def simulated_inputs(source: Source, start: datetime, hours: float, interval_seconds: float) -> Iterator[RecordedInput]:
    """Poll ``source`` (e.g. the simulator) over a stretch of time, as replay input; nothing is stored."""
    moment, end = start, start + timedelta(hours=hours)
    while moment <= end:
        poll = observation_from_snapshot(source.poll(moment, interval_seconds))
        yield RecordedInput(POLL, poll.source, poll.taken_at, poll.window_seconds, poll=poll)
        moment += timedelta(seconds=interval_seconds)


@dataclass(frozen=True)
class SignalOutcome:
    """What one batch did (for logs and tests)."""

    raw: int
    kept: int
    changed: int
    saved: bool


class PipelineMetrics:
    """The pipeline's families in the worker's registry (per process; the database has the cumulative ones)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        registry = metrics.registry
        self.counters = Counter(
            "ai_telemetry_pipeline_events",
            "Pipeline counters of this worker process, by name "
            "(raw, kept, <stage>.dropped, findings, escalations, safety.*, straggler.*).",
            ["counter"],
            registry=registry,
        )
        self.open_findings = Gauge(
            "ai_telemetry_pipeline_open_findings", "Findings the worker's pipeline holds open.", registry=registry
        )
        self.failures = Counter(
            "ai_telemetry_pipeline_failures",
            "Pipeline batches that failed (logged; the poll still succeeded).",
            ["step"],
            registry=registry,
        )
        for step in ("pipeline", "database", "analysis"):
            self.failures.labels(step=step)
        for name in ("raw", "kept", "findings", "escalations", "safety.critical_suppressed"):
            self.counters.labels(counter=name)


class SignalProcessor:
    """Snapshot ▸ signals ▸ pipeline ▸ database, for every poller of one worker."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        metrics: WorkerMetrics | None = None,
        analyzer: Analyzer | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.pipeline = Pipeline(settings.pipeline, interval_seconds=settings.scheduler.poll_interval_seconds)
        self.extractors: dict[str, SignalExtractor] = {}
        """One per source: each follows its own stream of polls."""
        self.analyzer = analyzer if analyzer is not None else build_analyzer(settings.llm)
        self.metrics = PipelineMetrics(metrics) if metrics is not None else None
        self._lock = threading.Lock()
        self._loaded = False
        self._reported: dict[str, int] = {}
        """Counter values already added to the database (and to /metrics)."""
        self._unsaved: dict[int, FindingState] = {}
        self._escalations_saved: dict[int, int] = {}
        self._next_retention: datetime | None = None
        self._attempts: dict[int, int] = {}
        self._unsaved_receipts: set[ReceiptKey] = set()
        """Receipts taken in whose batch is not saved yet: cleared (and unmarked) with the next save."""
        self._next_replay: datetime | None = None

    # --- polls ------------------------------------------------------------------------------------

    def after_poll(self, snapshot: Snapshot) -> SignalOutcome | None:
        """Run one successful poll through the pipeline; never raises."""
        try:
            with self._lock:
                return self._after_poll(snapshot)
        except Exception:  # the pipeline must never fail a poll
            log.exception("signal pipeline failed for a poll of source %s", snapshot.source)
            if self.metrics is not None:
                self.metrics.failures.labels(step="pipeline").inc()
            return None

    def _after_poll(self, snapshot: Snapshot) -> SignalOutcome:
        self._load()
        self._release_resolved()
        now = utcnow()
        if self._next_replay is None or now >= self._next_replay:
            self._next_replay = now + REPLAY_EVERY
            self._replay_pending_logged(now)
        poll = observation_from_snapshot(snapshot)
        extractor = self._extractor(snapshot.source)
        signals = extractor.extract(poll)
        result = self.pipeline.process(
            signals, now=poll.taken_at, clusters=poll.clusters, interval_seconds=poll.window_seconds
        )
        saved = self._save(result.changed, poll=poll)
        return SignalOutcome(result.raw, result.kept, len(result.changed), saved)

    def process_alert(
        self, signals: Sequence[Signal], *, source: str = "alertmanager", receipts: Sequence[ReceiptKey] = ()
    ) -> SignalOutcome | None:
        """Run the signals of received alerts (``signals_from_alert``) through the same pipeline; never raises.

        ``receipts``: the stored receipts the signals came from, unmarked ``signals_pending`` when the
        batch is saved.
        """
        if not signals:
            return None
        try:
            with self._lock:
                self._load()
                return self._process_alert(signals, source, receipts)
        except Exception:
            log.exception("signal pipeline failed for alert signals from %s", source)
            if self.metrics is not None:
                self.metrics.failures.labels(step="pipeline").inc()
            return None

    def _process_alert(self, signals: Sequence[Signal], source: str, receipts: Sequence[ReceiptKey]) -> SignalOutcome:
        now = max(s.time for s in signals)
        clusters = {s.labels.get("cluster", "") for s in signals}
        result = self.pipeline.process(signals, now=now, clusters=clusters)
        self._unsaved_receipts.update(receipts)
        saved = self._save(result.changed, alert=(source, signals, now))
        return SignalOutcome(result.raw, result.kept, len(result.changed), saved)

    def replay_pending(self, now: datetime | None = None) -> int:
        """Take in the alerts whose receipts were stored but whose signals no saved batch holds; never raises.

        Those are the receipts of a worker killed between the receiver's commit and the pipeline's:
        still marked ``signals_pending`` more than :data:`REPLAY_AFTER` after they were stored.
        Returns how many receipts were replayed.
        """
        with self._lock:
            self._load()
            return self._replay_pending_logged(now or utcnow())

    def _replay_pending_logged(self, now: datetime) -> int:
        try:
            return self._replay_pending(now)
        except Exception:
            log.exception("signal pipeline: replaying pending alert receipts failed")
            if self.metrics is not None:
                self.metrics.failures.labels(step="pipeline").inc()
            return 0

    def _replay_pending(self, now: datetime) -> int:
        with Session(self.engine) as session:
            rows = session.exec(
                select(AlertReceipt)
                .where(col(AlertReceipt.signals_pending), col(AlertReceipt.received_at) < now - REPLAY_AFTER)
                .order_by(col(AlertReceipt.received_at), col(AlertReceipt.id))
                .limit(REPLAY_BATCH)
            ).all()
        receipts: list[ReceiptKey] = []
        signals: list[Signal] = []
        for row in rows:
            key = (row.fingerprint, row.starts_at, row.status)
            if key in self._unsaved_receipts:  # taken in by this worker; saved with its next batch
                continue
            alert = row.payload.get("alert") or {}
            receipts.append(key)
            signals.extend(
                signals_from_alert(alert.get("labels") or {}, alert.get("annotations"), row.status, row.starts_at)
            )
        if not receipts:
            return 0
        log.info("signal pipeline: replaying %d alert receipt(s) a stopped worker left pending", len(receipts))
        if signals:
            self._process_alert(signals, "alertmanager", receipts)
        else:
            self._unsaved_receipts.update(receipts)
            self._save([])
        return len(receipts)

    def _extractor(self, source: str) -> SignalExtractor:
        extractor = self.extractors.get(source)
        if extractor is None:
            extractor = SignalExtractor(
                self.settings.pipeline, idle_threshold_percent=self.settings.scheduler.idle_threshold_percent
            )
            self._seed_known_gpus(extractor, source)
            self.extractors[source] = extractor
        return extractor

    def _seed_known_gpus(self, extractor: SignalExtractor, source: str) -> None:
        """GPUs the inventory knows (not yet missing), so one lost while the worker was down is noticed."""
        try:
            with Session(self.engine) as session:
                rows = session.execute(
                    core_select(
                        col(Cluster.name),
                        col(Node.hostname),
                        col(Gpu.uuid),
                        col(Gpu.index),
                        col(Gpu.model),
                        col(Gpu.last_seen),
                    )
                    .join(Node, col(Node.id) == col(Gpu.node_id))
                    .join(Cluster, col(Cluster.id) == col(Node.cluster_id))
                    .join(Hub, col(Hub.id) == col(Cluster.hub_id))
                    .where(col(Hub.name) == source, col(Gpu.health) != Health.MISSING.value)
                ).all()
        except Exception:
            log.exception("could not read the inventory to seed the pipeline's known GPUs")
            return
        for cluster, node, uuid, index, model, last_seen in rows:
            extractor.remember(cluster, node, uuid, index, model, last_seen.timestamp())

    def _load(self) -> None:
        """Continue the open findings of an earlier run instead of opening duplicates."""
        if self._loaded:
            return
        with Session(self.engine) as session:
            findings = load_open_findings(session)
        for finding in findings:
            self.pipeline.correlator.adopt(finding)
            self._escalations_saved[id(finding)] = finding.escalations
        if isinstance(self.analyzer, ChatCompletionsAnalyzer):
            self.analyzer.seed(self._spent_on_analysis())
        self._loaded = True
        if findings:
            log.info("signal pipeline: continuing %d open finding(s)", len(findings))

    def _release_resolved(self) -> None:
        """Let go of the open findings a person resolved since the last batch (their conditions start afresh)."""
        followed = {f.id: f for f in self.pipeline.correlator.open.values() if f.id is not None}
        if not followed:
            return
        with Session(self.engine) as session:
            resolved = session.exec(
                select(Finding.id).where(col(Finding.id).in_(list(followed)), Finding.status == "resolved")
            ).all()
        for finding_id in resolved:
            assert finding_id is not None  # a stored row has its key
            self.pipeline.correlator.close_externally(followed[finding_id])
            self._escalations_saved.pop(id(followed[finding_id]), None)

    def _counters(self) -> dict[str, int]:
        totals = self.pipeline.counters()
        for extractor in self.extractors.values():
            for name, value in extractor.counters().items():
                totals[name] = totals.get(name, 0) + value
        if isinstance(self.analyzer, ChatCompletionsAnalyzer):
            totals.update(self.analyzer.counters())
        return totals

    def _save(
        self,
        changed: Sequence[FindingState],
        *,
        poll: PollObservation | None = None,
        alert: tuple[str, Sequence[Signal], float] | None = None,
    ) -> bool:
        for finding in changed:
            self._unsaved[id(finding)] = finding
        totals = self._counters()
        deltas = {name: value - self._reported.get(name, 0) for name, value in totals.items()}
        deltas.pop("findings.open", None)  # a level, not a count: recomputed by the readers
        now = utcnow()
        pending = list(self._unsaved.values())
        analyse_from = SEVERITY_OF[self.settings.llm.min_severity] if self.analyzer.enabled else None
        unstored = [f for f in pending if f.id is None]
        receipts = sorted(self._unsaved_receipts)
        try:
            with session_scope(self.engine) as session:
                result = save_findings(
                    session,
                    pending,
                    self.pipeline.correlator,
                    analyse_from=analyse_from,
                    escalations_before=self._escalations_saved,
                )
                add_counters(session, deltas, now)
                self._record(session, poll, alert)
                _unmark_receipts(session, receipts)
        except Exception:
            for finding in unstored:  # their rows were rolled back: insert them again next time
                finding.id = None
            log.exception("signal pipeline: writing findings and counters failed; retrying with the next batch")
            if self.metrics is not None:
                self.metrics.failures.labels(step="database").inc()
            return False
        for finding in pending:
            self._escalations_saved[id(finding)] = finding.escalations
            if not finding.is_open:
                self._escalations_saved.pop(id(finding), None)
        self._unsaved.clear()
        self._unsaved_receipts.difference_update(receipts)
        if self.metrics is not None:
            for name, delta in deltas.items():
                if delta > 0:
                    self.metrics.counters.labels(counter=name).inc(delta)
            self.metrics.open_findings.set(len(self.pipeline.correlator.open))
        self._reported = {k: v for k, v in totals.items() if k != "findings.open"}
        if result.inserted or result.released:
            log.info(
                "signal pipeline: %d finding(s) opened, %d updated, %d let go (resolved by a person)",
                result.inserted,
                result.updated,
                result.released,
            )
        return True

    def _record(
        self, session: Session, poll: PollObservation | None, alert: tuple[str, Sequence[Signal], float] | None
    ) -> None:
        """Keep the batch's input for replay, and drop what is older than the retention."""
        retention = self.settings.pipeline.input_retention_hours
        if retention <= 0:
            return
        if poll is not None:
            record_poll(session, poll)
            data_now = as_datetime(poll.taken_at)
        elif alert is not None:
            record_alert_signals(session, *alert)
            data_now = as_datetime(alert[2])
        else:
            return
        # retention follows the data's clock (the same as the wall clock, except in a backfill)
        if self._next_retention is None or data_now >= self._next_retention:
            session.flush()
            apply_input_retention(session, data_now, retention)
            self._next_retention = data_now + RETENTION_EVERY

    # --- LLM analysis -----------------------------------------------------------------------------

    def _spent_on_analysis(self) -> list[tuple[float, int]]:
        since = utcnow() - timedelta(days=1)
        with Session(self.engine) as session:
            rows = session.execute(
                select(Finding.analysis_at, Finding.analysis_tokens).where(col(Finding.analysis_at) >= since)
            ).all()
        return [(at.timestamp(), tokens or 0) for at, tokens in rows]

    def analyse_pending(self, limit: int = 5) -> int:
        """Ask the LLM about pending escalated findings, most severe first; returns how many were answered."""
        if not self.analyzer.enabled:
            return 0
        answered = 0
        with Session(self.engine) as session:
            ids = list(
                session.exec(
                    select(Finding.id)
                    .where(Finding.analysis_status == "pending")
                    .order_by(col(Finding.escalated).desc(), col(Finding.last_seen).desc())
                    .limit(limit)
                )
            )
        for finding_id in ids:
            assert finding_id is not None  # a stored row has its key
            try:
                with session_scope(self.engine) as session:
                    row = session.get(Finding, finding_id)
                    if row is None or row.analysis_status != "pending":
                        continue
                    facts = row.model_dump(
                        include={
                            "kind",
                            "subject",
                            "severity",
                            "level",
                            "summary",
                            "first_seen",
                            "last_seen",
                            "count",
                            "evidence",
                        }
                    )
                started = time.perf_counter()
                analysis = self.analyzer.analyse(facts)
                with session_scope(self.engine) as session:
                    row = session.get(Finding, finding_id)
                    if row is None:
                        continue
                    row.analysis = analysis.text
                    row.analysis_model = analysis.model[:128]
                    row.analysis_tokens = analysis.tokens
                    row.analysis_at = utcnow()
                    row.analysis_status = "done"
                answered += 1
                log.info(
                    "LLM analysis of finding %d in %.1fs (%d tokens)",
                    finding_id,
                    time.perf_counter() - started,
                    analysis.tokens,
                )
            except LlmBudgetExceeded as exc:
                log.info("LLM analysis deferred: %s", exc)
                break
            except LlmError as exc:
                attempts = self._attempts.get(finding_id, 0) + 1
                self._attempts[finding_id] = attempts
                log.warning("LLM analysis of finding %d failed (attempt %d): %s", finding_id, attempts, exc)
                if self.metrics is not None:
                    self.metrics.failures.labels(step="analysis").inc()
                if attempts >= MAX_ANALYSIS_ATTEMPTS:
                    self._give_up(finding_id)
                break
            except Exception:
                log.exception("LLM analysis of finding %d failed", finding_id)
                break
        return answered

    def _give_up(self, finding_id: int) -> None:
        try:
            with session_scope(self.engine) as session:
                row = session.get(Finding, finding_id)
                if row is not None:
                    row.analysis_status = "failed"
                    row.analysis_at = utcnow()
        except Exception:
            log.exception("could not mark the analysis of finding %d failed", finding_id)


def _unmark_receipts(session: Session, receipts: Sequence[ReceiptKey]) -> None:
    """Clear ``signals_pending`` of receipts whose signals the batch being saved holds."""
    table = table_of(AlertReceipt)
    key = tuple_(table.c.fingerprint, table.c.starts_at, table.c.status)
    for start in range(0, len(receipts), REPLAY_BATCH):
        chunk = receipts[start : start + REPLAY_BATCH]
        session.execute(update(table).where(key.in_(chunk)).values(signals_pending=False))
