"""Ledger accuracy: 24 h of a 10,000-GPU simulated fleet with chaos, against the simulator's ground truth.

``python -m benchmarks ledger`` (``BENCH_LEDGER_NODES=125``: a tenth of the fleet). The fleet is
:mod:`simulator.generate`'s (20 clusters, 1,250 nodes
of 8 GPUs, every tenth node with a GPU cut into seven ``1g.10gb`` slices, pods on most GPUs). One
worker schedule over 24 h of source time (2026-11-30, one month boundary at its end), polls every
30 s, with:

* jitter of up to 2 s on every poll, and overruns: about one poll an hour takes 75 s, the ticks it
  spans are skipped and a catch-up poll follows at once;
* a 2-hour source outage (06:00-08:00): polls fail and back off (30 s doubling to 300 s); the
  source's history (Prometheus kept scraping) is there afterwards;
* a worker restart: stopped 14:00-14:10;
* a replica takeover at 18:00: replica B (its clock 2 s ahead) polls once while A still runs, then
  takes over when A dies.

Both ways of counting see the same polls and the same snapshots:

* **ledger**: :func:`domain.ledger.plan_windows` from a cursor shared by the replicas (what
  ``hub.accounted_until`` is), back-filled chunks read from the source over exactly the chunk,
  :func:`worker.ledger.gpu_use` and :func:`domain.ledger.attribute` per window: the worker's code;
* **per-poll**: the rule before the ledger, one poll interval credited per successful poll (the
  same attribution over ``[at - 30 s, at)``).

The ground truth comes from the simulator's own state (who holds which GPU or slice, the MIG share
by the profile's compute slices), integrated over the span from the first window's start to the
ledger's final cursor. Accounting runs in-process without a database: through SQLite or PostgreSQL,
10,000 GPUs x 2,900 polls would take hours; the database path (cursor compare-and-set, rollup
upserts) is what the property tests check under random schedules. The generated fleet's
allocations are steady over the day (its simulator step is a day), so the figures measure counting,
not sampling resolution: a window is attributed to what held each GPU at its end, and an allocation
that changes mid-window is resolved to one poll window, by either method. Snapshots are computed
once per simulator step and reused with each poll's time and window (the state does not change
within a step).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.measure import peak_rss_mb, report
from domain.ledger import BACKFILLED, UNACCOUNTED, GpuUse, Window, attribute, plan_windows
from domain.ledger.attribution import SECONDS
from simulator import load_fleet
from simulator.engine import FleetState
from simulator.generate import generate_fleet, write_fleet
from worker.inventory.rules import InventoryIds
from worker.ledger import gpu_use
from worker.polling import backoff_seconds
from worker.sources import Snapshot
from worker.sources.simulated import SimulatedSource

INTERVAL = 30.0
BUCKET = 300
CHUNK = 300.0
HORIZON = 6 * 3600.0
T0 = datetime(2026, 11, 30, tzinfo=UTC)
DAY = timedelta(days=1)
OUTAGE = (T0 + timedelta(hours=6), T0 + timedelta(hours=8))
STOPPED = (T0 + timedelta(hours=14), T0 + timedelta(hours=14, minutes=10))
TAKEOVER = T0 + timedelta(hours=18)
SKEW = {"a": 0.0, "b": 2.0}
OVERRUN_SECONDS = 75.0
IDLE_BELOW = 5.0


@dataclass(frozen=True)
class Poll:
    at: datetime
    """The poll's evaluation time: the replica's clock."""
    replica: str
    ok: bool


def schedule(seed: int = 14) -> list[Poll]:
    """The worker's polls over the day, chaos included (see the module's docstring)."""
    rng = random.Random(seed)
    polls: list[Poll] = []
    failures = 0
    resume = T0
    tick = T0 + timedelta(seconds=INTERVAL)
    while tick <= T0 + DAY:
        if STOPPED[0] <= tick < STOPPED[1] or tick < resume:
            tick += timedelta(seconds=INTERVAL)
            continue
        replica = "a" if tick < TAKEOVER else "b"
        at = tick + timedelta(seconds=rng.uniform(-2, 2) + SKEW[replica])
        if TAKEOVER - timedelta(seconds=INTERVAL) <= tick < TAKEOVER:  # B's first poll, A still alive
            polls.append(Poll(tick + timedelta(seconds=SKEW["b"] - 8), "b", True))
        ok = not OUTAGE[0] <= at < OUTAGE[1]
        polls.append(Poll(at, replica, ok))
        if not ok:
            failures += 1
            resume = at + timedelta(seconds=backoff_seconds(INTERVAL, failures))
        else:
            failures = 0
            if rng.random() < 1 / 120:  # this poll overruns: the ticks it spans are skipped, a catch-up follows
                catch_up = at + timedelta(seconds=OVERRUN_SECONDS)
                polls.append(Poll(catch_up, replica, True))
                resume = catch_up
        tick += timedelta(seconds=INTERVAL)
    polls.append(Poll(T0 + DAY + timedelta(seconds=SKEW["b"]), "b", True))
    return polls


class Fleet:
    """The simulated source and its snapshots, as the worker would read them, computed once per step."""

    def __init__(self, directory: Path) -> None:
        nodes = int(os.environ.get("BENCH_LEDGER_NODES", "1250"))  # 1250 x 8 = 10,000 GPUs
        path = write_fleet(generate_fleet(clusters=20, nodes=nodes), directory / "fleet.toml")
        self.source = SimulatedSource("bench", load_fleet(path))
        self._snapshots: dict[tuple[int, ...], tuple[Snapshot, list[GpuUse]]] = {}
        self.ids = InventoryIds({}, {}, {})
        self.gpus = 0

    def read(self, at: datetime, window_seconds: float) -> list[GpuUse]:
        """The GPUs of a poll at ``at`` over ``window_seconds``, converted as the worker converts them."""
        steps = tuple(self.source.simulation.steps_in_window(at, window_seconds))
        cached = self._snapshots.get(steps)
        if cached is None:
            snapshot = self.source.poll(at, window_seconds)
            self._inventory(snapshot)
            uses = [gpu_use(r, self.ids.gpus[r.uuid], self.ids, "bench") for r in snapshot.gpus]
            cached = self._snapshots[steps] = (snapshot, uses)
            self.gpus = len(snapshot.gpus)
        return cached[1]

    def _inventory(self, snapshot: Snapshot) -> None:
        """Ids as the inventory would give them (stable across snapshots)."""
        ids = self.ids
        for reading in snapshot.gpus:
            gpu_id = ids.gpus.setdefault(reading.uuid, len(ids.gpus) + 1)
            for part in reading.slices:
                ids.slices.setdefault((gpu_id, part.mig_instance_id), len(ids.slices) + 1)
                for pod in part.workloads:
                    ids.projects.setdefault((reading.cluster, pod.namespace), len(ids.projects) + 1)
            for pod in reading.workloads:
                ids.projects.setdefault((reading.cluster, pod.namespace), len(ids.projects) + 1)


def truth(state: FleetState, ids: InventoryIds) -> dict[int, float]:
    """GPU-seconds per second held per project id (0: unallocated), from the simulator's state alone."""
    rates: dict[int, float] = defaultdict(float)
    for gpu in state.gpus:
        if not gpu.slices:
            for pod in gpu.pods:  # time-sliced: 1/k each
                rates[ids.projects[(gpu.cluster, pod.namespace)]] += 1.0 / len(gpu.pods)
            if not gpu.pods:
                rates[0] += 1.0
            continue
        held = 0.0
        for part in gpu.slices:
            share = int(part.profile.split("g.")[0]) / 7
            held += share
            for pod in part.pods:
                rates[ids.projects[(gpu.cluster, pod.namespace)]] += share / len(part.pods)
            if not part.pods:
                rates[0] += share
        rates[0] += 1.0 - held
    return rates


