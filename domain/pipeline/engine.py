"""The pipeline in one object: signals in, findings out, counters all along.

:class:`Pipeline` is pure (no database, no clock, no network): the worker feeds it each poll's
signals with :meth:`Pipeline.process`, replay and the benchmark feed it a long stream with
:meth:`Pipeline.feed`. Both run the same code::

    signals ─▶ filters (drop healthy ▸ dedupe ▸ persistence ▸ flap damping ▸ rate limit)
            ─▶ correlation (GPU ▸ node ▸ workload ▸ cluster) ─▶ findings ─▶ escalations

Every non-OK signal refreshes the finding its key belongs to (``last_seen``, ``count``, idle
GPU-hours) even when a filter drops it, so a finding stays open exactly as long as its condition
lasts. :meth:`Pipeline.counters` gives the cumulative figures, including the compression
(raw signals / escalations).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from domain.pipeline.correlation import Correlator, FindingState
from domain.pipeline.filters import FilterChain, KeyState
from domain.pipeline.signals import CRITICAL, IDLE_ALLOCATED, Signal
from domain.settings import PipelineSettings

FORGET_EVERY_SECONDS = 300.0
"""How often (in signal time) quiet filter state is dropped, bounding memory on endless streams."""


@dataclass(frozen=True)
class BatchResult:
    """What one :meth:`Pipeline.process` call did."""

    raw: int
    kept: int
    changed: list[FindingState]
    """Findings opened, updated, escalated or resolved by this batch (and earlier undrained ones)."""


def compression(raw: int, escalations: int) -> float | None:
    """Raw signals per escalation, cumulative; None before the first escalation."""
    return raw / escalations if escalations else None


class Pipeline:
    """Filters, correlation and findings with their state; not thread-safe (callers hold a lock)."""

    def __init__(self, settings: PipelineSettings, *, interval_seconds: float = 30.0) -> None:
        self.settings = settings
        self.filters = FilterChain(settings)
        self.correlator = Correlator(settings)
        self._changed = self.correlator.changed
        self.interval = 0.0
        self.set_interval(interval_seconds)
        self._next_forget: float | None = None
        self._pending: list[KeyState] = []
        self._tick: float | None = None
        self._silence_floor = 0.0
        self._silence_floor_until = 0.0

    def set_interval(self, seconds: float) -> None:
        if seconds > 0 and seconds != self.interval:
            self.interval = seconds
            self.filters.set_interval(seconds)
            self.correlator.set_interval(seconds)

    # --- one signal ------------------------------------------------------------------------------

    def _one(self, signal: Signal) -> None:
        state = self.filters.observe(signal)
        if state is None:
            return
        finding = state.finding
        if finding is not None and finding.is_open:
            if state.gap > 0:
                if state.kind == IDLE_ALLOCATED:
                    finding.waste_gpu_seconds += min(state.gap, self.filters.gap_tolerance) * state.weight
                if signal.time > finding.last_seen:
                    finding.last_seen = signal.time
                    self._changed[id(finding)] = finding  # to be stored again: last seen, count, waste
            finding.count += 1
        if self.filters.admit(signal, state):
            self._pending.append(state)
        elif signal.severity == CRITICAL:
            self.filters.suppressed(signal)

    # --- batches (the worker: one poll at a time) -------------------------------------------------

    def process(
        self,
        signals: Iterable[Signal],
        *,
        now: float,
        clusters: Collection[str] | None = None,
        interval_seconds: float | None = None,
    ) -> BatchResult:
        """Run one poll's (or one alert's) signals; resolve silent findings of ``clusters`` (None: all)."""
        if interval_seconds:
            if interval_seconds < self.interval:
                # polls got more frequent (e.g. a backfill at rollup spacing, then live polls): findings
                # last seen at the old spacing get the old silence before they count as resolved
                self._silence_floor = self.settings.resolve_after_polls * self.interval
                self._silence_floor_until = now + self._silence_floor
            self.set_interval(interval_seconds)
        raw_before, kept_before = self.filters.raw, self.filters.kept
        one = self._one
        for signal in signals:
            one(signal)
        self._flush(now)
        self._resolve(now, clusters)
        return BatchResult(self.filters.raw - raw_before, self.filters.kept - kept_before, self.correlator.drain())

    # --- streams (replay, benchmark) -------------------------------------------------------------

    def feed(self, stream: Iterable[Signal], *, clusters: Collection[str] | None = None) -> None:
        """Run a time-ordered stream; each new timestamp closes the previous tick (correlate, resolve).

        Nothing is buffered beyond the current tick's kept signals, so the stream can be endless.
        Call :meth:`finish` after the last signal.
        """
        one = self._one
        tick = self._tick
        for signal in stream:
            t = signal.time
            if t != tick:
                if tick is not None and t > tick:
                    self._flush(tick)
                    self._resolve(tick, clusters)
                tick = t
            one(signal)
        self._tick = tick

    def finish(self, *, clusters: Collection[str] | None = None) -> None:
        """Close the last tick of :meth:`feed`."""
        if self._tick is not None:
            self._flush(self._tick)
            self._resolve(self._tick, clusters)

    # --- internals --------------------------------------------------------------------------------

    def _flush(self, now: float) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.correlator.flush(pending, now)

    def _resolve(self, now: float, clusters: Collection[str] | None) -> None:
        silence = self.settings.resolve_after_polls * self.interval
        if now < self._silence_floor_until:
            silence = max(silence, self._silence_floor)
        flap_silence = max(silence, self.settings.flap_window_seconds)
        if self.filters.cleared:
            cleared, self.filters.cleared = self.filters.cleared, []
            self.correlator.resolve_cleared(cleared, now)
        self.correlator.resolve_silent(
            now, clusters, silence, flap_silence, alert_silence=self.settings.alert_resolve_after_seconds
        )
        if self._next_forget is None:
            self._next_forget = now + FORGET_EVERY_SECONDS
        elif now >= self._next_forget:
            self.filters.forget(now)
            self._next_forget = now + FORGET_EVERY_SECONDS

    # --- reading ----------------------------------------------------------------------------------

    def drain(self) -> list[FindingState]:
        return self.correlator.drain()

    def open_findings(self) -> list[FindingState]:
        return list(self.correlator.open.values())

    def counters(self) -> dict[str, int]:
        """Cumulative counters of every stage (names like ``dedupe.dropped``, ``safety.*``)."""
        return {**self.filters.counters(), **self.correlator.counters()}

    def compression(self) -> float | None:
        return compression(self.filters.raw, self.correlator.escalations)
