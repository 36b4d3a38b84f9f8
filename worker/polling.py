"""One poller per source: read the source, write inventory and rollups in one transaction, back off on failure.

A poll that fails as a whole (the source raised, timed out or answered garbage) changes nothing
but the clusters' status: they go stale with the reason, and the poller waits exponentially
longer before trying again (the interval, doubling, capped), so a broken Prometheus is not
hammered and never delays other sources, which have pollers of their own. A database error is
logged and counted; it never escapes, so the scheduler's thread keeps running.

Several worker replicas may share one PostgreSQL database. Each poll of a source is then taken
under a transaction-level advisory lock keyed by the source's name (:func:`source_turn`), held on
a connection of its own from before the source is read until the poll's writes are committed: a
replica that finds the lock taken skips the poll (outcome ``locked``), and so does one that finds
the source polled by another replica less than :data:`RECENT_FRACTION` of an interval ago, so every
interval has one poll, not one per replica. The lock dies with its connection, so a replica that
dies hands its sources to the others within about one interval. SQLite is single-process: no lock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from domain.database import session_scope
from domain.inventory.health import DEGRADED_TEMPERATURE_C
from domain.ledger import BACKFILLED, UNACCOUNTED, Window, plan_windows
from domain.models import Hub, utcnow
from domain.settings import SchedulerSettings
from worker.areas import ScheduledJob, WorkerContext
from worker.inventory import InventoryChanges, InventoryIds, apply_snapshot, load_inventory, mark_source_failed
from worker.inventory.store import Existing
from worker.ledger import CursorMoved, Known, WindowResult, account_window, known_before, read_cursor
from worker.memory import gc_paused, release_free_memory
from worker.metrics import WorkerMetrics
from worker.pipeline.processor import SignalProcessor
from worker.sources import Snapshot, Source, SourceError
from worker.tracing import NullWorkloadTracer, WorkloadTracer
from worker.workloads.jobs import OpenWorkloads, apply_plan, load_open, plan_poll, read_for_poll
from worker.workloads.rules import WorkloadChanges
from worker.workloads.samples import PollPlan

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 600.0
BACKOFF_FACTOR_CAP = 10
"""Backoff never exceeds this many intervals, nor :data:`MAX_BACKOFF_SECONDS` (unless one interval does)."""


RECENT_FRACTION = 0.9
"""A source polled (by any replica) less than this many intervals ago is not polled again."""
LOCK_NAMESPACE = "ai-telemetry:source:"


def advisory_key(source: str) -> int:
    """The PostgreSQL advisory lock key (signed 64 bits) of a source name."""
    digest = hashlib.blake2b(f"{LOCK_NAMESPACE}{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class Turn:
    """Whether this replica may poll a source now, and when anyone last polled it."""

    acquired: bool
    last_poll_at: datetime | None = None
    last_polled_by: str | None = None
    """The replica that polled the source last (with :attr:`last_poll_at`)."""
    exclusive: bool = False
    """True when held under a PostgreSQL advisory lock (False on SQLite or with the database down)."""


@contextmanager
def source_turn(engine: Engine, source: str) -> Iterator[Turn]:
    """Hold the source's advisory lock for the duration of the block, if another replica does not.

    On PostgreSQL, ``pg_try_advisory_xact_lock`` on a connection of its own, released when its
    transaction ends at the end of the block (or when the connection dies with the process). On
    SQLite, or when the database cannot be reached (nothing can be written then, by anyone), the
    turn is granted without a lock.
    """
    if engine.dialect.name != "postgresql":
        yield Turn(acquired=True)
        return
    try:
        connection = engine.connect()
    except Exception:  # database down: the poll goes ahead and its write fails, counted as db_error
        log.warning("source %s: cannot reach the database to take the poll lock", source, exc_info=True)
        yield Turn(acquired=True)
        return
    with connection:
        transaction = connection.begin()
        try:
            locked = connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": advisory_key(source)})
            acquired = bool(locked.scalar())
            last, by = None, None
            if acquired:
                row = connection.execute(
                    select(col(Hub.last_poll_at), col(Hub.last_polled_by)).where(Hub.name == source)
                ).first()
                last, by = row if row is not None else (None, None)
        except Exception:
            transaction.rollback()
            log.warning("source %s: taking the poll lock failed; polling without it", source, exc_info=True)
            granted = Turn(acquired=True)
        else:
            granted = Turn(acquired=acquired, last_poll_at=last, last_polled_by=by, exclusive=True)
        try:
            yield granted
        finally:
            if transaction.is_active:
                transaction.rollback()  # releases the advisory lock


def backoff_seconds(interval_seconds: float, consecutive_failures: int) -> float:
    """Delay before the next attempt: one interval after the first failure, doubling, capped."""
    if consecutive_failures <= 0:
        return interval_seconds
    cap = max(interval_seconds, min(BACKOFF_FACTOR_CAP * interval_seconds, MAX_BACKOFF_SECONDS))
    return min(interval_seconds * 2 ** (consecutive_failures - 1), cap)


@dataclass(frozen=True)
class PollerState:
    """What the worker knows about one source, for ``/metrics``, logs and the command line."""

    source: str
    kind: str
    interval_seconds: float
    consecutive_failures: int = 0
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    next_attempt_at: datetime | None = None
    """While backing off: scheduled polls before this time are skipped."""
    last_duration_seconds: float | None = None
    last_rows_written: int = 0
    last_changes: InventoryChanges | None = None
    polls: int = 0
    failures: int = 0


@dataclass(frozen=True)
class PollOutcome:
    """The result of one :meth:`SourcePoller.poll_once` call."""

    outcome: str
    """``success``, ``source_error``, ``db_error``, ``skipped`` (backing off) or ``locked`` (another
    replica is polling the source, or polled it less than an interval ago)."""
    changes: InventoryChanges | None = None
    rollup_rows: int = 0
    error: str | None = None
    workloads: WorkloadChanges | None = None
    """Workloads the poll opened, sampled and closed (None when the workload step failed)."""
    windows: tuple[Window, ...] = ()
    """The ledger windows the poll accounted, oldest first (back-filled and unaccounted ones included)."""


def ensure_hub(
    session: Session, source: Source, *, polled_at: datetime | None = None, replica: str | None = None
) -> Hub:
    """The source's Hub row, created on first use and kept in line with the configuration.

    ``polled_at``/``replica`` record a poll (successful or not), which other replicas read.
    """
    hub = session.exec(select(Hub).where(Hub.name == source.name)).first()
    if hub is None:
        hub = Hub(name=source.name, kind=source.kind, url=source.url)
        session.add(hub)
    elif hub.kind != source.kind or hub.url != source.url:
        hub.kind = source.kind
        hub.url = source.url
    if polled_at is not None:
        hub.last_poll_at = polled_at
        hub.last_polled_by = replica
    session.flush()
    return hub


class _SourceFailed(Exception):
    """Carries a source's failure out of the reader thread, apart from database errors."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class SourcePoller:
    """Polls one source into the database; safe to call from the scheduler and by hand at once."""

    def __init__(
        self,
        source: Source,
        engine: Engine,
        settings: SchedulerSettings,
        *,
        interval_seconds: float | None = None,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        tracer: WorkloadTracer | None = None,
        signals: SignalProcessor | None = None,
        first_lookback_seconds: float | None = None,
        hot_threshold_c: float | None = None,
    ) -> None:
        self.source = source
        if hot_threshold_c is None:  # the pipeline's threshold, so a hot badge and a thermal finding agree
            hot_threshold_c = signals.settings.pipeline.thermal_threshold_c if signals else DEGRADED_TEMPERATURE_C
        self.hot_threshold_c = hot_threshold_c
        """The temperature from which a GPU's health is degraded."""
        self.first_lookback_seconds = first_lookback_seconds
        """How far back the first poll of a hub never accounted reaches (default one interval; the demo: hours)."""
        self.tracer: WorkloadTracer = tracer or NullWorkloadTracer()
        self.signals = signals
        """The signal pipeline, run after each successful poll (its failures never fail the poll)."""
        self.engine = engine
        self.settings = settings
        self.interval_seconds = interval_seconds or settings.poll_interval_seconds
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._beside = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"poll-{source.name}")
        """Runs the source read while the database rows load, then the workloads' plan while the ledger writes."""
        self._state = PollerState(source=source.name, kind=source.kind, interval_seconds=self.interval_seconds)
        if metrics is not None:
            metrics.register_source(source.name)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def state(self) -> PollerState:
        """A consistent copy of the poller's state."""
        return self._state

    def is_due(self, now: datetime) -> bool:
        """False while backing off. Half an interval of slack lets the matching scheduler tick through."""
        next_at = self._state.next_attempt_at
        return next_at is None or now + timedelta(seconds=self.interval_seconds / 2) >= next_at

    def poll_once(self, now: datetime | None = None, *, force: bool = False) -> PollOutcome:
        """Poll the source once, unless it is backing off (``force`` ignores the backoff).

        Never raises: every failure is logged, counted and reflected in :attr:`state`.
        """
        with self._lock:
            now = now or self._clock()
            if not force and not self.is_due(now):
                self._record("skipped")
                return PollOutcome("skipped")
            with source_turn(self.engine, self.name) as turn:
                if not turn.acquired or (not force and self._polled_recently(now, turn)):
                    self._record("locked")
                    return PollOutcome("locked")
                try:
                    with gc_paused():  # the poll's objects live until it ends: sweeping them meanwhile finds nothing
                        return self._poll(now)
                finally:
                    release_free_memory()  # the poll's answers and rows are garbage now: hand the pages back

    def _polled_recently(self, now: datetime, turn: Turn) -> bool:
        """Another replica polled less than :data:`RECENT_FRACTION` of an interval ago (either side, for skew).

        This replica's own last poll never counts: its scheduler runs one poll at a time, and a poll that
        overran the interval is followed at once by a catch-up poll, whose next tick must not be dropped.
        """
        if turn.last_poll_at is None or turn.last_polled_by == self.settings.replica:
            return False
        return abs((now - turn.last_poll_at).total_seconds()) < RECENT_FRACTION * self.interval_seconds

    def _poll(self, now: datetime) -> PollOutcome:
        """Account the time since the hub's cursor: back-filled chunks and unaccounted time first, each
        in a transaction of its own, then the poll's own window with the inventory (docs/ledger.md).

        Reading a large source is mostly waiting for it to evaluate the queries; without a gap to
        fill, the database rows the poll compares against are loaded meanwhile.
        """
        started = time.perf_counter()
        try:
            with session_scope(self.engine) as session:
                cursor = read_cursor(session, self.name)
        except Exception as exc:  # the database is down; the source's own failure, if any, is what counts
            try:
                self._read(now, self.interval_seconds)
            except _SourceFailed as failed:
                return self._source_failed(now, failed.cause, time.perf_counter() - started)
            return self._db_failed(now, exc, started)
        return self._poll_from(now, cursor, started)

    def _poll_from(self, now: datetime, cursor: datetime | None, started: float) -> PollOutcome:
        windows = plan_windows(
            cursor,
            now,
            interval_seconds=self.interval_seconds,
            horizon_seconds=self.settings.backfill_horizon_seconds,
            chunk_seconds=self.settings.backfill_chunk_seconds,
            first_lookback_seconds=self.first_lookback_seconds,
        )
        live = windows[-1] if windows else None
        reading = self._beside.submit(self._read, now, live.seconds if live else self.interval_seconds)
        results: list[WindowResult] = []
        try:
            if len(windows) > 1:
                reading.result()  # the source answers now: fill the gap from its history
                for window in windows[:-1]:
                    done = self._account_past(window, cursor)
                    if done is None:
                        self._counted(results)
                        return self._lost_race(now, started)
                    results.append(done)
                    cursor = window.end
            with session_scope(self.engine) as session:
                hub = ensure_hub(session, self.source, polled_at=now, replica=self.settings.replica)
                existing = load_inventory(session, hub.id or 0)
                open_workloads = load_open(session, existing.clusters)
                snapshot = reading.result()
                known = known_before(session, hub, existing.gpus, snapshot, missing_after=self._missing_after)
                changes = self._apply_inventory(session, hub, snapshot, existing)
                planned = self._plan_workloads(session, hub, snapshot, open_workloads)
                if live is not None:
                    results.append(self._account(session, hub, live, cursor, snapshot, known, changes.ids))
                workloads = self._apply_workloads(session, snapshot, planned)
        except _SourceFailed as failed:
            self._counted(results)
            return self._source_failed(now, failed.cause, time.perf_counter() - started)
        except CursorMoved as moved:
            self._counted(results)
            log.info("source %s: %s", self.name, moved)
            return self._lost_race(now, started)
        except Exception as exc:  # database down, constraint race, or a bug: log, count, carry on
            self._counted(results)
            try:  # the source's own failure, if it failed too, is what the poll reports
                reading.result()
            except _SourceFailed as failed:
                return self._source_failed(now, failed.cause, time.perf_counter() - started)
            return self._db_failed(now, exc, started)
        self._counted(results)
        self._workloads_done(workloads)
        if self.signals is not None:
            self.signals.after_poll(snapshot)  # logs and counts its own failures; never raises
        rollup_rows = sum(r.rollup_rows for r in results)
        outcome = self._succeeded(now, snapshot, changes, rollup_rows, time.perf_counter() - started)
        return replace(outcome, workloads=workloads, windows=tuple(r.window for r in results))

    @property
    def _missing_after(self) -> timedelta:
        return timedelta(seconds=self.settings.missing_after_seconds)

    def _account(
        self,
        session: Session,
        hub: Hub,
        window: Window,
        cursor: datetime | None,
        snapshot: Snapshot | None,
        known: Known,
        ids: InventoryIds | None = None,
    ) -> WindowResult:
        return account_window(
            session,
            hub,
            window,
            cursor,
            snapshot,
            known,
            bucket_seconds=self.settings.rollup_bucket_seconds,
            idle_threshold_percent=self.settings.idle_threshold_percent,
            replica=self.settings.replica,
            ids=ids,
        )

    def _account_past(self, window: Window, cursor: datetime | None) -> WindowResult | None:
        """One window before the poll's own: a chunk read from the source's history over exactly the
        chunk (unaccounted if the source cannot answer for it), applied like a poll of that moment.
        None when another replica accounted it first."""
        snapshot: Snapshot | None = None
        if window.kind == BACKFILLED:
            try:
                snapshot = self._read(window.end, window.seconds)
            except _SourceFailed as failed:
                log.warning(
                    "source %s: back-filling %s to %s failed, recorded as unaccounted: %s",
                    self.name,
                    window.start.isoformat(),
                    window.end.isoformat(),
                    _describe(failed.cause),
                )
                window = Window(window.start, window.end, UNACCOUNTED)
        elif window.kind == UNACCOUNTED:
            log.warning(
                "source %s: %s to %s is past the back-fill horizon (%.0f s), recorded as unaccounted",
                self.name,
                window.start.isoformat(),
                window.end.isoformat(),
                self.settings.backfill_horizon_seconds,
            )
        workloads: WorkloadChanges | None = None
        try:
            with session_scope(self.engine) as session:
                hub = ensure_hub(session, self.source)
                existing = load_inventory(session, hub.id or 0)
                known = known_before(session, hub, existing.gpus, snapshot, missing_after=self._missing_after)
                ids = self._apply_inventory(session, hub, snapshot, existing).ids if snapshot is not None else None
                result = self._account(session, hub, window, cursor, snapshot, known, ids)
                if snapshot is not None:
                    workloads = self._apply_workloads(session, snapshot, self._plan_workloads(session, hub, snapshot))
        except CursorMoved as moved:
            log.info("source %s: %s", self.name, moved)
            return None
        self._workloads_done(workloads)
        if snapshot is not None and self.signals is not None:
            self.signals.after_poll(snapshot)
        return result

    def _counted(self, results: list[WindowResult]) -> None:
        """Committed windows go to the ledger's counters (each exactly once)."""
        for result in results:
            log.debug(
                "source %s: accounted %s window %s to %s: %d GPUs, %.0f GPU-seconds unaccounted",
                self.name,
                result.window.kind,
                result.window.start.isoformat(),
                result.window.end.isoformat(),
                result.gpu_count,
                result.gpu_seconds_unaccounted,
            )
            if self.metrics is not None:
                self.metrics.record_ledger_window(self.name, result)

    def _lost_race(self, now: datetime, started: float) -> PollOutcome:
        """Another replica accounted this time first; this poll's writes were rolled back."""
        self._state = replace(self._state, last_attempt_at=now, last_duration_seconds=time.perf_counter() - started)
        self._record("locked", time.perf_counter() - started)
        return PollOutcome("locked")

    def _db_failed(self, now: datetime, exc: Exception, started: float) -> PollOutcome:
        duration = time.perf_counter() - started
        log.error("poll of source %s: writing to the database failed", self.name, exc_info=exc)
        self._state = replace(
            self._state,
            last_attempt_at=now,
            last_error=f"database: {_describe(exc)}",
            last_duration_seconds=duration,
            polls=self._state.polls + 1,
            failures=self._state.failures + 1,
        )
        self._record("db_error", duration)
        return PollOutcome("db_error", error=_describe(exc))

    def _read(self, now: datetime, window_seconds: float) -> Snapshot:
        """The source's snapshot at ``now`` over ``window_seconds``; failures come back as :class:`_SourceFailed`."""
        try:
            snapshot = self.source.poll(now, window_seconds)
            if not isinstance(snapshot, Snapshot):
                raise SourceError(f"source returned {type(snapshot).__name__}, not a Snapshot")
        except Exception as exc:  # a source may fail in any way; it must not stop the worker
            raise _SourceFailed(exc) from exc
        return snapshot

    def _apply_inventory(self, session: Session, hub: Hub, snapshot: Snapshot, existing: Existing) -> InventoryChanges:
        return apply_snapshot(
            session,
            hub,
            snapshot,
            missing_after=self._missing_after,
            existing=existing,
            hot_threshold_c=self.hot_threshold_c,
        )

    def _plan_workloads(
        self, session: Session, hub: Hub, snapshot: Snapshot, loaded: OpenWorkloads | None = None
    ) -> Future[PollPlan] | None:
        """Read what the workloads' plan needs and start it beside the caller, so the Python of thousands
        of samples runs while the ledger waits on the database; None when the reads failed."""
        try:
            with session.begin_nested():
                reads = read_for_poll(session, hub, snapshot, loaded)
        except Exception:
            log.exception("poll of source %s: reading workloads failed", self.name)
            return None
        return self._beside.submit(
            plan_poll,
            reads,
            snapshot,
            idle_threshold_percent=self.settings.idle_threshold_percent,
            hot_threshold_c=self.hot_threshold_c,
        )

    def _apply_workloads(
        self, session: Session, snapshot: Snapshot, planned: Future[PollPlan] | None
    ) -> WorkloadChanges | None:
        """Workloads in a savepoint: if they fail (or lose a race with a webhook), the poll's
        inventory and rollups still commit, and the next poll catches the workloads up."""
        if planned is None:
            return None
        try:
            plan = planned.result()
            with session.begin_nested():
                return apply_plan(session, plan, snapshot)
        except Exception:
            log.exception("poll of source %s: updating workloads failed", self.name)
            return None

    def _workloads_done(self, workloads: WorkloadChanges | None) -> None:
        if workloads is None:
            return
        if self.metrics is not None:
            self.metrics.record_workloads("poll", opened=workloads.opened, closed=len(workloads.closed))
        if workloads.closed:
            self.tracer.emit(workloads.closed)

    def _succeeded(
        self, now: datetime, snapshot: Snapshot, changes: InventoryChanges, rollup_rows: int, duration: float
    ) -> PollOutcome:
        if self._state.consecutive_failures:
            log.info("source %s recovered after %d failed poll(s)", self.name, self._state.consecutive_failures)
        for warning in snapshot.warnings:
            log.warning("source %s: %s", self.name, warning)
        self._state = replace(
            self._state,
            consecutive_failures=0,
            last_error=None,
            last_attempt_at=now,
            last_success_at=now,
            next_attempt_at=None,
            last_duration_seconds=duration,
            last_rows_written=changes.rows_written + rollup_rows,
            last_changes=changes,
            polls=self._state.polls + 1,
        )
        log.debug(
            "source %s polled in %.3fs: %d GPUs, %d inventory rows, %d rollup rows",
            self.name,
            duration,
            len(snapshot.gpus),
            changes.rows_written,
            rollup_rows,
        )
        if self.metrics is not None:
            self.metrics.record_error(self.name, None)
            self.metrics.record_rows(self.name, inventory=changes.rows_written, rollup=rollup_rows)
            self.metrics.record_clusters(self.name, ((c, "ok") for c in dict.fromkeys(snapshot.clusters)))
        self._record("success", duration)
        return PollOutcome("success", changes=changes, rollup_rows=rollup_rows)

    def _source_failed(self, now: datetime, exc: Exception, duration: float) -> PollOutcome:
        reason = _describe(exc)
        failures = self._state.consecutive_failures + 1
        delay = backoff_seconds(self.interval_seconds, failures)
        if isinstance(exc, SourceError):
            log.warning("poll of source %s failed (%d in a row, next in %.0fs): %s", self.name, failures, delay, reason)
        else:
            log.warning(
                "poll of source %s failed unexpectedly (%d in a row, next in %.0fs)",
                self.name,
                failures,
                delay,
                exc_info=exc,
            )
        self._state = replace(
            self._state,
            consecutive_failures=failures,
            last_error=reason,
            last_attempt_at=now,
            next_attempt_at=now + timedelta(seconds=delay),
            last_duration_seconds=duration,
            polls=self._state.polls + 1,
            failures=self._state.failures + 1,
        )
        statuses: list[tuple[str, str]] = []
        try:
            with session_scope(self.engine) as session:
                hub = ensure_hub(session, self.source, polled_at=now, replica=self.settings.replica)
                clusters = mark_source_failed(session, hub, reason, now, consecutive_failures=failures)
                statuses = [(c.name, c.status) for c in clusters]
        except Exception:  # the database may be down too; the poll outcome is still the source's
            log.exception("source %s: could not record the failed poll in the database", self.name)
        if self.metrics is not None:
            self.metrics.record_error(self.name, reason)
            self.metrics.record_clusters(self.name, statuses)
        self._record("source_error", duration)
        return PollOutcome("source_error", error=reason)

    def _record(self, outcome: str, duration: float | None = None) -> None:
        if self.metrics is None:
            return
        state = self._state
        self.metrics.record_poll(
            self.name,
            outcome,
            duration_seconds=duration,
            consecutive_failures=state.consecutive_failures,
            success_timestamp=state.last_success_at.timestamp() if state.last_success_at else None,
        )


def jobs(context: WorkerContext) -> list[ScheduledJob]:
    """One job per source, run at once at start; the scheduler's catch-up loop wraps each poll."""
    return [
        ScheduledJob(
            id=f"poll:{poller.name}",
            name=f"poll source {poller.name}",
            run=context.catch_up_poll,
            args=(poller,),
            interval_seconds=poller.interval_seconds,
        )
        for poller in context.pollers.values()
    ]
