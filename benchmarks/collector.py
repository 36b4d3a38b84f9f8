"""Collector figures: a 10,000-GPU fleet exporting dcgm-exporter's whole default counter set (profiling
included), scraped by a real Prometheus, polled into SQLite and PostgreSQL.

The fleet (20 clusters, 1,250 nodes of 8 GPUs, MIG slices on every tenth A100/H100 node, pods on
most GPUs; clusters alternate the two ways exporters report ``DCGM_FI_DEV_GPU_UTIL`` on MIG) comes
from :mod:`simulator.generate` with ``counters = "default"``: every family of dcgm-exporter's
``dcp-metrics-included.csv`` (clocks, energy, PCIe, NVLink, remapped rows, the profiling metrics).
Four ``ai-telemetry simulate`` processes serve it (five clusters each, every series labelled with
its cluster) and one Prometheus scrapes them. One hub source (``cluster_label = "cluster"``) polls
it, as on ACM Observability.

Bare fetch, full cycle and source read alternate, seven times each (``BENCH_COLLECTOR_POLLS``);
medians, the best of each and the median of each cycle's ratio to the bare fetch just before it are
printed: the machine is shared, and its load drifts less within a pair than across the run. It
reports the product's poll (the full cycle: its queries, decode, snapshot, inventory, workloads and
rollups written and committed; and the source's read alone: queries, decode, snapshot) beside the
bare fetch of the same queries (sent the same way, concurrently; HTTP plus ``json.loads``, nothing
else) measured in the same run, their ratios, the size of each answer, the rows written, and the
worker's resident memory (its peak during the polls; each database's half runs in a fresh process, as
a worker runs against one database, and the baseline and the fleet generation in helper processes),
the peak of the source read alone, and the median time of each step of a cycle (:data:`PHASES`).
Targets: a cycle at most 1.5 x the bare fetch; a second poll of an unchanged fleet writes no
inventory row; peak RSS at most 250 MB.

Needs the ``prometheus`` binary and PostgreSQL's (``scripts/install-test-services``); a missing
PostgreSQL only skips that half. ``python -m benchmarks collector``; ``BENCH_COLLECTOR_SCALE=0.1``
runs a tenth of the fleet for a quick look.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import timedelta
from multiprocessing import get_context
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from benchmarks.measure import report
from domain.database import create_db_engine, upgrade
from domain.models import Hub, utcnow
from domain.settings import DatabaseSettings, SchedulerSettings, SourceSettings
from simulator.generate import generate_fleet, split, write_fleet
from tests import services
from tests.prometheus_service import find_prometheus, running_exporters, running_prometheus, scrape_config
from worker import polling
from worker.inventory import apply_snapshot, load_inventory
from worker.memory import limit_malloc_arenas, release_free_memory
from worker.polling import SourcePoller
from worker.sources.prometheus import QUERY_PATH, PrometheusSource
from worker.sources.prometheus.queries import PromQl

CLUSTERS = 20
NODES = 1250
EXPORTERS = 4
INTERVAL = 30.0
STEADY_POLLS = int(os.environ.get("BENCH_COLLECTOR_POLLS", "7"))
SCRAPE_INTERVAL = "10s"


def current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return (time.perf_counter() - started) * 1000, result


@contextmanager
def _postgres() -> Iterator[str | None]:
    bin_dir = services.find_postgres_bin()
    if bin_dir is None:
        yield None
        return
    with services.running_postgres(bin_dir) as server, services.fresh_database(server) as url:
        yield url


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


def _count(url: str, promql: str) -> float:
    """A one-number query, with room for a loaded machine (counting every series takes a while)."""
    response = httpx.get(f"{url}{QUERY_PATH}", params={"query": promql}, timeout=300)
    response.raise_for_status()
    return float(response.json()["data"]["result"][0]["value"][1])


def write_fleets(directory: Path, nodes: int) -> tuple[list[Path], int, int]:
    """Generate the fleet into one file per exporter (in the helper process: the document is large)."""
    document = generate_fleet(clusters=CLUSTERS, nodes=nodes, counters="default")
    files = [write_fleet(part, directory / f"fleet-{i}.toml") for i, part in enumerate(split(document, EXPORTERS))]
    gpus = sum(n["gpus"] for c in document["clusters"] for n in c["nodes"])
    slices = sum(len(m["profiles"]) for c in document["clusters"] for n in c["nodes"] for m in n.get("mig", []))
    return files, gpus, slices


def reset_peak_rss() -> None:
    """Restart the kernel's high-water mark of this process's resident memory (Linux ``clear_refs``)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def peak_rss_since_reset_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _measure(label: str, url: str, source: PrometheusSource, gpus: int, helper: ProcessPoolExecutor) -> None:
    engine = create_db_engine(DatabaseSettings(url=url, pool_size=4))
    upgrade(engine)
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


