"""The signal pipeline's entry points besides the polls: the LLM analysis job and replay input.

The processor itself (:class:`~worker.pipeline.processor.SignalProcessor`) runs after every poll and
webhook; :func:`analyse_pending` is the scheduler's job when an LLM is configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from domain.pipeline.extract import PollObservation
from domain.pipeline.llm import LlmBudgetExceeded, LlmError
from domain.pipeline.records import POLL, RecordedInput
from worker.areas import ScheduledJob, WorkerContext
from worker.pipeline import store
from worker.pipeline.rules import MAX_ANALYSIS_ATTEMPTS
from worker.sources import Source

if TYPE_CHECKING:
    from worker.pipeline.processor import SignalProcessor

log = logging.getLogger(__name__)


def analyse_pending(processor: SignalProcessor, limit: int = 5) -> int:
    """Ask the LLM about pending escalated findings, most severe first; returns how many were answered."""
    analyzer = processor.analyzer
    if not analyzer.enabled:
        return 0
    engine = processor.engine
    answered = 0
    for finding_id in store.pending_analyses(engine, limit):
        try:
            facts = store.analysis_facts(engine, finding_id)
            if facts is None:
                continue
            started = time.perf_counter()
            analysis = analyzer.analyse(facts)
            if not store.save_analysis(engine, finding_id, analysis):
                continue
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
            attempts = processor.analysis_attempts.get(finding_id, 0) + 1
            processor.analysis_attempts[finding_id] = attempts
            log.warning("LLM analysis of finding %d failed (attempt %d): %s", finding_id, attempts, exc)
            if processor.metrics is not None:
                processor.metrics.failures.labels(step="analysis").inc()
            if attempts >= MAX_ANALYSIS_ATTEMPTS:
                store.give_up_analysis(engine, finding_id)
            break
        except Exception:
            log.exception("LLM analysis of finding %d failed", finding_id)
            break
    return answered


def simulated_inputs(source: Source, start: datetime, hours: float, interval_seconds: float) -> Iterator[RecordedInput]:
    """Poll ``source`` (e.g. the simulator) over a stretch of time, as replay input; nothing is stored."""
    moment, end = start, start + timedelta(hours=hours)
    while moment <= end:
        poll = PollObservation.of(source.poll(moment, interval_seconds))
        yield RecordedInput(POLL, poll.source, poll.taken_at, poll.window_seconds, poll=poll)
        moment += timedelta(seconds=interval_seconds)


def jobs(context: WorkerContext) -> list[ScheduledJob]:
    """The LLM analysis of escalated findings, when the pipeline runs and an analyzer is configured."""
    signals = context.signals
    if signals is None or not signals.analyzer.enabled:
        return []
    interval = context.settings.llm.interval_seconds
    return [
        ScheduledJob(
            id="llm-analysis",
            name="LLM analysis of escalated findings",
            run=signals.analyse_pending,
            interval_seconds=interval,
            first_run_after=timedelta(seconds=interval),
        )
    ]
