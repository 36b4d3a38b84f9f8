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
the peak of the source read alone, and the median time of each step of a cycle
(:data:`benchmarks.collector_worker.PHASES`).
Targets: a cycle at most 1.5 x the bare fetch; a second poll of an unchanged fleet writes no
inventory row; peak RSS at most 250 MB.

Needs the ``prometheus`` binary and PostgreSQL's (``scripts/install-test-services``); a missing
PostgreSQL only skips that half. ``python -m benchmarks collector``; ``BENCH_COLLECTOR_SCALE=0.1``
runs a tenth of the fleet for a quick look.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from multiprocessing import get_context
from pathlib import Path

import httpx

from benchmarks.collector_worker import INTERVAL, answer_sizes, worker_half
from benchmarks.measure import report
from domain.settings import SourceSettings
from simulator.generate import generate_fleet, split, write_fleet
from tests import services
from tests.prometheus_service import find_prometheus, running_exporters, running_prometheus, scrape_config
from worker.sources.prometheus import QUERY_PATH
from worker.sources.prometheus.queries import PromQl

CLUSTERS = 20
NODES = 1250
EXPORTERS = 4
SCRAPE_INTERVAL = "10s"


@contextmanager
def _postgres() -> Iterator[str | None]:
    bin_dir = services.find_postgres_bin()
    if bin_dir is None:
        yield None
        return
    with services.running_postgres(bin_dir) as server, services.fresh_database(server) as url:
        yield url


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
        worker.submit(worker_half, label, url, settings, gpus).result()