def run() -> None:
    if find_prometheus() is None:
        print("collector benchmark skipped: no prometheus binary (run scripts/install-test-services)")
        return
    scale = float(os.environ.get("BENCH_COLLECTOR_SCALE", "1"))
    nodes = max(CLUSTERS, round(NODES * scale))
    with tempfile.TemporaryDirectory(prefix="ai-telemetry-bench-") as directory, ExitStack() as stack:
        base = Path(directory)
        # the fleet generation and the baseline run in a helper process, apart from the worker's memory
        helper = stack.enter_context(ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")))
        files, gpus, slices = helper.submit(write_fleets, base, nodes).result()
        started = time.perf_counter()
        exporters = stack.enter_context(running_exporters([(f, None) for f in files]))
        prometheus = stack.enter_context(
            running_prometheus(
                base, [scrape_config("dcgm", [e.target for e in exporters])], scrape_interval=SCRAPE_INTERVAL
            )
        )
        prometheus.wait_for("count(DCGM_FI_DEV_GPU_TEMP)", at_least=gpus, timeout=180)
        series = _count(prometheus.url, "count({__name__=~'DCGM_.*|kube_.*|gpu_operator_.*'})")
        families = _count(prometheus.url, "count(count by (__name__) ({__name__=~'DCGM_.*'}))")
        report(
            "Fleet",
            [
                ("GPUs / MIG slices / clusters / nodes", f"{gpus:,} / {slices:,} / {CLUSTERS} / {nodes:,}"),
                ("series in Prometheus (DCGM, kube-state-metrics, GPU Operator)", f"{series:,.0f}"),
                ("DCGM families exported (dcgm-exporter's default set, profiling included)", f"{families:.0f}"),
                ("exporters + Prometheus ready after", f"{time.perf_counter() - started:.1f} s"),
            ],
        )
        settings = SourceSettings(name="fleet", url=prometheus.url, cluster_label="cluster", timeout_seconds=120)
        queries = PromQl(settings).queries(INTERVAL)
        sizes = helper.submit(answer_sizes, prometheus.url, queries).result()
        report(
            "Answers of one poll",
            [(name, f"{count:,} series, {size / 1e6:,.1f} MB") for name, (count, size) in sizes.items()],
        )
        with tempfile.TemporaryDirectory(prefix="ai-telemetry-bench-db-") as db_dir:
            _in_own_process("SQLite", f"sqlite:///{Path(db_dir) / 'bench.db'}", settings, gpus)
        with _postgres() as url:
            if url is None:
                print("PostgreSQL half skipped: no initdb/pg_ctl (run scripts/install-test-services)")
            else:
                _in_own_process("PostgreSQL", url, settings, gpus)


def _in_own_process(label: str, url: str, settings: SourceSettings, gpus: int) -> None:
    """One database's half in a fresh process, as a worker runs against one database: its memory
    figures are not those of a process that has polled into another database before."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as worker:
        worker.submit(_worker_half, label, url, settings, gpus).result()


def _worker_half(label: str, url: str, settings: SourceSettings, gpus: int) -> None:
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
