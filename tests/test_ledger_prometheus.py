"""Back-fill against a real Prometheus scraping the simulator (``ai-telemetry simulate``).

The worker stops while Prometheus keeps scraping: its next poll back-fills the gap from Prometheus'
history. Then Prometheus itself stops and starts again on the same storage: the polls in between
fail and account nothing, the poll after the restart fills the gap. Throughout, the hub's windows
tile time, no GPU holds more seconds in a bucket than the windows cover, and projects + unallocated
+ unaccounted = capacity.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from domain.ledger import BACKFILLED, POLLED, bucket_pieces
from domain.models import AccountedWindow, UsageRollup
from domain.settings import SchedulerSettings, SourceSettings
from tests.prometheus_service import running_prometheus, running_simulators, scrape_config
from worker.polling import SourcePoller
from worker.sources.prometheus import PrometheusSource

FLEET = """
name = "ledger-backfill"
step_seconds = 1

[[clusters]]
name = "lab"
namespaces = [{ name = "team-a", gpu_quota = 2 }]

[[clusters.nodes]]
hostname = "lab-01"
model = "a100"
gpus = 2
mig = [{ gpu = 0, profiles = ["3g.40gb", "1g.10gb"] }]

[[clusters.workloads]]
namespace = "team-a"
pod = "train-0"
utilization = 80
devices = [{ node = "lab-01", gpu = 1 }, { node = "lab-01", gpu = 0, profile = "3g.40gb" }]
"""
GPUS = 2
BUCKET = 60
SCHEDULER = SchedulerSettings(
    poll_interval_seconds=2, rollup_bucket_seconds=BUCKET, backfill_chunk_seconds=15, backfill_horizon_seconds=3600
)
HISTORY_SECONDS = 22.0
"""Longer than one chunk, so the gap is read in a back-filled chunk and the poll's own window."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def wait_until(moment: datetime) -> None:
    """Let time pass (Prometheus keeps scraping); not an assertion about speed."""
    while (remaining := (moment - now_utc()).total_seconds()) > 0:
        time.sleep(min(remaining, 1.0))


def ledger(engine: Engine) -> tuple[list[AccountedWindow], dict[tuple[int, datetime], float], float]:
    with Session(engine) as session:
        windows = list(session.exec(select(AccountedWindow).order_by(AccountedWindow.start)))
        per_bucket = {
            (gpu, bucket): seconds
            for gpu, bucket, seconds in session.exec(
                select(UsageRollup.gpu_id, UsageRollup.bucket_start, func.sum(UsageRollup.seconds)).group_by(
                    UsageRollup.gpu_id, UsageRollup.bucket_start
                )
            )
        }
        held = session.exec(select(func.sum(UsageRollup.seconds))).one() or 0.0
    return windows, per_bucket, held


def check_nothing_twice(engine: Engine) -> list[AccountedWindow]:
    windows, per_bucket, held = ledger(engine)
    for before, after in itertools.pairwise(windows):
        assert before.end == after.start, (before, after)
    covered: dict[datetime, float] = defaultdict(float)
    for window in windows:
        if window.kind in (POLLED, BACKFILLED):
            for bucket, seconds in bucket_pieces(window.start, window.end, BUCKET):
                covered[bucket] += seconds
    for (gpu, bucket), seconds in per_bucket.items():
        assert seconds <= covered[bucket] + 1e-6, (gpu, bucket, seconds, covered[bucket])
    capacity = sum(w.gpu_count * (w.end - w.start).total_seconds() for w in windows)
    unaccounted = sum(w.gpu_seconds_unaccounted for w in windows)
    assert held + unaccounted == pytest.approx(capacity, abs=1e-6)
    return windows


def test_gaps_are_backfilled_from_prometheus_history(tmp_path: Path, sqlite_engine: Engine) -> None:
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(FLEET, encoding="utf-8")
    with (
        running_simulators(fleet_file, ["lab"]) as sims,
        running_prometheus(tmp_path, [scrape_config("lab", [sims[0].target])]) as prometheus,
    ):
        prometheus.wait_for_scrape(["lab"], targets=1)
        prometheus.wait_for("count(DCGM_FI_DEV_GPU_TEMP)", at_least=GPUS)
        source = PrometheusSource(
            SourceSettings(name="lab", url=prometheus.url, cluster="lab", matchers={"job": "lab"})
        )
        poller = SourcePoller(source, sqlite_engine, SCHEDULER)
        try:
            first = now_utc()
            assert poller.poll_once(first, force=True).outcome == "success"

            # the worker is stopped; Prometheus keeps scraping; the next poll fills the gap
            wait_until(first + timedelta(seconds=HISTORY_SECONDS))
            resumed = poller.poll_once(now_utc(), force=True)
            assert resumed.outcome == "success"
            assert [w.kind for w in resumed.windows] == [BACKFILLED, POLLED]
            assert resumed.windows[0].start == first
            windows = check_nothing_twice(sqlite_engine)
            filled = [w for w in windows if w.kind == BACKFILLED]
            assert [(w.gpu_count, w.gpu_seconds_unaccounted) for w in filled] == [(GPUS, 0.0)]

            # Prometheus stops: polls fail and account nothing; after its restart the gap is filled
            cursor = windows[-1].end
            prometheus.stop()
            failed = poller.poll_once(now_utc() + timedelta(seconds=1), force=True)
            assert failed.outcome == "source_error" and failed.windows == ()
            assert check_nothing_twice(sqlite_engine)[-1].end == cursor
            wait_until(cursor + timedelta(seconds=HISTORY_SECONDS))
            prometheus.start()
            prometheus.wait_for("count(DCGM_FI_DEV_GPU_TEMP)", at_least=GPUS)
            after = poller.poll_once(now_utc(), force=True)
            assert after.outcome == "success"
            assert after.windows[0].start == cursor and after.windows[0].kind == BACKFILLED
            check_nothing_twice(sqlite_engine)
        finally:
            source.close()