def fold(rows: dict[tuple[int, int, int, datetime], list[float | None]], into: dict[int, float]) -> None:
    for (_, _, project, _), measures in rows.items():
        into[project] += measures[SECONDS] or 0.0


def run_ledger(fleet: Fleet, polls: list[Poll]) -> tuple[dict[int, float], float, datetime, int, float]:
    """Held seconds per project, unaccounted GPU-seconds, the final cursor, windows, seconds taken."""
    started = time.perf_counter()
    held: dict[int, float] = defaultdict(float)
    unaccounted = 0.0
    cursor = T0
    windows = 0
    for poll in polls:
        if not poll.ok:
            continue  # the source did not answer: nothing accounted, the cursor stays
        plan = plan_windows(cursor, poll.at, interval_seconds=INTERVAL, horizon_seconds=HORIZON, chunk_seconds=CHUNK)
        for window in plan:
            windows += 1
            if window.kind == UNACCOUNTED:
                unaccounted += fleet.gpus * window.seconds
            else:  # back-filled chunks read the source's history over exactly the chunk
                uses = fleet.read(window.end, window.seconds)
                rows = attribute(
                    uses, window.start, window.end, bucket_seconds=BUCKET, idle_threshold_percent=IDLE_BELOW
                )
                fold(rows, held)
            cursor = window.end
    return held, unaccounted, cursor, windows, time.perf_counter() - started


