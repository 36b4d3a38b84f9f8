"""Report-card figures (issue 17): what collecting the profiling families adds to a 10,000-GPU poll,
and building a month of cards for 10,000 workloads on PostgreSQL.

**Poll.** The collector benchmark's fleet (:mod:`benchmarks.collector`: 20 clusters, 1,250 nodes of 8
GPUs, dcgm-exporter's default counter set, profiling on every cluster) served by four ``ai-telemetry
simulate`` processes to one real Prometheus. One source polls it twice over: as shipped (the profiling
families in ``DCGM_FAMILIES``) and with those families left out (the product before issue 17), the
two alternating, five times each, in the same run. It reports the source read (queries, decode,
snapshot) and the full cycle on SQLite (plus inventory, rollups, workloads with their sums, commit),
medians, and their ratios with to without.

**Cards.** 10,000 workloads of one project in one month (whole GPUs and MIG slices, every profiling
family summed, pods of one to eight devices) inserted into PostgreSQL; then the project-month card
(read the workloads, group them into runs, build every run's card and the project's) timed against
the bare read of the same rows (the baseline: the query alone), and one workload's card by workload id.

``python -m benchmarks report_cards``; ``BENCH_REPORT_CARDS_SCALE=0.1`` runs a tenth of the fleet and
of the workloads for a quick look.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from benchmarks.collector import CLUSTERS, EXPORTERS, NODES, SCRAPE_INTERVAL, _postgres, write_fleets
from benchmarks.measure import report
from domain.access import ReadScope
from domain.database import create_db_engine, upgrade
from domain.models import Cluster, Hub, ResearchProject, Workload, utcnow
from domain.report_cards.queries import _select, project_month_card, run_card_of
from domain.settings import DatabaseSettings, SchedulerSettings, SourceSettings
from domain.telemetry.dcgm import PROFILING
from tests.prometheus_service import find_prometheus, running_exporters, running_prometheus, scrape_config
from worker.bulk import insert_rows
from worker.memory import limit_malloc_arenas
from worker.polling import SourcePoller
from worker.sources.prometheus import PrometheusSource, queries

INTERVAL = 30.0
ROUNDS = 5
WORKLOADS = 10_000
MONTH = "2026-11"


@contextmanager
def without_profiling() -> Iterator[None]:
    """The collector as before issue 17: the profiling families left out of what is queried (benchmark only)."""
    groups = queries.PROFILING_QUERIES
    queries.PROFILING_QUERIES = ()  # read by PromQl.queries at every poll
    try:
        yield
    finally:
        queries.PROFILING_QUERIES = groups


def _ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def poll_cost(scale: float) -> None:
    if find_prometheus() is None:
        print("poll half skipped: no prometheus binary (run scripts/install-test-services)")
        return
    nodes = max(CLUSTERS, round(NODES * scale))
    with tempfile.TemporaryDirectory(prefix="ai-telemetry-bench-") as directory, ExitStack() as stack:
        base = Path(directory)
        helper = stack.enter_context(ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")))
        files, gpus, _ = helper.submit(write_fleets, base, nodes).result()
        exporters = stack.enter_context(running_exporters([(f, None) for f in files]))
        server = stack.enter_context(
            running_prometheus(
                base, [scrape_config("dcgm", [e.target for e in exporters])], scrape_interval=SCRAPE_INTERVAL
            )
        )
        server.wait_for("count(DCGM_FI_PROF_SM_ACTIVE)", at_least=gpus // 2, timeout=240)
        source = PrometheusSource(
            SourceSettings(name="fleet", url=server.url, cluster_label="cluster", timeout_seconds=120)
        )
        stack.callback(source.close)
        engine = create_db_engine(DatabaseSettings(url=f"sqlite:///{base / 'bench.db'}"))
        upgrade(engine)
        stack.callback(engine.dispose)
        poller = SourcePoller(source, engine, SchedulerSettings(poll_interval_seconds=INTERVAL))
        assert poller.poll_once(utcnow(), force=True).outcome == "success"  # the first poll inserts everything
        reads: dict[bool, list[float]] = {True: [], False: []}
        cycles: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(ROUNDS):
            for profiled in (True, False):
                with ExitStack() as mode:
                    if not profiled:
                        mode.enter_context(without_profiling())
                    reads[profiled].append(_ms(lambda: source.poll(utcnow(), INTERVAL)))
                    cycles[profiled].append(_ms(lambda: poller.poll_once(utcnow(), force=True)))
        snapshot = source.poll(utcnow(), INTERVAL)
        profiled_devices = sum(
            1 for g in snapshot.gpus for d in (g, *g.slices) if getattr(d, "profiling", None) is not None
        )
        med = {k: (statistics.median(reads[k]), statistics.median(cycles[k])) for k in (True, False)}
        report(
            f"Poll with and without the profiling families, {gpus:,} GPUs, {EXPORTERS} exporters, a real Prometheus",
            [
                ("devices with profiling readings", f"{profiled_devices:,}"),
                (
                    f"source read, median of {ROUNDS}: with / without",
                    f"{med[True][0]:,.0f} / {med[False][0]:,.0f} ms  (ratio {med[True][0] / med[False][0]:.2f}x)",
                ),
                ("  each, with", ", ".join(f"{v:,.0f}" for v in reads[True])),
                ("  each, without", ", ".join(f"{v:,.0f}" for v in reads[False])),
                (
                    f"full cycle on SQLite, median of {ROUNDS}: with / without",
                    f"{med[True][1]:,.0f} / {med[False][1]:,.0f} ms  (ratio {med[True][1] / med[False][1]:.2f}x)",
                ),
                ("  each, with", ", ".join(f"{v:,.0f}" for v in cycles[True])),
                ("  each, without", ", ".join(f"{v:,.0f}" for v in cycles[False])),
            ],
        )


def _workloads(project_id: int, count: int, rng: random.Random) -> list[dict[str, object]]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows: list[dict[str, object]] = []
    pod = 0
    while len(rows) < count:
        pod += 1
        devices = rng.choice([1, 1, 1, 2, 4, 8])
        mig = devices == 1 and rng.random() < 0.3
        began = start + timedelta(seconds=rng.uniform(0, 28 * 86400))
        seconds = rng.uniform(600, 3 * 86400)
        for index in range(min(devices, count - len(rows))):
            share = 3 / 7 if mig else 1.0
            activity = rng.random()
            profiling = {
                key: [activity * seconds * (1e9 if key.endswith("_bytes") else 0.5), seconds, activity]
                for key in PROFILING
            }
            key = f"{pod}-{index}"
            rows.append(
                {
                    "trace_id": f"{len(rows):032x}",
                    "workload_key": hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest(),
                    "cluster": "bench",
                    "namespace": "bench-project",
                    "pod": f"job-{pod}",
                    "gpu_uuid": f"GPU-{pod:08d}-{index}",
                    "mig_instance_id": 1 if mig else None,
                    "gpu_model": "NVIDIA A100-SXM4-80GB",
                    "started_at": began,
                    "ended_at": began + timedelta(seconds=seconds),
                    "source": "poll",
                    "samples": int(seconds // 30),
                    "util_avg": activity * 100,
                    "util_max": min(100.0, activity * 120),
                    "memory_max_mib": rng.uniform(0.05, 1) * (40_000 if mig else 80_000),
                    "energy_wh": seconds * share * 300 / 3600,
                    "events": [],
                    "project_id": project_id,
                    "throttled": False,
                    "seconds": seconds,
                    "gpu_seconds": seconds * share,
                    "idle_gpu_seconds": seconds * share * (1 - activity) * 0.3,
                    "util_seconds": activity * 100 * seconds,
                    "util_known_seconds": seconds,
                    "memory_total_mib": 40_192.0 if mig else 81_920.0,
                    "profiling": profiling,
                    "profiling_missing": None,
                }
            )
    return rows


def card_cost(scale: float) -> None:
    count = max(100, round(WORKLOADS * scale))
    with _postgres() as url:
        if url is None:
            print("cards half skipped: no PostgreSQL (run scripts/install-test-services)")
            return
        engine = create_db_engine(DatabaseSettings(url=url, pool_size=2))
        upgrade(engine)
        with Session(engine) as db:
            hub = Hub(name="bench", kind="simulated")
            db.add(hub)
            db.flush()
            cluster = Cluster(name="bench", hub_id=hub.id)
            db.add(cluster)
            db.flush()
            project = ResearchProject(
                namespace="bench-project", display_name="bench-project", cluster_id=cluster.id,
                first_seen=utcnow(), last_seen=utcnow(),
            )  # fmt: skip
            db.add(project)
            db.flush()
            project_id = project.id or 0
            rows = _workloads(project_id, count, random.Random(17))
            table = Workload.__table__  # type: ignore[attr-defined]
            insert_rows(db, table, rows, columns=list(rows[0]))
            db.commit()
            one = db.execute(select(Workload.id).where(Workload.pod == "job-1")).scalars().first()
        scope = ReadScope.all()
        now = datetime(2026, 12, 6, tzinfo=UTC)
        bare, cards, single = [], [], []
        card = None
        for _ in range(ROUNDS):
            with Session(engine) as db:
                bare.append(_ms(lambda db=db: db.execute(_select().where(Workload.project_id == project_id)).all()))
            with Session(engine) as db:
                started = time.perf_counter()
                card = project_month_card(db, scope, project_id, MONTH, now)
                cards.append((time.perf_counter() - started) * 1000)
            with Session(engine) as db:
                single.append(_ms(lambda db=db: run_card_of(db, scope, one or 0, now)))
        engine.dispose()
        assert card is not None
        each = ", ".join(f"{v:,.0f}" for v in cards)
        runs = f"{card.workloads:,} (grade {card.grade.letter}, {len(card.notes)} note kinds)"
        report(
            f"A month of report cards, {count:,} workloads on PostgreSQL",
            [
                ("workload runs carded", runs),
                (f"project-month card, median of {ROUNDS}", f"{statistics.median(cards):,.0f} ms  (each: {each})"),
                (f"bare read of the same rows (baseline), median of {ROUNDS}", f"{statistics.median(bare):,.0f} ms"),
                ("ratio: card / bare read", f"{statistics.median(cards) / statistics.median(bare):.2f}x"),
                (f"one workload's card by workload id, median of {ROUNDS}", f"{statistics.median(single):,.1f} ms"),
            ],
        )


def run() -> None:
    limit_malloc_arenas()
    scale = float(os.environ.get("BENCH_REPORT_CARDS_SCALE", "1"))
    card_cost(scale)
    poll_cost(scale)
