"""The worker's half of the collector benchmark (:mod:`benchmarks.collector`), run in a process of its own.

Each database's half runs here in a fresh process that first loads the CLI entry point, as
``ai-telemetry worker`` does, and nothing of the benchmark's orchestration (the fleet generator,
the test services, pytest), so the resident memory it reports is a worker's. The bare fetch, the
baseline, runs in a helper process of its own.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from multiprocessing import get_context

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from benchmarks.measure import report
from domain.database import create_db_engine, upgrade_apart
from domain.models import Hub, utcnow
from domain.settings import DatabaseSettings, SchedulerSettings, SourceSettings
from worker import polling
from worker.inventory import apply_snapshot, load_inventory
from worker.memory import limit_malloc_arenas, release_free_memory
from worker.polling import SourcePoller
from worker.sources.prometheus import QUERY_PATH, PrometheusSource

INTERVAL = 30.0
STEADY_POLLS = int(os.environ.get("BENCH_COLLECTOR_POLLS", "7"))


def _status_mb(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return (time.perf_counter() - started) * 1000, result


def bare_fetch(url: str, queries: list[str]) -> float:
    """The limit, in milliseconds: the same queries sent the same way (concurrently), each answer only
    ``json.loads``-ed. Runs in the helper process, so its memory is not counted as the worker's."""
    return _bare(url, queries)[0]


