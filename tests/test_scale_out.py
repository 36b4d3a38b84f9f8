"""Scale-out: worker replicas sharing one PostgreSQL poll each source one at a time, and take over.

Two real ``ai-telemetry worker`` processes poll the same two sources every second. Each poll is
taken under the source's advisory lock and skipped when another replica polled less than an
interval ago, so the pair polls each source once per interval, not twice. Killing (SIGKILL) the
replica that polls a source hands it to the other within about one interval.
In-process pollers check the lock itself: a held lock makes another replica's poll ``locked``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from domain.database import create_db_engine, upgrade
from domain.models import Hub
from domain.settings import DatabaseSettings, SchedulerSettings
from tests import services
from tests.test_polling import StandInSource
from worker.metrics import WorkerMetrics
from worker.polling import SourcePoller, advisory_key, source_turn

INTERVAL = 1.0
SOURCES = ("alpha", "beta")
CONFIG = "\n".join(
    f'[[sources]]\nname = "{name}"\nkind = "simulated"\nseed = {seed}\npoll_interval_seconds = {INTERVAL}\n'
    for seed, name in enumerate(SOURCES)
)


@dataclass
class Worker:
    replica: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def _polls(text: str) -> list[tuple[str, str, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith("ai_telemetry_source_polls_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            out.append((labels["source"], labels["outcome"], float(line.rsplit(" ", 1)[1])))
    return out


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("ai-telemetry")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ai_telemetry.cli"]


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:
    with services.fresh_database(postgres_server) as url:
        engine = create_db_engine(DatabaseSettings(url=url, pool_size=2))
        upgrade(engine)  # before the workers start, so they do not race to create the schema
        engine.dispose()
        yield url


def start_worker(replica: str, url: str, config: Path, directory: Path) -> Worker:
    port = services.free_port()
    log = directory / f"{replica}.log"
    environment = {
        **os.environ,
        "AI_TELEMETRY_DATABASE_URL": url,
        "AI_TELEMETRY_SCHEDULER_REPLICA": replica,
        "AI_TELEMETRY_CONFIG": str(config),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_cli(), "worker", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    return Worker(replica, port, process, log)


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def hubs(engine: Engine) -> dict[str, tuple[datetime | None, str | None]]:
    with Session(engine) as session:
        return {h.name: (h.last_poll_at, h.last_polled_by) for h in session.exec(select(Hub))}


def test_two_workers_poll_each_source_once_per_interval_and_one_takes_over(database: str, tmp_path: Path) -> None:
    config = tmp_path / "sources.toml"
    config.write_text(CONFIG, encoding="utf-8")
    workers = [start_worker(name, database, config, tmp_path) for name in ("w1", "w2")]
    engine = create_db_engine(DatabaseSettings(url=database, pool_size=2))
    try:
        for worker in workers:
            wait_until(lambda w=worker: _ready(w), 60, f"worker {worker.replica} to answer /metrics")
        wait_until(lambda: len(hubs(engine)) == len(SOURCES), 30, "both sources to be polled")

        # measure a few seconds while both run: one poll per source per interval, not two
        before = [_count(w) for w in workers]
        started = time.monotonic()
        time.sleep(4 * INTERVAL)  # observing the running system; the assertions below do not race it
        after = [_count(w) for w in workers]
        elapsed = time.monotonic() - started
        for source in SOURCES:
            polls = sum(
                a.get((source, "success"), 0) - b.get((source, "success"), 0)
                for a, b in zip(after, before, strict=True)
            )
            locked = sum(a.get((source, "locked"), 0) for a in after)
            assert polls <= elapsed / INTERVAL + 1, (source, polls, elapsed)
            assert polls >= elapsed / INTERVAL - 2, (source, polls, elapsed)
            assert locked >= 1, source  # the other replica did try, and stood aside

        # kill the replica that polls "alpha"; the other takes over within about one interval
        _, holder = hubs(engine)["alpha"]
        victim = next(w for w in workers if w.replica == holder)
        survivor = next(w for w in workers if w is not victim)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        killed_at = datetime.now(UTC)
        wait_until(
            lambda: all(
                by == survivor.replica and at is not None and at > killed_at
                for at, by in (hubs(engine)[s] for s in SOURCES)
            ),
            3 * INTERVAL + 2,
            f"{survivor.replica} to poll every source after {victim.replica} was killed",
        )
        last, _ = hubs(engine)["alpha"]
        assert last is not None and last - killed_at <= timedelta(seconds=2 * INTERVAL + 1)
        assert survivor.process.poll() is None
    finally:
        engine.dispose()
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.terminate()
                try:
                    worker.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait(timeout=10)


def _ready(worker: Worker) -> bool:
    if worker.process.poll() is not None:
        raise AssertionError(f"worker {worker.replica} exited:\n{worker.log.read_text(errors='replace')[-3000:]}")
    try:
        return httpx.get(f"http://127.0.0.1:{worker.port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _count(worker: Worker) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
    return {(source, outcome): value for source, outcome, value in _polls(text)}


def test_a_held_lock_makes_other_replicas_stand_aside(pg_engine: Engine, postgres_server: str) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    other_engine = create_db_engine(DatabaseSettings(url=url, pool_size=2))
    metrics = WorkerMetrics()
    settings = SchedulerSettings(poll_interval_seconds=30, replica="r2")
    source = StandInSource("alpha")
    other = SourcePoller(source, other_engine, settings, metrics=metrics)
    now = datetime.now(UTC)
    try:
        with source_turn(pg_engine, "alpha") as turn:  # replica r1 is polling right now
            assert turn.acquired and turn.exclusive
            assert other.poll_once(now).outcome == "locked"
            assert source.calls == 0  # the source was not even read
        assert other.poll_once(now).outcome == "success"
        assert hubs(pg_engine)["alpha"][1] == "r2"
        # another replica ticking 10 s later finds it polled a third of an interval ago
        third = SourcePoller(source, pg_engine, settings.model_copy(update={"replica": "r3"}), metrics=metrics)
        assert third.poll_once(now + timedelta(seconds=10)).outcome == "locked"
        assert third.poll_once(now + timedelta(seconds=30)).outcome == "success"
        assert hubs(pg_engine)["alpha"][1] == "r3"
        assert (
            metrics.registry.get_sample_value(
                "ai_telemetry_source_polls_total", {"source": "alpha", "outcome": "locked"}
            )
            == 2
        )
        assert source.calls == 2
    finally:
        other_engine.dispose()
    assert advisory_key("alpha") == advisory_key("alpha") != advisory_key("beta")
    assert -(2**63) <= advisory_key("alpha") < 2**63


def test_sqlite_takes_no_lock(sqlite_engine: Engine) -> None:
    with source_turn(sqlite_engine, "alpha") as turn:
        assert (turn.acquired, turn.exclusive) == (True, False)


def test_a_replicas_own_recent_poll_does_not_make_it_stand_aside(pg_engine: Engine) -> None:
    """A poll that overran its interval is followed at once by a catch-up poll; the next tick must still poll."""
    settings = SchedulerSettings(poll_interval_seconds=30, replica="r1")
    source = StandInSource("alpha")
    poller = SourcePoller(source, pg_engine, settings)
    now = datetime.now(UTC)

    assert poller.poll_once(now).outcome == "success"
    assert poller.poll_once(now + timedelta(seconds=10)).outcome == "success"
    other = SourcePoller(source, pg_engine, settings.model_copy(update={"replica": "r2"}))
    assert other.poll_once(now + timedelta(seconds=15)).outcome == "locked"
    assert source.calls == 2
