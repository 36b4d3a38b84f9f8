"""Signal pipeline throughput, memory and quality on a synthetic 10,000-GPU fleet with injected faults.

``python -m benchmarks pipeline`` streams N = 10^5, 10^6 and 10^7 signals (``PIPELINE_BENCH_N`` in
the environment picks others, e.g. ``PIPELINE_BENCH_N=100000,1000000``) through filters and
correlation in this process and reports, per N:

* signals/s through the pipeline (the generator's own time is measured apart and excluded),
  with the generator's rate beside it as the baseline;
* peak RSS (the stream is generated in chunks of one poll, never held whole);
* recall on injected critical faults and on all faults, precision of escalations, and how many
  faults yielded exactly one finding;
* the safety counters (critical signals suppressed must be 0);
* the compression ratio (raw signals / escalations) beside the number of distinct fault subjects,
  so the ratio is seen to follow the faults, not N.

The fleet: 5 clusters x 250 nodes x 8 GPUs. Every poll (30 s) each GPU reports one signal (OK when
healthy, one per condition otherwise); on top come noise that must not escalate (one-poll heat and
idle blips, long-running "memory nearly full" at info severity, duplicate alert copies of critical
signals) and faults that must (one new fault every few polls, on a node nobody else's fault is on):
XID on one GPU or several of a node, a lost GPU or node, a hot GPU, an idle job, a straggler, a
flapping GPU and, rarely, a partial cluster outage.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from benchmarks.measure import peak_rss_mb, report
from domain.pipeline.engine import Pipeline
from domain.pipeline.extract import PollObservation, SignalExtractor
from domain.pipeline.signals import (
    CRITICAL,
    HEALTH,
    IDLE_ALLOCATED,
    INFO,
    MEMORY_FULL,
    MISSING,
    OK,
    STRAGGLER,
    THERMAL,
    WARNING,
    XID,
    Signal,
    cluster_subject,
    gpu_subject,
    node_subject,
    workload_subject,
)
from domain.settings import PipelineSettings
from domain.telemetry.readings import GpuReading, PodRef

CLUSTERS = 5
NODES_PER_CLUSTER = 250
GPUS_PER_NODE = 8
INTERVAL = 30.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
CHUNK = 50_000
MODELS = (
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA H100 80GB HBM3",
    "NVIDIA L40S",
    "NVIDIA A100-SXM4-80GB",
    "NVIDIA H100 80GB HBM3",
)


@dataclass
class Gpu:
    uuid: str
    subject: str
    cluster: str
    node: str
    labels: dict[str, str]
    job: str | None


@dataclass
class Fault:
    """One injected fault and the finding it must yield."""

    kind: str
    expected: tuple[str, str]
    """(kind, subject) of the finding it must open."""
    critical: bool
    start: int
    end: int
    """Ticks [start, end)."""
    signals: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    """GPU subject -> (kind, severity, value) it reports while the fault lasts."""
    flapping: bool = False
    nodes: tuple[str, ...] = ()
    cluster: str = ""


class Fleet:
    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.gpus: list[Gpu] = []
        self.nodes: dict[str, list[Gpu]] = {}
        self.jobs: dict[str, list[Gpu]] = {}
        for c in range(CLUSTERS):
            cluster = f"bench-{c}"
            n = 0
            while n < NODES_PER_CLUSTER:
                layout = rng.random()
                span = 2 if layout < 0.1 and n + 1 < NODES_PER_CLUSTER else 1
                for offset in range(span):
                    node = f"gpu-{n + offset:04d}"
                    node_key = f"{cluster}/{node}"
                    self.nodes[node_key] = []
                    for i in range(GPUS_PER_NODE):
                        if span == 2:
                            job = f"{cluster}/train/ddp-{n:04d}"
                        elif layout < 0.6:
                            job = f"{cluster}/team-{n % 17}/job-{n:04d}"
                        elif layout < 0.8:
                            job = f"{cluster}/team-{n % 17}/half-{n:04d}-{i // 4}"
                        else:
                            job = None
                        uuid = f"GPU-{c:02d}{n + offset:04d}{i:02d}-bench"
                        labels = {
                            "cluster": cluster,
                            "node": node,
                            "gpu": uuid,
                            "index": str(i),
                            "model": MODELS[c],
                            "source": "bench",
                        }
                        if job:
                            _, namespace, pod = job.split("/")
                            labels.update(namespace=namespace, pod=pod, gpus="1")
                        gpu = Gpu(uuid, gpu_subject(uuid), cluster, node, labels, job)
                        self.gpus.append(gpu)
                        self.nodes[node_key].append(gpu)
                        if job:
                            self.jobs.setdefault(job, []).append(gpu)
                n += span


class Scenario:
    """Decides, tick by tick, which faults and noise are active; streams the signals."""

    def __init__(self, fleet: Fleet, total_signals: int, seed: int = 11) -> None:
        self.fleet = fleet
        self.rng = random.Random(seed)
        self.total = total_signals
        self.ticks = max(1, total_signals // len(fleet.gpus))
        self.faults: list[Fault] = []
        self._busy_nodes: dict[str, int] = {}
        """node key -> tick until which a fault holds it."""
        self._memory_full = {g.subject for g in self.rng.sample(fleet.gpus, len(fleet.gpus) // 100) if g.job}
        self.emitted = 0
        self._node_keys = list(fleet.nodes)
        self._outages: dict[str, int] = {}
        """cluster -> tick until which an outage (and its resolution) holds it."""

    # --- faults -------------------------------------------------------------------------------

    def _free_node(self, tick: int, cluster: str | None = None) -> str:
        """A node no fault holds, in a cluster without an ongoing outage (that would absorb the fault)."""
        while True:
            key = (
                self.rng.choice(self._node_keys)
                if cluster is None
                else (f"{cluster}/gpu-{self.rng.randrange(NODES_PER_CLUSTER):04d}")
            )
            in_outage = self._outages.get(key.partition("/")[0], -1) >= tick
            if self._busy_nodes.get(key, -1) < tick and (cluster is not None or not in_outage):
                return key

    def _inject(self, tick: int) -> None:  # noqa: PLR0912, PLR0915  (one flat table of fault shapes)
        remaining = self.ticks - tick
        rng = self.rng
        duration = min(rng.randint(6, 40), remaining)
        if remaining < 5:
            return
        choices = ["xid_gpu", "xid_node", "gpu_lost", "node_lost", "thermal", "idle_job", "straggler"]
        if remaining >= 25:
            choices.append("flapping")
        kind = rng.choice(choices)
        node_key = self._free_node(tick)
        if remaining >= 8 and rng.random() < 0.08:
            outage_cluster = node_key.partition("/")[0]
            if not any(f.cluster == outage_cluster and tick < f.end + 4 for f in self.faults):
                kind = "cluster_outage"
        gpus = self.fleet.nodes[node_key]
        cluster, node = node_key.split("/")
        end = tick + duration
        if kind == "xid_gpu":
            gpu = rng.choice(gpus)
            fault = Fault(XID, (XID, gpu.subject), True, tick, end, {gpu.subject: (XID, CRITICAL, 79.0)})
        elif kind == "xid_node":
            chosen = rng.sample(gpus, rng.randint(3, GPUS_PER_NODE))
            fault = Fault(
                XID,
                (XID, node_subject(cluster, node)),
                True,
                tick,
                end,
                {g.subject: (XID, CRITICAL, 48.0) for g in chosen},
            )
        elif kind == "gpu_lost":
            gpu = rng.choice(gpus)
            fault = Fault(MISSING, (MISSING, gpu.subject), True, tick, end, {gpu.subject: (MISSING, CRITICAL, 90.0)})
        elif kind == "node_lost":
            fault = Fault(
                MISSING,
                (MISSING, node_subject(cluster, node)),
                True,
                tick,
                end,
                {g.subject: (MISSING, CRITICAL, 90.0) for g in gpus},
            )
        elif kind == "thermal":
            gpu = rng.choice(gpus)
            fault = Fault(THERMAL, (THERMAL, gpu.subject), False, tick, end, {gpu.subject: (THERMAL, WARNING, 93.0)})
        elif kind == "flapping":
            gpu = rng.choice(gpus)
            fault = Fault(
                THERMAL,
                (THERMAL, gpu.subject),
                False,
                tick,
                tick + 24,
                {gpu.subject: (THERMAL, WARNING, 92.0)},
                flapping=True,
            )
        elif kind == "idle_job":
            job_gpus = [g for g in gpus if g.job]
            if not job_gpus:
                return
            job = job_gpus[0].job or ""
            members = self.fleet.jobs[job]
            namespace_pod = job.split("/")
            fault = Fault(
                IDLE_ALLOCATED,
                (IDLE_ALLOCATED, workload_subject(*namespace_pod)),
                False,
                tick,
                end,
                {g.subject: (IDLE_ALLOCATED, WARNING, 0.5) for g in members},
            )
            for member in members:
                self._busy_nodes[f"{member.cluster}/{member.node}"] = end + 4
        elif kind == "straggler":
            job_gpus = [g for g in gpus if g.job]
            if not job_gpus:
                return
            gpu = rng.choice(job_gpus)
            fault = Fault(
                STRAGGLER, (STRAGGLER, gpu.subject), False, tick, end, {gpu.subject: (STRAGGLER, WARNING, 0.2)}
            )
            for member in self.fleet.jobs[gpu.job or ""]:
                self._busy_nodes[f"{member.cluster}/{member.node}"] = end + 4
        else:  # cluster_outage: every GPU of four nodes of one cluster, at once
            keys = [node_key]
            while len(keys) < 4:
                candidate = self._free_node(tick, cluster)
                if candidate not in keys:
                    keys.append(candidate)
            fault = Fault(
                MISSING,
                (MISSING, cluster_subject(cluster)),
                True,
                tick,
                end,
                {g.subject: (MISSING, CRITICAL, 120.0) for k in keys for g in self.fleet.nodes[k]},
                nodes=tuple(keys),
            )
            for key in keys:
                self._busy_nodes[key] = end + 4
            self._outages[cluster] = end + 4
        # a node stays taken until its finding has resolved: a flapping one waits out the flap window
        settle = 4 + (int(PipelineSettings().flap_window_seconds / INTERVAL) if fault.flapping else 0)
        self._busy_nodes[node_key] = max(self._busy_nodes.get(node_key, 0), fault.end + settle)
        fault.cluster = cluster
        self.faults.append(fault)

    # --- the stream ---------------------------------------------------------------------------

    def stream(self) -> Iterator[Signal]:  # noqa: PLR0912  (the generator's hot loop, kept in one piece)
        rng = self.rng
        gpus = self.fleet.gpus
        active: list[Fault] = []
        memory_full = self._memory_full
        lasting: dict[str, tuple[str, int]] = {}
        recent: dict[str, int] = {}
        for tick in range(self.ticks):
            if tick % 100 == 0:
                recent = {s: t for s, t in recent.items() if t >= tick - 3}
            if tick % 3 == 0:
                self._inject(tick)
            active = [f for f in self.faults if f.start <= tick < f.end]
            now = T0 + tick * INTERVAL
            faulty: dict[str, list[tuple[str, int, float]]] = {}
            for fault in active:
                if fault.flapping and (tick - fault.start) % 2 == 1:
                    continue
                for subject, signal in fault.signals.items():
                    faulty.setdefault(subject, []).append(signal)
            # noise: heat and idle blips lasting one or two polls (persistence must hold them back)
            blips = {s: k for s, (k, until) in lasting.items() if until > tick}
            lasting = {s: v for s, v in lasting.items() if v[1] > tick}
            for gpu in rng.sample(gpus, 10):
                kind = THERMAL if len(blips) % 2 else IDLE_ALLOCATED
                if recent.get(gpu.subject, -10) >= tick - 3:
                    continue  # back-to-back blips on one GPU would be a real (persisting) condition
                recent[gpu.subject] = tick
                if kind == THERMAL or gpu.job:
                    blips[gpu.subject] = kind
                    if rng.random() < 0.5:
                        lasting[gpu.subject] = (kind, tick + 2)
            for gpu in gpus:
                subject = gpu.subject
                labels = gpu.labels
                problems = faulty.get(subject)
                if problems is not None:
                    for kind, severity, value in problems:
                        yield Signal(kind, subject, severity, value, now, labels)
                        if severity == CRITICAL:  # the same fault arriving again as an alert
                            yield Signal(kind, subject, severity, value, now, labels)
                    continue
                blip = blips.get(subject)
                if blip is not None:
                    yield Signal(blip, subject, WARNING, 95.0 if blip == THERMAL else 1.0, now, labels)
                elif subject in memory_full:
                    yield Signal(MEMORY_FULL, subject, INFO, 0.97, now, labels)
                else:
                    yield Signal(HEALTH, subject, OK, None, now, labels)
            self.emitted += 1


# --- scoring ------------------------------------------------------------------------------------


@dataclass
class Score:
    faults: int = 0
    critical_faults: int = 0
    distinct_fault_subjects: int = 0
    found: int = 0
    critical_found: int = 0
    exactly_one: int = 0
    escalations: int = 0
    true_escalations: int = 0


def score(faults: list[Fault], escalated: list[tuple[str, str, float]], interval: float = INTERVAL) -> Score:
    """Match escalated findings (kind, subject, first_seen) to faults by key and time."""
    result = Score(
        faults=len(faults),
        critical_faults=sum(f.critical for f in faults),
        distinct_fault_subjects=len({f.expected for f in faults}),
        escalations=len(escalated),
    )
    by_key: dict[tuple[str, str], list[float]] = {}
    for kind, subject, first_seen in escalated:
        by_key.setdefault((kind, subject), []).append(first_seen)
    used: set[tuple[str, str, float]] = set()
    for fault in faults:
        start = T0 + fault.start * interval
        end = T0 + fault.end * interval
        hits = [t for t in by_key.get(fault.expected, []) if start - interval <= t <= end]
        if hits:
            result.found += 1
            result.critical_found += fault.critical
            result.exactly_one += len(hits) == 1
            used.update((*fault.expected, t) for t in hits)
    result.true_escalations = len(used)
    return result


def _collect(pipeline: Pipeline, escalated: list[tuple[str, str, float]], seen: set[tuple[str, str, float]]) -> None:
    for finding in pipeline.drain():
        key = (finding.kind, finding.subject, finding.first_seen)
        if finding.escalations and key not in seen:
            seen.add(key)
            escalated.append(key)


def run_once(total: int) -> dict[str, object]:
    fleet = Fleet()
    scenario = Scenario(fleet, total)
    pipeline = Pipeline(PipelineSettings(), interval_seconds=INTERVAL)
    escalated: list[tuple[str, str, float]] = []
    seen: set[tuple[str, str, float]] = set()
    stream = scenario.stream()
    pipeline_seconds = 0.0
    generator_seconds = 0.0
    processed = 0
    gc.collect()
    while True:
        started = time.perf_counter()
        chunk = []
        append = chunk.append
        for signal in stream:
            append(signal)
            if len(chunk) >= CHUNK:
                break
        generator_seconds += time.perf_counter() - started
        if not chunk:
            break
        started = time.perf_counter()
        pipeline.feed(chunk)
        pipeline_seconds += time.perf_counter() - started
        processed += len(chunk)
        _collect(pipeline, escalated, seen)
        del chunk
    started = time.perf_counter()
    pipeline.finish()
    pipeline_seconds += time.perf_counter() - started
    _collect(pipeline, escalated, seen)
    counters = pipeline.counters()
    quality = score(scenario.faults, escalated)
    return {
        "n": processed,
        "ticks": scenario.ticks,
        "pipeline_seconds": pipeline_seconds,
        "generator_seconds": generator_seconds,
        "counters": counters,
        "score": quality,
        "compression": pipeline.compression(),
        "rss": peak_rss_mb(),
        "states": len(pipeline.filters.states),
    }


def extraction(polls: int = 20) -> dict[str, float]:
    """Readings -> signals (incl. the straggler detector) for 10,000 GPUs a poll, against reading the values."""
    fleet = Fleet()
    rng = random.Random(3)
    extractor = SignalExtractor(PipelineSettings())
    seconds = baseline = 0.0
    signals = 0
    for tick in range(polls):
        gpus = tuple(
            GpuReading(
                cluster=g.cluster,
                node=g.node,
                uuid=g.uuid,
                index=int(g.labels["index"]),
                model=g.labels["model"],
                utilization=rng.uniform(70, 95) if g.job else 0.0,
                utilization_max=99.0,
                memory_used_mib=4e4,
                memory_free_mib=4e4,
                temperature_c=rng.uniform(40, 80),
                power_watts=300.0,
                xid=0,
                workloads=(PodRef(g.labels["namespace"], g.labels["pod"]),) if g.labels.get("pod") else (),
            )
            for g in fleet.gpus
        )
        clusters = tuple(f"bench-{c}" for c in range(CLUSTERS))
        poll = PollObservation("bench", T0 + tick * INTERVAL, INTERVAL, clusters, gpus)
        started = time.perf_counter()
        signals += len(extractor.extract(poll))
        seconds += time.perf_counter() - started
        started = time.perf_counter()
        sum(g.utilization or 0.0 for g in poll.gpus)  # touching each reading once: the floor
        baseline += time.perf_counter() - started
    return {
        "ms_per_poll": 1000 * seconds / polls,
        "readings_per_s": polls * len(fleet.gpus) / seconds,
        "baseline_ms": 1000 * baseline / polls,
        "signals_per_poll": signals / polls,
        "verdicts": extractor.counters()["straggler.verdicts"] / polls,
    }


def worst_case(polls: int = 50) -> dict[str, float]:
    """Every signal non-OK: each GPU hot or idle half the time, at random (nothing for drop_healthy to drop)."""
    fleet = Fleet()
    rng = random.Random(5)
    pipeline = Pipeline(PipelineSettings(), interval_seconds=INTERVAL)
    seconds = 0.0
    total = 0
    for tick in range(polls):
        now = T0 + tick * INTERVAL
        chunk = [
            Signal(THERMAL if rng.random() < 0.5 else IDLE_ALLOCATED, g.subject, WARNING, 91.0, now, g.labels)
            for g in fleet.gpus
        ]
        started = time.perf_counter()
        pipeline.feed(chunk)
        seconds += time.perf_counter() - started
        total += len(chunk)
        pipeline.drain()
    pipeline.finish()
    counters = pipeline.counters()
    return {
        "rate": total / seconds,
        "n": total,
        "kept": counters["kept"],
        "escalations": counters["escalations"],
        "flapping": counters["flap_damping.notices"],
    }


def sizes() -> list[int]:
    given = os.environ.get("PIPELINE_BENCH_N")
    if not given:
        return list(DEFAULT_SIZES)
    return [int(float(part)) for part in given.split(",") if part.strip()]


def run() -> None:
    curve = []
    for total in sizes():
        result = run_once(total)
        counters: dict[str, int] = result["counters"]  # type: ignore[assignment]
        quality: Score = result["score"]  # type: ignore[assignment]
        n = int(result["n"])  # type: ignore[arg-type]
        rate = n / float(result["pipeline_seconds"])  # type: ignore[arg-type]
        generator_rate = n / float(result["generator_seconds"])  # type: ignore[arg-type]
        precision = quality.true_escalations / quality.escalations if quality.escalations else 1.0
        compression = result["compression"]
        seconds = float(result["pipeline_seconds"])  # type: ignore[arg-type]
        generator_seconds = float(result["generator_seconds"])  # type: ignore[arg-type]
        non_ok = (counters["raw"] - counters["drop_healthy.dropped"]) / counters["raw"]
        report(
            f"Pipeline, N = {n:,} signals ({result['ticks']} polls of {len(Fleet().gpus):,} GPUs)",
            [
                ("filters + correlation", f"{rate:,.0f} signals/s ({seconds:.1f} s)"),
                ("generator alone (baseline)", f"{generator_rate:,.0f} signals/s"),
                ("pipeline / generator time", f"{seconds / generator_seconds:.2f}x"),
                ("peak RSS (process so far)", f"{result['rss']:.0f} MB"),
                ("non-OK share of the stream", f"{non_ok:.2%}"),
                (
                    "raw > kept > findings > escalations",
                    f"{counters['raw']:,} > {counters['kept']:,} > {counters['findings']:,} > "
                    f"{counters['escalations']:,}",
                ),
                ("compression (raw / escalations)", f"{compression:,.0f}" if compression else "-"),
                ("faults injected / distinct fault subjects", f"{quality.faults} / {quality.distinct_fault_subjects}"),
                ("recall, critical faults", f"{quality.critical_found}/{quality.critical_faults}"),
                ("recall, all faults", f"{quality.found}/{quality.faults}"),
                ("faults with exactly one finding", f"{quality.exactly_one}/{quality.faults}"),
                ("precision of escalations", f"{precision:.1%} ({quality.true_escalations}/{quality.escalations})"),
                ("safety: critical suppressed (must be 0)", str(counters["safety.critical_suppressed"])),
                (
                    "safety: critical exempted / distinct subjects kept",
                    f"{counters['safety.critical_exempted']} / {counters['safety.critical_distinct_subjects']}",
                ),
                ("filter state kept at the end (keys)", f"{result['states']:,}"),
            ],
        )
        curve.append((n, compression, quality.distinct_fault_subjects, counters["escalations"]))
    worst = worst_case()
    report(
        "Worst case: every signal non-OK (each GPU hot or idle at random, half the polls)",
        [
            ("filters + correlation", f"{worst['rate']:,.0f} signals/s over {worst['n']:,.0f} signals"),
            (
                "kept / escalations / flapping notices",
                f"{worst['kept']:,.0f} / {worst['escalations']:,.0f} / {worst['flapping']:,.0f}",
            ),
        ],
    )
    figures = extraction()
    report(
        "Extraction: readings -> signals with the straggler detector, 10,000 GPUs a poll",
        [
            ("per poll", f"{figures['ms_per_poll']:.0f} ms ({figures['readings_per_s']:,.0f} readings/s)"),
            ("reading each value once (baseline)", f"{figures['baseline_ms']:.1f} ms"),
            (
                "signals per poll / cohort verdicts per poll",
                f"{figures['signals_per_poll']:,.0f} / {figures['verdicts']:,.0f}",
            ),
        ],
    )
    report(
        "Compression curve",
        [
            (
                f"N = {n:>12,}",
                f"ratio {c or 0:>10,.0f}   escalations {e:>5}   distinct fault subjects {d:>5}   "
                f"escalations per fault subject {e / d if d else 0:.2f}",
            )
            for n, c, d, e in curve
        ],
    )