def answer_sizes(url: str, queries: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(series, bytes) of each query's answer, read in the helper process."""
    return dict(zip(queries, _bare(url, list(queries.values()))[1], strict=True))


def _bare(url: str, queries: list[str]) -> tuple[float, list[tuple[int, int]]]:
    at = f"{utcnow().timestamp():.3f}"
    with httpx.Client(base_url=url, timeout=120) as client:

        def one(promql: str) -> tuple[int, int]:
            response = client.post(QUERY_PATH, data={"query": promql, "time": at, "partial_response": "false"})
            response.raise_for_status()
            document = json.loads(response.content)
            return len(document["data"]["result"]), len(response.content)

        begun = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            sizes = list(pool.map(one, queries))
        return (time.perf_counter() - begun) * 1000, sizes


def reset_peak_rss() -> None:
    """Restart the kernel's high-water mark of this process's resident memory (Linux ``clear_refs``)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def peak_rss_since_reset_mb() -> float:
    return _status_mb("VmHWM")


def _measure(label: str, url: str, source: PrometheusSource, gpus: int, helper: ProcessPoolExecutor) -> None:
    database = DatabaseSettings(url=url, pool_size=4)
    upgrade_apart(database)  # as ai-telemetry worker does: Alembic never loads in the worker's process
    engine = create_db_engine(database)
    poller = SourcePoller(source, engine, SchedulerSettings(poll_interval_seconds=INTERVAL))
    queries = list(source.queries(INTERVAL).values())
    gc.collect()
    reset_peak_rss()
    first_ms, first = _timed(lambda: poller.poll_once(utcnow(), force=True))
    assert first.outcome == "success", first  # type: ignore[attr-defined]
    first_peak = peak_rss_since_reset_mb()
    gc.collect()
    cycles, reads, bares, inventory_rows, rollup_rows = [], [], [], [], []
    cycle_peaks, read_peaks = [], []
    phases: dict[str, list[float]] = {}
    for _ in range(STEADY_POLLS):
        bares.append(helper.submit(bare_fetch, source.url or "", queries).result())
        reset_peak_rss()
        with timed_phases(phases):
            cycle_ms, outcome = _timed(lambda: poller.poll_once(utcnow(), force=True))
        cycle_peaks.append(peak_rss_since_reset_mb())
        assert outcome.outcome == "success", outcome  # type: ignore[attr-defined]
        cycles.append(cycle_ms)
        inventory_rows.append(outcome.changes.rows_written)  # type: ignore[attr-defined]
        rollup_rows.append(outcome.rollup_rows)  # type: ignore[attr-defined]
        reset_peak_rss()
        reads.append(_timed(lambda: source.poll(utcnow(), INTERVAL))[0])
        read_peaks.append(peak_rss_since_reset_mb())
        release_free_memory()  # as the poller does after a poll: this extra read is the benchmark's, not the worker's
    cycle, read, bare = statistics.median(cycles), statistics.median(reads), statistics.median(bares)
    # each cycle beside the bare fetch just before it: the machine's load drifts less within a pair
    paired = statistics.median(c / b for c, b in zip(cycles, bares, strict=True))
    best_cycle, best_read, best_bare = min(cycles), min(reads), min(bares)
    steady_peak, steady_now = max(cycle_peaks), current_rss_mb()
    changed_ms, changed_rows = changed_fleet_write(engine, source)
    changes = first.changes  # type: ignore[attr-defined]
    report(
        f"Poll cycle, {gpus:,} GPUs via a real Prometheus, {label}",
        [
            (
                "first poll (everything inserted)",
                f"{first_ms:,.0f} ms, {changes.rows_written:,} inventory rows + {first.rollup_rows:,} rollup rows",  # type: ignore[attr-defined]
            ),
            (
                f"full cycle, median of {STEADY_POLLS}",
                f"{cycle:,.0f} ms  (each: {', '.join(f'{c:,.0f}' for c in cycles)})",
            ),
            (
                f"source read alone (queries, decode, snapshot), median of {STEADY_POLLS}",
                f"{read:,.0f} ms  (each: {', '.join(f'{r:,.0f}' for r in reads)})",
            ),
            ("bare fetch + JSON decode (baseline)", f"{bare:,.0f} ms  (each: {', '.join(f'{b:,.0f}' for b in bares)})"),
            ("ratio: full cycle / bare fetch, medians (target <= 1.5x)", f"{cycle / bare:.2f}x"),
            ("ratio: full cycle / bare fetch, best of each", f"{best_cycle / best_bare:.2f}x"),
            ("ratio: full cycle / the bare fetch just before it, median of the pairs", f"{paired:.2f}x"),
            (
                "ratio: source read / bare fetch, medians (best of each)",
                f"{read / bare:.2f}x ({best_read / best_bare:.2f}x)",
            ),
            ("inventory rows written per later poll (target 0)", ", ".join(str(r) for r in inventory_rows)),
            (
                "inventory write when every GPU's and slice's readings changed (rolled back)",
                f"{changed_ms:,.0f} ms, {changed_rows:,} rows",
            ),
            ("rollup rows written per later poll", ", ".join(f"{r:,}" for r in rollup_rows)),
            (
                "worker RSS peak: first poll / later polls / now (target <= 250 MB)",
                f"{first_peak:.0f} / {steady_peak:.0f} / {steady_now:.0f} MB",
            ),
            ("RSS peak of the source read alone, highest", f"{max(read_peaks):.0f} MB"),
            *(
                (f"phase, median of {STEADY_POLLS}: {PHASES[name]}", f"{statistics.median(times):,.0f} ms")
                for name, times in phases.items()
            ),
        ],
    )
    engine.dispose()


PHASES = {
    "load_inventory": "inventory rows loaded (while the source answers)",
    "load_open": "open workloads loaded (while the source answers)",
    "_read": "source read (queries, decode, snapshot; in its own thread)",
    "_apply_inventory": "after the read: inventory compared and written",
    "_plan_workloads": "after the read: workloads' reads (their plan then runs beside the ledger)",
    "_account": "after the read: ledger window attributed and written to every tier",
    "_apply_workloads": "after the read: workloads' plan awaited, then written",
}
"""The steps of one cycle, timed by wrapping them (where the time after the last answer goes)."""


@contextmanager
def timed_phases(into: dict[str, list[float]]) -> Iterator[None]:
    """Time each of :data:`PHASES` during the block, appending milliseconds to ``into[name]``."""
    owners = {"load_inventory": polling, "load_open": polling}
    originals = {name: getattr(owners.get(name, SourcePoller), name) for name in PHASES}

    def wrap(name: str, step: Callable[..., object]) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                into.setdefault(name, []).append((time.perf_counter() - started) * 1000)

        return timed

    for name, step in originals.items():
        setattr(owners.get(name, SourcePoller), name, wrap(name, step))
    try:
        yield
    finally:
        for name, step in originals.items():
            setattr(owners.get(name, SourcePoller), name, step)


def changed_fleet_write(engine: Engine, source: PrometheusSource) -> tuple[float, int]:
    """The inventory write of a poll in which every reading moved (as on a busy fleet, unlike the
    benchmark's still one): (milliseconds, rows written), in a transaction rolled back afterwards."""
    snapshot = source.poll(utcnow(), INTERVAL)
    moved = replace(
        snapshot,
        gpus=tuple(
            replace(
                gpu,
                utilization=None if gpu.utilization is None else (gpu.utilization + 1) % 100,
                power_watts=None if gpu.power_watts is None else gpu.power_watts + 1,
                temperature_c=None if gpu.temperature_c is None else gpu.temperature_c + 1,
                slices=tuple(replace(s, memory_used_mib=(s.memory_used_mib or 0) + 1) for s in gpu.slices),
            )
            for gpu in snapshot.gpus
        ),
    )
    with Session(engine) as session:
        hub = session.exec(select(Hub).where(Hub.name == source.name)).one()
        existing = load_inventory(session, hub.id or 0)
        started = time.perf_counter()
        changes = apply_snapshot(session, hub, moved, missing_after=timedelta(minutes=5), existing=existing)
        session.flush()
        elapsed = (time.perf_counter() - started) * 1000
        session.rollback()
    return elapsed, changes.rows_written


def worker_half(label: str, url: str, settings: SourceSettings, gpus: int) -> None:
    """Measure one database's half (``label``, ``url``) in this process, a fresh one."""
    import ai_telemetry.cli  # noqa: F401, PLC0415  (the process holds what `ai-telemetry worker` loads)

    limit_malloc_arenas()  # as ai-telemetry worker does
    source = PrometheusSource(settings)
    try:
        # the baseline runs in a helper process of its own, apart from the worker's memory
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as helper:
            _measure(label, url, source, gpus, helper)
    finally:
        source.close()
        sys.stdout.flush()
