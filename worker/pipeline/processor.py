"""The worker's signal processor: each successful poll's snapshot becomes signals, findings, counters.

One :class:`SignalProcessor` per worker, shared by every poller (a lock keeps batches apart). After
a poll has written the inventory, :meth:`SignalProcessor.after_poll`:

1. takes the snapshot as a :class:`~domain.pipeline.extract.PollObservation` (its readings, timed in Unix seconds);
2. extracts the signals and runs them through the pipeline (filters, correlation, findings);
3. in one transaction of its own: writes the findings that changed, adds the counters' increments
   to the cumulative ones, records the poll for replay, and applies the record's retention;
4. counts into the worker's ``/metrics``.

It never raises: a pipeline failure is logged and counted, and the poll it followed stays a
success. Findings and counter increments that could not be written are kept and written with the
next batch. :meth:`analyse_pending` (a scheduler job, when an LLM is configured;
:mod:`worker.pipeline.jobs`) asks the LLM about escalated findings, within its rate and budget.

Alerts come in through :meth:`SignalProcessor.process_alert`, after the receiver has committed their
receipts marked ``signals_pending``; the transaction that saves the batch clears the mark. A worker
killed in between leaves the mark set, and :meth:`SignalProcessor.replay_pending` (run with the polls,
every :data:`REPLAY_EVERY`) takes in the receipts left pending longer than :data:`REPLAY_AFTER`, so
an alert is never lost between its receipt and its finding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from domain.database import session_scope
from domain.models import utcnow
from domain.pipeline.correlation import FindingState
from domain.pipeline.engine import Pipeline
from domain.pipeline.extract import PollObservation, SignalExtractor
from domain.pipeline.findings import add_counters, as_datetime, save_findings
from domain.pipeline.llm import Analyzer, build_analyzer
from domain.pipeline.records import apply_input_retention, record_alert_signals, record_poll
from domain.pipeline.signals import SEVERITY_OF, Signal
from domain.settings import Settings
from domain.telemetry.readings import Snapshot
from worker.metrics import WorkerMetrics
from worker.pipeline import store
from worker.pipeline.jobs import analyse_pending
from worker.pipeline.metrics import PipelineMetrics
from worker.pipeline.rules import (
    REPLAY_AFTER,
    REPLAY_BATCH,
    REPLAY_EVERY,
    RETENTION_EVERY,
    ReceiptKey,
    SignalOutcome,
    counter_deltas,
    receipt_signals,
)

log = logging.getLogger(__name__)


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
        self.analysis_attempts: dict[int, int] = {}
        """Failed LLM attempts per finding (:func:`~worker.pipeline.jobs.analyse_pending`)."""
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
        poll = PollObservation.of(snapshot)
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
        rows = store.pending_receipts(self.engine, older_than=now - REPLAY_AFTER, limit=REPLAY_BATCH)
        receipts: list[ReceiptKey] = []
        signals: list[Signal] = []
        for row in rows:
            key = (row.fingerprint, row.starts_at, row.status)
            if key in self._unsaved_receipts:  # taken in by this worker; saved with its next batch
                continue
            receipts.append(key)
            signals.extend(receipt_signals(row.payload, row.status, row.starts_at))
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
                self.settings.pipeline,
                idle_threshold_percent=self.settings.scheduler.idle_threshold_percent,
                missing_after_seconds=self.settings.scheduler.missing_after_seconds,
            )
            self._seed_known_gpus(extractor, source)
            self.extractors[source] = extractor
        return extractor

    def _seed_known_gpus(self, extractor: SignalExtractor, source: str) -> None:
        """GPUs the inventory knows (not yet missing), so one lost while the worker was down is noticed."""
        try:
            rows = store.known_gpus(self.engine, source)
        except Exception:
            log.exception("could not read the inventory to seed the pipeline's known GPUs")
            return
        for cluster, node, uuid, index, model, last_seen in rows:
            extractor.remember(cluster, node, uuid, index, model, last_seen.timestamp())

    def _load(self) -> None:
        """Continue the open findings of an earlier run instead of opening duplicates."""
        if self._loaded:
            return
        findings = store.open_findings(self.engine)
        for finding in findings:
            self.pipeline.correlator.adopt(finding)
            self._escalations_saved[id(finding)] = finding.escalations
        if self.analyzer.enabled:
            self.analyzer.seed(store.spent_on_analysis(self.engine, since=utcnow() - timedelta(days=1)))
        self._loaded = True
        if findings:
            log.info("signal pipeline: continuing %d open finding(s)", len(findings))

    def _release_resolved(self) -> None:
        """Let go of the open findings a person resolved since the last batch (their conditions start afresh)."""
        followed = {f.id: f for f in self.pipeline.correlator.open.values() if f.id is not None}
        if not followed:
            return
        for finding_id in store.resolved_findings(self.engine, list(followed)):
            self.pipeline.correlator.close_externally(followed[finding_id])
            self._escalations_saved.pop(id(followed[finding_id]), None)

    def _counters(self) -> dict[str, int]:
        totals = self.pipeline.counters()
        for extractor in self.extractors.values():
            for name, value in extractor.counters().items():
                totals[name] = totals.get(name, 0) + value
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
        deltas = counter_deltas(totals, self._reported)
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
                store.unmark_receipts(session, receipts)
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

    def analyse_pending(self, limit: int = 5) -> int:
        """Ask the LLM about pending escalated findings (:func:`worker.pipeline.jobs.analyse_pending`)."""
        return analyse_pending(self, limit)