def run_per_poll(fleet: Fleet, polls: list[Poll], until: datetime) -> tuple[dict[int, float], int, float]:
    """The rule before the ledger: each successful poll credits one interval."""
    started = time.perf_counter()
    held: dict[int, float] = defaultdict(float)
    counted = 0
    for poll in polls:
        if not poll.ok or poll.at > until:
            continue
        counted += 1
        uses = fleet.read(poll.at, INTERVAL)
        window = Window(poll.at - timedelta(seconds=INTERVAL), poll.at, BACKFILLED)
        fold(attribute(uses, window.start, window.end, bucket_seconds=BUCKET, idle_threshold_percent=IDLE_BELOW), held)
    return held, counted, time.perf_counter() - started


def ground_truth(fleet: Fleet, start: datetime, end: datetime) -> dict[int, float]:
    """Held seconds per project over ``[start, end)``: each simulator step's state times its overlap."""
    simulation = fleet.source.simulation
    expected: dict[int, float] = defaultdict(float)
    for step in range(simulation.step_at(start), simulation.step_at(end) + 1):
        begin = max(start, simulation.time_of(step))
        stop = min(end, simulation.time_of(step + 1))
        overlap = (stop - begin).total_seconds()
        if overlap <= 0:
            continue
        for project, rate in truth(simulation.state_at_step(step), fleet.ids).items():
            expected[project] += rate * overlap
    return expected


def errors(counted: dict[int, float], expected: dict[int, float]) -> tuple[float, float]:
    """(net, absolute) error of the held seconds over every project (unallocated apart)."""
    projects = (set(counted) | set(expected)) - {0}
    net = sum(counted.get(p, 0.0) - expected.get(p, 0.0) for p in projects)
    absolute = sum(abs(counted.get(p, 0.0) - expected.get(p, 0.0)) for p in projects)
    return net, absolute


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as directory:
        started = time.perf_counter()
        fleet = Fleet(Path(directory))
        fleet.read(T0, INTERVAL)
        setup = time.perf_counter() - started
        polls = schedule(int(os.environ.get("BENCH_LEDGER_SEED", "14")))
        ledger, unaccounted, cursor, windows, ledger_seconds = run_ledger(fleet, polls)
        per_poll, counted, per_poll_seconds = run_per_poll(fleet, polls, cursor)
        expected = ground_truth(fleet, T0, cursor)
    span = (cursor - T0).total_seconds()
    capacity = fleet.gpus * span
    ledger_total = sum(ledger.values()) + unaccounted
    per_poll_total = sum(per_poll.values())
    ledger_net, ledger_abs = errors(ledger, expected)
    poll_net, poll_abs = errors(per_poll, expected)
    truth_held = sum(v for p, v in expected.items() if p)
    failed = sum(not p.ok for p in polls)
    report(
        f"ledger: 24 h of {fleet.gpus:,} GPUs with chaos ({len(polls)} polls, {failed} failed; "
        f"span {span / 3600:.4f} h)",
        [
            ("ground truth: capacity (GPU-s)", f"{capacity:,.3f}"),
            ("ground truth: held by projects (GPU-s)", f"{truth_held:,.3f}"),
            ("ledger: projects + unallocated + unaccounted", f"{ledger_total:,.3f}"),
            ("ledger: error in capacity (GPU-s)", f"{ledger_total - capacity:+.6f}"),
            ("ledger: error in project GPU-s (net / abs)", f"{ledger_net:+.6f} / {ledger_abs:.6f}"),
            ("ledger: unaccounted (GPU-s)", f"{unaccounted:,.3f}"),
            ("ledger: windows / time", f"{windows:,} / {ledger_seconds:.1f} s"),
            ("per-poll: credited (GPU-s)", f"{per_poll_total:,.3f}"),
            ("per-poll: error in capacity (GPU-s)", f"{per_poll_total - capacity:+,.3f}"),
            ("per-poll: error in project GPU-s (net / abs)", f"{poll_net:+,.3f} / {poll_abs:,.3f}"),
            ("per-poll: polls counted / time", f"{counted:,} / {per_poll_seconds:.1f} s"),
            ("set-up (fleet generation, first snapshot)", f"{setup:.1f} s"),
            ("peak RSS", f"{peak_rss_mb():.0f} MB"),
        ],
    )
